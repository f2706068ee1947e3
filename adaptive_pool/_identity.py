"""Stable identities for callables.

Profiles and decisions are cached per *function*, not per callable object:
``functools.partial(f, 1)`` and ``functools.partial(f, 2)`` are the same
work, a bound method is its underlying function, and a lambda re-created on
every loop iteration is still the same code.  The key must never hold the
callable alive, so it is built from names and code locations only.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["WRAPPED_FUNCTION_ATTRIBUTE", "describe", "function_key", "underlying_function"]


#: A wrapper (e.g. a batch of joblib calls) names the function it runs with
#: this attribute, so that it is profiled and decided as that function.
WRAPPED_FUNCTION_ATTRIBUTE = "__adaptive_pool_function__"
#: ... and says with this one how many calls of it one invocation makes, so
#: that measurements stay per call whatever the batch size.
CALLS_ATTRIBUTE = "__adaptive_pool_calls__"


def calls_per_invocation(fn: Callable[..., Any]) -> int:
    """How many calls of the underlying function one call of ``fn`` makes."""
    count = getattr(fn, CALLS_ATTRIBUTE, 1)
    return count if isinstance(count, int) and count > 0 else 1


def underlying_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Unwrap partials, bound methods and declared wrappers down to the function doing the work."""
    seen = 0
    while seen < 32:  # a partial of a partial of ... is legal; cycles are not
        seen += 1
        declared = getattr(fn, WRAPPED_FUNCTION_ATTRIBUTE, None) if not isinstance(fn, type) else None
        if declared is not None and declared is not fn and callable(declared):
            fn = declared
        elif isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            fn = fn.__func__
        else:
            break
    return fn


def function_key(fn: Callable[..., Any]) -> Hashable:
    """Return a hashable identity for ``fn`` that survives re-creation.

    * module-level functions and classes: module and qualified name;
    * lambdas and closures: the code object's file, first line and name,
      because their qualified names (``<lambda>``, ``f.<locals>.g``) are not
      unique within a module;
    * builtins: module and name;
    * other callable objects: the type's identity plus ``__call__``.
    """
    fn = underlying_function(fn)
    if isinstance(fn, types.FunctionType):
        code = fn.__code__
        qualname = getattr(fn, "__qualname__", code.co_name)
        if fn.__closure__ or "<lambda>" in qualname or "<locals>" in qualname:
            return ("code", code.co_filename, code.co_firstlineno, qualname)
        return ("function", fn.__module__, qualname)
    if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        owner = getattr(fn, "__self__", None)
        owner_name = None
        if owner is not None and not isinstance(owner, types.ModuleType):
            # A bound builtin method such as ``[].append``: key on the type.
            owner_name = type(owner).__qualname__
        return ("builtin", getattr(fn, "__module__", None), owner_name, fn.__qualname__)
    if isinstance(fn, type):
        return ("class", fn.__module__, fn.__qualname__)
    cls = type(fn)
    return ("callable", cls.__module__, cls.__qualname__)


def describe(fn: Callable[..., Any]) -> str:
    """A short human name for log lines and reasons."""
    inner = underlying_function(fn)
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None)
    if name is None:
        name = type(inner).__qualname__
    module = getattr(inner, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


# Code flags of ``async def`` functions and async generators (stable values,
# see the ``inspect`` module); read directly because importing ``inspect``
# costs milliseconds at import time, and this runs on every submit.
_ASYNC_FLAGS = 0x0080 | 0x0200


def is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, also behind partials and methods."""
    for candidate in (fn, underlying_function(fn)):
        code = getattr(candidate, "__code__", None)
        if isinstance(code, types.CodeType) and code.co_flags & _ASYNC_FLAGS:
            return True
        # inspect.markcoroutinefunction() (3.12+) marks sync functions that return awaitables.
        if getattr(candidate, "_is_coroutine_marker", None) is not None:
            return True
    return False

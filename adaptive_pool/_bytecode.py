"""What a function's byte code tells before it runs.

Two readings, both erring towards caution: side effects a worker process
would lose (:func:`static_effects`), and calls that cannot tell which thread
runs them (:func:`self_contained`).
"""

from __future__ import annotations

import dis  # loaded with the package (see _executor's imports)
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ._identity import underlying_function

__all__ = ["StaticEffects", "self_contained", "static_effects"]

# CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR (values as in ``inspect``)
_GENERATOR_FLAGS = 0x0020 | 0x0080 | 0x0200
_GLOBAL_WRITES = {"STORE_GLOBAL", "DELETE_GLOBAL"}
_DEREF_WRITES = {"STORE_DEREF", "DELETE_DEREF"}


class StaticEffects(NamedTuple):
    """What a function's byte code says about its side effects."""

    #: Some ``return`` may give a value other than ``None``.  ``None`` when
    #: the code cannot be read (builtins, callable objects).
    may_return_value: bool | None
    #: The code assigns a module global or a variable of an enclosing scope:
    #: in a worker process that assignment would be lost.
    writes_shared_state: bool


def static_effects(fn: Callable[..., Any]) -> StaticEffects:
    """Read ``fn``'s byte code for side effects a process would lose.

    This is a hint that errs towards caution: it lets a decision taken while
    the first calls are still running keep side-effect-only functions off the
    process route before any result has been seen.
    """
    inner = underlying_function(fn)
    code = getattr(inner, "__code__", None)
    if not isinstance(code, types.CodeType):
        return StaticEffects(may_return_value=None, writes_shared_state=False)
    if code.co_flags & _GENERATOR_FLAGS:
        # Generators and coroutines return objects no process can send back.
        return StaticEffects(may_return_value=True, writes_shared_state=True)
    may_return_value = False
    writes = False
    previous: dis.Instruction | None = None
    for ins in dis.get_instructions(code):
        if ins.opname in _GLOBAL_WRITES or ins.opname in _DEREF_WRITES and ins.argval in code.co_freevars:
            writes = True
        elif ins.opname == "RETURN_CONST":
            may_return_value = may_return_value or ins.argval is not None
        elif ins.opname == "RETURN_VALUE":
            returns_none = (
                previous is not None and previous.opname == "LOAD_CONST" and previous.argval is None
            )
            may_return_value = may_return_value or not returns_none
        previous = ins
    return StaticEffects(may_return_value=may_return_value, writes_shared_state=writes)


# --------------------------------------------------------------------------
# Self-contained calls

#: Values whose every operation is the interpreter's own: no method of the
#: user's runs, nothing blocks, and none can say which thread it is in.
_PLAIN_TYPES = frozenset({int, float, complex, bool, str, bytes, type(None)})
#: Longer tuples are not looked through (the look would cost more than a
#: thread's start, which is what running such a call here saves).
_PLAIN_TUPLE_MAX = 16

#: Builtins that only compute on plain values, looping at most over their
#: arguments (``range``, ``sorted`` and the like left out: they make loops).
_PURE_BUILTINS = (
    abs, all, any, bin, bool, chr, complex, divmod, float, format, hash, hex, int,
    isinstance, len, max, min, oct, ord, pow, repr, round, str, sum,
)  # fmt: skip
#: Modules whose functions all compute on the values they are given ...
_PURE_MODULES = ("math", "cmath", "operator", "_operator")
#: ... but for these, whose time grows with their arguments' values: the
#: first call of a map of them may be long, and run on the map's thread it
#: would keep the second probe from starting beside it.
_UNBOUNDED = frozenset({"factorial", "comb", "perm"})

#: Instructions that only move values, compute on them, or call what the
#: checks below allow; jumps that can only go forward (no loop: the call
#: ends within its length).  Any import, store outside the frame, ``yield``
#: or function made inside is left out.  Names from 3.10 to 3.14; a name
#: an interpreter lacks is simply never met.
_PURE_INSTRUCTIONS = frozenset(
    {
        "CACHE", "NOP", "RESUME", "EXTENDED_ARG", "NOT_TAKEN",
        "POP_TOP", "COPY", "SWAP", "ROT_TWO", "ROT_THREE", "ROT_FOUR", "DUP_TOP", "DUP_TOP_TWO",
        "LOAD_CONST", "LOAD_SMALL_INT", "RETURN_CONST", "RETURN_VALUE",
        "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW",
        "LOAD_FAST_BORROW_LOAD_FAST_BORROW", "STORE_FAST", "STORE_FAST_LOAD_FAST",
        "STORE_FAST_STORE_FAST", "LOAD_DEREF", "COPY_FREE_VARS",
        "BINARY_OP", "BINARY_SUBSCR", "BINARY_SLICE", "BUILD_SLICE", "COMPARE_OP", "IS_OP",
        "CONTAINS_OP", "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "UNARY_POSITIVE",
        "TO_BOOL", "BUILD_TUPLE", "BUILD_STRING", "FORMAT_VALUE", "FORMAT_SIMPLE",
        # New containers, and unpacking: of plain values, or of containers
        # the call made (no other kind of value can reach it).
        "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP", "LIST_EXTEND",
        "LIST_TO_TUPLE", "SET_UPDATE", "DICT_UPDATE", "UNPACK_SEQUENCE", "UNPACK_EX",
        "FORMAT_WITH_SPEC", "CONVERT_VALUE",
        "BINARY_POWER", "BINARY_MULTIPLY", "BINARY_MATRIX_MULTIPLY", "BINARY_FLOOR_DIVIDE",
        "BINARY_TRUE_DIVIDE", "BINARY_MODULO", "BINARY_ADD", "BINARY_SUBTRACT", "BINARY_LSHIFT",
        "BINARY_RSHIFT", "BINARY_AND", "BINARY_XOR", "BINARY_OR", "INPLACE_POWER",
        "INPLACE_MULTIPLY", "INPLACE_FLOOR_DIVIDE", "INPLACE_TRUE_DIVIDE", "INPLACE_MODULO",
        "INPLACE_ADD", "INPLACE_SUBTRACT", "INPLACE_LSHIFT", "INPLACE_RSHIFT", "INPLACE_AND",
        "INPLACE_XOR", "INPLACE_OR",
        "JUMP_FORWARD", "POP_JUMP_IF_FALSE", "POP_JUMP_IF_TRUE", "POP_JUMP_IF_NONE",
        "POP_JUMP_IF_NOT_NONE", "POP_JUMP_FORWARD_IF_FALSE", "POP_JUMP_FORWARD_IF_TRUE",
        "POP_JUMP_FORWARD_IF_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE", "JUMP_IF_FALSE_OR_POP",
        "JUMP_IF_TRUE_OR_POP",
        # Calls: only of what the globals and attributes checked below allow.
        "PUSH_NULL", "PRECALL", "CALL", "CALL_KW", "KW_NAMES", "CALL_FUNCTION",
        "CALL_FUNCTION_KW", "CALL_METHOD",
        "LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD",
    }
)  # fmt: skip
#: Before 3.11 conditional jumps name their target absolutely, and loops
#: close with them too: the target must lie ahead.
_ABSOLUTE_JUMPS = frozenset(dis.hasjabs) if sys.version_info < (3, 11) else frozenset()
_PURE_OPCODES = frozenset(dis.opmap[name] for name in _PURE_INSTRUCTIONS if name in dis.opmap)
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_CACHE = dis.opmap.get("CACHE", -1)
_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
_LOAD_ATTRIBUTE = frozenset(dis.opmap[name] for name in ("LOAD_ATTR", "LOAD_METHOD") if name in dis.opmap)
# Where the name's index sits in the argument (a low bit says more since 3.11).
_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0
_ATTRIBUTE_SHIFT = 1 if sys.version_info >= (3, 12) else 0
_MISSING: Any = object()

# By identity (the tuple keeps them alive: an id is never reused).
_PURE_BUILTIN_IDS = frozenset(map(id, _PURE_BUILTINS))


def _is_pure_callable(value: Any) -> bool:
    """One of :data:`_PURE_BUILTINS` or a function of :data:`_PURE_MODULES`."""
    if type(value) is types.BuiltinFunctionType:
        module = value.__module__
        if module in _PURE_MODULES:
            return value.__name__ not in _UNBOUNDED
        return module == "builtins" and id(value) in _PURE_BUILTIN_IDS
    return type(value) is type and id(value) in _PURE_BUILTIN_IDS


def _pure_module(value: Any) -> bool:
    return type(value) is types.ModuleType and value.__name__ in _PURE_MODULES


def _plain(value: Any, depth: int = 2) -> bool:
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind is tuple and depth and len(value) <= _PLAIN_TUPLE_MAX:
        return all(_plain(item, depth - 1) for item in value)
    return False


def _pure_code(code: types.CodeType, lookup: Callable[[str], Any], seen: dict[types.FunctionType, bool]) -> bool:
    """Only :data:`_PURE_INSTRUCTIONS`, jumping only forward; each global a
    plain value, a pure callable, a pure module or a Python function that
    is pure too (see :func:`_pure_function`); no attribute whose name
    starts with ``_`` (``__class__``, ``__self__`` and the like reach any
    object), and one read straight from a pure module a plain value or a
    pure callable (``math.sqrt``).  Any other attribute belongs to a value
    of the interpreter's own types, as every operand does: its methods
    (``str.upper``, ``int.bit_length``) compute on it."""
    if code.co_flags & _GENERATOR_FLAGS:
        return False
    raw = code.co_code
    names = code.co_names
    arg = 0
    module: Any = None  # the pure module the last instruction loaded
    for offset in range(0, len(raw), 2):
        op = raw[offset]
        if op not in _PURE_OPCODES:
            return False
        arg = arg << 8 | raw[offset + 1]
        if op == _EXTENDED_ARG or op == _CACHE:
            continue
        loaded, module = module, None
        if op == _LOAD_GLOBAL:
            value = lookup(names[arg >> _GLOBAL_SHIFT])
            if _pure_module(value):
                module = value
            elif not (_plain(value) or _is_pure_callable(value)):
                if type(value) is not types.FunctionType or not _pure_function(value, seen):
                    return False
        elif op in _LOAD_ATTRIBUTE:
            name = names[arg >> _ATTRIBUTE_SHIFT]
            if name.startswith("_") or name in _UNBOUNDED:
                return False
            if loaded is not None:
                value = getattr(loaded, name, _MISSING)
                if not (_plain(value) or _is_pure_callable(value)):
                    return False
        elif op in _ABSOLUTE_JUMPS and arg * 2 <= offset:  # in instructions since 3.10
            return False
        arg = 0
    return True


def self_contained(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether nobody could tell which thread ran ``fn(*args, **kwargs)``.

    True only for such a builtin (``abs``, ``math.sqrt``, ``str.upper``)
    given plain values, or a plain function whose code has no loop, calls nothing
    but builtins, ``math`` and ``operator`` functions that compute, the
    methods of the values it computes with and Python functions as plain as
    itself (no recursion, a few at most), builds and unpacks only
    containers of its own, and whose every operand (arguments,
    defaults, closure cells, the globals it reads) is a number, string,
    bytes, None or a short tuple of them: such a call runs no code of the
    user's, cannot wait for anything (another call of the same map
    included), and cannot see its thread, its context or a thread-local.
    No tracer may watch this thread either (``sys.settrace`` is per
    thread).  Cautious: False whenever in doubt.
    """
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return False
    try:
        if type(fn) is not types.FunctionType:
            return _pure_builtin(fn) and _plain_arguments(args, kwargs)
        return _plain_arguments(args, kwargs) and _pure_function(fn, {})
    except Exception:  # an empty closure cell, a function made by hand: in doubt
        return False


def _plain_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    return all(map(_plain, args)) and all(map(_plain, kwargs.values()))


def _pure_builtin(fn: Any) -> bool:
    """A builtin that only computes on plain values: a pure callable (see
    :func:`_is_pure_callable`), a method of a plain type (``str.upper``) or
    one bound to a plain value (``"-".join``); none named with ``_``."""
    kind = type(fn)
    if kind is types.MethodDescriptorType:
        return fn.__objclass__ in _PLAIN_TYPES and not fn.__name__.startswith("_")
    bound = getattr(fn, "__self__", None)  # (None for a static method: anything)
    if kind is types.BuiltinFunctionType and bound is not None and type(bound) in _PLAIN_TYPES:
        return not fn.__name__.startswith("_")
    return _is_pure_callable(fn)


#: Python functions a self-contained call may reach, itself included: the
#: look must cost less than the thread start it spares.
_FUNCTIONS_MAX = 8


def _pure_function(fn: types.FunctionType, seen: dict[types.FunctionType, bool]) -> bool:
    """Whether ``fn`` only computes, whatever plain values it is given: its
    defaults and closure cells plain, its code pure (see :func:`_pure_code`),
    and so every Python function it calls.  ``seen``: the functions looked
    at so far (True if pure) or being looked at (False): a call back into
    one of those is recursion, a loop by other means.  (By function, not
    code: closures of one code may close over different values.)"""
    if fn in seen:
        return seen[fn]
    if len(seen) >= _FUNCTIONS_MAX:
        return False
    seen[fn] = False
    if not _plain_arguments(fn.__defaults__ or (), fn.__kwdefaults__ or {}):
        return False
    if not all(_plain(cell.cell_contents) for cell in fn.__closure__ or ()):  # (empty: ValueError)
        return False
    found, builtins = fn.__globals__, getattr(fn, "__builtins__", None)  # 3.10+, untyped
    if type(found) is not dict or type(builtins) is not dict:
        return False

    def lookup(name: str) -> Any:
        value = found.get(name, _MISSING)
        return builtins.get(name, _MISSING) if value is _MISSING else value

    pure = seen[fn] = _pure_code(fn.__code__, lookup, seen)
    return pure

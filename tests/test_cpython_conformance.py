"""CPython's own ``test_concurrent_futures``, run against AutoExecutor.

The standard library's suite is the definition of the ``Executor`` contract.
Its tests are written as mixins (``ExecutorTest``, ``WaitTests``, ...) that
``create_executor_tests`` crosses with one mixin per executor type.  Here we
cross the executor-agnostic ones with a single mixin whose ``executor_type``
is :class:`AutoExecutor`, on the automatic path (no ``prefer``: every
function is probed and routed by the policy), and let pytest run them as the
unittest cases they are.  Nothing of the suite is copied: it is imported from
the interpreter's ``test`` package, which Python 3.13 ships (the 3.11 used by
default here lacks ``test.test_concurrent_futures``; the module is skipped
there).  Run it with::

    python3.13 -m venv /tmp/v313 && /tmp/v313/bin/pip install ".[test]"
    /tmp/v313/bin/python -m pytest -q tests/test_cpython_conformance.py

Which tests count (:data:`EXPECTED` lists them per class):

* ``ExecutorTest``, ``WaitTests``, ``AsCompletedTests``, the portable
  shutdown tests (``ExecutorShutdownTest``, which the standard library runs
  for both pool types) and the two initializer mixins: 31 tests in 3.13.
* Tests defined on the thread-pool classes that use only the public
  interface (``ThreadPoolShutdownTest``'s context-manager, ``del``,
  ``shutdown(wait=False)``, thread-name and ``cancel_futures`` tests,
  ``ThreadPoolWaitTests.test_pending_calls_race``,
  ``ThreadPoolExecutorTest.test_map_submits_without_iteration``), 7 more:
  38 in all.  Some of them reach for ``executor._threads``, which
  AutoExecutor provides (the threads its routes started), or name
  ``futures.ThreadPoolExecutor`` outright; for those, the module's
  ``futures`` is a view of :mod:`concurrent.futures` in which that name is
  AutoExecutor.

Tests that inspect one pool's internals (``_processes``, ``_max_workers``,
the default ``ThreadPoolExecutor-N`` thread names, the process pool's
``BrokenProcessPool``-on-kill semantics) are not part of the contract and are
not run.

Some tests start a child interpreter from a script that says ``from
concurrent.futures import <executor_type.__name__>``; the child runs with
``-I`` (isolated), so it sees ``adaptive_pool`` only if it is installed in
that interpreter.  The one line that imports the executor is rewritten to
import AutoExecutor from ``adaptive_pool``; the script is otherwise run as
written.
"""

from __future__ import annotations

import re
import types
import unittest
from typing import Any

import pytest

try:
    from test.support import script_helper
    from test.test_concurrent_futures import (
        executor as cf_executor,
    )
    from test.test_concurrent_futures import (
        test_as_completed,
        test_init,
        test_shutdown,
        test_thread_pool,
        test_wait,
    )
    from test.test_concurrent_futures.util import BaseTestCase, ExecutorMixin
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    pytest.skip(
        f"CPython's test.test_concurrent_futures is not importable here ({exc}); "
        "it ships with Python 3.13 (run this file with a 3.13 interpreter)",
        allow_module_level=True,
    )

from adaptive_pool import AutoExecutor

# ---------------------------------------------------------------------------
# Substitution


class AutoExecutorMixin(ExecutorMixin):
    """The suite's executor mixin, with AutoExecutor on the automatic path."""

    executor_type = AutoExecutor


class _FuturesView(types.ModuleType):
    """``concurrent.futures`` as the thread-pool tests see it: its
    ``ThreadPoolExecutor`` is AutoExecutor."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__)
        self.__dict__["_real"] = real

    def __getattr__(self, name: str) -> Any:
        if name == "ThreadPoolExecutor":
            return AutoExecutor
        return getattr(self.__dict__["_real"], name)


_IMPORT_LINE = re.compile(r"from concurrent\.futures import (AutoExecutor|ThreadPoolExecutor)\b")


def _child_script(code: str) -> str:
    """Make a child interpreter's script import AutoExecutor from adaptive_pool."""
    return _IMPORT_LINE.sub(r"from adaptive_pool import AutoExecutor as \1", code)


def _assert_python_ok(*args: str, **env_vars: Any) -> Any:
    args = tuple(_child_script(a) if i > 0 and args[i - 1] == "-c" else a for i, a in enumerate(args))
    return script_helper.assert_python_ok(*args, **env_vars)


test_shutdown.assert_python_ok = _assert_python_ok  # type: ignore[attr-defined]
test_shutdown.futures = _FuturesView(test_shutdown.futures)  # type: ignore[attr-defined]


def _build(name: str, *mixins: type, only: tuple[str, ...] | None = None) -> type:
    """A TestCase running ``mixins``' tests with AutoExecutor (``only`` some)."""
    namespace: dict[str, Any] = {"__module__": __name__, "executor_type": AutoExecutor}
    if only is not None:
        for mixin in mixins:
            for attr in dir(mixin):
                if attr.startswith("test") and attr not in only:
                    namespace[attr] = None  # not collected
    cls = type(name, (*mixins, AutoExecutorMixin, BaseTestCase), namespace)
    return cls


AutoExecutorTest = _build("AutoExecutorTest", cf_executor.ExecutorTest)
AutoWaitTest = _build("AutoWaitTest", test_wait.WaitTests)
AutoAsCompletedTest = _build("AutoAsCompletedTest", test_as_completed.AsCompletedTests)
AutoShutdownTest = _build("AutoShutdownTest", test_shutdown.ExecutorShutdownTest)
AutoInitializerTest = _build("AutoInitializerTest", test_init.InitializerMixin)
AutoFailingInitializerTest = _build("AutoFailingInitializerTest", test_init.FailingInitializerMixin)

# Thread-pool classes' tests that hold for any executor.
AutoThreadPoolShutdownTest = _build(
    "AutoThreadPoolShutdownTest",
    test_shutdown.ThreadPoolShutdownTest,
    only=(
        "test_context_manager_shutdown",
        "test_del_shutdown",
        "test_shutdown_no_wait",
        "test_thread_names_assigned",
        "test_cancel_futures_wait_false",
    ),
)
AutoThreadPoolWaitTest = _build(
    "AutoThreadPoolWaitTest", test_wait.ThreadPoolWaitTests, only=("test_pending_calls_race",)
)
AutoThreadPoolExecutorTest = _build(
    "AutoThreadPoolExecutorTest",
    test_thread_pool.ThreadPoolExecutorTest,
    only=("test_map_submits_without_iteration",),
)


# ---------------------------------------------------------------------------
# The count

#: Tests per class, from the 3.13 suite.  A new CPython may add some; then
#: this says so instead of silently running more or fewer.
EXPECTED = {
    "AutoExecutorTest": 9,
    "AutoWaitTest": 8,
    "AutoAsCompletedTest": 5,
    "AutoShutdownTest": 7,
    "AutoInitializerTest": 1,
    "AutoFailingInitializerTest": 1,
    "AutoThreadPoolShutdownTest": 5,
    "AutoThreadPoolWaitTest": 1,
    "AutoThreadPoolExecutorTest": 1,
}
CORE = ("AutoExecutorTest", "AutoWaitTest", "AutoAsCompletedTest", "AutoShutdownTest",
        "AutoInitializerTest", "AutoFailingInitializerTest")


def _test_names(cls: type) -> list[str]:
    return unittest.TestLoader().getTestCaseNames(cls)


def test_conformance_count() -> None:
    """The executor-agnostic tests are the ones we think: 31 core, 38 in all."""
    counts = {name: len(_test_names(globals()[name])) for name in EXPECTED}
    assert counts == EXPECTED
    assert sum(counts[name] for name in CORE) == 31
    assert sum(counts.values()) == 38

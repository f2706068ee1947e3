"""The ``concurrent.futures.Executor`` contract, on every route.

Each behaviour of the standard library's executors is checked with
``AutoExecutor`` on the automatic path and with each route forced by
``prefer``.  Tasks that must block until the test lets them go wait for a
file (:class:`Gate`): that works the same in threads and worker processes.
One executor per route is shared by the module where a test does not need
its own (a worker process costs tens of milliseconds to start).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Future,
    TimeoutError,
    as_completed,
    wait,
)
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conftest import PREFERS, prefer_id, run_python

from adaptive_pool import AutoExecutor, Choice, Decision, HeuristicPolicy, pin

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------
# Task functions (module level: worker processes import them by reference)


class Gate:
    """A flag that threads and processes can wait on: a file appearing."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def open(self) -> None:
        Path(self.path).touch()

    def wait(self, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while not os.path.exists(self.path):
            if time.monotonic() > end:
                return False
            time.sleep(0.002)
        return True


def wait_then(gate: Gate, value: Any) -> Any:
    if not gate.wait():
        raise RuntimeError("gate never opened")
    return value


def touch(path: str, value: Any = None) -> Any:
    Path(path).touch()
    return value


def interval(seconds: float) -> tuple[float, float]:
    """Sleep, and say when (CLOCK_MONOTONIC is system-wide on Linux)."""
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


def interval_threads(seconds: float) -> tuple[float, float]:
    return interval(seconds)


def interval_inline(seconds: float) -> tuple[float, float]:
    return interval(seconds)


def interval_processes(seconds: float) -> tuple[float, float]:
    return interval(seconds)


pin("threads")(interval_threads)
pin("inline")(interval_inline)
pin("processes")(interval_processes)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def remember(token: str) -> None:
    """Initializer: marks the worker thread that ran it."""
    threading.current_thread().adaptive_pool_token = token  # type: ignore[attr-defined]


def initialized(_: Any = None) -> tuple[Any, int]:
    time.sleep(0.01)
    return getattr(threading.current_thread(), "adaptive_pool_token", None), os.getpid()


def failing_initializer() -> None:
    raise ValueError("error in initializer")


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


class Payload:
    def method(self) -> int:
        return 1


def size_of(obj: Any) -> int:
    return 1


# Worker processes get this module's functions by value: they need not
# import it (and pytest with it), which keeps their start quick.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def executors() -> Iterator[dict[str | None, AutoExecutor]]:
    """One executor per route, shared by the module, shut down at its end."""
    made: dict[str | None, AutoExecutor] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, prefer: str | None) -> AutoExecutor:
            made[prefer] = AutoExecutor(max_workers=4, prefer=prefer)
            return made[prefer]

    yield Lazy()
    for executor in made.values():
        executor.shutdown(wait=True)


@pytest.fixture(params=PREFERS, ids=prefer_id)
def prefer(request: pytest.FixtureRequest) -> str | None:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def ex(executors: dict[str | None, AutoExecutor], prefer: str | None) -> AutoExecutor:
    return executors[prefer]


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path / "gate")
    yield g
    g.open()  # never leave a worker waiting


# ---------------------------------------------------------------------------
# submit and futures


def test_submit_results_exceptions_and_keywords(ex: AutoExecutor) -> None:
    future = ex.submit(pow, 2, 8)
    assert type(future) is Future
    assert future.result(timeout=30) == 256
    assert ex.submit(capture, 1, self=2, fn=3).result(timeout=30) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(ZeroDivisionError):
        ex.submit(divmod, 1, 0).result(timeout=30)
    with pytest.raises(TypeError):
        ex.submit(fn=capture)  # type: ignore[call-arg]


def test_wait_and_as_completed_mix_routes(executors: dict[str | None, AutoExecutor], gate: Gate) -> None:
    routes = [executors[p] for p in PREFERS]
    quick = [e.submit(pow, 3, 2) for e in routes]
    blocked = [e.submit(wait_then, gate, i) for i, e in enumerate(routes)]
    failing = routes[2].submit(divmod, 1, 0)  # a process raises
    done, not_done = wait(quick + blocked + [failing], return_when=FIRST_EXCEPTION, timeout=30)
    assert failing in done and set(blocked) <= not_done
    done, not_done = wait(quick + blocked, return_when=FIRST_COMPLETED, timeout=30)
    assert done and done <= set(quick)
    done, not_done = wait(quick, timeout=30)
    assert done == set(quick) and not not_done
    gate.open()
    seen = [f.result() for f in as_completed(quick + blocked + quick, timeout=30)]
    assert sorted(seen) == sorted([9] * 4 + [0, 1, 2, 3])
    done, not_done = wait(blocked, return_when=ALL_COMPLETED, timeout=30)
    assert not not_done


def test_as_completed_times_out(ex: AutoExecutor, gate: Gate) -> None:
    quick = ex.submit(pow, 2, 2)  # first: the inline route runs one call at a time
    blocked = ex.submit(wait_then, gate, 1)
    got = []
    with pytest.raises(TimeoutError):
        for f in as_completed([quick, blocked], timeout=1.0):
            got.append(f)  # noqa: PERF402 (collected until the timeout)
    assert got == [quick]
    gate.open()
    assert blocked.result(timeout=30) == 1


# ---------------------------------------------------------------------------
# map


def test_map_in_order_with_chunksize(ex: AutoExecutor) -> None:
    expected = [pow(i, 2) for i in range(40)]
    assert list(ex.map(pow, range(40), [2] * 40)) == expected
    for chunksize in (3, 40, 50):
        assert list(ex.map(pow, range(40), [2] * 40, chunksize=chunksize)) == expected
    # Out-of-order completion still yields in order.
    delays = [0.05, 0.0, 0.03, 0.0]
    assert list(ex.map(wait_then_sleep, delays, range(4))) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        ex.map(pow, [1], [1], chunksize=0)


def wait_then_sleep(delay: float, value: int) -> int:
    time.sleep(delay)
    return value


def test_map_empty_and_zip_semantics(ex: AutoExecutor) -> None:
    assert list(ex.map(pow, [])) == []
    assert list(ex.map(pow, [2, 3, 4], [2, 2])) == [4, 9]


def test_map_exception_at_its_position(ex: AutoExecutor) -> None:
    results = ex.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_is_lazy(ex: AutoExecutor, gate: Gate) -> None:
    # The first result is yielded while the second task still waits for us.
    results = ex.map(wait_then, [Gate("/"), gate], ["first", "second"])
    assert next(results) == "first"
    gate.open()
    assert list(results) == ["second"]


def test_map_submits_without_iteration(ex: AutoExecutor, tmp_path: Path) -> None:
    paths = [str(tmp_path / f"t{i}") for i in range(6)]
    ex.map(touch, paths)  # never iterated
    gate = Gate(tmp_path / "t5")
    assert gate.wait(30)


def test_map_timeout(ex: AutoExecutor, gate: Gate) -> None:
    ex.submit(pow, 1, 1).result(timeout=30)  # a worker is up
    results = []
    with pytest.raises(TimeoutError):
        for value in ex.map(wait_then, [Gate("/"), gate], [1, 2], timeout=1.0):
            results.append(value)  # noqa: PERF402 (collected until the timeout)
    assert results == [1]
    gate.open()


def test_map_timeout_cancels_the_rest(prefer: str | None, gate: Gate, tmp_path: Path) -> None:
    # One worker, busy: everything the map sends stays queued, so none of it
    # may run once the consumer has given up.
    with AutoExecutor(max_workers=1, prefer=prefer) as executor:
        busy = executor.submit(wait_then, gate, "busy")
        paths = [str(tmp_path / f"ran{i}") for i in range(8)]
        results = executor.map(touch, paths, timeout=0)
        with pytest.raises(TimeoutError):
            next(results)
        gate.open()
        assert busy.result(timeout=30) == "busy"
    assert not [p for p in paths if os.path.exists(p)]


def step(gate: Gate, path: str | None) -> str | None:
    gate.wait()
    if path is not None:
        touch(path)
    return path


def test_map_closing_cancels_the_rest(prefer: str | None, tmp_path: Path) -> None:
    first, rest = Gate(tmp_path / "first"), Gate(tmp_path / "rest")
    paths = [str(tmp_path / f"ran{i}") for i in range(8)]
    with AutoExecutor(max_workers=1, prefer=prefer) as executor:
        results = executor.map(step, [first] + [rest] * 8, [None, *paths])
        threading.Timer(0.05, first.open).start()
        assert next(results) is None
        results.close()  # at most the call already running may still finish
        rest.open()
    assert len([p for p in paths if os.path.exists(p)]) <= 1


@pytest.mark.parametrize(
    "prefer",
    [
        None,
        "threads",
        "processes",
        "inline",
    ],
    ids=prefer_id,
)
def test_map_frees_yielded_results(ex: AutoExecutor) -> None:
    for obj in ex.map(make_payload, range(12)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def make_payload(_: int) -> Payload:
    return Payload()


# ---------------------------------------------------------------------------
# shutdown and the context manager


@pytest.mark.timeout(30)
def test_shutdown_without_wait_returns_at_once(prefer: str | None, gate: Gate) -> None:
    executor = AutoExecutor(prefer=prefer)
    future = executor.submit(wait_then, gate, "done")
    executor.shutdown(wait=False)  # the task has not returned: must not wait
    with pytest.raises(RuntimeError):
        executor.submit(pow, 2, 2)
    gate.open()
    assert future.result(timeout=30) == "done"


def test_shutdown_waits_and_cancel_futures(prefer: str | None, gate: Gate) -> None:
    executor = AutoExecutor(max_workers=1, prefer=prefer)
    running = executor.submit(wait_then, gate, "ran")
    while not running.running():
        time.sleep(0.002)
    queued = [executor.submit(wait_then, gate, i) for i in range(10)]
    threading.Timer(0.1, gate.open).start()
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.result() == "ran"
    assert all(f.cancelled() for f in queued)


def test_a_map_read_to_its_end_ends_after_shutdown_cancelled_the_rest(prefer: str | None) -> None:
    # Cancelling what has not started leaves a map whose every call was
    # sent, and read, as it was: it ends (StopIteration), as the standard
    # library's does, with no CancelledError for calls that do not exist.
    executor = AutoExecutor(prefer=prefer)
    results = executor.map(pow, range(5), [2] * 5)
    assert [next(results) for _ in range(5)] == [i * i for i in range(5)]
    executor.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(StopIteration):
        next(results)


def test_shutdown_wait_finishes_everything(prefer: str | None) -> None:
    executor = AutoExecutor(max_workers=2, prefer=prefer)
    futures = [executor.submit(interval, 0.01) for _ in range(8)]
    mapped = executor.map(pow, range(20), [2] * 20)
    executor.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert list(mapped) == [i * i for i in range(20)]


def test_context_manager(prefer: str | None) -> None:
    with AutoExecutor(prefer=prefer) as executor:
        futures = [executor.submit(pow, i, 2) for i in range(5)]
        results = executor.map(abs, range(-3, 3))
    assert [f.result(timeout=0) for f in futures] == [0, 1, 4, 9, 16]
    assert list(results) == [3, 2, 1, 0, 1, 2]
    with pytest.raises(RuntimeError):
        executor.submit(pow, 1, 1)
    with pytest.raises(RuntimeError):
        executor.map(pow, [1], [1])
    executor.shutdown()  # a second shutdown is harmless


def test_cancelled_submission_never_runs(prefer: str | None, gate: Gate, tmp_path: Path) -> None:
    with AutoExecutor(max_workers=1, prefer=prefer) as executor:
        busy = executor.submit(wait_then, gate, 1)
        path = str(tmp_path / "ran")
        victim = executor.submit(touch, path)
        assert victim.cancel()
        gate.open()
        assert busy.result(timeout=30) == 1
        with pytest.raises(CancelledError):
            victim.result()
    assert not os.path.exists(path)


# ---------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"prefer": "thread"}, ValueError),
        ({"prefer": "loky"}, ValueError),
        ({"prefer": ""}, ValueError),
        ({"require": "nogil"}, ValueError),
        ({"prefer": "processes", "require": "sharedmem"}, ValueError),
        ({"max_workers": 0}, ValueError),
        ({"max_workers": -1}, ValueError),
        ({"max_workers": "2"}, TypeError),
        ({"max_workers": 2.0}, TypeError),
        ({"initializer": 3}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        AutoExecutor(**kwargs)


def test_max_workers_message_as_stdlib() -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        AutoExecutor(max_workers=0)


def test_coroutine_functions_rejected(ex: AutoExecutor) -> None:
    async def coro(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="coroutine"):
        ex.submit(coro, 1)
    with pytest.raises(TypeError, match="coroutine"):
        ex.submit(functools.partial(coro, 1))
    with pytest.raises(TypeError, match="coroutine"):
        ex.map(coro, [1])
    assert asyncio.iscoroutinefunction(coro)  # the check is real


def test_require_sharedmem_never_uses_processes() -> None:
    with AutoExecutor(require="sharedmem") as executor:
        pids = {executor.submit(initialized).result(timeout=30)[1] for _ in range(4)}
        pids |= {pid for _, pid in executor.map(initialized, range(8))}
        assert executor.submit(interval_processes, 0).result(timeout=30)  # pinned: falls back
    assert pids == {os.getpid()}


# ---------------------------------------------------------------------------
# max_workers caps concurrency


def test_max_workers_caps_each_route(prefer: str | None) -> None:
    with AutoExecutor(max_workers=2, prefer=prefer) as executor:
        futures = [executor.submit(interval, 0.04) for _ in range(8)]
        mapped = list(executor.map(interval, [0.04] * 8))
        spans = [f.result(timeout=30) for f in futures] + mapped
    assert max_overlap(spans) <= 2


def test_max_workers_caps_across_routes() -> None:
    with AutoExecutor(max_workers=2) as executor:
        futures = [
            executor.submit(fn, 0.04)
            for _ in range(4)
            for fn in (interval_threads, interval_inline, interval_processes, interval)
        ]
        spans = [f.result(timeout=30) for f in futures]
    assert max_overlap(spans) <= 2


def test_same_process_counter_under_cap(prefer: str | None) -> None:
    if prefer == "processes":
        pytest.skip("a lock counter needs shared memory; the interval test covers processes")
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def task(_: int) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.01)
        with lock:
            state["now"] -= 1

    with AutoExecutor(max_workers=3, prefer=prefer) as executor:
        for f in [executor.submit(task, i) for i in range(15)]:
            f.result(timeout=30)
        list(executor.map(task, range(15)))
    assert 1 <= state["peak"] <= 3


# ---------------------------------------------------------------------------
# Initializers


def test_initializer_runs_in_every_worker(prefer: str | None) -> None:
    with AutoExecutor(max_workers=3, prefer=prefer, initializer=remember, initargs=("ready",)) as executor:
        outcomes = [f.result(timeout=30) for f in [executor.submit(initialized) for _ in range(9)]]
        outcomes += list(executor.map(initialized, range(9)))
    assert {token for token, _ in outcomes} == {"ready"}


@pytest.mark.timeout(60)
def test_failing_initializer_breaks_the_executor(prefer: str | None, caplog: pytest.LogCaptureFixture) -> None:
    executor = AutoExecutor(max_workers=2, prefer=prefer, initializer=failing_initializer)
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        try:
            future = executor.submit(pow, 2, 2)
        except BrokenExecutor:
            pass
        else:
            with pytest.raises(BrokenExecutor):
                future.result(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                executor.submit(pow, 2, 2)
            except BrokenExecutor:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the executor never broke")
        with pytest.raises(BrokenExecutor):
            executor.map(pow, [1], [1])
    executor.shutdown(wait=True)
    records = [r for r in caplog.records if r.name == "concurrent.futures" and r.levelno == logging.CRITICAL]
    assert any("Exception in initializer" in r.getMessage() for r in records)


# ---------------------------------------------------------------------------
# References are not kept


def test_arguments_and_callables_freed_after_completion(ex: AutoExecutor) -> None:
    arg = Payload()
    arg_ref = weakref.ref(arg)
    owner = Payload()
    owner_ref = weakref.ref(owner)
    futures = [ex.submit(size_of, arg), ex.submit(owner.method)]
    for f in futures:
        f.result(timeout=30)
    del arg, owner, futures
    deadline = time.monotonic() + 10
    while (arg_ref() is not None or owner_ref() is not None) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert arg_ref() is None
    assert owner_ref() is None


def test_dropped_executor_stops_its_threads(prefer: str | None) -> None:
    executor = AutoExecutor(prefer=prefer)
    # (A partial: abs itself, given numbers, runs on the map's reader.)
    assert list(executor.map(functools.partial(abs), range(-3, 3))) == [3, 2, 1, 0, 1, 2]
    threads = executor._threads
    assert threads
    del executor
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_executor_keeps_no_function_alive_after_repeated_submits() -> None:
    # Repeated submits of one function take a shortcut past the lookups;
    # the shortcut must not hold the function (nor what it closes over).
    class Owner:
        pass

    def make(held: Owner) -> Any:
        def task(x: int) -> int:
            return x + (held is not None)

        return task

    owner = Owner()
    owner_ref = weakref.ref(owner)
    task = make(owner)
    del owner
    with AutoExecutor(prefer=None) as executor:
        assert [executor.submit(abs, -i).result() for i in range(5)] == list(range(5))  # no weakref
        assert [executor.submit(task, i).result() for i in range(30)] == list(range(1, 31))
        del task
        deadline = time.monotonic() + 10
        while owner_ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert owner_ref() is None


def test_control_thread_ends_with_its_executor(prefer: str | None) -> None:
    # Probes are judged and map windows refilled by a thread of the
    # executor's own (so that worker threads run user calls only); it must
    # end like the workers.
    def control_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.endswith("-control")}

    before = control_threads()
    with AutoExecutor(2, prefer=prefer) as executor:
        assert list(executor.map(abs, range(-60, 0))) == list(range(60, 0, -1))
        assert executor.submit(abs, -3).result() == 3
    assert control_threads() == before
    dropped = AutoExecutor(2, prefer=prefer)
    assert list(dropped.map(abs, range(-60, 0))) == list(range(60, 0, -1))
    started = control_threads() - before
    del dropped
    gc.collect()
    for thread in started:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_map_goes_on_while_the_control_thread_is_busy() -> None:
    # The consumer refills a map's window too: a control thread busy with a
    # long job (a model to read beside a busy lane) must not leave the map
    # without work.  Forced inline, in chunks of 256: 40 windows to refill.
    with AutoExecutor(prefer="inline") as executor:
        busy = threading.Event()
        control = executor._control()
        assert control is not None
        control.call(busy.wait, 30)
        try:
            results = list(executor.map(abs, range(-40_000, 0), timeout=20))
        finally:
            busy.set()
    assert results == list(range(40_000, 0, -1))


# ---------------------------------------------------------------------------
# Import and construction are free


def test_import_and_construct_start_nothing_and_load_no_heavy_modules() -> None:
    script = r"""
import os, sys, threading
before = set(os.listdir("/proc/self/task"))
import adaptive_pool
from adaptive_pool import AutoExecutor
executors = [AutoExecutor(), AutoExecutor(4, prefer="processes"), AutoExecutor(prefer="inline"),
             AutoExecutor(prefer="threads", initializer=print)]
assert threading.active_count() == 1, threading.enumerate()
assert set(os.listdir("/proc/self/task")) == before, "a native thread started"
children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
assert not children, children
heavy = sorted(m for m in ("numpy", "sklearn", "joblib", "scipy") if m in sys.modules)
assert not heavy, heavy
print("clean")
"""
    result = run_python(["-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_public_names_resolve_and_load_on_first_use() -> None:
    script = r"""
import os, sys
os.environ["ADAPTIVE_POOL_WORKER"] = "1"  # as in a worker process
import adaptive_pool
assert "adaptive_pool._executor" not in sys.modules  # a submodule's importer pays for it alone
import adaptive_pool._workloads
assert "adaptive_pool._executor" not in sys.modules and "logging" not in sys.modules
for name in adaptive_pool.__all__:
    assert getattr(adaptive_pool, name) is not None, name
assert set(adaptive_pool.__all__) <= set(dir(adaptive_pool))
from adaptive_pool import AutoExecutor
from adaptive_pool._executor import AutoExecutor as defined
assert AutoExecutor is defined
try:
    adaptive_pool.no_such_name
except AttributeError:
    print("clean")
"""
    result = run_python(["-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


# ---------------------------------------------------------------------------
# Probing on the automatic path


class CountingPolicy:
    """The heuristic, counting how often it is asked."""

    source = "heuristic"

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.inner = HeuristicPolicy()

    def choose(self, features: Any, allowed: Any) -> Choice:
        with self.lock:
            self.calls += 1
        return self.inner.choose(features, allowed)


def probed_work(x: int) -> int:
    return x * 2


def sequential_work(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_exactly_probes_calls_measured_under_concurrent_submits(
    probes: int, monkeypatch: pytest.MonkeyPatch, fresh_profiles: None
) -> None:
    import adaptive_pool._executor as executor_module

    measured = []
    real = executor_module.measure_call

    def counting(*args: Any, **kwargs: Any) -> Any:
        measured.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "measure_call", counting)
    policy = CountingPolicy()
    with AutoExecutor(policy=policy, probes=probes, probe_deadline=60) as executor:
        barrier = threading.Barrier(16)
        results: list[list[int]] = [[] for _ in range(16)]

        def submitter(i: int) -> None:
            barrier.wait()
            futures = [executor.submit(probed_work, i * 10 + j) for j in range(5)]
            results[i] = [f.result(timeout=30) for f in futures]

        threads = [threading.Thread(target=submitter, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        decision = executor.decision_for(probed_work)
    assert [r for rs in results for r in rs] == [2 * (i * 10 + j) for i in range(16) for j in range(5)]
    assert len(measured) == probes
    assert policy.calls == 1  # one final decision; nothing waited past the deadline
    assert isinstance(decision, Decision) and decision.source == "heuristic"


def test_sequential_calls_are_all_probed_before_deciding(monkeypatch: pytest.MonkeyPatch, fresh_profiles: None) -> None:
    import adaptive_pool._executor as executor_module

    measured = []
    real = executor_module.measure_call
    monkeypatch.setattr(executor_module, "measure_call", lambda *a, **k: measured.append(1) or real(*a, **k))
    with AutoExecutor(probes=3, probe_deadline=60) as executor:
        for i in range(6):
            assert executor.submit(sequential_work, i).result(timeout=30) == i + 1
        assert executor.decision_for(sequential_work) is not None
    assert len(measured) == 3


def test_deadline_decides_for_waiting_calls(fresh_profiles: None, gate: Gate) -> None:
    # Probes that block must not hold back the calls queued behind them.
    policy = CountingPolicy()
    with AutoExecutor(policy=policy, probes=2, probe_deadline=0.05) as executor:
        blocked = [executor.submit(wait_then, gate, i) for i in range(2)]
        follower = executor.submit(wait_then, Gate("/"), "follower")
        assert follower.result(timeout=30) == "follower"
        gate.open()
        assert [f.result(timeout=30) for f in blocked] == [0, 1]
    assert policy.calls >= 1


# ---------------------------------------------------------------------------
# The standard library's parameters reach the pools they concern


def test_mp_context_pool_keeps_the_contract(gate: Gate, tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with AutoExecutor(max_workers=1, prefer="processes", mp_context=context) as executor:
        assert executor.submit(lambda x: x + 1, 1).result(timeout=60) == 2  # cloudpickled
        assert list(executor.map(pow, range(6), [2] * 6, chunksize=4)) == [i * i for i in range(6)]
        busy = executor.submit(wait_then, gate, "busy")
        while not busy.running():  # handed to the pool
            time.sleep(0.002)
        queued = [executor.submit(touch, str(tmp_path / f"ran{i}")) for i in range(3)]
        executor.shutdown(wait=False, cancel_futures=True)
        gate.open()
        assert busy.result(timeout=60) == "busy"
        assert all(f.done() for f in queued)
    ran = [f for f in queued if not f.cancelled()]
    assert all(f.exception() is None for f in ran)


def test_thread_name_prefix_names_every_worker_thread() -> None:
    # require="sharedmem": the lambdas read thread names, which only mean
    # something in this process (the decision could otherwise be processes).
    with AutoExecutor(max_workers=3, thread_name_prefix="Special", require="sharedmem") as executor:
        names = {executor.submit(lambda: threading.current_thread().name).result(timeout=30) for _ in range(4)}
        names |= set(executor.map(lambda _: threading.current_thread().name, range(30)))
        assert {t.name for t in executor._threads} >= names
    assert names and all(name.startswith("Special_") for name in names)

"""Faults a task can cause, bad input, and hostile use: the failing call fails
alone, with a clear exception; everything else arrives; nothing hangs.

Process crashes are in ``test_crashes.py``.  Scenarios that end an
interpreter, drop an executor or may hang run in a subprocess
(``tests/scripts/scenarios.py``); the rest run here against executors shared
per module (process pools are slow to start).
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, wait

# The builtin TimeoutError from Python 3.11; on 3.10 a class of its own,
# which map(timeout=) raises there (the standard library's and ours).
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from helpers import run_scenario

from adaptive_pool import AutoExecutor, Choice, RemoteTraceback, WorkerCrashedError, pin
from adaptive_pool._batch import Batch, Raised
from adaptive_pool._routes import InlineRoute, ThreadRoute
from adaptive_pool._workers import RemoteError, WorkerPool
from adaptive_pool._workloads import python_loop

ROUTES = ("threads", "processes", "inline")


def assert_clean(report: dict[str, Any], stderr: str) -> None:
    assert report["threads"] == [], "threads left running"
    assert report["children"] == [], "processes left running"
    assert stderr == ""


@pytest.fixture(scope="module")
def executors() -> Iterator[dict[str, AutoExecutor]]:
    pool = {route: AutoExecutor(2, prefer=route) for route in ROUTES}
    yield pool
    for ex in pool.values():
        ex.shutdown()


@pytest.fixture(params=ROUTES)
def ex(request: pytest.FixtureRequest, executors: dict[str, AutoExecutor]) -> AutoExecutor:
    return executors[request.param]


def outcome(future: Future[Any], timeout: float = 30) -> tuple[Any, ...]:
    try:
        return ("ok", future.result(timeout))
    except CancelledError:
        return ("cancelled",)
    except BaseException as exc:
        return ("error", type(exc), str(exc))


# ----------------------------------------------------------------------
# task functions (module level: the process route imports them by name)


def identity(x: Any) -> Any:
    return x


def fail_with(kind: str, x: int) -> int:
    if kind == "value":
        raise ValueError(f"bad value {x}")
    if kind == "system_exit":
        raise SystemExit(x)
    if kind == "keyboard":
        raise KeyboardInterrupt(f"interrupt {x}")
    if kind == "unpicklable_exc":
        raise TwoArgError("first", x)
    return x


class TwoArgError(Exception):
    """Pickles, but does not unpickle: __init__ wants two arguments."""

    def __init__(self, a: str, b: int) -> None:
        super().__init__(f"{a} and {b}")


def returns_unpicklable(x: int) -> Any:
    if x == 2:
        return threading.Lock()
    return x


def heavy(x: int, payload: Any = None) -> int:
    python_loop(20000)
    return x


# ----------------------------------------------------------------------
# Exceptions


def test_exception_keeps_type_message_and_traceback(ex: AutoExecutor) -> None:
    futures = [ex.submit(fail_with, "value" if i == 1 else "none", i) for i in range(4)]
    assert [f.result(30) for f in futures if f is not futures[1]] == [0, 2, 3]
    exc = futures[1].exception(30)
    assert type(exc) is ValueError and str(exc) == "bad value 1"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "in fail_with" in text and 'raise ValueError(f"bad value {x}")' in text
    if ex._forced == "process":
        assert isinstance(exc.__cause__, RemoteTraceback)  # the worker's traceback text


def test_exception_that_cannot_be_unpickled_is_wrapped(ex: AutoExecutor) -> None:
    futures = [ex.submit(fail_with, "unpicklable_exc" if i == 0 else "none", i) for i in range(3)]
    exc = futures[0].exception(30)
    if ex._forced == "process":
        assert isinstance(exc, RemoteError)
        assert str(exc) == "TwoArgError: first and 0"
        assert "in fail_with" in exc.__cause__.tb
    else:
        assert isinstance(exc, TwoArgError)  # no pickling on this route
    assert [f.result(30) for f in futures[1:]] == [1, 2]
    assert ex.submit(identity, 5).result(30) == 5


@pytest.mark.parametrize("kind, exc_type", [("system_exit", SystemExit), ("keyboard", KeyboardInterrupt)])
def test_system_exit_and_keyboard_interrupt_fail_only_their_future(
    ex: AutoExecutor, kind: str, exc_type: type[BaseException]
) -> None:
    futures = [ex.submit(fail_with, kind if i == 2 else "none", i) for i in range(5)]
    wait(futures, timeout=30)
    exc = futures[2].exception(0)
    assert type(exc) is exc_type
    assert [f.result(0) for i, f in enumerate(futures) if i != 2] == [0, 1, 3, 4]
    assert ex.submit(identity, "still here").result(30) == "still here"


def test_exception_in_a_probe_fails_only_that_future() -> None:
    def first_call_fails(x: int) -> int:
        if x == 0:
            raise LookupError("probe failed")
        return x * 3

    with AutoExecutor(2) as auto:
        futures = [auto.submit(first_call_fails, i) for i in range(20)]
        exc = futures[0].exception(30)
        assert type(exc) is LookupError and str(exc) == "probe failed"
        assert [f.result(30) for f in futures[1:]] == [i * 3 for i in range(1, 20)]
        assert list(auto.map(first_call_fails, [1, 2])) == [3, 6]


def test_system_exit_in_a_probe_fails_only_that_future() -> None:
    def exits_once(x: int) -> int:
        if x == 0:
            raise SystemExit("probe exits")
        return x

    with AutoExecutor(2) as auto:
        futures = [auto.submit(exits_once, i) for i in range(10)]
        assert type(futures[0].exception(30)) is SystemExit
        assert [f.result(30) for f in futures[1:]] == list(range(1, 10))


# ----------------------------------------------------------------------
# Pickling


def test_unpicklable_arguments_fail_only_their_call(executors: dict[str, AutoExecutor]) -> None:
    ex = executors["processes"]
    lock = threading.Lock()
    futures = [ex.submit(identity, lock if i == 1 else i) for i in range(4)]
    got = [outcome(f) for f in futures]
    assert got[0] == ("ok", 0) and got[2] == ("ok", 2) and got[3] == ("ok", 3)
    kind, exc_type, message = got[1]
    assert exc_type is pickle.PicklingError
    assert "arguments" in message and "identity" in message and "lock" in message
    assert ex.submit(identity, 9).result(30) == 9


def test_unpicklable_function_says_so(executors: dict[str, AutoExecutor]) -> None:
    ex = executors["processes"]
    lock = threading.Lock()

    def closes_over_lock(x: int) -> bool:
        return lock.locked()

    exc = ex.submit(closes_over_lock, 1).exception(30)
    assert isinstance(exc, pickle.PicklingError)
    assert "the function" in str(exc) and "closes_over_lock" in str(exc) and "lock" in str(exc)
    assert ex.submit(identity, 3).result(30) == 3


def test_unpicklable_result_fails_only_its_call(executors: dict[str, AutoExecutor]) -> None:
    ex = executors["processes"]
    futures = [ex.submit(returns_unpicklable, i) for i in range(4)]
    got = [outcome(f) for f in futures]
    assert [g for i, g in enumerate(got) if i != 2] == [("ok", 0), ("ok", 1), ("ok", 3)]
    kind, exc_type, message = got[2]
    assert exc_type is pickle.PicklingError
    assert "result (lock)" in message and "could not be pickled" in message
    assert list(ex.map(returns_unpicklable, [5, 6])) == [5, 6]


def test_unpicklable_work_runs_without_pickling_on_the_automatic_path() -> None:
    # The probes see that the function or its result do not pickle: the
    # work stays on a route that needs no pickling, and every call succeeds.
    lock = threading.Lock()

    def heavy_closure(x: int) -> int:
        python_loop(20000)
        return x if not lock.locked() else -1

    def heavy_returns_lock(x: int) -> Any:
        python_loop(20000)
        return threading.Lock()

    with AutoExecutor(2) as auto:
        assert [f.result(30) for f in [auto.submit(heavy_closure, i) for i in range(12)]] == list(range(12))
        results = [f.result(30) for f in [auto.submit(heavy_returns_lock, i) for i in range(12)]]
        assert all(type(r) is type(lock) for r in results)
        for fn in (heavy_closure, heavy_returns_lock):
            decision = auto.decision_for(fn)
            assert decision is not None and decision.backend != "process"


def test_unpicklable_argument_on_the_automatic_path_fails_alone() -> None:
    # Decided "process" from earlier calls; one call then brings a lock.
    class ProcessPolicy:
        source = "heuristic"

        def choose(self, features: Any, allowed: Any) -> Choice:
            return Choice("process" if "process" in allowed else "thread", 1.0, "test")

    with AutoExecutor(2, policy=ProcessPolicy()) as auto:
        assert [auto.submit(heavy, i).result(30) for i in range(3)] == [0, 1, 2]
        futures = [auto.submit(heavy, i, threading.Lock() if i == 4 else None) for i in range(8)]
        got = [outcome(f) for f in futures]
        assert [g for i, g in enumerate(got) if i != 4] == [("ok", i) for i in range(8) if i != 4]
        assert got[4][1] is pickle.PicklingError and "arguments" in got[4][2]


def crash_if_three(x: int) -> int:
    if x == 3:
        os._exit(9)
    return x


def test_worker_pool_batch_crash_costs_one_call() -> None:
    # The pool itself: one batch of 8 calls, the 4th kills its worker.  The
    # three before keep their results, the four after run on a new worker.
    pool = WorkerPool(1)
    try:
        futures: list[Future[Any]] = [Future() for _ in range(8)]
        finished = threading.Event()
        batch = Batch(crash_if_three, [((i,), {}) for i in range(8)], futures, on_done=lambda b: finished.set())
        pool.submit(batch)
        assert finished.wait(30)
        got = [outcome(f, 0) for f in futures]
        assert [g for i, g in enumerate(got) if i != 3] == [("ok", i) for i in range(8) if i != 3]
        assert got[3][1] is WorkerCrashedError and "exited with code 9" in got[3][2]
        assert issubclass(WorkerCrashedError, BrokenProcessPool)
    finally:
        pool.shutdown()
    assert pool.worker_pids() == []


def test_worker_pool_splits_batches_for_max_tasks_per_child() -> None:
    pool = WorkerPool(1, max_tasks_per_child=3)
    try:
        futures: list[Future[Any]] = [Future() for _ in range(7)]
        done = threading.Event()
        pool.submit(Batch(_pid_of, [((i,), {}) for i in range(7)], futures, on_done=lambda b: done.set()))
        assert done.wait(30)
        pids = [f.result(0) for f in futures]
        # 3 + 3 + 1 calls: three worker processes, in order.
        assert len(set(pids[0:3])) == len(set(pids[3:6])) == 1
        assert len({pids[0], pids[3], pids[6]}) == 3
    finally:
        pool.shutdown()


def _pid_of(_: int) -> int:
    return os.getpid()


def crash_once_at_three(x: int, marker: str) -> int:
    """Kills its worker the first time it runs with x == 3, then works."""
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return x


def _run_batch(pool: WorkerPool, fn: Any, calls: list[Any], collect: bool = False) -> list[Any]:
    """Run one batch on the pool; a map chunk (collect) gives ``[("ok", outcomes)]``."""
    futures: list[Future[Any]] = [Future()] if collect else [Future() for _ in calls]
    done = threading.Event()
    batch = Batch(fn, calls, futures, on_done=lambda b: done.set(), collect=collect)
    collected = batch.outcomes  # the batch lets go of it when it finishes
    pool.submit(batch)
    assert done.wait(60)
    if collect:
        assert collected is not None and collected.closed
        return [("ok", [(False, v.error) if isinstance(v, Raised) else (True, v) for v in collected.items])]
    return [outcome(f, 0) for f in futures]


@pytest.mark.parametrize("collect", [False, True], ids=["submitted", "map_chunk"])
def test_worker_pool_crash_retries_when_opted_in(tmp_path: Any, collect: bool) -> None:
    pool = WorkerPool(1, crash_retries=1)
    try:
        calls = [((i, str(tmp_path / "marker")), {}) for i in range(6)]
        got = _run_batch(pool, crash_once_at_three, calls, collect)
        if collect:
            assert got == [("ok", [(True, i) for i in range(6)])]
        else:
            assert got == [("ok", i) for i in range(6)]
        # A call that crashes every time fails after its retries, saying so.
        got = _run_batch(pool, crash_if_three, [((i,), {}) for i in range(5)], collect)
        if collect:
            (kind, outcomes), = got
            assert kind == "ok" and outcomes[:3] == [(True, 0), (True, 1), (True, 2)]
            ok, exc = outcomes[3]
        else:
            assert [g for i, g in enumerate(got) if i != 3] == [("ok", i) for i in range(5) if i != 3]
            assert got[3][1] is WorkerCrashedError
            ok, exc = False, got[3][2]
        assert not ok
        assert "crashed 2 times" in str(exc) and "crash_retries=1" in str(exc)
    finally:
        pool.shutdown()


def test_worker_pool_rejects_bad_crash_retries() -> None:
    with pytest.raises(ValueError, match="crash_retries"):
        WorkerPool(1, crash_retries=-1)


# ----------------------------------------------------------------------
# Concurrency and callbacks


def test_many_threads_submitting_at_once(ex: AutoExecutor) -> None:
    results: dict[int, list[Future[Any]]] = {}
    start = threading.Barrier(8)

    def submitter(k: int) -> None:
        start.wait()
        results[k] = [ex.submit(identity, (k, i)) for i in range(300)]

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(8):
        assert [f.result(60) for f in results[k]] == [(k, i) for i in range(300)]


def test_many_threads_submitting_on_the_automatic_path() -> None:
    def work(x: int) -> int:
        return x + 1

    with AutoExecutor(2) as auto:
        out: dict[int, list[int]] = {}

        def submitter(k: int) -> None:
            futures = [auto.submit(work, i) for i in range(500)]
            out[k] = [f.result(60) for f in futures]

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(out[k] == list(range(1, 501)) for k in range(8))


class _RacingBacklog:
    """A lane's backlog that lets a submit in at one moment of the lane's
    look at it: just after the lane finds it empty one way or the other."""

    def __init__(self, real: Any, moment: str, submit: Any) -> None:
        self.real, self.moment, self.submit = real, moment, submit

    def _race(self, moment: str) -> None:
        if moment == self.moment:
            self.moment = ""
            self.submit()

    def put(self, item: Any) -> None:
        self.real.put(item)

    def get_nowait(self) -> Any:
        try:
            return self.real.get_nowait()
        except Exception:
            self._race("got nothing")
            raise

    def empty(self) -> bool:
        empty = self.real.empty()
        if empty:
            self._race("looked empty")
        return empty


@pytest.fixture
def inline_lane() -> Iterator[tuple[InlineRoute, ThreadRoute]]:
    """An inline route on a thread route of one thread, both shut down after."""
    threads = ThreadRoute(1)
    lane = InlineRoute(threads)
    try:
        yield lane, threads
    finally:
        lane.shutdown(wait=False)
        threads.shutdown(wait=False)


def seven_batch() -> tuple[Batch, Future[Any]]:
    """A batch of one call, ``identity(7)``, and its future."""
    future: Future[Any] = Future()
    return Batch(identity, [((7,), {})], [future]), future


@pytest.mark.timeout(30)
@pytest.mark.parametrize("moment", ["got nothing", "looked empty"])
def test_inline_lane_never_strands_a_batch(inline_lane: tuple[InlineRoute, ThreadRoute], moment: str) -> None:
    # The lane ends when its backlog is empty, and a submit that sees a
    # lane out sends none: a batch queued while the lane ends must run.
    lane, _ = inline_lane
    batch, future = seven_batch()
    lane._backlog = _RacingBacklog(lane._backlog, moment, lambda: lane.submit(batch))  # type: ignore[assignment]
    lane._lane_out = True  # this thread plays the lane that is out
    taken = lane.next_batch()
    if taken is not None:
        taken.run_here()
    assert future.result(10) == 7  # run here, or by a lane sent meanwhile


@pytest.mark.timeout(60)
@pytest.mark.parametrize("taken", [0, 10])
@pytest.mark.parametrize("ending", ["shutdown", "background"])
def test_a_map_of_tiny_calls_runs_whole_without_its_consumer(taken: int, ending: str) -> None:
    # The consumer of such a map runs its batches when it reads them; a map
    # read only in part, or not at all, still runs every call, as with the
    # standard library (by the executor's own threads, then).
    ran: list[int] = []
    ex = AutoExecutor()
    try:
        results = ex.map(ran.append, range(20_000))
        assert [next(results) for _ in range(taken)] == [None] * taken
        if ending == "shutdown":
            ex.shutdown(wait=True)
        else:
            deadline = time.monotonic() + 30
            while len(ran) < 20_000 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert sorted(ran) == list(range(20_000))
        del results
    finally:
        ex.shutdown(wait=False, cancel_futures=True)  # a failure above must not hang here


def doubled(x: int) -> int:
    return 2 * x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("taken", [0, 10])
@pytest.mark.parametrize("ending", ["shutdown", "shutdown_nowait", "dropped", "cancelled"])
def test_a_map_of_self_contained_tiny_calls_waits_for_its_reader_and_loses_nothing(taken: int, ending: str) -> None:
    # Calls nobody could watch (no call out, numbers in: see
    # adaptive_pool._bytecode.self_contained) run when their map is read,
    # with no thread started for them; a shutdown runs (or cancels) what
    # is left all the same, and a map given up is settled: nothing hangs.
    calls = 200_000  # several batches: the next waits while this one is read
    before = set(threading.enumerate())
    ex = AutoExecutor()
    try:
        results = ex.map(doubled, range(calls))
        assert [next(results) for _ in range(taken)] == [2 * x for x in range(taken)]
        assert not [t.name for t in threading.enumerate() if t not in before]
        if ending == "dropped":
            del results
            ex.shutdown(wait=True)
        elif ending == "cancelled":
            ex.shutdown(wait=True, cancel_futures=True)
            # The map's calls were its reader's from the start (an iterator
            # running each as it is read): none was left to cancel.
            assert list(results) == [2 * x for x in range(taken, calls)]
        else:
            ex.shutdown(wait=ending == "shutdown")
            assert list(results) == [2 * x for x in range(taken, calls)]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)  # a failure above must not hang here


@pytest.mark.timeout(30)
@pytest.mark.parametrize("order", ["queued_first", "reader_first"])
def test_a_paced_batch_its_reader_cannot_take_gets_a_lane(
    inline_lane: tuple[InlineRoute, ThreadRoute], order: str
) -> None:
    # A paced batch is queued with no lane; a reader that comes before it is
    # queued (or after a lane took it) cannot run it, and must not wait for
    # nobody: a lane is sent, whichever of the two comes first.
    lane, threads = inline_lane
    batch, future = seven_batch()
    batch.offer()
    batch.paced = True
    if order == "queued_first":
        lane.submit(batch)
        assert not future.done() and not threads.threads()  # waits for its reader, no lane
        lane.unpace(batch)
    else:
        assert not batch.take_over()  # not queued yet: the reader cannot run it
        lane.unpace(batch)
        lane.submit(batch)
    assert future.result(10) == 7


def test_callbacks_that_submit_more_work(ex: AutoExecutor) -> None:
    done = threading.Event()
    seen: list[int] = []

    def chain(future: Future[Any]) -> None:
        value = future.result()
        seen.append(value)
        if value < 30:
            ex.submit(identity, value + 1).add_done_callback(chain)
        else:
            done.set()

    ex.submit(identity, 0).add_done_callback(chain)
    assert done.wait(60)
    assert seen == list(range(31))


def test_callback_that_raises_is_logged_and_harms_nothing(
    ex: AutoExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_callback(_: Future[Any]) -> None:
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        futures = [ex.submit(identity, i) for i in range(6)]
        futures[2].add_done_callback(bad_callback)
        assert [f.result(30) for f in futures] == list(range(6))
        wait(futures)
        late = ex.submit(identity, 99)
        late.add_done_callback(bad_callback)
        assert late.result(30) == 99
        deadline = time.monotonic() + 10
        while sum("callback bug" in r.getMessage() or "callback bug" in (r.exc_text or "") for r in caplog.records) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # As the standard library: "exception calling callback for <Future ...>".
    assert any("exception calling callback" in r.getMessage() for r in caplog.records)
    assert list(ex.map(identity, range(3))) == [0, 1, 2]


def _raising_iterable(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError("the iterable broke")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fn", [identity, str])  # self-contained, or not
def test_shutdown_does_not_wait_for_the_reader_of_an_endless_buffered_map(fn: Callable[[Any], Any]) -> None:
    # As with the standard library (3.14): what was sent runs and comes;
    # no more is taken from the input, and reading past it says why.
    ex = AutoExecutor()
    inputs = itertools.count()
    results = ex.map(fn, inputs, buffersize=4)
    assert next(results) == fn(0)
    ex.shutdown(wait=True)  # would wait for ever for this thread to read on
    got = []
    with pytest.raises(RuntimeError, match="after shutdown"):
        for value in results:
            got.append(value)
    assert got == [fn(i) for i in range(1, 1 + len(got))] and len(got) <= 4
    assert next(inputs) <= 1 + 4  # the input was not read on


def test_map_over_an_iterable_that_raises(ex: AutoExecutor) -> None:
    with pytest.raises(ValueError, match="the iterable broke"):
        list(ex.map(identity, _raising_iterable(5)))
    with pytest.raises(ValueError, match="the iterable broke"):
        got = []
        for value in ex.map(identity, _raising_iterable(5), buffersize=2):
            got.append(value)
    # Lazily, where the iterable broke: the results before it come first, in
    # order.  (Python 3.14's map takes the next input before handing out each
    # result, so it stops at [0, 1, 2]; handing out all five is fine too.)
    assert got in ([0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4])
    assert list(ex.map(identity, range(4))) == [0, 1, 2, 3]


def slow_identity(x: float) -> float:
    time.sleep(x)
    return x


def test_map_timeout_expires(ex: AutoExecutor) -> None:
    results = ex.map(slow_identity, [0.0, 1.0, 1.0, 1.0], timeout=0.3)
    assert next(results) == 0.0
    with pytest.raises(FuturesTimeoutError):
        next(results)
    # The executor is still usable, and nothing waits on the abandoned map.
    assert ex.submit(identity, 7).result(30) == 7


def test_map_timeout_on_the_automatic_path() -> None:
    with AutoExecutor(2) as auto:
        with pytest.raises(FuturesTimeoutError):
            list(auto.map(slow_identity, [0.5] * 6, timeout=0.2))
        assert list(auto.map(identity, [1, 2])) == [1, 2]


# ----------------------------------------------------------------------
# Shutdown and lifetime (in subprocesses)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["threads", "processes", "auto"])
def test_shutdown_without_wait_returns_with_a_task_stuck(route: str) -> None:
    report, stderr = run_scenario("shutdown_nowait_stuck", route=route)
    assert report["still_running_after_shutdown"] is True  # it returned before the task ended
    assert report["refused"] == "cannot schedule new futures after shutdown"
    assert report["result"] == ["ok", 0] and report["runs"] == {"0": 1}
    assert_clean(report, stderr)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ROUTES)
def test_shutdown_cancel_futures(route: str) -> None:
    report, stderr = run_scenario("shutdown_cancel", route=route)
    states = report["states"]
    assert states[0] == ["ok", 0]
    assert states[1:] == [["cancelled"]] * 5
    assert report["runs"] == {"0": 1}
    assert_clean(report, stderr)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("route", ["threads", "processes", "inline", "auto"])
def test_shutdown_from_another_thread_while_submitting(route: str) -> None:
    report, stderr = run_scenario("shutdown_while_submitting", route=route)
    assert report["submitted"] > 0
    assert report["not_done"] == 0  # every future submit() returned ended
    assert report["refused"] == [0, 1, 2, 3]  # every submitter was told, with RuntimeError
    assert report["errors"] == []
    assert_clean(report, stderr)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["threads", "processes", "auto"])
def test_executor_dropped_without_shutdown(route: str) -> None:
    report, stderr = run_scenario("dropped_executor", route=route)
    assert report["outcomes"] == [["ok", i] for i in range(5)]
    assert report["runs"] == {str(i): 1 for i in range(5)}
    assert report["collected"] is True  # no thread keeps the executor alive
    assert report["workers_alive"] == []
    if route == "processes":
        assert report["worker_pids"]
    assert_clean(report, stderr)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["threads", "processes"])
def test_interpreter_exit_finishes_pending_work(route: str) -> None:
    report, stderr = run_scenario("exit_with_pending", route=route)
    ran = sorted(int(line) for line in report["log"])
    assert ran == list(range(6))
    assert stderr == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["threads", "processes"])
def test_shutdown_from_a_done_callback(route: str) -> None:
    report, stderr = run_scenario("callback_shutdown_from_callback", route=route)
    assert report["result"] == ["ok", 9] and report["callback_finished"] is True
    assert_clean(report, stderr)


@pytest.mark.timeout(60)
def test_a_failing_policy_does_not_hang_anything() -> None:
    report, _ = run_scenario("policy_raises")
    assert report["hung"] is False
    assert report["outcomes"] == [["ok", i * i] for i in range(10)]
    assert report["mapped"] == ["ok", [0, 1, 4, 9, 16]]


# ----------------------------------------------------------------------
# Bad input: the standard library's exception types, at the call that got them


@pytest.mark.parametrize(
    "kwargs, exc_type, words",
    [
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"max_workers": -1}, ValueError, "max_workers"),
        ({"max_workers": "2"}, TypeError, "max_workers"),
        ({"max_workers": 2.0}, TypeError, "max_workers"),
        ({"prefer": "gpu"}, ValueError, "prefer"),
        ({"require": "nothing"}, ValueError, "require"),
        ({"prefer": "processes", "require": "sharedmem"}, ValueError, "sharedmem"),
        ({"initializer": 5}, TypeError, "initializer"),
        ({"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child"),
        ({"max_tasks_per_child": "1"}, TypeError, "max_tasks_per_child"),
        ({"probes": 0}, ValueError, "probes"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], exc_type: type[Exception], words: str) -> None:
    with pytest.raises(exc_type, match=words):
        AutoExecutor(**kwargs)


@pytest.mark.parametrize("value, exc_type", [("x", TypeError), (-1, ValueError), (float("nan"), ValueError)])
def test_bad_probe_deadline(value: Any, exc_type: type[Exception]) -> None:
    with pytest.raises(exc_type, match="probe_deadline"):
        AutoExecutor(probe_deadline=value)


@pytest.mark.parametrize("name", ["policy", "process_executor", "mp_context"])
def test_bad_collaborator_objects(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        AutoExecutor(**{name: 5})


def test_bad_submit_and_map_arguments(executors: dict[str, AutoExecutor]) -> None:
    ex = executors["threads"]
    with pytest.raises(TypeError, match="not callable"):
        ex.submit(5)
    with pytest.raises(TypeError):
        ex.submit()  # type: ignore[call-arg]

    async def coroutine() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine"):
        ex.submit(coroutine)
    with pytest.raises(TypeError, match="not callable"):
        ex.map(5, [1])
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(identity, [1], chunksize=0)
    with pytest.raises(ValueError, match="buffersize"):
        ex.map(identity, [1], buffersize=0)
    with pytest.raises(TypeError, match="buffersize"):
        ex.map(identity, [1], buffersize="2")
    with pytest.raises(TypeError, match="not iterable"):
        ex.map(identity, 5)
    with pytest.raises(ValueError, match="pin"):
        pin("gpu")
    assert ex.submit(identity, 1).result(30) == 1  # none of this hurt the executor


def test_use_after_shutdown_raises_runtime_error() -> None:
    ex = AutoExecutor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(identity, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(identity, [1])
    ex.shutdown()  # a second shutdown is harmless


def test_module_importable_only_after_the_pool_started(tmp_path: Any, executors: dict[str, AutoExecutor]) -> None:
    # A notebook appends to sys.path and imports a module after the workers
    # started: the workers follow, and the module's functions run there.
    ex = executors["processes"]
    assert ex.submit(identity, 0).result(30) == 0  # workers are up
    (tmp_path / "late_module_for_reliability.py").write_text("def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import late_module_for_reliability  # type: ignore[import-not-found]

        assert list(ex.map(late_module_for_reliability.triple, range(4))) == [0, 3, 6, 9]
        assert ex.submit(late_module_for_reliability.triple, 5).result(30) == 15
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("late_module_for_reliability", None)


def test_workers_skip_site_unless_imports_need_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptive_pool._workers import _site_flags

    standard = ("_frozen_importlib", "_frozen_importlib_external")
    plain = [f for f in sys.meta_path if getattr(f, "__module__", "") in standard]
    monkeypatch.setattr(sys, "meta_path", plain)
    monkeypatch.delitem(sys.modules, "sitecustomize", raising=False)
    monkeypatch.delitem(sys.modules, "usercustomize", raising=False)
    assert _site_flags() == ["-S"]  # the parent's sys.path, sent first, is all a worker needs

    class EditableInstallFinder:  # what a .pth file of an editable install adds
        def find_spec(self, name: str, path: Any, target: Any = None) -> None:
            return None

    monkeypatch.setattr(sys, "meta_path", [*plain, EditableInstallFinder()])
    assert _site_flags() == []

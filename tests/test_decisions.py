"""Decisions on workloads whose right answer is not in doubt, and with injected policies."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from adaptive_pool import (
    AutoExecutor,
    Choice,
    Decision,
    HeuristicPolicy,
    pin,
    reset_profiles,
)
from adaptive_pool._policy import Backend, forced_decision, process_blockers
from adaptive_pool._profile import (
    MODEL_FEATURES,
    PROFILES,
    SAFETY_FEATURES,
    ProbeTracker,
    usable_cores,
)

pytestmark = pytest.mark.timeout(60)

multicore = pytest.mark.skipif(usable_cores() < 2, reason="needs 2 usable cores")


def python_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i % 7
    return total


def python_loop_no_result(n: int) -> None:
    python_loop(n)


def python_loop_with_lock(n: int, lock: Any) -> int:
    return python_loop(n)


COUNTER = 0


def python_loop_writes_global(n: int) -> int:
    global COUNTER
    COUNTER = python_loop(n)
    return COUNTER


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def tiny(x: int) -> int:
    return x + 1


LOOP = 400_000  # tens of milliseconds of pure Python per call

#: The hand-written rules, named explicitly: these tests are about them, not
#: about whichever model file happens to be installed.
HEURISTIC = HeuristicPolicy()


@pytest.fixture(autouse=True)
def fresh_profiles() -> None:
    reset_profiles()


def decided(ex: AutoExecutor, fn: Any, items: Sequence[Any]) -> Decision:
    list(ex.map(fn, items))
    decision = ex.decision_for(fn)
    assert decision is not None
    return decision


@multicore
def test_pure_python_loop_goes_to_processes() -> None:
    with AutoExecutor(policy=HEURISTIC) as ex:
        decision = decided(ex, python_loop, [LOOP] * 6)
    assert decision.backend == "process", str(decision)
    assert decision.source == "heuristic"
    # Two pure-Python probes take turns on the GIL: each holds it about half
    # of its wall time (gil_hold near 0.5), and nearly all of its CPU time.
    assert decision.features["gil_cpu_share"] > 0.7, str(decision)
    assert decision.workers >= 2


def test_sleeping_goes_to_threads_with_many_workers() -> None:
    with AutoExecutor(policy=HEURISTIC) as ex:
        decision = decided(ex, nap, [0.05] * 6)
    assert decision.backend == "thread", str(decision)
    assert decision.features["wait_ratio"] > 0.9
    # Waiting work gets more threads than cores.
    assert decision.workers > usable_cores()


def test_tiny_calls_run_inline_in_batches() -> None:
    with AutoExecutor(policy=HEURISTIC) as ex:
        results = list(ex.map(tiny, range(5000)))
        decision = ex.decision_for(tiny)
    assert results == [x + 1 for x in range(5000)]
    assert decision is not None and decision.backend == "inline", str(decision)
    assert decision.chunksize > 1


@multicore
@pytest.mark.parametrize(
    "fn, args",
    [
        (python_loop_no_result, (LOOP,)),
        (python_loop_writes_global, (LOOP,)),
    ],
)
def test_side_effect_work_never_goes_to_processes(fn: Any, args: tuple[Any, ...]) -> None:
    with AutoExecutor(policy=HEURISTIC) as ex:
        list(ex.map(fn, [args[0]] * 4))
        decision = ex.decision_for(fn)
    assert decision is not None and decision.backend != "process", str(decision)
    assert "not process" in decision.reason


@multicore
def test_unpicklable_arguments_never_go_to_processes() -> None:
    lock = threading.Lock()
    with AutoExecutor(policy=HEURISTIC) as ex:
        futures = [ex.submit(python_loop_with_lock, LOOP, lock) for _ in range(4)]
        assert [f.result() for f in futures] == [python_loop(LOOP)] * 4
        decision = ex.decision_for(python_loop_with_lock)
    assert decision is not None and decision.backend != "process", str(decision)
    assert decision.features["picklable"] == 0.0


@multicore
def test_require_sharedmem_forbids_processes() -> None:
    with AutoExecutor(require="sharedmem", policy=HEURISTIC) as ex:
        decision = decided(ex, python_loop, [LOOP] * 4)
    assert decision.backend != "process"


def test_prefer_forces_and_skips_probing() -> None:
    for prefer, backend in [("threads", "thread"), ("processes", "process"), ("inline", "inline")]:
        with AutoExecutor(prefer=prefer) as ex:
            decision = ex.decision_for(nap)
            assert decision is not None
            assert (decision.backend, decision.source) == (backend, "forced")


def test_a_forced_map_sizes_its_batches_by_what_its_calls_took() -> None:
    size = AutoExecutor._forced_batch_size
    threads = forced_decision("thread", "prefer='threads'", None, 2)
    assert size(threads, 10_000, 1, None) == 1  # nothing timed yet: the first call goes alone
    assert size(threads, 10_000, 1, 0.05) == 1  # slow calls stay one a batch, side by side
    tiny_size = size(threads, 10_000, 1, 1e-6)
    assert 1 < tiny_size <= -(-10_000 // (4 * threads.workers))  # every thread still gets some
    assert size(threads, None, 1, 1e-6) > 1  # from an iterator of unknown length too
    inline = forced_decision("inline", "prefer='inline'", None, 2)
    assert size(inline, 10_000, 1, 1e-6) > tiny_size  # one thread: no share to keep
    processes = forced_decision("process", "prefer='processes'", None, 2)
    assert size(processes, 10_000, 7, None) == 7  # the user's chunksize, as ProcessPoolExecutor.map


def test_pin_decorator_fixes_the_route() -> None:
    @pin("threads")
    def pinned(x: int) -> int:
        return python_loop(x)

    with AutoExecutor() as ex:
        assert ex.submit(pinned, 10).result() == python_loop(10)
        decision = ex.decision_for(pinned)
    assert decision is not None and (decision.backend, decision.source) == ("thread", "forced")
    with pytest.raises(ValueError):
        pin("gpu")


def test_pin_to_processes_yields_to_require_sharedmem() -> None:
    @pin("processes")
    def pinned(x: int) -> int:
        return x

    with AutoExecutor(require="sharedmem") as ex:
        decision = ex.decision_for(pinned)
    assert decision is not None and decision.backend == "thread"


class RecordingPolicy:
    """Injected policy: records what it was asked and answers a fixed route."""

    source = "model"

    def __init__(self, answer: Backend) -> None:
        self.answer = answer
        self.asked: list[tuple[dict[str, float], tuple[str, ...]]] = []

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        self.asked.append((dict(features), tuple(allowed)))
        backend = self.answer if self.answer in allowed else "thread"
        return Choice(backend, 0.75, "injected")


def test_injected_policy_gets_every_feature_and_decides() -> None:
    # Calls of ~0.2 ms of pure Python: short enough for the inline route,
    # long enough that their CPU time reads right under load (calls of a
    # microsecond could read as waiting there, and processes as futile).
    policy = RecordingPolicy("inline")
    with AutoExecutor(policy=policy) as ex:
        assert list(ex.map(python_loop, [3_000] * 50)) == [python_loop(3_000)] * 50
        decision = ex.decision_for(python_loop)
    assert decision is not None
    assert (decision.backend, decision.source, decision.confidence) == ("inline", "model", 0.75)
    features, allowed = policy.asked[0]
    assert set(MODEL_FEATURES) | set(SAFETY_FEATURES) <= set(features)
    assert "process" in allowed  # python_loop() is pure and returns values
    assert "inline" in str(decision) and "injected" in str(decision)


def test_policy_is_never_offered_processes_for_unsafe_work() -> None:
    policy = RecordingPolicy("process")
    with AutoExecutor(policy=policy) as ex:
        ex.submit(python_loop_no_result, 1000).result()
        ex.submit(python_loop_no_result, 1000).result()
        decision = ex.decision_for(python_loop_no_result)
    assert decision is not None and decision.backend == "thread"
    assert all("process" not in allowed for _, allowed in policy.asked)


def test_new_executor_reuses_the_process_wide_profile() -> None:
    with AutoExecutor() as ex:
        list(ex.map(nap, [0.002] * 4))
    assert len(PROFILES) >= 1
    policy = RecordingPolicy("thread")
    with AutoExecutor(policy=policy) as ex:
        # Decided at once from the stored features: no probing needed.
        decision = ex.decision_for(nap)
        assert decision is not None and decision.backend == "thread"
        assert policy.asked
    reset_profiles()
    with AutoExecutor() as ex:
        assert ex.decision_for(nap) is None


def count_policy_reads(ex: AutoExecutor) -> list[int]:
    """Have ``ex`` note each time it gets its policy (reading a model file,
    but for the heuristic here); the list returned fills as it does."""
    asked: list[int] = []
    ex._get_policy = lambda: asked.append(1) or HEURISTIC  # type: ignore[method-assign]
    return asked


def map_tiny(ex: AutoExecutor, calls: int, fn: Callable[[int], int] = tiny) -> None:
    """Map ``fn`` (``tiny`` or another way to add one) over ``calls`` inputs
    and check every result."""
    assert list(ex.map(fn, range(calls))) == [x + 1 for x in range(calls)]


def test_a_short_map_of_tiny_calls_runs_inline_without_asking_a_policy() -> None:
    with AutoExecutor() as ex:
        asked = count_policy_reads(ex)
        map_tiny(ex, 3000)
        decision = ex.decision_for(tiny)
    assert decision is not None and (decision.backend, decision.source) == ("inline", "sprint")
    assert decision.chunksize > 1
    assert asked == []  # no model read, for a map over before a decision would be
    assert len(PROFILES) == 0  # nothing decided, nothing stored


@pytest.mark.parametrize(
    "wait, fn, items, backend",
    [
        (5.0, tiny, range(3000), "inline"),  # over in the wait: it sprints at once
        (5.0, nap, [0.002] * 6, "thread"),  # over in the wait, not tiny
        (0.0, nap, [0.02] * 6, "thread"),  # over after the map stopped waiting
        (0.0, tiny, range(3000), "inline"),
    ],
)
def test_a_maps_first_call_is_judged_whichever_side_of_the_wait_it_ends(
    monkeypatch: pytest.MonkeyPatch, wait: float, fn: Any, items: Sequence[Any], backend: str
) -> None:
    monkeypatch.setattr("adaptive_pool._executor._SCOUT_WAIT_S", wait)
    with AutoExecutor() as ex:
        assert list(ex.map(fn, items)) == [fn(x) if fn is tiny else x for x in items]
        decision = ex.decision_for(fn)
    assert decision is not None and decision.backend == backend, str(decision)


def judge_first_calls_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """A map waits for its first call and counts it tiny even if a loaded
    machine kept its worker thread off the GIL for a while (a first call of
    ``tiny_calling_out`` measured at 2.2 ms, 3% of it CPU, in CI): the tests
    that use this are about what a sprint does, not about when one starts."""
    monkeypatch.setattr("adaptive_pool._executor._SCOUT_WAIT_S", 5.0)
    monkeypatch.setattr("adaptive_pool._executor.TINY_CALL_S", 0.05)
    monkeypatch.setattr("adaptive_pool._policy.TINY_CALL_S", 0.05)


#: Shared and mutable: a call that reads it could see another thread's
#: writes, so it never runs on the map's caller (see self_contained).
_SHARED: list[int] = []


def tiny_calling_out(x: int) -> int:
    return tiny(x) + len(_SHARED)


@pytest.mark.parametrize("fn, workers", [(tiny_calling_out, 1), (tiny, 0)])
def test_a_map_of_tiny_calls_starts_at_most_one_worker_and_no_control_thread(
    monkeypatch: pytest.MonkeyPatch, fn: Callable[[int], int], workers: int
) -> None:
    # Its first call runs alone while the map waits for it (long enough
    # here to be sure it is over): tiny, the map's calls run inline at once,
    # decided on this thread, without the executor's control thread.  A
    # function that calls nothing and is given numbers runs that first call
    # here too: no thread at all.
    judge_first_calls_tiny(monkeypatch)
    before = set(threading.enumerate())
    with AutoExecutor() as ex:
        assert list(ex.map(fn, range(3000))) == [x + 1 for x in range(3000)]
        started = [t.name for t in threading.enumerate() if t not in before and t.name.startswith("AutoExecutor-")]
        decision = ex.decision_for(fn)
    assert decision is not None and (decision.backend, decision.source) == ("inline", "sprint")
    assert len(started) == workers and not any(name.endswith("-control") for name in started), started


def whose_thread(_: int) -> int:
    """A tiny call that says which thread ran it."""
    return threading.get_ident()


@pytest.mark.parametrize(
    "options, map_options, consumer_runs",
    [
        ({}, {}, True),
        ({}, {"timeout": 30}, False),  # a timeout the consumer could not honour while running calls
        ({"initializer": int}, {}, False),  # the calls need initialized threads
        ({"thread_name_prefix": "Named"}, {}, False),  # ... or named ones
    ],
)
def test_the_consumer_of_a_map_of_tiny_calls_runs_them_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], map_options: dict[str, Any], consumer_runs: bool
) -> None:
    judge_first_calls_tiny(monkeypatch)
    with AutoExecutor(**options) as ex:
        idents = set(ex.map(whose_thread, range(3000), **map_options))
        decision = ex.decision_for(whose_thread)
    assert decision is not None and decision.backend == "inline", str(decision)
    assert (threading.get_ident() in idents) is consumer_runs, idents


def test_a_maps_first_call_that_could_tell_its_thread_runs_on_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a call that nobody could watch runs first on the map's caller
    # (see test_bytecode); this one asks which thread it is in.
    judge_first_calls_tiny(monkeypatch)
    with AutoExecutor() as ex:
        first, *others = ex.map(whose_thread, range(3000))
    assert first != threading.get_ident()
    assert set(others) == {threading.get_ident()}  # then run by the consumer


def fails_at_2000(x: int) -> int:
    if x == 2000:
        raise ValueError(x)
    return x + 1


def test_a_tiny_call_that_raises_in_the_consumers_batch_fails_at_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    judge_first_calls_tiny(monkeypatch)
    with AutoExecutor() as ex:
        results = ex.map(fails_at_2000, range(3000))
        assert [next(results) for _ in range(2000)] == [x + 1 for x in range(2000)]
        with pytest.raises(ValueError, match="2000"):
            next(results)
        # The executor goes on as before.
        assert list(ex.map(tiny, range(3000))) == [x + 1 for x in range(3000)]


READ_BY_CALLS: Any = __import__("contextvars").ContextVar("read_by_calls", default="unset")


def read_and_set_context(x: int) -> str:
    seen = READ_BY_CALLS.get()
    READ_BY_CALLS.set(f"set by call {x}")
    return seen


def test_tiny_calls_run_by_the_consumer_see_a_context_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a pool's thread: the consumer's context variables are not seen
    # by the calls, and what the calls set does not reach the consumer.
    judge_first_calls_tiny(monkeypatch)
    token = READ_BY_CALLS.set("the consumer's")
    try:
        with AutoExecutor() as ex:
            seen = list(ex.map(read_and_set_context, range(3000)))
        assert "the consumer's" not in seen
        assert READ_BY_CALLS.get() == "the consumer's"
    finally:
        READ_BY_CALLS.reset(token)


def test_work_the_rules_leave_to_threads_is_decided_without_a_policy() -> None:
    with AutoExecutor() as ex:
        asked = count_policy_reads(ex)
        decision = decided(ex, nap, [0.01] * 6)
    assert (decision.backend, decision.source) == ("thread", "rule"), str(decision)
    assert asked == []  # no model read: there was nothing to choose
    # Processes were futile: the function's pickle and byte code went unread,
    # and count as unknown (never as safe) wherever they are looked at.
    assert decision.features["facts_known"] == 0.0
    assert process_blockers(decision.features) is not None


def map_past_a_sprint(monkeypatch: pytest.MonkeyPatch, policy: RecordingPolicy, calls: int) -> Decision | None:
    """Map ``tiny`` with a sprint over budget after one batch; return the
    decision read right after the results."""
    import adaptive_pool._executor as executor_module
    import adaptive_pool._policy as policy_module

    judge_first_calls_tiny(monkeypatch)
    monkeypatch.setattr(executor_module, "SPRINT_BUDGET_S", 1e-6)
    # Chunks of a few calls: the first batches cannot hold them all (the
    # policy is only asked about calls left to dispatch).
    monkeypatch.setattr(executor_module, "SPRINT_CHUNK_S", 1e-6)
    monkeypatch.setattr(policy_module, "SPRINT_CHUNK_S", 1e-6)
    # Every batch reads its CPU clock (a batch that does not is not
    # counted): else whether a batch counts at all hung on the map lasting
    # longer than the interval between reads.
    monkeypatch.setattr("adaptive_pool._batch.CPU_READ_INTERVAL_S", 0.0)
    with AutoExecutor() as ex:
        ex._get_policy = lambda: policy  # type: ignore[method-assign]
        map_tiny(ex, calls, tiny_calling_out)  # a self-contained map never ends its sprint
        return ex.decision_for(tiny_calling_out)


def test_a_sprint_over_budget_hands_the_rest_to_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RecordingPolicy("thread")
    decision = map_past_a_sprint(monkeypatch, policy, 20_000)
    assert decision is not None and (decision.backend, decision.source) == ("thread", "model")
    features, _ = policy.asked[0]
    # Costs as the batches measured them, not the probes' (clock readings
    # around a single microsecond call cost more than the call).
    assert features["wall_s"] < 50e-6 and features["complete"] == 1.0
    assert len(PROFILES) == 1


def test_a_self_contained_map_goes_to_its_reader_whole_and_asks_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its calls cannot be watched (see test_bytecode): past the first, they
    # run as their results are read, with no sprint to end and no batch to
    # measure, however long the map.
    import adaptive_pool._executor as executor_module

    monkeypatch.setattr(executor_module, "SPRINT_BUDGET_S", 1e-6)
    with AutoExecutor() as ex:
        asked = count_policy_reads(ex)
        map_tiny(ex, 20_000)
        decision = ex.decision_for(tiny)
    assert decision is not None and (decision.backend, decision.source) == ("inline", "sprint")
    assert asked == []


def inverse(x: float) -> float:
    return 1 / x


def test_a_self_contained_call_that_raises_fails_at_its_place() -> None:
    with AutoExecutor() as ex:
        results = ex.map(inverse, [4, 2, 1, 0, 5])
        assert [next(results) for _ in range(3)] == [0.25, 0.5, 1.0]
        with pytest.raises(ZeroDivisionError):
            next(results)


def test_a_self_contained_first_call_that_raises_ends_the_map_there() -> None:
    # As with the standard library: the map's iterator raises the first
    # call's error, then is over.
    with AutoExecutor() as ex:
        results = ex.map(inverse, [0, 1, 2])
        with pytest.raises(ZeroDivisionError):
            next(results)
        assert list(results) == []


def doubled(x: int) -> int:
    return 2 * x


def power(base: int, exponent: int) -> int:
    return base**exponent


def test_a_self_contained_map_of_several_iterables_goes_to_its_reader() -> None:
    before = set(threading.enumerate())
    with AutoExecutor() as ex:
        assert list(ex.map(power, [2, 3, 4], [3, 2, 1, 0])) == [8, 9, 4]
        assert list(ex.map(power, [5], [2])) == [25]  # decided: not measured again
        assert not [t.name for t in threading.enumerate() if t not in before]
        decision = ex.decision_for(power)
    assert decision is not None and (decision.backend, decision.source) == ("inline", "sprint")


def test_a_self_contained_map_runs_on_threads_when_the_user_says_so() -> None:
    # prefer= (or a pin) is the user's choice: honoured even where nobody
    # could tell the difference.
    before = set(threading.enumerate())
    with AutoExecutor(prefer="threads") as ex:
        assert list(ex.map(doubled, range(100))) == [2 * x for x in range(100)]
        assert [t for t in threading.enumerate() if t not in before]


def test_maps_of_one_self_contained_function_from_many_threads_agree() -> None:
    with AutoExecutor() as ex:
        barrier = threading.Barrier(4)

        def read_one(offset: int) -> list[int]:
            barrier.wait()
            return list(ex.map(doubled, range(offset, offset + 5000)))

        with ThreadPoolExecutor(4) as readers:
            outcomes = list(readers.map(read_one, [0, 1, 2, 3]))
        decision = ex.decision_for(doubled)
    assert outcomes == [[2 * x for x in range(offset, offset + 5000)] for offset in range(4)]
    assert decision is not None and decision.backend == "inline"


def test_a_self_contained_first_call_that_is_not_tiny_is_the_maps_first_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    # Measured on the map's thread before the map is planned, then judged
    # as the first probe of the plan: it is not run again.
    import adaptive_pool._executor as executor_module

    monkeypatch.setattr(executor_module, "TINY_CALL_S", 0.0)  # no call is tiny
    monkeypatch.setattr("adaptive_pool._policy.TINY_CALL_S", 0.0)
    measured: list[tuple[object, ...]] = []
    real_measure = executor_module.measure_call

    def counting(fn: Callable[..., Any], args: tuple[object, ...], *rest: Any, **options: Any) -> Any:
        measured.append(args)
        return real_measure(fn, args, *rest, **options)

    monkeypatch.setattr(executor_module, "measure_call", counting)
    with AutoExecutor() as ex:
        assert list(ex.map(doubled, range(40))) == [2 * x for x in range(40)]
        decision = ex.decision_for(doubled)
    assert measured.count((0,)) == 1, measured
    assert decision is not None and decision.source != "sprint"


def test_a_sprint_over_budget_with_no_calls_left_asks_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every call was dispatched before the sprint went over budget: the
    # policy would decide for nothing (and shutdown() would wait for it).
    import adaptive_pool._executor as executor_module

    judge_first_calls_tiny(monkeypatch)
    monkeypatch.setattr(executor_module, "SPRINT_BUDGET_S", 1e-6)
    with AutoExecutor() as ex:
        asked = count_policy_reads(ex)
        map_tiny(ex, 50, tiny_calling_out)
        decision = ex.decision_for(tiny_calling_out)
    assert decision is not None and (decision.backend, decision.source) == ("inline", "sprint")
    assert asked == []


def test_a_sprint_ending_after_shutdown_asks_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The control thread is busy when the sprint ends; by the time it gets
    # to it the executor is shut down: no call will follow a decision, and
    # reading a model would only keep shutdown() waiting.
    import adaptive_pool._executor as executor_module
    import adaptive_pool._policy as policy_module

    judge_first_calls_tiny(monkeypatch)
    monkeypatch.setattr(executor_module, "SPRINT_BUDGET_S", 1e-6)
    monkeypatch.setattr(executor_module, "SPRINT_CHUNK_S", 1e-6)
    monkeypatch.setattr(policy_module, "SPRINT_CHUNK_S", 1e-6)
    busy = threading.Event()
    real_end = AutoExecutor._end_sprint

    def end_when_free(self: AutoExecutor, state: Any, per_call: Any) -> None:
        busy.wait(30)
        real_end(self, state, per_call)

    monkeypatch.setattr(AutoExecutor, "_end_sprint", end_when_free)
    ex = AutoExecutor()
    asked = count_policy_reads(ex)
    map_tiny(ex, 2000, tiny_calling_out)
    ex.shutdown(wait=False)
    busy.set()
    ex.shutdown(wait=True)
    assert asked == []
    decision = ex.decision_for(tiny_calling_out)
    assert decision is not None and (decision.backend, decision.source) == ("inline", "sprint")


@pytest.mark.parametrize("patience", [1.0, 0.05])
def test_probes_holding_the_gil_are_left_alone_for_a_while(monkeypatch: pytest.MonkeyPatch, patience: float) -> None:
    # Beside probes that hold the GIL, the control thread is starved: it
    # looks at running probes only once they have run a while (here they
    # end first with the default patience, not with a short one).  The GIL
    # is made to read as busy; the probes nap (long enough to be looked at).
    import adaptive_pool._executor as executor_module

    monkeypatch.setattr(executor_module, "_GIL_HELD_PATIENCE_S", patience)
    monkeypatch.setattr(ProbeTracker, "gil_busy", lambda self: 0.9)
    looked: list[bool] = []
    real_features = AutoExecutor._features

    def features(self: AutoExecutor, state: Any, *, complete: bool) -> Any:
        looked.append(complete)
        return real_features(self, state, complete=complete)

    monkeypatch.setattr(AutoExecutor, "_features", features)
    with AutoExecutor(probe_deadline=0.02) as ex:
        assert list(ex.map(nap, [0.3] * 4)) == [0.3] * 4
        decision = ex.decision_for(nap)
    assert decision is not None
    if patience > 0.3:
        assert False not in looked  # only finished probes were judged
        assert decision.features["complete"] == 1.0
    else:
        assert False in looked  # running probes were judged after a while


@pytest.mark.parametrize(("call_s", "backend"), [(0.25, "process"), (0.002, "thread")])
def test_while_worker_processes_start_only_short_batches_go_to_threads(call_s: float, backend: str) -> None:
    # Threads take batches that end about when the workers are up; a long
    # pure-Python call there would hold up the map long after.
    features = dict(wall_s=call_s, cpu_s=call_s, cpu_ratio=1.0, gil_hold=1.0, gil_cpu_share=1.0, usable_cores=2.0)
    decision = Decision("process", 2, 1, features, "model", 0.9, "pure Python")
    with AutoExecutor(2) as ex:
        batch_decision = ex._for_batch(python_loop, decision, 1000)
        assert batch_decision is not None and batch_decision.backend == backend


class SlowPolicy(RecordingPolicy):
    """A policy that takes its time (a model file to read, a slow disk)."""

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        time.sleep(0.2)
        return super().choose(features, allowed)


def test_decision_for_waits_for_the_decision_that_ends_a_sprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # The map's calls go on inline while the policy decides; once its
    # results are read, decision_for() gives the policy's decision, not
    # the sprint's.  Few enough calls to be over inline while the policy
    # takes its time.
    decision = map_past_a_sprint(monkeypatch, SlowPolicy("thread"), 2000)
    assert decision is not None and (decision.backend, decision.source) == ("thread", "model")


def test_partials_and_methods_share_their_function_profile() -> None:
    class Worker:
        def run(self, x: int) -> int:
            return x * 3

    with AutoExecutor() as ex:
        list(ex.map(functools.partial(tiny), range(100)))
        assert ex.decision_for(tiny) is not None
        list(ex.map(Worker().run, range(100)))
        assert ex.decision_for(Worker().run) is not None


@multicore
@pytest.mark.parametrize(
    "fn, items, backend",
    [(python_loop, [LOOP] * 6, "process"), (nap, [0.05] * 6, "thread")],
    ids=["pure-python", "sleep"],
)
def test_default_model_gets_clear_cases_right(fn: Any, items: list[Any], backend: str) -> None:
    """The bundled model must not get wrong what no one could doubt."""
    from adaptive_pool._model import load_policy

    with AutoExecutor() as ex:
        decision = decided(ex, fn, items)
    assert decision.backend == backend, str(decision)
    # Sleeping calls are left to threads by the rules before any model is
    # read; asked anyway, with every route on offer, the model agrees.
    assert decision.source == ("model" if backend == "process" else "rule"), str(decision)
    choice = load_policy(None).choose(decision.features, ["inline", "thread", "process"])
    assert choice.backend == backend, choice


def test_decisions_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="adaptive_pool")
    with AutoExecutor(policy=HEURISTIC) as ex:
        list(ex.map(tiny, range(100)))
    assert any("tiny" in record.getMessage() and "inline" in record.getMessage() for record in caplog.records)


def test_coroutine_functions_are_rejected() -> None:
    async def coroutine(x: int) -> int:
        return x

    with AutoExecutor() as ex, pytest.raises(TypeError, match="coroutine"):
        ex.submit(coroutine, 1)


def test_long_probes_do_not_hold_back_other_calls() -> None:
    """A call that waits for a later call must not deadlock behind its probes."""
    release = threading.Event()

    def wait_or_release(release_now: bool) -> bool:
        if release_now:
            release.set()
            return True
        return release.wait(10)

    with AutoExecutor() as ex:
        waiting = [ex.submit(wait_or_release, False) for _ in range(2)]  # the probes
        setter = ex.submit(wait_or_release, True)  # decided while probes still run
        assert setter.result(timeout=10) is True
        assert [f.result(timeout=10) for f in waiting] == [True, True]


def test_work_found_unsafe_after_going_to_processes_is_reported() -> None:
    """A decision taken from running probes may send calls to processes; if the
    finished probes then show the function unsafe there, the user is told."""
    from adaptive_pool._executor import _FunctionState
    from adaptive_pool._profile import GilMonitor

    ex = AutoExecutor(policy=HEURISTIC)
    try:
        state = _FunctionState(("function", __name__, "f"), "f", GilMonitor())
        early = Decision("process", 2, 1, {"picklable": 1.0, "result_is_none": 0.0}, "heuristic", 0.9, "early")
        final = Decision("thread", 4, 1, {"picklable": 1.0, "result_is_none": 1.0}, "heuristic", 0.9, "final")
        ex._settle_decision(state, early, provisional=True)
        with pytest.warns(RuntimeWarning, match="already been sent to worker processes"):
            ex._settle_decision(state, final, provisional=False)
        assert state.decision == final
    finally:
        ex.shutdown()


def sleeps_then_computes(item: tuple[str, float]) -> float:
    kind, amount = item
    if kind == "sleep":
        time.sleep(amount)
        return amount
    return float(python_loop(int(amount)))


def test_a_function_whose_cost_changes_is_measured_again_in_order() -> None:
    # Sleeps, then pure-Python loops: the first decision (threads,
    # from waiting probes) no longer describes the calls; finished batches
    # show it and the function is measured again, without reordering.
    reset_profiles()
    items = [("sleep", 0.02)] * 20 + [("loop", 200_000.0)] * 30
    # Two workers keep the map's window short: calls are still waiting to
    # be sent when the change shows (with 128 threads all would be running).
    with AutoExecutor(2, policy=HeuristicPolicy()) as ex:
        results = ex.map(sleeps_then_computes, items)
        first = next(results)
        decided_first = ex.decision_for(sleeps_then_computes)
        rest = list(results)
        decided_last = ex.decision_for(sleeps_then_computes)
    assert [first, *rest] == [sleeps_then_computes(item) if item[0] == "loop" else 0.02 for item in items]
    assert decided_first is not None and decided_first.features["cpu_ratio"] < 0.2
    # Measured again: the decision now rests on calls that compute.
    assert decided_last is not None and decided_last is not decided_first
    assert decided_last.features["cpu_s"] > 4 * decided_first.features["cpu_s"]


def sleeps_then_computes_when(item: tuple[str, float]) -> tuple[float, float]:
    return time.time(), sleeps_then_computes(item)


@multicore
def test_calls_that_turn_to_computing_on_many_threads_are_held(caplog: pytest.LogCaptureFixture) -> None:
    # The first calls wait, so the map runs on threads sized for waiting
    # (128): then its calls turn to pure Python. Sending them all to those
    # threads would make a convoy on the GIL; the map catches one computing
    # while it runs, holds the others and measures the function again.
    reset_profiles()
    items = [("sleep", 0.02)] * 40 + [("loop", 400_000.0)] * 40
    with caplog.at_level(logging.DEBUG, logger="adaptive_pool"):
        with AutoExecutor(policy=HeuristicPolicy()) as ex:
            results = list(ex.map(sleeps_then_computes_when, items))
            decided = ex.decision_for(sleeps_then_computes_when)
    assert [value for _, value in results] == [
        sleeps_then_computes(item) if item[0] == "loop" else 0.02 for item in items
    ]
    assert "-> thread x128" in caplog.text  # the first decision, from the sleeps
    held = [r.created for r in caplog.records if "held until it is measured again" in r.getMessage()]
    assert held, f"no running batch was caught computing\n{caplog.text}"
    # Without the hold every loop starts on those threads; a loaded machine
    # lets a few more start before the first is caught (4-8 seen).
    started_before = sum(started < held[0] for started, _ in results[-40:])
    assert started_before <= 20, f"{started_before} of 40 loops had started on threads before the hold\n{caplog.text}"
    # Measured again: the decision rests on calls that compute (processes,
    # unless a loaded machine misreads the GIL: not this test's subject).
    assert decided is not None and decided.features["cpu_s"] > 0.002


def waits_for_a_file_or_computes(item: tuple[str, str]) -> str:
    kind, path = item
    if kind == "compute":
        # Long enough to be still running when the map looks, beside the
        # sixty threads that start meanwhile and take the GIL in turn.
        python_loop(8 * LOOP)
    elif kind == "wait":
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.001)
    elif kind == "touch":
        open(path, "w").close()
    else:
        time.sleep(0.01)
    return kind


def test_calls_held_while_measured_again_cannot_deadlock(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Calls on threads sized for waiting turn to computing: the next calls
    # are measured while the others are held. Those probes wait for a file
    # that only the map's last call creates; the hold must give way.
    reset_profiles()
    path = str(tmp_path / "flag")
    # Many waiting calls after the one that computes: while they are sent
    # (each starting a thread), the one computing holds the GIL and is caught.
    items = [("sleep", path)] * 20 + [("compute", path)] + [("wait", path)] * 60 + [("touch", path)]
    with caplog.at_level(logging.DEBUG, logger="adaptive_pool"):
        with AutoExecutor(require="sharedmem") as ex:
            assert list(ex.map(waits_for_a_file_or_computes, items)) == [kind for kind, _ in items]
    if "held until it is measured again" not in caplog.text:
        # A loaded machine can keep the computing call off the CPU until
        # every call was sent: then nothing was held, nothing to test.
        pytest.skip("the computing call was not caught while the map's calls were sent: " + caplog.text[-600:])


_COLD_CALLS = itertools.count()


def computes_first_then_waits(x: int) -> int:
    # The first two calls (the probes) compute holding the GIL, like a first
    # call that imports a module; the calls after them wait.
    if next(_COLD_CALLS) < 2:
        python_loop(400_000)
    else:
        time.sleep(0.005)
    return x


class RecordingHeuristic(HeuristicPolicy):
    """The heuristic, remembering every route it picked."""

    def __init__(self) -> None:
        self.picked: list[str] = []

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        choice = super().choose(features, allowed)
        self.picked.append(choice.backend)
        return choice


@multicore
def test_a_first_process_decision_is_checked_on_warm_calls() -> None:
    reset_profiles()
    policy = RecordingHeuristic()
    with AutoExecutor(policy=policy) as ex:
        assert list(ex.map(computes_first_then_waits, range(40))) == list(range(40))
        decision = ex.decision_for(computes_first_then_waits)
    if policy.picked[:1] != ["process"]:
        # A loaded machine misread the first probes; that is not this test's subject.
        pytest.skip(f"the first probes were not judged GIL-bound: {policy.picked}")
    assert decision is not None and decision.backend == "thread"
    assert decision.features["wait_ratio"] > 0.5


def computes_then_waits_for_a_later_call(item: tuple[str, str]) -> str:
    kind, path = item
    if kind == "compute":
        python_loop(LOOP)
    elif kind == "wait":  # until a later call of the same map has run
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.001)
    else:
        open(path, "w").close()
    return kind


@multicore
def test_warm_probes_that_wait_for_later_calls_do_not_hold_the_map(tmp_path: Any) -> None:
    # A first decision for processes holds the map's other calls while two
    # warm calls are measured; here those two wait for a later call, which
    # must still run (past a deadline the first decision stands).
    reset_profiles()
    gate = str(tmp_path / "gate")
    # Enough computing after them that processes pay off: the map is held.
    items = [("compute", gate)] * 2 + [("wait", gate)] * 2 + [("open", gate)] + [("compute", gate)] * 60
    policy = RecordingHeuristic()
    with AutoExecutor(policy=policy) as ex:
        started = time.monotonic()
        assert list(ex.map(computes_then_waits_for_a_later_call, items)) == [kind for kind, _ in items]
        assert time.monotonic() - started < 20  # not the waiting calls' own 30 s deadline
    if policy.picked[:1] != ["process"]:
        # A loaded machine misread the first probes; that is not this test's subject.
        pytest.skip(f"the first probes were not judged GIL-bound: {policy.picked}")


def test_decision_for_reads_the_judgment_of_probes_whose_results_are_out() -> None:
    # Calls wait behind a long probe, so a provisional decision is taken
    # from it while it runs; once its result is out, decision_for gives the
    # decision of its finished measurement, not the provisional one.
    reset_profiles()
    with AutoExecutor(policy=RecordingPolicy("thread"), probes=1, probe_deadline=0.01) as ex:
        first, waiting = ex.submit(nap, 0.1), ex.submit(nap, 0.001)
        assert first.result(timeout=30) == 0.1
        decision = ex.decision_for(nap)
        assert waiting.result(timeout=30) == 0.001
    assert decision is not None and decision.features["complete"] == 1.0, str(decision)

"""Measurement, features, identities and the policy's rules."""

from __future__ import annotations

import functools
import gc
import hashlib
import pickle
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any

import pytest

from adaptive_pool import Decision, HeuristicPolicy
from adaptive_pool._identity import describe, function_key, is_coroutine_function
from adaptive_pool._batch import Batch
from adaptive_pool._policy import (
    Choice,
    computing_now,
    cost_changed,
    decide,
    overturns_processes,
    process_blockers,
    process_futile,
    process_pays_off,
    size_chunks,
    size_workers,
    watch_for_computing,
)
from adaptive_pool._bytecode import static_effects
from adaptive_pool._profile import (
    MODEL_FEATURES,
    CallSample,
    GilMonitor,
    ProbeTracker,
    ProfileStore,
    measure_call,
    pickled_size,
    summarize,
    usable_cores,
)

pytestmark = pytest.mark.timeout(30)


def python_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i % 3
    return total


# -- identities -------------------------------------------------------------


def test_function_key_survives_recreation_and_unwrapping() -> None:
    def make() -> Any:
        return lambda x: x + 1

    assert function_key(make()) == function_key(make())
    assert function_key(functools.partial(python_loop, 3)) == function_key(python_loop)

    class Owner:
        def method(self) -> None:
            pass

    assert function_key(Owner().method) == function_key(Owner().method)
    assert function_key(abs) == ("builtin", "builtins", None, "abs")
    assert function_key(python_loop) == ("function", __name__, "python_loop")
    assert describe(python_loop).endswith("python_loop")


def test_function_key_does_not_hold_the_function() -> None:
    def make() -> Any:
        def inner(x: int) -> int:
            return x

        return inner

    fn = make()
    ref = weakref.ref(fn)
    key = function_key(fn)
    del fn
    gc.collect()
    assert ref() is None
    assert "inner" in str(key)


def test_coroutine_detection() -> None:
    async def coro() -> None:
        pass

    assert is_coroutine_function(coro)
    assert is_coroutine_function(functools.partial(coro))
    assert not is_coroutine_function(python_loop)


# -- measurement -------------------------------------------------------------


def test_measure_call_separates_cpu_from_waiting() -> None:
    monitor = GilMonitor()
    ok, value, busy = measure_call(python_loop, (200_000,), {}, monitor)
    assert ok and value == python_loop(200_000)
    ok, value, idle = measure_call(time.sleep, (0.03,), {}, monitor)
    assert ok and value is None
    assert busy.cpu_s / busy.wall_s > 0.7
    assert idle.cpu_s / idle.wall_s < 0.3
    assert idle.result_is_none and not busy.result_is_none


def test_measure_call_captures_exceptions() -> None:
    ok, value, sample = measure_call(int, ("x",), {}, GilMonitor())
    assert not ok and isinstance(value, ValueError) and sample.raised


def test_gil_monitor_tells_python_from_waiting() -> None:
    monitor = GilMonitor()
    monitor.acquire()
    try:
        time.sleep(0.01)
        _, _, python = measure_call(python_loop, (1_000_000,), {}, monitor)
        _, _, waiting = measure_call(time.sleep, (0.05,), {}, monitor)
    finally:
        monitor.release()
    assert python.gil_hold is not None and python.gil_hold > 0.6
    # Other processes loading the machine can delay the sampler a little even
    # while nobody holds the GIL, so compare rather than use a fixed bound.
    assert waiting.gil_hold is not None and waiting.gil_hold < python.gil_hold


def test_probe_tracker_sees_the_gil_busy_while_its_probe_is_kept_off_it() -> None:
    # A probe that other threads keep off the GIL reads as idle (its own
    # share is capped by its CPU time); the tracker's uncapped reading of
    # the window says whether the GIL was busy meanwhile.
    monitor = GilMonitor()
    tracker = ProbeTracker(monitor)
    monitor.acquire()
    try:
        time.sleep(0.01)
        token = tracker.start()  # this thread plays the probe: it only waits
        time.sleep(0.05)
        idle = tracker.gil_busy()
        tracker.finish(token)
        token = tracker.start()
        hog = threading.Thread(target=python_loop, args=(2_000_000,))
        hog.start()
        time.sleep(0.05)
        busy = tracker.gil_busy()
        tracker.finish(token)
        hog.join()
    finally:
        monitor.release()
    assert tracker.gil_busy() is None  # nothing running
    assert idle is not None and busy is not None
    assert busy > 0.5 and idle < busy


def test_pickled_size_without_copying_large_buffers() -> None:
    big = bytes(50_000_000)
    assert pickled_size(big) == len(big) + 16
    assert pickled_size(((big,), {})) >= len(big)
    assert pickled_size(threading.Lock()) is None
    assert pickled_size(lambda: 1) is not None  # cloudpickle takes lambdas
    assert pickled_size({"a": [1, 2, 3]}) > 0


def test_usable_cores_respects_affinity() -> None:
    import os

    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "0 0\n"}, None),  # nonsense: no quota rather than an error
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "junk", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota_is_read_from_v2_or_v1_files(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str], quota: float | None
) -> None:
    from adaptive_pool import _profile

    monkeypatch.setattr(_profile, "_read_small", lambda path: files.get(path.removeprefix("/sys/fs/cgroup/")))
    assert _profile._cgroup_cpu_quota() == quota


def test_static_effects() -> None:
    def returns() -> int:
        return 1

    def prints() -> None:
        print()

    def assigns_global() -> int:
        global _G
        _G = 1
        return 1

    def outer() -> Any:
        x = 0

        def assigns_nonlocal() -> int:
            nonlocal x
            x += 1
            return x

        return assigns_nonlocal

    assert static_effects(returns).may_return_value is True
    assert static_effects(prints).may_return_value is False
    assert static_effects(assigns_global).writes_shared_state
    assert static_effects(outer()).writes_shared_state
    assert not static_effects(returns).writes_shared_state
    assert static_effects(abs).may_return_value is None


def test_summarize_gives_every_model_feature() -> None:
    monitor = GilMonitor()
    samples = [measure_call(python_loop, (50_000,), {}, monitor)[2] for _ in range(2)]
    features = summarize(samples, fn_picklable=True, effects=static_effects(python_loop))
    assert set(MODEL_FEATURES) <= set(features)
    assert features["complete"] == 1.0 and features["picklable"] == 1.0
    assert features["result_is_none"] == 0.0
    assert features["wall_s"] > 0 and 0 <= features["wait_ratio"] <= 1


def _side_by_side(start: float, end: float, cpu: float, gil: float) -> CallSample:
    return CallSample(
        wall_s=end - start, cpu_s=cpu, gil_hold=gil, arg_bytes=32, result_bytes=32,
        result_is_none=False, raised=False, started=start, ended=end, window_cpu_s=cpu,
    )


def test_gil_share_of_probes_side_by_side() -> None:
    def share(samples: list[CallSample]) -> float:
        return summarize(samples, fn_picklable=True, effects=static_effects(python_loop))["gil_cpu_share"]

    # Two pure-Python probes take turns: each computes half of its window,
    # holding the GIL whenever it computes.
    turns = [_side_by_side(0.0, 0.02, 0.01, 0.5), _side_by_side(0.0, 0.02, 0.01, 0.5)]
    assert share(turns) == pytest.approx(1.0)
    # Two probes computing in parallel (20 ms of CPU in 10 ms) while the
    # sampler saw the GIL held half the time: a quarter each, not a half.
    parallel = [_side_by_side(0.0, 0.01, 0.01, 0.5), _side_by_side(0.0, 0.01, 0.01, 0.5)]
    assert share(parallel) == pytest.approx(0.25)
    # One probe alone: its reading stands.
    assert share([_side_by_side(0.0, 0.01, 0.01, 0.5), _side_by_side(0.02, 0.03, 0.01, 0.5)]) == pytest.approx(0.5)


def test_profile_store_is_bounded_lru() -> None:
    store = ProfileStore(capacity=3)
    for i in range(5):
        store.put(i, {"wall_s": float(i)})
    assert len(store) == 3 and store.get(0) is None and store.get(4) == {"wall_s": 4.0}
    store.get(2)
    store.put(5, {})
    assert store.get(2) is not None and store.get(3) is None
    store.clear()
    assert len(store) == 0


# -- policy rules ------------------------------------------------------------


def features(**overrides: float) -> dict[str, float]:
    base = {
        "wall_s": 0.01,
        "cpu_s": 0.01,
        "cpu_ratio": 1.0,
        "wait_ratio": 0.0,
        "gil_hold": 1.0,
        "arg_bytes": 100.0,
        "result_bytes": 100.0,
        "usable_cores": 4.0,
        "picklable": 1.0,
        "result_is_none": 0.0,
        "writes_shared_state": 0.0,
        "complete": 1.0,
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "overrides, backend",
    [
        ({}, "process"),
        ({"wait_ratio": 0.95, "cpu_s": 0.0005, "cpu_ratio": 0.05, "gil_hold": 0.0}, "thread"),
        ({"gil_hold": 0.0}, "thread"),
        ({"wall_s": 20e-6, "cpu_s": 20e-6}, "inline"),
        ({"wall_s": 5e-6, "cpu_s": 1.5e-6, "cpu_ratio": 0.3, "wait_ratio": 0.7}, "inline"),
        ({"arg_bytes": 50e6}, "thread"),
        ({"usable_cores": 1.0}, "inline"),
    ],
)
def test_heuristic_rules(overrides: dict[str, float], backend: str) -> None:
    decision = decide(features(**overrides), HeuristicPolicy(), allow_process=True)
    assert decision.backend == backend, str(decision)


@pytest.mark.parametrize("blocker", ["picklable", "result_is_none", "writes_shared_state"])
def test_process_blockers_win_over_any_policy(blocker: str) -> None:
    unsafe = features(**{blocker: 0.0 if blocker == "picklable" else 1.0})
    assert process_blockers(unsafe)
    assert decide(unsafe, HeuristicPolicy(), allow_process=True).backend == "thread"
    assert decide(features(), HeuristicPolicy(), allow_process=False).backend == "thread"


def test_warm_calls_overturn_processes_only_on_clear_evidence() -> None:
    cold = features(wall_s=0.008, cpu_s=0.008)
    # Same computing, read as half waiting beside starting interpreters: noise.
    assert not overturns_processes(features(wall_s=0.016, cpu_s=0.008, wait_ratio=0.5 + 1e-3), cold)
    # Half waiting and computing a third of what the first calls did: the
    # first calls' computing was a one-time cost.
    assert overturns_processes(features(wall_s=0.006, cpu_s=0.0025, wait_ratio=0.58), cold)
    # Mostly waiting: processes are futile whatever the first calls did.
    assert overturns_processes(features(wall_s=0.01, cpu_s=0.001, wait_ratio=0.9), cold)
    # Computing without the GIL where the first calls held it (an import on
    # the first call): overturned; a middling warm reading is not enough.
    gil_bound = features(wall_s=0.008, cpu_s=0.008, gil_cpu_share=0.95, usable_cores=2.0)
    assert overturns_processes(features(wall_s=0.006, cpu_s=0.006, gil_cpu_share=0.2, usable_cores=2.0), gil_bound)
    assert not overturns_processes(features(wall_s=0.008, cpu_s=0.008, gil_cpu_share=0.5, usable_cores=2.0), gil_bound)


def test_sizing_rules() -> None:
    waiting = features(wall_s=0.1, cpu_s=0.001, gil_hold=0.0)
    assert size_workers("thread", waiting, None) > 32
    assert size_workers("thread", waiting, 8) == 8
    assert size_workers("process", features(), None) == 4
    assert size_workers("inline", features(), None) == 1
    # Mostly waiting: at least 32 threads; half waiting (file I/O on a busy
    # disk reads so): the sizing rule, never under the stdlib's default.
    mostly = features(wall_s=0.01, cpu_s=0.0015, wait_ratio=0.85, gil_hold=0.0, usable_cores=2.0)
    assert size_workers("thread", mostly, None) == 32
    half = features(wall_s=0.01, cpu_s=0.005, wait_ratio=0.5, gil_hold=0.0, usable_cores=2.0)
    assert size_workers("thread", half, None) == 6
    assert size_chunks("process", features(wall_s=1e-4)) == 200
    assert size_chunks("process", features(wall_s=1.0)) == 1


def test_decision_str_is_one_line_with_reason() -> None:
    decision = decide(features(), HeuristicPolicy(), allow_process=True)
    assert isinstance(decision, Decision)
    text = str(decision)
    assert "\n" not in text and "process" in text and "GIL" in text
    assert 0.0 <= decision.confidence <= 1.0
    pickle.loads(pickle.dumps(decision))  # decisions travel (logs, joblib)


def test_hashing_large_buffers_is_not_sent_to_processes() -> None:
    monitor = GilMonitor()
    data = bytes(8_000_000)
    samples = [measure_call(hashlib.sha256, (data,), {}, monitor)[2] for _ in range(2)]
    feats = summarize(samples, fn_picklable=True, effects=static_effects(hashlib.sha256))
    assert decide(feats, HeuristicPolicy(), allow_process=True).backend == "thread"


def test_process_pays_off_only_for_enough_work() -> None:
    feats = features(wall_s=0.01)
    assert not process_pays_off(feats, calls=3, workers=2, pool_running=False)
    assert process_pays_off(feats, calls=3, workers=2, pool_running=True)
    assert process_pays_off(feats, calls=100, workers=2, pool_running=False)
    assert not process_pays_off(features(wall_s=0.01, arg_bytes=40e6), calls=100, workers=2, pool_running=True)


def test_process_pays_off_counting_the_calls_threads_take_while_the_pool_starts() -> None:
    # Pure Python, 2 ms a call, 2 cores: threads go on with the calls while
    # the interpreters start; 20 calls are nearly done by then, 100 are not
    # (measured: 128 such calls took 0.62x the time on processes).
    pure_python = features(wall_s=0.002, cpu_s=0.002, usable_cores=2.0)
    assert not process_pays_off(pure_python, calls=20, workers=2, pool_running=False)
    assert process_pays_off(pure_python, calls=20, workers=2, pool_running=True)
    assert process_pays_off(pure_python, calls=100, workers=2, pool_running=False)
    # Calls threads would finish before the pool is up never go there.
    few = features(wall_s=0.0005, cpu_s=0.0005, usable_cores=2.0)
    assert not process_pays_off(few, calls=40, workers=2, pool_running=False)


class AlwaysProcess:
    source = "model"

    def choose(self, features: Any, allowed: Any) -> Choice:
        return Choice("process" if "process" in allowed else "thread", 1.0, "always process")


@pytest.mark.parametrize(
    "overrides",
    [
        {"wall_s": 0.002, "arg_bytes": 4e6},  # moving 4 MB costs more than a 2 ms call
        {"cpu_ratio": 0.01, "wait_ratio": 0.99, "gil_hold": 0.67},  # mostly waits
        {"gil_hold": 0.2},  # C code that releases the GIL: threads use all 4 cores
        {"gil_hold": 0.4, "usable_cores": 2.0},  # ... and both of 2 cores
    ],
)
def test_no_policy_gets_processes_where_they_cannot_pay(overrides: dict[str, float]) -> None:
    feats = features(**overrides)
    assert process_futile(feats)
    assert decide(feats, AlwaysProcess(), allow_process=True).backend == "thread"
    assert decide(features(), AlwaysProcess(), allow_process=True).backend == "process"


def test_which_changes_in_cost_call_for_measuring_again() -> None:
    waits = features(wall_s=0.02, cpu_s=0.0001, cpu_ratio=0.005, wait_ratio=0.995)
    on_threads = Decision("thread", 8, 1, waits)
    # From waiting to computing 10 ms a call: measure again.
    assert cost_changed(on_threads, calls=10, elapsed_s=0.1, cpu_s=0.1)
    # Within the factor, or cheaper than measured (cold first calls): no.
    assert cost_changed(on_threads, calls=10, elapsed_s=0.2, cpu_s=0.002) is None
    computes = Decision("thread", 2, 1, features(wall_s=0.002, cpu_s=0.002))
    assert cost_changed(computes, calls=10, elapsed_s=0.002, cpu_s=0.001) is None
    # In processes only wall time is known: a fall counts, a rise is queueing.
    in_processes = Decision("process", 2, 1, features(wall_s=0.02, cpu_s=0.02))
    assert cost_changed(in_processes, calls=10, elapsed_s=0.01, cpu_s=None)
    assert cost_changed(in_processes, calls=10, elapsed_s=2.0, cpu_s=None) is None


def test_which_running_batches_are_watched_and_caught_computing() -> None:
    waits = features(wall_s=0.02, cpu_s=0.0001, cpu_ratio=0.005, wait_ratio=0.995)
    on_threads = Decision("thread", 128, 1, waits)
    assert watch_for_computing(on_threads)
    # Computing work is expected to compute; processes run elsewhere.
    assert not watch_for_computing(Decision("thread", 6, 1, features(wall_s=0.002, cpu_s=0.002)))
    assert not watch_for_computing(Decision("process", 2, 1, waits))
    # 5 ms of CPU where 0.1 ms a call was measured: caught.
    assert computing_now(on_threads, calls=1, cpu_used=0.005)
    # Within the factor, or too little to matter: not (yet).
    assert computing_now(on_threads, calls=10, cpu_used=0.003) is None
    assert computing_now(on_threads, calls=1, cpu_used=0.0008) is None


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs other threads' CPU clocks")
def test_a_watched_batch_reports_the_cpu_it_uses_while_it_runs() -> None:
    release = threading.Event()

    def spin(_: int) -> None:
        while not release.is_set():
            pass

    unwatched = Batch(spin, [((0,), {})], [Future()])
    watched = Batch(spin, [((0,), {})], [Future()])
    watched.watch()
    assert watched.cpu_so_far() is None  # not running yet
    worker = threading.Thread(target=watched.run_here)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        used = watched.cpu_so_far()
        while (used is None or used[0] < 0.01) and time.monotonic() < deadline:
            time.sleep(0.005)
            used = watched.cpu_so_far()
        assert used is not None and used[0] >= 0.01 and used[1] == 1
        assert unwatched.cpu_so_far() is None
    finally:
        release.set()
        worker.join()
    assert watched.cpu_so_far() is None  # finished


def test_a_map_batch_hands_out_results_while_it_still_runs() -> None:
    # Many calls travel in one batch; a consumer waiting for the first hears
    # of it long before the last call ends (notices are spaced out, not held).
    release = threading.Event()

    def first_quick_then_held(i: int) -> int:
        if i:
            release.wait(10)
        return i

    batch = Batch(first_quick_then_held, list(range(4)), [Future()], collect=True, spread=False)
    sink = batch.outcomes
    assert sink is not None
    worker = threading.Thread(target=batch.run_here)
    worker.start()
    try:
        assert sink.wait_for(0, timeout=10)
        assert sink.items[:1] == [0] and not sink.closed
    finally:
        release.set()
        worker.join()
    assert sink.closed and sink.items == [0, 1, 2, 3]


def test_an_unmeasured_gil_does_not_keep_work_from_processes() -> None:
    # 0.5 stands in for "unknown" when calls were too short for the sampler;
    # that reading must not count as "the GIL is released".
    feats = features(gil_hold=0.5, usable_cores=2.0, gil_measured=0.0)
    assert process_futile(feats) is None
    assert process_futile({**feats, "gil_measured": 1.0})


def test_processes_pay_off_only_where_the_gil_holds_threads_back() -> None:
    # Half waiting, half computing with the GIL (sleep then a Python loop):
    # 2 ms of GIL per call on threads against 1 ms of CPU per core in processes.
    mixed = features(wall_s=0.004, cpu_s=0.002, cpu_ratio=0.5, wait_ratio=0.5, gil_hold=0.5, usable_cores=2.0)
    assert not process_pays_off(mixed, calls=50, workers=4, pool_running=False)
    assert process_pays_off(mixed, calls=1000, workers=4, pool_running=False)
    # Computing without the GIL: threads are as fast as processes at any size.
    numpy_like = features(gil_hold=0.1, usable_cores=2.0)
    assert not process_pays_off(numpy_like, calls=10_000, workers=2, pool_running=True)


def test_waiting_beside_a_busy_thread_is_not_charged_with_the_gil() -> None:
    monitor = GilMonitor()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            python_loop(10_000)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        _, _, sample = measure_call(time.sleep, (0.05,), {}, monitor)
    finally:
        stop.set()
        thread.join()
    assert sample.gil_hold is not None and sample.gil_hold < 0.3

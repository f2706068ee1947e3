"""The "adaptive" joblib backend, driven by real ``joblib.Parallel`` calls."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence

import pytest

joblib = pytest.importorskip("joblib")
from helpers import ByCpuShare
from joblib import Parallel, delayed, parallel_config

from adaptive_pool import AutoExecutor, Choice, register_joblib_backend
from adaptive_pool._workloads import python_loop

register_joblib_backend()

# Workloads.  Module level, so that worker processes can import them (they
# inherit the test's sys.path).


def loop_pid(n: int) -> tuple[int, int]:
    """Pure-Python work: where it ran, and a checksum."""
    return os.getpid(), python_loop(n)


def sleep_pid(ms: float) -> int:
    time.sleep(ms / 1000.0)
    return os.getpid()


def loop_or_fail(i: int) -> int:
    value = python_loop(100_000)
    if i == 13:
        raise ValueError(f"bad item {i}")
    return value + i


def square(x: int) -> int:
    return x * x


def fail_on(x: int) -> int:
    if x == 3:
        raise KeyError(f"no key {x}")
    return x


def fill(out: list[int], i: int) -> None:
    """Works by side effect only (as joblib users do under require='sharedmem')."""
    python_loop(50_000)
    out[i] = i * i


def fill_squares(out: list[int], i: int) -> None:
    """As ``fill``; used by one test only, so no other test's profile applies."""
    python_loop(50_000)
    out[i] = i * i


def thread_name(_: int) -> str:
    python_loop(2_000)
    return threading.current_thread().name


def nested_sum(n: int) -> int:
    return sum(Parallel(n_jobs=2)(delayed(square)(j) for j in range(n)))


POLICY = ByCpuShare()


class TinyInlinePolicy:
    """Test policy: inline below 200 us a call, else processes (when allowed)."""

    source = "heuristic"

    def choose(self, features: Mapping[str, float], allowed: Sequence[str]) -> Choice:
        if features.get("wall_s", 0.0) < 200e-6:
            return Choice("inline", 1.0, "tiny")
        return Choice("process" if "process" in allowed else "thread", 1.0, "big enough")


def tiny_pid(i: int) -> tuple[int, int]:
    return os.getpid(), 2 * i


def tiny_pid_fixed_batches(i: int) -> tuple[int, int]:
    return os.getpid(), 2 * i


def loop_half_ms(i: int) -> int:
    return python_loop(15_000) + i


class InlinePolicy:
    """Sends everything to the inline route; counts what it was asked."""

    source = "heuristic"

    def __init__(self) -> None:
        self.asked = 0

    def choose(self, features: Mapping[str, float], allowed: Sequence[str]) -> Choice:
        self.asked += 1
        return Choice("inline", 1.0, "test policy")


def test_results_match_serial_for_list_and_explicit_n_jobs() -> None:
    expected = [square(i) for i in range(200)]
    with parallel_config(backend="adaptive", policy=POLICY):
        assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(200)) == expected
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(200)) == expected
        assert Parallel(n_jobs=-1)([]) == []


def test_backend_by_name_in_parallel() -> None:
    assert Parallel(n_jobs=2, backend="adaptive")(delayed(square)(i) for i in range(10)) == [
        i * i for i in range(10)
    ]


def test_n_jobs_one_runs_sequentially_in_the_caller() -> None:
    me = threading.get_ident()
    with parallel_config(backend="adaptive", policy=POLICY):
        idents = Parallel(n_jobs=1)(delayed(lambda _: threading.get_ident())(i) for i in range(5))
    assert set(idents) == {me}


def test_python_loop_goes_to_processes_and_sleep_stays_on_threads() -> None:
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=POLICY):
        loops = Parallel(n_jobs=-1)(delayed(loop_pid)(300_000) for _ in range(16))
        sleeps = Parallel(n_jobs=-1)(delayed(sleep_pid)(20) for _ in range(16))
    assert [value for _, value in loops] == [python_loop(300_000)] * 16
    # The probes run here on threads; what follows goes to worker processes.
    assert {pid for pid, _ in loops} - {me}
    assert set(sleeps) == {me}
    # The decisions are the executor's, per function (kept process-wide).
    ex = AutoExecutor(policy=POLICY)
    try:
        loop_decision = ex.decision_for(loop_pid)
        sleep_decision = ex.decision_for(sleep_pid)
    finally:
        ex.shutdown()
    assert loop_decision is not None and loop_decision.backend == "process"
    assert sleep_decision is not None and sleep_decision.backend == "thread"


def test_return_as_generator_and_unordered() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        gen = Parallel(n_jobs=-1, return_as="generator")(delayed(square)(i) for i in range(300))
        assert not isinstance(gen, list)
        assert list(gen) == [i * i for i in range(300)]
        unordered = Parallel(n_jobs=2, return_as="generator_unordered")(
            delayed(sleep_pid)(ms) for ms in (30, 1, 20, 1, 10)
        )
        assert len(list(unordered)) == 5


def test_generator_with_cpu_work_in_processes() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        gen = Parallel(n_jobs=-1, return_as="generator")(delayed(loop_pid)(200_000) for _ in range(10))
        values = [value for _, value in gen]
    assert values == [python_loop(200_000)] * 10


def test_error_in_a_task_on_threads_keeps_type_and_message() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        with pytest.raises(KeyError, match="no key 3"):
            Parallel(n_jobs=2)(delayed(fail_on)(i) for i in range(10))
        # The backend (and its shared executor) still work afterwards.
        assert Parallel(n_jobs=2)(delayed(fail_on)(i) for i in range(3)) == [0, 1, 2]


def test_error_in_a_task_in_a_worker_process() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        # Warm up: the function is decided "process" before it fails.
        Parallel(n_jobs=-1)(delayed(loop_or_fail)(i) for i in range(6))
        with pytest.raises(ValueError, match="bad item 13"):
            Parallel(n_jobs=-1)(delayed(loop_or_fail)(i) for i in range(30))
        assert Parallel(n_jobs=-1)(delayed(loop_or_fail)(i) for i in range(4)) == [
            python_loop(100_000) + i for i in range(4)
        ]
    decision = AutoExecutor(policy=POLICY).decision_for(loop_or_fail)
    assert decision is not None and decision.backend == "process"


_started: list[int] = []
_release = threading.Event()


def gated(i: int) -> int:
    if i == 0:
        raise RuntimeError("first task fails")
    _started.append(i)
    _release.wait(10)
    return i


@pytest.mark.timeout(60)
def test_error_cancels_batches_not_started() -> None:
    _started.clear()
    _release.clear()
    try:
        with parallel_config(backend="adaptive", policy=POLICY):
            with pytest.raises(RuntimeError, match="first task fails"):
                Parallel(n_jobs=2, pre_dispatch="all", batch_size=1)(delayed(gated)(i) for i in range(40))
        running_at_abort = len(_started)
    finally:
        _release.set()
    time.sleep(0.3)  # give cancelled work every chance to (wrongly) start
    assert running_at_abort <= 2  # n_jobs=2: at most two batches at a time
    assert len(_started) == running_at_abort


def test_joblib_timeout_is_honoured() -> None:
    import multiprocessing

    # joblib raises multiprocessing's TimeoutError, whatever the backend.
    with parallel_config(backend="adaptive", policy=POLICY):
        with pytest.raises(multiprocessing.TimeoutError):
            Parallel(n_jobs=2, timeout=0.2)(delayed(sleep_pid)(1000) for _ in range(2))


def test_prefer_threads_keeps_cpu_work_in_this_process() -> None:
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=POLICY):
        pids = Parallel(n_jobs=-1, prefer="threads")(delayed(loop_pid)(100_000) for _ in range(8))
    assert {pid for pid, _ in pids} == {me}


def test_prefer_processes_sends_work_to_processes() -> None:
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=POLICY):
        pids = Parallel(n_jobs=2, prefer="processes")(delayed(sleep_pid)(1) for _ in range(4))
    assert me not in set(pids)


def test_require_sharedmem_keeps_side_effects() -> None:
    out = [0] * 12
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=POLICY):
        Parallel(n_jobs=-1, require="sharedmem")(delayed(fill)(out, i) for i in range(12))
        pids = Parallel(n_jobs=-1, require="sharedmem")(delayed(loop_pid)(100_000) for _ in range(8))
    assert out == [i * i for i in range(12)]
    assert {pid for pid, _ in pids} == {me}


def loop_pid_shared_first(n: int) -> tuple[int, int]:
    """As ``loop_pid``; first run under require='sharedmem' by one test only."""
    return os.getpid(), python_loop(n)


def test_a_sharedmem_run_does_not_keep_the_function_off_processes_later() -> None:
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=POLICY):
        Parallel(n_jobs=-1, require="sharedmem")(delayed(loop_pid_shared_first)(300_000) for _ in range(4))
        pids = Parallel(n_jobs=-1)(delayed(loop_pid_shared_first)(300_000) for _ in range(8))
    assert {pid for pid, _ in pids} - {me}


def test_functions_returning_none_are_not_sent_to_processes() -> None:
    # Without require="sharedmem", loky would lose these writes; the
    # executor's rule (None results mean side effects) keeps them here.
    out = [0] * 12
    with parallel_config(backend="adaptive", policy=POLICY):
        results = Parallel(n_jobs=-1)(delayed(fill_squares)(out, i) for i in range(12))
    assert results == [None] * 12
    assert out == [i * i for i in range(12)]


def test_nested_parallel_inside_a_task() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        assert Parallel(n_jobs=2)(delayed(nested_sum)(n) for n in range(5)) == [
            sum(j * j for j in range(n)) for n in range(5)
        ]


def test_executor_options_as_backend_parameters() -> None:
    policy = InlinePolicy()
    with parallel_config(backend="adaptive", policy=policy):
        names = Parallel(n_jobs=-1)(delayed(thread_name)(i) for i in range(40))
    assert policy.asked and all(name.startswith("AutoExecutor") for name in names)
    with pytest.raises(TypeError, match="unknown option"):
        with parallel_config(backend="adaptive", no_such_option=1):
            pass


def test_large_batches_of_tiny_calls_are_judged_as_batches() -> None:
    # Call by call the function is tiny (inline); joblib's auto-batching
    # then sends batches of hundreds of calls, which are worth a process.
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=TinyInlinePolicy()):
        results = Parallel(n_jobs=2)(delayed(tiny_pid)(i) for i in range(30_000))
    assert [value for _, value in results] == [2 * i for i in range(30_000)]
    assert results[0][0] == me  # the first, one-call batches: here (probes, inline)
    assert {pid for pid, _ in results} - {me}
    decision = AutoExecutor(policy=TinyInlinePolicy()).decision_for(tiny_pid)
    assert decision is not None and decision.backend == "inline"


def test_fixed_batch_size_is_not_judged_again() -> None:
    me = os.getpid()
    with parallel_config(backend="adaptive", policy=TinyInlinePolicy()):
        results = Parallel(n_jobs=2, batch_size=2)(delayed(tiny_pid_fixed_batches)(i) for i in range(2_000))
    assert [value for _, value in results] == [2 * i for i in range(2_000)]
    assert {pid for pid, _ in results} == {me}


def test_a_fixed_batch_size_does_not_change_the_per_call_profile() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        Parallel(n_jobs=2, batch_size=25, pre_dispatch="all")(delayed(loop_half_ms)(i) for i in range(100))
    decision = AutoExecutor(policy=POLICY).decision_for(loop_half_ms)
    assert decision is not None
    # One call computes for about 0.5 ms, a batch for 25 times that (CPU
    # time: not inflated by a busy machine).
    assert decision.features["cpu_s"] < 0.004


def test_managed_parallel_reuses_the_backend() -> None:
    with parallel_config(backend="adaptive", policy=POLICY):
        with Parallel(n_jobs=2) as parallel:
            first = parallel(delayed(square)(i) for i in range(20))
            second = parallel(delayed(square)(i) for i in range(20, 40))
    assert first + second == [i * i for i in range(40)]


# ----------------------------------------------------------------------
# scikit-learn: the same results as loky


sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def classification():
    from sklearn.datasets import make_classification

    return make_classification(n_samples=300, n_features=12, n_informative=6, random_state=0)


def _forest(X, y):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=24, max_depth=6, random_state=0, n_jobs=-1)
    model.fit(X, y)
    return model.predict(X), model.predict_proba(X), model.feature_importances_


def _cross_val(X, y):  # type: ignore[no-untyped-def]
    from sklearn.model_selection import cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    return cross_val_score(DecisionTreeClassifier(random_state=0), X, y, cv=5, n_jobs=-1)


def _grid(X, y):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=-1)
    search.fit(X, y)
    return search.best_params_, search.cv_results_["mean_test_score"]


@pytest.mark.timeout(120)
def test_sklearn_random_forest_matches_loky(classification) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    X, y = classification
    with parallel_config(backend="loky"):
        loky_pred, loky_proba, loky_importances = _forest(X, y)
    with parallel_config(backend="adaptive"):
        pred, proba, importances = _forest(X, y)
    np.testing.assert_array_equal(pred, loky_pred)
    # predict_proba sums per-tree probabilities from threads in whatever
    # order they finish, under loky as here: equal up to rounding.
    np.testing.assert_allclose(proba, loky_proba, rtol=0, atol=1e-12)
    np.testing.assert_allclose(importances, loky_importances, rtol=0, atol=1e-12)


@pytest.mark.timeout(120)
def test_sklearn_cross_val_score_and_grid_search_match_loky(classification) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    X, y = classification
    with parallel_config(backend="loky"):
        loky_scores = _cross_val(X, y)
        loky_best, loky_means = _grid(X, y)
    with parallel_config(backend="adaptive"):
        scores = _cross_val(X, y)
        best, means = _grid(X, y)
    np.testing.assert_array_equal(scores, loky_scores)
    assert best == loky_best
    np.testing.assert_array_equal(means, loky_means)


def test_sklearn_tasks_are_profiled_as_their_own_functions(classification) -> None:  # type: ignore[no-untyped-def]
    # scikit-learn wraps every task in one class; the backend unwraps it, so
    # that fitting a fold is not "the same function" as predicting a forest.
    from sklearn.model_selection._validation import _fit_and_score

    X, y = classification
    with parallel_config(backend="adaptive"):
        _cross_val(X, y)
    assert AutoExecutor().decision_for(_fit_and_score) is not None

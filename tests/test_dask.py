"""A Dask cluster as the process route: ``AutoExecutor(process_executor=client.get_executor())``.

One real ``distributed.LocalCluster`` with two worker processes (loopback
only) serves the whole module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from helpers import ByCpuShare

from adaptive_pool import AutoExecutor, RemoteTraceback, pin
from adaptive_pool._workloads import python_loop

pytestmark = pytest.mark.timeout(60)


POLICY = ByCpuShare()

# Workloads: module level, so that Dask workers import them by name (they
# start with this process's sys.path).


def loop_pid(item: tuple[int, int]) -> tuple[int, int]:
    """Pure-Python work; returns where it ran and a checksum."""
    index, n = item
    return os.getpid(), python_loop(n) + index


def sleep_pid(item: tuple[int, float]) -> tuple[int, int]:
    index, seconds = item
    time.sleep(seconds)
    return os.getpid(), index


def loop_or_fail(i: int) -> int:
    value = python_loop(150_000)
    if i % 5 == 3:
        raise ValueError(f"item {i} is bad")
    return value + i


@pin("processes")
def mark_and_wait(item: tuple[str, int, float]) -> int:
    """Leaves a file behind when it starts, then waits."""
    directory, index, seconds = item
    Path(directory, f"started-{index}").touch()
    time.sleep(seconds)
    return index


@pin("processes")
def crash(_: int) -> int:
    os._exit(3)


@pin("processes")
def pid_of_worker(_: int) -> int:
    return os.getpid()


@pin("processes")
def leave_a_trace(directory: str) -> int:
    """Each run leaves its own file: counts how many times it really ran."""
    import uuid

    Path(directory, uuid.uuid4().hex).touch()
    return os.getpid()


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    from distributed import Client, LocalCluster

    # A task that kills its worker fails at once (KilledWorker) rather than
    # being retried on the other worker: Dask's rule, set for the crash test.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        dask_client = Client(cluster)
    try:
        yield dask_client
    finally:
        dask_client.close()
        cluster.close()


@pytest.fixture
def worker_pids(client) -> set[int]:  # type: ignore[no-untyped-def]
    return set(client.run(os.getpid).values())


def test_results_in_order_and_cpu_work_runs_on_dask(client, worker_pids) -> None:  # type: ignore[no-untyped-def]
    items = [(i, 200_000) for i in range(16)]
    with AutoExecutor(process_executor=client.get_executor(), policy=POLICY) as ex:
        results = list(ex.map(loop_pid, items))
        decision = ex.decision_for(loop_pid)
    assert [value for _, value in results] == [python_loop(200_000) + i for i in range(16)]
    assert decision is not None and decision.backend == "process"
    pids = {pid for pid, _ in results}
    # The probes ran here, on threads; the rest on the Dask workers.
    assert pids - {os.getpid()} and pids - {os.getpid()} <= worker_pids


def test_waiting_work_stays_on_local_threads(client) -> None:  # type: ignore[no-untyped-def]
    with AutoExecutor(process_executor=client.get_executor(), policy=POLICY) as ex:
        results = list(ex.map(sleep_pid, [(i, 0.01) for i in range(20)]))
        decision = ex.decision_for(sleep_pid)
    assert [index for _, index in results] == list(range(20))
    assert {pid for pid, _ in results} == {os.getpid()}
    assert decision is not None and decision.backend == "thread"


def test_submit_results_and_errors_from_dask_workers(client, worker_pids) -> None:  # type: ignore[no-untyped-def]
    with AutoExecutor(process_executor=client.get_executor(), policy=POLICY) as ex:
        # Decide first (probes run locally), then the failures happen remotely.
        assert [f.result() for f in [ex.submit(loop_or_fail, i) for i in (0, 1, 2)]] == [
            python_loop(150_000) + i for i in (0, 1, 2)
        ]
        assert ex.decision_for(loop_or_fail).backend == "process"  # type: ignore[union-attr]
        futures = [ex.submit(loop_or_fail, i) for i in range(10)]
        for i, future in enumerate(futures):
            if i % 5 == 3:
                error = future.exception()
                assert type(error) is ValueError
                assert str(error) == f"item {i} is bad"
                # The worker's traceback comes along, as from our own pool.
                assert isinstance(error.__cause__, RemoteTraceback)
                assert "loop_or_fail" in str(error.__cause__)
            else:
                assert future.result() == python_loop(150_000) + i
        with pytest.raises(ValueError, match="item 8 is bad"):
            list(ex.map(loop_or_fail, range(5, 10)))


def test_lambdas_and_closures_travel_by_value(client) -> None:  # type: ignore[no-untyped-def]
    scale = 3
    with AutoExecutor(process_executor=client.get_executor(), prefer="processes") as ex:
        assert list(ex.map(lambda n: python_loop(n) * scale, [1000, 2000])) == [
            python_loop(1000) * 3,
            python_loop(2000) * 3,
        ]


def test_cancel_work_queued_locally(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # max_workers=2 keeps at most two batches on the cluster; the rest wait
    # here, where cancel() works as on any executor.
    with AutoExecutor(2, process_executor=client.get_executor()) as ex:
        futures = [ex.submit(mark_and_wait, (str(tmp_path), i, 0.5)) for i in range(8)]
        cancelled = [future.cancel() for future in futures[2:]]
        assert [f.result() for f in futures[:2]] == [0, 1]
    assert all(cancelled)
    assert all(f.cancelled() for f in futures[2:])
    started = sorted(p.name for p in tmp_path.iterdir())
    assert started == ["started-0", "started-1"]


def test_work_handed_to_the_cluster_is_running(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # As the standard library's process pool treats calls moved to its call
    # queue: once handed to Dask (we cannot see when Dask starts a task),
    # a call counts as running and cannot be cancelled; it completes.
    with AutoExecutor(process_executor=client.get_executor()) as ex:
        futures = [ex.submit(mark_and_wait, (str(tmp_path), i, 0.2)) for i in range(4)]
        assert all(f.running() for f in futures)
        assert not any(f.cancel() for f in futures)
        ex.shutdown(cancel_futures=True)
        assert [f.result() for f in futures] == [0, 1, 2, 3]
    assert len(list(tmp_path.iterdir())) == 4


def test_identical_calls_each_run_with_the_default_dask_executor(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Dask's executor is "pure" by default (tasks keyed by their arguments);
    # every job we send is distinct, so identical calls still all run.
    with AutoExecutor(process_executor=client.get_executor(), policy=POLICY) as ex:
        for future in [ex.submit(leave_a_trace, str(tmp_path)) for _ in range(12)]:
            future.result()
    assert len(list(tmp_path.iterdir())) == 12


def test_pure_false_runs_every_call(client, worker_pids, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with AutoExecutor(process_executor=client.get_executor(pure=False)) as ex:
        pids = [f.result() for f in [ex.submit(leave_a_trace, str(tmp_path)) for _ in range(12)]]
    assert len(list(tmp_path.iterdir())) == 12
    assert set(pids) <= worker_pids


def test_shutdown_leaves_the_users_dask_executor_alone(client) -> None:  # type: ignore[no-untyped-def]
    dask_executor = client.get_executor()
    ex = AutoExecutor(process_executor=dask_executor)
    assert ex.submit(pid_of_worker, 1).result() != os.getpid()
    ex.shutdown()
    assert dask_executor.submit(sum, [1, 2, 3]).result() == 6


def test_joblib_backend_with_dask_as_the_process_route(client, worker_pids) -> None:  # type: ignore[no-untyped-def]
    joblib = pytest.importorskip("joblib")
    from adaptive_pool import register_joblib_backend

    register_joblib_backend()
    with joblib.parallel_config(
        backend="adaptive", process_executor=client.get_executor(), policy=POLICY
    ):
        results = joblib.Parallel(n_jobs=-1)(joblib.delayed(loop_pid)((i, 150_000)) for i in range(12))
    assert [value for _, value in results] == [python_loop(150_000) + i for i in range(12)]
    assert {pid for pid, _ in results} & worker_pids


def test_a_crashing_task_follows_dask_rules(client) -> None:  # type: ignore[no-untyped-def]
    from distributed import KilledWorker

    with AutoExecutor(process_executor=client.get_executor(pure=False)) as ex:
        future = ex.submit(crash, 0)
        with pytest.raises(KilledWorker):
            future.result(timeout=45)
    # Dask's nanny restarts the worker; the cluster keeps serving.
    client.wait_for_workers(2, timeout=30)
    assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3

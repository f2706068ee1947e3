"""AutoExecutor from asyncio: ``loop.run_in_executor`` and :func:`adaptive_pool.amap`."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from helpers import ByCpuShare

from adaptive_pool import AutoExecutor, amap
from adaptive_pool._workloads import python_loop

pytestmark = pytest.mark.timeout(60)


POLICY = ByCpuShare()


def sleep_then(seconds: float) -> str:
    time.sleep(seconds)
    return threading.current_thread().name


def loop_pid(n: int) -> tuple[int, int]:
    return os.getpid(), python_loop(n)


def fail(x: int) -> int:
    raise ValueError(f"no {x}")


_started: list[int] = []


def wait_a_bit(i: int) -> int:
    _started.append(i)
    time.sleep(0.2)
    return i


def fail_first(i: int) -> int:
    if i == 0:
        raise ValueError("first one fails")
    return wait_a_bit(i)


async def _ticks_while(awaitable):  # type: ignore[no-untyped-def]
    """Await ``awaitable`` while another coroutine counts loop turns."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        result = await awaitable
    finally:
        stop.set()
        await task
    return result, ticks


@pytest.fixture(scope="module")
def executor():  # type: ignore[no-untyped-def]
    with AutoExecutor(policy=POLICY) as ex:
        yield ex


def test_run_in_executor_returns_the_result_without_blocking_the_loop(executor) -> None:  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return await _ticks_while(loop.run_in_executor(executor, sleep_then, 0.3))

    name, ticks = asyncio.run(main())
    assert name != threading.current_thread().name  # ran on a worker thread
    # A blocked loop would have counted at most one turn.
    assert ticks >= 5


def test_run_in_executor_routes_like_submit(executor) -> None:  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, loop_pid, 200_000) for _ in range(12)))

    results = asyncio.run(main())
    assert [value for _, value in results] == [python_loop(200_000)] * 12
    decision = executor.decision_for(loop_pid)
    assert decision is not None and decision.backend == "process"
    # Afterwards, calls go to the worker processes (once a first "process"
    # has been checked on two warm calls, which run on threads).
    async def again():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(executor, loop_pid, 200_000) for _ in range(3)]

    pids = [pid for pid, _ in asyncio.run(again())]
    assert pids[-1] != os.getpid()


def test_run_in_executor_raises_the_task_error(executor) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(executor, fail, 7)

    with pytest.raises(ValueError, match="no 7"):
        asyncio.run(main())


def test_amap_results_in_order_without_blocking_the_loop(executor) -> None:  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        return await _ticks_while(amap(executor, sleep_then, [0.05] * 20))

    names, ticks = asyncio.run(main())
    assert len(names) == 20
    assert ticks >= 5


def test_amap_several_iterables_and_empty(executor) -> None:  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        return await amap(executor, pow, [2, 3, 4], [3, 2, 1]), await amap(executor, pow, [], [])

    assert asyncio.run(main()) == ([8, 9, 4], [])


def test_amap_error_cancels_what_has_not_started() -> None:
    _started.clear()

    async def main() -> None:
        with AutoExecutor(2) as ex:
            with pytest.raises(ValueError, match="first one fails"):
                await amap(ex, fail_first, range(40))

    asyncio.run(main())  # leaving the with block waits for whatever still runs
    assert len(_started) <= 4


def test_cancelling_amap_cancels_what_has_not_started() -> None:
    _started.clear()

    async def main() -> None:
        with AutoExecutor(2) as ex:
            task = asyncio.create_task(amap(ex, wait_a_bit, range(40)))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    # Two workers ran a call or two each in the time; the rest were cancelled.
    assert len(_started) <= 4

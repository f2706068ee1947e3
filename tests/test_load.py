"""Load: nothing kept per call, bounded memory when asked, bounded caches.

Bounds are checked with allocation tracking, never with timings:
``sys.getallocatedblocks()`` (the interpreter's own count of live memory
blocks, cheap enough for 100,000 calls and a million map items) and
``tracemalloc`` (bytes, for the smaller runs).  A leak of one object per
call would show as tens of thousands of blocks; the bounds allow a few
hundred for caches warming up.  ``benchmarks/load.py`` prints the numbers
(peak RSS, per-call overhead) for the same cases.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from concurrent.futures import Future
from typing import Any, Callable, Iterator

import pytest

from adaptive_pool import AutoExecutor, _executor, _map
from adaptive_pool._profile import PROFILES
from adaptive_pool._workloads import tiny


def live_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def submit_rounds(ex: AutoExecutor, fn: Callable[[int], int], total: int, round_size: int = 10_000) -> None:
    for _ in range(total // round_size):
        futures = [ex.submit(fn, i) for i in range(round_size)]
        for i, f in enumerate(futures):
            assert f.result(60) == fn(i)
        del futures, f


@pytest.mark.timeout(120)
def test_100k_submits_keep_nothing_per_call() -> None:
    with AutoExecutor(2) as ex:
        submit_rounds(ex, tiny, 10_000)  # warm up: probes, decision, routes, threads
        before = live_blocks()
        submit_rounds(ex, tiny, 100_000)
        grown = live_blocks() - before
        assert grown < 1_000, f"{grown} memory blocks kept after 100,000 calls"
        with ex._lock:
            assert ex._unfinished() == 0
        assert len(ex._states) == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prefer", ["threads", "inline", "processes"])
def test_submits_keep_no_bytes_per_call(prefer: str) -> None:
    n = 5_000 if prefer == "processes" else 20_000
    with AutoExecutor(2, prefer=prefer) as ex:
        submit_rounds(ex, tiny, 2_000, 1_000)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            submit_rounds(ex, tiny, n, 1_000)
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert kept < 64 * 1024, f"{kept} bytes kept after {n} calls"


class _CountingFuture(Future):  # type: ignore[type-arg]
    created = 0

    def __init__(self) -> None:
        type(self).created += 1
        super().__init__()


@pytest.mark.timeout(120)
def test_map_of_a_million_items_uses_chunks_not_a_million_futures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_executor, "Future", _CountingFuture)
    monkeypatch.setattr(_map, "Future", _CountingFuture)  # where a map makes its chunks' futures
    _CountingFuture.created = 0
    with AutoExecutor(2) as ex:
        total = 0
        count = 0
        for value in ex.map(tiny, range(1_000_000)):
            total += value
            count += 1
    assert count == 1_000_000
    assert total == sum(tiny(i) for i in range(1_000_000))
    assert _CountingFuture.created < 5_000, f"{_CountingFuture.created} futures for 1,000,000 items"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prefer", ["threads", "processes", "inline"])
def test_a_forced_map_of_tiny_calls_goes_in_batches_sized_by_their_time(
    prefer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing is probed under prefer=, but the map's first batches are timed
    # and size the next: one call a batch made 50,000 such calls on threads
    # slower than ThreadPoolExecutor, and on processes take seconds.
    monkeypatch.setattr(_map, "Future", _CountingFuture)
    _CountingFuture.created = 0
    with AutoExecutor(2, prefer=prefer) as ex:
        results = list(ex.map(tiny, range(50_000)))
        assert ex.decision_for(tiny).source == "forced"  # type: ignore[union-attr]
    assert results == [tiny(i) for i in range(50_000)]
    assert _CountingFuture.created < 200, f"{_CountingFuture.created} batches for 50,000 tiny calls"


def _peak_blocks_during(start: Callable[[], Iterator[Any]], expected: Callable[[int], Any], every: int = 500) -> int:
    """Peak growth of live blocks from before ``start()`` (the map call) to the end."""
    gc.collect()
    base = sys.getallocatedblocks()
    peak = 0
    for i, value in enumerate(start()):
        assert value == expected(i)
        if i % every == 0:
            peak = max(peak, sys.getallocatedblocks() - base)
    return peak


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prefer", [None, "inline"])
def test_buffered_map_memory_does_not_grow_with_the_input(prefer: str | None) -> None:
    # With buffersize, the input is consumed as results are: peak memory is
    # the same for 20,000 items as for 200,000.  (Unbuffered, 180,000 more
    # items held at once would be hundreds of thousands of blocks.)
    with AutoExecutor(2, prefer=prefer) as ex:
        list(ex.map(tiny, range(2_000), buffersize=100))  # warm up
        small = _peak_blocks_during(lambda: ex.map(tiny, iter(range(20_000)), buffersize=100), tiny)
        large = _peak_blocks_during(lambda: ex.map(tiny, iter(range(200_000)), buffersize=100), tiny)
    assert large - small < 5_000, f"peak grew by {large - small} blocks for 10x the items"


@pytest.mark.timeout(120)
def test_buffered_map_peak_bytes_are_small() -> None:
    with AutoExecutor(2) as ex:
        list(ex.map(tiny, range(2_000), buffersize=50))
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            assert sum(ex.map(tiny, iter(range(30_000)), buffersize=50)) == sum(tiny(i) for i in range(30_000))
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    # 30,000 calls held at once would be several MB.
    assert peak < 1024 * 1024, f"peak {peak} bytes"


def _distinct_function(i: int) -> Callable[[int], int]:
    namespace: dict[str, Any] = {}
    exec(compile("f = lambda x: x + 1", f"<generated-{i}>", "exec"), namespace)
    return namespace["f"]  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_many_distinct_functions_keep_caches_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tens of thousands of distinct functions take minutes to probe on two
    # cores (benchmarks/load.py runs 20,000); the bound is the same
    # mechanism at any size, so shrink the capacities and go 15x past them.
    monkeypatch.setattr(PROFILES, "capacity", 100)
    monkeypatch.setattr(_executor, "_STATE_CAPACITY", 100)
    PROFILES.clear()
    with AutoExecutor(2) as ex:

        def run(start: int, stop: int) -> None:
            for i in range(start, stop):
                fn = _distinct_function(i)
                futures = [ex.submit(fn, k) for k in range(3)]
                assert [f.result(30) for f in futures] == [1, 2, 3]

        run(0, 500)
        middle = live_blocks()
        run(500, 1_500)
        grown = live_blocks() - middle
        assert len(PROFILES) <= 100
        assert len(ex._states) <= 100
        # 1,000 more functions, each with its code object, probes and profile:
        # without the bound that is well over 100,000 blocks.
        assert grown < 10_000, f"{grown} blocks kept for 1,000 more functions"
    PROFILES.clear()

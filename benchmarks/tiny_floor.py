"""What any executor must pay for a map of tiny calls, before probing or deciding.

Each case runs in a fresh interpreter (as ``adaptive-pool bench`` does) and
times 20,000 calls of ``x + 1``:

- ``serial``: a list comprehension, the benchmark's best for tiny calls;
- ``idle_threads_N``: the same calls, still run by the caller in doubling
  batches, while N threads that do nothing are started beside them and
  joined at the end (what keeping a pool ready costs on its own);
- ``on_thread``: the calls run in batches on one started thread and their
  results handed back to the caller, with no probing or deciding at all.

Run: ``python benchmarks/tiny_floor.py [repeats]``; prints medians and ratios
to ``serial``.
"""

from __future__ import annotations

import itertools
import queue
import statistics
import subprocess
import sys
import threading
import time

CALLS = 20_000
CASES = ("serial", "idle_threads_1", "idle_threads_4", "on_thread")


def _tiny(x: int) -> int:
    return x + 1


def _batches(items: list[int]) -> list[list[int]]:
    out, start, size = [], 0, 64
    while start < len(items):
        out.append(items[start : start + size])
        start += size
        size *= 2
    return out


def _run(case: str) -> float:
    items = list(range(CALLS))
    start = time.perf_counter()
    if case == "serial":
        results = [_tiny(x) for x in items]
    elif case.startswith("idle_threads_"):
        stop = threading.Event()
        threads = [threading.Thread(target=stop.wait) for _ in range(int(case.rsplit("_", 1)[1]))]
        for thread in threads:
            thread.start()
        results = list(itertools.chain.from_iterable(map(_tiny, batch) for batch in _batches(items)))
        stop.set()
        for thread in threads:
            thread.join()
    else:
        jobs: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[list[int]] = queue.SimpleQueue()

        def lane() -> None:
            while (batch := jobs.get()) is not None:
                done.put(list(map(_tiny, batch)))

        thread = threading.Thread(target=lane)
        thread.start()
        batches = _batches(items)
        for batch in batches:
            jobs.put(batch)
        jobs.put(None)
        results = list(itertools.chain.from_iterable(done.get() for _ in batches))
        thread.join()
    elapsed = time.perf_counter() - start
    assert results == [x + 1 for x in items]
    return elapsed


def main() -> None:
    """Time each case in fresh interpreters, interleaved; print medians."""
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    times: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(repeats):
        for case in CASES:
            out = subprocess.run(
                [sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True
            )
            times[case].append(float(out.stdout))
    base = statistics.median(times["serial"])
    for case in CASES:
        median = statistics.median(times[case])
        print(f"{case:16} {median * 1e3:7.3f} ms  {median / base:5.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(_run(sys.argv[2]))
    else:
        main()

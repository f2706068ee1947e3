"""``adaptive-pool demo``: real workloads, the decision for each, and its speed.

Each workload is mapped three ways in this process: with ``AutoExecutor``
(first, so that it starts with nothing measured), then with the standard
library's ``ThreadPoolExecutor`` and ``ProcessPoolExecutor``.  Every clock
covers building the executor, all results and shutdown.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import _workloads as w
from ._executor import AutoExecutor
from ._profile import reset_profiles

__all__ = ["WORKLOADS", "DemoWorkload", "add_arguments", "run"]


@dataclass(frozen=True)
class DemoWorkload:
    """A named function and its inputs; ``expect`` is the route that must win."""

    name: str
    fn: Callable[..., Any]
    items: Callable[[float], Sequence[Any]]
    expect: str


def _scaled(count: int, scale: float) -> int:
    return max(4, int(count * scale))


WORKLOADS: tuple[DemoWorkload, ...] = (
    DemoWorkload(
        "pure-Python loop", w.python_loop, lambda s: [200_000] * _scaled(24, s), "process"
    ),
    DemoWorkload("sleeps (20 ms)", w.sleep_ms, lambda s: [20] * _scaled(200, s), "thread"),
    DemoWorkload(
        "sha256 of 8 MB buffers",
        w.sha256_hex,
        lambda s: [bytes(8_000_000)] * _scaled(40, s),
        "thread",
    ),
    DemoWorkload("tiny tasks", w.tiny, lambda s: list(range(_scaled(50_000, s))), "inline"),
)


def _timed(
    make: Callable[[], Executor], fn: Callable[..., Any], items: Sequence[Any]
) -> tuple[float, list[Any], Executor]:
    start = time.perf_counter()
    with make() as executor:
        results = list(executor.map(fn, items))
    return time.perf_counter() - start, results, executor


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Options of ``adaptive-pool demo``."""
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the number of items (default 1.0)"
    )


def run(command: str, args: argparse.Namespace) -> int:
    """Run every workload; print decisions and times; 0 if every decision is right."""
    reset_profiles()
    rows = []
    wrong = 0
    for workload in WORKLOADS:
        items = workload.items(args.scale)
        auto_s, auto_results, auto = _timed(AutoExecutor, workload.fn, items)
        assert isinstance(auto, AutoExecutor)
        # The decision of the executor that ran the map (a map of tiny calls
        # over before any decision keeps its inline sprint, stored nowhere).
        decision = auto.decision_for(workload.fn)
        threads_s, thread_results, _ = _timed(ThreadPoolExecutor, workload.fn, items)
        processes_s, process_results, _ = _timed(ProcessPoolExecutor, workload.fn, items)
        if not auto_results == thread_results == process_results:
            raise AssertionError(f"{workload.name}: executors disagree on the results")
        backend = decision.backend if decision else "undecided"
        ok = backend == workload.expect
        wrong += not ok
        rows.append((workload, len(items), decision, auto_s, threads_s, processes_s, ok))

    print(f"{'workload':26} {'items':>6} {'route':>8} {'Auto':>8} {'Threads':>8} {'Procs':>8}  Auto/best")
    for workload, count, decision, auto_s, threads_s, processes_s, ok in rows:
        best = min(threads_s, processes_s)
        route = decision.backend if decision else "?"
        mark = "" if ok else f"  (expected {workload.expect})"
        print(
            f"{workload.name:26} {count:6d} {route:>8} {auto_s:8.3f} {threads_s:8.3f} "
            f"{processes_s:8.3f}  {auto_s / best:5.2f}x{mark}"
        )
    print("\nWhy:")
    for workload, _, decision, *_ in rows:
        print(f"  {workload.name}: {decision}")
    print("\nTimes in seconds: building the executor, all results and shutdown; Auto/best is")
    print("AutoExecutor's time over the faster of ThreadPoolExecutor and ProcessPoolExecutor.")
    return 1 if wrong else 0

"""Load benchmark: peak RSS and per-call overhead for the load cases.

    python benchmarks/load.py            # every case at full size
    python benchmarks/load.py --quick    # sizes divided by 10
    python benchmarks/load.py --json out.json

Each case runs in a fresh interpreter, so its peak RSS (``ru_maxrss``) is
its own; "growth" is the peak minus the RSS measured just before the timed
part (interpreter, package and warmed-up executor already loaded).  The
standard library's ``ThreadPoolExecutor`` runs the same cases where it can,
for scale.  Timings are wall-clock on whatever machine runs this: compare
rows, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable

CASES: dict[str, Callable[[int], None]] = {}
SIZES: dict[str, int] = {}


def case(size: int) -> Callable[[Callable[[int], None]], Callable[[int], None]]:
    def register(fn: Callable[[int], None]) -> Callable[[int], None]:
        CASES[fn.__name__] = fn
        SIZES[fn.__name__] = size
        return fn

    return register


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --------------------------------------------------------------------------
# Cases (run in the child; each times only its load, after a warm-up)


def _submit_rounds(ex: Any, fn: Callable[[int], int], total: int) -> None:
    for _ in range(max(1, total // 10_000)):
        futures = [ex.submit(fn, i) for i in range(min(total, 10_000))]
        for f in futures:
            f.result()
        del futures


def _timed(warm: Callable[[], None], load: Callable[[], None]) -> dict[str, float]:
    warm()
    start_rss = rss_mb()
    start = time.perf_counter()
    load()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_before_mb": start_rss, "peak_rss_mb": peak_rss_mb()}


def _submit_load(ex: Any, n: int, warm_n: int) -> dict[str, float]:
    """``n`` submits of a trivial function to ``ex`` (after ``warm_n``), then shut it down."""
    from adaptive_pool._workloads import tiny

    try:
        return _timed(lambda: _submit_rounds(ex, tiny, warm_n), lambda: _submit_rounds(ex, tiny, n))
    finally:
        ex.shutdown()


@case(100_000)
def submit_auto(n: int) -> dict[str, float]:
    from adaptive_pool import AutoExecutor

    return _submit_load(AutoExecutor(2), n, 10_000)


@case(100_000)
def submit_stdlib_threads(n: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    return _submit_load(ThreadPoolExecutor(2), n, 10_000)


@case(10_000)
def submit_processes(n: int) -> dict[str, float]:
    from adaptive_pool import AutoExecutor

    return _submit_load(AutoExecutor(2, prefer="processes"), n, 2_000)


@case(10_000)
def submit_stdlib_processes(n: int) -> dict[str, float]:
    from concurrent.futures import ProcessPoolExecutor

    return _submit_load(ProcessPoolExecutor(2), n, 2_000)


def _consume(results: Any) -> None:
    for _ in results:
        pass


def _map_load(ex: Any, n: int, **options: Any) -> dict[str, float]:
    """A map of a trivial function over ``n`` items on ``ex`` (after a warm-up map), then shut it down."""
    from adaptive_pool._workloads import tiny

    try:
        return _timed(
            lambda: _consume(ex.map(tiny, range(10_000), **options)),
            lambda: _consume(ex.map(tiny, iter(range(n)), **options)),
        )
    finally:
        ex.shutdown()


@case(1_000_000)
def map_auto(n: int) -> dict[str, float]:
    from adaptive_pool import AutoExecutor

    return _map_load(AutoExecutor(2), n)


@case(1_000_000)
def map_auto_buffersize_1000(n: int) -> dict[str, float]:
    from adaptive_pool import AutoExecutor

    return _map_load(AutoExecutor(2), n, buffersize=1000)


@case(1_000_000)
def map_stdlib_threads(n: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    return _map_load(ThreadPoolExecutor(2), n)


@case(20_000)
def distinct_functions(n: int) -> dict[str, float]:
    from adaptive_pool import AutoExecutor
    from adaptive_pool._profile import PROFILES

    def make(i: int) -> Callable[[int], int]:
        namespace: dict[str, Any] = {}
        exec(compile("f = lambda x: x + 1", f"<generated-{i}>", "exec"), namespace)
        return namespace["f"]  # type: ignore[no-any-return]

    ex = AutoExecutor(2)

    def run(start: int, stop: int) -> None:
        for i in range(start, stop):
            fn = make(i)
            for f in [ex.submit(fn, k) for k in range(3)]:
                f.result()

    try:
        out = _timed(lambda: run(-200, 0), lambda: run(0, n))
        out["profiles"] = len(PROFILES)
        out["states"] = len(ex._states)
        return out
    finally:
        ex.shutdown()


# --------------------------------------------------------------------------
# Driver


def _child(name: str, n: int) -> None:
    result = CASES[name](n)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="divide every size by 10")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    rows = []
    header = f"{'case':28} {'items':>9} {'seconds':>8} {'us/call':>8} {'peak RSS MB':>12} {'growth MB':>10}  notes"
    print(header)
    print("-" * len(header))
    for name in args.case or list(CASES):
        n = SIZES[name] // (10 if args.quick else 1)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", name, str(n)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            print(f"{name:28} failed:\n{proc.stderr}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(case=name, items=n, us_per_call=result["seconds"] / n * 1e6)
        notes = ""
        if "profiles" in result:
            notes = f"profiles kept {result['profiles']}, states kept {result['states']}"
        rows.append(result)
        print(
            f"{name:28} {n:>9} {result['seconds']:>8.2f} {result['us_per_call']:>8.1f} "
            f"{result['peak_rss_mb']:>12.1f} {result['peak_rss_mb'] - result['rss_before_mb']:>10.1f}  {notes}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One benchmark measurement, in a fresh interpreter.

``python -m adaptive_pool._bench_runner WORKLOAD MODE [--quick]`` builds the
workload (outside the clock), then times building the executor, mapping the
function over every input, collecting all results and shutting down.  It
prints one JSON object on stdout: ``{"ok": true, "seconds": ..., "digest":
...}`` or ``{"ok": false, "error": ...}``.  ``digest`` identifies the results,
so the caller can check them against the serial answer.

Modes are the choices a careful user could make by hand, plus AutoExecutor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["DIAGNOSTIC_MODES", "MODES", "STDLIB_MODES", "main"]

#: Every mode, in table order.
MODES: tuple[str, ...] = ("serial", "threads", "threads32", "processes", "processes_chunked", "joblib", "auto")
#: Diagnostic modes, run only when named with ``--modes``: ``auto_warm``
#: times a fresh AutoExecutor on a function whose profile an earlier executor
#: in the same process already measured (on the first few inputs, outside
#: the clock), which separates the cost of probing from that of the route.
DIAGNOSTIC_MODES: tuple[str, ...] = ("auto_warm",)
#: The modes whose best time is the baseline: plain standard-library choices.
STDLIB_MODES: tuple[str, ...] = ("serial", "threads", "threads32", "processes", "processes_chunked")


def good_chunksize(count: int) -> int:
    """What a careful user passes to ``ProcessPoolExecutor.map``: ~4 chunks per worker."""
    return max(1, count // (4 * (os.cpu_count() or 1)))


def digest(results: list[Any]) -> str:
    """A short fingerprint of a result list."""
    return hashlib.sha256(repr(results).encode()).hexdigest()[:16]


class _LogCapture(logging.Handler):
    """Keeps adaptive_pool's log records, as lines with their time since the
    clock started once it has stopped (formatting them is the report's
    work, not the executor's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.wall0 = time.time()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[str]:
        """The records kept, formatted."""
        return [f"+{(r.created - self.wall0) * 1e3:.1f} ms {r.getMessage()}" for r in self.records]


def run_mode(mode: str, fn: Callable[[Any], Any], items: list[Any], extra: dict[str, Any]) -> list[Any]:
    """Build the executor for ``mode``, map ``fn`` over ``items``, shut down."""
    if mode == "serial":
        return [fn(x) for x in items]
    if mode in ("threads", "threads32"):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(32 if mode == "threads32" else None) as tpe:
            return list(tpe.map(fn, items))
    if mode in ("processes", "processes_chunked"):
        from concurrent.futures import ProcessPoolExecutor

        chunksize = good_chunksize(len(items)) if mode == "processes_chunked" else 1
        with ProcessPoolExecutor() as ppe:
            return list(ppe.map(fn, items, chunksize=chunksize))
    if mode == "joblib":
        from joblib import Parallel, delayed
        from joblib.externals.loky import get_reusable_executor

        out = Parallel(n_jobs=-1)(delayed(fn)(x) for x in items)
        # joblib keeps its workers for the next call; stopping them is part
        # of the cost, as shutdown is for the other modes.
        get_reusable_executor().shutdown(wait=True)
        return list(out)
    if mode in ("auto", "auto_warm"):
        from adaptive_pool import AutoExecutor

        ex = AutoExecutor()
        try:
            out = list(ex.map(fn, items))
        finally:
            ex.shutdown(wait=True)
        # What it decided is read once the clock has stopped (see describe_decision).
        extra["decided"] = (ex, fn)
        return out
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES + DIAGNOSTIC_MODES)}")


def describe_decision(ex: Any, fn: Callable[[Any], Any]) -> dict[str, Any]:
    """The decision an AutoExecutor took for ``fn``, for the report."""
    decision = ex.decision_for(fn)
    if decision is None:
        return {"decision": None}
    return {"decision": str(decision), "route": f"{decision.backend} x{decision.workers} chunk {decision.chunksize}"}


def _warm_profile(fn: Callable[[Any], Any], items: list[Any]) -> None:
    """Let an AutoExecutor measure ``fn`` on the first inputs (not timed)."""
    from adaptive_pool import AutoExecutor

    with AutoExecutor() as ex:
        list(ex.map(fn, items[:8]))


def measure(workload: str, mode: str, quick: bool) -> dict[str, Any]:
    """Run one measurement in this process; return the report."""
    from ._bench_workloads import prepare

    # Import what the mode needs before the clock starts: import time is
    # measured apart (cold start), not in every workload.
    if mode in ("auto", "auto_warm"):
        import adaptive_pool  # noqa: F401
    elif mode == "joblib":
        import joblib  # noqa: F401
    import concurrent.futures  # noqa: F401

    capture = _LogCapture()
    if mode in ("auto", "auto_warm"):
        lib_logger = logging.getLogger("adaptive_pool")
        lib_logger.addHandler(capture)
        lib_logger.setLevel(logging.DEBUG)
    extra: dict[str, Any] = {}
    with prepare(workload, quick) as prepared:
        items = prepared.items
        if mode == "auto_warm":
            _warm_profile(prepared.fn, items)
        capture.wall0 = time.time()
        start = time.perf_counter()
        try:
            results = run_mode(mode, prepared.fn, items, extra)
        except BaseException as exc:  # noqa: BLE001 - a failure is a result here
            return {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}"[:500],
                "traceback": traceback.format_exc()[-2000:],
                "seconds": time.perf_counter() - start,
            }
        seconds = time.perf_counter() - start
    if "decided" in extra:
        extra.update(describe_decision(*extra.pop("decided")))
    report: dict[str, Any] = {"ok": True, "seconds": seconds, "digest": digest(results), "count": len(results)}
    report.update(extra)
    if capture.lines:
        report["log"] = capture.lines[:40]
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point: print one JSON report."""
    parser = argparse.ArgumentParser(prog="python -m adaptive_pool._bench_runner")
    parser.add_argument("workload")
    parser.add_argument("mode", choices=MODES + DIAGNOSTIC_MODES)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dump-after", type=float, default=0.0, help="dump every thread's stack to stderr after this many seconds (diagnose hangs)")
    args = parser.parse_args(argv)
    if args.dump_after > 0:
        import faulthandler

        faulthandler.dump_traceback_later(args.dump_after, exit=False)
    report = measure(args.workload, args.mode, args.quick)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

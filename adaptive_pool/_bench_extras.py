"""Benchmark extras: cold start, per-submit overhead, large maps and peak memory.

Each measurement runs in a fresh interpreter.  ``python -m
adaptive_pool._bench_extras submit|map KIND N [BUFFERSIZE]`` prints one JSON
object; :func:`cold_start` times whole scripts from the outside.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

__all__ = ["cold_start", "map_overhead", "submit_overhead"]

_COLD_SCRIPT = """
import time
{import_line}

def work(i):
    time.sleep(0.005)
    return i

with {executor}() as ex:
    assert list(ex.map(work, range(20))) == list(range(20))
"""

_COLD_VARIANTS = {
    "threads": ("from concurrent.futures import ThreadPoolExecutor", "ThreadPoolExecutor"),
    "auto": ("from adaptive_pool import AutoExecutor", "AutoExecutor"),
}


def _run_script(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def cold_start(runs: int) -> dict[str, Any]:
    """Whole-script time of 20 sleeps of 5 ms: AutoExecutor vs ThreadPoolExecutor.

    The two scripts alternate, so machine noise hits both alike; the
    difference of medians is reported in milliseconds.
    """
    times: dict[str, list[float]] = {name: [] for name in _COLD_VARIANTS}
    for _ in range(runs):
        for name, (import_line, executor) in _COLD_VARIANTS.items():
            times[name].append(_run_script(_COLD_SCRIPT.format(import_line=import_line, executor=executor)))
    med = {name: statistics.median(values) for name, values in times.items()}
    # Import time alone, for the diagnosis.
    imports = [_run_script("import adaptive_pool") for _ in range(runs)]
    bare = [_run_script("import concurrent.futures") for _ in range(runs)]
    return {
        "runs": runs,
        "threads_s": med["threads"],
        "auto_s": med["auto"],
        "extra_ms": (med["auto"] - med["threads"]) * 1e3,
        # Other work on the machine only ever adds time: the fastest runs
        # are the least disturbed estimate of the intrinsic difference.
        "extra_ms_min": (min(times["auto"]) - min(times["threads"])) * 1e3,
        "threads_min_s": min(times["threads"]),
        "auto_min_s": min(times["auto"]),
        "import_extra_ms": (statistics.median(imports) - statistics.median(bare)) * 1e3,
        "samples": times,
    }


def _tiny(x: int) -> int:
    return x + 1


def _make(kind: str) -> Any:
    if kind == "auto":
        from adaptive_pool import AutoExecutor

        return AutoExecutor()
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor()


def _warm(ex: Any, kind: str) -> str | None:
    """Run the function until AutoExecutor has decided (threads: start them)."""
    deadline = time.monotonic() + 10
    while True:
        futures = [ex.submit(_tiny, i) for i in range(8)]
        for f in futures:
            f.result()
        if kind != "auto":
            return None
        decision = ex.decision_for(_tiny)
        if decision is not None or time.monotonic() > deadline:
            return None if decision is None else str(decision)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _submit_child(kind: str, n: int) -> dict[str, Any]:
    ex = _make(kind)
    decision = _warm(ex, kind)
    rss0 = _peak_rss_mb()
    start = time.perf_counter()
    futures = [ex.submit(_tiny, i) for i in range(n)]
    submitted = time.perf_counter()
    total = sum(f.result() for f in futures)
    done = time.perf_counter()
    ex.shutdown(wait=True)
    assert total == n * (n + 1) // 2
    return {
        "kind": kind,
        "n": n,
        "submit_us": (submitted - start) / n * 1e6,
        "per_call_us": (done - start) / n * 1e6,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": rss0,
        "decision": decision,
    }


def _map_child(kind: str, n: int, buffersize: int | None) -> dict[str, Any]:
    ex = _make(kind)
    decision = _warm(ex, kind)
    start = time.perf_counter()
    if buffersize is None:
        results = ex.map(_tiny, range(n))
    else:
        results = ex.map(_tiny, range(n), buffersize=buffersize)
    total = 0
    for value in results:
        total += value
    done = time.perf_counter()
    ex.shutdown(wait=True)
    assert total == n * (n + 1) // 2
    return {
        "kind": kind,
        "n": n,
        "buffersize": buffersize,
        "per_call_us": (done - start) / n * 1e6,
        "seconds": done - start,
        "peak_rss_mb": _peak_rss_mb(),
        "decision": decision,
    }


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "adaptive_pool._bench_extras", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-500:]}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["ok"] = True
    return report


def _median_report(reports: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    good = [r for r in reports if r.get("ok")]
    if not good:
        return {"ok": False, "error": reports[0].get("error", "failed") if reports else "not run"}
    out = dict(good[0])
    for key in keys:
        out[key] = statistics.median(r[key] for r in good)
    out["runs"] = len(good)
    return out


def submit_overhead(n: int, runs: int, timeout: float = 300) -> dict[str, Any]:
    """µs per ``submit`` of a trivial function once decided, and peak RSS, per kind."""
    out: dict[str, Any] = {}
    reports: dict[str, list[dict[str, Any]]] = {"threads": [], "auto": []}
    for _ in range(runs):
        for kind, found in reports.items():
            found.append(_child(["submit", kind, str(n)], timeout))
    for kind, found in reports.items():
        out[kind] = _median_report(found, ("submit_us", "per_call_us", "peak_rss_mb"))
    if out["threads"].get("ok") and out["auto"].get("ok"):
        out["extra_submit_us"] = out["auto"]["submit_us"] - out["threads"]["submit_us"]
    return out


def map_overhead(n: int, runs: int, buffersize: int = 1000, timeout: float = 600) -> dict[str, Any]:
    """A map over ``n`` trivial calls: time per call and peak RSS."""
    variants = {
        "threads": ["map", "threads", str(n)],
        "auto": ["map", "auto", str(n)],
        f"auto_buffersize_{buffersize}": ["map", "auto", str(n), str(buffersize)],
    }
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, args in variants.items():
            reports[name].append(_child(args, timeout))
    return {name: _median_report(found, ("per_call_us", "seconds", "peak_rss_mb")) for name, found in reports.items()}


def main(argv: list[str]) -> int:
    """Child entry point: ``submit KIND N`` or ``map KIND N [BUFFERSIZE]``."""
    what, kind, n = argv[0], argv[1], int(argv[2])
    if what == "submit":
        report = _submit_child(kind, n)
    elif what == "map":
        report = _map_child(kind, n, int(argv[3]) if len(argv) > 3 else None)
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

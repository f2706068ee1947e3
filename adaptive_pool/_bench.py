"""``adaptive-pool bench``: AutoExecutor against the choices a user makes by hand.

Every measurement runs in a fresh interpreter (:mod:`._bench_runner`); the
clock covers building the executor, all results and shutdown.  Results are
checked against the serial answer (a wrong answer is a failure, not a
time).  Each mode's median time is divided by the per-workload best of the
standard-library modes (modes that failed, such as process pools given a
closure, are left out of that best).  Output: a table, a JSON file with
everything, and optionally a PNG chart.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._bench_runner import DIAGNOSTIC_MODES, MODES, STDLIB_MODES
from ._bench_workloads import WORKLOADS

__all__ = ["add_arguments", "format_table", "run", "run_bench", "summarize_results"]

#: Modes a failure is expected of, and why (not counted against the mode's record).
EXPECTED_FAILURES = {
    ("closure", "processes"): "the standard library's pickle cannot send a closure",
    ("closure", "processes_chunked"): "the standard library's pickle cannot send a closure",
}


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Options of ``adaptive-pool bench``."""
    parser.add_argument("--repeat", type=int, default=None, help="measurements per mode and workload (median; default 3, quick 1)")
    parser.add_argument("--only", default=None, metavar="NAME[,NAME]", help=f"workloads to run: {', '.join(WORKLOADS)}")
    parser.add_argument("--modes", default=None, metavar="MODE[,MODE]", help=f"modes to run: {', '.join(MODES)} (default: all), or the diagnostic {', '.join(DIAGNOSTIC_MODES)}")
    parser.add_argument("--quick", action="store_true", help="smoke-size workloads (well under a minute)")
    parser.add_argument("--json", default=None, metavar="PATH", help="where to write the results (default benchmarks/results.json in the repo, else ./adaptive-pool-bench.json)")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="draw a chart of the ratios (needs matplotlib: pip install 'adaptive_pool[plot]')")
    parser.add_argument("--no-extras", action="store_true", help="skip cold start, per-submit overhead and large-map measurements")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before one measurement counts as failed")


def _default_json_path() -> Path:
    cwd = Path.cwd()
    if (cwd / "benchmarks").is_dir() and (cwd / "adaptive_pool").is_dir():
        return cwd / "benchmarks" / "results.json"
    return cwd / "adaptive-pool-bench.json"


def _split(value: str | None, known: Sequence[str], what: str, default: Sequence[str] | None = None) -> list[str]:
    if not value:
        return list(known if default is None else default)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def measure_once(workload: str, mode: str, quick: bool, timeout: float) -> dict[str, Any]:
    """One fresh-interpreter measurement (see :mod:`._bench_runner`)."""
    cmd = [sys.executable, "-m", "adaptive_pool._bench_runner", workload, mode]
    if quick:
        cmd.append("--quick")
    # A hang is a finding: have the runner dump its threads' stacks first.
    cmd += ["--dump-after", str(max(1.0, timeout - 5))]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return {"ok": False, "error": f"timeout after {timeout:.0f} s", "traceback": stderr[-6000:]}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "error": f"runner exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"ok": False, "error": f"runner printed no report: {proc.stdout[-300:]}"}
    return report


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_at_start": load,
        "adaptive_pool": _source_info(),
    }


def _source_info() -> dict[str, Any]:
    """Which adaptive_pool was measured: its directory and, in a git checkout, the commit."""
    import adaptive_pool

    where = Path(adaptive_pool.__file__).resolve().parent
    info: dict[str, Any] = {"path": str(where)}
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(where), "status", "--porcelain", "--", "."],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["uncommitted_changes"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def run_bench(
    workloads: Sequence[str],
    modes: Sequence[str],
    repeat: int,
    quick: bool,
    timeout: float = 180.0,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure every (workload, mode) ``repeat`` times; return the results dict.

    Repetitions are the outer loop, so slow drifts in machine load spread
    over all modes instead of hitting one; and within each, the modes of a
    workload run in an order of their own (shuffled, the same from run to
    run), so that no mode always runs right after the same one: what one
    leaves behind (a pool's workers exiting) fell on the next, and in a
    fixed order AutoExecutor always came after joblib (20,000 tiny calls:
    1.50x-1.64x the serial loop there, 1.38x in a shuffled order).
    """
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {w: {m: [] for m in modes} for w in workloads}
    started = time.time()
    shuffler = random.Random(0)
    for rep in range(repeat):
        for workload in workloads:
            for mode in shuffler.sample(list(modes), len(modes)):
                report = measure_once(workload, mode, quick, timeout)
                samples[workload][mode].append(report)
                if progress is not None:
                    shown = f"{report['seconds']:.3f} s" if report.get("ok") else f"FAILED ({report.get('error', '')[:80]})"
                    progress(f"[{rep + 1}/{repeat}] {workload:<12} {mode:<18} {shown}")

    results: dict[str, Any] = {}
    for workload in workloads:
        expected = _expected_digest(workload, samples[workload], quick, timeout)
        entry: dict[str, Any] = {
            "family": WORKLOADS[workload].family,
            "description": WORKLOADS[workload].description,
            "expected_digest": expected,
            "modes": {},
        }
        for mode in modes:
            entry["modes"][mode] = _mode_entry(workload, mode, samples[workload][mode], expected)
        results[workload] = entry
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "repeat": repeat,
        "quick": quick,
        "modes": list(modes),
        "stdlib_modes": [m for m in STDLIB_MODES if m in modes],
        "elapsed_s": time.time() - started,
        "workloads": results,
    }


def _expected_digest(
    workload: str, found: dict[str, list[dict[str, Any]]], quick: bool, timeout: float
) -> str | None:
    for report in found.get("serial", []):
        if report.get("ok"):
            return str(report["digest"])
    reference = measure_once(workload, "serial", quick, timeout)
    return str(reference["digest"]) if reference.get("ok") else None


def _mode_entry(workload: str, mode: str, reports: list[dict[str, Any]], expected: str | None) -> dict[str, Any]:
    errors: list[str] = []
    times: list[float] = []
    for report in reports:
        if not report.get("ok"):
            errors.append(str(report.get("error", "failed")))
        elif expected is not None and report.get("digest") != expected:
            errors.append(f"wrong result (digest {report.get('digest')} != serial {expected})")
        else:
            times.append(float(report["seconds"]))
    entry: dict[str, Any] = {"times": times}
    tracebacks = [r["traceback"] for r in reports if r.get("traceback")]
    if tracebacks and not (workload, mode) in EXPECTED_FAILURES:
        entry["traceback"] = tracebacks[0]
    if errors:
        entry["ok"] = False
        entry["error"] = errors[0]
        entry["expected_failure"] = (workload, mode) in EXPECTED_FAILURES
    else:
        entry["ok"] = True
        entry["median"] = statistics.median(times)
    decisions = [r["decision"] for r in reports if r.get("decision")]
    if decisions:
        # Decisions may differ between repetitions (noisy probes): keep each.
        entry["decision"] = decisions[-1]
        entry["decisions"] = decisions
        routes = [r["route"] for r in reports if r.get("route")]
        entry["route"] = max(set(routes), key=routes.count) if routes else None
        entry["routes"] = routes
    logs = [r["log"] for r in reports if r.get("log")]
    if logs:
        entry["log"] = logs[-1]
        entry["logs"] = logs
    return entry


def summarize_results(data: dict[str, Any]) -> dict[str, Any]:
    """Add each mode's ratio to the per-workload best stdlib time; geomean and worst per mode."""
    stdlib = data["stdlib_modes"]
    per_mode: dict[str, dict[str, Any]] = {m: {"ratios": {}, "failed": []} for m in data["modes"]}
    for name, entry in data["workloads"].items():
        best = [(entry["modes"][m]["median"], m) for m in stdlib if entry["modes"][m].get("ok")]
        if not best:
            entry["best_stdlib"] = None
            continue
        best_s, best_mode = min(best)
        entry["best_stdlib"] = {"mode": best_mode, "seconds": best_s}
        for mode, m_entry in entry["modes"].items():
            if m_entry.get("ok"):
                ratio = m_entry["median"] / best_s
                m_entry["ratio"] = ratio
                per_mode[mode]["ratios"][name] = ratio
            else:
                per_mode[mode]["failed"].append(name)
    summary: dict[str, Any] = {}
    for mode, info in per_mode.items():
        ratios = info["ratios"]
        if ratios:
            worst_name = max(ratios, key=ratios.__getitem__)
            summary[mode] = {
                "geomean": math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios)),
                "worst": ratios[worst_name],
                "worst_workload": worst_name,
                "failed": info["failed"],
            }
        else:
            summary[mode] = {"geomean": None, "worst": None, "worst_workload": None, "failed": info["failed"]}
    data["summary"] = summary
    return data


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def format_table(data: dict[str, Any]) -> str:
    """Markdown tables: median seconds, ratios to the best stdlib mode, summary."""
    modes = data["modes"]
    out: list[str] = []
    out.append("Median seconds (ratio to the best standard-library mode for that workload):\n")
    out.append("| workload | " + " | ".join(modes) + " |")
    out.append("|---|" + "---:|" * len(modes))
    for name, entry in data["workloads"].items():
        cells = []
        for mode in modes:
            m = entry["modes"][mode]
            if not m.get("ok"):
                cells.append("failed" if m.get("expected_failure") else "**FAILED**")
            elif "ratio" in m:
                best = entry["best_stdlib"] and entry["best_stdlib"]["mode"] == mode
                text = f"{_fmt_time(m['median'])} ({m['ratio']:.2f}x)"
                cells.append(f"**{text}**" if best else text)
            else:
                cells.append(_fmt_time(m["median"]))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    summary = data.get("summary", {})
    if summary:
        geo = [f"{summary[m]['geomean']:.2f}x" if summary[m]["geomean"] else "-" for m in modes]
        worst = [
            f"{summary[m]['worst']:.2f}x ({summary[m]['worst_workload']})" if summary[m]["worst"] else "-"
            for m in modes
        ]
        failed = [str(len(summary[m]["failed"])) for m in modes]
        out.append("| **geometric mean** | " + " | ".join(geo) + " |")
        out.append("| **worst** | " + " | ".join(worst) + " |")
        out.append("| failures | " + " | ".join(failed) + " |")
    if "auto" in modes:
        out.append("\nAutoExecutor's decisions:\n")
        out.append("| workload | ratio | route | best stdlib |")
        out.append("|---|---:|---|---|")
        for name, entry in data["workloads"].items():
            m = entry["modes"]["auto"]
            ratio = f"{m['ratio']:.2f}x" if "ratio" in m else ("failed" if not m.get("ok") else "-")
            best = entry["best_stdlib"]["mode"] if entry.get("best_stdlib") else "-"
            out.append(f"| {name} | {ratio} | {m.get('route', '-')} | {best} |")
    extras = data.get("extras", {})
    if extras:
        out.append("")
        out.append(format_extras(extras))
    return "\n".join(out)


def format_extras(extras: dict[str, Any]) -> str:
    """The cold-start, submit and large-map figures as text."""
    lines: list[str] = []
    cold = extras.get("cold_start")
    if cold:
        lines.append(
            f"Cold start (script: import, map 20 sleeps of 5 ms, exit; median of {cold['runs']}): "
            f"ThreadPoolExecutor {cold['threads_s'] * 1e3:.0f} ms, AutoExecutor {cold['auto_s'] * 1e3:.0f} ms, "
            f"difference {cold['extra_ms']:+.0f} ms; fastest runs {cold['threads_min_s'] * 1e3:.0f} vs "
            f"{cold['auto_min_s'] * 1e3:.0f} ms, difference {cold['extra_ms_min']:+.0f} ms "
            f"(import alone {cold['import_extra_ms']:+.0f} ms)."
        )
    sub = extras.get("submit")
    if sub and sub.get("threads", {}).get("ok") and sub.get("auto", {}).get("ok"):
        t, a = sub["threads"], sub["auto"]
        lines.append(
            f"Per submit after the decision ({t['n']:,} submits of a trivial function): "
            f"ThreadPoolExecutor {t['submit_us']:.1f} us, AutoExecutor {a['submit_us']:.1f} us "
            f"({sub['extra_submit_us']:+.1f} us); per call to the last result {t['per_call_us']:.1f} vs "
            f"{a['per_call_us']:.1f} us; peak RSS {t['peak_rss_mb']:.0f} vs {a['peak_rss_mb']:.0f} MB."
        )
    big = extras.get("map")
    if big:
        parts = []
        for name, rep in big.items():
            if rep.get("ok"):
                parts.append(f"{name} {rep['per_call_us']:.2f} us/call, peak RSS {rep['peak_rss_mb']:.0f} MB")
            else:
                parts.append(f"{name} failed ({rep.get('error', '')[:60]})")
        n = next((rep["n"] for rep in big.values() if rep.get("ok")), 0)
        lines.append(f"map over {n:,} trivial items: " + "; ".join(parts) + ".")
    return "\n".join(lines)


#: Ratios above this are drawn cut, with their value written on top.
_PLOT_CAP = 20.0


def plot(data: dict[str, Any], path: str) -> None:
    """A grouped bar chart of each mode's ratio per workload (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'adaptive_pool[plot]' (or pip install matplotlib)"
        ) from exc
    names = list(data["workloads"])
    modes = data["modes"]
    fig, ax = plt.subplots(figsize=(max(10, 0.9 * len(names) + 3), 5.5))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs, ys = [], []
        for j, name in enumerate(names):
            ratio = data["workloads"][name]["modes"][mode].get("ratio")
            if ratio is not None:
                xs.append(j + (i - (len(modes) - 1) / 2) * width)
                ys.append(ratio)
        style: dict[str, Any] = {"edgecolor": "black", "linewidth": 1.2} if mode == "auto" else {}
        ax.bar(xs, [min(y, _PLOT_CAP) for y in ys], width, label=mode, **style)
        for x, y in zip(xs, ys):
            if y > _PLOT_CAP:  # off the chart: say how far
                ax.text(x, _PLOT_CAP * 1.02, f"{y:.0f}x", ha="center", va="bottom", fontsize=6, rotation=90)
    for level, line in ((1.0, "-"), (1.1, "--"), (1.5, ":")):
        ax.axhline(level, color="grey", linestyle=line, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylim(0.3, _PLOT_CAP * 2.5)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("time / best standard-library mode (log)")
    summary = data.get("summary", {}).get("auto", {})
    title = "adaptive-pool bench"
    if summary.get("geomean"):
        title += f": AutoExecutor geomean {summary['geomean']:.2f}x, worst {summary['worst']:.2f}x ({summary['worst_workload']})"
    machine = data["machine"]
    ax.set_title(f"{title}\n{machine['usable_cpus']} cores, Python {machine['python']}, median of {data['repeat']}")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(command: str, args: argparse.Namespace) -> int:
    """Run the benchmark as the options say; print the table; write JSON (and chart)."""
    try:
        workloads = _split(args.only, list(WORKLOADS), "workload")
        modes = _split(args.modes, list(MODES + DIAGNOSTIC_MODES), "mode", default=MODES)
    except ValueError as exc:
        print(f"adaptive-pool bench: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "adaptive-pool bench: --plot needs matplotlib: pip install 'adaptive_pool[plot]'",
                file=sys.stderr,
            )
            return 2
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        print("adaptive-pool bench: --repeat must be >= 1", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    data = run_bench(workloads, modes, repeat, args.quick, args.timeout, progress)
    summarize_results(data)
    if not args.no_extras:
        from . import _bench_extras as extras

        progress("measuring cold start, per-submit overhead and large maps ...")
        data["extras"] = {
            "cold_start": extras.cold_start(3 if args.quick else 21),
            "submit": extras.submit_overhead(10_000 if args.quick else 100_000, 1 if args.quick else repeat),
            "map": extras.map_overhead(100_000 if args.quick else 1_000_000, 1),
        }
    try:
        # Other work on the machine inflates every time; record how busy it was.
        data["machine"]["load_avg_at_end"] = os.getloadavg()
    except OSError:
        pass
    print(format_table(data))
    json_path = Path(args.json) if args.json else _default_json_path()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nresults: {json_path}")
    if args.plot:
        plot(data, args.plot)
        print(f"chart: {args.plot}")
    unexpected = [
        (name, mode)
        for name, entry in data["workloads"].items()
        for mode, m in entry["modes"].items()
        if not m.get("ok") and not m.get("expected_failure")
    ]
    if unexpected:
        print("failures: " + ", ".join(f"{w}/{m}" for w, m in unexpected), file=sys.stderr)
    return 0 if not unexpected else 1

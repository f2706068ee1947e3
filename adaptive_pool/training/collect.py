"""Collecting labelled timings on this machine.

For each task instance (:mod:`.families`):

1. **Features** come from the runtime's own code path: the instance's first
   calls go through an :class:`~adaptive_pool.AutoExecutor`, which probes
   them exactly as it does for users, and the features it stores
   (:data:`adaptive_pool._profile.PROFILES`) are recorded.  There is no
   second feature computation, hence no train/serve skew.
2. **Timings**: the same items then run on every candidate route, each an
   ``AutoExecutor`` as users get it: ``inline``; ``thread`` and ``process``
   sized by the runtime's rules from those features (a fixed policy decides
   from the stored profile, as for a function seen before); threads forced
   at 2, 8 and 32 workers; processes forced at chunk sizes 1 and 16.
   Process workers are started (and waited for) before the clock starts,
   the same way for every process timing, and each runs one call of the
   task first: start-up, and what a task needs once per process (imports,
   caches, connections), are paid once per executor, not per call, so they
   are left out of every label, as the parent's own first call is.
   Each timing is the median of up to three runs (one if the first run took
   more than a second).
3. **Label**: a route's time is its best variant; the label is the fastest
   route among those allowed.  Every timing is kept, so regret (time lost
   against the best) can be computed for any policy.

Rows go to a CSV file (one per instance, appended as they finish, so an
interrupted collection resumes where it stopped), with a JSON metadata file
beside it.  Nothing is pickled.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._executor import AutoExecutor
from .._identity import function_key
from .._policy import Backend, Choice, Source, process_blockers, size_workers
from .._profile import (
    FEATURE_SCHEMA_VERSION,
    MODEL_FEATURES,
    PROFILES,
    SAFETY_FEATURES,
    usable_cores,
)
from . import families as fam

__all__ = [
    "COLLECTOR_VERSION",
    "VARIANTS",
    "Variant",
    "collect",
    "csv_columns",
    "metadata_path",
    "read_rows",
]

#: Bumped when what the collector measures changes; rows of another version
#: are not mixed into one file.
COLLECTOR_VERSION = 2  # 2: process workers run one call of the task before timing

BACKEND_NAMES: tuple[Backend, ...] = ("inline", "thread", "process")


@dataclass(frozen=True)
class Variant:
    """One way of running the items: a route and how it is sized."""

    name: str
    backend: Backend
    #: ``None``: sized by the runtime's rules from the features.
    workers: int | None = None
    #: ``chunksize`` passed to ``map`` (forced process variants).
    chunksize: int = 1


VARIANTS: tuple[Variant, ...] = (
    Variant("inline", "inline"),
    Variant("thread", "thread"),
    Variant("thread_w2", "thread", workers=2),
    Variant("thread_w8", "thread", workers=8),
    Variant("thread_w32", "thread", workers=32),
    Variant("process", "process"),
    Variant("process_c1", "process", workers=0, chunksize=1),
    Variant("process_c16", "process", workers=0, chunksize=16),
)
#: The variants a quick collection times.
QUICK_VARIANTS = ("inline", "thread", "thread_w8", "process", "process_c1")


@dataclass(frozen=True)
class Settings:
    """How much to measure."""

    target_s: float = 0.25  # serial time of one instance's items
    min_items: int = 12
    max_items: int = 4000
    repeats: int = 3
    #: Calls in the feature run: the executor's probes (2), nothing more, so
    #: that the features are those of the first calls (with more, a cost
    #: that grows with the input makes the executor probe again).
    probe_items: int = 2
    #: Bytes moved (arguments + results) per instance, at most; beyond
    #: ``min_items`` calls, fewer calls are timed.
    max_bytes: int = 128 * 1024 * 1024
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)


FULL = Settings()
QUICK = Settings(target_s=0.1, min_items=8, max_items=2000, repeats=1, variants=QUICK_VARIANTS)
PROBES = 2


def csv_columns() -> list[str]:
    """Every column of the CSV, in order."""
    return (
        ["instance", "family", "params", "replica", "n_items"]
        + list(MODEL_FEATURES)
        + list(SAFETY_FEATURES)
        + [f"t_{v.name}" for v in VARIANTS]
        + [f"time_{b}" for b in BACKEND_NAMES]
        + ["label", "best_variant", "noise", "collected_at"]
    )


def metadata_path(csv_path: str | os.PathLike[str]) -> Path:
    """The JSON metadata file that goes with a CSV file."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".metadata.json")


class _FixedPolicy:
    """Always the same route; the runtime's rules size it."""

    source: Source = "model"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        return Choice(self.backend if self.backend in allowed else "thread", 1.0, "collector")


def measure_features(fn: Callable[..., Any], probe_args: list[tuple[Any, ...]], timeout: float = 30.0) -> dict[str, float]:
    """Features of ``fn`` exactly as an ``AutoExecutor`` measures them."""
    key = function_key(fn)
    PROFILES.discard(key)
    with AutoExecutor(policy=_FixedPolicy("thread"), probes=PROBES) as ex:
        list(ex.map(fn, *zip(*probe_args)))
        deadline = time.monotonic() + timeout
        features = PROFILES.get(key)
        while features is None and time.monotonic() < deadline:
            time.sleep(0.002)
            features = PROFILES.get(key)
    if features is None:
        raise RuntimeError(f"no profile was stored for {fn!r}")
    return dict(features)


def _time_variant(
    variant: Variant,
    fn: Callable[..., Any],
    args: list[tuple[Any, ...]],
    features: Mapping[str, float],
    settings: Settings,
    cores: int,
) -> tuple[float, float]:
    """Median seconds to map ``fn`` over ``args`` on ``variant``, and the spread."""
    columns = list(zip(*args))
    if variant.workers is None:
        ex = AutoExecutor(policy=_FixedPolicy(variant.backend))
        workers = size_workers(variant.backend, features, None)
        # The warm-up function is decided from the same features, so the
        # pool it starts is the one the timed calls get.
        PROFILES.put(function_key(fam.warm_call), features)
    else:
        prefer = {"inline": "inline", "thread": "threads", "process": "processes"}[variant.backend]
        ex = AutoExecutor(prefer=prefer, max_workers=variant.workers or None)
        workers = variant.workers or cores
    times: list[float] = []
    try:
        if variant.backend == "process":
            # Every worker started, and each has run the task once.
            list(ex.map(fam.warm_call, [fn] * workers, [args[0]] * workers, [0.03] * workers))
        for attempt in range(settings.repeats):
            t0 = time.perf_counter()
            for _ in ex.map(fn, *columns, chunksize=variant.chunksize):
                pass
            times.append(time.perf_counter() - t0)
            if times[0] > 1.0:
                break
    finally:
        ex.shutdown(wait=True)
        PROFILES.discard(function_key(fam.warm_call))
    median = statistics.median(times)
    spread = (max(times) - min(times)) / median if len(times) > 1 and median > 0 else 0.0
    return median, spread


def measure_instance(inst: fam.Instance, settings: Settings, cores: int) -> dict[str, Any]:
    """One CSV row: features, every timing, label."""
    fn = inst.family.fn
    probe_args = inst.args(settings.probe_items)
    # One unmeasured call first: imports, caches and servers a task needs
    # once per process are not what its route should be chosen for.
    fn(*probe_args[0])
    features = measure_features(fn, probe_args)
    wall = max(features["wall_s"], 1e-7)
    count = int(min(settings.max_items, max(settings.min_items, round(settings.target_s / wall))))
    moved = max(features["arg_bytes"], 0.0) + max(features["result_bytes"], 0.0)
    count = int(max(settings.min_items, min(count, settings.max_bytes // max(moved, 1.0))))
    args = inst.args(count)
    blocked = process_blockers(features) is not None
    row: dict[str, Any] = {
        "instance": inst.id,
        "family": inst.family.name,
        "params": json.dumps(dict(inst.params), sort_keys=True),
        "replica": inst.replica,
        "n_items": count,
    }
    for name in MODEL_FEATURES + SAFETY_FEATURES:
        row[name] = repr(float(features[name]))
    spreads: list[float] = []
    best_variant = ""
    best_time = math.inf
    per_backend: dict[str, float] = {}
    for variant in VARIANTS:
        if variant.name not in settings.variants or (variant.backend == "process" and blocked):
            row[f"t_{variant.name}"] = ""
            continue
        t, spread = _time_variant(variant, fn, args, features, settings, cores)
        spreads.append(spread)
        row[f"t_{variant.name}"] = f"{t:.6g}"
        if t < per_backend.get(variant.backend, math.inf):
            per_backend[variant.backend] = t
        if t < best_time:
            best_time, best_variant = t, variant.name
    PROFILES.discard(function_key(fn))
    for backend in BACKEND_NAMES:
        row[f"time_{backend}"] = f"{per_backend[backend]:.6g}" if backend in per_backend else ""
    row["label"] = min(per_backend, key=lambda b: per_backend[b])
    row["best_variant"] = best_variant
    row["noise"] = f"{statistics.median(spreads):.4f}" if spreads else "0"
    row["collected_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return row


def machine_metadata() -> dict[str, Any]:
    """What a collection or a model says about the machine it ran on."""
    return {
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def read_rows(csv_path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a collection CSV (empty list if there is none)."""
    p = Path(csv_path)
    if not p.exists():
        return []
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def collect(
    output: str | os.PathLike[str],
    *,
    quick: bool = False,
    replicas: int = 1,
    families: Sequence[str] | None = None,
    limit: int | None = None,
    fresh: bool = False,
    progress: bool = True,
    settings: Settings | None = None,
) -> Path:
    """Measure every instance not yet in ``output`` and append its row.

    ``quick`` measures a third of the grid with fewer variants and one run
    per timing (a few minutes on two cores); otherwise every grid point,
    ``replicas`` times.  ``families`` restricts to some families, ``limit``
    to the first instances (tests).  An existing file of the same collector
    and feature schema is resumed; ``fresh`` starts over.  Returns the CSV path.
    """
    settings = settings or (QUICK if quick else FULL)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_file = metadata_path(out)
    todo = fam.instances(quick=quick, replicas=replicas, families=families)
    if limit is not None:
        todo = todo[:limit]
    columns = csv_columns()
    done: set[str] = set()
    if out.exists() and not fresh:
        _check_resumable(out, meta_file, columns)
        done = {row["instance"] for row in read_rows(out)}
    elif out.exists():
        out.unlink()
    todo = [inst for inst in todo if inst.id not in done]
    cores = usable_cores()
    metadata: dict[str, Any] = {
        "format": "adaptive_pool-timings",
        "collector_version": COLLECTOR_VERSION,
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "model_features": list(MODEL_FEATURES),
        "safety_features": list(SAFETY_FEATURES),
        "columns": columns,
        "variants": {
            v.name: {"backend": v.backend, "workers": v.workers, "chunksize": v.chunksize}
            for v in VARIANTS
            if v.name in settings.variants
        },
        "settings": {
            "quick": quick,
            "replicas": replicas,
            "target_s": settings.target_s,
            "min_items": settings.min_items,
            "max_items": settings.max_items,
            "repeats": settings.repeats,
            "probe_items": settings.probe_items,
        },
        "families": {f.name: f.description for f in fam.FAMILIES},
        "machine": machine_metadata(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # Other programs loading the machine make timings noisy: say how busy it was.
        "load_average_start": _load_average(),
    }
    if meta_file.exists() and done:
        try:
            earlier = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            earlier = {}
        for key in ("started", "load_average_start"):
            if key in earlier:
                metadata[key] = earlier[key]
    _write_json(meta_file, metadata)
    bar = _progress(len(todo), progress)
    new_file = not out.exists()
    errors = 0
    try:
        with open(out, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if new_file:
                writer.writeheader()
                f.flush()
            for inst in todo:
                if bar is not None:
                    bar.set_postfix_str(inst.id[:40], refresh=False)
                try:
                    row = measure_instance(inst, settings, cores)
                except Exception as exc:  # noqa: BLE001 - one broken instance must not stop a long run
                    errors += 1
                    import logging

                    logging.getLogger("adaptive_pool").warning("collect: %s failed: %r", inst.id, exc)
                else:
                    writer.writerow(row)
                    f.flush()
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        rows = read_rows(out)
        metadata["rows"] = len(rows)
        metadata["errors"] = errors
        metadata["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        metadata["load_average_end"] = _load_average()
        noise = [float(r["noise"]) for r in rows if r.get("noise")]
        metadata["median_noise"] = statistics.median(noise) if noise else None
        _write_json(meta_file, metadata)
    return out


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the OS tells them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _check_resumable(out: Path, meta_file: Path, columns: list[str]) -> None:
    with open(out, newline="") as f:
        header = next(csv.reader(f), None)
    if header != columns:
        raise ValueError(f"{out} has other columns than this collector writes; pass fresh=True (--fresh)")
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if (
            meta.get("collector_version") != COLLECTOR_VERSION
            or meta.get("feature_schema_version") != FEATURE_SCHEMA_VERSION
        ):
            raise ValueError(f"{out} was collected by another collector version; pass fresh=True (--fresh)")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="task",
        desc="collect",
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining} left] {postfix}",
    )


def iter_rows(paths: Iterable[str | os.PathLike[str]]) -> Iterable[dict[str, str]]:
    """Rows of several CSV files in turn."""
    for p in paths:
        yield from read_rows(p)

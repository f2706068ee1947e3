"""Fitting, evaluating and installing the route model.

**What is learnt.**  A small random forest of shallow trees predicts the
route (``inline``, ``thread``, ``process``) from :data:`MODEL_FEATURES`.
Worker counts and chunk sizes are *not* learnt: they come from the rules of
:func:`adaptive_pool._policy.size_workers` and ``size_chunks``, the same for
every policy.  (The collector times threads at several worker counts and
processes at several chunk sizes; the rule-sized variants were the best or
near it in most rows, so small regressors would buy little for the risk.)

**Labels with a tolerance.**  Routes within :data:`TIE_TOLERANCE` of the
fastest count as fastest, and among those the label is the first of
``thread``, ``inline``, ``process`` (the cheapest to be wrong about: the
process route pays start-up and pickling that the timings leave out).
Otherwise noise between two equally good routes decides the label, and the
model learns the noise.  Regret is always computed from the raw timings.

**Labels among the routes on offer.**  Where the runtime never offers the
process route (:func:`adaptive_pool._policy.process_blockers` or
:func:`~adaptive_pool._policy.process_futile`: mostly waiting, data that
costs more to move than the call, or computing without the GIL), or the
inline route (calls of a millisecond or more, several cores; see
:func:`~adaptive_pool._policy.allowed_routes`), the label is the fastest of
the other routes: a "process" label there would teach the model nothing it could use,
and would pull neighbouring work where processes are on offer towards them.

**Mirrored sizes.**  Each row is also shown with argument and result sizes
swapped (see :func:`fit`).

**Cost-sensitive fit.**  Each row is weighted by how much a wrong route would
cost there (the mean log time ratio of the other routes against the best):
rows where all routes tie barely count, rows where the wrong route is ten
times slower count most.  This aims the model at regret, not accuracy.

**Evaluation.**  Leave-one-family-out: for each family, fit on all the
others and choose routes for the held-out one, the way the runtime does
(most probable allowed route, the exported JSON evaluated in pure Python).
Accuracy is the share of rows where the chosen route is the fastest
route on offer (within the tie tolerance); regret
is the total time of the chosen routes over the total time of the best
ones (1.0 is perfect).  The heuristic (:class:`HeuristicPolicy` through
:func:`adaptive_pool._policy.decide`) is scored on the same rows.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._model import DERIVED_FEATURES, model_inputs, parse_model, user_model_path
from .._policy import (
    Backend,
    HeuristicPolicy,
    Policy,
    allowed_routes,
    decide,
)
from .._profile import FEATURE_SCHEMA_VERSION, GIL_READABLE_S, MODEL_FEATURES, SAFETY_FEATURES
from .collect import (
    BACKEND_NAMES,
    COLLECTOR_VERSION,
    machine_metadata,
    metadata_path,
    read_rows,
)
from .export import check_export, export_dict, save_model

__all__ = ["Dataset", "TrainResult", "evaluate", "format_table", "load_dataset", "make_estimator", "retrain", "train"]

#: Hyper-parameters of the shipped model (fixed in advance, not tuned on the
#: held-out families).
MODEL_PARAMS: dict[str, Any] = {
    "n_estimators": 25,
    "max_depth": 5,
    "min_samples_leaf": 2,
    "max_features": None,
    "bootstrap": True,
    "random_state": 0,
}


#: Derived inputs the model uses besides :data:`MODEL_FEATURES` (computed by
#: :func:`adaptive_pool._model.model_inputs`, at training and at run time).
DERIVED: tuple[str, ...] = tuple(DERIVED_FEATURES)

#: Routes within this fraction of the fastest are tied for the label.
TIE_TOLERANCE = 0.10
#: Preference among tied routes.
TIE_ORDER: tuple[str, ...] = ("thread", "inline", "process")


def label_of(times: Mapping[str, float], tolerance: float = TIE_TOLERANCE) -> str:
    """The training label of a row from its route timings (see the module docstring)."""
    best = min(times.values())
    for backend in TIE_ORDER:
        if backend in times and times[backend] <= best * (1.0 + tolerance):
            return backend
    return min(times, key=lambda b: times[b])


def offered(features: Mapping[str, float], times: Mapping[str, float]) -> dict[str, float]:
    """``times`` of the routes the runtime would offer a policy for ``features``.

    Routes are withdrawn exactly as :func:`adaptive_pool._policy.decide`
    withdraws them; what is left always holds at least one route.
    """
    allowed: list[str] = list(allowed_routes(features))
    rest = {b: t for b, t in times.items() if b in allowed}
    return rest or dict(times)


@dataclass
class Dataset:
    """Rows of a collection, ready for fitting and scoring."""

    features: list[dict[str, float]] = field(default_factory=list)
    X: list[list[float]] = field(default_factory=list)
    y: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    times: list[dict[str, float]] = field(default_factory=list)  # backend -> seconds
    instances: list[str] = field(default_factory=list)
    #: ``times`` of the routes the runtime offers a policy (see :func:`offered`).
    offered: list[dict[str, float]] = field(default_factory=list)
    #: What labels and weights come from: per-call times on offer, pooled
    #: over the replicas of the same task (see :func:`load_dataset`).
    label_times: list[dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, keep: Callable[[int], bool]) -> Dataset:
        """The rows for which ``keep(index)`` holds, in order."""
        return self.take([i for i in range(len(self)) if keep(i)])

    def take(self, indices: Sequence[int]) -> Dataset:
        """The rows at ``indices``, in that order."""
        out = Dataset()
        for i in indices:
            out.features.append(self.features[i])
            out.X.append(self.X[i])
            out.y.append(self.y[i])
            out.families.append(self.families[i])
            out.times.append(self.times[i])
            out.instances.append(self.instances[i])
            out.offered.append(self.offered[i])
            out.label_times.append(self.label_times[i])
        return out


def load_dataset(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, pool_replicas: bool = True
) -> Dataset:
    """Read one or more collection CSV files.

    With ``pool_replicas`` (the default) the label of each row comes from the
    median per-call time of each route over every replica of the same task
    (family and parameters): the fastest route is a property of the work,
    and one replica's timing noise should not flip it.  Each row keeps its
    own features and its own raw timings (regret is computed from those).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    data = Dataset()
    per_call: list[dict[str, float]] = []
    tasks: list[str] = []
    for path in paths:
        for row in read_rows(path):
            times: dict[str, float] = {b: float(row[f"time_{b}"]) for b in BACKEND_NAMES if row.get(f"time_{b}")}
            if not times or row.get("label") not in times:
                continue
            feats = {name: float(row[name]) for name in MODEL_FEATURES + SAFETY_FEATURES}
            # The CSV keeps gil_hold, where 0.5 stands for "no reading"; the
            # route rules' gil_measured follows from it as at run time.
            feats["gil_measured"] = float(feats["gil_hold"] != 0.5 and feats["wall_s"] >= GIL_READABLE_S)
            data.features.append(feats)
            data.X.append(model_inputs(feats, DERIVED))
            data.families.append(row["family"])
            data.times.append(times)
            data.instances.append(row["instance"])
            data.offered.append(offered(feats, times))
            n_items = max(1.0, float(row.get("n_items") or 1))
            per_call.append({b: t / n_items for b, t in times.items()})
            tasks.append(f"{row['family']}:{row.get('params', '')}" if pool_replicas else row["instance"])
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(task, []).append(i)
    for i, task in enumerate(tasks):
        pooled: dict[str, float] = {}
        for backend in per_call[i]:
            values = [per_call[j][backend] for j in groups[task] if backend in per_call[j]]
            pooled[backend] = statistics.median(values)
        on_offer = offered(data.features[i], pooled)
        data.label_times.append(on_offer)
        data.y.append(label_of(on_offer))
    if not data.y:
        raise ValueError(f"no usable rows in {', '.join(map(str, paths))}")
    return data


def sample_weights(data: Dataset, weighting: str = "log") -> list[float]:
    """How much choosing wrong costs on each row (see the module docstring).

    ``"log"``: the mean log time ratio of the other routes to the best;
    ``"time"``: the mean seconds lost, over the median best time;
    ``"none"``: every row alike.
    """
    out = []
    bests = sorted(min(t.values()) for t in data.times)
    scale = bests[len(bests) // 2] if bests else 1.0
    for raw, pooled in zip(data.offered, data.label_times):
        # Ratios from the pooled per-call times; seconds from the row's own.
        times = raw if weighting == "time" else pooled
        best = min(times.values())
        if weighting == "none":
            out.append(1.0)
            continue
        if weighting == "time":
            others = [(t - best) / scale for t in times.values() if t > best]
        else:
            others = [math.log(t / best) for t in times.values() if t > best]
        out.append(0.02 + (sum(others) / len(others) if others else 0.0))
    return out


def make_estimator(**overrides: Any) -> Any:
    """A fresh, unfitted classifier with :data:`MODEL_PARAMS`."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(**{**MODEL_PARAMS, **overrides})


def mirrored(features: Mapping[str, float]) -> list[float]:
    """The input row of ``features`` with argument and result sizes swapped (see :func:`fit`)."""
    swapped = dict(features)
    swapped["arg_bytes"], swapped["result_bytes"] = features["result_bytes"], features["arg_bytes"]
    return model_inputs(swapped, DERIVED)


def fit(data: Dataset, *, mirror: bool = True, weighting: str = "log", **overrides: Any) -> Any:
    """Fit the classifier on ``data`` (cost-weighted).

    With ``mirror`` every row is also shown with its argument and result
    sizes swapped, each copy at half weight: moving bytes to a worker costs
    about what moving them back does, and without this prior a model that
    saw only large arguments would not know what to do with large results.
    """
    import numpy as np

    X = [list(x) for x in data.X]
    y = list(data.y)
    w = sample_weights(data, weighting)
    if mirror:
        X = X + [mirrored(f) for f in data.features]
        y = y + y
        w = [v / 2 for v in w] * 2
    est = make_estimator(**overrides)
    est.fit(np.asarray(X, dtype=np.float64), np.asarray(y), sample_weight=np.asarray(w))
    return est


def _choose(policy: Policy, features: Mapping[str, float]) -> Backend:
    return decide(features, policy, allow_process=True).backend


def score(choices: Sequence[str], data: Dataset) -> dict[str, float]:
    """Accuracy and regret of ``choices`` on ``data``."""
    chosen = 0.0
    best = 0.0
    hits = 0
    for choice, times, on_offer in zip(choices, data.times, data.offered):
        t = times.get(choice, times.get("thread", max(times.values())))
        chosen += t
        best += min(times.values())
        hits += on_offer.get(choice, math.inf) <= min(on_offer.values()) * (1.0 + TIE_TOLERANCE)
    n = len(data)
    return {
        "n": n,
        "accuracy": hits / n if n else float("nan"),
        "regret": chosen / best if best > 0 else float("nan"),
        "chosen_s": chosen,
        "best_s": best,
    }


def evaluate(data: Dataset, **overrides: Any) -> dict[str, Any]:
    """Leave-one-family-out scores of the model and the heuristic."""
    heuristic = HeuristicPolicy()
    per_family: dict[str, dict[str, Any]] = {}
    all_model: list[str] = []
    all_heur: list[str] = []
    order: list[int] = []
    families = sorted(set(data.families))
    for held in families:
        test_idx = [i for i in range(len(data)) if data.families[i] == held]
        chosen = set(test_idx)
        train_set = data.subset(lambda i: i not in chosen)  # noqa: B023 - used at once
        test_set = data.subset(lambda i: i in chosen)  # noqa: B023 - used at once
        if len(set(train_set.y)) < 1 or not len(train_set):
            continue
        est = fit(train_set, **overrides)
        policy = parse_model(json.loads(json.dumps(export_dict(est, derived=DERIVED))))
        model_choices = [_choose(policy, f) for f in test_set.features]
        heur_choices = [_choose(heuristic, f) for f in test_set.features]
        per_family[held] = {"model": score(model_choices, test_set), "heuristic": score(heur_choices, test_set)}
        all_model.extend(model_choices)
        all_heur.extend(heur_choices)
        order.extend(test_idx)
    reordered = data.take(order)
    return {
        "method": "leave-one-family-out",
        "families": per_family,
        "overall": {"model": score(all_model, reordered), "heuristic": score(all_heur, reordered)},
    }


def format_table(scores: Mapping[str, Any]) -> str:
    """The model-vs-heuristic table (markdown)."""
    lines = [
        "| held-out family | rows | model accuracy | heuristic accuracy | model regret | heuristic regret |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def line(name: str, s: Mapping[str, Any]) -> str:
        m, h = s["model"], s["heuristic"]
        return (
            f"| {name} | {m['n']} | {m['accuracy']:.0%} | {h['accuracy']:.0%} | "
            f"{m['regret']:.3f} | {h['regret']:.3f} |"
        )

    for name, s in scores["families"].items():
        lines.append(line(name, s))
    lines.append(line("**all (pooled)**", scores["overall"]))
    return "\n".join(lines)


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    path: Path
    metadata: dict[str, Any]
    table: str
    estimator: Any = None


def train(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    evaluate_model: bool = True,
    echo: Callable[[str], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Fit on collected CSV file(s), evaluate, export, and write the model.

    ``output`` is the model JSON path (default: the user's model, where
    every ``AutoExecutor`` finds it next); ``.joblib`` and ``.metadata.json``
    files go beside it.  ``echo`` receives progress lines (the CLI prints them).
    Returns the path, the metadata and the evaluation table.
    """
    say = echo or (lambda _msg: None)
    import sklearn

    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    dataset = load_dataset(paths)
    say(f"{len(dataset)} rows from {len(set(dataset.families))} families")
    scores: dict[str, Any] | None = None
    table = ""
    if evaluate_model and len(set(dataset.families)) >= 2:
        say("leave-one-family-out evaluation ...")
        scores = evaluate(dataset, **overrides)
        table = format_table(scores)
        say(table)
    est = fit(dataset, **overrides)
    policy = parse_model(json.loads(json.dumps(export_dict(est, derived=DERIVED))))
    check_export(est, policy, dataset.X)
    collections = []
    for p in paths:
        try:
            collections.append(json.loads(metadata_path(p).read_text()))
        except (OSError, ValueError):
            collections.append({})
    counts: dict[str, int] = {}
    for label in dataset.y:
        counts[label] = counts.get(label, 0) + 1
    metadata: dict[str, Any] = {
        "feature_names": list(MODEL_FEATURES),
        "derived_inputs": {name: DERIVED_FEATURES[name] for name in DERIVED},
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "collector_version": COLLECTOR_VERSION,
        "sklearn_version": sklearn.__version__,
        "estimator": type(est).__name__,
        "params": {**MODEL_PARAMS, **overrides},
        "sizing": "workers and chunk sizes by the rules of adaptive_pool._policy (size_workers, size_chunks)",
        "classes": [str(c) for c in est.classes_],
        "label_counts": counts,
        "rows": len(dataset),
        "families": sorted(set(dataset.families)),
        "training_machine": machine_metadata(),
        "data": [
            {"file": Path(p).name, "started": c.get("started"), "rows": c.get("rows"), "median_noise": c.get("median_noise"), "settings": c.get("settings")}
            for p, c in zip(paths, collections)
        ],
        "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "scores": scores,
        "export_checked_rows": len(dataset),
    }
    target = Path(output) if output is not None else user_model_path()
    path = save_model(est, target, metadata, DERIVED)
    say(f"model written to {path}")
    return TrainResult(path, metadata, table, est)


def retrain(
    quick: bool = False,
    output: str | os.PathLike[str] | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **collect_options: Any,
) -> TrainResult:
    """Collect timings on this machine, train, and install the model.

    The timings go to ``data`` (default: the user data directory, where a
    stopped full run resumes); the model to ``output`` (default: where
    every ``AutoExecutor`` finds it next).
    """
    from . import default_data_path
    from .collect import collect

    csv_path = Path(data) if data is not None else default_data_path(quick)
    say = echo or (lambda _msg: None)
    say(f"collecting timings into {csv_path} ({'quick' if quick else 'full'}; resumes if stopped)")
    if not fresh and csv_path.exists():
        # A finished collection is measured again (the machine may have
        # changed); an interrupted one resumes.
        from . import families as fam

        done = {row["instance"] for row in read_rows(csv_path)}
        plan = fam.instances(
            quick=quick,
            replicas=collect_options.get("replicas", 1),
            families=collect_options.get("families"),
        )
        if all(inst.id in done for inst in plan):
            fresh = True
        else:
            say(f"resuming: {len(done)} of {len(plan)} tasks already measured")
    collect(csv_path, quick=quick, fresh=fresh, progress=progress, **collect_options)
    return train(csv_path, output, echo=echo)


def _stderr(msg: str) -> None:  # pragma: no cover - convenience for scripts
    print(msg, file=sys.stderr)

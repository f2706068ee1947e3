"""The model's decision map: ``adaptive-pool info --plot FILE.png``.

The route the model picks over its two most used features (the others held
at their median over the training rows), with the training rows on top,
coloured by their measured label.  matplotlib is an optional extra
(``pip install "adaptive_pool[plot]"``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._model import ModelPolicy, read_model_file

__all__ = ["feature_usage", "plot_decision_map"]

_COLOURS = {"inline": "#4c72b0", "thread": "#55a868", "process": "#c44e52"}
# Features spanning orders of magnitude are drawn on a log axis.
_LOG_FEATURES = {"wall_s", "cpu_s", "arg_bytes", "result_bytes"}
_SAME_AXIS = {"cpu_ratio": "wait_ratio", "wait_ratio": "cpu_ratio"}


def feature_usage(model: ModelPolicy) -> list[tuple[str, float]]:
    """Model features by how much the trees split on them, most used first.

    A split near the root decides for more rows than a deep one, so each
    split counts 2 ** -depth.
    """
    names = list(model.features) + list(model.derived)
    weight: dict[str, float] = {}
    for tree in model._trees:
        stack = [(0, 0)]
        while stack:
            node, depth = stack.pop()
            if tree.left[node] == -1:
                continue
            name = names[tree.feature[node]]
            weight[name] = weight.get(name, 0.0) + 2.0**-depth
            stack.append((tree.left[node], depth + 1))
            stack.append((tree.right[node], depth + 1))
    ranked = sorted(weight.items(), key=lambda item: -item[1])
    used: list[tuple[str, float]] = [(name, w) for name, w in ranked if name in model.features]
    return used


def _rows(csv_path: Path, features: Sequence[str]) -> list[dict[str, Any]]:
    with csv_path.open(newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            try:
                values: dict[str, Any] = {name: float(row[name]) for name in features}
            except (KeyError, ValueError):
                continue
            values["label"] = row.get("label", "")
            rows.append(values)
    return rows


def _grid(values: Sequence[float], log: bool, n: int = 80) -> list[float]:
    lo, hi = min(values), max(values)
    if log:
        lo, hi = math.log10(max(lo, 1e-9)), math.log10(max(hi, 1e-9))
        if hi <= lo:
            hi = lo + 1
        return [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    if hi <= lo:
        hi = lo + 1
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def plot_decision_map(model_path: str | Path, data_path: str | Path, output: str | Path) -> tuple[str, str]:
    """Draw the decision map of ``model_path`` with the rows of ``data_path``.

    Returns the two features drawn.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError('drawing needs matplotlib: pip install "adaptive_pool[plot]"') from exc
    model = read_model_file(model_path)
    usage = feature_usage(model)
    if len(usage) < 2:
        raise RuntimeError("the model splits on fewer than two features: nothing to map")
    x_name = usage[0][0]
    # cpu_ratio and wait_ratio are one quantity (they add up to 1): a map
    # over both would be a line.
    y_name = next(name for name, _ in usage[1:] if _SAME_AXIS.get(x_name) != name)
    rows = _rows(Path(data_path), model.features)
    if not rows:
        raise RuntimeError(f"no usable rows in {data_path}")
    medians: Mapping[str, float] = {
        name: sorted(r[name] for r in rows)[len(rows) // 2] for name in model.features
    }
    xs = _grid([r[x_name] for r in rows], x_name in _LOG_FEATURES)
    ys = _grid([r[y_name] for r in rows], y_name in _LOG_FEATURES)
    classes = list(model.classes)
    grid = []
    for y in ys:
        line = []
        for x in xs:
            features = dict(medians)
            features[x_name], features[y_name] = x, y
            line.append(classes.index(model.predict(features)))
        grid.append(line)

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = ListedColormap([_COLOURS.get(c, "#999999") for c in classes])
    ax.pcolormesh(xs, ys, grid, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, alpha=0.25, shading="auto")
    for label in classes:
        points = [r for r in rows if r["label"] == label]
        ax.scatter(
            [r[x_name] for r in points],
            [r[y_name] for r in points],
            s=14,
            c=_COLOURS.get(label, "#999999"),
            edgecolors="black",
            linewidths=0.3,
            label=f"{label} (measured fastest, {len(points)} rows)",
        )
    if x_name in _LOG_FEATURES:
        ax.set_xscale("log")
    if y_name in _LOG_FEATURES:
        ax.set_yscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(f"{Path(model_path).name}: route by {x_name} and {y_name}\n(shade: model; other features at median)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return x_name, y_name

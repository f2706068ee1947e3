"""Exporting fitted scikit-learn trees to the JSON the runtime evaluates.

A model is written as three files side by side:

* ``<name>.json``: the trees' arrays plus metadata, read by
  :mod:`adaptive_pool._model` in pure Python (the only file the runtime reads);
* ``<name>.joblib``: the fitted scikit-learn estimator and its metadata, for
  people who want to inspect or refit it (never loaded by the runtime);
* ``<name>.metadata.json``: the metadata alone, for humans and tools.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._model import (
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    ModelPolicy,
    parse_model,
    resolve_model,
)
from .._profile import FEATURE_SCHEMA_VERSION, MODEL_FEATURES

__all__ = ["check_export", "export_dict", "model_info", "save_model", "sidecar_paths"]


def _trees_of(estimator: Any) -> list[Any]:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    if isinstance(estimator, DecisionTreeClassifier):
        return [estimator]
    if isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier)):
        return list(estimator.estimators_)
    raise TypeError(f"cannot export {type(estimator).__name__}: use a decision tree or a forest of them")


def _leaf_probabilities(tree: Any, n_classes: int) -> list[list[float]]:
    """Each node's ``predict_proba`` output, computed as this scikit-learn does.

    scikit-learn 1.4 and later store class fractions in ``tree_.value`` and
    return them as they are; earlier versions store weighted counts and
    divide by their sum (0 sums divide by 1).
    """
    import numpy as np
    import sklearn

    value = np.asarray(tree.tree_.value[:, 0, :n_classes], dtype=np.float64)
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) < (1, 4):
        normalizer = value.sum(axis=1)[:, np.newaxis]
        normalizer[normalizer == 0.0] = 1.0
        value = value / normalizer
    return [[float(p) for p in row] for row in value]


def export_dict(
    estimator: Any, metadata: Mapping[str, Any] | None = None, derived: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON-ready form of a fitted tree or forest classifier.

    ``value`` holds each node's class probabilities exactly as the tree's
    ``predict_proba`` gives them; the runtime averages them over the trees
    in the same order as scikit-learn, so predictions match bit for bit.
    """
    n_inputs = len(MODEL_FEATURES) + len(derived)
    if getattr(estimator, "n_features_in_", n_inputs) != n_inputs:
        raise ValueError(f"the estimator takes {estimator.n_features_in_} inputs, not {n_inputs}")
    trees = []
    n_classes = len(estimator.classes_)
    for tree in _trees_of(estimator):
        t = tree.tree_
        if t.n_outputs != 1:
            raise ValueError("only single-output classifiers can be exported")
        trees.append(
            {
                "children_left": [int(v) for v in t.children_left],
                "children_right": [int(v) for v in t.children_right],
                "feature": [int(v) if l != -1 else -2 for v, l in zip(t.feature, t.children_left)],
                # repr round-trips every double exactly through JSON
                "threshold": [float(v) for v in t.threshold],
                "value": _leaf_probabilities(tree, n_classes),
            }
        )
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "schema_version": FEATURE_SCHEMA_VERSION,
        "features": list(MODEL_FEATURES),
        "derived": list(derived),
        "classes": [str(c) for c in estimator.classes_],
        "kind": type(estimator).__name__,
        "trees": trees,
        "metadata": dict(metadata or {}),
    }


def check_export(estimator: Any, policy: ModelPolicy, X: Sequence[Sequence[float]]) -> None:
    """Raise unless ``policy`` predicts exactly what ``estimator`` does on ``X``."""
    import numpy as np

    Xa = np.asarray(X, dtype=np.float64)
    proba = estimator.predict_proba(Xa)
    labels = estimator.predict(Xa)
    for i, row in enumerate(Xa.tolist()):
        ours = policy.predict_proba(row)
        if ours != [float(p) for p in proba[i]]:
            raise AssertionError(f"export differs on row {i}: {ours} != {list(proba[i])}")
        if policy.predict(row) != str(labels[i]):
            raise AssertionError(f"export predicts {policy.predict(row)} on row {i}, sklearn {labels[i]}")


def sidecar_paths(json_path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """``(model.json, model.joblib, model.metadata.json)`` for a model path."""
    p = Path(json_path)
    if p.suffix != ".json":
        p = p.with_suffix(".json")
    return p, p.with_suffix(".joblib"), p.with_name(p.stem + ".metadata.json")


def save_model(
    estimator: Any, json_path: str | os.PathLike[str], metadata: Mapping[str, Any], derived: Sequence[str] = ()
) -> Path:
    """Write the JSON export, the joblib file and the metadata; return the JSON path.

    Each file is written to a temporary name and renamed, so a running
    program never reads a half-written model.
    """
    import joblib

    model_json, model_joblib, meta_json = sidecar_paths(json_path)
    model_json.parent.mkdir(parents=True, exist_ok=True)
    data = export_dict(estimator, metadata, derived)
    parse_model(json.loads(json.dumps(data)), str(model_json))  # refuse to write what we could not read
    _atomic_text(meta_json, json.dumps(dict(metadata), indent=2, sort_keys=True) + "\n")
    tmp = model_joblib.with_name(model_joblib.name + ".tmp")
    joblib.dump({"estimator": estimator, "metadata": dict(metadata)}, tmp)
    os.replace(tmp, model_joblib)
    _atomic_text(model_json, json.dumps(data, separators=(",", ":")) + "\n")
    return model_json


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_info(model: Any = None) -> dict[str, Any]:
    """Which model ``AutoExecutor(model=model)`` uses: origin, path, metadata."""
    policy, origin, path = resolve_model(model)
    info: dict[str, Any] = {"origin": origin, "path": path, "source": policy.source}
    if isinstance(policy, ModelPolicy):
        info["metadata"] = policy.metadata
        info["classes"] = list(policy.classes)
    return info

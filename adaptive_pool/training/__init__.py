"""Retraining the route model on this machine (the only code that uses scikit-learn).

The steps, also behind ``adaptive-pool collect``, ``train`` and ``retrain``:

>>> from adaptive_pool import training
>>> csv_path = training.collect("timings.csv", quick=True)      # doctest: +SKIP
>>> result = training.train(csv_path, "model.json")             # doctest: +SKIP
>>> training.retrain(quick=True)   # both, into the user data directory  # doctest: +SKIP

Importing this package is cheap: scikit-learn is imported only by
:func:`train` and :func:`retrain`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["collect", "default_data_path", "model_info", "retrain", "train"]


def collect(output: Any, **kwargs: Any) -> Path:
    """Collect labelled timings into a CSV file; see :func:`.collect.collect`."""
    from .collect import collect as _collect

    return _collect(output, **kwargs)


def train(data: Any, output: Any = None, **kwargs: Any) -> Any:
    """Fit, evaluate and export a model; see :func:`.train.train`."""
    from .train import train as _train

    return _train(data, output, **kwargs)


def retrain(quick: bool = False, output: Any = None, **kwargs: Any) -> Any:
    """Collect on this machine, train, and install the model; see :func:`.train.retrain`."""
    from .train import retrain as _retrain

    return _retrain(quick=quick, output=output, **kwargs)


def model_info(model: Any = None) -> dict[str, Any]:
    """Which model ``AutoExecutor(model=model)`` would use, with its metadata."""
    from .export import model_info as _info

    return _info(model)


def default_data_path(quick: bool = False) -> Path:
    """Where ``retrain`` keeps its collected timings (in the user data directory)."""
    from .._model import user_data_dir

    return user_data_dir() / "training" / ("timings-quick.csv" if quick else "timings.csv")

"""Finding, loading and evaluating model files, in pure Python.

The runtime never imports scikit-learn, joblib or numpy: a trained model is
exported (by :mod:`adaptive_pool.training.export`) to a JSON file holding the
arrays of its decision trees, and :class:`ModelPolicy` walks those trees
here.  scikit-learn compares ``X[:, f] <= threshold`` after casting ``X`` to
float32, so feature values are rounded to float32 before each comparison;
the exported model then predicts exactly what the fitted one does.

Which model runs (:func:`load_policy`), first match wins:

1. ``AutoExecutor(model=...)``: a path to a model JSON file (or an object
   that already implements the :class:`~adaptive_pool.Policy` interface);
2. the file named by the ``ADAPTIVE_POOL_MODEL`` environment variable;
3. the user's retrained model, ``model.json`` in the user data directory
   (``platformdirs.user_data_dir("adaptive_pool")``, which honours
   ``XDG_DATA_HOME`` on Linux), written by ``adaptive-pool retrain``;
4. the default model shipped with the package;
5. the hand-written :class:`~adaptive_pool.HeuristicPolicy`.

Having no retrained model is normal and silent.  A file that was named
(1, 2) or found (3, 4) but cannot be used (missing, empty, truncated, not a
model file, made for another feature schema, other features) gives one
``warnings.warn`` naming the file and the reason, and the search goes on.
Nothing here ever unpickles: a ``.joblib`` or pickle file, even one named
explicitly, is refused with a warning asking for its JSON export, so a
malicious ``model.joblib`` lying around can never run.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._policy import Backend, Choice, HeuristicPolicy, Policy, Source, describe_work
from ._profile import FEATURE_SCHEMA_VERSION, MODEL_FEATURES

__all__ = [
    "MODEL_ENV_VAR",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ModelError",
    "ModelPolicy",
    "bundled_model_path",
    "load_policy",
    "parse_model",
    "read_model_file",
    "resolve_model",
    "user_model_path",
]

#: Environment variable naming a model file.
MODEL_ENV_VAR = "ADAPTIVE_POOL_MODEL"
#: The ``"format"`` value of every model file.
MODEL_FORMAT = "adaptive_pool-model"
#: Bumped when the file layout changes (not the features: see the schema).
MODEL_FORMAT_VERSION = 1
#: File name of the retrained model in the user data directory.
USER_MODEL_NAME = "model.json"
#: File name of the default model among the package data.
BUNDLED_MODEL_NAME = "default_model.json"
#: Files larger than this are not model files (a guard against reading a
#: multi-gigabyte file by mistake).
_MAX_MODEL_BYTES = 64 * 1024 * 1024

_BACKENDS: tuple[Backend, ...] = ("inline", "thread", "process")
_PICKLE_MAGIC = (b"\x80", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"PK\x03\x04")


#: Inputs a model may add to :data:`MODEL_FEATURES`, each computed from the
#: features by a fixed formula here (the trainer calls the same code, so
#: training and run time agree).  A tree cannot divide one feature by
#: another, and some boundaries between routes are ratios.
DERIVED_FEATURES: dict[str, str] = {
    "transfer_per_wall": "bytes moved per call (arguments + result) over the call's wall time",
}


def derived_value(name: str, features: Mapping[str, float]) -> float:
    """The value of the derived input ``name`` (see :data:`DERIVED_FEATURES`)."""
    if name == "transfer_per_wall":
        moved = max(float(features.get("arg_bytes", 0.0)), 0.0) + max(float(features.get("result_bytes", 0.0)), 0.0)
        return moved / max(float(features.get("wall_s", 0.0)), 1e-7)
    raise KeyError(name)


def model_inputs(features: Mapping[str, float], derived: Sequence[str] = ()) -> list[float]:
    """A model's input row (float64): :data:`MODEL_FEATURES` in order, then ``derived``."""
    row = [float(features.get(name, 0.0)) for name in MODEL_FEATURES]
    row.extend(derived_value(name, features) for name in derived)
    return row


class ModelError(ValueError):
    """A model file cannot be used; the message says why."""


def _f32(x: float) -> float:
    """``x`` rounded to float32, as scikit-learn's trees see it."""
    if math.isnan(x):  # NaN: trees trained without missing values never see one
        x = 0.0
    try:
        return float(struct.unpack("f", struct.pack("f", x))[0])
    except OverflowError:
        return math.copysign(math.inf, x)


class _Tree:
    """One decision tree as flat arrays (scikit-learn's ``tree_`` layout)."""

    __slots__ = ("feature", "left", "proba", "right", "threshold")

    def __init__(self, data: Mapping[str, Any], n_features: int, n_classes: int) -> None:
        try:
            left = [int(v) for v in data["children_left"]]
            right = [int(v) for v in data["children_right"]]
            feature = [int(v) for v in data["feature"]]
            threshold = [float(v) for v in data["threshold"]]
            value = [[float(p) for p in row] for row in data["value"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"is corrupt (a tree lacks {exc})") from None
        n = len(left)
        if n == 0 or not (len(right) == len(feature) == len(threshold) == len(value) == n):
            raise ModelError("is corrupt (a tree's arrays differ in length)")
        for node in range(n):
            lo, hi = left[node], right[node]
            if lo == -1 and hi == -1:
                if len(value[node]) != n_classes:
                    raise ModelError("is corrupt (a leaf has the wrong number of classes)")
                continue
            # Children always come after their parent: walking ends.
            if not (node < lo < n and node < hi < n) or not 0 <= feature[node] < n_features:
                raise ModelError("is corrupt (a tree node points outside the tree)")
            if threshold[node] != threshold[node]:
                raise ModelError("is corrupt (a threshold is not a number)")
        self.left = left
        self.right = right
        self.feature = feature
        self.threshold = threshold
        # The exporter stores each node's class probabilities exactly as the
        # fitted tree's predict_proba returns them for a sample in that leaf.
        proba = value
        self.proba = proba

    def leaf_proba(self, x: Sequence[float]) -> list[float]:
        node = 0
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        while left[node] != -1:
            node = left[node] if x[feature[node]] <= threshold[node] else right[node]
        return self.proba[node]


class ModelPolicy:
    """A policy backed by an exported tree ensemble (see the module docstring).

    ``predict_proba(features)`` gives the probability of each class in
    :attr:`classes`; :meth:`choose` picks the most probable allowed route.
    """

    source: Source = "model"

    def __init__(self, data: Mapping[str, Any], path: str | None = None) -> None:
        self.path = path
        self.features: tuple[str, ...] = tuple(data["features"])
        self.derived: tuple[str, ...] = tuple(data.get("derived") or ())
        self.classes: tuple[str, ...] = tuple(data["classes"])
        self.metadata: dict[str, Any] = dict(data.get("metadata") or {})
        n_classes = len(self.classes)
        n_inputs = len(self.features) + len(self.derived)
        self._trees = [_Tree(t, n_inputs, n_classes) for t in data["trees"]]
        if not self._trees:
            raise ModelError("is corrupt (it has no trees)")

    def vector(self, features: Mapping[str, float]) -> list[float]:
        """The model's input row: features then derived inputs, rounded to float32."""
        return [_f32(v) for v in model_inputs(features, self.derived)]

    def predict_proba(self, features: Mapping[str, float] | Sequence[float]) -> list[float]:
        """Class probabilities, averaged over the trees as scikit-learn does."""
        if isinstance(features, Mapping):
            x = self.vector(features)
        else:
            x = [_f32(float(v)) for v in features]
        if len(self._trees) == 1:
            return list(self._trees[0].leaf_proba(x))
        total = [0.0] * len(self.classes)
        for tree in self._trees:
            for i, p in enumerate(tree.leaf_proba(x)):
                total[i] += p
        n = float(len(self._trees))
        return [p / n for p in total]

    def predict(self, features: Mapping[str, float] | Sequence[float]) -> str:
        """The most probable class (the first one on ties, like numpy's argmax)."""
        proba = self.predict_proba(features)
        best = 0
        for i, p in enumerate(proba):
            if p > proba[best]:
                best = i
        return self.classes[best]

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        """The most probable route among ``allowed``; confidence is its probability."""
        proba = self.predict_proba(features)
        best: Backend | None = None
        best_p = -1.0
        for name, p in zip(self.classes, proba):
            if name in allowed and p > best_p:
                best, best_p = name, p  # type: ignore[assignment]
        if best is None:
            best, best_p = "thread", 0.0
        name = Path(self.path).name if self.path else "model"
        return Choice(best, best_p, f"{name}: {best} {best_p:.0%} ({describe_work(features)})")

    def __repr__(self) -> str:
        return f"<ModelPolicy {self.path or '(in memory)'} trees={len(self._trees)}>"


# --------------------------------------------------------------------------
# Reading files


def parse_model(data: Any, path: str | None = None) -> ModelPolicy:
    """Check a decoded model file and build its policy; :class:`ModelError` if unusable."""
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ModelError("is not an adaptive_pool model file (no 'format': 'adaptive_pool-model')")
    fmt = data.get("format_version")
    if not isinstance(fmt, int) or fmt > MODEL_FORMAT_VERSION:
        raise ModelError(
            f"has file format version {fmt!r}, newer than this adaptive_pool reads "
            f"({MODEL_FORMAT_VERSION}); upgrade adaptive_pool or retrain"
        )
    schema = data.get("schema_version")
    if not isinstance(schema, int):
        raise ModelError("is not an adaptive_pool model file (no feature schema version)")
    if schema > FEATURE_SCHEMA_VERSION:
        raise ModelError(
            f"was trained with feature schema {schema}, newer than this adaptive_pool's "
            f"({FEATURE_SCHEMA_VERSION}); upgrade adaptive_pool or run 'adaptive-pool retrain'"
        )
    if schema != FEATURE_SCHEMA_VERSION:
        raise ModelError(
            f"was trained with feature schema {schema}, older than this adaptive_pool's "
            f"({FEATURE_SCHEMA_VERSION}); run 'adaptive-pool retrain'"
        )
    features = data.get("features")
    if not isinstance(features, list) or tuple(features) != MODEL_FEATURES:
        raise ModelError(
            f"uses features {features!r}, not this adaptive_pool's {list(MODEL_FEATURES)!r}; "
            "run 'adaptive-pool retrain'"
        )
    derived = data.get("derived", [])
    if not isinstance(derived, list) or any(d not in DERIVED_FEATURES for d in derived):
        raise ModelError(
            f"uses derived inputs {derived!r} this adaptive_pool does not know; upgrade or retrain"
        )
    classes = data.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or any(c not in _BACKENDS for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelError(f"is corrupt (classes {classes!r} are not routes)")
    if not isinstance(data.get("trees"), list):
        raise ModelError("is corrupt (no list of trees)")
    return ModelPolicy(data, path)


def read_model_file(path: str | os.PathLike[str]) -> ModelPolicy:
    """Read and check one model JSON file; :class:`ModelError` says why not."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(_MAX_MODEL_BYTES + 1)
    except FileNotFoundError:
        raise ModelError("does not exist") from None
    except IsADirectoryError:
        raise ModelError("is a directory, not a model file") from None
    except OSError as exc:
        raise ModelError(f"cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise ModelError("is empty")
    if len(raw) > _MAX_MODEL_BYTES:
        raise ModelError("is too large to be a model file")
    if p.suffix in (".joblib", ".pkl", ".pickle") or raw.startswith(_PICKLE_MAGIC):
        raise ModelError(
            "is a joblib/pickle file, which adaptive_pool never loads (unpickling runs code); "
            "pass the JSON export written beside it (model.json)"
        )
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise ModelError("is not a model file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        body = text.strip()
        opened = body[:1] in ("{", "[")
        if exc.pos >= len(body) or "Unterminated" in exc.msg or (opened and body[-1:] not in ("}", "]")):
            raise ModelError("is truncated (the JSON ends early)") from None
        raise ModelError(f"is not a model file (invalid JSON: {exc.msg} at line {exc.lineno})") from None
    return parse_model(data, str(p))


# Parsed files, process-wide: constructing executors stays cheap.
_CACHE_LOCK = threading.Lock()
_CACHE: dict[str, tuple[tuple[int, int], ModelPolicy]] = {}


def _load_cached(path: Path) -> ModelPolicy:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError("does not exist") from None
    except OSError as exc:
        raise ModelError(f"cannot be read ({exc.strerror or exc})") from None
    key = str(path.resolve()) if path.exists() else str(path)
    stamp = (st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    policy = read_model_file(path)
    with _CACHE_LOCK:
        _CACHE[key] = (stamp, policy)
        if len(_CACHE) > 32:
            _CACHE.pop(next(iter(_CACHE)))
    return policy


# --------------------------------------------------------------------------
# Where models live


def user_data_dir() -> Path:
    """This user's data directory for adaptive_pool (``XDG_DATA_HOME`` honoured).

    It is ``platformdirs.user_data_dir("adaptive_pool", appauthor=False)``.
    On Linux that is the XDG rule below, written out because importing
    platformdirs takes ~4 ms on the way to the first decision (a test checks
    the two agree).
    """
    if sys.platform.startswith("linux") and not (
        os.environ.get("ANDROID_DATA") == "/data" and os.environ.get("ANDROID_ROOT") == "/system"
    ):
        base = os.environ.get("XDG_DATA_HOME", "").strip() or os.path.expanduser("~/.local/share")
        return Path(base) / "adaptive_pool"
    import platformdirs

    return Path(platformdirs.user_data_dir("adaptive_pool", appauthor=False))


def user_model_path() -> Path:
    """Where ``adaptive-pool retrain`` writes, and the search finds, the user's model."""
    return user_data_dir() / USER_MODEL_NAME


def bundled_model_path() -> Path | None:
    """The default model shipped with the package, or ``None`` if absent.

    Installed, it is package data of ``adaptive_pool.models``; run from a
    source checkout that is not installed, it is ``<repo>/models/``.  Plain
    paths are tried first: ``importlib.resources`` costs milliseconds to
    import, on the way to the first decision.
    """
    here = Path(__file__).resolve().parent
    for candidate_path in (here / "models" / BUNDLED_MODEL_NAME, here.parent / "models" / BUNDLED_MODEL_NAME):
        if candidate_path.is_file():
            return candidate_path
    try:
        from importlib import resources

        candidate = resources.files("adaptive_pool.models").joinpath(BUNDLED_MODEL_NAME)
        if candidate.is_file():
            return Path(str(candidate))
    except (ImportError, TypeError, OSError, ValueError):
        pass
    return None


def resolve_model(model: Any = None) -> tuple[Policy, str, str | None]:
    """``(policy, origin, path)`` by the search order of the module docstring.

    ``origin`` is ``"argument"``, ``"environment"``, ``"user"``, ``"bundled"``
    or ``"heuristic"``.  Warns once per unusable file, never raises for one.
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        if isinstance(model, Policy):
            return model, "argument", getattr(model, "path", None)
        warnings.warn(
            f"adaptive_pool: model={model!r} is neither a path nor a policy; ignoring it",
            stacklevel=3,
        )
        model = None
    candidates: list[tuple[str, Path, bool]] = []  # (origin, path, silent if missing)
    if model is not None:
        candidates.append(("argument", Path(os.fspath(model)).expanduser(), False))
    env = os.environ.get(MODEL_ENV_VAR, "").strip()
    if env:
        candidates.append(("environment", Path(env).expanduser(), False))
    try:
        candidates.append(("user", user_model_path(), True))
    except Exception as exc:  # noqa: BLE001 - platformdirs missing or broken: not fatal
        warnings.warn(f"adaptive_pool: cannot locate the user data directory ({exc})", stacklevel=3)
    bundled = bundled_model_path()
    if bundled is not None:
        candidates.append(("bundled", bundled, True))
    for origin, path, silent_if_missing in candidates:
        if silent_if_missing and not path.exists():
            continue
        try:
            policy = _load_cached(path)
        except ModelError as exc:
            _warn_bad(origin, path, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - anything a broken file can provoke
            _warn_bad(origin, path, f"cannot be used ({type(exc).__name__}: {exc})")
            continue
        return policy, origin, str(path)
    return HeuristicPolicy(), "heuristic", None


_ORIGIN_WORDS = {
    "argument": "model file given to AutoExecutor(model=...)",
    "environment": f"model file named by ${MODEL_ENV_VAR}",
    "user": "retrained model file",
    "bundled": "bundled default model file",
}


def _warn_bad(origin: str, path: Path, reason: str) -> None:
    warnings.warn(
        f"adaptive_pool: ignoring the {_ORIGIN_WORDS.get(origin, 'model file')} {str(path)!r}: "
        f"it {reason}. Falling back to the next model in the search order.",
        UserWarning,
        stacklevel=4,
    )


def load_policy(model: Any = None) -> Policy:
    """The policy :class:`~adaptive_pool.AutoExecutor` decides with (never raises)."""
    try:
        return resolve_model(model)[0]
    except Exception as exc:  # noqa: BLE001 - submit() must never fail for a model
        warnings.warn(f"adaptive_pool: model search failed ({exc}); using the heuristic", stacklevel=2)
        return HeuristicPolicy()

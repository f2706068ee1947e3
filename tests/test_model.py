"""Model files: the pure-Python evaluator, the search order, and every way a file can be bad."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from adaptive_pool import AutoExecutor, HeuristicPolicy, _model
from adaptive_pool._model import (
    MODEL_ENV_VAR,
    ModelPolicy,
    load_policy,
    parse_model,
    resolve_model,
)
from adaptive_pool._profile import FEATURE_SCHEMA_VERSION, MODEL_FEATURES

REPO = Path(__file__).resolve().parent.parent


def leaf_model(backend: str = "thread", tag: str = "") -> dict[str, Any]:
    """A valid model file that always answers ``backend`` (one leaf)."""
    classes = ["inline", "process", "thread"]
    return {
        "format": "adaptive_pool-model",
        "format_version": 1,
        "schema_version": FEATURE_SCHEMA_VERSION,
        "features": list(MODEL_FEATURES),
        "classes": classes,
        "kind": "DecisionTreeClassifier",
        "trees": [
            {
                "children_left": [-1],
                "children_right": [-1],
                "feature": [-2],
                "threshold": [-2.0],
                "value": [[1.0 if c == backend else 0.0 for c in classes]],
            }
        ],
        "metadata": {"tag": tag},
    }


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env model, an empty user data directory, no bundled model."""
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(_model, "bundled_model_path", lambda: None)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def double(x: int) -> int:
    return 2 * x


# --------------------------------------------------------------------------
# Exported trees predict exactly what scikit-learn predicts


def _training_set(n: int = 400) -> tuple[Any, Any]:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(1)
    X = np.column_stack(
        [
            10 ** rng.uniform(-7, 0, n),  # wall_s
            10 ** rng.uniform(-7, 0, n),
            rng.uniform(0, 1, n),
            rng.uniform(0, 1, n),
            rng.choice([0.0, 0.5, 1.0, 0.3333333333333333, 0.1], n),
            rng.choice([-1.0, 32.0, 1e4, 8.4e6, 1e9 + 0.123], n),
            10 ** rng.uniform(1, 8, n),
            rng.choice([1.0, 2.0, 8.0], n),
        ]
    )
    y = np.where(X[:, 3] > 0.5, "thread", np.where(X[:, 0] < 1e-4, "inline", "process"))
    flip = rng.random(n) < 0.15
    y[flip] = rng.choice(["inline", "thread", "process"], flip.sum())
    return X, y


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["tree", "forest"])
def test_export_predicts_exactly_what_sklearn_predicts(kind: str) -> None:
    pytest.importorskip("sklearn")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    from adaptive_pool.training.export import check_export, export_dict

    X, y = _training_set()
    est = (
        DecisionTreeClassifier(max_depth=8, random_state=0)
        if kind == "tree"
        else RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0)
    )
    est.fit(X, y, sample_weight=1.0 + (X[:, 2] * 3))
    policy = parse_model(json.loads(json.dumps(export_dict(est))))
    proba = est.predict_proba(X)
    labels = est.predict(X)
    for i, row in enumerate(X.tolist()):
        assert policy.predict_proba(row) == proba[i].tolist()
        assert policy.predict(row) == labels[i]
        # the dict form the runtime uses gives the same answer
        assert policy.predict_proba(dict(zip(MODEL_FEATURES, row))) == proba[i].tolist()
    check_export(est, policy, X)  # the helper train() relies on agrees


def test_values_are_compared_in_float32_as_sklearn_does() -> None:
    # A threshold exactly at a float32 value; x a hair above it in float64
    # rounds onto it in float32 and must go left, as in scikit-learn.
    t32 = struct.unpack("f", struct.pack("f", 0.1))[0]
    x = t32 + 1e-12
    assert x > t32
    data = leaf_model()
    data["trees"] = [
        {
            "children_left": [1, -1, -1],
            "children_right": [2, -1, -1],
            "feature": [0, -2, -2],
            "threshold": [t32, -2.0, -2.0],
            "value": [[1, 1, 1], [1, 0, 0], [0, 0, 1]],
        }
    ]
    policy = parse_model(data)
    features = dict.fromkeys(MODEL_FEATURES, 0.0)
    features["wall_s"] = x
    assert policy.predict(features) == "inline"
    features["wall_s"] = 0.2
    assert policy.predict(features) == "thread"


def test_choose_picks_most_probable_allowed_route() -> None:
    data = leaf_model()
    data["trees"][0]["value"] = [[0.2, 0.5, 0.3]]  # inline, process, thread
    policy = parse_model(data, "/x/m.json")
    f = dict.fromkeys(MODEL_FEATURES, 0.001)
    choice = policy.choose(f, ["inline", "thread", "process"])
    assert (choice.backend, choice.confidence) == ("process", 0.5)
    choice = policy.choose(f, ["inline", "thread"])
    assert (choice.backend, choice.confidence) == ("thread", 0.3)
    assert policy.source == "model"


# --------------------------------------------------------------------------
# Bad files: one warning naming the file and the reason, then the next fallback


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = json.dumps(leaf_model())
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp / "nope.json", "does not exist")
    (tmp / "empty.json").write_text("")
    cases["empty"] = (tmp / "empty.json", "is empty")
    (tmp / "trunc.json").write_text(good[: len(good) // 2])
    cases["truncated"] = (tmp / "trunc.json", "truncated")
    cases["not the format"] = (write(tmp / "other.json", {"hello": [1, 2]}), "not an adaptive_pool model file")
    (tmp / "garbage.json").write_text("this is { not json")
    cases["not json"] = (tmp / "garbage.json", "not a model file")
    newer = leaf_model()
    newer["schema_version"] = FEATURE_SCHEMA_VERSION + 1
    cases["newer schema"] = (write(tmp / "newer.json", newer), "newer")
    older = leaf_model()
    older["schema_version"] = FEATURE_SCHEMA_VERSION - 1
    cases["older schema"] = (write(tmp / "older.json", older), "older")
    other = leaf_model()
    other["features"] = list(MODEL_FEATURES[:-1]) + ["something_else"]
    cases["mismatched features"] = (write(tmp / "features.json", other), "features")
    corrupt = leaf_model()
    corrupt["trees"][0]["children_left"] = [5]
    corrupt["trees"][0]["children_right"] = [7]
    corrupt["trees"][0]["feature"] = [0]
    cases["corrupt tree"] = (write(tmp / "corrupt.json", corrupt), "corrupt")
    (tmp / "model.joblib").write_bytes(pickle.dumps({"a": 1}))
    cases["joblib"] = (tmp / "model.joblib", "never loads")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "truncated",
        "not the format",
        "not json",
        "newer schema",
        "older schema",
        "mismatched features",
        "corrupt tree",
        "joblib",
    ],
)
def test_bad_model_argument_warns_once_and_falls_back(isolated: Path, case: str) -> None:
    path, reason = _bad_files(isolated)[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy, origin, _ = resolve_model(str(path))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert str(path) in messages[0] and reason in messages[0]
    assert origin == "heuristic" and isinstance(policy, HeuristicPolicy)


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "newer schema", "mismatched features"])
def test_bad_env_and_user_files_warn_and_fall_back(isolated: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    path, reason = _bad_files(isolated)[case]
    # bad env file -> falls to the user's model
    user = write(isolated / "xdg" / "adaptive_pool" / "model.json", leaf_model(tag="user"))
    monkeypatch.setenv(MODEL_ENV_VAR, str(path))
    with pytest.warns(UserWarning) as caught:
        _, origin, found = resolve_model()
    assert len(caught) == 1 and str(path) in str(caught[0].message) and reason in str(caught[0].message)
    assert (origin, found) == ("user", str(user))
    # bad user file -> falls to the heuristic (no bundled model here)
    monkeypatch.delenv(MODEL_ENV_VAR)
    if case == "missing":
        user.unlink()  # a missing user model is normal: silent
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert resolve_model()[1] == "heuristic"
        return
    user.write_bytes(path.read_bytes())
    with pytest.warns(UserWarning) as caught:
        _, origin, _ = resolve_model()
    assert len(caught) == 1 and str(user) in str(caught[0].message) and reason in str(caught[0].message)
    assert origin == "heuristic"


@pytest.mark.timeout(30)
def test_submit_never_raises_for_a_bad_model(isolated: Path) -> None:
    bad = isolated / "trunc.json"
    bad.write_text('{"format": "adaptive_pool-model", "trees": [')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with AutoExecutor(model=str(bad)) as ex:
            assert [f.result(timeout=10) for f in [ex.submit(double, i) for i in range(6)]] == [0, 2, 4, 6, 8, 10]
            decision = ex.decision_for(double)
    assert [str(bad) in str(w.message) and "truncated" in str(w.message) for w in caught] == [True]
    assert decision is not None and decision.source == "heuristic"


def test_no_retrained_model_is_silent(isolated: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, origin, path = resolve_model()
    assert origin == "heuristic" and path is None


# --------------------------------------------------------------------------
# Pickles never run


_MARKER_SCRIPT = """
import os, pickle
class Boom:
    def __reduce__(self):
        return (os.mkdir, ({marker!r},))
data = pickle.dumps(Boom())
for name in ("model.joblib", "model.pkl", "model.json", "default_model.json"):
    open(name, "wb").write(data)
"""


def test_malicious_pickles_in_the_working_directory_never_run(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = isolated / "PWNED"
    subprocess.run([sys.executable, "-c", _MARKER_SCRIPT.format(marker=str(marker))], cwd=isolated, check=True)
    # The default search ignores the working directory entirely.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_model()[1] == "heuristic"
    # Even named explicitly, a pickle (by suffix or by content) is refused.
    for name in ("model.joblib", "model.pkl", "model.json"):
        with pytest.warns(UserWarning, match="never loads"):
            assert resolve_model(name)[1] == "heuristic"
    monkeypatch.setenv(MODEL_ENV_VAR, "model.joblib")
    with pytest.warns(UserWarning, match="never loads"):
        assert isinstance(load_policy(None), HeuristicPolicy)
    assert not marker.exists()


# --------------------------------------------------------------------------
# Search order and caching


def test_search_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arg = write(isolated / "arg.json", leaf_model(tag="arg"))
    env = write(isolated / "env.json", leaf_model(tag="env"))
    user = write(isolated / "xdg" / "adaptive_pool" / "model.json", leaf_model(tag="user"))
    bundled = write(isolated / "bundled" / "default_model.json", leaf_model(tag="bundled"))
    monkeypatch.setattr(_model, "bundled_model_path", lambda: bundled)
    monkeypatch.setenv(MODEL_ENV_VAR, str(env))

    def tag(model: Any = None) -> tuple[str, str]:
        policy, origin, _ = resolve_model(model)
        return origin, getattr(policy, "metadata", {}).get("tag", "")

    assert tag(str(arg)) == ("argument", "arg")
    assert tag(arg) == ("argument", "arg")  # a Path works too
    assert tag() == ("environment", "env")
    monkeypatch.delenv(MODEL_ENV_VAR)
    assert tag() == ("user", "user")
    assert _model.user_model_path() == user
    user.unlink()
    assert tag() == ("bundled", "bundled")
    monkeypatch.setattr(_model, "bundled_model_path", lambda: None)
    assert tag() == ("heuristic", "")
    # A policy object passes through untouched.
    h = HeuristicPolicy()
    assert resolve_model(h)[0] is h


def test_parsed_files_are_cached_until_they_change(isolated: Path) -> None:
    path = write(isolated / "m.json", leaf_model(tag="one"))
    first = load_policy(str(path))
    assert load_policy(str(path)) is first
    write(path, leaf_model(tag="two, longer"))
    second = load_policy(str(path))
    assert second is not first and isinstance(second, ModelPolicy) and second.metadata["tag"] == "two, longer"


@pytest.mark.timeout(30)
def test_executor_decides_with_the_named_model(isolated: Path) -> None:
    path = write(isolated / "m.json", leaf_model("inline"))
    with AutoExecutor(model=str(path)) as ex:
        assert list(ex.map(double, range(20))) == [2 * i for i in range(20)]
        decision = ex.decision_for(double)
    assert decision is not None
    assert (decision.source, decision.backend, decision.confidence) == ("model", "inline", 1.0)
    assert "m.json" in decision.reason


# --------------------------------------------------------------------------
# The bundled default model


def test_bundled_model_is_found_and_valid() -> None:
    path = _model.bundled_model_path()
    assert path is not None and path.name == "default_model.json"
    policy = _model.read_model_file(path)
    meta = policy.metadata
    assert meta["feature_names"] == list(MODEL_FEATURES)
    scores = meta["scores"]["overall"]
    # The shipped model beats the heuristic on families it never saw.
    assert scores["model"]["regret"] < scores["heuristic"]["regret"]
    # built from models/, not a hand-kept copy
    assert (REPO / "models" / "default_model.json").read_bytes() == path.read_bytes()


def test_runtime_imports_no_sklearn_joblib_or_numpy(tmp_path: Path) -> None:
    code = (
        "import sys, adaptive_pool\n"
        "from adaptive_pool._model import load_policy\n"
        "p = load_policy()\n"
        "from adaptive_pool import AutoExecutor\n"
        "with AutoExecutor() as ex: list(ex.map(abs, range(10)))\n"
        "bad = [m for m in ('sklearn', 'joblib', 'numpy') if m in sys.modules]\n"
        "print(type(p).__name__, bad)\n"
    )
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path))
    env.pop(MODEL_ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1) == ["ModelPolicy", "[]\n"]


def test_derived_inputs_are_computed_by_the_runtime_and_unknown_ones_refused(isolated: Path) -> None:
    data = leaf_model()
    data["derived"] = ["transfer_per_wall"]
    data["trees"] = [
        {
            "children_left": [1, -1, -1],
            "children_right": [2, -1, -1],
            "feature": [len(MODEL_FEATURES), -2, -2],  # the derived input
            "threshold": [1e9, -2.0, -2.0],
            "value": [[1, 1, 1], [0, 1, 0], [0, 0, 1]],
        }
    ]
    policy = parse_model(data)
    f = dict.fromkeys(MODEL_FEATURES, 0.0)
    f.update(wall_s=0.01, arg_bytes=1e6, result_bytes=-1.0)  # 1e8 bytes/s: left
    assert policy.predict(f) == "process"
    f["result_bytes"] = 1e8  # 1e10 bytes/s: right
    assert policy.predict(f) == "thread"
    data["derived"] = ["from_the_future"]
    bad = write(isolated / "future.json", data)
    with pytest.warns(UserWarning, match="derived inputs"):
        assert resolve_model(str(bad))[1] == "heuristic"


@pytest.mark.parametrize("xdg", [None, "", "   ", "/tmp/xdg-data-home"])
def test_user_data_dir_is_platformdirs_answer(monkeypatch: pytest.MonkeyPatch, xdg: str | None) -> None:
    import platformdirs

    if xdg is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg)
    expected = Path(platformdirs.user_data_dir("adaptive_pool", appauthor=False))
    assert _model.user_data_dir() == expected

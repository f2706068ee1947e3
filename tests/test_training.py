"""Training: families, a tiny end-to-end collect/train run, retrain into the user data directory."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from adaptive_pool._model import MODEL_ENV_VAR, read_model_file
from adaptive_pool._profile import (
    FEATURE_SCHEMA_VERSION,
    MODEL_FEATURES,
    SAFETY_FEATURES,
)
from adaptive_pool.training import families as fam
from adaptive_pool.training.collect import (
    Settings,
    collect,
    csv_columns,
    metadata_path,
    read_rows,
)
from adaptive_pool.training.train import label_of, load_dataset, train

TINY = Settings(target_s=0.005, min_items=4, max_items=100, repeats=1, probe_items=2, variants=("inline", "thread", "process_c1"))
TINY_FAMILIES = ["py_loop", "wait_sleep", "tiny"]


def test_instances_are_unique_and_quick_is_a_subset() -> None:
    full = fam.instances()
    quick = fam.instances(quick=True)
    ids = [i.id for i in full]
    assert len(ids) == len(set(ids))
    assert {i.id for i in quick} < set(ids)
    assert {i.family.name for i in quick} == {f.name for f in fam.FAMILIES}
    assert len(fam.instances(replicas=2)) == 2 * len(full)


@pytest.mark.timeout(60)
def test_every_family_runs_returns_a_value_and_pickles() -> None:
    for family in fam.FAMILIES:
        params = family.grid[0]
        args = fam.Instance(family, params).args(2)
        assert len(args) == 2
        result = family.fn(*args[0])
        assert result is not None, family.name
        assert pickle.loads(pickle.dumps(family.fn)) is family.fn  # importable by name in workers
        pickle.dumps(result)


def test_workers_are_warmed_with_one_call_of_the_task() -> None:
    calls: list[tuple[int, str]] = []
    assert fam.warm_call(lambda *a: calls.append(a), (3, "x"), 0.0) == 0.0
    assert calls == [(3, "x")]


def test_labels_only_among_routes_on_offer() -> None:
    from adaptive_pool.training.train import offered

    waits = {"wall_s": 0.01, "cpu_s": 0.0001, "wait_ratio": 0.99, "arg_bytes": 100.0, "result_bytes": 16.0}
    times = {"inline": 1.0, "thread": 0.2, "process": 0.1}
    # Mostly waiting: the runtime never offers processes, so they cannot be the label.
    assert label_of(offered(waits, times)) == "thread"
    computes = dict(waits, cpu_s=0.01, wait_ratio=0.0, gil_hold=1.0, usable_cores=2.0)
    assert label_of(offered(computes, times)) == "process"


def test_label_ties_prefer_threads() -> None:
    assert label_of({"inline": 1.0, "thread": 1.05, "process": 0.98}) == "thread"
    assert label_of({"inline": 1.0, "thread": 2.0, "process": 0.5}) == "process"
    assert label_of({"inline": 1.0, "thread": 1.5}) == "inline"


@pytest.fixture(scope="module")
def tiny_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "timings.csv"
    collect(out, quick=True, families=TINY_FAMILIES, limit=4, settings=TINY, progress=False)
    return out


@pytest.mark.timeout(90)
def test_collect_writes_csv_with_header_and_metadata(tiny_collection: Path) -> None:
    with open(tiny_collection, newline="") as f:
        header = next(csv.reader(f))
    assert header == csv_columns()
    for name in MODEL_FEATURES + SAFETY_FEATURES + ("t_inline", "t_thread", "t_process_c1", "label"):
        assert name in header
    rows = read_rows(tiny_collection)
    assert len(rows) == 4
    assert {r["family"] for r in rows} <= set(TINY_FAMILIES)
    for row in rows:
        times = {b: float(row[f"time_{b}"]) for b in ("inline", "thread", "process") if row[f"time_{b}"]}
        assert row["label"] == min(times, key=times.get)
        assert float(row["usable_cores"]) >= 1
    meta = json.loads(metadata_path(tiny_collection).read_text())
    assert meta["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert meta["rows"] == 4 and meta["columns"] == header
    for key in ("machine", "started", "finished", "collector_version"):
        assert key in meta
    if hasattr(os, "getloadavg"):
        # How busy the machine was is part of what the timings mean.
        for key in ("load_average_start", "load_average_end"):
            assert len(meta[key]) == 3 and all(v >= 0 for v in meta[key])
    assert {"usable_cores", "platform", "python"} <= set(meta["machine"])


@pytest.mark.timeout(90)
def test_collect_resumes_without_redoing_rows(tiny_collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    out.write_bytes(tiny_collection.read_bytes())
    metadata_path(out).write_bytes(metadata_path(tiny_collection).read_bytes())
    before = [r["instance"] for r in read_rows(out)]
    collect(out, quick=True, families=TINY_FAMILIES, limit=5, settings=TINY, progress=False)
    after = [r["instance"] for r in read_rows(out)]
    assert after[:4] == before and len(after) == 5 and len(set(after)) == 5


@pytest.mark.timeout(90)
def test_train_exports_a_model_that_matches_sklearn(tiny_collection: Path, tmp_path: Path) -> None:
    result = train(tiny_collection, tmp_path / "m.json")
    assert result.path == tmp_path / "m.json"
    assert (tmp_path / "m.joblib").exists() and (tmp_path / "m.metadata.json").exists()
    policy = read_model_file(result.path)
    data = load_dataset(tiny_collection)
    proba = result.estimator.predict_proba(data.X)
    for i, row in enumerate(data.X):
        assert policy.predict_proba(row) == proba[i].tolist()
    meta = json.loads((tmp_path / "m.metadata.json").read_text())
    assert meta["feature_names"] == list(MODEL_FEATURES)
    assert meta["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert "sklearn_version" in meta and "training_machine" in meta
    overall = meta["scores"]["overall"]
    assert set(overall) == {"model", "heuristic"} and overall["model"]["n"] == 4
    assert "| held-out family |" in result.table


@pytest.mark.timeout(120)
def test_retrained_model_is_used_by_a_new_process(tiny_collection: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    env = dict(os.environ, XDG_DATA_HOME=str(xdg))
    env.pop(MODEL_ENV_VAR, None)
    # The CLI's train step writes where AutoExecutor looks by default.
    out = subprocess.run(
        [sys.executable, "-m", "adaptive_pool", "train", str(tiny_collection), "--no-eval"],
        check=False, capture_output=True, text=True, env=env, timeout=90, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    model_path = xdg / "adaptive_pool" / "model.json"
    assert model_path.exists() and str(model_path) in out.stdout
    code = (
        "from adaptive_pool import AutoExecutor\n"
        "from adaptive_pool._model import resolve_model\n"
        "from adaptive_pool.training.families import py_loop\n"
        "with AutoExecutor() as ex:\n"
        "    list(ex.map(py_loop, [20_000] * 8))\n"  # ~1 ms calls: tiny ones sprint

        "    d = ex.decision_for(py_loop)\n"
        "print(d.source, resolve_model()[2])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["model", str(model_path)]
    out = subprocess.run(
        [sys.executable, "-m", "adaptive_pool", "info"], check=False, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0 and str(model_path) in out.stdout and "(user)" in out.stdout

"""Smoke tests of the benchmark harness (tiny sizes, no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adaptive_pool import _bench, _bench_runner
from adaptive_pool._bench_workloads import WORKLOADS, prepare
from adaptive_pool.cli import main as cli_main


def test_every_workload_builds_and_runs_serially_in_quick_size() -> None:
    for name in WORKLOADS:
        if name in ("socket", "subprocess", "sleep_long", "sleep_many"):
            continue  # covered below or by the harness test; keep this fast
        with prepare(name, quick=True) as prepared:
            assert prepared.items, name
            first = prepared.fn(prepared.items[0])
            assert first is not None, name


@pytest.mark.timeout(60)
def test_socket_workload_talks_to_its_local_service() -> None:
    with prepare("socket", quick=True) as prepared:
        replies = [prepared.fn(item) for item in prepared.items[:3]]
    # "reply:" + the request id + newline
    assert replies == [len(f"reply:{i}\n") for i in range(3)]


def test_runner_reports_a_time_and_a_digest_of_the_results() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adaptive_pool._bench_runner", "tiny", "threads", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["seconds"] > 0
    with prepare("tiny", quick=True) as prepared:
        expected = [prepared.fn(x) for x in prepared.items]
    assert report["digest"] == _bench_runner.digest(expected)
    assert report["count"] == len(expected)


def test_runner_records_a_closure_in_a_stdlib_process_pool_as_a_failure() -> None:
    report = _bench.measure_once("closure", "processes", quick=True, timeout=60)
    assert report["ok"] is False
    # "Can't pickle local object" up to 3.12, "Can't get local object" from 3.13.
    assert "local object" in report["error"] and "scaled_loop" in report["error"]


def test_a_wrong_result_is_a_failure_not_a_time() -> None:
    reports = [{"ok": True, "seconds": 0.5, "digest": "abc"}]
    entry = _bench._mode_entry("tiny", "threads", reports, expected="def")
    assert entry["ok"] is False
    assert "wrong result" in entry["error"]
    assert "median" not in entry


def test_failed_modes_are_left_out_of_the_stdlib_baseline() -> None:
    data: dict[str, Any] = {
        "modes": ["serial", "processes", "auto"],
        "stdlib_modes": ["serial", "processes"],
        "workloads": {
            "closure": {
                "modes": {
                    "serial": {"ok": True, "median": 2.0},
                    "processes": {"ok": False, "error": "cannot pickle", "expected_failure": True},
                    "auto": {"ok": True, "median": 1.0},
                }
            },
            "sleep": {
                "modes": {
                    "serial": {"ok": True, "median": 4.0},
                    "processes": {"ok": True, "median": 1.0},
                    "auto": {"ok": True, "median": 2.0},
                }
            },
        },
    }
    _bench.summarize_results(data)
    assert data["workloads"]["closure"]["best_stdlib"] == {"mode": "serial", "seconds": 2.0}
    assert data["workloads"]["closure"]["modes"]["auto"]["ratio"] == pytest.approx(0.5)
    auto = data["summary"]["auto"]
    assert auto["geomean"] == pytest.approx(math.sqrt(0.5 * 2.0))
    assert auto["worst"] == pytest.approx(2.0)
    assert auto["worst_workload"] == "sleep"
    assert data["summary"]["processes"]["failed"] == ["closure"]
    table = _bench.format_table(data)
    assert "geometric mean" in table and "failed" in table


@pytest.mark.timeout(120)
def test_bench_command_writes_json_of_the_expected_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    code = cli_main(
        [
            "bench",
            "--quick",
            "--only",
            "tiny",
            "--modes",
            "serial,threads,auto",
            "--repeat",
            "1",
            "--no-extras",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["repeat"] == 1 and data["quick"] is True
    assert data["modes"] == ["serial", "threads", "auto"]
    assert set(data["machine"]) >= {"python", "cpu_count", "platform"}
    entry = data["workloads"]["tiny"]
    assert entry["expected_digest"]
    assert entry["best_stdlib"]["mode"] in ("serial", "threads")
    for mode in ("serial", "threads", "auto"):
        m = entry["modes"][mode]
        assert m["ok"] is True, m
        assert len(m["times"]) == 1 and m["median"] > 0 and m["ratio"] > 0
    assert entry["modes"]["auto"]["decision"]  # decision_for() was recorded
    assert set(data["summary"]) == {"serial", "threads", "auto"}
    assert "| tiny |" in capsys.readouterr().out


def test_unknown_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--only", "nope", "--no-extras"]) == 2
    assert "unknown workload" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_demo_reports_the_decision_behind_every_map() -> None:
    # The decision shown is the one of the executor that ran the map: a map
    # of tiny calls over before any decision shows its inline sprint.
    result = subprocess.run(
        [sys.executable, "-m", "adaptive_pool", "demo", "--scale", "0.1"],
        capture_output=True, text=True, timeout=110,
    )
    why = result.stdout.split("Why:")[1]
    lines = [line for line in why.splitlines() if line.startswith("  ")]
    assert len(lines) == 4, result.stdout
    assert not [line for line in lines if line.endswith(": None")], result.stdout
    assert "tiny tasks: inline" in why

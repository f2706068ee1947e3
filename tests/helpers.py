"""Helpers shared by several test modules (import as ``helpers``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from adaptive_pool import Choice

#: Crash and lifetime scenarios, each run in a fresh interpreter.
SCENARIOS = os.path.join(os.path.dirname(__file__), "scripts", "scenarios.py")


class ByCpuShare:
    """Test policy: processes for work that computes, threads for work that waits.

    The measurements are real; the rule is plain so that a loaded machine
    (or whatever model is installed) cannot make the expected route doubtful.
    """

    source = "heuristic"

    def choose(self, features: Mapping[str, float], allowed: Sequence[str]) -> Choice:
        if features.get("cpu_ratio", 0.0) > 0.2 and "process" in allowed:
            return Choice("process", 1.0, "computes")
        return Choice("thread", 1.0, "waits")


def run_scenario(name: str, timeout: float = 60, **kwargs: Any) -> tuple[dict[str, Any], str]:
    """Run one scenario in a fresh interpreter; return (its JSON report, its stderr).

    The report's ``log`` lists what the scenario's tasks recorded, read once
    the interpreter (and any work it still ran at exit) is gone.
    """
    with tempfile.TemporaryDirectory(prefix="adaptive_pool_scenario_") as log_dir:
        proc = subprocess.run(
            [sys.executable, SCENARIOS, name, json.dumps(kwargs)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "ADAPTIVE_POOL_SCENARIO_DIR": log_dir},
        )
        log = os.path.join(log_dir, "runs.log")  # the scenario's LOG
        lines = []
        if os.path.exists(log):
            with open(log) as fh:
                lines = [line.strip() for line in fh]
    assert proc.returncode == 0, f"scenario {name} failed ({proc.returncode}):\n{proc.stderr}"
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["log"] = lines
    return report, proc.stderr

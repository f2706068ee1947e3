"""Shared test helpers: routes to cross tests with, and running Python in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

#: The repository's root (holds the ``adaptive_pool`` package).
REPO = Path(__file__).resolve().parent.parent

#: ``prefer=`` values every behaviour test runs with: the automatic path and
#: each forced route.
PREFERS: tuple[str | None, ...] = (None, "threads", "processes", "inline")


def prefer_id(prefer: str | None) -> str:
    """Readable test ids: ``auto``, ``threads``, ..."""
    return prefer or "auto"


def python_env(extra_path: Sequence[str] = ()) -> dict[str, str]:
    """An environment in which a child interpreter imports this checkout first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), *extra_path, env.get("PYTHONPATH", "")]))
    return env


def run_python(
    args: Sequence[str],
    *,
    python: str = sys.executable,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60,
    extra_path: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` with this checkout importable; capture its output."""
    return subprocess.run(
        [python, *args],
        cwd=cwd,
        env=python_env(extra_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def fresh_profiles() -> None:
    """Forget every function measured so far (the store is process-wide)."""
    from adaptive_pool import reset_profiles

    reset_profiles()

"""Loading and evaluating model files (interim: heuristic only)."""

from __future__ import annotations

from typing import Any

from ._policy import HeuristicPolicy, Policy


def load_policy(model: Any = None) -> Policy:
    """The policy to decide with."""
    return HeuristicPolicy()

"""adaptive_pool: an executor that picks threads, processes or inline batches.

>>> from adaptive_pool import AutoExecutor
>>> with AutoExecutor() as ex:
...     results = list(ex.map(abs, range(-3, 3)))

Importing this package loads only the standard library: no numpy,
scikit-learn or joblib, no thread and no process.  In a worker process
(see adaptive_pool._workers) its public names load their modules only when
first used: a worker that imports one of the user's modules (which may
import this package, or live in it) pays for what its calls use, not for
the executor (~20 ms of start-up each).
"""

from __future__ import annotations

import os as _os

# Not typing.TYPE_CHECKING: importing typing costs a fresh worker 3 ms;
# type checkers treat any constant of this name alike.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._workers import RemoteTraceback, WorkerCrashedError
if TYPE_CHECKING or _os.environ.get("ADAPTIVE_POOL_WORKER") != "1":
    # A program imports the package to use it: the executor loads now, not
    # inside its first timed call.
    from ._asyncio import amap
    from ._executor import AutoExecutor, pin
    from ._policy import Choice, Decision, HeuristicPolicy, Policy
    from ._profile import reset_profiles

__all__ = [
    "AutoExecutor",
    "Choice",
    "Decision",
    "HeuristicPolicy",
    "Policy",
    "RemoteTraceback",
    "WorkerCrashedError",
    "amap",
    "pin",
    "register_joblib_backend",
    "reset_profiles",
]

__version__ = "0.1.0"

#: Where each public name lives (loaded on first use, PEP 562).
_HOMES = {
    "AutoExecutor": "._executor",
    "pin": "._executor",
    "amap": "._asyncio",
    "Choice": "._policy",
    "Decision": "._policy",
    "HeuristicPolicy": "._policy",
    "Policy": "._policy",
    "reset_profiles": "._profile",
    # The process pool's module loads only when a process route starts or
    # these are asked for.
    "RemoteTraceback": "._workers",
    "WorkerCrashedError": "._workers",
}


def register_joblib_backend(name: str = "adaptive", *, make_default: bool = False) -> None:
    """Register the ``"adaptive"`` joblib backend (imports joblib only now).

    See :func:`adaptive_pool._joblib.register_joblib_backend`.
    """
    from ._joblib import register_joblib_backend as register

    register(name, make_default=make_default)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'adaptive_pool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

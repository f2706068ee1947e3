"""adaptive_pool: an executor that picks threads, processes or inline batches.

>>> from adaptive_pool import AutoExecutor
>>> with AutoExecutor() as ex:
...     results = list(ex.map(abs, range(-3, 3)))

Importing this package loads only the standard library: no numpy,
scikit-learn or joblib, no thread and no process.
"""

import logging as _logging

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


def register_joblib_backend(name: str = "adaptive", *, make_default: bool = False) -> None:
    """Register the ``"adaptive"`` joblib backend (imports joblib only now).

    See :func:`adaptive_pool._joblib.register_joblib_backend`.
    """
    from ._joblib import register_joblib_backend as register

    register(name, make_default=make_default)


def __getattr__(name: str) -> object:
    # The process pool's module (and the multiprocessing machinery it
    # imports) loads only when a process route starts or these are asked for.
    if name in ("RemoteTraceback", "WorkerCrashedError"):
        from . import _workers

        return getattr(_workers, name)
    raise AttributeError(f"module 'adaptive_pool' has no attribute {name!r}")


# A library logs; the application decides where logs go.
_logging.getLogger("adaptive_pool").addHandler(_logging.NullHandler())

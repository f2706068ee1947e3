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
from ._workers import RemoteTraceback, WorkerCrashedError

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


# A library logs; the application decides where logs go.
_logging.getLogger("adaptive_pool").addHandler(_logging.NullHandler())

"""adaptive_pool: an executor that picks threads, processes or inline batches.

>>> from adaptive_pool import AutoExecutor
>>> with AutoExecutor() as ex:
...     results = list(ex.map(abs, range(-3, 3)))

Importing this package loads only the standard library: no numpy,
scikit-learn or joblib, no thread and no process.
"""

import logging as _logging

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
    "pin",
    "reset_profiles",
]

__version__ = "0.1.0"

# A library logs; the application decides where logs go.
_logging.getLogger("adaptive_pool").addHandler(_logging.NullHandler())

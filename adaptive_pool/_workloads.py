"""Real workloads for the demo and the benchmark.

Module-level functions (so that every executor, the standard library's
process pool included, can run them), each the kind of work users hand to
an executor.  Training uses its own families (:mod:`.training.families`),
so the benchmark measures the model on work it was not trained on.
"""

from __future__ import annotations

import hashlib
import time


def python_loop(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def sleep_ms(ms: float) -> float:
    """Waits (a network call, a database round trip) and returns a value."""
    time.sleep(ms / 1000.0)
    return ms


def sha256_hex(data: bytes) -> str:
    """Hashes a buffer in C, with the GIL released."""
    return hashlib.sha256(data).hexdigest()


def tiny(x: int) -> int:
    """Microseconds of work: no pool pays off one call at a time."""
    return x * 2 + 1

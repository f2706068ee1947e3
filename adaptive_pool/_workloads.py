"""Real workloads for the demo and the benchmark.

Module-level functions (so that every executor, the standard library's
process pool included, can run them), each the kind of work users hand to
an executor.  Training uses its own families (:mod:`.training.families`),
so the benchmark measures the model on work it was not trained on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable


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


# ----------------------------------------------------------------------
# More families for ``adaptive-pool bench`` (see :mod:`._bench_workloads`).
# Each takes one argument, so every mode can ``map`` it, and returns a
# small deterministic value, so results can be checked against a serial run.


def zlib_compress(data: bytes) -> int:
    """Compresses a buffer in C (zlib releases the GIL); returns the size."""
    import zlib

    return len(zlib.compress(data, 6))


def numpy_sort(seed: int) -> float:
    """Generates and sorts an array with numpy; returns a checksum."""
    import numpy as np

    values = np.random.default_rng(seed).random(400_000)
    ordered = np.sort(values)
    return round(float(ordered[::1000].sum()), 9)


def socket_roundtrip(item: tuple[int, int]) -> int:
    """One request to a local TCP service: connect, send a line, read the reply.

    ``item`` is ``(port, request_id)``; the reply's length is returned.
    """
    import socket

    port, request_id = item
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"{request_id}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return len(reply)


def file_roundtrip(item: tuple[str, int, int]) -> int:
    """Writes a file, reads it back and checksums it; ``item`` is (dir, index, size)."""
    import os
    import zlib

    directory, index, size = item
    path = os.path.join(directory, f"f{index}.bin")
    block = (index.to_bytes(4, "little") * (size // 4 + 1))[:size]
    with open(path, "wb") as out:
        out.write(block)
    with open(path, "rb") as src:
        data = src.read()
    os.unlink(path)
    return zlib.crc32(data)


def subprocess_wait(seconds: float) -> int:
    """Runs a short external command and waits for it; returns its exit status."""
    import subprocess

    return subprocess.run(["sleep", f"{seconds:.3f}"], check=False).returncode


def big_arg_digest(data: bytes) -> str:
    """Few calls, each given a very large buffer: hashes it (C, GIL released)."""
    return hashlib.sha256(data).hexdigest()[:16]


def sleep_then_loop(item: tuple[float, int]) -> int:
    """Half waiting, half pure-Python work: sleeps ``ms`` then loops ``n`` times."""
    ms, n = item
    time.sleep(ms / 1000.0)
    return python_loop(n)


def drifting(item: tuple[str, float]) -> float:
    """Behaviour that changes with the input: ``("sleep", ms)`` or ``("loop", n)``."""
    kind, amount = item
    if kind == "sleep":
        return sleep_ms(amount)
    return float(python_loop(int(amount)))


def make_closure(scale: int) -> Callable[[int], int]:
    """A CPU-bound closure: the standard library's pickle cannot send it to a process."""

    def scaled_loop(n: int) -> int:
        return python_loop(n) * scale

    return scaled_loop

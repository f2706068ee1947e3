"""The benchmark's workloads: a function, its inputs, and any setup they need.

Sizes aim at what a user would hand to an executor: a serial run of the
full size takes roughly 0.2 to 3 seconds on one core.  ``quick`` sizes are
for smoke runs and tests.  The functions live in :mod:`._workloads`
(module level, so every executor can run them); only the closure workload
builds its function here.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import _workloads as w

__all__ = ["WORKLOADS", "Prepared", "Workload", "prepare"]


@dataclass(frozen=True)
class Prepared:
    """A workload ready to run: the function and the list of single arguments."""

    fn: Callable[[Any], Any]
    items: list[Any]


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: a name, what it stands for, how to build it."""

    name: str
    family: str
    description: str
    build: Callable[[bool], contextlib.AbstractContextManager[Prepared]]


def _simple(fn: Callable[[Any], Any], full: Callable[[], list[Any]], quick: Callable[[], list[Any]]) -> Callable[
    [bool], contextlib.AbstractContextManager[Prepared]
]:
    @contextlib.contextmanager
    def build(is_quick: bool) -> Iterator[Prepared]:
        yield Prepared(fn, quick() if is_quick else full())

    return build


def _noise(size: int, seed: int) -> bytes:
    """Reproducible random bytes (every run must hash the same input)."""
    import random

    return random.Random(seed).randbytes(size)


def _mixed_buffer(size: int, seed: int) -> bytes:
    """Half repetitive text, half noise: compresses to about 55 %."""
    import random

    rng = random.Random(seed)
    text = (b"the quick brown fox jumps over the lazy dog %d " % seed) * (size // 80 + 1)
    return text[: size // 2] + rng.randbytes(size - size // 2)


# -- setups that need a server or a directory ---------------------------------

_SERVER_CODE = """
import socketserver, sys, time
delay = float(sys.argv[1])
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        time.sleep(delay)
        self.wfile.write(b"reply:" + line)
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def local_service(delay_s: float) -> Iterator[int]:
    """A TCP service in its own process that answers each request after ``delay_s``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_CODE, str(delay_s)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.kill()
        proc.wait()


def _socket_build(count: int, delay_s: float) -> Callable[[bool], contextlib.AbstractContextManager[Prepared]]:
    @contextlib.contextmanager
    def build(is_quick: bool) -> Iterator[Prepared]:
        n = 40 if is_quick else count
        with local_service(delay_s) as port:
            yield Prepared(w.socket_roundtrip, [(port, i) for i in range(n)])

    return build


@contextlib.contextmanager
def _files_build(is_quick: bool) -> Iterator[Prepared]:
    n, size = (20, 256 * 1024) if is_quick else (200, 1 << 20)
    with tempfile.TemporaryDirectory(prefix="adaptive-pool-bench-") as directory:
        yield Prepared(w.file_roundtrip, [(directory, i, size) for i in range(n)])


@contextlib.contextmanager
def _closure_build(is_quick: bool) -> Iterator[Prepared]:
    n, count = (20_000, 8) if is_quick else (200_000, 64)
    yield Prepared(w.make_closure(3), [n] * count)


@contextlib.contextmanager
def _numpy_build(is_quick: bool) -> Iterator[Prepared]:
    # A numpy user's program has imported numpy before it maps anything;
    # the import must not land in the first calls (and so in the probes).
    import numpy  # noqa: F401

    yield Prepared(w.numpy_sort, list(range(4 if is_quick else 32)))


def _drift_items(is_quick: bool) -> list[Any]:
    # First half waits (threads win), second half computes in Python
    # (processes win): no single static choice is right for both.
    if is_quick:
        return [("sleep", 5.0)] * 10 + [("loop", 20_000.0)] * 10
    return [("sleep", 20.0)] * 60 + [("loop", 200_000.0)] * 60


_BUF_2M = 2 << 20


WORKLOADS: dict[str, Workload] = {
    wl.name: wl
    for wl in [
        Workload(
            "python_cpu",
            "pure-Python CPU",
            "64 calls of a pure-Python loop, ~10 ms each",
            _simple(w.python_loop, lambda: [200_000] * 64, lambda: [20_000] * 8),
        ),
        Workload(
            "hash",
            "C CPU, GIL released",
            "200 SHA-256 digests of 4 MB buffers (~2 ms each)",
            _simple(w.sha256_hex, lambda: [_noise(1 << 20, 7) * 4] * 200, lambda: [b"x" * 65536] * 10),
        ),
        Workload(
            "zlib",
            "C CPU, GIL released",
            "64 zlib compressions of 2 MB buffers (~20 ms each)",
            _simple(w.zlib_compress, lambda: [_mixed_buffer(_BUF_2M, 1)] * 64, lambda: [_mixed_buffer(65536, 1)] * 8),
        ),
        Workload(
            "numpy",
            "C CPU, GIL released",
            "32 numpy generate-and-sort of 400k floats (~20 ms each)",
            _numpy_build,
        ),
        Workload(
            "sleep_short",
            "waiting, few ms",
            "200 sleeps of 5 ms",
            _simple(w.sleep_ms, lambda: [5.0] * 200, lambda: [2.0] * 20),
        ),
        Workload(
            "sleep_long",
            "waiting, hundreds of ms",
            "24 sleeps of 100 ms",
            _simple(w.sleep_ms, lambda: [100.0] * 24, lambda: [20.0] * 6),
        ),
        Workload(
            "sleep_many",
            "waiting, many tasks",
            "1000 sleeps of 3 ms (threads pay off well past 32)",
            _simple(w.sleep_ms, lambda: [3.0] * 1000, lambda: [1.0] * 60),
        ),
        Workload(
            "socket",
            "local socket round trips",
            "300 requests to a local TCP service that answers in 5 ms",
            _socket_build(300, 0.005),
        ),
        Workload(
            "file_io",
            "file I/O",
            "200 x write, read back and checksum a 1 MB file",
            _files_build,
        ),
        Workload(
            "subprocess",
            "subprocess waits",
            "30 runs of `sleep 0.05`",
            _simple(w.subprocess_wait, lambda: [0.05] * 30, lambda: [0.01] * 6),
        ),
        Workload(
            "tiny",
            "thousands of tiny tasks",
            "20,000 calls of a microsecond function",
            _simple(w.tiny, lambda: list(range(20_000)), lambda: list(range(2_000))),
        ),
        Workload(
            "big_args",
            "few tasks, very large arguments",
            "6 SHA-256 digests of 48 MB arguments",
            _simple(
                w.big_arg_digest,
                lambda: [bytes([i]) * (48 << 20) for i in range(6)],
                lambda: [bytes([i]) * (1 << 20) for i in range(3)],
            ),
        ),
        Workload(
            "mixed",
            "CPU and waiting",
            "80 calls that sleep 5 ms, then loop ~5 ms in Python",
            _simple(w.sleep_then_loop, lambda: [(5.0, 100_000)] * 80, lambda: [(1.0, 10_000)] * 10),
        ),
        Workload(
            "drift",
            "behaviour changes part-way",
            "60 sleeps of 20 ms, then 60 pure-Python loops of ~10 ms",
            _simple(w.drifting, lambda: _drift_items(False), lambda: _drift_items(True)),
        ),
        Workload(
            "closure",
            "CPU-bound closure",
            "64 calls of a pure-Python closure, ~10 ms each (stdlib pickle cannot send it)",
            _closure_build,
        ),
    ]
}


def prepare(name: str, quick: bool) -> contextlib.AbstractContextManager[Prepared]:
    """Build workload ``name``; use as a context manager (setup and teardown)."""
    try:
        workload = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None
    return workload.build(quick)

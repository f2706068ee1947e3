"""Synthetic task families for training the route model.

Each family is a module-level function (worker processes import it by
name) plus a grid of parameters chosen to move it across the boundaries
between routes: from calls too short for any pool, through waiting, to
computing with or without the GIL, with small or large data.

An *instance* is one family with one set of parameters; the collector
measures its features through the runtime's own probing, then times every
candidate route on the same items.  Every function returns a value (never
``None``) and pickles, so that the process route is always on offer and the
label can be any route.

The functions here are deliberately not the ones of
:mod:`adaptive_pool._workloads` (used by the demo and the benchmark), so
that those measure the model on work it was not trained on.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAMILIES", "Family", "Instance", "family_names", "instances", "warm_call", "warm_sleep"]

Args = tuple[Any, ...]


# --------------------------------------------------------------------------
# Helpers shared by the tasks (per process, created on first use)

_BUFFERS: dict[tuple[int, str], bytes] = {}
_BUFFER_LOCK = threading.Lock()


def _buffer(nbytes: int, kind: str = "random") -> bytes:
    """A cached buffer of ``nbytes``: random, or compressible text-like bytes."""
    key = (nbytes, kind)
    data = _BUFFERS.get(key)
    if data is None:
        with _BUFFER_LOCK:
            data = _BUFFERS.get(key)
            if data is None:
                if kind == "random":
                    data = os.urandom(nbytes)
                else:
                    words = b"adaptive pool routes work to threads processes or inline batches "
                    data = (words * (nbytes // len(words) + 1))[:nbytes]
                    # sprinkle some entropy so that compression has work to do
                    noise = os.urandom(max(1, nbytes // 64))
                    data = bytes(data[: nbytes - len(noise)]) + noise
                _BUFFERS[key] = data
    return data


def _loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += (i * i) % 7
    return total


# --------------------------------------------------------------------------
# The task functions (module level: processes import them)


def warm_sleep(seconds: float) -> float:
    """Used by the collector to start a process pool's workers before timing."""
    time.sleep(seconds)
    return seconds


def warm_call(fn: Callable[..., Any], args: Args, seconds: float) -> float:
    """Used by the collector to ready a worker process: one call of the task, then a nap.

    The call pays what a task needs once per process (imports, cached
    buffers, a server connection); the nap keeps this worker busy so that
    the next warm-up goes to another one.
    """
    fn(*args)
    time.sleep(seconds)
    return seconds


def py_loop(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL throughout."""
    return _loop(n)


def py_objects(n: int) -> int:
    """Pure Python building and sorting small objects (allocation heavy)."""
    items = [(i * 7919) % 1000 for i in range(n)]
    table = {str(v): v for v in items}
    return len(sorted(table)) + sum(items[:10])


def c_hash(nbytes: int, algorithm: str) -> str:
    """Hash a buffer in C; hashlib releases the GIL above about 2 KiB."""
    h = hashlib.new(algorithm)
    h.update(_buffer(nbytes))
    return h.hexdigest()


def c_hash_data(data: bytes, algorithm: str) -> str:
    """Hash a buffer passed as the argument (GIL released): large data in, little work."""
    h = hashlib.new(algorithm)
    h.update(data)
    return h.hexdigest()


def c_zlib(nbytes: int, level: int) -> int:
    """Compress a buffer in C with the GIL released."""
    return len(zlib.compress(_buffer(nbytes, "text"), level))


_ARRAYS: dict[int, Any] = {}


def c_numpy(n: int, op: str) -> float:
    """numpy work that releases the GIL (sorting, elementwise maths)."""
    import numpy as np

    a = _ARRAYS.get(n)
    if a is None:
        a = np.random.default_rng(n).random(n)
        _ARRAYS[n] = a
    if op == "sort":
        return float(np.sort(a)[n // 2])
    if op == "math":
        return float(np.sqrt(np.exp(a) + 1.0).sum())
    return float(np.cumsum(a)[-1])


def wait_sleep(seconds: float) -> float:
    """Sleep (a remote call, a database round trip)."""
    time.sleep(seconds)
    return seconds


# A small echo server in another process, started on first use per process.
_SERVER_CODE = r"""
import socket, struct, sys, threading, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(128)
print(srv.getsockname()[1], flush=True)
def recv_exact(c, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = c.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)
def serve(c):
    try:
        while True:
            delay, n = struct.unpack("!dQ", recv_exact(c, 16))
            data = recv_exact(c, n)
            if delay > 0:
                time.sleep(delay)
            c.sendall(data)
    except (EOFError, OSError):
        pass
    finally:
        c.close()
def watch_parent():
    sys.stdin.read()
    import os
    os._exit(0)
threading.Thread(target=watch_parent, daemon=True).start()
while True:
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

_SERVER: dict[str, Any] = {}
_SERVER_LOCK = threading.Lock()
_CONN = threading.local()


def _server_port() -> int:
    with _SERVER_LOCK:
        port = _SERVER.get("port")
        if port is None:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            _SERVER["port"] = port
            _SERVER["proc"] = proc
            atexit.register(_stop_server)
        return int(port)


def _stop_server() -> None:
    proc = _SERVER.pop("proc", None)
    _SERVER.pop("port", None)
    if proc is not None:
        try:
            proc.kill()
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001, S110 - best effort at exit
            pass


def _connection() -> socket.socket:
    conn = getattr(_CONN, "sock", None)
    if conn is None:
        conn = socket.create_connection(("127.0.0.1", _server_port()))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _CONN.sock = conn
    return conn


def wait_socket(nbytes: int, delay: float) -> int:
    """A round trip to a local echo server that answers after ``delay`` seconds."""
    conn = _connection()
    payload = _buffer(nbytes)
    conn.sendall(struct.pack("!dQ", delay, nbytes) + payload)
    got = 0
    while got < nbytes:
        chunk = conn.recv(min(nbytes - got, 1 << 20))
        if not chunk:
            raise ConnectionError("echo server closed the connection")
        got += len(chunk)
    return got


_FILES: dict[int, str] = {}


def _data_file(nbytes: int) -> str:
    path = _FILES.get(nbytes)
    if path is None or not os.path.exists(path):
        fd, path = tempfile.mkstemp(prefix=f"adaptive_pool_{nbytes}_", suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(_buffer(nbytes))
        _FILES[nbytes] = path
        atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def wait_file(nbytes: int, block: int) -> int:
    """Read a local file in blocks (mostly from the page cache)."""
    total = 0
    with open(_data_file(nbytes), "rb", buffering=0) as f:
        while True:
            chunk = f.read(block)
            if not chunk:
                break
            total += len(chunk)
    return total


def wait_subprocess(seconds: float, python: bool) -> int:
    """Run a child process and wait for it."""
    if python:
        cmd = [sys.executable, "-c", f"import time; time.sleep({seconds!r})"]
    else:
        cmd = ["/bin/sleep", repr(seconds)] if os.path.exists("/bin/sleep") else [
            sys.executable, "-S", "-c", f"import time; time.sleep({seconds!r})"
        ]
    return subprocess.run(cmd, check=False).returncode + 1


def mixed(n: int, seconds: float) -> int:
    """Compute in Python, then wait: the ratio moves it between routes."""
    value = _loop(n)
    time.sleep(seconds)
    return value


def mixed_c_python(nbytes: int, n: int) -> int:
    """GIL-free C work followed by pure-Python work."""
    digest = hashlib.sha256(_buffer(nbytes)).digest()
    return _loop(n) + digest[0]


def tiny(x: int, kind: str) -> Any:
    """Microseconds of work: no pool pays off one call at a time."""
    if kind == "arith":
        return x * 2 + 1
    if kind == "str":
        return f"{x}:{x * x:08d}"
    if kind == "dict":
        return {"x": x, "y": [x, x + 1]}
    return sum(range(x % 50))


def big_args(data: bytes, n: int) -> int:
    """Large argument, some Python work, small result."""
    return len(data) + _loop(n)


def big_result(nbytes: int, n: int) -> bytes:
    """Small argument, some Python work, large result."""
    _loop(n)
    return _buffer(nbytes)[: nbytes - 1] + b"!"


def growing_loop(n: int) -> int:
    """Pure Python whose cost grows with the input."""
    return _loop(n)


def growing_sort(n: int) -> int:
    """Sorting a Python list whose length grows with the input."""
    data = [(i * 2654435761) % 1000003 for i in range(n)]
    data.sort()
    return data[n // 2]


# --------------------------------------------------------------------------
# Families and their parameter grids


@dataclass(frozen=True)
class Family:
    """A task function and the parameter sets to measure it at."""

    name: str
    fn: Callable[..., Any]
    description: str
    grid: tuple[Mapping[str, Any], ...]
    #: (params, count) -> argument tuples of ``count`` calls
    make_args: Callable[[Mapping[str, Any], int], list[Args]] = field(repr=False)


@dataclass(frozen=True)
class Instance:
    """One family at one parameter set (and replica number)."""

    family: Family
    params: Mapping[str, Any]
    replica: int = 0

    @property
    def id(self) -> str:
        """A stable identifier, also used to resume a collection."""
        ps = ",".join(f"{k}={self.params[k]}" for k in sorted(self.params))
        return f"{self.family.name}[{ps}]#{self.replica}"

    def args(self, count: int) -> list[Args]:
        """Arguments of the first ``count`` calls."""
        return self.family.make_args(self.params, count)


def _same(*names: str) -> Callable[[Mapping[str, Any], int], list[Args]]:
    def make(params: Mapping[str, Any], count: int) -> list[Args]:
        args = tuple(params[n] for n in names)
        return [args] * count

    return make


def _tiny_args(params: Mapping[str, Any], count: int) -> list[Args]:
    return [(i, params["kind"]) for i in range(count)]


def _big_args_args(params: Mapping[str, Any], count: int) -> list[Args]:
    # A distinct object per call: pickle would send one shared object once
    # per batch, which real arguments do not allow.
    data = _buffer(int(params["nbytes"]))
    return [(data[:-1] + bytes([i % 256]), params["n"]) for i in range(count)]


def _hash_data_args(params: Mapping[str, Any], count: int) -> list[Args]:
    # Distinct buffers, as for big_args: one shared object would be pickled once.
    data = _buffer(int(params["nbytes"]))
    return [(data[:-1] + bytes([i % 256]), params["algorithm"]) for i in range(count)]


def _growing(params: Mapping[str, Any], count: int) -> list[Args]:
    base = int(params["base"])
    # Cost grows linearly to ``growth`` times the first call's by the end.
    growth = float(params["growth"])
    return [(int(base * (1 + (growth - 1) * i / max(1, count - 1))),) for i in range(count)]


def _grid(**axes: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        out = [dict(d, **{name: v}) for d in out for v in values]
    return tuple(out)


FAMILIES: tuple[Family, ...] = (
    Family(
        "py_loop",
        py_loop,
        "pure-Python loops of many lengths",
        _grid(n=[10, 30, 100, 300, 1000, 2000, 4000, 8000, 15000, 30000, 60000, 120000, 250000]),
        _same("n"),
    ),
    Family(
        "py_objects",
        py_objects,
        "pure-Python allocation and sorting",
        _grid(n=[10, 50, 200, 1000, 3000, 10000, 30000, 100000]),
        _same("n"),
    ),
    Family(
        "c_hash",
        c_hash,
        "hashlib on buffers (GIL released above 2 KiB)",
        _grid(nbytes=[256, 1024, 8192, 65536, 262144, 1 << 20, 4 << 20], algorithm=["sha256", "blake2b"]),
        _same("nbytes", "algorithm"),
    ),
    Family(
        "c_hash_data",
        c_hash_data,
        "hashlib on large buffers passed as arguments (GIL released, data costly to move)",
        _grid(nbytes=[65536, 1 << 20, 4 << 20, 16 << 20], algorithm=["sha256", "blake2b"]),
        _hash_data_args,
    ),
    Family(
        "c_zlib",
        c_zlib,
        "zlib compression (GIL released)",
        _grid(nbytes=[512, 8192, 65536, 524288, 2 << 20], level=[1, 6]),
        _same("nbytes", "level"),
    ),
    Family(
        "c_numpy",
        c_numpy,
        "numpy sorting and elementwise maths (GIL released)",
        _grid(n=[100, 2000, 30000, 300000, 2000000], op=["sort", "math"]),
        _same("n", "op"),
    ),
    Family(
        "wait_sleep",
        wait_sleep,
        "time.sleep of many lengths",
        _grid(seconds=[0.00005, 0.0002, 0.0005, 0.001, 0.003, 0.008, 0.02, 0.04]),
        _same("seconds"),
    ),
    Family(
        "wait_socket",
        wait_socket,
        "round trips to a local echo server",
        _grid(nbytes=[64, 65536, 1 << 20], delay=[0.0, 0.001, 0.005, 0.02]),
        _same("nbytes", "delay"),
    ),
    Family(
        "wait_file",
        wait_file,
        "reading local files",
        _grid(nbytes=[4096, 262144, 4 << 20], block=[4096, 1 << 20]),
        _same("nbytes", "block"),
    ),
    Family(
        "wait_subprocess",
        wait_subprocess,
        "starting a child process and waiting for it",
        _grid(seconds=[0.0, 0.005, 0.02, 0.05], python=[False, True]),
        _same("seconds", "python"),
    ),
    Family(
        "mixed",
        mixed,
        "Python computing then sleeping, in varying ratios",
        _grid(n=[1000, 10000, 50000, 150000], seconds=[0.0002, 0.002, 0.01]),
        _same("n", "seconds"),
    ),
    Family(
        "mixed_c_python",
        mixed_c_python,
        "GIL-free hashing then Python work, in varying ratios",
        _grid(nbytes=[65536, 1 << 20, 8 << 20], n=[1000, 20000, 100000]),
        _same("nbytes", "n"),
    ),
    Family(
        "tiny",
        tiny,
        "tasks of a few microseconds",
        _grid(kind=["arith", "str", "dict", "sum"]),
        _tiny_args,
    ),
    Family(
        "big_args",
        big_args,
        "large arguments with some Python work",
        _grid(nbytes=[10000, 1 << 20, 8 << 20], n=[0, 20000, 200000]),
        _big_args_args,
    ),
    Family(
        "big_result",
        big_result,
        "large results after some Python work",
        _grid(nbytes=[10000, 1 << 20, 8 << 20], n=[0, 20000, 200000]),
        _same("nbytes", "n"),
    ),
    Family(
        "growing",
        growing_loop,
        "Python loops whose cost grows with the input",
        _grid(base=[100, 2000, 20000, 80000], growth=[4.0, 16.0]),
        _growing,
    ),
    Family(
        "growing_sort",
        growing_sort,
        "sorting lists that grow with the input",
        _grid(base=[200, 5000, 50000], growth=[4.0, 16.0]),
        _growing,
    ),
)


def family_names() -> list[str]:
    """Names of all families, in collection order."""
    return [f.name for f in FAMILIES]


def instances(quick: bool = False, replicas: int = 1, families: Sequence[str] | None = None) -> list[Instance]:
    """Instances to collect: every grid point, or every third one when ``quick``.

    ``replicas`` measures each grid point that many times (independent
    probes and timings, hence independent noise).
    """
    out: list[Instance] = []
    chosen = set(families) if families is not None else None
    for family in FAMILIES:
        if chosen is not None and family.name not in chosen:
            continue
        grid = family.grid
        if quick:
            step = 3 if len(grid) >= 6 else 2
            grid = grid[1::step] if len(grid) > 2 else grid[:1]
        for replica in range(replicas):
            out.extend(Instance(family, params, replica) for params in grid)
    # Interleave families so that an interrupted run covers all of them.
    out.sort(key=lambda inst: (inst.replica, _position(inst)))
    return out


def _position(inst: Instance) -> tuple[int, int]:
    family_index = FAMILIES.index(inst.family)
    return (inst.family.grid.index(inst.params), family_index)

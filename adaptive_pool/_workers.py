"""A process pool in which one crash costs one task.

Each worker process is looked after by one thread in the parent that hands
it a single batch at a time and waits for the answer.  The backlog stays in
the parent, so when a worker dies (``os._exit``, a signal, a segfault, the
OOM killer) the only batch lost is the one it was running: that batch's future
gets :class:`WorkerCrashedError`, the thread starts a fresh process, and
every other batch runs exactly once.  ``concurrent.futures.ProcessPoolExecutor``
and loky instead mark the whole pool broken and fail everything pending.

Workers are started with :mod:`subprocess` running ``_worker.py`` by path:
no ``fork()`` of a threaded parent, and the user's ``__main__`` module is
never re-imported in the child, so a script needs no main guard.  Functions,
arguments and results travel with cloudpickle, which sends lambdas,
closures and ``__main__`` functions by value.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any, Callable

from ._batch import CANCELLED, Batch

__all__ = ["WorkerCrashedError", "RemoteTraceback", "RemoteError", "WorkerPool", "settle_outcome"]

logger = logging.getLogger("adaptive_pool")

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")

# Native thread pools (OpenBLAS, MKL, OpenMP) in each worker would otherwise
# start one thread per core each: N workers x N threads oversubscribes.
_THREAD_LIMIT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class WorkerCrashedError(BrokenProcessPool):
    """The worker process running this task died before answering.

    Only the task that was running is failed; the pool replaces the worker
    and goes on.  It subclasses ``BrokenProcessPool`` so that code written
    for the standard library's pool still catches it.
    """


class RemoteTraceback(Exception):
    """Carries the worker's traceback text as the ``__cause__`` of an error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(Exception):
    """An exception from a worker that could not be sent back as itself."""


def settle_outcome(outcome: tuple[Any, ...]) -> tuple[bool, Any]:
    """Turn a worker's outcome tuple into ``(ok, value_or_exception)``."""
    if outcome[0]:
        return True, outcome[1]
    _, exc, type_name, message, tb_text = outcome
    if exc is None:
        exc = RemoteError(f"{type_name}: {message}")
    if tb_text:
        exc.__cause__ = RemoteTraceback(tb_text)
    return False, exc


class _WorkerProcess:
    """One child process and the two pipes to it."""

    def __init__(self, init_payload: bytes | None, env: dict[str, str]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, _WORKER_SCRIPT, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                close_fds=True,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.inbox = Connection(from_child_r, writable=False)
        self.outbox = Connection(to_child_w, readable=False)
        self.outbox.send_bytes(pickle.dumps((list(sys.path), os.getcwd(), init_payload)))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def describe_death(self) -> str:
        """Why the process ended, in words."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (the OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
            return f"was killed by {name}{hint}"
        return f"exited with code {code}"

    def stop(self) -> None:
        """Ask the child to exit and reap it; kill it if it does not."""
        try:
            self.outbox.send_bytes(b"")
        except OSError:
            pass
        for conn in (self.outbox, self.inbox):
            try:
                conn.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """End the child now (used for shutdown without waiting)."""
        try:
            self.proc.kill()
        except OSError:
            pass


class WorkerPool:
    """A growable set of worker processes fed from a backlog in the parent."""

    def __init__(
        self,
        max_workers: int,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        on_broken: Callable[[str], None] | None = None,
    ) -> None:
        self._max_workers = max(1, max_workers)
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        self._on_broken = on_broken
        self._cond = threading.Condition()
        self._backlog: deque[Batch] = deque()
        self._slots: list[threading.Thread] = []
        self._idle = 0
        self._shutdown = False
        self._broken: str | None = None
        self._processes: set[_WorkerProcess] = set()
        self._init_payload: bytes | None = None
        _LIVE_POOLS.add(self)

    # -- public ----------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """How many worker processes may run at once."""
        return self._max_workers

    def grow(self, max_workers: int) -> None:
        """Allow more workers (never fewer: running ones are not stopped)."""
        with self._cond:
            self._max_workers = max(self._max_workers, max_workers)

    def prestart(self, count: int) -> None:
        """Start up to ``count`` workers now, before any batch needs them."""
        with self._cond:
            while len(self._slots) < min(count, self._max_workers) and not self._shutdown:
                self._add_slot()

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; a worker picks it up when one is free."""
        with self._cond:
            if self._broken is not None:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._backlog.append(batch)
            if self._idle == 0 and len(self._slots) < self._max_workers:
                self._add_slot()
            self._cond.notify()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking batchs; finish (or cancel) the backlog; stop the workers."""
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                cancelled = list(self._backlog)
                self._backlog.clear()
            else:
                cancelled = []
            self._cond.notify_all()
            slots = list(self._slots)
        for batch in cancelled:
            batch.settle(CANCELLED)
        if wait:
            for slot in slots:
                if slot is not threading.current_thread():
                    slot.join()

    # -- internals ---------------------------------------------------------

    def _add_slot(self) -> None:
        slot = threading.Thread(
            target=_slot_main,
            args=(weakref.ref(self),),
            name=f"adaptive_pool-process-feeder-{len(self._slots)}",
            daemon=True,
        )
        self._slots.append(slot)
        slot.start()

    def _next_batch(self) -> Batch | None:
        """Block until there is a batch or the pool is shut down and drained."""
        with self._cond:
            self._idle += 1
            try:
                while not self._backlog:
                    if self._shutdown or self._broken is not None:
                        return None
                    self._cond.wait()
                return self._backlog.popleft()
            finally:
                self._idle -= 1

    def _spawn(self) -> _WorkerProcess:
        if self._init_payload is None and self._initializer is not None:
            import cloudpickle

            self._init_payload = cloudpickle.dumps((self._initializer, self._initargs), protocol=5)
        env = dict(os.environ)
        per_worker = str(max(1, (os.cpu_count() or 1) // self._max_workers))
        for var in _THREAD_LIMIT_VARS:
            env.setdefault(var, per_worker)
        process = _WorkerProcess(self._init_payload, env)
        with self._cond:
            self._processes.add(process)
        reply = pickle.loads(process.inbox.recv_bytes())
        if reply[0] == "init_error":
            self._retire(process)
            self._break(
                "A process in the process pool was terminated abruptly while the "
                "future was running or pending: its initializer raised an exception"
            )
            raise BrokenProcessPool(self._broken)
        return process

    def _retire(self, process: _WorkerProcess) -> None:
        with self._cond:
            self._processes.discard(process)
        process.stop()

    def _break(self, why: str) -> None:
        with self._cond:
            if self._broken is not None:
                return
            self._broken = why
            pending = list(self._backlog)
            self._backlog.clear()
            self._cond.notify_all()
        error = BrokenProcessPool(why)
        for batch in pending:
            batch.settle(error)
        if self._on_broken is not None:
            self._on_broken(why)

    def _kill_all(self) -> None:
        with self._cond:
            processes = list(self._processes)
        for process in processes:
            process.kill()


def _slot_main(pool_ref: "weakref.ref[WorkerPool]") -> None:
    """One feeder thread: hand a worker one batch at a time, replace it if it dies."""
    process: _WorkerProcess | None = None
    done_here = 0
    try:
        while True:
            pool = pool_ref()
            if pool is None:
                return
            batch = pool._next_batch()
            if batch is None:
                return
            if not batch.start():
                continue
            try:
                payload = _dumps_batch(batch)
            except Exception as exc:
                batch.settle(exc)
                continue
            try:
                if process is None:
                    process = pool._spawn()
                    done_here = 0
            except BrokenProcessPool as exc:
                batch.settle(exc)
                return
            except OSError as exc:
                batch.settle(BrokenProcessPool(f"could not start a worker process: {exc}"))
                continue
            outcome = _exchange(process, payload)
            if isinstance(outcome, str):
                why = (
                    f"the worker process (pid {process.pid}) running this task {outcome}; "
                    "the task's effects in that process are lost"
                )
                logger.warning("adaptive_pool: %s", why)
                batch.settle(WorkerCrashedError(why))
                pool._retire(process)
                process = None
                continue
            batch.settle([settle_outcome(o) for o in outcome])
            done_here += 1
            limit = pool._max_tasks_per_child
            if limit is not None and done_here >= limit:
                pool._retire(process)
                process = None
            del batch, pool
    finally:
        if process is not None:
            pool = pool_ref()
            if pool is not None:
                pool._retire(process)
            else:
                process.stop()


def _dumps_batch(batch: Batch) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps((batch.fn, batch.calls), protocol=5)
    except Exception as exc:
        try:
            cloudpickle.dumps(batch.fn, protocol=5)
        except Exception:
            what = "the function"
        else:
            what = "the arguments"
        raise pickle.PicklingError(
            f"{what} could not be pickled to send to a worker process: {exc}"
        ) from exc


def _exchange(process: _WorkerProcess, payload: bytes) -> list[tuple[Any, ...]] | str:
    """Send one batch and wait for its outcomes; a string says how the worker died."""
    try:
        process.outbox.send_bytes(payload)
        reply = process.inbox.recv_bytes()
    except (EOFError, OSError):
        return process.describe_death()
    try:
        kind, outcomes = pickle.loads(reply)
    except Exception as exc:
        error = RemoteError(f"the worker's answer could not be unpickled: {exc!r}")
        return [(False, error, "RemoteError", str(error), "")]
    assert kind == "done"
    return list(outcomes)


_LIVE_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def _at_exit() -> None:
    # Like the standard library's pools: at interpreter exit, queued work
    # still runs to completion, then the workers are stopped.
    for pool in list(_LIVE_POOLS):
        pool.shutdown(wait=True)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]

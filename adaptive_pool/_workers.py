"""A process pool in which one crash costs one task.

Each worker process is looked after by one feeder thread in the parent that
hands it one batch at a time.  The backlog stays in the parent, so when a
worker dies (``os._exit``, a signal, a segfault, the OOM killer) only the
call it was running is lost: that call's future gets
:class:`WorkerCrashedError`, the feeder starts a fresh process, and every
other call runs exactly once.  Within a batch of submitted calls the worker
streams each outcome back as soon as the call returns, so the parent knows
which call was running when the process died; the calls after it run on the
new process.  (A ``map`` chunk is answered in one message, to keep chunks
cheap; a crash fails that chunk, and ``map`` raises, as it would for an
exception.)  ``concurrent.futures.ProcessPoolExecutor`` and loky instead
mark the whole pool broken and fail everything pending.

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
import select
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any, Callable

from ._batch import CANCELLED, Batch, Call
from ._identity import describe

__all__ = ["RemoteError", "RemoteTraceback", "WorkerCrashedError", "WorkerPool", "settle_outcome"]

logger = logging.getLogger("adaptive_pool")
# The standard library reports initializer failures on this logger.
_futures_logger = logging.getLogger("concurrent.futures")

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

# How many fresh workers in a row may die before even reading a job before
# the job is failed instead of handed to yet another one.
_HANDOFF_ATTEMPTS = 3

_SIGNAL_HINTS = {
    "SIGKILL": " (sent by the OOM killer when memory runs out, or by kill -9)",
    "SIGSEGV": " (a segmentation fault, usually in C code)",
    "SIGBUS": " (a bus error, usually in C code)",
    "SIGABRT": " (abort(), usually a failed check in C code)",
    "SIGFPE": " (a floating point exception in C code)",
    "SIGILL": " (an illegal instruction in C code)",
}


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


def _open_pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


#: Import finders a worker can do without: the standard library's (the path
#: finder covers site-packages once the parent's sys.path is set in the
#: worker) and setuptools' distutils shim, which only redirects ``import
#: distutils`` (a ``.pth`` file in most virtual environments).
_PLAIN_FINDER_MODULES = frozenset(
    {
        "_frozen_importlib",
        "_frozen_importlib_external",
        "importlib._bootstrap",
        "importlib._bootstrap_external",
        "zipimport",
        "_distutils_hack",
    }
)


def _site_flags() -> list[str]:
    """``["-S"]`` when a worker can skip the site module, else ``[]``.

    ``site`` costs a fresh interpreter ~15 ms (half its start-up): it reads
    the ``.pth`` files of every site-packages directory.  A worker gets the
    parent's ``sys.path`` before it imports anything, so it can do without,
    unless the parent imports through something ``site`` set up beyond
    paths: a finder from a ``.pth`` file (editable installs), or a
    ``sitecustomize``/``usercustomize`` module.
    """
    if sys.flags.no_site:
        return ["-S"]
    if "sitecustomize" in sys.modules or "usercustomize" in sys.modules:
        return []
    for finder in sys.meta_path:
        module = getattr(finder, "__module__", None) or type(finder).__module__
        if module not in _PLAIN_FINDER_MODULES:
            return []
    return ["-S"]


class _WorkerProcess:
    """One child process and the two pipes to it."""

    def __init__(self, init_payload: bytes | None, env: dict[str, str]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *_site_flags(), _WORKER_SCRIPT, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                close_fds=True,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.inbox = Connection(from_child_r, writable=False)
        self.outbox = Connection(to_child_w, readable=False)
        # Wait on the pipe and on the process itself: if something the task
        # started still holds the pipe open, the death is seen all the same.
        self._pidfd = _open_pidfd(self.proc.pid)
        self._poller: Any = None
        if self._pidfd is not None:
            self._poller = select.poll()
            self._poller.register(self.inbox.fileno(), select.POLLIN)
            self._poller.register(self._pidfd, select.POLLIN)
        #: The ``sys.path`` and working directory the worker has now.
        self.context = _import_context()
        self.handshake = self.send(pickle.dumps((*self.context, init_payload)))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, payload: bytes) -> bool:
        """Send one frame; False if the worker was gone (so it never read it)."""
        try:
            self.outbox.send_bytes(payload)
            return True
        except OSError:
            return False

    def sync_context(self) -> bool:
        """Bring the worker's ``sys.path`` and cwd up to date with ours.

        A notebook that appends to ``sys.path`` and imports a module after
        the pool started still gets that module's functions run.  False if
        the worker was gone.
        """
        current = _import_context()
        if current == self.context:
            return True
        self.context = current
        return self.send(_CONTEXT_PREFIX + pickle.dumps(current))

    def recv(self) -> bytes | None:
        """The next frame from the worker, or None once it has died."""
        poller = self._poller
        if poller is not None:
            inbox_fd = self.inbox.fileno()
            while True:
                try:
                    events = poller.poll()
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    continue
                ready = {fd for fd, _ in events}
                if inbox_fd in ready:
                    break
                if self._pidfd in ready:
                    # Dead; what it wrote before dying is still in the pipe.
                    if self.inbox.poll(0):
                        break
                    return None
        try:
            return self.inbox.recv_bytes()
        except (EOFError, OSError):
            return None

    def describe_death(self) -> str:
        """Why the process stopped answering, in words (it is reaped here)."""
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            return "closed its pipe to the parent without exiting, and was killed"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by {name}{_SIGNAL_HINTS.get(name, '')}"
        return f"exited with code {code} (os._exit() or a C library's exit())"

    def stop(self) -> None:
        """Ask the child to exit and reap it; kill it if it does not."""
        self.send(b"")
        for conn in (self.outbox, self.inbox):
            try:
                conn.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        self._close_pidfd()

    def kill(self) -> None:
        """End the child now (used for shutdown without waiting)."""
        try:
            self.proc.kill()
        except OSError:
            pass

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            try:
                os.close(self._pidfd)
            except OSError:
                pass
            self._pidfd = None
            self._poller = None


# A frame starting with this updates the worker's sys.path and cwd (pickles
# start with b"\x80", so it cannot be mistaken for a job).
_CONTEXT_PREFIX = b"CTX:"


def _import_context() -> tuple[list[str], str]:
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed
        cwd = "/"
    return list(sys.path), cwd


class _Shared:
    """The state feeder threads share.  It holds no reference to the pool or
    to the executor, so a feeder waiting for work keeps neither alive."""

    def __init__(
        self,
        max_workers: int,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks_per_child: int | None,
    ) -> None:
        self.max_workers = max(1, max_workers)
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks_per_child = max_tasks_per_child
        self.cond = threading.Condition()
        self.backlog: deque[Batch] = deque()
        self.slots: list[threading.Thread] = []
        self.idle = 0
        self.shutdown = False
        self.broken: str | None = None
        self.processes: set[_WorkerProcess] = set()
        self.init_payload: bytes | None = None
        self.crash_retries = 0
        #: True once a worker has answered its handshake.
        self.ready = False

    def next_batch(self) -> Batch | None:
        """Block until there is a batch or the pool is shut down and drained."""
        with self.cond:
            self.idle += 1
            try:
                while not self.backlog:
                    if self.shutdown or self.broken is not None:
                        return None
                    self.cond.wait()
                return self.backlog.popleft()
            finally:
                self.idle -= 1

    def add_slot(self, pool_ref: weakref.ref[WorkerPool], eager: bool = False) -> None:
        """Start a feeder thread (caller holds ``cond``)."""
        slot = threading.Thread(
            target=_slot_main,
            args=(self, pool_ref, eager),
            name=f"adaptive_pool-process-feeder-{len(self.slots)}",
            daemon=True,
        )
        self.slots.append(slot)
        slot.start()

    def retire(self, process: _WorkerProcess) -> None:
        with self.cond:
            self.processes.discard(process)
        process.stop()

    def kill_all(self) -> None:
        with self.cond:
            processes = list(self.processes)
        for process in processes:
            process.kill()


class WorkerPool:
    """A growable set of worker processes fed from a backlog in the parent.

    ``crash_retries``: a call whose worker dies under it is run again, on a
    new worker, up to this many times before its future fails (default 0:
    a crash fails the call).  Only for work that is safe to repeat; a retried
    call of a ``map`` chunk may run again although it finished before the
    crash (its result died with the worker).
    """

    def __init__(
        self,
        max_workers: int,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        on_broken: Callable[[str], None] | None = None,
        crash_retries: int = 0,
    ) -> None:
        if not isinstance(crash_retries, int) or isinstance(crash_retries, bool) or crash_retries < 0:
            raise ValueError(f"crash_retries must be an int >= 0, not {crash_retries!r}")
        self._shared = _Shared(max_workers, initializer, tuple(initargs), max_tasks_per_child)
        #: How many times a call whose worker died is run again on a new worker
        #: before its future fails (0: never; the user opts in).
        self._shared.crash_retries = crash_retries
        self._on_broken = on_broken
        # A pool dropped without shutdown() still finishes its backlog and
        # stops its workers (the feeders hold only ``_shared``).
        self._finalizer = weakref.finalize(self, _shutdown_shared, self._shared)
        _LIVE_POOLS.add(self)

    # -- public ----------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """How many worker processes may run at once."""
        return self._shared.max_workers

    @property
    def _max_tasks_per_child(self) -> int | None:
        return self._shared.max_tasks_per_child

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes alive now (for tests and tools)."""
        with self._shared.cond:
            return sorted(p.pid for p in self._shared.processes)

    def grow(self, max_workers: int) -> None:
        """Allow more workers (never fewer: running ones are not stopped)."""
        shared = self._shared
        with shared.cond:
            shared.max_workers = max(shared.max_workers, max_workers)
            # Batches already waiting get the new workers now, not at the next submit.
            if shared.shutdown:
                return
            wanted = min(len(shared.backlog) - shared.idle, shared.max_workers - len(shared.slots))
            for _ in range(wanted):
                shared.add_slot(weakref.ref(self))

    @property
    def ready(self) -> bool:
        """True once a worker process has started and is ready for work."""
        return self._shared.ready

    def prestart(self, count: int) -> None:
        """Start up to ``count`` workers now, before any batch needs them."""
        shared = self._shared
        with shared.cond:
            while len(shared.slots) < min(count, shared.max_workers) and not shared.shutdown:
                shared.add_slot(weakref.ref(self), eager=True)

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; a worker picks it up when one is free."""
        shared = self._shared
        with shared.cond:
            if shared.broken is not None:
                raise BrokenProcessPool(shared.broken)
            if shared.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            shared.backlog.append(batch)
            if len(shared.backlog) > shared.idle and len(shared.slots) < shared.max_workers:
                shared.add_slot(weakref.ref(self))
            shared.cond.notify()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking batches; finish (or cancel) the backlog; stop the workers."""
        shared = self._shared
        with shared.cond:
            shared.shutdown = True
            if cancel_futures:
                cancelled = list(shared.backlog)
                shared.backlog.clear()
            else:
                cancelled = []
            shared.cond.notify_all()
            slots = list(shared.slots)
        for batch in cancelled:
            batch.settle(CANCELLED)
        if wait:
            for slot in slots:
                if slot is not threading.current_thread():
                    slot.join()

    # -- internals ---------------------------------------------------------

    @property
    def _processes(self) -> set[_WorkerProcess]:
        return self._shared.processes

    def _kill_all(self) -> None:
        self._shared.kill_all()

    def _break(self, why: str) -> None:
        """The initializer failed: fail the backlog and refuse new work (stdlib rules)."""
        _break_shared(self._shared, why)
        if self._on_broken is not None:
            self._on_broken(why)


def _shutdown_shared(shared: _Shared) -> None:
    with shared.cond:
        shared.shutdown = True
        shared.cond.notify_all()


def _break_shared(shared: _Shared, why: str) -> bool:
    with shared.cond:
        if shared.broken is not None:
            return False
        shared.broken = why
        pending = list(shared.backlog)
        shared.backlog.clear()
        shared.cond.notify_all()
    error = BrokenProcessPool(why)
    for batch in pending:
        batch.settle(error)
    return True


class _InitFailed(Exception):
    """The pool is broken: a worker's initializer failed."""


class _SpawnFailed(Exception):
    """A worker process could not be started (the pool itself is fine)."""


def _spawn(shared: _Shared) -> _WorkerProcess:
    """Start a worker and wait until it is ready (or say why it is not)."""
    if shared.init_payload is None and shared.initializer is not None:
        import cloudpickle

        try:
            shared.init_payload = cloudpickle.dumps((shared.initializer, shared.initargs), protocol=5)
        except Exception as exc:
            raise _InitFailed(
                f"the initializer and its arguments could not be pickled for the worker processes: {exc}"
            ) from exc
    env = dict(os.environ)
    env["ADAPTIVE_POOL_WORKER"] = "1"  # the package loads lazily there (see its __init__)
    per_worker = str(max(1, (os.cpu_count() or 1) // shared.max_workers))
    for var in _THREAD_LIMIT_VARS:
        env.setdefault(var, per_worker)
    try:
        process = _WorkerProcess(shared.init_payload, env)
    except OSError as exc:
        raise _SpawnFailed(f"could not start a worker process: {exc}") from exc
    with shared.cond:
        shared.processes.add(process)
    frame = process.recv() if process.handshake else None
    if frame is None:
        how = process.describe_death()
        shared.retire(process)
        if shared.initializer is not None:
            raise _InitFailed(
                "A process in the process pool was terminated abruptly while the future was "
                f"running or pending: a new worker process {how} while running its initializer"
            )
        raise _SpawnFailed(f"a new worker process {how} before it was ready")
    reply = pickle.loads(frame)
    if reply[0] == "init_error":
        # Logged here, in the parent, where the standard library logs it and
        # where the application's logging configuration applies.
        _futures_logger.critical("Exception in initializer:\n%s", reply[1].rstrip())
        shared.retire(process)
        raise _InitFailed(
            "A process in the process pool was terminated abruptly while the "
            "future was running or pending: its initializer raised an exception"
        )
    shared.ready = True
    return process


def _slot_main(shared: _Shared, pool_ref: weakref.ref[WorkerPool], eager: bool) -> None:
    """One feeder thread: hand a worker one batch at a time, replace it if it dies."""
    feeder = _Feeder(shared, pool_ref)
    try:
        if eager:
            try:
                feeder.process = _spawn(shared)
            except _InitFailed as exc:
                feeder.broken(str(exc))
                return
            except _SpawnFailed as exc:
                logger.warning("adaptive_pool: %s", exc)
        while True:
            batch = shared.next_batch()
            if batch is None:
                return
            if not batch.start():
                continue
            feeder.run(batch)
            del batch
            if shared.broken is not None:
                return
    finally:
        if feeder.process is not None:
            shared.retire(feeder.process)


class _Feeder:
    """Runs batches on one worker process at a time, replacing it as needed."""

    def __init__(self, shared: _Shared, pool_ref: weakref.ref[WorkerPool]) -> None:
        self.shared = shared
        self.pool_ref = pool_ref
        self.process: _WorkerProcess | None = None
        self.done_here = 0  # calls run by the current process (max_tasks_per_child)
        self.crashes: dict[int, int] = {}  # call index -> times its worker died under it (this batch)
        self.isolate = False  # stream even a map chunk: it crashed once already

    def broken(self, why: str) -> None:
        if _break_shared(self.shared, why):
            pool = self.pool_ref()
            if pool is not None and pool._on_broken is not None:
                pool._on_broken(why)

    def run(self, batch: Batch) -> None:
        """Run every call of a started batch; settle it with one outcome per call."""
        calls = batch.call_pairs()
        outcomes: list[tuple[bool, Any] | None] = [None] * len(calls)
        todo = list(range(len(calls)))
        name = describe(batch.fn)
        self.crashes = {}
        self.isolate = False
        try:
            while todo:
                stream = not batch.collect or self.isolate
                limit = self.shared.max_tasks_per_child
                room = len(todo) if limit is None else max(1, limit - self.done_here)
                piece = todo[:room]
                payload = _dumps_job(batch.fn, calls, piece, stream, outcomes)
                if payload is None:  # nothing in this piece could be pickled
                    todo = todo[len(piece) :]
                    continue
                piece = [i for i in piece if outcomes[i] is None]
                answered = self._exchange(payload, piece, stream, name, outcomes)
                todo = [i for i in todo if outcomes[i] is None]
                self.done_here += answered
                if limit is not None and self.done_here >= limit and self.process is not None:
                    self.shared.retire(self.process)
                    self.process = None
        except _InitFailed as exc:
            self.broken(str(exc))
            error: BaseException = BrokenProcessPool(str(exc))
            outcomes = [o if o is not None else (False, error) for o in outcomes]
        except _SpawnFailed as exc:
            error = BrokenProcessPool(str(exc))
            outcomes = [o if o is not None else (False, error) for o in outcomes]
        except BaseException as exc:  # a bug here must not leave futures pending forever
            logger.exception("adaptive_pool: process pool feeder failed")
            error = BrokenProcessPool(f"the process pool failed internally: {exc!r}")
            outcomes = [o if o is not None else (False, error) for o in outcomes]
            if self.process is not None:
                self.shared.retire(self.process)
                self.process = None
        batch.settle(outcomes)

    def _ensure_process(self) -> _WorkerProcess:
        if self.process is not None and not self.process.alive():
            # Died while idle (the OOM killer picks big idle processes too):
            # nothing of ours was running, so just replace it.
            logger.info(
                "adaptive_pool: idle worker process (pid %d) %s; starting another",
                self.process.pid,
                self.process.describe_death(),
            )
            self.shared.retire(self.process)
            self.process = None
        if self.process is None:
            self.process = _spawn(self.shared)
            self.done_here = 0
        return self.process

    def _exchange(
        self,
        payload: bytes,
        piece: list[int],
        stream: bool,
        name: str,
        outcomes: list[tuple[bool, Any] | None],
    ) -> int:
        """Run ``piece`` on the worker; fill ``outcomes``; return calls answered.

        If the worker dies, the call it was running (streamed: the first
        unanswered one; a chunk: all of them) fails with
        :class:`WorkerCrashedError`; streamed calls after it stay
        unanswered, to run on the next worker.
        """
        for _ in range(_HANDOFF_ATTEMPTS):
            process = self._ensure_process()
            if process.sync_context() and process.send(payload):
                break
            # The pipe was closed before the job went in: it never ran.
            logger.info("adaptive_pool: worker process (pid %d) %s", process.pid, process.describe_death())
            self.shared.retire(process)
            self.process = None
        else:
            lost = WorkerCrashedError(
                f"{_HANDOFF_ATTEMPTS} worker processes in a row died before they could "
                f"read the job for {name}; it did not run"
            )
            for i in piece:
                outcomes[i] = (False, lost)
            return len(piece)
        answered = 0
        while answered < len(piece):
            frame = process.recv()
            if frame is None:
                self._crashed(process, piece, answered, stream, name, outcomes)
                return answered + (1 if stream else len(piece) - answered)
            try:
                kind, body = pickle.loads(frame)
            except Exception as exc:
                error = RemoteError(f"the worker's answer could not be unpickled: {exc!r}")
                kind, body = ("one" if stream else "fail"), (False, error, "RemoteError", str(error), "")
            del frame
            if kind == "one":
                outcomes[piece[answered]] = settle_outcome(body)
                answered += 1
            elif kind == "all":
                for i, outcome in zip(piece[answered:], body):
                    outcomes[i] = settle_outcome(outcome)
                answered = len(piece)
            else:  # "fail": the job could not be read; it applies to every call
                ok_value = settle_outcome(body)
                for i in piece[answered:]:
                    outcomes[i] = ok_value
                answered = len(piece)
        return answered

    def _crashed(
        self,
        process: _WorkerProcess,
        piece: list[int],
        answered: int,
        stream: bool,
        name: str,
        outcomes: list[tuple[bool, Any] | None],
    ) -> None:
        how = process.describe_death()
        self.shared.retire(process)
        self.process = None
        if stream:
            why = (
                f"the worker process (pid {process.pid}) running {name}() {how}; "
                "the task's effects in that process are lost"
            )
            lost = piece[answered : answered + 1]
        else:
            why = (
                f"the worker process (pid {process.pid}) running a chunk of {len(piece)} calls "
                f"of {name}() {how}; the chunk's results are lost (calls after the one that "
                "crashed did not run)"
            )
            lost = piece[answered:]
        retries = self.shared.crash_retries
        attempts = max(self.crashes.get(i, 0) for i in lost) + 1
        if attempts <= retries:
            # The user opted in: run them again, one by one, on a new worker.
            for i in lost:
                self.crashes[i] = self.crashes.get(i, 0) + 1
            self.isolate = True
            logger.warning("adaptive_pool: %s; running it again (retry %d of %d)", why, attempts, retries)
            return
        if retries:
            why += f" (it crashed {attempts} times; crash_retries={retries})"
        logger.warning("adaptive_pool: %s", why)
        error = WorkerCrashedError(why)
        for i in lost:
            outcomes[i] = (False, error)


def _dumps_job(
    fn: Callable[..., Any],
    calls: list[Call],
    piece: list[int],
    stream: bool,
    outcomes: list[tuple[bool, Any] | None],
) -> bytes | None:
    """Pickle ``fn`` and the calls in ``piece`` for a worker.

    What cannot be pickled fails only its own calls: an unpicklable function
    fails all of them, unpicklable arguments fail only their call (its
    outcome is set in ``outcomes``, it is left out of the job).  None if no
    call is left to send.
    """
    import cloudpickle

    try:
        data: bytes = cloudpickle.dumps((fn, [calls[i] for i in piece], stream), protocol=5)
        return data
    except Exception as exc:
        first_error: Exception = exc
    try:
        cloudpickle.dumps(fn, protocol=5)
    except Exception as exc:
        error = pickle.PicklingError(
            f"the function {describe(fn)} could not be pickled to send it to a worker process: {exc}"
        )
        error.__cause__ = exc
        for i in piece:
            outcomes[i] = (False, error)
        return None
    sendable = []
    for i in piece:
        try:
            cloudpickle.dumps(calls[i], protocol=5)
        except Exception as exc:
            error = pickle.PicklingError(
                f"the arguments of this call of {describe(fn)} could not be pickled to send "
                f"them to a worker process: {exc}"
            )
            error.__cause__ = exc
            outcomes[i] = (False, error)
        else:
            sendable.append(i)
    if not sendable:
        return None
    try:
        data = cloudpickle.dumps((fn, [calls[i] for i in sendable], stream), protocol=5)
        return data
    except Exception as exc:  # pickles alone, not together: give up on the lot
        error = pickle.PicklingError(f"the job for {describe(fn)} could not be pickled: {first_error}")
        error.__cause__ = exc
        for i in sendable:
            outcomes[i] = (False, error)
        return None


_LIVE_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _at_exit() -> None:
    # Like the standard library's pools: at interpreter exit, queued work
    # still runs to completion, then the workers are stopped.
    for pool in list(_LIVE_POOLS):
        pool.shutdown(wait=True)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]

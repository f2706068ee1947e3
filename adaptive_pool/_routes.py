"""The three routes a batch can take: a thread pool, a process pool, inline.

A route only runs what it is given.  It knows nothing of probing or
policies (that is :mod:`adaptive_pool._executor`'s job), which keeps each
testable on its own with ``prefer=``.  Every route starts its workers lazily,
is reused for the executor's lifetime, runs the user's initializer in each
of its workers, and reports a failing initializer through ``on_broken``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, TypeVar

from ._batch import CANCELLED, Batch

__all__ = ["ForeignProcessRoute", "InlineRoute", "ProcessRoute", "Route", "ThreadRoute"]

# The standard library logs initializer failures here; users and CPython's
# own tests look for them on this logger.
_futures_logger = logging.getLogger("concurrent.futures")

BrokenHandler = Callable[[str], None]
T = TypeVar("T")


class Route(ABC):
    """Runs batches; subclasses say where."""

    #: ``"thread"``, ``"process"`` or ``"inline"``.
    name: str

    @abstractmethod
    def submit(self, batch: Batch) -> None:
        """Start ``batch`` eventually; never block on the batch's work."""

    @abstractmethod
    def ensure_workers(self, count: int) -> None:
        """Allow at least ``count`` concurrent workers."""

    @abstractmethod
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Finish or cancel queued batches and release the workers."""

    def threads(self) -> list[threading.Thread]:
        """Threads this route started in this process (they end after shutdown)."""
        return []

    def ready(self) -> bool:
        """Whether a batch submitted now could start without waiting for
        workers to come up (a process pool still starting is not)."""
        return True

    def prestart(self, count: int) -> None:
        """Start ``count`` workers ahead of need, where starting takes a while."""


class ThreadRoute(Route):
    """A thread pool that grows on demand up to a limit that can be raised.

    Like the standard library's pool, a new thread starts only when no idle
    one is waiting, so a pool allowed 128 threads that runs 2 tasks at a time
    has 2 threads.
    """

    name = "thread"

    def __init__(
        self,
        max_threads: int,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        thread_name_prefix: str = "",
        on_broken: BrokenHandler | None = None,
    ) -> None:
        self._max_threads = max(1, max_threads)
        self._initializer = initializer
        self._initargs = initargs
        self._prefix = thread_name_prefix or f"AutoExecutor-{self.name}"
        # Threads are named ``<prefix>_<n>``, as in the standard library.
        self._numbering = itertools.count()
        self._on_broken = on_broken
        self._queue: queue.SimpleQueue[Batch | _Lane | None] = queue.SimpleQueue()
        # One token per idle worker thread (a C-level queue: much cheaper
        # per submit than threading.Semaphore, which is written in Python).
        self._idle: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._shutdown = False
        self._broken: str | None = None
        _LIVE_ROUTES.add(self)

    @property
    def thread_count(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    def threads(self) -> list[threading.Thread]:
        """The threads started so far."""
        with self._lock:
            return list(self._threads)

    def ensure_workers(self, count: int) -> None:
        """Raise the thread limit to ``count`` (it never shrinks)."""
        if count <= self._max_threads:
            return
        with self._lock:
            self._max_threads = max(self._max_threads, count)

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; start a thread if none is idle and the limit allows."""
        self._queue_work(batch, beyond_limit=False)

    def _queue_work(self, work: Batch | _Lane, *, beyond_limit: bool) -> None:
        if self._broken is not None:
            raise BrokenThreadPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._queue.put(work)
        try:
            self._idle.get_nowait()  # an idle thread will take it
            return
        except queue.Empty:
            pass
        with self._lock:
            if (beyond_limit or len(self._threads) < self._max_threads) and not self._shutdown:
                self._start_thread(idle_at_start=False)

    def prestart(self, count: int) -> None:
        """Have ``count`` threads (within the limit), the new ones idle.

        Probes are submitted to threads started beforehand: a probe that
        computes in Python holds the GIL, and a thread started after it
        needs the GIL for each step of its start (a switch interval, 5 ms,
        each), so the second probe began late.  A waiting thread still
        needs one hand-over of the GIL to pick its probe up.
        """
        with self._lock:
            while len(self._threads) < min(count, self._max_threads) and not self._shutdown:
                self._start_thread(idle_at_start=True)

    def _start_thread(self, *, idle_at_start: bool) -> None:
        thread = threading.Thread(
            target=_thread_main,
            args=(weakref.ref(self), self._queue, idle_at_start),
            name=f"{self._prefix}_{next(self._numbering)}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads after the queue drains (or is cancelled)."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            self._drain(CANCELLED)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _initialize(self) -> bool:
        if self._initializer is None:
            return True
        try:
            self._initializer(*self._initargs)
            return True
        except BaseException:
            _futures_logger.critical("Exception in initializer:", exc_info=True)
            self._break("A thread initializer failed, the thread pool is not usable anymore")
            return False

    def _break(self, why: str) -> None:
        with self._lock:
            if self._broken is not None:
                return
            self._broken = why
        self._drain(BrokenThreadPool(why))
        if self._on_broken is not None:
            self._on_broken(why)

    def _drain(self, outcome: Any) -> None:
        for work in _take_all(self._queue):
            if work is not None:
                work.settle(outcome)


def _thread_main(
    route_ref: weakref.ref[ThreadRoute], work: queue.SimpleQueue[Batch | _Lane | None], idle_at_start: bool = False
) -> None:
    route = route_ref()
    if route is None or not route._initialize():
        return
    idle = route._idle
    del route  # hold the route weakly while idle, so a dropped executor can go
    if idle_at_start:  # started ahead of work (prestart), not for a batch
        idle.put(None)
    while True:
        batch = work.get()
        if batch is None:
            work.put(None)  # wake the next thread too
            return
        batch.run_here()
        del batch
        route = route_ref()
        if route is None or route._shutdown and work.empty():
            return
        if route._broken is not None:
            return
        threads = len(route._threads)
        del route
        # No more tokens than threads: during a burst of submits every
        # finished call added one, and nothing took them.  The queue's list
        # grew to hundreds of entries, reallocated by the workers with
        # malloc between the user's calls; glibc then trimmed their heaps
        # and the calls' 1 MB buffers faulted in again (file I/O: twice the
        # page faults of ThreadPoolExecutor, 1.25x its time).
        if idle.qsize() < threads:
            idle.put(None)


class InlineRoute(Route):
    """Calls run back to back, one batch after another, on one thread.

    For calls far too small for a pool, the cost is the hand-off, not the
    work: here a single lane drains many calls per wake-up and ``map``
    sends whole chunks.  The lane borrows a thread of the executor's thread
    route while it has batches (the probes' threads are idle by then, and a
    thread of its own took a fraction of a millisecond to start, longer
    than a whole map of tiny calls may take); with none idle it starts one
    beyond the thread limit, so that calls waiting in thread tasks never
    wait for the lane (nested maps).  A map's consumer may run the map's
    batches itself instead (see ``MapPlan.run_on_consumer``): such a batch
    is shared once queued, and the lane, the consumer and a shutdown that
    cancels each claim it before touching it.  A batch of calls nobody could
    watch (see :func:`~adaptive_pool._bytecode.self_contained`) is *paced*:
    kept for its reader with no lane, until a shutdown sends one.
    Submitted calls, and maps with a timeout, an initializer or thread
    names, run on the lane only, so cancel, ``cancel_futures``,
    ``map(timeout=)`` and initializers behave as on any pool.
    """

    name = "inline"

    def __init__(self, threads: ThreadRoute) -> None:
        self._threads = threads
        # A C-level queue and a flag read without the lock: submit() of a
        # decided tiny call must cost little more than the thread pool's
        # (a Condition here cost 4-8 us per submit, contended by the lane).
        self._backlog: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._lane_out = False  # a lane is queued or running on a thread
        self._lane_in: threading.Event | None = None  # set when the lane ends (shutdown waits)
        self._shutdown = False
        # Paced batches queued for their readers, and whether they get a
        # lane all the same from now on (see unpace).
        self._paced: list[Batch] = []
        self._unpaced = False

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` behind the lane's others; send out a lane if none is."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        # A map's consumer may run it first (see MapPlan.run_on_consumer): the lane
        # and anything settling the backlog claim a batch before touching it.
        batch.share()
        if batch.paced:
            # It waits for its reader, with no lane: a lane's thread cost a
            # map of tiny calls more than running them did.
            with self._lock:
                if batch.paced and not self._unpaced:
                    self._paced.append(batch)
                    return
        self._backlog.put(batch)
        self._send_lane(batch)

    def taken(self, batch: Batch) -> None:
        """A map's reader took the paced ``batch`` over: forget it."""
        with self._lock:
            if batch in self._paced:
                self._paced.remove(batch)

    def unpace(self, batch: Batch | None = None) -> None:
        """Have a lane run ``batch`` though paced (its reader could not take
        it over), or (None) every batch, paced or not, from now on."""
        with self._lock:
            if batch is None:
                self._unpaced = True
                moved, self._paced = self._paced, []
            else:
                batch.paced = False
                moved = [batch] if batch in self._paced else []
                if moved:
                    self._paced.remove(batch)
        for queued in moved:
            self._backlog.put(queued)
        if moved:
            self._send_lane(None)

    def _take_paced(self) -> list[Batch]:
        with self._lock:
            paced, self._paced = self._paced, []
        return paced

    def _send_lane(self, batch: Batch | None) -> None:
        """Send out a lane unless one is out (``batch``: the one just queued)."""
        if self._lane_out:
            return  # the lane looks at the backlog again before it ends
        with self._lock:
            if self._lane_out:
                return
            self._lane_out = True
        try:
            self._threads._queue_work(_Lane(self), beyond_limit=True)
        except BaseException as exc:
            # The thread route is closed or broken: this batch fails with it
            # (the caller settles it), and so do any queued behind it meanwhile.
            _settle_claimed([queued for queued in _take_all(self._backlog) if queued is not batch], exc)
            self._lane_ended()
            if batch is not None and batch.claim():
                raise
            # else a map's consumer took it meanwhile and runs it.

    def ensure_workers(self, count: int) -> None:
        """Always one lane: that is the point of this route."""

    def threads(self) -> list[threading.Thread]:
        """None of its own: the lane runs on the thread route's threads."""
        return []

    def next_batch(self) -> Batch | None:
        """The lane's next batch, or None (and the lane ends) when there is none."""
        while True:
            try:
                return self._backlog.get_nowait()
            except queue.Empty:
                pass
            self._lane_ended()
            # A submit that saw the lane still out before the line above
            # sent none: look again, and take the lane back unless a submit
            # sent a new one meanwhile.  (Looking before clearing the flag
            # left a batch queued with no lane to run it.)
            if self._backlog.empty():
                return None
            with self._lock:
                if self._lane_out:
                    return None
                self._lane_out = True

    def _lane_ended(self) -> None:
        with self._lock:
            self._lane_out = False
            self._wake_shutdown()

    def _wake_shutdown(self) -> None:
        # Under the lock, as the lane ends: a shutdown waiting for it goes on.
        if self._lane_in is not None:
            self._lane_in.set()
            self._lane_in = None

    def settle_backlog(self, outcome: Any) -> None:
        """Settle every queued batch with ``outcome``: the lane will not run."""
        _settle_claimed(_take_all(self._backlog), outcome)
        self._lane_ended()
        # Batches queued while the flag still said a lane was out sent none.
        _settle_claimed(_take_all(self._backlog), outcome)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Finish (or cancel) the backlog; with ``wait``, until the lane is in."""
        self._shutdown = True
        if cancel_futures:
            _settle_claimed(_take_all(self._backlog) + self._take_paced(), CANCELLED)
        while wait:
            with self._lock:
                if not self._lane_out:
                    return
                if self._lane_in is None:
                    self._lane_in = threading.Event()
                lane_in = self._lane_in
            lane_in.wait()  # and look again: an ending lane may take itself back


def _settle_claimed(batches: list[Batch], outcome: Any) -> None:
    """Settle the batches no other thread claimed (a map's consumer may be
    running one: see InlineRoute.submit)."""
    for batch in batches:
        if batch.claim():
            batch.settle(outcome)


def _take_all(work: queue.SimpleQueue[T]) -> list[T]:
    """Everything queued in ``work`` now, taken out."""
    taken: list[T] = []
    while True:
        try:
            taken.append(work.get_nowait())
        except queue.Empty:
            return taken


class _Lane:
    """What the thread route runs for the inline route: its batches, in order."""

    __slots__ = ("_route",)

    def __init__(self, route: InlineRoute) -> None:
        self._route = route

    def run_here(self) -> None:
        route = self._route
        while True:
            batch = route.next_batch()
            if batch is None:
                return
            if batch.claim():
                batch.run_here()
            del batch

    def settle(self, outcome: Any) -> None:
        self._route.settle_backlog(outcome)


class ProcessRoute(Route):
    """Worker processes, one job each at a time (see :mod:`._workers`)."""

    name = "process"

    def __init__(
        self,
        max_workers: int,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        on_broken: BrokenHandler | None = None,
        crash_retries: int = 0,
    ) -> None:
        # Imported here: subprocess, pickle and multiprocessing.connection
        # cost milliseconds that a program using only threads never pays.
        from ._workers import WorkerPool

        self._pool = WorkerPool(
            max_workers,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            on_broken=on_broken,
            crash_retries=crash_retries,
        )

    def submit(self, batch: Batch) -> None:
        """Queue ``batch`` for the next free worker process."""
        self._pool.submit(batch)

    def ensure_workers(self, count: int) -> None:
        """Allow ``count`` worker processes."""
        self._pool.grow(count)

    def prestart(self, count: int) -> None:
        """Start ``count`` workers now (probes point here; save the wait later)."""
        self._pool.prestart(count)

    def ready(self) -> bool:
        """True once a worker process has started and is ready for work."""
        return self._pool.ready

    def threads(self) -> list[threading.Thread]:
        """The feeder threads that look after the worker processes."""
        shared = getattr(self._pool, "_shared", self._pool)
        return list(getattr(shared, "slots", getattr(shared, "_slots", ())))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Finish or cancel the backlog, then stop the workers."""
        self._pool.shutdown(wait, cancel_futures=cancel_futures)


class ForeignProcessRoute(Route):
    """Any ``concurrent.futures.Executor`` as the process route.

    A Dask ``client.get_executor()``, or a standard library process pool
    built with the user's ``mp_context``.  Calls travel cloudpickled, so
    lambdas and closures work; crashes and worker management follow that
    executor's own rules.
    """

    name = "process"

    def __init__(self, executor: Executor, *, owned: bool) -> None:
        self._executor = executor
        self._owned = owned

    def submit(self, batch: Batch) -> None:
        """Send ``batch`` to the foreign executor as one pickled job.

        Its futures are marked running on hand-off (as the standard library's
        process pool marks the calls it moves to its call queue): they can no
        longer be cancelled, and none is ever cancelled while it runs.
        """
        import cloudpickle

        if not batch.start():
            return
        try:
            payload = cloudpickle.dumps((batch.fn, batch.call_pairs()), protocol=5)
        except Exception as exc:
            batch.settle(exc)
            return
        # The serial number makes every job distinct: executors that key
        # tasks by their arguments (Dask's is "pure" by default) would
        # otherwise run identical calls once.
        remote = self._executor.submit(_run_job, payload, next(_JOB_SERIALS))
        remote.add_done_callback(lambda done: _settle_remote(batch, done))

    def ensure_workers(self, count: int) -> None:
        """The foreign executor sizes itself."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the executor down if we created it; a user's stays theirs.

        ``cancel_futures`` is not passed on: everything handed over is marked
        running on our side, and a running future is never cancelled.
        """
        if self._owned:
            self._executor.shutdown(wait=wait)


_JOB_SERIALS = itertools.count()


def _run_job(payload: bytes, serial: int) -> bytes:
    """What a foreign executor runs: one batch (``serial`` only makes it unique)."""
    from ._worker import run_payload

    return run_payload(payload)


def _settle_remote(batch: Batch, remote: Any) -> None:
    import pickle

    try:
        _kind, outcomes = pickle.loads(remote.result())
    except BaseException as exc:
        batch.settle(exc)
        return
    from ._workers import settle_outcome

    batch.settle([settle_outcome(o) for o in outcomes])


_LIVE_ROUTES: weakref.WeakSet[ThreadRoute] = weakref.WeakSet()


def _at_exit() -> None:
    # As the standard library's pools do: queued work finishes at exit.
    for route in list(_LIVE_ROUTES):
        route.shutdown(wait=True)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]

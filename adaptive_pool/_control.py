"""The executor's own thread, which keeps its bookkeeping off the workers.

Worker threads run user calls and nothing else: what a finished probe or
batch sets in motion (deciding, loading a model, building the next batches
of a map) runs here.  Besides keeping latency off the workers, this keeps
the executor's objects out of their malloc arenas.  With glibc, a worker
that allocated a long-lived block between two user calls (a future's
condition, a model's tables) had its arena trimmed and re-faulted around
the calls' large buffers: file I/O with 1 MB buffers ran 1.5-2.5x slower on
our threads than on ``ThreadPoolExecutor``'s, with one thread taking ten
times the page faults of the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ControlThread", "Scheduled"]

logger = logging.getLogger("adaptive_pool")


class Scheduled:
    """A call to make later on the control thread, which may be cancelled."""

    __slots__ = ("args", "cancelled", "due", "fn")

    def __init__(self, due: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.due = due
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not make the call (if it has not been made yet)."""
        self.cancelled = True


class ControlThread:
    """One thread that runs the executor's jobs in the order they come.

    Jobs may also be scheduled for later (probe deadlines): one thread
    waiting with a timeout, rather than a ``threading.Timer`` thread per
    deadline, whose start costs as much as a tiny map.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Scheduled | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=_run_jobs, args=(self._jobs,), name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon, on this thread."""
        self._jobs.put(Scheduled(0.0, fn, args))

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Scheduled:
        """Run ``fn(*args)`` on this thread in ``delay`` seconds, unless cancelled."""
        job = Scheduled(time.monotonic() + delay, fn, args)
        self._jobs.put(job)
        return job

    def threads(self) -> list[threading.Thread]:
        """The thread."""
        return [self._thread]

    def shutdown(self, wait: bool = True) -> None:
        """Stop once the jobs queued so far are done; drop the scheduled ones."""
        self._jobs.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()


def _run_jobs(jobs: queue.SimpleQueue[Scheduled | None]) -> None:
    later: list[tuple[float, int, Scheduled]] = []
    order = itertools.count()
    while True:
        timeout = max(0.0, later[0][0] - time.monotonic()) if later else None
        try:
            job = jobs.get(timeout=timeout)
        except queue.Empty:
            job = None
        else:
            if job is None:
                return
            if job.due:
                heapq.heappush(later, (job.due, next(order), job))
            else:
                _run(job)
            del job
        now = time.monotonic()
        while later and later[0][0] <= now:
            _run(heapq.heappop(later)[2])


def _run(job: Scheduled) -> None:
    if job.cancelled:
        return
    fn, args = job.fn, job.args
    job.fn, job.args = _nothing, ()  # a finished job's objects must not stay alive here
    try:
        fn(*args)
    except BaseException:  # a bug here must not stop every later job
        logger.exception("adaptive_pool: executor job %r failed", fn)


def _nothing() -> None:
    pass

"""A batch: calls of one function, each with its own future, run together.

Every route runs batches; a single ``submit`` is a batch of one.  Batching
is what lets thousands of microsecond calls run at near-serial speed: one
queue hand-off (or one pipe round trip) carries many calls, while every call
keeps its own :class:`~concurrent.futures.Future`, its own cancellation and
its own exception.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice, starmap
from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = [
    "CANCELLED",
    "CPU_READ_INTERVAL_S",
    "NO_KWARGS",
    "THREAD_CLOCKS",
    "Batch",
    "Call",
    "Outcomes",
    "Raised",
    "as_calls",
    "resolve",
    "run_each",
    "thread_cpu_clock",
]

Call = tuple[tuple[Any, ...], dict[str, Any]]

#: The keyword arguments of every call ``map`` makes (shared, never changed).
NO_KWARGS: dict[str, Any] = {}

#: Passed to :meth:`Batch.settle` when the batch will never run.
CANCELLED: Any = object()

#: A thread reads its CPU clock around a batch of one call at most this
#: often (batches of several calls always).  On a machine whose cores are
#: oversubscribed, reading the thread's CPU clock makes the kernel account
#: the running task under its run-queue lock and often switch it out:
#: 250 us a read, 4-6% of the throughput of SHA-256 on 6 threads, 2 cores.
CPU_READ_INTERVAL_S = 0.05

class _ClockReads(threading.local):
    """Per thread: when it last read its CPU clock for a batch (``last``),
    what it read (``cpu``), and how many calls it ran since (``calls``)."""

    last = 0.0
    cpu = 0.0  # a new thread's CPU clock starts at zero
    calls = 0


_clock_reads = _ClockReads()

#: Whether another thread's CPU clock can be read (POSIX; not on Windows).
THREAD_CLOCKS = hasattr(time, "pthread_getcpuclockid")


def thread_cpu_clock(ident: int) -> float | None:
    """The CPU clock of thread ``ident`` of this process, read from any
    thread; None where it cannot be read (the thread ended, or no such
    clocks here)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError, OverflowError, ValueError):
        return None

Invoker = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], tuple[bool, Any]]


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    try:
        return True, fn(*args, **kwargs)
    except BaseException as exc:  # as the standard library: the future gets it
        return False, exc


class Raised:
    """Stands in a collected batch's results for a call that raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Outcomes:
    """The results of a collected batch, in call order, readable as they come.

    ``items`` holds each call's value, or a :class:`Raised` where a call
    raised; ``failed`` is the index of the first of those.  ``map`` reads
    them while the batch still runs, so that results are yielded (and
    ``timeout`` judged) as they come, as with the standard library's thread
    pool, although many calls travel together.  Routes that get a chunk's
    outcomes at once (processes) deliver them all together, as
    ``ProcessPoolExecutor.map`` does with ``chunksize``.
    """

    __slots__ = ("_cond", "_waiters", "closed", "failed", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        #: Index of the first call that raised, if any.  Set *before* its
        #: :class:`Raised` is appended: a reader that sees the item sees it.
        self.failed: int | None = None
        #: True once no more outcomes will come (finished, failed or cancelled).
        self.closed = False
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0

    def run(self, fn: Callable[..., Any], calls: Sequence[Any], spread: bool | None) -> None:
        """Run every call here, in order, each raising on its own.

        ``calls`` are single arguments (``spread`` False), argument tuples
        (True) or ``(args, kwargs)`` pairs (None).  The calls run inside
        ``list.extend`` over ``map``/``starmap``: for microsecond calls the
        interpreter's loop around them would cost more than they do.  They
        go in stretches that double in length, so that a consumer waiting
        for a result hears of it within about the time it took to come.
        """
        items = self.items
        count = len(calls)
        # One iterator over the arguments, not slices of them: a call that
        # raises leaves it just past its argument, where the next stretch
        # goes on, and a copy of every argument (a pass over memory as long
        # as the calls' own) is spared.
        arguments = iter(calls)
        stretch = 1
        while len(items) < count:
            try:
                items.extend(run_each(fn, islice(arguments, stretch), spread))
            except BaseException as exc:  # as the standard library: the caller gets it
                self._raised(exc)
            else:
                stretch *= 2
            if self._waiters:
                self.notify()

    def _raised(self, error: BaseException) -> None:
        if self.failed is None:
            self.failed = len(self.items)
        self.items.append(Raised(error))

    def add(self, ok: bool, value: Any) -> None:
        """Append one call's outcome."""
        if ok:
            self.items.append(value)
        else:
            self._raised(value)
        if self._waiters:
            self.notify()

    def extend(self, outcomes: list[tuple[bool, Any]]) -> None:
        """Take ``(ok, value)`` outcomes over: the list is emptied before
        consumers wake, so that a result the consumer drops is freed at once
        (the thread that delivered them may still hold the list a moment)."""
        for ok, value in outcomes:
            if ok:
                self.items.append(value)
            else:
                self._raised(value)
            del value
        outcomes.clear()
        if self._waiters:
            self.notify()

    def notify(self) -> None:
        """Wake consumers waiting for outcomes."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float | None) -> bool:
        """Wait until more than ``count`` outcomes exist or no more will come.

        Returns False on timeout.
        """
        if len(self.items) > count or self.closed:
            return True
        with self._cond:
            self._waiters += 1
            try:
                # The producer appends, then reads _waiters; we raised
                # _waiters, then read the length: one of us sees the other.
                return self._cond.wait_for(lambda: len(self.items) > count or self.closed, timeout)
            finally:
                self._waiters -= 1


def run_each(fn: Callable[..., Any], calls: Iterable[Any], spread: bool | None) -> Iterator[Any]:
    """An iterator that runs ``fn`` on each of ``calls`` as it is advanced:
    single arguments (``spread`` False), argument tuples (True) or
    ``(args, kwargs)`` pairs (None)."""
    if spread is None:
        return (fn(*args, **kwargs) if kwargs else fn(*args) for args, kwargs in calls)
    return starmap(fn, calls) if spread else map(fn, calls)


class Batch:
    """Calls of ``fn`` with their futures; ``on_done`` runs once when all settle."""

    __slots__ = (
        "_claim",
        "_finished",
        "_invoke",
        "_on_done",
        "calls",
        "collect",
        "cpu_s",
        "cpu_unread",
        "decision",
        "elapsed_s",
        "fn",
        "futures",
        "outcomes",
        "paced",
        "ran",
        "runner",
        "size",
        "spread",
        "started",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        calls: Sequence[Any],
        futures: Sequence[Future[Any]],
        on_done: Callable[[Batch], None] | None = None,
        invoke: Invoker | None = None,
        collect: bool = False,
        decision: Any = None,
        spread: bool | None = None,
    ) -> None:
        self.fn = fn
        #: ``(args, kwargs)`` pairs; in a map's chunk (``collect``) also
        #: argument tuples (``spread`` True) or single arguments (False).
        self.calls: Sequence[Any] = calls
        self.spread = spread
        # Taken over, not copied: every object made per submit costs twice,
        # once to make and once more in the garbage collector's passes.
        self.futures = futures if type(futures) is list else list(futures)
        #: The decision that sent this batch where it runs (for noticing drift).
        self.decision = decision
        #: Futures this batch answers for (the executor's accounting unit).
        self.size = len(self.futures)
        #: One future for all calls (its result is None, or the error that
        #: failed them all), the calls' ``(ok, value)`` outcomes going to
        #: :attr:`outcomes`: how ``map`` avoids a future per call.
        self.collect = collect
        self.outcomes: Outcomes | None = Outcomes() if collect else None
        self._on_done = on_done
        self._invoke = invoke or _invoke
        self._finished = False
        # None; False once offered; once shared, a lock whoever runs the
        # batch takes first (see share).
        self._claim: Any = None
        #: Offered, and run when its map's reader comes to it, not sooner
        #: (see InlineRoute.submit).
        self.paced = False
        # What the batch cost, for noticing a function whose cost changed:
        # calls run, wall time from start to settle, and (when the calls ran
        # in a thread of this process) that thread's CPU time.
        self.ran = 0
        self.started = 0.0
        self.elapsed_s: float | None = None
        self.cpu_s: float | None = None
        #: True when the calls ran here but their CPU time was not read
        #: (see :data:`CPU_READ_INTERVAL_S`).
        self.cpu_unread = False
        #: ``()`` once :meth:`watch` is called; then, while the batch runs
        #: in a thread here: that thread's id, its CPU clock as last read
        #: before the batch started, and the calls it ran since, this
        #: batch's included.
        self.runner: tuple[()] | tuple[int, float, int] | None = None

    def offer(self) -> None:
        """Let a map's consumer take this batch over (see :meth:`take_over`)
        once a route has queued it (see :meth:`share`)."""
        self._claim = False

    def share(self) -> None:
        """Called by a route as it queues the batch: if it was offered, the
        consumer and the route race for it from now on, and each must claim
        it before touching it.  (Only offered batches get a token, a lock,
        which the garbage collector does not track: a list as the token of
        every batch made each submit of a decided tiny call 1.3 us dearer,
        median of 11 runs of 100,000.)"""
        if self._claim is False:
            self._claim = _thread.allocate_lock()

    def claim(self) -> bool:
        """Whether the route (or whoever settles its queue) is to run or
        settle this batch: always, unless it is shared and the consumer
        took it over first."""
        return self._take_token(unshared=True)

    def take_over(self) -> bool:
        """Whether a map's consumer may run this batch itself: it is shared
        (queued on its route) and nobody claimed it yet."""
        return self._take_token(unshared=False)

    def _take_token(self, *, unshared: bool) -> bool:
        token = self._claim
        if token is None or token is False:
            return unshared
        return bool(token.acquire(False))

    def watch(self) -> None:
        """Have the CPU time of this batch readable from other threads while
        it runs (see :meth:`cpu_so_far`)."""
        if THREAD_CLOCKS:
            self.runner = ()

    def cpu_so_far(self) -> tuple[float, int] | None:
        """``(seconds, calls)``: CPU time the thread running this batch has
        used since its clock was last read there (from any thread), and the
        calls it ran meanwhile, this batch's included; None unless the batch
        is watched and running in a thread here.

        The clock is not read when a batch starts (see :meth:`run_here`):
        the time is an upper bound of what the batch used, for ``calls``
        calls in all (a fresh thread's clock starts at zero).
        """
        runner = self.runner
        if not runner or self._finished:
            return None
        ident, cpu0, calls = runner
        clock = thread_cpu_clock(ident)
        return None if clock is None else (clock - cpu0, calls)

    def start(self) -> bool:
        """Mark the futures running, dropping cancelled calls.

        Returns False (and finishes the batch) when nothing is left to run.
        """
        self.started = time.perf_counter()
        if self.collect:
            if self.futures[0].set_running_or_notify_cancel():
                self.ran = len(self.calls)
                return True
            self._finish()
            return False
        keep_calls: list[Call] = []
        keep_futures: list[Future[Any]] = []
        for call, future in zip(self.calls, self.futures):
            if future.set_running_or_notify_cancel():
                keep_calls.append(call)
                keep_futures.append(future)
        self.calls, self.futures = keep_calls, keep_futures
        self.ran = len(keep_calls)
        if not keep_futures:
            self._finish()
            return False
        return True

    def hand_over(self) -> Iterator[Any] | None:
        """A map chunk's calls, not run: an iterator that runs each as it is
        asked for its result, in whichever thread asks.  The batch is over
        as far as the executor counts (``ran`` stays 0: nothing measured);
        None if its future was cancelled (the batch is over all the same)."""
        if not self.start():
            return None
        fn, calls = self.fn, self.calls
        self.ran = 0
        resolve(self.futures[0], True, None)
        self._finish()
        return run_each(fn, calls, self.spread)

    def call_pairs(self) -> list[Call]:
        """The calls as ``(args, kwargs)`` pairs (for routes that send them)."""
        calls = self.calls
        if self.spread is not None:
            return as_calls(calls, self.spread)
        return calls if type(calls) is list else list(calls)

    def run_here(self) -> None:
        """Run every call in the current thread (thread and inline routes).

        Each submitted call is marked running only when its turn comes, so
        a call still waiting behind others in its batch can be cancelled, as
        with a thread pool's queue.  (A map chunk is one future: it starts
        as a whole.)
        """
        if self.collect:
            if not self.start():
                return
        else:
            self.started = time.perf_counter()
        fn = self.fn
        invoke = self._invoke
        reads = _clock_reads
        clocked = len(self.calls) > 1 or self.started - reads.last > CPU_READ_INTERVAL_S
        if clocked:
            reads.last = self.started
            cpu0 = reads.cpu = time.thread_time()
            reads.calls = 0
        else:
            self.cpu_unread = True
        calls = reads.calls = reads.calls + len(self.calls)
        if self.runner is not None:
            # No clock read for this: watching must cost waiting work
            # nothing (two more reads a call made 1,000 sleeps 5% slower).
            self.runner = (threading.get_ident(), reads.cpu, calls)
        try:
            if self.collect:
                sink = self.outcomes
                assert sink is not None
                if invoke is _invoke:
                    sink.run(fn, self.calls, self.spread)
                else:
                    for args, kwargs in self.call_pairs():
                        sink.add(*invoke(fn, args, kwargs))
                resolve(self.futures[0], True, None)
                return
            for (args, kwargs), future in zip(self.calls, self.futures):
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
                self.ran += 1
                ok, value = invoke(fn, args, kwargs)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
                # Neither the result nor its future may stay alive in this
                # frame while on_done (below) runs: a probe's on_done decides,
                # which can take a while, and the caller may already have
                # dropped the result (CPython's test_free_reference).
                del value, future
            self.futures = []
        finally:
            if clocked:
                reads.cpu = time.thread_time()
                reads.calls = 0
                self.cpu_s = reads.cpu - cpu0
            self._finish()

    def settle(self, outcome: Any) -> None:
        """Settle from elsewhere: a list of ``(ok, value)``, an exception for
        all calls, or :data:`CANCELLED`."""
        try:
            if outcome is CANCELLED:
                for future in self.futures:
                    future.cancel()
            elif isinstance(outcome, BaseException):
                for future in self.futures:
                    _fail(future, outcome)
            elif self.collect:
                if len(outcome) != len(self.calls):
                    outcome = [outcome[0]] * len(self.calls)
                assert self.outcomes is not None
                self.outcomes.extend(outcome)
                resolve(self.futures[0], True, None)
            else:
                if len(outcome) != len(self.futures):
                    # The worker could not even read the job: its one error
                    # applies to every call.
                    outcome = [outcome[0]] * len(self.futures)
                for (ok, value), future in zip(outcome, self.futures):
                    resolve(future, ok, value)
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.started:
            self.elapsed_s = time.perf_counter() - self.started
        on_done, self._on_done = self._on_done, None
        outcomes, self.outcomes = self.outcomes, None
        self.calls = []
        self.futures = []
        try:
            if on_done is not None:
                on_done(self)
        finally:
            # Closed after on_done: a map's consumer that sees the batch over
            # sends the next itself, and must find this one counted out of
            # flight by then (else it left that to the control thread, which
            # may be busy deciding: a map of tiny calls stalled behind it).
            if outcomes is not None:
                outcomes.close()


def as_calls(arguments: Sequence[Any], spread: bool) -> list[Call]:
    """``map``'s arguments (tuples to spread, or single values) as calls."""
    if spread:
        return [(args, NO_KWARGS) for args in arguments]
    return [((arg,), NO_KWARGS) for arg in arguments]


def _fail(future: Future[Any], exc: BaseException) -> None:
    resolve(future, False, exc)


def resolve(future: Future[Any], ok: bool, value: Any) -> None:
    """Set a future unless the user cancelled it first (a benign race)."""
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except InvalidStateError:
        pass

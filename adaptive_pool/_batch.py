"""A batch: calls of one function, each with its own future, run together.

Every route runs batches; a single ``submit`` is a batch of one.  Batching
is what lets thousands of microsecond calls run at near-serial speed: one
queue hand-off (or one pipe round trip) carries many calls, while every call
keeps its own :class:`~concurrent.futures.Future`, its own cancellation and
its own exception.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ["CANCELLED", "Batch", "Call", "Outcomes"]

Call = tuple[tuple[Any, ...], dict[str, Any]]

#: Passed to :meth:`Batch.settle` when the batch will never run.
CANCELLED: Any = object()

Invoker = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], tuple[bool, Any]]


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    try:
        return True, fn(*args, **kwargs)
    except BaseException as exc:  # as the standard library: the future gets it
        return False, exc


class Outcomes:
    """The ``(ok, value)`` outcomes of a collected batch, readable as they come.

    ``map`` reads them while the batch still runs, so that a result is
    yielded (and ``timeout`` judged) call by call, as with the standard
    library's thread pool, although many calls travel together.  Routes that
    get a chunk's outcomes at once (processes) deliver them all together, as
    ``ProcessPoolExecutor.map`` does with ``chunksize``.
    """

    __slots__ = ("_cond", "_waiters", "closed", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        #: True once no more outcomes will come (finished, failed or cancelled).
        self.closed = False
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0

    def add(self, outcome: tuple[bool, Any]) -> None:
        self.items.append(outcome)
        if self._waiters:  # tiny calls: no lock unless someone waits
            with self._cond:
                self._cond.notify_all()

    def extend(self, outcomes: list[tuple[bool, Any]]) -> None:
        """Take ``outcomes`` over: the list is emptied before consumers wake,
        so that a result the consumer drops is freed at once (the thread that
        delivered them may still hold the list a moment longer)."""
        self.items.extend(outcomes)
        outcomes.clear()
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

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


class Batch:
    """Calls of ``fn`` with their futures; ``on_done`` runs once when all settle."""

    __slots__ = (
        "_finished",
        "_invoke",
        "_on_done",
        "calls",
        "collect",
        "cpu_s",
        "decision",
        "elapsed_s",
        "fn",
        "futures",
        "outcomes",
        "ran",
        "size",
        "started",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        calls: list[Call],
        futures: Sequence[Future[Any]],
        on_done: Callable[[Batch], None] | None = None,
        invoke: Invoker | None = None,
        collect: bool = False,
        decision: Any = None,
    ) -> None:
        self.fn = fn
        self.calls = calls
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
        # What the batch cost, for noticing a function whose cost changed:
        # calls run, wall time from start to settle, and (when the calls ran
        # in a thread of this process) that thread's CPU time.
        self.ran = 0
        self.started = 0.0
        self.elapsed_s: float | None = None
        self.cpu_s: float | None = None

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
        cpu0 = time.thread_time()
        try:
            if self.collect:
                sink = self.outcomes
                assert sink is not None
                if invoke is _invoke:
                    _run_collected(fn, self.calls, sink)
                else:
                    for args, kwargs in self.calls:
                        sink.add(invoke(fn, args, kwargs))
                _resolve(self.futures[0], True, None)
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
            self.cpu_s = time.thread_time() - cpu0
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
                _resolve(self.futures[0], True, None)
            else:
                if len(outcome) != len(self.futures):
                    # The worker could not even read the job: its one error
                    # applies to every call.
                    outcome = [outcome[0]] * len(self.futures)
                for (ok, value), future in zip(outcome, self.futures):
                    _resolve(future, ok, value)
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.started:
            self.elapsed_s = time.perf_counter() - self.started
        on_done, self._on_done = self._on_done, None
        if self.outcomes is not None:
            self.outcomes.close()
            self.outcomes = None
        self.calls = []
        self.futures = []
        if on_done is not None:
            on_done(self)


def _run_collected(fn: Callable[..., Any], calls: list[Call], sink: Outcomes) -> None:
    """The hot loop of a map chunk: thousands of microsecond calls in a row.

    Written out (no helper call per item, no keyword unpacking when there
    are none) because for tiny calls this loop is the whole cost.
    """
    items = sink.items
    append = items.append
    for args, kwargs in calls:
        try:
            value = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:  # as the standard library: the caller gets it
            append((False, exc))
        else:
            append((True, value))
            del value
        if sink._waiters:  # a consumer waits for this very result
            sink.notify()


def _fail(future: Future[Any], exc: BaseException) -> None:
    _resolve(future, False, exc)


def _resolve(future: Future[Any], ok: bool, value: Any) -> None:
    """Set a future unless the user cancelled it first (a benign race)."""
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except InvalidStateError:
        pass

"""A batch: calls of one function, each with its own future, run together.

Every route runs batches; a single ``submit`` is a batch of one.  Batching
is what lets thousands of microsecond calls run at near-serial speed: one
queue hand-off (or one pipe round trip) carries many calls, while every call
keeps its own :class:`~concurrent.futures.Future`, its own cancellation and
its own exception.
"""

from __future__ import annotations

from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Sequence

__all__ = ["Batch", "Call", "CANCELLED"]

Call = tuple[tuple[Any, ...], dict[str, Any]]

#: Passed to :meth:`Batch.settle` when the batch will never run.
CANCELLED: Any = object()

Invoker = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], tuple[bool, Any]]


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    try:
        return True, fn(*args, **kwargs)
    except BaseException as exc:  # as the standard library: the future gets it
        return False, exc


class Batch:
    """Calls of ``fn`` with their futures; ``on_done`` runs once when all settle."""

    __slots__ = ("fn", "calls", "futures", "size", "collect", "_on_done", "_invoke", "_finished")

    def __init__(
        self,
        fn: Callable[..., Any],
        calls: list[Call],
        futures: Sequence[Future[Any]],
        on_done: Callable[["Batch"], None] | None = None,
        invoke: Invoker | None = None,
        collect: bool = False,
    ) -> None:
        self.fn = fn
        self.calls = calls
        self.futures = list(futures)
        #: Futures this batch answers for (the executor's accounting unit).
        self.size = len(self.futures)
        #: One future for all calls, whose result is the list of ``(ok, value)``
        #: outcomes: how ``map`` avoids a future per call.
        self.collect = collect
        self._on_done = on_done
        self._invoke = invoke or _invoke
        self._finished = False

    def start(self) -> bool:
        """Mark the futures running, dropping cancelled calls.

        Returns False (and finishes the batch) when nothing is left to run.
        """
        if self.collect:
            if self.futures[0].set_running_or_notify_cancel():
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
        if not keep_futures:
            self._finish()
            return False
        return True

    def run_here(self) -> None:
        """Run every call in the current thread (thread and inline routes)."""
        if not self.start():
            return
        fn = self.fn
        invoke = self._invoke
        try:
            if self.collect:
                outcomes = [invoke(fn, args, kwargs) for args, kwargs in self.calls]
                _resolve(self.futures[0], True, outcomes)
                return
            for (args, kwargs), future in zip(self.calls, self.futures):
                ok, value = invoke(fn, args, kwargs)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
                del value  # do not keep results alive in this frame
        finally:
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
                _resolve(self.futures[0], True, outcome)
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
        on_done, self._on_done = self._on_done, None
        self.calls = []
        self.futures = []
        if on_done is not None:
            on_done(self)


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

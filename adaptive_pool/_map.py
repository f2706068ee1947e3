"""``AutoExecutor.map``: a plan that dispatches a window of batches at a time.

A map's calls are not all handed to a route at once.  The plan keeps them
and dispatches a few batches per worker, each sized by the decision in
force *when it is dispatched*; every finished batch lets the next one go.
So a function whose cost changes part-way through is re-decided and its
later calls take the new route, a process pool's backlog stays here (a
crashed worker can only touch what was in flight), and ``buffersize``
bounds how far ahead of the consumer the plan reads its inputs.  Results
are still yielded in input order, one call at a time, with the timeout
counted from the call to ``map``.  Batches of tiny calls on the inline
route are run by the consumer itself as it comes to them, unless the lane
took them first (see :meth:`MapPlan.run_on_consumer`); those of calls that
nobody could watch wait for it (or for a shutdown), with no lane sent, and
are handed to it as iterators that run each call as it is read.
"""

from __future__ import annotations

import contextvars
import itertools
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import TYPE_CHECKING, Any, cast

from ._batch import NO_KWARGS, Batch, Call, Outcomes, as_calls, resolve, run_each
from ._bytecode import self_contained
from ._policy import Decision, computing_now, watch_for_computing
from ._profile import MeasuredCall

if TYPE_CHECKING:
    from ._executor import AutoExecutor
    from ._routes import InlineRoute

__all__ = ["MapPlan", "map_results", "reader_results"]

#: Running batches whose CPU clocks one look reads at most (the latest
#: sent): a read costs a system call (~1.5 us).
WATCH_READS = 128


class _Chunk:
    """Calls of a map that travel as one batch: its future and its outcomes,
    and the batch itself if the consumer may run it (see run_on_consumer)."""

    __slots__ = ("batch", "calls", "future", "outcomes")

    def __init__(self, future: Future[Any], outcomes: Outcomes, calls: int, batch: Batch | None) -> None:
        self.future = future
        self.outcomes = outcomes
        self.calls = calls
        self.batch = batch


class _Single:
    """One call of a map submitted on its own (a probe): its future."""

    __slots__ = ("calls", "future")

    def __init__(self, future: Future[Any]) -> None:
        self.future = future
        self.calls = 1


class MapPlan:
    """The calls of one ``map`` and how far they have gone."""

    def __init__(
        self,
        executor: AutoExecutor,
        fn: Callable[..., Any],
        source: Iterator[Any] | tuple[Any, ...],
        *,
        spread: bool,
        count: int | None,
        chunksize: int,
        buffersize: int | None,
        probes: int,
        helped: bool = False,
        paced: bool | None = None,
        first_call: MeasuredCall | None = None,
    ) -> None:
        self._executor: AutoExecutor | None = executor
        self._fn = fn
        # The calls' arguments: tuples to spread (``spread``) or single values;
        # all of them (a tuple, ``count`` long), or an iterator over them.
        self._source = source
        self._spread = spread
        self._left = count  # calls not yet dispatched, when known
        self._source_done = False  # the producer has taken the last call
        self._complete = False  # ... and every item is visible to the consumer
        self._chunksize = chunksize
        self._buffersize = buffersize
        self._probes = probes
        # Whether the consumer may run the map's inline batches itself
        # (see run_on_consumer); whether the last batch sent is one of them;
        # the one it is running.
        self._helped = helped
        # The first call, if it ran already (see AutoExecutor._map_for_reader).
        self._first_call = first_call
        self._consumer_runs = False
        self._consumer_batch: Batch | None = None
        self._cond = threading.Condition(threading.Lock())
        self._items: list[_Chunk | _Single | None] = []
        self._in_flight = 0
        self._ahead = 0  # calls dispatched and not yet consumed
        self._window = 2
        self._awaiting_decision = False
        self._closed = False
        self._released = False
        self._error: BaseException | None = None
        self._pump_lock = threading.Lock()
        self._pump_again = False
        # Whether its calls are self-contained (see _reader_paced; None: not
        # looked at yet), and the route its consumer's batches go to.
        self._paced = paced
        self._inline: InlineRoute | None = None
        # Batches sent to threads sized for waiting, still running, and the
        # decision that sent each (see _computing_caught).
        self._watched: dict[Batch, Decision] = {}
        self._watching = True
        # Wall seconds and calls of the batches run under a forced decision
        # (nothing probed): they size the next ones (see _forced_per_call).
        self._forced_cost: list[float] = [0.0, 0.0]
        executor._count(1)  # the plan keeps shutdown(wait=True) waiting

    # -- producer side ------------------------------------------------------

    @property
    def needs_control(self) -> bool:
        """Whether the executor's control thread will send the next
        batches: not once all are sent, nor while the consumer runs them."""
        return not (self.dispatched_all or self._consumer_runs)

    @property
    def dispatched_all(self) -> bool:
        """Whether every call has been sent (or never will be): pumping
        again would find nothing to do."""
        return self._source_done or self._closed

    def pump(self) -> None:
        """Dispatch as much as the window allows; any thread may call it."""
        while True:
            if not self._pump_lock.acquire(blocking=False):
                # Another thread is dispatching: it will look again for us.
                self._pump_again = True
                return
            try:
                self._pump_again = False
                self._dispatch_while_allowed()
            except BaseException as exc:  # e.g. the executor broke meanwhile
                self.fail(exc)
            finally:
                self._pump_lock.release()
            if not self._pump_again:
                return

    def _dispatch_while_allowed(self) -> None:
        sent_at: float | None = None  # when this loop last began sending a batch
        while True:
            with self._cond:
                executor = self._executor
                if self._closed or self._awaiting_decision or executor is None:
                    return
                if self._in_flight >= self._window:
                    return
                if self._buffersize is not None and self._ahead >= self._buffersize:
                    return
            decision, probes_wanted, held = executor._current_decision(self._fn)
            if decision is None:
                self._dispatch_probes(executor, self._probes, wait=True)
                return
            if probes_wanted:
                # Re-measuring a function whose cost changed: a few calls go
                # alone (as probes); the rest keeps the route in force.
                self._dispatch_probes(executor, probes_wanted, wait=False)
                continue
            now = time.perf_counter()
            if sent_at is not None and now - sent_at >= 0.5 * sys.getswitchinterval() and self._watched:
                # This loop lost the GIL while sending the last batch, as
                # calls holding it make it do: see _computing_caught.
                sent_at = None
                if self._computing_caught(executor):
                    continue  # measured again: probes go first
            if not self._dispatch_chunk(executor, decision, held):
                return
            sent_at = now

    def _computing_caught(self, executor: AutoExecutor) -> bool:
        """Whether a batch still running on threads sized for waiting
        computes instead (see watch_for_computing); if so, the function is
        measured again, its other calls held until it is judged.

        Looked at when sending a batch lost the GIL for half a switch
        interval or more, which is what calls holding the GIL do to the
        thread sending them: the running batches are the suspects (the
        latest :data:`WATCH_READS`), and the plan stops adding to their
        convoy.  (A look from a timer or a finished batch came too late:
        beside such a convoy this code gets the GIL back a switch interval
        after each time it lets go, and every call had been sent to
        threads long before.)
        """
        with self._cond:
            suspects = list(self._watched.items())[-WATCH_READS:]
        why = None
        for batch, decision in reversed(suspects):
            used = batch.cpu_so_far()
            why = None if used is None else computing_now(decision, used[1], used[0])
            if why is not None:
                break
        del suspects
        if why is None:
            return False
        if executor._computing(self._fn, why):
            return True
        # Held once already, or no longer on such threads: looking again
        # would find the same and change nothing.
        with self._cond:
            self._watching = False
            self._watched.clear()
        return False

    def _take(self, size: int) -> Sequence[Any]:
        if self._buffersize is not None:
            size = min(size, max(1, self._buffersize - self._ahead))
        source = self._source
        calls: Sequence[Any]
        if type(source) is tuple and self._left is not None:
            # A slice: a third of what copying through an iterator costs,
            # which for microsecond calls is a sizeable part of the map.
            start = len(source) - self._left
            calls = source[start : start + size]
        else:
            calls = list(itertools.islice(source, size))
        if len(calls) < size:
            self._source_done = True
        if self._left is not None:
            self._left -= len(calls)
            if self._left <= 0:
                self._source_done = True
        if self._source_done:
            self._source = ()  # the arguments are the batches' now
        if not calls:
            self._publish([])
        return calls

    def _publish(self, items: list[_Chunk | _Single]) -> None:
        """Make items visible to the consumer (already counted as outstanding);
        after the last one, stop counting the plan itself."""
        with self._cond:
            self._items.extend(items)
            self._ahead += sum(item.calls for item in items)
            if self._source_done:
                self._complete = True
            self._cond.notify_all()
        if self._source_done:
            self._release()

    def _dispatch_probes(self, executor: AutoExecutor, count: int, *, wait: bool) -> None:
        """Send ``count`` calls alone, to be measured; with ``wait``, plan the
        rest only once the function is decided.

        Waiting, the first may scout alone (see ``AutoExecutor._scout``):
        tiny, it decides at once and the others are never taken as probes,
        so that every other call goes in batches the consumer may run.
        """
        if not wait:
            probes = self._take_probes(executor, count)
            if probes:
                executor._route_calls(self._fn, *probes)
            return
        with self._cond:
            self._awaiting_decision = True
        first = self._take_probes(executor, 1)
        if first is None:  # no calls: nothing to decide
            with self._cond:
                self._awaiting_decision = False
            return
        ran, self._first_call = self._first_call, None
        # Listen before the probes start: whoever decides must know that a
        # map waits (tiny probes may be over before _route_calls returns).
        if not executor._when_decided(self._fn, self._decided, self._left):
            self._route_first(executor, first, ran)
            self._resume()  # decided meanwhile
            return
        here = self._helped and self._paced is not False  # (no need to look twice)
        scout = executor._scout(self._fn, first[0][0], first[1][0], here=here, ran=ran)
        if scout is not None and scout.here:
            self._paced = True  # judged there (see _reader_paced)
        if scout is not None and scout.decided:
            return
        calls: list[Call] = []
        futures: list[Future[Any]] = []
        if scout is None:
            if ran is None:
                calls, futures = first
            else:
                self._route_first(executor, first, ran)
        try:
            more = self._take_probes(executor, count - 1)
            if more:
                calls, futures = calls + more[0], futures + more[1]
            if calls:
                executor._route_calls(self._fn, calls, futures)
        finally:
            if scout is not None:
                executor._scout_over(scout)

    def _route_first(
        self, executor: AutoExecutor, first: tuple[list[Call], list[Future[Any]]], ran: MeasuredCall | None
    ) -> None:
        """Send the map's first call where its function's calls go, or, if
        it ran already (``ran``), give its future what it returned."""
        if ran is None:
            executor._route_calls(self._fn, *first)
            return
        ok, value, _ = ran
        future = first[1][0]
        if future.set_running_or_notify_cancel():
            resolve(future, ok, value)
        executor._count(-1)  # counted when taken (see _take_probes)

    def _take_probes(self, executor: AutoExecutor, count: int) -> tuple[list[Call], list[Future[Any]]] | None:
        """Take up to ``count`` calls as probes, counted and visible to the
        consumer; None if there are none."""
        if count < 1 or self._source_done:
            return None
        taken = self._take(count)
        if not taken:
            return None
        calls = as_calls(taken, self._spread)
        futures: list[Future[Any]] = [Future() for _ in calls]
        executor._count(len(calls))
        self._publish([_Single(future) for future in futures])
        return calls, futures

    def _decided(self, outcome: Decision | BaseException | None) -> None:
        """Listener: the decision (go on), None (cancelled) or an error."""
        if outcome is None:
            self.fail(CancelledError())
        elif isinstance(outcome, BaseException):
            self.fail(outcome)
        else:
            self._resume()

    def _resume(self) -> None:
        with self._cond:
            self._awaiting_decision = False
        self.pump()

    def _dispatch_chunk(self, executor: AutoExecutor, decision: Decision, held: bool) -> bool:
        batch_decision = None if held else executor._for_batch(self._fn, decision, self._left)
        if batch_decision is None:
            # Held while the function is measured again: go on once judged.
            with self._cond:
                self._awaiting_decision = True
            if executor._when_remeasured(self._fn, self._decided):
                return False
            with self._cond:
                self._awaiting_decision = False
            return True  # judged meanwhile: look again
        decision = batch_decision
        route = executor._route(decision.backend)  # raises once the executor is closed
        if decision.source == "forced":
            size = executor._forced_batch_size(decision, self._left, self._chunksize, self._forced_per_call())
        elif self._handed_over(decision) and self._left is not None:
            size = self._left  # one iterator is all its reader needs (see run_on_consumer)
        else:
            size = executor._batch_size(decision, self._left or decision.chunksize, self._chunksize)
        calls = self._take(size)
        if not calls:
            return False
        future: Future[Any] = Future()
        batch = Batch(
            self._fn,
            calls,
            [future],
            # The batch holds the executor until it is done; the plan lets
            # go of it once every call is dispatched (see _release), so that
            # a dropped executor is collected even while its results are read.
            on_done=lambda done: self._chunk_done(done, decision, executor),
            collect=True,
            decision=decision,
            spread=self._spread,
        )
        assert batch.outcomes is not None
        helpable = batch if self._helped and decision.backend == "inline" else None
        if helpable is not None:
            helpable.offer()
            helpable.paced = self._reader_paced(calls[0])
            self._inline = cast("InlineRoute", route)
        watched = self._watching and watch_for_computing(decision)
        if watched:
            batch.watch()
        with self._cond:
            # Two batches per worker keep each busy while the control thread
            # builds the next; the inline lane runs batches of microsecond
            # calls that may be over before that thread wakes (0.2-0.5 ms).
            # A consumer that runs the batches itself needs one at a time: a
            # batch queued ahead is one the lane may take, and the two then
            # fight for the GIL (beside a lane running a batch it took ahead,
            # the consumer of 200,000 tiny calls took 0.4-0.5 ms to send one).
            if decision.backend == "inline":
                self._window = 1 if helpable is not None else 4
            else:
                self._window = max(2, 2 * decision.workers)
            self._consumer_runs = helpable is not None
            self._in_flight += 1
            if watched:
                self._watched[batch] = decision
        executor._count(1)
        self._publish([_Chunk(future, batch.outcomes, len(calls), helpable)])
        route.ensure_workers(decision.workers)
        executor._submit_batch(route, batch)
        return True

    def _reader_paced(self, first: Any) -> bool:
        """Whether the map's inline batches may wait for its reader to run
        them (see run_on_consumer): if its calls are self-contained, judged
        on the first call the consumer may run (once a map)."""
        paced = self._paced
        if paced is None:
            args = tuple(first) if self._spread else (first,)
            paced = self._paced = self_contained(self._fn, args, NO_KWARGS)
        return paced

    def _handed_over(self, decision: Decision) -> bool:
        """Whether the map's inline batches under ``decision``, known to be
        paced, go to the reader as iterators (see run_on_consumer)."""
        return bool(self._paced) and self._helped and decision.backend == "inline" and decision.source != "forced"

    def _forced_per_call(self) -> float | None:
        """Seconds a call of this map's batches took under a forced
        decision, so far; None before the first is over."""
        with self._cond:
            seconds, calls = self._forced_cost
        return seconds / calls if calls else None

    def _chunk_done(self, batch: Batch, decision: Decision, executor: AutoExecutor) -> None:
        executor._batch_done(batch)
        executor._observe(self._fn, decision, batch, more_to_come=not self._source_done)
        elapsed = batch.elapsed_s if decision.source == "forced" and batch.ran else None
        with self._cond:
            if elapsed is not None:
                self._forced_cost[0] += elapsed
                self._forced_cost[1] += batch.ran
            self._in_flight -= 1
            self._watched.pop(batch, None)
        if batch is self._consumer_batch:
            return  # the consumer sends the next itself (see run_on_consumer)
        # Not self.pump() here, in the worker thread that ran the batch: the
        # next batches are built on the executor's control thread (see
        # adaptive_pool._control for why).
        executor._refill(self)

    def _release(self) -> None:
        """All calls are dispatched (or never will be): stop counting the plan."""
        with self._cond:
            if self._released:
                return
            self._released = True
            executor, self._executor = self._executor, None
        assert executor is not None
        executor._count(-1)

    def fail(self, error: BaseException) -> None:
        """Stop dispatching; the consumer gets ``error`` where calls are missing."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._closed = True
            self._cond.notify_all()
        self._release()

    def stop_reading_ahead(self) -> None:
        """The executor shuts down: a map that takes its inputs as its
        results are read (``buffersize``) takes no more, as the standard
        library's sends no more, or shutdown(wait=True) would wait for a
        reader that may be the very thread waiting (an endless input, say).
        Its reader gets what was sent, then RuntimeError."""
        if self._buffersize is not None:
            self.fail(RuntimeError("cannot schedule new futures after shutdown"))

    # -- consumer side ------------------------------------------------------

    def item(self, index: int, timeout: float | None) -> _Chunk | _Single | None:
        """Item ``index`` once it exists; None when there are no more."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: len(self._items) > index or self._error is not None or self._complete, timeout
            )
            if len(self._items) > index:
                return self._items[index]
            if self._complete:
                return None  # every call was sent: a failure since is theirs to report
            if self._error is not None:
                raise self._error
            if not ready:
                raise FuturesTimeoutError()
            return None

    def consumed(self, index: int) -> None:
        """Forget item ``index`` (its results are the consumer's now)."""
        with self._cond:
            item = self._items[index]
            self._items[index] = None
            if item is not None:
                self._ahead -= item.calls
            room = self._in_flight < self._window and not (self._source_done or self._awaiting_decision)
        if room or self._buffersize is not None:
            # The consumer refills the window too: the control thread may be
            # busy with a job that takes a while (the policy deciding the
            # end of a sprint left a lane of tiny calls idle for 11 ms).
            self.pump()

    def run_on_consumer(self, batch: Batch) -> Iterator[Any] | None:
        """Run an inline batch here, in the consumer's thread, unless the lane
        (or a shutdown) claimed it first; or, for a paced batch, return an
        iterator that runs its calls as their results are read.

        The consumer would only wait for it: running the calls itself spares
        the hand-offs between threads and the fight for the GIL with the
        lane (a map of 200,000 microsecond calls: 0.88x the time it took on
        the lane, 20,000: 0.93x).  They run in a context of their own, as on
        a pool's thread: context variables (decimal's context among them)
        neither leak in from the consumer nor out to it.

        A map of self-contained calls (see :meth:`_reader_paced`) goes
        further: its batches wait for this consumer, with no lane, whose
        thread cost such a map of 20,000 microsecond calls a fifth of its
        time.  Read or not, they run by shutdown, as any pool's calls do;
        what they return is all anyone could observe of them.  So, unless
        the user forced the route (whose batches are sized by what they
        took), the consumer does not even run such a batch: it hands it
        over as an iterator whose every result is computed as it is read,
        with no list of results built and emptied (200,000 calls: 0.7-0.85x
        the time), and the rest of the map in one (see _dispatch_chunk):
        there is nothing to measure.  A call that raises raises there; read
        on, the iterator goes on with the next calls.
        """
        if not batch.take_over():
            if batch.paced and self._inline is not None:
                # Not queued yet: whoever queues it sends a lane (or one
                # took it meanwhile and runs it); this consumer waits.
                self._inline.unpace(batch)
            return None
        lazy: Iterator[Any] | None = None
        if batch.paced and self._inline is not None:
            self._inline.taken(batch)
        self._consumer_batch = batch
        try:
            if batch.paced and batch.decision is not None and self._handed_over(batch.decision):
                lazy = batch.hand_over()
            else:
                contextvars.Context().run(batch.run_here)
        finally:
            self._consumer_batch = None
        # The next batch goes now, not once these results are read: a
        # consumer that stops reading half-way must not stop the map (it
        # runs whole, as with the standard library; shutdown waits for it).
        self.pump()
        return lazy

    def close(self) -> None:
        """The consumer is gone: cancel what has not started, dispatch no more."""
        with self._cond:
            self._closed = True
            left = [item for item in self._items if item is not None]
            self._items = []
        for item in left:
            item.future.cancel()
            if isinstance(item, _Chunk) and item.batch is not None and item.batch.paced and self._inline is not None:
                self._inline.unpace(item.batch)  # no reader will come: a lane settles it
        self._release()


def _pop_result(box: list[Future[Any]], timeout: float | None) -> Any:
    """The result of the one future in ``box``, which is emptied; cancel the
    future if we stop waiting for it."""
    future = box.pop()
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise


def _draining(values: list[Any]) -> Iterator[Any]:
    """Iterate over ``values`` (taken over), letting go of each as it is
    yielded: the consumer's reference must be the last one (CPython's
    tests check with weakrefs).  It pops, in C: for tiny calls, a loop of
    bytecode per result would be most of map's cost (``yield from`` it
    costs a frame resume per result, a fifth of that loop)."""
    values.reverse()
    return map(list.pop, itertools.repeat(values, len(values)))


def reader_results(
    fn: Callable[..., Any], source: tuple[Any, ...], spread: bool, first: MeasuredCall | None = None
) -> Iterator[Any]:
    """A map's results, each call run as its result is read (the map is
    handed to its reader whole: see ``AutoExecutor._map_for_reader``);
    ``first``: what the first call gave, if it ran already.  A call that
    raises raises there; read on, the iterator goes on with the next calls,
    as a handed-over batch does (see :meth:`MapPlan.run_on_consumer`)."""

    # In a list the generator empties: once read, the first result must be
    # the reader's alone (CPython's tests check with weak references).
    ran = [first] if first is not None else []

    def stretches() -> Generator[Iterator[Any], None, None]:
        calls = iter(source)
        if ran:
            next(calls)
            ok, value, _ = ran.pop()
            if not ok:
                raise value
            yield _draining([value])
            del value
        yield run_each(fn, calls, spread)

    return _Results.over(stretches())


def map_results(plan: MapPlan, end_time: float | None) -> Iterator[Any]:
    """Yield a plan's results in order; cancel the rest if the consumer stops."""

    def remaining() -> float | None:
        return None if end_time is None else end_time - time.monotonic()

    def generate() -> Generator[Iterator[Any], None, None]:
        index = 0
        try:
            while True:
                item = plan.item(index, remaining())
                if item is None:
                    return
                if type(item) is _Single:
                    box = [item.future]
                    del item
                    plan.consumed(index)
                    yield _draining([_pop_result(box, remaining())])
                else:
                    assert isinstance(item, _Chunk)
                    sink, future, batch = item.outcomes, item.future, item.batch
                    del item
                    if batch is not None:
                        lazy = plan.run_on_consumer(batch)
                        del batch
                        if lazy is not None:
                            del sink, future
                            yield lazy
                            # Read to its end only now: until then, its
                            # inputs count against buffersize.
                            plan.consumed(index)
                            index += 1
                            continue
                    items = sink.items
                    taken = 0
                    while True:
                        # Results already in are yielded without looking at
                        # the clock (a finished call's result is never late,
                        # as with the standard library's map).
                        end = len(items)
                        failed = sink.failed  # read after the length: see Outcomes
                        if failed is not None and failed < end:
                            end = failed
                        if not taken and items and sink.closed and sink.failed is None:
                            # Over (closed, read first: no outcome comes
                            # after), none failed and none read yet (tiny
                            # calls: the usual case): its list is taken whole,
                            # not copied and blanked (10 ns a result, a fifth
                            # of such a call).
                            stretch, items = items, []
                            sink.items = items
                            yield _draining(stretch)
                            future.result(0)  # raises if it failed or was cancelled
                            break
                        if end > taken:
                            stretch = items[taken:end]
                            items[taken:end] = itertools.repeat(None, end - taken)
                            taken = end
                            yield _draining(stretch)
                            continue
                        if failed == taken:
                            raise items[taken].error
                        if not sink.wait_for(taken, remaining()):
                            raise FuturesTimeoutError()
                        if len(items) == taken:
                            future.result(0)  # raises if it failed or was cancelled
                            break
                    del sink, items, future
                    plan.consumed(index)
                index += 1
        finally:
            plan.close()

    return _Results.over(generate())


class _Results(itertools.chain):  # type: ignore[type-arg]
    """A map's results: stretches of them, chained in C.

    A generator yielding result by result cost a frame resume per result,
    as much as a microsecond call itself; the chain hands out each stretch
    of finished results without one.  ``close()`` stops the map as closing
    the standard library's result generator does.
    """

    __slots__ = ("_stretches",)

    _stretches: Generator[Iterator[Any], None, None]

    @classmethod
    def over(cls, stretches: Generator[Iterator[Any], None, None]) -> _Results:
        results = cast(_Results, cls.from_iterable(stretches))
        results._stretches = stretches
        return results

    def close(self) -> None:
        """Stop: cancel the calls not yet started, dispatch no more."""
        self._stretches.close()

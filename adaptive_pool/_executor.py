"""AutoExecutor: probe each function's first calls, then route the rest.

Flow for one function (keyed by :func:`._identity.function_key`):

1. Its first ``probes`` submissions run on the thread route, measured
   (:func:`._profile.measure_call`).  They are real calls; the user gets
   their results.  Later submissions wait in a pending list.  In a map,
   the first runs alone a moment first (:meth:`AutoExecutor._scout`):
   tiny, it decides alone and the map's calls run inline at once.
2. When the probes finish, or after ``probe_deadline`` seconds if they are
   still running (a long task must not hold the rest back, and pending work
   may be what a probe is waiting for), the features go to the policy and a
   :class:`.Decision` is taken.  Pending calls are dispatched on its route.
3. Further submissions go straight to that route.  A decision taken from
   running probes is revisited once they finish.

Features of finished probes are kept process-wide (:data:`._profile.PROFILES`),
so a new executor decides at once for a function it has seen.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures._base import BrokenExecutor
from typing import Any, TypeVar

from ._batch import CANCELLED, NO_KWARGS, Batch, Call
from ._identity import (
    calls_per_invocation,
    describe,
    function_key,
    is_coroutine_function,
    underlying_function,
)
from ._control import ControlThread, Scheduled
from ._map import MapPlan, map_results, reader_results
from ._policy import (
    DRIFT_MIN_S,
    SPRINT_BUDGET_S,
    SPRINT_CHUNK_S,
    TINY_CALL_S,
    Backend,
    Decision,
    Policy,
    cost_changed,
    decide,
    forced_decision,
    gil_cpu_share,
    overturns_processes,
    process_blockers,
    process_futile,
    process_pays_off,
    rule_decision,
    size_chunks,
    size_workers,
    sprint_decision,
    watch_for_computing,
)
from ._bytecode import StaticEffects, self_contained, static_effects
from ._profile import (
    PROFILES,
    CallSample,
    GilMonitor,
    MeasuredCall,
    ProbeTracker,
    call_timings,
    function_picklable,
    measure_call,
    pickled_size,
    summarize,
    usable_cores,
)
# Loaded with the package rather than by the first decision, as are pickle
# and dis (see _profile and _bytecode): reading a function's pickle and byte
# code and a model file cost the first map 5-15 ms of imports on its clock,
# and beside probes that hold the GIL each file an import read cost a switch
# interval.
from ._model import load_policy
from ._routes import ForeignProcessRoute, InlineRoute, ProcessRoute, Route, ThreadRoute

__all__ = ["AutoExecutor", "pin"]

logger = logging.getLogger("adaptive_pool")
# A library logs; the application decides where logs go.
logger.addHandler(logging.NullHandler())

T = TypeVar("T")

_PREFER = {"threads": "thread", "processes": "process", "inline": "inline"}
_PIN_ATTRIBUTE = "__adaptive_pool_route__"
_STATE_CAPACITY = 4096


def pin(backend: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator fixing the route of a function, for users who know better.

    ``backend`` is ``"threads"``, ``"processes"`` or ``"inline"`` (joblib's
    words; ``"thread"`` and ``"process"`` are accepted too).  The function is
    returned unchanged but for a marker attribute, so it pickles as before.
    """
    route = _PREFER.get(backend, backend if backend in ("thread", "process") else None)
    if route is None:
        raise ValueError(f"pin() takes 'threads', 'processes' or 'inline', not {backend!r}")

    def mark(fn: Callable[..., T]) -> Callable[..., T]:
        setattr(fn, _PIN_ATTRIBUTE, route)
        return fn

    return mark


class _FunctionState:
    """What one executor knows about one function."""

    __slots__ = (
        "decision",
        "drift",
        "facts",
        "facts_lock",
        "fn",
        "held",
        "judging",
        "key",
        "listeners",
        "map_calls",
        "name",
        "pending",
        "probes_done",
        "probes_started",
        "provisional",
        "reprobe",
        "round",
        "samples",
        "sprint",
        "timer",
        "tracker",
        "warm_checked",
        "watch_spent",
    )

    def __init__(self, key: Hashable, name: str, monitor: GilMonitor) -> None:
        self.key = key
        self.name = name
        self.decision: Decision | None = None
        self.probes_started = 0
        self.probes_done = 0
        # Probes finished (or a sprint over budget) and not yet judged (on the control thread).
        self.judging = 0
        self.samples: list[CallSample] = []
        self.tracker = ProbeTracker(monitor)
        # (fn, call, future) submitted while undecided
        self.pending: list[tuple[Callable[..., Any], Call, Future[Any]]] = []
        # Called with the decision, None if cancelled, or the error if broken.
        self.listeners: list[Callable[[Decision | BaseException | None], None]] = []
        # Calls the listening maps have left (None: unknown); set by the first
        # listener of each decision (listeners go when it is taken).
        self.map_calls: int | None = None
        # The probe deadline, once armed (see _arm_deadline).
        self.timer: Scheduled | None = None
        # The function, held only while probes run (a bound method holds its
        # object, which the user expects freed once the call is done), and
        # what was learnt from it: (picklable, static effects).
        self.fn: Callable[..., Any] | None = None
        self.facts: tuple[bool, Any] | None = None
        self.facts_lock = threading.Lock()
        # True while the decision rests on probes that had not finished.
        self.provisional = False
        # Batches in a row whose cost differed from the decision's features.
        self.drift = 0
        # True while the decided function is measured again because its cost
        # changed: the next calls are probes, the others keep the old route.
        self.reprobe = False
        # True while maps hold the function's calls until it is measured
        # again (see _computing); once only, per function and executor.
        self.held = False
        self.watch_spent = False
        # Counts the times the function was measured again: a probe of an
        # earlier round, still running then, is not judged with the new ones.
        self.round = 0
        # True once a decision for processes was checked on warm calls.
        self.warm_checked = False
        # While its tiny calls run inline before any decision (see
        # _start_sprint): [seconds, calls, CPU seconds] of the batches so far.
        self.sprint: list[float] | None = None

    def hold_function(self, fn: Callable[..., Any]) -> None:
        """Keep ``fn`` while its probes run, unless its facts are read
        already (see ``fn``); the caller holds the executor's lock."""
        if self.fn is None and self.facts is None:
            self.fn = fn


class _Scout:
    """A map's first call of an undecided function, which the map waits a
    moment for (see :meth:`AutoExecutor._scout`)."""

    __slots__ = (
        "_arrived",
        "_done",
        "_lock",
        "_released",
        "decided",
        "here",
        "judged",
        "probe_round",
        "sample",
        "state",
    )

    def __init__(self, state: _FunctionState) -> None:
        self.state = state
        self.probe_round = state.round
        self._lock = threading.Lock()
        # Released when the call is over: a lock, not an Event, whose
        # condition costs the worker tens of microseconds to set.
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self.sample: CallSample | None = None
        self._done = False
        self._released = False
        #: True once the call was judged (tiny) while the map waited; and
        #: ``decided`` if the function was decided then: the map's other
        #: calls need no probes.
        self.judged = False
        self.decided = False
        #: It ran on the map's thread: the call is self-contained.
        self.here = False

    def finished(self, sample: CallSample | None) -> bool:
        """The call is over (``sample`` None: cancelled before it ran).
        True if it is to be judged as any probe: the map stopped waiting."""
        with self._lock:
            if self._released:
                return True
            self._done = True
            self.sample = sample
        self._arrived.release()
        return False

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the call to be over."""
        self._arrived.acquire(timeout=timeout)

    def release(self) -> tuple[bool, CallSample | None]:
        """The map stops waiting: (whether the call was over, its sample)."""
        with self._lock:
            self._released = True
            return self._done, self.sample


class _Gate:
    """Caps batches running at once across all routes (``max_workers``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.backlog: deque[tuple[Route, Batch]] = deque()


class AutoExecutor(Executor):
    """An executor that picks threads, processes or inline batches per function.

    Parameters are those of the standard library's executors, plus:

    ``prefer``: ``"threads"``, ``"processes"`` or ``"inline"`` forces that
    route for every function (joblib's words).  ``require="sharedmem"``
    forbids the process route.  ``model``: a model file to decide with
    (see :mod:`adaptive_pool._model` for the search order).  ``policy``: an
    object with the :class:`~adaptive_pool.Policy` interface, which replaces
    model and heuristic (tests, experiments) and is asked about every
    function.  ``process_executor``: any ``concurrent.futures.Executor`` to
    use as the process route (a Dask ``client.get_executor()``).  ``probes``: how many first calls of each
    function are measured.  ``probe_deadline``: seconds after which running
    probes are judged as they are.  ``crash_retries``: how many times a call
    whose worker process died is run again on a new worker before its future
    fails (0, the default: never, since the call may have had effects).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        prefer: str | None = None,
        require: str | None = None,
        mp_context: Any = None,
        max_tasks_per_child: int | None = None,
        thread_name_prefix: str = "",
        model: Any = None,
        policy: Policy | None = None,
        process_executor: Executor | None = None,
        probes: int = 2,
        probe_deadline: float = 0.03,
        crash_retries: int = 0,
    ) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int or None, not {type(max_workers).__name__}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        if prefer is not None and prefer not in _PREFER:
            raise ValueError(f"prefer must be 'threads', 'processes', 'inline' or None, not {prefer!r}")
        if require not in (None, "sharedmem"):
            raise ValueError(f"require must be 'sharedmem' or None, not {require!r}")
        if prefer == "processes" and require == "sharedmem":
            raise ValueError("prefer='processes' contradicts require='sharedmem'")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if isinstance(crash_retries, bool) or not isinstance(crash_retries, int):
            raise TypeError(f"crash_retries must be an int, not {type(crash_retries).__name__}")
        if crash_retries < 0:
            raise ValueError("crash_retries must be >= 0")
        if not isinstance(probes, int) or probes < 1:
            raise ValueError("probes must be an int >= 1")
        if isinstance(probe_deadline, bool) or not isinstance(probe_deadline, (int, float)):
            raise TypeError(f"probe_deadline must be a number of seconds, not {type(probe_deadline).__name__}")
        if not math.isfinite(probe_deadline) or probe_deadline < 0:
            raise ValueError(f"probe_deadline must be a finite number >= 0, not {probe_deadline!r}")
        if policy is not None and not callable(getattr(policy, "choose", None)):
            raise TypeError(f"policy must have a choose(features, allowed) method, not {type(policy).__name__}")
        if process_executor is not None and not callable(getattr(process_executor, "submit", None)):
            raise TypeError(
                f"process_executor must be a concurrent.futures.Executor, not {type(process_executor).__name__}"
            )
        if mp_context is not None and not callable(getattr(mp_context, "get_start_method", None)):
            raise TypeError(f"mp_context must be a multiprocessing context, not {type(mp_context).__name__}")
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._forced: Backend | None = _PREFER[prefer] if prefer else None  # type: ignore[assignment]
        self._allow_process = require != "sharedmem"
        self._mp_context = mp_context
        self._max_tasks_per_child = max_tasks_per_child
        self._thread_name_prefix = thread_name_prefix
        self._model = model
        self._policy = policy
        # A policy handed in is there to be asked (tests, experiments): it
        # decides even tiny calls, which otherwise sprint (_start_sprint),
        # and work the rules leave to threads (_decide).
        self._policy_given = policy is not None
        self._process_executor = process_executor
        self._probes = probes
        self._probe_deadline = probe_deadline
        self._crash_retries = crash_retries
        self._policy_lock = threading.Lock()

        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        # Notified whenever a finished probe has been judged (see decision_for).
        self._judged = threading.Condition(self._lock)
        self._states: OrderedDict[Hashable, _FunctionState] = OrderedDict()
        self._routes: dict[str, Route] = {}
        # (weak reference to the function, its state) of the last decided
        # submit: see _remember_decided.
        self._last_decided: tuple[weakref.ref[Any], _FunctionState] | None = None
        # True once calls went to the process route (not just a prestart).
        self._process_used = False
        self._gate = _Gate(max_workers) if max_workers is not None else None
        # Work accepted (under the lock) and work finished, counted per
        # thread: each worker adds to its own entry only, so it needs no
        # lock, and it allocates nothing between the user's calls.  Workers
        # taking the executor's lock for every finished call made submit()
        # wait for it (4-8 us each); a deque of finished sizes instead had
        # the workers malloc its blocks, and glibc then trimmed their heaps
        # under the calls' large buffers (file I/O: 2.5x the page faults).
        self._accepted = 0
        self._finished: dict[int, int] = {}
        self._shutdown = False
        self._routes_closed = False
        self._broken: str | None = None
        self._monitor = GilMonitor()
        self._serial = next(_EXECUTOR_SERIALS)
        self._plans: weakref.WeakSet[MapPlan] = weakref.WeakSet()
        # The control thread (see _on_control), once needed (a list, so that
        # the finalizer below sees it once it exists).
        self._controls: list[ControlThread] = []
        # If the executor is dropped without shutdown(), its workers still
        # end: armed with the first route or control thread (see
        # _arm_finalizer), since until then there is nothing to end.
        self._finalizer: weakref.finalize[Any, Any] | None = None
        _LIVE_EXECUTORS.add(self)

    @property
    def _cores(self) -> int:
        """Cores this process may use, read when first needed (see usable_cores)."""
        return usable_cores()

    # ------------------------------------------------------------------
    # The Executor interface

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; return its future at once."""
        last = self._last_decided
        state = last[1] if last is not None and last[0]() is fn else None
        if state is None:
            # A function not seen just before: check it (a loop of submits
            # of one function skips this, and the lookup of its state).
            if not callable(fn):
                raise TypeError(f"{type(fn).__name__!r} object is not callable")
            _reject_coroutine_function(fn)
        future: Future[T] = Future()
        with self._lock:
            self._check_open()
            self._accepted += 1
        if state is not None:
            decision = state.decision
            if decision is not None and not state.reprobe:
                self._dispatch(decision, fn, [(args, kwargs)], [future])
                return future
        self._route_calls(fn, [(args, kwargs)], [future])
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """Like ``Executor.map``: results in order, lazily, with ``timeout``.

        Calls are batched by the decision's chunk size where the route
        allows (the process route honours ``chunksize`` as the standard
        library does), so a million tiny calls do not make a million
        futures.  ``buffersize`` (as in Python 3.14) bounds how many inputs
        are taken from the iterables ahead of the results consumed.  Calls
        judged tiny may run on the thread that reads the results, as it
        reads them (in a ``contextvars`` context of their own), unless
        ``timeout`` is given or the executor has an ``initializer`` or a
        ``thread_name_prefix``; a map read in part, or not at all, still
        runs whole on the executor's threads, unless nobody could tell
        whether its calls ran (see ``_map_for_reader``).
        """
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        if not callable(fn):
            raise TypeError(f"{type(fn).__name__!r} object is not callable")
        _reject_coroutine_function(fn)
        end_time = None if timeout is None else timeout + time.monotonic()
        with self._lock:
            self._check_open()
        # A map's calls are kept as their arguments alone: one value each
        # when there is one iterable, else a tuple.  For microsecond calls,
        # building an (args, kwargs) pair per call would cost as much as
        # running them.
        spread = len(iterables) != 1
        source: Iterator[Any] | tuple[Any, ...] = zip(*iterables) if spread else iter(iterables[0])
        count: int | None = None
        # Its inline batches may run on the consumer's thread (see
        # MapPlan.run_on_consumer), unless that thread could not honour the
        # timeout, or the user asked for the calls to run on threads of the
        # executor's own: initialized, or named.
        helped = end_time is None and self._initializer is None and not self._thread_name_prefix
        first_call: MeasuredCall | None = None
        contained: bool | None = None  # whether its calls are self-contained, once looked at
        if buffersize is None:
            # Like the standard library: the inputs are read now, the calls
            # run whether or not the results are ever asked for.  A tuple:
            # a list's copy in C when given one (none when given a tuple),
            # and the garbage collector stops tracking a tuple of plain
            # values once it has seen it, where it walked a list of a
            # million inputs at each collection (14 ms each).
            source = tuple(iterables[0] if not spread else source)
            count = len(source)
            if helped and count:
                handed, first_call, contained = self._map_for_reader(fn, source, spread)
                if handed is not None:
                    return handed
        plan = MapPlan(
            self,
            fn,
            source,
            spread=spread,
            count=count,
            chunksize=chunksize,
            buffersize=buffersize,
            probes=self._probes,
            helped=helped,
            paced=contained,
            first_call=first_call,
        )
        with self._lock:
            self._plans.add(plan)
        plan.pump()
        if plan.needs_control:
            # Its next batches are built there once these finish: started
            # here, not by a worker (see _control).  A map sent whole, or
            # whose consumer runs its batches (tiny calls), does not need it.
            self._control()
        return map_results(plan, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; finish (or cancel) what was accepted."""
        with self._lock:
            self._shutdown = True
            if not (self._routes or self._controls or self._plans) and self._unfinished() <= 0:
                # Nothing ever started, nothing running (maps handed to their
                # readers, say): nothing to wait for or stop.
                self._routes_closed = True
                return
            cancelled: list[Future[Any]] = []
            listeners: list[Callable[[Decision | BaseException | None], None]] = []
            if cancel_futures:
                for state in self._states.values():
                    cancelled.extend(future for _, _, future in state.pending)
                    state.pending = []
                    listeners.extend(state.listeners)
                    state.listeners = []
                if self._gate is not None:
                    backlog = list(self._gate.backlog)
                    self._gate.backlog.clear()
                else:
                    backlog = []
            else:
                backlog = []
        for future in cancelled:
            future.cancel()
        for listener in listeners:
            listener(None)
        for plan in list(self._plans):
            if cancel_futures:
                plan.fail(CancelledError())
            else:
                plan.stop_reading_ahead()
        with self._lock:
            self._accepted -= len(cancelled)
            if self._unfinished() <= 0:
                self._idle.notify_all()
        for _, batch in backlog:
            batch.settle(CANCELLED)
        if cancel_futures:
            for route in list(self._routes.values()):
                route.shutdown(wait=False, cancel_futures=True)
        inline = self._routes.get("inline")
        if isinstance(inline, InlineRoute):
            # Batches waiting for their map's reader run now, read or not,
            # as a pool runs all it accepted (see MapPlan.run_on_consumer).
            inline.unpace()
        if wait:
            with self._lock:
                while self._unfinished() > 0:
                    self._idle.wait()
            self._close_routes(wait=True)
        else:
            with self._lock:
                done = self._unfinished() <= 0
            if done:
                self._close_routes(wait=False)
            # else: the last batch to finish closes the routes (_batch_done)

    # ------------------------------------------------------------------
    # Introspection

    def decision_for(self, fn: Callable[..., Any]) -> Decision | None:
        """The decision for ``fn``, or ``None`` while it is still being probed.

        Once a probe's result is out, its judging may still be under way:
        that is waited for (a second at most), so that a decision taken on
        the probes whose results the caller has seen is there to read.
        """
        forced = self._forced_decision(fn)
        if forced is not None:
            return forced
        key = function_key(fn)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                controls = self._controls
                if not (controls and threading.current_thread() in controls[0].threads()):
                    # A provisional decision (taken from running probes) is
                    # not the one the finished probes' judging will give.
                    self._judged.wait_for(
                        lambda: not state.judging or (state.decision is not None and not state.provisional),
                        _JUDGING_WAIT_S,
                    )
                if state.decision is not None:
                    return state.decision
        features = self._stored_profile(key)
        if features is None:
            return None
        return self._decide(features)

    # ------------------------------------------------------------------
    # Routing

    def _check_open(self) -> None:
        if self._broken is not None:
            raise BrokenExecutor(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _forced_decision(self, fn: Callable[..., Any]) -> Decision | None:
        marker = getattr(underlying_function(fn), _PIN_ATTRIBUTE, None) or getattr(fn, _PIN_ATTRIBUTE, None)
        if marker in ("thread", "process", "inline"):
            pinned: Backend = marker
            if pinned == "process" and not self._allow_process:
                pinned = "thread"
            return forced_decision(pinned, f"pinned to {pinned} with pin()", self._max_workers, self._cores)
        if self._forced is not None:
            return forced_decision(self._forced, f"prefer={self._forced!r}", self._max_workers, self._cores)
        return None

    def _route_calls(
        self, fn: Callable[..., Any], calls: list[Call], futures: list[Future[Any]]
    ) -> None:
        """Send calls (already counted as outstanding) where they belong."""
        decision = self._forced_decision(fn)
        if decision is not None:
            self._dispatch(decision, fn, calls, futures)
            return
        state = self._state_for(fn)
        decision = state.decision
        if decision is not None and not state.reprobe:
            # Decided (the common case): straight to the route, building
            # nothing more per call than the batch itself.
            self._remember_decided(fn, state)
            self._dispatch(decision, fn, calls, futures)
            return
        probes: list[tuple[Call, Future[Any]]] = []
        arm = False
        direct: list[tuple[Call, Future[Any]]] = []
        with self._lock:
            decision = state.decision
            if decision is None or state.reprobe:
                for call, future in zip(calls, futures):
                    if state.probes_started < self._probes:
                        state.probes_started += 1
                        probes.append((call, future))
                    elif decision is None:
                        state.pending.append((fn, call, future))
                    else:
                        direct.append((call, future))
                if probes:
                    state.hold_function(fn)
                # The deadline runs from the first probe, or from the first
                # call that waits if it passed while nothing was waiting.
                arm = decision is None and state.timer is None
            else:
                direct = list(zip(calls, futures))
        if direct:
            assert decision is not None
            self._dispatch(decision, fn, [c for c, _ in direct], [f for _, f in direct])
        if probes:
            self._route("thread").prestart(len(probes))
        for call, future in probes:
            self._start_probe(state, fn, call, future)
        if arm:
            early = self._probe_deadline > _EARLY_LOOK_S
            delay = _EARLY_LOOK_S if early else self._probe_deadline
            self._arm_deadline(state, delay, early=early, unless_armed=True)

    def _remember_decided(self, fn: Callable[..., Any], state: _FunctionState) -> None:
        """Let the next submit of this very function skip the lookups.

        Held weakly: a bound method (a new object each time) is simply not
        remembered, and no function is kept alive by the executor.
        """
        try:
            self._last_decided = (weakref.ref(fn), state)
        except TypeError:  # builtins and other objects without weak references
            self._last_decided = None

    def _state_for(self, fn: Callable[..., Any]) -> _FunctionState:
        key = function_key(fn)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return state
            state = _FunctionState(key, describe(fn), self._monitor)
            self._states[key] = state
            self._evict_states()
        features = self._stored_profile(key)
        if features is not None:
            decision = self._decide(features)
            with self._lock:
                if state.decision is None:
                    state.decision = decision
        return state

    def _stored_profile(self, key: Hashable) -> Mapping[str, float] | None:
        """Features another executor stored for this function, if they do.

        Features whose facts went unread (processes were futile, or not
        allowed, there) do not do for an executor to which processes may
        matter: it probes afresh (a ``require="sharedmem"`` run must not
        keep a function off processes later).
        """
        features = PROFILES.get(key)
        if features is not None and features.get("facts_known", 1.0) < 0.5 and self._processes_possible(features):
            return None
        return features

    def _processes_possible(self, features: Mapping[str, float]) -> bool:
        """Whether this executor may use processes and they could pay off
        for work with these features, whatever the function's facts."""
        return self._allow_process and process_futile(features) is None

    def _evict_states(self) -> None:
        # Keep undecided states (they hold pending work); drop the oldest others.
        excess = len(self._states) - _STATE_CAPACITY
        if excess <= 0:
            return
        for key in list(itertools.islice(self._states, 0, excess * 2)):
            if excess <= 0:
                break
            if self._states[key].decision is not None:
                del self._states[key]
                excess -= 1

    def _start_probe(
        self,
        state: _FunctionState,
        fn: Callable[..., Any],
        call: Call,
        future: Future[Any],
        scout: _Scout | None = None,
        *,
        here: bool = False,
        ran: MeasuredCall | None = None,
    ) -> None:
        """Send one call to a thread to be measured; ``here``: run it on this
        thread instead (a self-contained scout, see :meth:`_scout`), or
        take what it gave when it ran (``ran``)."""
        box: list[CallSample] = []

        def invoke(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
            nonlocal ran
            if ran is not None:
                (ok, value, sample), ran = ran, None  # the result is the future's alone
            else:
                ok, value, sample = measure_call(f, args, kwargs, self._monitor, state.tracker, holds_gil=here)
            box.append(sample)
            return ok, value

        def done(batch: Batch) -> None:
            # None: cancelled before it ran; another call probes instead.
            sample = box[0] if box else None
            if not here:
                self._monitor.release()
            if scout is None or scout.finished(sample):
                self._judge_later(state, sample, probe_round)
            self._batch_done(batch)

        if scout is None:  # a scout may need none (see _scout)
            self._control()  # started here, not by the worker that runs the probe
        if not here:
            # Start the GIL sampler now, so it is awake when the probe runs.
            self._monitor.acquire()
        probe_round = state.round
        batch = Batch(fn, [call], [future], on_done=done, invoke=invoke)
        if here:
            self._run_here(batch)
        else:
            self._submit_batch(self._route("thread"), batch)

    def _map_for_reader(
        self, fn: Callable[..., Any], source: tuple[Any, ...], spread: bool
    ) -> tuple[Iterator[Any] | None, MeasuredCall | None, bool | None]:
        """The results of a map that needs no worker, its plan nor its
        probes, if it is one (else None); its first call, if that ran; and
        whether its calls are self-contained (None: not looked at).

        Such a map's calls are self-contained (see
        :func:`~adaptive_pool._bytecode.self_contained`), so nobody could tell
        when, where or even whether one ran, and tiny (or the function is
        decided inline already): its reader is handed them all as one
        iterator that runs each call as its result is read, as a plan would
        hand them over batch by batch (see ``MapPlan.run_on_consumer``), less
        the plan, the route and the scout they cost (a fresh script's map of
        20,000 microsecond calls spent half as long again getting to its first
        batch as running it).  The first call of an undecided function runs
        here, measured, and starts its sprint (see :meth:`_start_sprint`);
        not tiny, it is handed to the plan to be judged as its first probe.
        """
        if self._policy_given or self._forced_decision(fn) is not None:
            return None, None, None  # a policy handed in decides tiny calls too
        key = function_key(fn)
        with self._lock:
            state = self._states.get(key)
        if state is not None and not self._reader_runs(state):
            return None, None, None  # decided otherwise: the byte code need not be read
        args = source[0] if spread else (source[0],)
        if not self_contained(fn, args, NO_KWARGS):
            return None, None, False
        if state is not None:
            return reader_results(fn, source, spread), None, True
        ran = measure_call(fn, args, NO_KWARGS, self._monitor, holds_gil=True)
        sample = ran[2]
        if sample.wall_s >= TINY_CALL_S:
            return None, ran, True
        state = self._state_for(fn)
        with self._lock:
            fresh = state.decision is None and not state.probes_started
            if fresh:
                # Its first probe, judged (none other runs: it was fresh).
                state.probes_started = state.probes_done = 1
                state.samples.append(sample)
        if fresh:
            # Decided on the call's timings alone: summarize()'s other
            # features would read the machine's CPU quota (~70 us, as long
            # as 1,400 such calls) and facts that no sprint uses (unread,
            # they keep processes off, as for any sprint).
            self._sprint_on(state, {**call_timings([sample]), "facts_known": 0.0})
        if not self._reader_runs(state):
            return None, ran, True  # probed or decided otherwise meanwhile
        return reader_results(fn, source, spread, first=ran), None, True

    def _reader_runs(self, state: _FunctionState) -> bool:
        """Whether a map's self-contained calls of this function go to its
        reader whole (see :meth:`_map_for_reader`): decided inline, by the
        policy or a sprint, and not being measured again."""
        with self._lock:
            decision = state.decision
            return (
                decision is not None
                and decision.backend == "inline"
                and decision.source != "forced"
                and not (state.reprobe or state.held)
                and (state.sprint is not None or not state.provisional)
            )

    def _scout(
        self, fn: Callable[..., Any], call: Call, future: Future[Any], here: bool, ran: MeasuredCall | None = None
    ) -> _Scout | None:
        """Start a waiting map's first call of an undecided function (already
        counted as outstanding) alone, and wait up to :data:`_SCOUT_WAIT_S`
        for it; None if that is not how its first call goes (route it as
        any other).  ``here``: the map's caller may run it, if nobody could
        tell (see :func:`~adaptive_pool._bytecode.self_contained`).

        Tiny, it is judged here and the function decided (``decided``): the
        map's calls then run inline at once (see :meth:`_start_sprint`), with
        no other probe, no control thread and no hand-offs between threads
        (which had cost a map of 20,000 microsecond calls more than running
        them did).  ``ran``: the call ran already, self-contained, as
        measured (see :meth:`_map_for_reader`); that is how it goes here.
        Otherwise the map sends its other probes, then calls
        :meth:`_scout_over`, and the first is judged with them.  On a
        worker, the GIL sampler starts before the call runs all the same (a
        self-contained call needs none: it holds the GIL throughout): a
        thread started beside a call that holds the GIL waits a switch
        interval for each step of its start, and a sampler started after
        the wait saw too little of either probe to read the GIL (a
        pure-Python closure went to threads).  Such a first call also keeps this thread off the GIL
        for a switch interval past the wait: the other probes start up to
        5 ms later than they would have, their readings unchanged (the
        sampler watched all along).
        """
        state = self._scoutable(fn)
        if state is None:
            return None
        scout = _Scout(state)
        if ran is not None or (here and self_contained(fn, *call)):
            # It cannot wait for the map's other calls nor see its thread:
            # run here, it spares starting a worker and the GIL sampler,
            # which cost a map of 20,000 microsecond calls a fifth of its time.
            scout.here = True
            self._start_probe(state, fn, call, future, scout, here=True, ran=ran)
        else:
            # The sampler starts while a worker does (see GilMonitor.acquire).
            self._monitor.acquire(wait=False)
            try:
                self._route("thread").prestart(1)
                self._start_probe(state, fn, call, future, scout)
            finally:
                self._monitor.release()
        scout.wait(_SCOUT_WAIT_S)
        sample = scout.sample
        if sample is not None and sample.wall_s < TINY_CALL_S:
            # Finished and not released: it is ours to judge (it sprints).
            with self._lock:
                state.judging += 1
            scout.judged = True
            self._probe_finished(state, sample, scout.probe_round)
            scout.decided = state.decision is not None
        return scout

    def _scout_over(self, scout: _Scout) -> None:
        """The map sent its other probes (counted before the first can be
        judged, or it would be judged alone): judge the first with them,
        unless it is still running (then it is judged when over)."""
        if scout.judged:
            return
        finished, sample = scout.release()
        if finished:
            self._judge_later(scout.state, sample, scout.probe_round)

    def _scoutable(self, fn: Callable[..., Any]) -> _FunctionState | None:
        """The state of ``fn`` if a map's first call may scout (see
        :meth:`_scout`), with that call counted as its first probe."""
        if self._policy_given or self._forced_decision(fn) is not None:
            return None  # a policy handed in decides tiny calls too
        state = self._state_for(fn)
        with self._lock:
            if state.decision is not None or state.reprobe or state.probes_started or not state.listeners:
                return None
            state.probes_started = 1
            state.hold_function(fn)
        return state

    def _judge_later(self, state: _FunctionState, sample: CallSample | None, probe_round: int) -> None:
        """Have a finished probe judged on the control thread (counted in
        ``state.judging`` meanwhile, for decision_for())."""
        with self._lock:
            state.judging += 1
        self._on_control(self._probe_finished, state, sample, probe_round)

    def _probe_finished(self, state: _FunctionState, sample: CallSample | None, probe_round: int) -> None:
        try:
            if probe_round == state.round:  # else it ran before the function was measured again
                self._judge_probe(state, sample)
        finally:
            self._judging_done(state)

    def _judging_done(self, state: _FunctionState) -> None:
        """One judging counted in ``state.judging`` is over: wake decision_for()."""
        with self._lock:
            state.judging -= 1
            self._judged.notify_all()

    def _judge_probe(self, state: _FunctionState, sample: CallSample | None) -> None:
        if sample is None or (sample.wall_s >= TINY_CALL_S and self._facts_may_matter(sample)):
            # Learnt while the other probes still run, for calls that may
            # go to processes; tiny calls, and calls for which processes
            # are futile, may never need the facts (see _features, _start_sprint).
            self._learn_facts(state)
        with self._lock:
            state.probes_done += 1
            if sample is not None:
                state.samples.append(sample)
            if state.probes_done < state.probes_started:
                return
            if state.decision is not None and not (state.provisional or state.reprobe):
                return
            idle = bool(state.samples) and state.probes_started < self._probes
            idle = idle and not (state.pending or state.listeners)
            retry = not state.samples
            if retry:
                # Every probe was cancelled before it ran: the next calls probe.
                state.probes_started = state.probes_done = 0
                pending, state.pending = state.pending, []
        if idle:
            # Nothing waits, and the next call will be measured too: a
            # decision needs all ``probes`` samples, however the calls were
            # spread in time.  Meanwhile the function must not be held (a
            # bound method holds its object): its facts are read now.
            self._learn_facts(state)
            return
        if retry:
            for fn, call, future in pending:  # already counted as outstanding
                self._route_calls(fn, [call], [future])
            return
        if self._start_sprint(state):
            return
        features = self._features(state, complete=True)
        if features is None:
            return
        if state.decision is None and state.listeners and self._looks_like_processes(features, state):
            # Interpreters take tens of milliseconds to start: a head start
            # while the policy (maybe a model file to read) decides.
            self._prestart_processes()
        decision = self._decide(features)
        with self._lock:
            map_waits = bool(state.listeners)  # a map's plan listens
        previous = state.decision
        if state.warm_checked and previous is not None and previous.backend == "process":
            # A warm reading, noisy beside starting interpreters, clearly
            # overturns the first decision or confirms it as it was sized;
            # what the calls cost is the least of the two readings (first
            # calls carry one-time costs), for judging whether the rest of
            # the map still pays for starting processes.
            if overturns_processes(features, previous.features):
                if decision.backend == "process":
                    decision = self._on_threads(decision, "warm calls compute much less than the first")
            else:
                cost = {
                    name: min(previous.features.get(name, value), value)
                    for name, value in features.items()
                    if name in ("wall_s", "cpu_s")
                }
                decision = previous._replace(features={**previous.features, **cost})
        PROFILES.put(state.key, dict(decision.features) or features)
        # Only for maps (submitted calls go where the decision says, as they
        # come), and for calls short enough that one-time costs weigh.
        warm_check = (
            decision.backend == "process"
            and map_waits
            and not state.warm_checked
            and decision.features.get("wall_s", 0.0) < _WARM_CHECK_MAX_S
        )
        self._settle_decision(state, decision, provisional=False, remeasure=warm_check)
        if warm_check:
            # Warm probes that take long (or wait for calls still held)
            # must not hold the map: past this, the first decision stands.
            self._limit_remeasure(state, decision, max(self._probe_deadline, 4 * decision.features.get("wall_s", 0.0)))

    def _limit_remeasure(
        self,
        state: _FunctionState,
        decision: Decision,
        delay: float,
        provisional: bool = False,
        *,
        patient: bool = False,
        waited: float = 0.0,
    ) -> None:
        """Have ``decision`` stand as it was (``provisional`` or not) if the
        function is still being measured again ``delay`` seconds from now:
        probes that take long, or wait for calls held meanwhile, must not
        hold a map for ever.  ``patient``: while the probes compute (they
        are not waiting for a held call, then), wait again, up to
        :data:`_HOLD_PATIENCE_S` in all (``waited`` so far)."""
        control = self._control()
        if control is not None:
            args = (state, decision, delay, provisional, patient, waited + delay)
            control.call_later(delay, _weak_method(self._remeasure_overdue), *args)

    def _remeasure_overdue(
        self, state: _FunctionState, decision: Decision, delay: float, provisional: bool, patient: bool, waited: float
    ) -> None:
        """The probes measuring the function again are late: the decision
        they were to check stands; held maps go on."""
        with self._lock:
            if not state.reprobe or state.decision is not decision:
                return
        if patient and waited < _HOLD_PATIENCE_S and _computing_probes(state.tracker.snapshot()):
            # Beside a convoy of calls holding the GIL, probes that compute
            # took over 250 ms on a loaded machine; giving way then sent
            # every call held back to the convoy after all.
            self._limit_remeasure(state, decision, delay, provisional, patient=True, waited=waited)
            return
        self._settle_decision(state, decision, provisional=provisional)

    def _facts_may_matter(self, sample: CallSample) -> bool:
        """Whether one probe leaves processes on offer (before the facts)."""
        return self._processes_possible(summarize([sample], fn_picklable=True, effects=_UNREAD_EFFECTS))

    def _start_sprint(self, state: _FunctionState) -> bool:
        """Run a waiting map's tiny calls inline at once, deciding later.

        Deciding costs milliseconds (a model to parse, the function's pickle
        and byte code to read); calls of a few microseconds may all be done
        by then.  So they run inline until their batches have cost
        :data:`~._policy.SPRINT_BUDGET_S`, and only a map still going then
        asks the policy (:meth:`_end_sprint`).
        """
        with self._lock:
            if self._policy_given or state.decision is not None or state.sprint is not None or not state.listeners:
                return False
            samples = list(state.samples)
        # The facts are not read yet: until the policy decides, nothing
        # can go to a process anyway.
        return self._sprint_on(state, summarize(samples, fn_picklable=False, effects=_UNREAD_EFFECTS))

    def _sprint_on(self, state: _FunctionState, features: Mapping[str, float]) -> bool:
        """Start the sprint of a function whose probes (``features``) were
        tiny; False if they were not."""
        decision = sprint_decision(features)
        if decision is None:
            return False
        with self._lock:
            state.sprint = [0.0, 0.0, 0.0]
            state.fn = None  # read again from the batch that ends the sprint
        self._settle_decision(state, decision, provisional=True)
        return True

    def _sprint_batch(self, fn: Callable[..., Any], batch: Batch, more_to_come: bool) -> None:
        """Count a sprint batch; size the next ones; decide once over budget.

        ``more_to_come``: whether calls of the batch's map (if any) remain to
        be dispatched.  A sprint over budget with none left is decided when
        the function's next calls come: deciding now (reading a model and the
        function's byte code, ~10 ms) would serve nothing but keep
        ``shutdown()`` waiting for it.
        """
        state = self._states.get(function_key(fn))
        if state is None or batch.elapsed_s is None or not batch.ran or batch.cpu_unread:
            return
        calls = batch.ran * calls_per_invocation(fn)
        with self._lock:
            sprint, decision = state.sprint, state.decision
            if sprint is None or decision is None or decision.source != "sprint":
                return  # decided meanwhile
            sprint[0] += batch.elapsed_s
            sprint[1] += calls
            sprint[2] += batch.cpu_s or 0.0
            per_call = {"wall_s": sprint[0] / sprint[1], "cpu_s": sprint[2] / sprint[1]}
            if sprint[0] < SPRINT_BUDGET_S or not more_to_come:
                # Batches measure a tiny call better than a probe can (its
                # clock readings cost more than the call): size the next
                # batches by what the last ones took.
                state.decision = decision._replace(chunksize=size_chunks("inline", per_call, SPRINT_CHUNK_S))
                return
            state.sprint = None
            state.fn = fn
            # Judged like a finished probe: decision_for() waits for it (a
            # map may be over, its results read, before the policy decided).
            state.judging += 1
        self._on_control(self._end_sprint, state, per_call)  # not on the worker

    def _end_sprint(self, state: _FunctionState, per_call: Mapping[str, float]) -> None:
        """The sprint used its budget: the policy decides the remaining calls."""
        try:
            self._decide_after_sprint(state, per_call)
        finally:
            self._judging_done(state)

    def _decide_after_sprint(self, state: _FunctionState, per_call: Mapping[str, float]) -> None:
        # Once shut down, no call of this executor will follow the decision:
        # reading the function's facts and a model (~10 ms beside a busy
        # lane) would only keep shutdown() waiting.
        if self._shutdown:
            return
        features = self._features(state, complete=True)
        if features is None or self._shutdown:
            return
        # What the calls cost back to back, beside what the probes saw of
        # the GIL, their arguments and results.
        wall, cpu = per_call["wall_s"], min(per_call["cpu_s"], per_call["wall_s"])
        features.update(
            wall_s=wall,
            cpu_s=cpu,
            cpu_ratio=cpu / wall if wall > 0 else 0.0,
            wait_ratio=1.0 - cpu / wall if wall > 0 else 1.0,
        )
        decision = self._decide(features)
        PROFILES.put(state.key, dict(decision.features) or features)
        self._settle_decision(state, decision, provisional=False)

    def _probe_deadline_hit(self, state: _FunctionState, early: bool = True) -> None:
        """Judge probes that are still running.

        First a few milliseconds in: probes that plainly wait (sleep, I/O)
        are decided at once, since waiting longer tells nothing new, and
        probes that plainly compute holding the GIL start the process pool
        warming up.  Then at ``probe_deadline``: whatever the probes show.
        """
        with self._lock:
            if state.decision is not None or self._routes_closed:
                return
            waiting_calls = bool(state.pending or state.listeners)
            if not waiting_calls and not early:
                # Nobody waits for a decision: let the next waiting call
                # (or the probes finishing) set it.
                state.timer = None
                return
        age = state.tracker.running_for()
        if age is not None and age < _GIL_HELD_PATIENCE_S and self._gil_mostly(state, held=True):
            # Probes holding the GIL starve this thread: each time it gives
            # the GIL up (a lock, a file read) it waits a switch interval or
            # more to get it back, and importing a module takes hundreds of
            # such waits.  Reading features, facts and a model beside two
            # probes of 250 ms of pure Python took 0.4 s (and blanked the
            # GIL sampler's view with our own work, so the probes then read
            # as unmeasured); loading the process pool's module, 3 s.  So
            # look again once they are twice as old, most likely ended by
            # then; probes that go on and on are judged starved or not.
            self._arm_deadline(state, max(self._probe_deadline, age), early=False)
            return
        features = self._features(state, complete=False)
        if features is None:
            return
        if early:
            # "Plainly waits" needs a GIL reading, and one that saw the GIL
            # mostly free: a probe kept off the GIL by other threads looks
            # just as idle as one that sleeps (a pure-Python probe read cpu
            # 1% of wall under load, and its map went to threads).  Its own
            # gil_hold cannot tell: it is capped by its CPU share.
            if waiting_calls and features["wait_ratio"] > 0.9 and features["gil_measured"] and self._gil_mostly(state, held=False):
                self._settle_decision(state, self._decide(features), provisional=True)
                return
            if self._looks_like_processes(features, state):
                self._prestart_processes()
            self._arm_deadline(state, max(0.0, self._probe_deadline - _EARLY_LOOK_S), early=False)
            return
        self._settle_decision(state, self._decide(features), provisional=True)

    @staticmethod
    def _gil_mostly(state: _FunctionState, held: bool) -> bool:
        """Whether the GIL was mostly held (``held``) or mostly free while the
        function's probes ran; False when the sampler saw too little to say."""
        busy = state.tracker.gil_busy()
        return busy is not None and (busy >= 0.5) == held

    def _looks_like_processes(self, features: Mapping[str, float], state: _FunctionState) -> bool:
        """Probes that compute holding the GIL, whose work may go to processes.

        Judged on the GIL's share of their CPU time: two probes of a
        pure-Python function take turns, each holding the GIL about half of
        its wall time, while its share of their CPU time stays near one.
        Not when the waiting maps' calls are too few to pay for starting
        processes: on a small machine, interpreters started for nothing
        take the cores from the calls (file I/O ran 1.5x slower).
        """
        calls = state.map_calls
        return (
            self._process_executor is None
            and features["cpu_ratio"] > 0.6
            and gil_cpu_share(features) > 0.7
            and process_blockers(features) is None
            and self._processes_possible(features)
            and (calls is None or process_pays_off(features, calls, self._cores, pool_running=False))
        )

    def _prestart_processes(self) -> None:
        try:
            self._route("process").prestart(self._max_workers or self._cores)
        except RuntimeError:
            # Shut down meanwhile (this runs on the control thread):
            # warming up was only ever a head start.
            pass

    def _arm_deadline(self, state: _FunctionState, delay: float, *, early: bool, unless_armed: bool = False) -> None:
        control = self._control()
        if control is None:
            return
        with self._lock:
            if state.decision is not None or self._routes_closed or (unless_armed and state.timer is not None):
                return
            state.timer = control.call_later(delay, _weak_method(self._probe_deadline_hit), state, early)

    def _learn_facts(self, state: _FunctionState) -> None:
        """Read what the function object tells (once), then let it go."""
        with state.facts_lock:  # a second caller waits for the first's answer
            with self._lock:
                fn, state.fn = state.fn, None
            if fn is None or state.facts is not None:
                return
            # Picklability is a fact about the function, whatever this
            # executor allows: the features go to the process-wide store.
            with self._monitor.own_work():
                facts = (function_picklable(fn), static_effects(fn))
            del fn
            with self._lock:
                state.facts = facts

    def _features(self, state: _FunctionState, *, complete: bool) -> dict[str, float] | None:
        """Features of the probes so far; the function's facts are read
        only if processes could be on offer (reading them costs milliseconds
        the first time: the pickle and dis modules)."""
        with self._lock:
            samples = list(state.samples)
            facts = state.facts
            sample_args = state.pending[0][1] if state.pending else None
        if not complete:
            samples += state.tracker.snapshot()
        if not samples:
            return None
        with self._monitor.own_work():
            hint = pickled_size((sample_args[0], sample_args[1])) if sample_args else 32
        if facts is None:
            presumed = summarize(samples, fn_picklable=True, effects=_UNREAD_EFFECTS, arg_bytes_hint=hint)
            if not self._processes_possible(presumed):
                presumed["facts_known"] = 0.0  # see process_blockers
                return presumed
            self._learn_facts(state)
            facts = state.facts
            if facts is None:
                return None
        return summarize(samples, fn_picklable=facts[0], effects=facts[1], arg_bytes_hint=hint)

    def _decide(self, features: Mapping[str, float]) -> Decision:
        """The policy's decision; threads if the policy (or a model) fails.

        This runs on the control thread: an exception here
        would leave waiting calls pending forever, so it never escapes.
        """
        try:
            if not self._policy_given:
                ruled = rule_decision(features, allow_process=self._allow_process, max_workers=self._max_workers)
                if ruled is not None:
                    return ruled
            with self._monitor.own_work():  # loading a model file takes a while
                policy = self._get_policy()
            return decide(
                features,
                policy,
                allow_process=self._allow_process,
                max_workers=self._max_workers,
            )
        except Exception as exc:
            logger.exception("adaptive_pool: the policy failed; using threads")
            return forced_decision(
                "thread", f"the policy failed ({exc!r}): threads are always safe", self._max_workers, self._cores
            )

    def _get_policy(self) -> Policy:
        if self._policy is None:
            with self._policy_lock:
                if self._policy is None:
                    self._policy = load_policy(self._model)
        return self._policy

    def _settle_decision(
        self, state: _FunctionState, decision: Decision, *, provisional: bool, remeasure: bool = False
    ) -> None:
        """Put ``decision`` in force and let waiting calls and maps go.

        ``remeasure``: a first decision for processes, to be checked on the
        next two calls (see below) before a map's calls go anywhere.
        """
        with self._lock:
            previous = state.decision
            if previous is not None and not (state.provisional or state.reprobe):
                return
            state.decision = decision
            state.provisional = provisional
            state.reprobe = state.held = False
            if remeasure:
                # Probes are a function's first calls: imports, connections
                # and cold caches make them look dearer and more GIL-bound
                # than the calls to come (a numpy call's first use imports
                # numpy.random holding the GIL; file I/O faults its first
                # buffers in).  A map's next two calls are probes again,
                # alone: its other calls wait for their verdict (_for_batch),
                # as beside them the probes would measure their siblings' hold
                # on the GIL.  Worker processes keep starting meanwhile.
                state.warm_checked = True
                state.reprobe = True
                state.probes_started = state.probes_done = 0
            if state.timer is not None:
                state.timer.cancel()
            if not provisional:
                state.fn = None
                state.samples = []
            pending, state.pending = state.pending, []
            listeners, state.listeners = state.listeners, []
        if previous is None or previous.backend != decision.backend:
            logger.debug("adaptive_pool: %s -> %s", state.name, decision)
        if previous is not None and previous.backend == "process" and decision.backend != "process":
            blocker = process_blockers(decision.features)
            if blocker is not None:
                # The probes were still running when calls went to worker
                # processes; now that they finished, the function proves
                # unsafe there. Say so: those calls cannot be taken back.
                warnings.warn(
                    f"adaptive_pool: {state.name} {blocker}, but some of its calls had already "
                    "been sent to worker processes while its first calls were still being "
                    "measured; their effects in those processes are lost. Its other calls run "
                    "on threads. Pin it with adaptive_pool.pin('threads') to avoid this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if pending:
            groups: dict[int, tuple[Callable[..., Any], list[Call], list[Future[Any]]]] = {}
            for fn, call, future in pending:
                group = groups.setdefault(id(fn), (fn, [], []))
                group[1].append(call)
                group[2].append(future)
            for fn, calls, futures in groups.values():
                self._dispatch(decision, fn, calls, futures)
        for listener in listeners:
            listener(decision)

    # ------------------------------------------------------------------
    # Dispatch to routes

    def _route(self, backend: str) -> Route:
        route = self._routes.get(backend)  # routes are never replaced
        if route is not None:
            return route
        if backend == "inline":
            self._route("thread")  # the inline lane runs on its threads
        with self._lock:
            route = self._routes.get(backend)
            if route is not None:
                return route
            if self._routes_closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._arm_finalizer()
            route = self._make_route(backend)
            self._routes[backend] = route
            return route

    def _make_route(self, backend: str) -> Route:
        # Routes must not keep the executor alive: a dropped executor is
        # finalized (and its workers stopped) as soon as the user lets go.
        on_broken = _weak_method(self._break)
        if backend == "inline":
            threads = self._routes["thread"]
            assert isinstance(threads, ThreadRoute)
            return InlineRoute(threads)
        if backend == "thread":
            # With a user's prefix every worker thread is "<prefix>_<n>", as in
            # the standard library.
            return ThreadRoute(
                self._max_workers or min(32, self._cores + 4),
                initializer=self._initializer,
                initargs=self._initargs,
                thread_name_prefix=self._thread_name_prefix or f"AutoExecutor-{self._serial}-thread",
                on_broken=on_broken,
            )
        if self._process_executor is not None:
            return ForeignProcessRoute(self._process_executor, owned=False)
        workers = self._max_workers or self._cores
        if self._mp_context is not None:
            from concurrent.futures import ProcessPoolExecutor  # the stdlib pool only when asked for

            extra: dict[str, Any] = {}
            if self._max_tasks_per_child is not None:  # a 3.11+ parameter
                extra["max_tasks_per_child"] = self._max_tasks_per_child
            pool = ProcessPoolExecutor(
                workers,
                mp_context=self._mp_context,
                initializer=self._initializer,
                initargs=self._initargs,
                **extra,
            )
            return ForeignProcessRoute(pool, owned=True)
        route = ProcessRoute(
            workers,
            initializer=self._initializer,
            initargs=self._initargs,
            max_tasks_per_child=self._max_tasks_per_child,
            on_broken=on_broken,
            crash_retries=self._crash_retries,
        )
        _exit_hook_after_process_pools()
        return route

    def _dispatch(
        self, decision: Decision, fn: Callable[..., Any], calls: list[Call], futures: list[Future[Any]]
    ) -> None:
        route = self._route(decision.backend)
        route.ensure_workers(decision.workers)
        if decision.backend == "process":
            self._process_used = True
        count = len(calls)
        if count == 1:  # one submit: no slicing, no closure (see Batch.__init__)
            self._submit_batch(route, Batch(fn, calls, futures, on_done=self._batch_finished, decision=decision))
            return
        size = self._batch_size(decision, count)
        for start in range(0, count, size):
            batch = Batch(
                fn,
                calls[start : start + size],
                futures[start : start + size],
                on_done=self._batch_finished,
                decision=decision,
            )
            self._submit_batch(route, batch)

    def _batch_finished(self, batch: Batch) -> None:
        self._batch_done(batch)
        if batch.decision is not None:
            self._observe(batch.fn, batch.decision, batch)

    @staticmethod
    def _forced_batch_size(
        decision: Decision, count: int | None, user_chunksize: int, per_call_s: float | None
    ) -> int:
        """Calls in a map's next batch under a decision the user made
        (``prefer=`` or a pin), with nothing probed: sized by what the map's
        batches took so far (``per_call_s``), as a decided route's are by
        its probes.  The first goes alone, so that a slow function's first
        result comes as soon as it would on a pool; tiny calls reach their
        full batches within three (at one call a batch, 200,000 of
        microsecond calls forced to threads took twice the time of
        ``ThreadPoolExecutor``; forced inline, in batches of 256, 3.7x a
        serial loop)."""
        if decision.backend == "process" and user_chunksize > 1:
            return user_chunksize  # as ProcessPoolExecutor.map does
        if per_call_s is None:
            return 1
        size = size_chunks(decision.backend, {"wall_s": per_call_s})
        if count is not None and decision.backend != "inline":
            size = AutoExecutor._within_share(size, count, decision)
        return max(1, size)

    @staticmethod
    def _batch_size(decision: Decision, count: int, user_chunksize: int = 1) -> int:
        if count <= 1:
            return 1
        if decision.backend == "process" and user_chunksize > 1:
            return user_chunksize  # as ProcessPoolExecutor.map does
        size = decision.chunksize
        if decision.backend == "inline" and decision.source == "forced":
            # Nothing measured: one thread runs them all anyway, so batch
            # generously but keep results flowing early.
            size = max(1, min(256, count // 8))
        elif decision.backend != "inline":
            size = AutoExecutor._within_share(size, count, decision)
        return max(1, size)

    @staticmethod
    def _within_share(size: int, count: int, decision: Decision) -> int:
        """``size`` cut so that ``count`` calls make enough batches to keep
        every worker busy, each near the target length."""
        return min(size, -(-count // (4 * max(1, decision.workers))))

    def _submit_batch(self, route: Route, batch: Batch) -> None:
        gate = self._gate
        if gate is not None:
            with self._lock:
                if gate.running >= gate.limit:
                    gate.backlog.append((route, batch))
                    return
                gate.running += 1
        try:
            route.submit(batch)
        except BaseException as exc:
            batch.settle(exc)

    def _run_here(self, batch: Batch) -> None:
        """Run ``batch`` on this thread, counted as running, as on a route."""
        gate = self._gate
        if gate is not None:
            with self._lock:
                gate.running += 1
        try:
            batch.run_here()
        except BaseException as exc:
            batch.settle(exc)

    def _batch_done(self, batch: Batch) -> None:
        gate = self._gate
        next_up: tuple[Route, Batch] | None = None
        if gate is not None:
            with self._lock:
                gate.running -= 1
                if gate.backlog:
                    next_up = gate.backlog.popleft()
                    gate.running += 1
        if next_up is not None:
            route, queued = next_up
            try:
                route.submit(queued)
            except BaseException as exc:
                queued.settle(exc)
        self._count(-batch.size)

    def _close_routes(self, wait: bool) -> None:
        with self._lock:
            if self._routes_closed:
                return
            self._routes_closed = True
            routes = list(self._routes.values())
            timers = [s.timer for s in self._states.values() if s.timer is not None]
            controls = list(self._controls)
        for timer in timers:
            timer.cancel()
        for control in controls:
            control.shutdown(wait=wait)
        for route in routes:
            route.shutdown(wait=wait)

    def _refill(self, plan: MapPlan) -> None:
        """Have a map plan dispatch its next batches (on the control thread)."""
        if not plan.dispatched_all:
            self._on_control(plan.pump)

    def _control(self) -> ControlThread | None:
        """The control thread, started if need be; None once closing down.

        Started by a thread that submits or maps (not by a worker, which
        must not allocate long-lived objects: see adaptive_pool._control).
        """
        with self._lock:
            if self._routes_closed:
                return None
            if not self._controls:
                self._arm_finalizer()
                self._controls.append(ControlThread(f"AutoExecutor-{self._serial}-control"))
            return self._controls[0]

    def _arm_finalizer(self) -> None:
        """Have a dropped executor's routes and control thread end (the
        caller holds the lock, and is about to start the first of them)."""
        if self._finalizer is None:
            self._finalizer = weakref.finalize(self, _close_routes, self._routes, self._gate, self._controls)

    def _on_control(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the control thread, not on a worker."""
        control = self._control()
        if control is None:
            fn(*args)  # closing down: nothing left to keep apart
        else:
            control.call(fn, *args)

    def _break(self, why: str) -> None:
        """A route's initializer failed: the executor is broken, as in the stdlib."""
        with self._lock:
            if self._broken is None:
                self._broken = why
            pending: list[Future[Any]] = []
            listeners: list[Callable[[Decision | BaseException | None], None]] = []
            for state in self._states.values():
                pending.extend(future for _, _, future in state.pending)
                state.pending = []
                listeners.extend(state.listeners)
                state.listeners = []
            backlog = list(self._gate.backlog) if self._gate is not None else []
            if self._gate is not None:
                self._gate.backlog.clear()
            self._accepted -= len(pending)
            if self._unfinished() <= 0:
                self._idle.notify_all()
        error = BrokenExecutor(why)
        for future in pending:
            if not future.done():
                future.set_exception(error)
        for _, batch in backlog:
            batch.settle(error)
        for listener in listeners:
            listener(error)
        for plan in list(self._plans):
            plan.fail(error)

    # ------------------------------------------------------------------
    # Services for map plans (adaptive_pool._map)

    def _count(self, delta: int) -> None:
        """Add to the work accepted and not yet finished; close up when idle
        (after ``shutdown(wait=False)`` returned, the last batch closes the routes)."""
        if delta >= 0:
            with self._lock:
                self._accepted += delta
            return
        finished = self._finished
        thread = threading.get_ident()
        finished[thread] = finished.get(thread, 0) - delta
        # Read after the count: a shutdown that set the flag before it is
        # woken here; one that sets it after sees this count itself.
        if not self._shutdown:
            return
        with self._lock:
            idle = self._unfinished() <= 0
            if idle:
                self._idle.notify_all()
            close = idle and not self._routes_closed
        if close:
            try:
                threading.Thread(target=self._close_routes, args=(False,), daemon=True).start()
            except RuntimeError:
                # No new thread (Python 3.12+ refuses them once the
                # interpreter is exiting, which is when a dropped executor's
                # last batch often ends): close here; nothing is waited for.
                self._close_routes(False)

    def _unfinished(self) -> int:
        """Work accepted and not yet finished (the lock held)."""
        # sum() runs in C without letting another thread in: it never sees
        # the dict change size.
        return self._accepted - sum(self._finished.values())

    def _current_decision(self, fn: Callable[..., Any]) -> tuple[Decision | None, int, bool]:
        """The decision in force for ``fn`` now (None while probing), how
        many of its next calls should run alone as probes, and whether its
        other calls are held until they are judged (see _computing)."""
        forced = self._forced_decision(fn)
        if forced is not None:
            return forced, 0, False
        state = self._state_for(fn)
        with self._lock:
            wanted = self._probes - state.probes_started if state.reprobe else 0
            return state.decision, max(0, wanted), state.held

    def _when_decided(
        self,
        fn: Callable[..., Any],
        listener: Callable[[Decision | BaseException | None], None],
        calls: int | None = None,
    ) -> bool:
        """Call ``listener`` once ``fn`` is decided; False if it already is.

        ``calls``: how many calls the listening map has left (None: unknown).
        """
        if self._forced_decision(fn) is not None:
            return False
        state = self._state_for(fn)
        with self._lock:
            if state.decision is not None:
                return False
            if not state.listeners:
                state.map_calls = calls  # the first map to wait sets it
            elif calls is None or state.map_calls is None:
                state.map_calls = None  # an unknown count stays unknown
            else:
                state.map_calls = max(state.map_calls, calls)
            state.listeners.append(listener)
            return True

    def _for_batch(self, fn: Callable[..., Any], decision: Decision, calls_left: int | None) -> Decision | None:
        """The decision for the next batch of a map with ``calls_left`` calls.

        A decision is per function; only a map knows how much work is left.
        Starting worker processes for a few short calls costs more than it
        saves, so such a tail stays on threads.  A pool the user handed in
        (``process_executor``) is running already.
        """
        if (
            decision.backend != "process"
            or decision.source == "forced"
            or calls_left is None
            or self._process_used
        ):
            return decision
        # Workers started early, while probes looked GIL-bound, are a head
        # start, not a reason: their start-up counts in full until calls
        # go there.  First calls often look dearer and more GIL-bound than
        # the rest (imports, page faults): counting prestarted workers as
        # paid for sent a file I/O map to processes, 1.4-2.4x slower.
        running = self._process_executor is not None
        if not process_pays_off(decision.features, calls_left, decision.workers, pool_running=running):
            return self._on_threads(decision, "too little work left to start processes")
        if self._measuring_again(fn):
            return None  # hold the batch: the warm re-measurement decides (see _settle_decision)
        route = self._route("process")
        if not route.ready():
            route.ensure_workers(decision.workers)
            route.prestart(decision.workers)
            if decision.features.get("wall_s", 0.0) * decision.chunksize <= _THREADS_MEANWHILE_S:
                # Threads sit idle while worker processes start (tens of ms,
                # an interpreter each): let them take the next batches meanwhile.
                return self._on_threads(decision, "on threads while worker processes start")
            # Longer batches wait for the workers: a batch of 250 ms of pure
            # Python sent to a thread runs there at the GIL's pace long after
            # the workers are up (eight such calls ran 2x slower than on a
            # process pool, every one of them on threads).
        # Committed: the rest of this map (and later ones) need not pay
        # the start-up again, so their tails go there too.
        self._process_used = True
        return decision

    def _when_remeasured(
        self, fn: Callable[..., Any], listener: Callable[[Decision | BaseException | None], None]
    ) -> bool:
        """Call ``listener`` once ``fn``'s re-measurement is judged; False if
        it is not being measured again."""
        state = self._states.get(function_key(fn))
        with self._lock:
            if state is None or not state.reprobe:
                return False
            state.listeners.append(listener)
            return True

    def _measuring_again(self, fn: Callable[..., Any]) -> bool:
        state = self._states.get(function_key(fn))
        return state is not None and state.reprobe

    def _on_threads(self, decision: Decision, why: str) -> Decision:
        """``decision`` moved to threads, sized for them."""
        return decision._replace(
            backend="thread",
            workers=size_workers("thread", decision.features, self._max_workers),
            chunksize=size_chunks("thread", decision.features),
            reason=f"{decision.reason}; {why}",
        )

    def _observe(self, fn: Callable[..., Any], decision: Decision, batch: Batch, more_to_come: bool = True) -> None:
        """Re-probe a function whose calls stopped costing what was measured
        (``more_to_come``: see :meth:`_sprint_batch`)."""
        if decision.source == "forced" or not batch.ran or batch.elapsed_s is None or batch.cpu_unread:
            return  # (a batch whose CPU time went unread neither counts nor resets)
        if decision.source == "sprint":
            self._sprint_batch(fn, batch, more_to_come)
            return
        if batch.elapsed_s < DRIFT_MIN_S and decision.features.get("wall_s", 0.0) < DRIFT_MIN_S:
            return  # calls this short cannot differ by DRIFT_MIN_S: nothing to see
        calls = batch.ran * calls_per_invocation(fn)
        why = cost_changed(decision, calls, batch.elapsed_s, batch.cpu_s)
        state = self._states.get(function_key(fn))
        if state is None:
            return
        with self._lock:
            if state.decision is not decision or state.reprobe:
                return  # already re-decided, or being measured again
            if why is None:
                state.drift = 0
                return
            state.drift += 1
            if state.drift < 2:  # one odd batch is noise; two in a row is a change
                return
            # Keep the decision in force (decision_for still answers) while
            # the next calls are measured again; a map of threads sized for
            # waiting holds its other calls meanwhile (see _computing), as
            # calls that now compute would form a convoy on the GIL there.
            held = watch_for_computing(decision) and not state.watch_spent
            self._measure_again(state, held=held)
            provisional = state.provisional
        if held:
            self._holding(state, decision, provisional, why)
        else:
            logger.debug("adaptive_pool: %s: %s; probing again", state.name, why)

    def _computing(self, fn: Callable[..., Any], why: str) -> bool:
        """A map's batch still running on threads sized for waiting shows
        ``fn`` computing (``why``): have its maps hold their other calls
        rather than add them to a convoy on the GIL, and measure it again.

        Its next calls are probes, and its maps' other calls wait for their
        verdict (see MapPlan._dispatch_chunk); probes still running from
        before (the decision may be their early look's) are not judged.
        False, and nothing done, if the function is no longer on threads
        sized for waiting, is being measured already, or was held once
        before: a function whose calls vary, waiting on the whole, is not
        stopped again and again.
        """
        state = self._states.get(function_key(fn))
        if state is None:
            return False
        with self._lock:
            decision = state.decision
            if decision is None or not watch_for_computing(decision) or state.reprobe or state.watch_spent:
                return False
            self._measure_again(state, held=True)
            provisional = state.provisional
        self._holding(state, decision, provisional, why)
        return True

    def _holding(self, state: _FunctionState, decision: Decision, provisional: bool, why: str) -> None:
        """Maps now hold the function's calls (see _measure_again): say why,
        and bound how long."""
        logger.debug("adaptive_pool: %s: %s; its other calls held until it is measured again", state.name, why)
        self._limit_remeasure(state, decision, _COMPUTING_HOLD_MAX_S, provisional, patient=True)

    @staticmethod
    def _measure_again(state: _FunctionState, *, held: bool) -> None:
        """Have the function's next calls probed (called with the lock held)."""
        state.drift = 0
        state.reprobe = True
        state.held = held
        state.watch_spent = state.watch_spent or held
        state.round += 1
        state.probes_started = state.probes_done = 0
        state.samples = []

    @property
    def _threads(self) -> set[threading.Thread]:
        """Every worker thread this executor's routes started (the standard
        library's pools have a ``_threads`` set; CPython's tests join it)."""
        with self._lock:
            routes = list(self._routes.values())
        return {thread for route in routes for thread in route.threads()}

    def __repr__(self) -> str:
        return f"<AutoExecutor max_workers={self._max_workers} routes={sorted(self._routes)}>"


def _reject_coroutine_function(fn: Callable[..., Any]) -> None:
    if is_coroutine_function(fn):
        raise TypeError(
            f"{describe(fn)} is a coroutine function; executors run plain callables "
            "(await it in an event loop, or wrap it with asyncio.run)"
        )


def _weak_method(method: Callable[..., Any]) -> Callable[..., None]:
    """Call ``method`` if its object is still alive; do not keep it alive."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> None:
        target = ref()
        if target is not None:
            target(*args, **kwargs)

    return call


_EXECUTOR_SERIALS = itertools.count()

#: Static effects of a function whose byte code was not read.
_UNREAD_EFFECTS = StaticEffects(may_return_value=None, writes_shared_state=False)

#: A first decision for processes is checked on warm calls only for calls
#: shorter than this: one-time costs (imports, page faults) weigh little in
#: longer ones, and holding a map for a warm call would cost a whole call.
_WARM_CHECK_MAX_S = 0.05

#: At most this long a map holds its calls while a function caught computing
#: on threads sized for waiting is measured again (see _computing).
_COMPUTING_HOLD_MAX_S = 0.25
#: ... or this long in all while the probes compute (see _remeasure_overdue).
_HOLD_PATIENCE_S = 2.0
#: Running probes whose CPU time is at least this share of their wall time
#: compute (in a convoy of eight threads on the GIL, each gets ~12%); one
#: polling for a file or a flag every millisecond uses ~1.5%.
_COMPUTING_SHARE = 0.05


def _computing_probes(running: list[CallSample]) -> bool:
    """Whether probes still running compute rather than wait."""
    return any(sample.cpu_s >= _COMPUTING_SHARE * sample.wall_s for sample in running)

#: How long decision_for() waits for finished probes to be judged.
_JUDGING_WAIT_S = 1.0

#: Running probes that hold the GIL are left alone until they have run
#: this long (see _probe_deadline_hit).
_GIL_HELD_PATIENCE_S = 1.0

#: Batches up to this long go to threads while worker processes start: a
#: thread is done with them about when the workers are up (~50 ms here).
_THREADS_MEANWHILE_S = 0.025

#: When running probes are first looked at: long enough to see whether a
#: call computes or waits, short enough that waiting calls are not held up.
_EARLY_LOOK_S = 0.005
#: How long a map waits for its first call of an undecided function (on a
#: worker that has just started) before probing as usual: a tiny call is
#: over in tens of microseconds.
_SCOUT_WAIT_S = 0.0002


def _close_routes(
    routes: dict[str, Route], gate: _Gate | None = None, controls: Sequence[ControlThread] = ()
) -> None:
    """A dropped executor's last act: queued work still runs, then workers stop.

    Batches held back by ``max_workers`` would wait for a finished batch to
    let them go, which needs the executor: they are handed over now.
    """
    for control in controls:
        control.shutdown(wait=False)
    if gate is not None:
        while gate.backlog:
            route, batch = gate.backlog.popleft()
            try:
                route.submit(batch)
            except BaseException as exc:
                batch.settle(exc)
    for route in list(routes.values()):
        route.shutdown(wait=False)


_LIVE_EXECUTORS: weakref.WeakSet[AutoExecutor] = weakref.WeakSet()


def _at_exit() -> None:
    # Registered after the routes' hook, so it runs before it: pending work
    # is dispatched and finished before the routes stop, as the standard
    # library finishes queued work at interpreter exit.
    for executor in list(_LIVE_EXECUTORS):
        if not executor._routes_closed:
            executor.shutdown(wait=True)


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]

_hook_after_pools = False


def _exit_hook_after_process_pools() -> None:
    """Run our exit hook before the process pools' own.

    Exit hooks run last-registered first.  The process pool's module is
    imported lazily and registers its hook then, after ours: registering
    ours again puts it back in front, so pending work is still dispatched to
    the pools before they stop (the second run finds nothing to do).
    """
    global _hook_after_pools
    if not _hook_after_pools:
        _hook_after_pools = True
        threading._register_atexit(_at_exit)  # type: ignore[attr-defined]

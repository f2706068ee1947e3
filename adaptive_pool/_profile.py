"""Measuring calls: the one definition of the features.

Everything that turns a probed call into numbers lives here, and both the
runtime (:mod:`adaptive_pool._executor`) and the training collector
(:mod:`adaptive_pool.training.collect`) go through it, so that a model is
never trained on features computed differently from the ones it is later
asked about.

A feature set is a plain ``dict[str, float]``.  :data:`MODEL_FEATURES` are
the inputs a model may use; :data:`SAFETY_FEATURES` record facts that decide
whether the process route is allowed at all and are never left to a model.
"""

from __future__ import annotations

import _thread
import logging
import os
import pickle
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple

from ._batch import THREAD_CLOCKS, thread_cpu_clock
from ._bytecode import StaticEffects
from ._identity import calls_per_invocation, underlying_function

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "MODEL_FEATURES",
    "PROFILES",
    "SAFETY_FEATURES",
    "CallSample",
    "GilMonitor",
    "MeasuredCall",
    "ProbeTracker",
    "ProfileStore",
    "call_timings",
    "measure_call",
    "pickled_size",
    "summarize",
    "usable_cores",
]

logger = logging.getLogger("adaptive_pool")

#: Bump when a feature's meaning changes; model files record the version they
#: were trained with and are refused when it differs.
FEATURE_SCHEMA_VERSION = 2

#: Inputs a model may use, in this order.
MODEL_FEATURES: tuple[str, ...] = (
    "wall_s",  # median wall time of one call, less time spent waiting for the GIL
    "cpu_s",  # median CPU time of the calling thread during one call
    "cpu_ratio",  # cpu_s / wall_s: near 0 waits, near 1 computes
    "wait_ratio",  # share of wall_s spent waiting on something other than the GIL
    "gil_hold",  # share of the call's time another thread wanting the GIL could not get it
    "arg_bytes",  # pickled size of (args, kwargs); -1 when they do not pickle
    "result_bytes",  # pickled size of the result; -1 when it does not pickle
    "usable_cores",  # cores this process may run on (affinity and cgroup quota)
)

#: Facts that gate the process route.  1.0 means "true".
SAFETY_FEATURES: tuple[str, ...] = (
    "picklable",  # function, arguments and result all pickle (cloudpickle)
    "result_is_none",  # every probe returned None: work done by side effects
    "writes_shared_state",  # the code assigns globals or closure variables
    "complete",  # 1.0 when decided from finished probes, 0.0 from running ones
)

#: Calls shorter than this are too short for the GIL sampler's reading to
#: count as evidence (it sleeps 0.2 ms and ignores waits under 0.3 ms).
GIL_READABLE_S = 0.001


# --------------------------------------------------------------------------
# Cores


_cores_cache: int | None = None


def usable_cores() -> int:
    """Cores this process may really use: affinity mask and cgroup CPU quota.

    ``os.cpu_count()`` reports the machine; a container limited to two CPUs
    by its cgroup or a process pinned with ``taskset`` gets fewer.
    """
    global _cores_cache
    if _cores_cache is None:
        _cores_cache = _read_usable_cores()
    return _cores_cache


def _read_usable_cores() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota + 0.5)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 CFS quota), if any."""
    v2 = _read_small("/sys/fs/cgroup/cpu.max")
    if v2 is not None:
        try:
            quota_s, period_s = v2.split()[:2]
            return None if quota_s == "max" else int(quota_s) / int(period_s)
        except (ValueError, ZeroDivisionError):
            pass
    try:
        quota = int(_read_small("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or "")
        if quota <= 0:  # -1: no quota (a file read fewer: each costs 10-20 us here)
            return None
        period = int(_read_small("/sys/fs/cgroup/cpu/cpu.cfs_period_us") or "")
    except ValueError:
        return None
    return quota / period if period > 0 else None


def _read_small(path: str) -> str | None:
    """A small file's text, None if it cannot be read.  Read with ``os``
    calls: a text-mode ``open`` costs tens of microseconds more the first
    time, which every first executor of a script paid."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Pickled sizes


def pickled_size(obj: Any, _depth: int = 0) -> int | None:
    """Bytes ``obj`` costs to send to another process; ``None`` if it cannot.

    Common large payloads (bytes, str, arrays) are sized without copying
    them: pickling a 1 GB buffer just to learn its length would cost more
    than the decision is worth.  Everything else is pickled with protocol 5
    and out-of-band buffers counted, not copied.
    """
    if obj is None or isinstance(obj, (bool, int, float, complex)):
        return 16
    if isinstance(obj, (bytes, bytearray)):
        return len(obj) + 16
    if isinstance(obj, str):
        return len(obj) + 16
    if isinstance(obj, memoryview):
        return obj.nbytes + 16
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int) and type(obj).__module__.startswith("numpy") and getattr(obj, "dtype", None) is not None:
        if getattr(obj.dtype, "hasobject", False):
            return _pickle_size(obj)
        return nbytes + 128
    if _depth < 3 and isinstance(obj, (tuple, list)) and len(obj) <= 64:
        return _sum_sizes(obj, _depth)
    if _depth < 3 and type(obj) is dict and len(obj) <= 64:
        keys = _sum_sizes(list(obj.keys()), _depth)
        values = _sum_sizes(list(obj.values()), _depth)
        return None if keys is None or values is None else keys + values
    return _pickle_size(obj)


def _sum_sizes(items: Iterable[Any], depth: int) -> int | None:
    total = 16
    for item in items:
        size = pickled_size(item, depth + 1)
        if size is None:
            return None
        total += size
    return total


def _pickle_size(obj: Any) -> int | None:
    buffers: list[int] = []

    def count(buf: "pickle.PickleBuffer") -> bool:
        buffers.append(buf.raw().nbytes)
        return False  # keep the buffer out of band: counted, not copied

    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=count)
        return len(data) + sum(buffers)
    except Exception:
        pass
    # Standard pickle refuses lambdas and local classes; the process route
    # uses cloudpickle, which takes them by value.
    try:
        import cloudpickle

        return len(cloudpickle.dumps(obj, protocol=5))
    except Exception:
        return None


def function_picklable(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` can be sent to a worker process (with cloudpickle)."""
    try:
        pickle.dumps(fn, protocol=5)
        module = getattr(underlying_function(fn), "__module__", None)
        if module != "__main__":
            return True
    except Exception:
        pass
    # Functions of ``__main__`` pickle by reference but a worker has another
    # ``__main__``: the process route sends them by value with cloudpickle.
    try:
        import cloudpickle

        cloudpickle.dumps(fn, protocol=5)
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------
# GIL contention


class GilMonitor:
    """Measures how long a sleeping thread waits for the GIL while probes run.

    A thread that wakes from a short sleep must take the GIL before it can
    go on.  While another thread runs pure-Python code that takes up to the
    switch interval (5 ms); while the others wait on I/O or run C code that
    released the GIL, it takes microseconds.  The share of wall time the
    sampler spends waiting beyond its own sleep estimates how much of the
    time the GIL was held by someone else: GIL contention, measured rather
    than guessed from CPU time.

    The sampler thread runs only while at least one probe is active.
    """

    _SLEEP_S = 0.0002
    #: Waits shorter than this are the scheduler's wake-up latency, not the GIL.
    _LATENCY_S = 0.0003
    #: Less observed time than this says nothing.
    _MIN_OBSERVED_S = 0.0001
    #: Nor does watching less than this share of a window: a sampler
    #: starved of the GIL (or of a core) while pure-Python probes run took
    #: one sample in 20 ms, and read "no contention" from it.
    _MIN_OBSERVED_SHARE = 0.25

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        # Whether the sampler thread runs, and the event it sets once
        # sampling (made with the thread: none for an executor that never
        # probes).
        self._sampling = False
        self._started: threading.Event | None = None
        self._asleep_since: float | None = None
        # Stretches of the executor's own work, finished and running.
        self._own_done: deque[tuple[float, float]] = deque(maxlen=256)
        self._own_running: dict[int, float] = {}
        self._own_next = 0
        # (went to sleep, got the GIL back) of recent samples
        self._samples: deque[tuple[float, float]] = deque(maxlen=4096)

    def acquire(self, wait: bool = True) -> None:
        """Start sampling (reference counted); return once the sampler
        samples (``wait``), or at once while it starts.

        Waiting matters: a sampler thread still starting up when a
        pure-Python probe begins needs the GIL for each step of its start,
        and waits a switch interval (5 ms) for each; it took its first
        sample 20 ms in, after the probe was over.  The thread is a bare
        one (``_thread``): it runs none of the user's code, and a
        ``threading.Thread`` makes its starter wait for it to run, where
        this one can start while the starter starts a worker (a map's
        first call is about 0.1 ms sooner under way).
        """
        with self._lock:
            self._users += 1
            started = self._started
            if not self._sampling:
                self._sampling = True
                started = self._started = threading.Event()
                try:
                    _thread.start_new_thread(self._run, (started,))
                except BaseException:  # no thread to be had: the next call tries again
                    self._sampling = False
                    self._users -= 1
                    raise
        assert started is not None  # made with the thread, which runs
        if wait and not started.is_set():
            started.wait(0.05)

    def release(self) -> None:
        """Stop sampling once the last user is done."""
        with self._lock:
            self._users -= 1

    def _run(self, started: threading.Event) -> None:
        sleep = time.sleep
        clock = time.perf_counter
        samples = self._samples
        runqueue = _RunqueueClock()
        queued0 = runqueue.seconds()
        start = self._asleep_since = clock()
        started.set()
        try:
            while True:
                with self._lock:
                    if self._users <= 0:
                        self._sampling = False
                        self._asleep_since = None
                        return
                # Spans follow each other without gaps, and the open one is
                # always visible (_asleep_since): every wait for the GIL
                # (after the sleep, after reading the run queue, which
                # releases it too, or between two statements here) falls
                # inside one.  Waits between spans went unseen: a sampler
                # starved by two pure-Python probes recorded one span in
                # 20 ms, and read "no contention".
                sleep(self._SLEEP_S)
                queued = runqueue.seconds()
                end = self._asleep_since = clock()
                # Time spent runnable but without a core (all cores busy with
                # GIL-free work) is the scheduler's doing, not the GIL's.
                samples.append((start, end - (queued - queued0)))
                queued0, start = queued, end
        finally:
            runqueue.close()

    def own_work(self) -> _OwnWork | _NoWork:
        """Context manager around the executor's own work while probes run.

        Pickling results to size them, importing cloudpickle, reading byte
        code or loading a model hold the GIL too; without this mark a probe
        running beside that work would look GIL-bound whatever it does.
        With no sampler running there is nobody to tell (a map's first call,
        measured on its own thread, then costs a few microseconds less).
        """
        if not self._sampling:
            return _NO_WORK
        return _OwnWork(self)

    def _own_intervals(self, end: float) -> list[tuple[float, float]]:
        with self._lock:
            done = list(self._own_done)
            running = [(began, end + 1.0) for began in self._own_running.values()]
        return done + running

    def hold_between(self, start: float, end: float) -> float | None:
        """Share of ``[start, end]`` in which the sampler waited for the GIL.

        The sampler cycles through a short sleep and a wait for the GIL; the
        share of its cycle time inside the window spent waiting longer than
        the OS's wake-up latency is the contention.  Samples overlapping the
        executor's own work are left out.  ``None`` when the sampler watched
        too little of the window to say.
        """
        observed = 0.0
        contended = 0.0
        own = self._own_intervals(end)
        spans = list(self._samples)
        began_now = self._asleep_since
        if began_now is not None:
            # The sampler may be waiting for the GIL right now, held by the
            # very thread asking: that wait has no sample yet but counts.
            spans.append((began_now, max(time.perf_counter(), began_now)))
        for began, woke in spans:
            if woke < start or began > end:
                continue
            wanted = began + self._SLEEP_S  # from here on it wanted the GIL
            # While the executor did its own work the GIL was ours (measuring,
            # deciding), not the probed function's: that time is left out.
            observed += _overlap_apart(began, woke, start, end, own)
            if woke - wanted > self._LATENCY_S:
                contended += _overlap_apart(wanted, woke, start, end, own)
        if observed < max(self._MIN_OBSERVED_S, self._MIN_OBSERVED_SHARE * (end - start)):
            return None
        return min(1.0, contended / observed)


class _NoWork:
    """Own work nobody needs to know of (see GilMonitor.own_work)."""

    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass


_NO_WORK = _NoWork()


class _OwnWork:
    """Marks a stretch of the executor's own bookkeeping (see GilMonitor.own_work)."""

    __slots__ = ("_monitor", "_token")

    def __init__(self, monitor: GilMonitor) -> None:
        self._monitor = monitor
        self._token = 0

    def __enter__(self) -> None:
        monitor = self._monitor
        with monitor._lock:
            monitor._own_next += 1
            self._token = monitor._own_next
            monitor._own_running[self._token] = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        monitor = self._monitor
        with monitor._lock:
            began = monitor._own_running.pop(self._token)
            monitor._own_done.append((began, time.perf_counter()))


class _RunqueueClock:
    """Seconds a thread has waited for a CPU (Linux schedstat); the calling
    thread unless a native thread id is given."""

    def __init__(self, native_id: int | None = None) -> None:
        path = "/proc/thread-self/schedstat" if native_id is None else f"/proc/self/task/{native_id}/schedstat"
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None

    def seconds(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _overlap_apart(a0: float, a1: float, b0: float, b1: float, apart: list[tuple[float, float]]) -> float:
    """Overlap of [a0, a1] with [b0, b1], less what falls in the ``apart`` intervals."""
    lo, hi = max(a0, b0), min(a1, b1)
    if hi <= lo:
        return 0.0
    return max(0.0, (hi - lo) - sum(_overlap(lo, hi, x0, x1) for x0, x1 in apart))


# --------------------------------------------------------------------------
# One measured call


def _own_wall(wall: float, cpu: float, holds_gil: bool) -> float:
    """Wall seconds a call took of its own: its CPU time if it held the GIL
    throughout and the CPU clock saw it run (a clock that ticks every
    15 ms, as on Windows, may read none), else ``wall`` (at least ``cpu``)."""
    if holds_gil and cpu > 0:
        return cpu
    return max(wall, cpu)


class CallSample(NamedTuple):
    """Measurements of one call (a probe)."""

    wall_s: float
    cpu_s: float
    gil_hold: float | None
    arg_bytes: int | None
    result_bytes: int | None
    result_is_none: bool
    raised: bool
    complete: bool = True
    #: The call's window on the perf_counter clock and the CPU time its
    #: thread used in it: for telling probes that ran side by side in
    #: parallel from ones that took turns (see _gil_cpu_share).
    started: float = 0.0
    ended: float = 0.0
    window_cpu_s: float = 0.0


#: A call run and measured: ``(ok, value or exception, sample)``.
MeasuredCall = tuple[bool, Any, CallSample]


def measure_call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    monitor: GilMonitor,
    tracker: ProbeTracker | None = None,
    *,
    holds_gil: bool = False,
) -> MeasuredCall:
    """Run ``fn(*args, **kwargs)`` and measure it.

    Returns ``(ok, value_or_exception, sample)``.  The call runs in the
    current thread; pickled sizes are measured after it returns, so that
    the user's result is not delayed by more than that.  ``holds_gil``: the
    call runs nothing but byte code (see :func:`~adaptive_pool._bytecode.self_contained`),
    so its GIL share is its CPU share, and the GIL sampler is not started.
    """
    # A call that holds the GIL throughout cannot wait: whatever time it
    # spends off the CPU is others' doing, and its CPU clock alone measures
    # it.  Its thread's run-queue clock is not read (opening it cost a
    # fresh script's first map of tiny calls 60 us, as long as the calls).
    runqueue = None if holds_gil else _RunqueueClock()
    if runqueue is not None:
        monitor.acquire()
    queued0 = None if runqueue is None else runqueue.seconds()
    token = tracker.start(queued0, holds_gil=holds_gil) if tracker is not None else None
    # The CPU clock is read outside the wall clock's window: a read costs
    # about a microsecond (a system call), twenty times a tiny call, and
    # inside the window it made such calls look dear (the first chunks of
    # a map of them were sized forty times too small).
    cpu0 = time.thread_time()
    wall0 = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
        ok = True
    except BaseException as exc:  # the future gets it; we only measure
        value = exc
        ok = False
    finally:
        wall1 = time.perf_counter()
        cpu1 = time.thread_time()
        queued = 0.0
        if runqueue is not None:
            queued = runqueue.seconds() - (queued0 or 0.0)
            runqueue.close()
            monitor.release()
        if tracker is not None and token is not None:
            tracker.finish(token)
    # Time this thread was ready to run but had no core (other programs
    # loading the machine) says nothing about the function: leave it out.
    cpu = min(max(0.0, cpu1 - cpu0), wall1 - wall0)  # less the reads themselves
    wall = max(_own_wall(wall1 - wall0 - queued, cpu, holds_gil), 1e-9)
    with monitor.own_work():
        arg_bytes = pickled_size((args, dict(kwargs))) if args or kwargs else 32
        result_bytes = pickled_size(value) if ok else 0
    # A wrapper running n calls of the function (a joblib batch) is measured
    # per call, so that batch sizes do not change what is learnt.
    n = calls_per_invocation(fn)
    gil = cpu / wall if holds_gil else monitor.hold_between(wall0, wall1)
    if gil is not None:
        # A thread off the CPU holds no GIL: contention beyond the call's own
        # CPU share came from other threads.
        gil = min(gil, cpu / wall)
    sample = CallSample(
        wall_s=wall / n,
        cpu_s=cpu / n,
        gil_hold=gil,
        arg_bytes=None if arg_bytes is None else arg_bytes // n,
        result_bytes=None if result_bytes is None else result_bytes // n,
        result_is_none=ok and value is None,
        raised=not ok,
        started=wall0,
        ended=wall1,
        window_cpu_s=cpu,
    )
    return ok, value, sample


class ProbeTracker:
    """The probes of one function that are running right now.

    It lets the executor read how a long probe is behaving before it ends:
    wall time so far and, through the thread's CPU clock, CPU time so far.
    """

    def __init__(self, monitor: GilMonitor) -> None:
        self._monitor = monitor
        self._lock = threading.Lock()
        # token -> (thread ident, native id, wall at start, CPU at start,
        # runqueue at start: None for a call that holds the GIL throughout)
        self._running: dict[int, tuple[int, int, float, float, float | None]] = {}
        self._next = 0

    def start(self, queued: float | None = None, *, holds_gil: bool = False) -> int:
        """Register the calling thread as running a probe (``queued``: its
        run-queue clock now if already read, see :class:`_RunqueueClock`;
        ``holds_gil``: a call that holds the GIL throughout, see
        :func:`measure_call`, whose run-queue clock is not read)."""
        if holds_gil:
            queued = None
        elif queued is None:
            runqueue = _RunqueueClock()
            queued = runqueue.seconds()
            runqueue.close()
        ident = threading.get_ident()
        native = threading.get_native_id()
        with self._lock:
            self._next += 1
            token = self._next
            self._running[token] = (ident, native, time.perf_counter(), time.thread_time(), queued)
        return token

    def finish(self, token: int) -> None:
        """Forget a probe that has returned."""
        with self._lock:
            self._running.pop(token, None)

    def _first_start(self) -> float | None:
        with self._lock:
            starts = [wall0 for _, _, wall0, _, _ in self._running.values()]
        return min(starts) if starts else None

    def running_for(self) -> float | None:
        """Seconds since the first running probe began (None: none runs)."""
        start = self._first_start()
        return None if start is None else time.perf_counter() - start

    def gil_busy(self) -> float | None:
        """Share of the time since the first running probe began in which
        the GIL was held by any thread (None: nothing running, or too little
        seen).  Unlike a sample's ``gil_hold``, not capped by the probe's own
        CPU share: a probe kept off a busy GIL by other threads reads as
        idle, and this says the GIL was busy meanwhile."""
        start = self._first_start()
        return None if start is None else self._monitor.hold_between(start, time.perf_counter())

    def snapshot(self) -> list[CallSample]:
        """Partial samples of the probes still running (may be empty).

        Read from the CPU clocks of the threads running them: a decision
        can be taken while probes still run (long tasks must not wait for
        their probes to finish)."""
        if not THREAD_CLOCKS:
            return []
        now = time.perf_counter()
        out = []
        with self._lock:
            running = list(self._running.values())
        for ident, native, wall0, cpu0, queued0 in running:
            cpu_now = thread_cpu_clock(ident)
            if cpu_now is None:
                continue
            queued = 0.0
            if queued0 is not None:
                runqueue = _RunqueueClock(native)
                queued = max(0.0, runqueue.seconds() - queued0)
                runqueue.close()
            cpu = max(0.0, cpu_now - cpu0)
            wall = max(_own_wall(now - wall0 - queued, cpu, queued0 is None), 1e-9)
            # (One that holds the GIL throughout holds it as long as it runs.)
            gil = cpu / wall if queued0 is None else self._monitor.hold_between(wall0, now)
            out.append(
                CallSample(
                    wall_s=wall,
                    cpu_s=cpu,
                    gil_hold=None if gil is None else min(gil, cpu / wall),
                    arg_bytes=None,
                    result_bytes=None,
                    result_is_none=False,
                    raised=False,
                    complete=False,
                )
            )
        return out


# --------------------------------------------------------------------------
# From samples to features


def summarize(
    samples: list[CallSample],
    *,
    fn_picklable: bool,
    effects: StaticEffects,
    arg_bytes_hint: int | None = None,
) -> dict[str, float]:
    """Turn probe samples into one feature dict (medians, robust to one outlier).

    ``samples`` may mix finished and running probes; running ones carry no
    result facts, so ``complete`` is 0.0 unless every sample finished.
    """
    if not samples:
        raise ValueError("summarize() needs at least one sample")
    finished = [s for s in samples if s.complete]
    timings = call_timings(samples)
    wall = timings["wall_s"]
    gils = [s.gil_hold for s in samples if s.gil_hold is not None]
    arg_sizes = [s.arg_bytes for s in finished] or [arg_bytes_hint]
    result_sizes = [s.result_bytes for s in finished if not s.raised]
    args_pickle = all(size is not None for size in arg_sizes)
    results_pickle = all(size is not None for size in result_sizes)
    ok_results = [s for s in finished if not s.raised]
    if ok_results:
        result_is_none = all(s.result_is_none for s in ok_results)
    else:
        # No result seen yet: fall back on what the byte code says.
        result_is_none = effects.may_return_value is False
    return {
        **timings,
        "gil_hold": _median(gils) if gils else 0.5,  # unknown: neither side
        # Whether gil_hold is a reading, not a stand-in: the sampler needs
        # a call to last a few of its cycles before its share means much.
        "gil_measured": 1.0 if gils and wall >= GIL_READABLE_S else 0.0,
        "gil_cpu_share": _gil_cpu_share(samples),
        "arg_bytes": float(_median_size(arg_sizes)),
        "result_bytes": float(_median_size(result_sizes)) if result_sizes else 0.0,
        "usable_cores": float(usable_cores()),
        "picklable": float(fn_picklable and args_pickle and results_pickle),
        "result_is_none": float(result_is_none),
        "writes_shared_state": float(effects.writes_shared_state),
        "complete": float(len(finished) == len(samples)),
    }


def call_timings(samples: list[CallSample]) -> dict[str, float]:
    """What one call costs, from probe samples (at least one): the timing
    features of :func:`summarize` (``wall_s``, ``cpu_s``, ``cpu_ratio``,
    ``wait_ratio``)."""
    # Probes run side by side, so a GIL-bound probe also waits for the GIL
    # while the other one computes; that wait is not part of the call's own
    # cost.  The sampler's contention ratio estimates which share of the
    # off-CPU time it was.
    finished = [s for s in samples if s.complete]
    if len(finished) >= 2 and len(finished) == len(samples):
        # Probes are a function's first calls, and one-time costs (imports,
        # connections, cold caches) fall on some of them, or make one wait
        # for another on the import lock.  The least wall and the least CPU
        # time seen are the better guide to the calls to come (as ``timeit``
        # takes the fastest run).
        wall = min(_solo_wall(s) for s in finished)
        cpu = min(min(s.cpu_s for s in finished), wall)
    else:
        wall = _median(_solo_wall(s) for s in samples)
        cpu = min(_median(s.cpu_s for s in samples), wall)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ratio": cpu / wall if wall > 0 else 0.0,
        "wait_ratio": 1.0 - cpu / wall if wall > 0 else 1.0,
    }


def _gil_cpu_share(samples: list[CallSample]) -> float:
    """Median share of a call's CPU time spent holding the GIL (0.5: unknown).

    Unlike ``gil_hold`` (a share of wall time), this does not shrink when two
    probes of a GIL-bound function run side by side and each spends half its
    time waiting for the other: it is what says how far threads can spread
    the function's computing over the cores.

    The sampler sees the GIL held by anyone.  Probes that ran side by side
    and together used clearly more CPU time than their window lasted (half
    as much again) cannot all have held the GIL all along: their reading is
    scaled by window / CPU used (two numpy probes each holding the GIL a
    quarter of the time read as one half each, and computed in parallel: a
    quarter each).
    """
    shares = []
    for sample in samples:
        if sample.gil_hold is None or sample.cpu_s <= 1e-6:
            continue
        share = min(sample.gil_hold * sample.wall_s, sample.cpu_s) / sample.cpu_s
        window = sample.ended - sample.started
        if window > 0:
            used = sample.window_cpu_s + sum(
                other.window_cpu_s
                * _overlap(sample.started, sample.ended, other.started, other.ended)
                / (other.ended - other.started)
                for other in samples
                if other is not sample and other.ended > other.started
            )
            # Thread CPU clocks also count time spent taking the GIL, and
            # probes that start apart (the second waits a switch interval
            # behind a pure-Python first) overlap unevenly: only clearly
            # parallel use counts.
            if used > 1.5 * window:
                share *= window / used
        shares.append(share)
    return _median(shares) if shares else 0.5


def _median(values: Iterable[float]) -> float:
    # statistics.median, without importing statistics (fractions, decimal, random).
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _solo_wall(sample: CallSample) -> float:
    off_cpu = max(0.0, sample.wall_s - sample.cpu_s)
    gil = sample.gil_hold if sample.gil_hold is not None else 0.0
    return max(sample.cpu_s + off_cpu * (1.0 - gil), 1e-9)


def _median_size(sizes: list[int | None]) -> int:
    known = [s for s in sizes if s is not None]
    if len(known) < len(sizes) or not known:
        return -1
    return int(_median(known))


# --------------------------------------------------------------------------
# The process-wide store of finished profiles


class ProfileStore:
    """Bounded, thread-safe LRU map from function key to features.

    Process-wide so that a new ``with AutoExecutor()`` block reuses what an
    earlier one measured; bounded so that programs creating tens of
    thousands of distinct functions (lambdas in a loop over modules, say) do
    not grow without limit.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, dict[str, float]] = OrderedDict()

    def get(self, key: Hashable) -> dict[str, float] | None:
        """Features stored for ``key``, refreshing its recency."""
        with self._lock:
            features = self._data.get(key)
            if features is not None:
                self._data.move_to_end(key)
            return features

    def put(self, key: Hashable, features: Mapping[str, float]) -> None:
        """Store ``features`` for ``key``, evicting the least recently used."""
        with self._lock:
            self._data[key] = dict(features)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        """Forget one function (it will be probed again)."""
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


#: The process-wide store used by every :class:`~adaptive_pool.AutoExecutor`.
PROFILES = ProfileStore()


def reset_profiles() -> None:
    """Forget every measured function, so that each is probed again."""
    PROFILES.clear()


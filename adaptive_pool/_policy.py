"""From features to a :class:`Decision`.

A *policy* picks the route (``inline``, ``thread`` or ``process``) among the
routes that are allowed; the trained model and the hand-written heuristic
are both policies.  What is allowed is not the policy's business: work whose
meaning would change in another process never reaches a policy with the
process route on offer.  Worker counts and chunk sizes come from the
features by the rules in :func:`size_workers` and :func:`size_chunks`, the
same for every policy, so that a model only has to learn the one thing that
is hard to write down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "BACKENDS",
    "Backend",
    "Choice",
    "Decision",
    "HeuristicPolicy",
    "Policy",
    "allowed_routes",
    "computing_now",
    "cost_changed",
    "decide",
    "forced_decision",
    "gil_cpu_share",
    "overturns_processes",
    "process_blockers",
    "process_futile",
    "process_gain",
    "process_pays_off",
    "rule_decision",
    "sprint_decision",
    "watch_for_computing",
]

Backend = Literal["inline", "thread", "process"]
Source = Literal["model", "heuristic", "forced", "sprint", "rule"]
BACKENDS: tuple[Backend, ...] = ("inline", "thread", "process")

#: Threads beyond this are rarely useful even for pure waiting, and each
#: costs a stack; ``max_workers`` raises or lowers it.
THREAD_CAP = 128
#: Threads at least for work that waits most of its time (what a careful
#: user picks for I/O: ``ThreadPoolExecutor(32)``).
WAITING_THREADS_MIN = 32
#: The share of a call spent waiting from which :data:`WAITING_THREADS_MIN`
#: applies.  Below it the sizing rule alone decides: file I/O on the page
#: cache reads as half waiting on a busy disk, and 32 threads each faulting
#: in their own megabyte buffers ran it 2.4x slower than the default 6.
MOSTLY_WAITING = 0.8
#: Target duration of one chunk sent to a process: long enough that the
#: round trip (~0.1-0.3 ms) is noise, short enough to balance the load.
PROCESS_CHUNK_S = 0.02
#: Target duration of one batch of tiny calls on a thread.
THREAD_CHUNK_S = 0.002
#: Target duration of one chunk on the inline lane.  Its results reach the
#: consumer stretch by stretch within a chunk, so a chunk's length delays
#: nothing; each chunk costs a hand-off, and the lane's window of chunks
#: must outlast the 5 ms for which it may keep the GIL from the thread that
#: refills it (chunks of 2 ms left the lane idle 2-6 ms at a time).
INLINE_CHUNK_S = 0.005
#: Calls shorter than this are too small for any pool to pay off one by one.
TINY_CALL_S = 100e-6
#: Bytes per second pickling and piping manage between processes, roughly.
TRANSFER_BYTES_PER_S = 400e6
#: Starting worker processes (an interpreter each, in parallel, beside the
#: work already running) and the first import of the user's module in them:
#: two workers answer their first call 30-50 ms after being asked on a
#: 2-core machine (they skip ``site`` and load this package lazily).
PROCESS_START_S = 0.05
#: Meanwhile threads go on with the calls (see ``AutoExecutor._for_batch``)
#: at about this share of their pace: the interpreters starting take cores.
THREAD_PACE_WHILE_STARTING = 0.5
#: Processes must promise more than this speed-up over threads on a call's
#: computing, or no policy may pick them.  Kept low: the GIL sampler reads
#: pure Python as low as 0.5-0.7 of its CPU time beside busy worker
#: processes, and a wrong veto here costs a core's worth of speed; the
#: remaining doubt is settled by the start-up margin of process_pays_off
#: and by the warm re-measurement of a first "process".
PROCESS_MIN_GAIN = 1.1
#: ... and, for a map whose length is known, finish its remaining calls
#: this many times sooner than threads, start-up included: probes measure
#: cold first calls and a noisy GIL, and a wrong "process" costs far more
#: than a wrong "thread".
PROCESS_MARGIN = 1.25


_NO_FEATURES: Mapping[str, float] = MappingProxyType({})


# NamedTuples rather than dataclasses: immutable, comparable and picklable
# all the same, without importing dataclasses (and inspect) at start-up.
class Decision(NamedTuple):
    """Where a function's calls run, and how.

    ``backend`` is ``"inline"``, ``"thread"`` or ``"process"``; ``workers``
    how many may run at once; ``chunksize`` how many calls travel together;
    ``features`` the measurements behind it; ``source`` who decided
    (``"model"``, ``"heuristic"`` or ``"forced"``); ``confidence`` in [0, 1].
    """

    backend: Backend
    workers: int
    chunksize: int
    features: Mapping[str, float] = _NO_FEATURES
    source: Source = "heuristic"
    confidence: float = 1.0
    reason: str = ""

    def __str__(self) -> str:
        return (
            f"{self.backend} x{self.workers} chunksize {self.chunksize} "
            f"[{self.source} {self.confidence:.0%}]: {self.reason}"
        )


class Choice(NamedTuple):
    """A policy's answer: a route, how sure it is, and why in a few words."""

    backend: Backend
    confidence: float
    reason: str


@runtime_checkable
class Policy(Protocol):
    """Picks a route for a function from its features."""

    #: ``"model"`` or ``"heuristic"``: recorded in every :class:`Decision`.
    source: Source

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        """Return one of ``allowed`` (never empty; ``"thread"`` always in it)."""
        ...


def transfer_seconds(features: Mapping[str, float]) -> float:
    """Rough time to send one call's arguments to a process and its result back
    (sizes of -1, "does not pickle", count as nothing: such work never goes there)."""
    moved = max(features.get("arg_bytes", 0.0), 0.0) + max(features.get("result_bytes", 0.0), 0.0)
    return moved / TRANSFER_BYTES_PER_S


def describe_work(f: Mapping[str, float]) -> str:
    """A few words on what the measurements show."""
    return (
        f"{_duration(f.get('wall_s', 0.0))}/call, cpu {f.get('cpu_ratio', 0.0):.0%} of wall, "
        f"GIL held {f.get('gil_hold', 0.0):.0%}"
    )


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


class HeuristicPolicy:
    """The best rule we can write by hand; the fallback and the model's yardstick.

    * Calls of under 100 microseconds: inline batches (no pool pays off one
      call at a time, and at that scale the clocks say little about waiting).
    * Mostly waiting (CPU under half the wall time): threads, which wait in
      parallel at almost no cost.
    * Computing without the GIL (C code that releases it): threads, which
      run on every core without pickling anything.
    * Computing with the GIL: processes, unless moving the arguments and
      result costs more than half the call.
    * One core: nothing runs in parallel, so only waiting work gains.
    """

    source: Source = "heuristic"

    def choose(self, features: Mapping[str, float], allowed: Sequence[Backend]) -> Choice:
        """Pick a route; see the class docstring for the rule."""
        wall = features.get("wall_s", 0.0)
        waiting = features.get("wait_ratio", 1.0 - features.get("cpu_ratio", 0.0))
        gil = features.get("gil_hold", 0.0)
        cores = features.get("usable_cores", 1.0)
        transfer_s = transfer_seconds(features)
        what = describe_work(features)

        def pick(backend: Backend, confidence: float, why: str) -> Choice:
            if backend not in allowed:
                backend = "thread"
            return Choice(backend, confidence, f"{why} ({what})")

        if wall < TINY_CALL_S:
            # First: at a few microseconds, CPU and wall clocks say little
            # about waiting, and no pool pays off one call at a time anyway.
            return pick("inline", 0.8, "too short for a pool to pay off")
        if waiting > 0.5:
            return pick("thread", 0.6 + 0.4 * (waiting - 0.5) * 2, "waits more than it computes")
        if cores < 2:
            return pick("inline", 0.7, "computes, and there is one core")
        if gil <= 0.5:
            # Unknown readings (0.5: a call too short to observe) lean to
            # threads too: nothing to pickle, and never worse than serial.
            return pick("thread", 0.5 + (0.5 - gil), "computes with the GIL released")
        if transfer_s > 0.5 * wall:
            return pick("thread", 0.6, "holds the GIL, but moving its data costs more than the call")
        if "process" not in allowed:
            return pick("thread", 0.5, "holds the GIL; processes not allowed")
        return pick("process", 0.5 + min(gil, 1.0) / 2, "holds the GIL")


def process_blockers(features: Mapping[str, float]) -> str | None:
    """Why the process route would change the program's meaning, or ``None``."""
    if features.get("facts_known", 1.0) < 0.5:
        return "its pickling and side effects were not read (processes could not pay off anyway)"
    if features.get("picklable", 1.0) < 0.5:
        return "function, arguments or result do not pickle"
    if features.get("result_is_none", 0.0) >= 0.5:
        return "returns None (works by side effects, which a process would lose)"
    if features.get("writes_shared_state", 0.0) >= 0.5:
        return "assigns globals or enclosing variables"
    return None


def process_gain(features: Mapping[str, float]) -> float:
    """How many times faster processes could run a call's computing than threads.

    On threads, the share of a call's CPU time that holds the GIL runs one
    call at a time and the rest runs on every core, so threads compute at
    ``min(cores, 1 / share)`` cores' worth; processes at ``cores``.  C code
    that releases the GIL (hashing, compression, numpy) gains nothing from
    processes once ``share`` is below ``1 / cores``.
    """
    cores = max(1.0, features.get("usable_cores", 1.0))
    return max(1.0, min(cores, gil_cpu_share(features) * cores))


def gil_cpu_share(features: Mapping[str, float]) -> float:
    """Share of a call's CPU time that holds the GIL (measured, else from ``gil_hold``)."""
    share = features.get("gil_cpu_share")
    if share is None:
        cpu = features.get("cpu_s", 0.0)
        if cpu <= 0.0:
            return 0.0
        share = min(max(features.get("gil_hold", 0.0), 0.0), 1.0) * features.get("wall_s", 0.0) / cpu
    return min(max(share, 0.0), 1.0)


def process_futile(features: Mapping[str, float]) -> str | None:
    """Why processes cannot pay off whatever a policy thinks, or ``None``.

    Cases no model should be trusted against: work that mostly waits (a
    process waits no faster than a thread), work whose arguments and result
    cost more to move than the call itself, and computing that threads
    already spread over every core because it mostly runs without the GIL.
    """
    futile = _futile_whatever_the_gil(features)
    if futile is None and _threads_spread(features):
        return "threads already compute on every core (the GIL is mostly released)"
    return futile


def _futile_whatever_the_gil(features: Mapping[str, float]) -> str | None:
    if features.get("wait_ratio", 0.0) > 0.8:
        return "mostly waits"
    if transfer_seconds(features) > features.get("wall_s", 0.0):
        return "moving its data costs more than the call"
    return None


def _threads_spread(features: Mapping[str, float]) -> bool:
    """Whether threads already spread the computing over every core."""
    # An unmeasured GIL (a call too short for the sampler) proves nothing.
    return features.get("gil_measured", 1.0) >= 0.5 and process_gain(features) < PROCESS_MIN_GAIN


def overturns_processes(features: Mapping[str, float], cold: Mapping[str, float]) -> bool:
    """Whether warm calls clearly do not belong in processes after all: they
    mostly wait, are tiny, are unsafe there, processes are futile for them,
    or they wait half their time and compute much less than the first
    calls (``cold``) did: that computing was a one-time cost.

    A policy's own change of mind on a warm re-measurement is not enough:
    measured beside starting worker processes, readings are noisy (two
    pure-Python calls taking turns on the GIL beside starting interpreters
    read as half waiting, for the same CPU time as their first calls).
    """
    if process_blockers(features) is not None or _futile_whatever_the_gil(features) is not None:
        return True
    if _threads_spread(features):
        # The GIL reading of two warm calls alone is a noisy one: it counts
        # only where the first calls held the GIL clearly more (numpy's first
        # call imports numpy.random holding it; later calls release it).
        return gil_cpu_share(features) < 0.5 * gil_cpu_share(cold)
    if features.get("wall_s", 0.0) < TINY_CALL_S:
        return True
    computes_less = features.get("cpu_s", 0.0) < 0.6 * cold.get("cpu_s", 0.0)
    return features.get("wait_ratio", 0.0) > 0.5 and computes_less


def size_workers(backend: Backend, features: Mapping[str, float], max_workers: int | None) -> int:
    """Workers for a route: cores x (1 + wait/compute), within ``max_workers``.

    The classic sizing rule (Goetz; .NET's thread pool hill-climbs to the same
    place): enough workers that the cores stay busy while others wait.  With
    the GIL held, threads share one core's worth of Python.
    """
    if backend == "inline":
        return 1
    cores = max(1, int(features.get("usable_cores", 1)))
    wall = max(features.get("wall_s", 0.0), 1e-9)
    cpu = min(max(features.get("cpu_s", 0.0), wall * 0.01), wall)
    busy = wall / cpu  # 1 + wait/compute
    if backend == "process":
        cap = 4 * cores
        # Rounded, not raised: a CPU-bound call measured at 90% CPU (probes
        # share the machine) must not buy a third interpreter for 2 cores.
        workers: float = max(cores, math.floor(cores * busy + 0.5))
    else:
        cap = THREAD_CAP
        gil = min(max(features.get("gil_hold", 0.0), 0.0), 1.0)
        effective_cores = 1 + (cores - 1) * (1 - gil)
        # At least the standard library's default: tasks that wait on each
        # other can, and probes miss short waits (disk writes, page faults)
        # that a few threads beyond the cores overlap.
        workers = max(effective_cores * busy, min(32, cores + 4))
        if features.get("wait_ratio", 0.0) >= MOSTLY_WAITING:
            # Work that mostly waits: its first calls (imports, connections,
            # cold caches) overstate the CPU time of the rest, and so
            # understate the threads it can use; an idle thread costs little.
            workers = max(workers, WAITING_THREADS_MIN)
    if max_workers is not None:
        cap = max_workers
    return max(1, min(cap, int(math.ceil(workers))))


def size_chunks(backend: Backend, features: Mapping[str, float], target_s: float | None = None) -> int:
    """Calls per chunk so that one chunk lasts about the target duration."""
    wall = max(features.get("wall_s", 0.0), 1e-8)
    if target_s is None:
        target_s = {"process": PROCESS_CHUNK_S, "inline": INLINE_CHUNK_S}.get(backend, THREAD_CHUNK_S)
    # Chunks that cross to a process or wake a pool thread stay bounded;
    # the inline lane's do not need to: its results reach the consumer
    # stretch by stretch within a chunk, and each chunk costs a hand-off.
    cap = 1_000_000 if backend == "inline" else 10_000
    return max(1, min(cap, int(target_s / wall)))


def process_pays_off(features: Mapping[str, float], calls: int, workers: int, pool_running: bool) -> bool:
    """Whether ``calls`` more calls gain from processes over staying in this one.

    A decision is per function; how much work is left is known only to
    ``map``.  Starting a pool for a handful of short calls costs more than
    it saves, so the remaining work must beat the start-up cost.  Both sides
    are bounded by the cores; threads also by the GIL-holding share of each
    call, which runs one call at a time.  While the pool starts, threads
    take calls at part of their pace; the pool gets the rest.
    """
    wall = features.get("wall_s", 0.0)
    cores = max(1.0, features.get("usable_cores", 1.0))
    cpu = min(max(features.get("cpu_s", wall), 0.0), wall)
    on_thread = max(cpu * gil_cpu_share(features), cpu / cores)
    on_process = max(wall / max(1, workers), cpu / cores) + transfer_seconds(features)
    here = calls * on_thread
    if pool_running:
        there = calls * on_process
    else:
        meanwhile = PROCESS_START_S * THREAD_PACE_WHILE_STARTING / max(on_thread, 1e-9)
        if meanwhile >= calls:
            return False  # threads would be done (at a slower pace) before the pool is up
        there = PROCESS_START_S + (calls - meanwhile) * on_process
    return there * PROCESS_MARGIN < here


#: A batch's cost per call must differ from the measured one by this factor,
#: and by at least the absolute amount below, to count as a change: costs
#: vary with the input, and sub-millisecond jitter is not worth re-probing.
DRIFT_FACTOR = 4.0
DRIFT_MIN_S = 0.001


def cost_changed(decision: Decision, calls: int, elapsed_s: float, cpu_s: float | None) -> str | None:
    """Why a finished batch shows the function no longer costs what was measured.

    Threads and inline batches report their CPU time, which shows a change
    from waiting to computing and in size; only a rise counts there: calls
    that got cheaper run no worse where they are (first calls are often
    the dearest: caches, page faults, imports).  Process batches report
    only their wall time, which also holds pool start-up and queueing, so
    only a fall counts there (the work got much cheaper: maybe too cheap for
    processes).  ``None`` when nothing changed.
    """
    features = decision.features
    if cpu_s is not None:
        observed, expected, what = cpu_s / calls, features.get("cpu_s", 0.0), "CPU"
        if observed <= expected:
            return None
    else:
        observed, expected, what = elapsed_s / calls, features.get("wall_s", 0.0), "wall"
        if observed >= expected:
            return None
    if _far_apart(observed, expected):
        return f"{what} time per call went from {_duration(expected)} to {_duration(observed)}"
    return None


def _far_apart(a: float, b: float) -> bool:
    """Whether two costs differ enough to count as a change (see DRIFT_FACTOR)."""
    low, high = sorted((a, b))
    return high - low >= DRIFT_MIN_S and high > DRIFT_FACTOR * low


def watch_for_computing(decision: Decision) -> bool:
    """Whether a map's batches sent by ``decision`` are watched while they
    run (see :func:`computing_now`): threads sized for work that mostly waits.

    Many threads are started for such work at once.  Should its calls turn
    to computing in Python, they form a convoy on the GIL in which none ends
    for a long time, and the finished batches that :func:`cost_changed`
    judges come only once every call has been sent to threads.
    """
    return decision.backend == "thread" and decision.features.get("wait_ratio", 0.0) >= MOSTLY_WAITING


def computing_now(decision: Decision, calls: int, cpu_used: float) -> str | None:
    """Why a batch of ``calls`` still running, which has used ``cpu_used``
    seconds of CPU lately, shows its function computing where the decision
    measured it waiting; None if it does not (yet).

    The test of :func:`cost_changed`, made on a batch that has not ended,
    against what the whole batch was expected to use.
    """
    expected = decision.features.get("cpu_s", 0.0) * calls
    if cpu_used > expected and _far_apart(cpu_used, expected):
        return f"a running batch of {calls} call(s) used {_duration(cpu_used)} of CPU ({_duration(expected)} expected)"
    return None


#: Calls at least this long go to a pool when there are cores to share:
#: handing one to a thread costs ~20 us (2% of it), while a misread GIL
#: would keep GIL-free work serial on the inline route.
INLINE_MAX_S = 0.001


def allowed_routes(features: Mapping[str, float], *, allow_process: bool = True) -> list[Backend]:
    """The routes a policy may pick for work with these features (threads always).

    Processes are withdrawn where they would change the program's meaning
    (:func:`process_blockers`) or cannot pay off (:func:`process_futile`);
    the inline route for calls of a millisecond or more on a machine with
    cores to share.
    """
    allowed: list[Backend] = ["thread"]
    if features.get("wall_s", 0.0) < INLINE_MAX_S or features.get("usable_cores", 1.0) < 2:
        allowed.insert(0, "inline")
    if allow_process and process_blockers(features) is None and process_futile(features) is None:
        allowed.append("process")
    return allowed


def rule_decision(
    features: Mapping[str, float], *, allow_process: bool, max_workers: int | None = None
) -> Decision | None:
    """The decision when the rules leave threads as the only route, else None.

    No policy is asked then (nor a model file read): there is nothing to
    choose.  Work that mostly waits on a multi-core machine is the usual case.
    """
    if allowed_routes(features, allow_process=allow_process) != ["thread"]:
        return None
    why = (process_futile(features) or process_blockers(features)) if allow_process else "require='sharedmem'"
    return Decision(
        backend="thread",
        workers=size_workers("thread", features, max_workers),
        chunksize=size_chunks("thread", features),
        features=dict(features),
        source="rule",
        confidence=1.0,
        reason=f"threads, the only route the rules leave ({describe_work(features)}; not process: {why})",
    )


def decide(
    features: Mapping[str, float],
    policy: Policy,
    *,
    allow_process: bool,
    max_workers: int | None = None,
) -> Decision:
    """Ask ``policy`` for a route among the allowed ones and size it."""
    blocker = process_blockers(features)
    allowed = allowed_routes(features, allow_process=allow_process)
    choice = policy.choose(features, allowed)
    backend = choice.backend if choice.backend in allowed else "thread"
    reason = choice.reason
    if blocker is not None and allow_process:
        reason += f"; not process: {blocker}"
    return Decision(
        backend=backend,
        workers=size_workers(backend, features, max_workers),
        chunksize=size_chunks(backend, features),
        features=dict(features),
        source=policy.source,
        confidence=max(0.0, min(1.0, choice.confidence)),
        reason=reason,
    )


#: A map's calls shorter than :data:`TINY_CALL_S` first run inline, without
#: asking the policy, until their batches have taken this long in all.
#: Deciding costs milliseconds (a model file to parse, the function's
#: pickle and byte code to read) and no route can gain more than the calls
#: take: a map of 20,000 microsecond calls is over before a decision would
#: be.  Like renting before buying, the sprint stops once it has cost what
#: deciding does; the policy then decides from what the batches measured.
SPRINT_BUDGET_S = 0.01
#: Target duration of one sprint chunk: half the budget, so that a map of
#: tiny calls goes in a few chunks (each costs a hand-off between threads,
#: a sizeable part of such a map) and the budget is still checked twice.
SPRINT_CHUNK_S = SPRINT_BUDGET_S / 2


def sprint_decision(features: Mapping[str, float]) -> Decision | None:
    """The provisional inline decision for tiny calls, or None if they are not."""
    wall = features.get("wall_s", 0.0)
    if wall >= TINY_CALL_S:
        return None
    return Decision(
        backend="inline",
        workers=1,
        chunksize=size_chunks("inline", features, SPRINT_CHUNK_S),
        features=dict(features),
        source="sprint",
        confidence=1.0,
        reason=f"calls of {_duration(wall)} run inline until they add up to {_duration(SPRINT_BUDGET_S)}",
    )


def forced_decision(backend: Backend, why: str, max_workers: int | None, cores: int) -> Decision:
    """A decision the user made (``prefer=`` or a pin); nothing is probed."""
    if backend == "inline":
        workers = 1
    elif backend == "process":
        workers = max_workers or cores
    else:
        workers = max_workers or min(32, cores + 4)
    return Decision(backend, workers, 1, {}, "forced", 1.0, why)

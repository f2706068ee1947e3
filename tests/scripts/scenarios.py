"""Fault scenarios for the reliability tests, each run in its own interpreter.

Usage: ``python scenarios.py NAME '{"arg": value}'``.  The scenario runs,
and the last line of stdout is a JSON object with what it observed, plus
``threads`` (threads still alive at the end, main excepted) and
``children`` (child processes of this interpreter still alive).  A crash, a
hang or a stray message cannot take the test run down: the test runs this
with a timeout and reads stderr separately.

Task functions live in this ``__main__`` module on purpose: the process
route must send them by value (cloudpickle), as it would a user's script.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import CancelledError, Future, wait
from typing import Any, Callable

from adaptive_pool import AutoExecutor, Choice, HeuristicPolicy, _workers, pin
from adaptive_pool._workloads import python_loop

PARENT = os.getpid()
# The test that runs this script owns the directory (and removes it); worker
# processes re-importing this module inherit the variable and share the log.
_LOG_DIR = os.environ.get("ADAPTIVE_POOL_SCENARIO_DIR")
LOG = os.path.join(_LOG_DIR, "runs.log") if _LOG_DIR else os.path.join(tempfile.gettempdir(), f"scenario-{PARENT}.log")
SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {}

# Observe (not change) how many calls each batch handed to the process pool carries.
BATCH_SIZES: list[int] = []
_pool_submit = _workers.WorkerPool.submit


def _observing_submit(self: Any, batch: Any) -> None:
    BATCH_SIZES.append(len(batch.calls))
    _pool_submit(self, batch)


_workers.WorkerPool.submit = _observing_submit  # type: ignore[method-assign]


def scenario(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    SCENARIOS[fn.__name__] = fn
    return fn


# ----------------------------------------------------------------------
# helpers


def record(i: Any) -> None:
    """Append one line per execution; O_APPEND writes of a line are atomic."""
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)


def runs() -> dict[str, int]:
    """How many times each recorded task ran."""
    counts: dict[str, int] = {}
    if os.path.exists(LOG):
        with open(LOG) as fh:
            for line in fh:
                counts[line.strip()] = counts.get(line.strip(), 0) + 1
    return counts


def outcome(future: Future[Any], timeout: float = 30) -> list[Any]:
    """``["ok", value]``, ``["cancelled"]`` or ``["error", type, message]``."""
    try:
        return ["ok", future.result(timeout)]
    except CancelledError:
        return ["cancelled"]
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        return ["error", type(exc).__name__, str(exc)]


def children() -> list[int]:
    """Live (non-zombie) child processes of this interpreter, from /proc."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            found.append(int(entry))
    return found


def is_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pool_pids(ex: AutoExecutor) -> list[int]:
    route = ex._routes.get("process")
    pool = getattr(route, "_pool", None)
    return pool.worker_pids() if pool is not None else []


def settle_down(deadline: float = 10.0) -> None:
    """Give finishing threads and processes a moment to go away."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        gc.collect()
        if not children() and threading.active_count() == 1:
            return
        time.sleep(0.02)


class AlwaysProcess:
    """A policy that sends everything measured to processes (probes still run on threads)."""

    source = "heuristic"

    def choose(self, features: Any, allowed: Any) -> Choice:
        return Choice("process", 1.0, "test policy: always process")


def in_worker() -> bool:
    return os.getpid() != PARENT


def die(how: str) -> None:
    """Kill the current process the way named."""
    if how == "exit":
        os._exit(7)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "oom":
        # The OOM killer ends a process with SIGKILL; we send the same
        # signal rather than exhaust the test machine's memory.
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    elif how == "abort":
        os.abort()
    time.sleep(60)


def make_executor(route: str, **kwargs: Any) -> AutoExecutor:
    if route == "processes":
        return AutoExecutor(2, prefer="processes", **kwargs)
    if route == "auto":
        # The automatic path, probes and all, deciding with the hand-written
        # heuristic (which sends a few ms of pure Python to processes); the
        # bundled model is another module's subject.
        return AutoExecutor(2, policy=HeuristicPolicy(), **kwargs)
    if route == "auto_policy":
        # Undecided calls pile up while the probes run, then go out in
        # multi-call batches: the case where one crash could take others along.
        return AutoExecutor(2, policy=AlwaysProcess(), probe_deadline=30.0, **kwargs)
    raise ValueError(route)


# ----------------------------------------------------------------------
# crash scenarios


def crashing_task(i: int, crash_at: int, how: str, work: int) -> int:
    record(i)
    if work:
        python_loop(work)
    if i == crash_at and in_worker():
        die(how)
    return i * 10


@pin("threads")
def hold(release: threading.Event) -> bool:
    return release.wait(30)


@scenario
def crash_submit(route: str, how: str, n: int = 24, crash_at: int = 9) -> dict[str, Any]:
    """One task of many kills its worker; what do the others see?"""
    work = 100000 if route == "auto" else 2000  # a few ms: the heuristic says "process"
    ex = make_executor(route)
    decision = None
    if route == "auto":
        # Let the probes decide first (on threads), so the crash happens on a worker.
        warm = [ex.submit(crashing_task, -1 - k, crash_at, how, work) for k in range(4)]
        wait(warm)
        decision = ex.decision_for(crashing_task)
        if decision is None or decision.backend != "process":
            ex.shutdown()
            return {"skipped": f"heuristic chose {decision}"}
    release = threading.Event()
    if route == "auto_policy":
        # Hold both of max_workers=2 slots, so the probes cannot start before
        # every call is submitted: the calls pile up undecided, then go to
        # the workers in multi-call batches.
        blockers = [ex.submit(hold, release) for _ in range(2)]
        time.sleep(0.1)
    futures = [ex.submit(crashing_task, i, crash_at, how, work) for i in range(n)]
    release.set()
    outcomes = [outcome(f) for f in futures]
    if route == "auto_policy":
        assert all(b.result(30) for b in blockers)
    pids_before = pool_pids(ex)
    again = list(ex.map(abs, range(-5, 0)))
    again_process = outcome(ex.submit(crashing_task, 1000, crash_at, how, 0))
    ex.shutdown()
    settle_down()
    return {
        "decision": None if decision is None else decision.backend,
        "outcomes": outcomes,
        "runs": runs(),
        "again": again,
        "again_process": again_process,
        "pids_before": pids_before,
        "largest_batch": max(BATCH_SIZES, default=0),
    }


@scenario
def crash_map(route: str, how: str, n: int = 20, crash_at: int = 9, chunksize: int = 4) -> dict[str, Any]:
    """A crash inside a map chunk: map raises; other chunks run once; the next map works."""
    ex = make_executor(route)
    if route == "auto_policy":
        # Decide first, and start the process route: a map does not start
        # worker processes for a handful of short calls (it keeps them on threads).
        warm = [ex.submit(crashing_task, -1 - k, crash_at, how, 0) for k in range(6)]
        wait(warm)
        assert ex.decision_for(crashing_task).backend == "process"
        assert pool_pids(ex), "the process route did not start"
    seen: list[int] = []
    error = None
    try:
        for value in ex.map(crashing_task, range(n), [crash_at] * n, [how] * n, [0] * n, chunksize=chunksize):
            seen.append(value)
    except BaseException as exc:
        error = [type(exc).__name__, str(exc)]
    again = list(ex.map(crashing_task, range(100, 106), [-1] * 6, [how] * 6, [0] * 6, chunksize=2))
    ex.shutdown()
    settle_down()
    return {"seen": seen, "error": error, "runs": runs(), "again": again}


def idle_task(i: int) -> int:
    record(i)
    return os.getpid()


@scenario
def idle_worker_killed() -> dict[str, Any]:
    """A worker killed between tasks (the OOM killer picks idle processes too)."""
    ex = AutoExecutor(1, prefer="processes")
    first = ex.submit(idle_task, 0).result(30)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    later = [outcome(ex.submit(idle_task, i)) for i in range(1, 4)]
    ex.shutdown()
    settle_down()
    return {"first": first, "later": later, "runs": runs()}


def init_die() -> None:
    os._exit(3)


def init_raise() -> None:
    raise RuntimeError("initializer says no")


def refusal(ex: AutoExecutor) -> list[str] | None:
    """How a broken executor refuses one more submit: [type, message], or None if it took it."""
    try:
        ex.submit(idle_task, 99)
    except BaseException as exc:
        return [type(exc).__name__, str(exc)]
    return None


@scenario
def initializer_fails(how: str) -> dict[str, Any]:
    """An initializer that kills its worker or raises: the pool is broken, as in the stdlib."""
    ex = AutoExecutor(2, prefer="processes", initializer=init_die if how == "exit" else init_raise)
    futures = [ex.submit(idle_task, i) for i in range(4)]
    outcomes = [outcome(f) for f in futures]
    later = refusal(ex)
    ex.shutdown()
    settle_down()
    return {"outcomes": outcomes, "later": later, "runs": runs()}


def unpicklable_initargs_init(lock: Any) -> None:
    pass


@scenario
def initializer_unpicklable() -> dict[str, Any]:
    ex = AutoExecutor(2, prefer="processes", initializer=unpicklable_initargs_init, initargs=(threading.Lock(),))
    first = outcome(ex.submit(idle_task, 0))
    later = refusal(ex)
    ex.shutdown()
    settle_down()
    return {"first": first, "later": later, "runs": runs()}


@scenario
def crash_with_max_tasks_per_child(how: str) -> dict[str, Any]:
    """Workers recycled every 2 calls, one call crashing: counts stay exact."""
    ex = AutoExecutor(2, policy=AlwaysProcess(), probe_deadline=30.0, max_tasks_per_child=2)
    futures = [ex.submit(crashing_task, i, 7, how, 0) for i in range(16)]
    outcomes = [outcome(f) for f in futures]
    decision = ex.decision_for(crashing_task)
    ex.shutdown()
    settle_down()
    if decision is None or decision.backend != "process":
        # No policy gets processes where the safety rules withdraw them (a
        # loaded disk can make these tiny file-appending calls "mostly wait").
        return {"skipped": f"processes were not on offer: {decision}"}
    return {"outcomes": outcomes, "runs": runs()}


def pid_task(i: int) -> int:
    return os.getpid()


@scenario
def every_call_crashes(how: str) -> dict[str, Any]:
    """Each call kills its worker: each fails alone, nothing hangs."""
    ex = AutoExecutor(2, prefer="processes")
    futures = [ex.submit(crashing_task, i, i, how, 0) for i in range(4)]
    outcomes = [outcome(f) for f in futures]
    ok = outcome(ex.submit(pid_task, 0))
    ex.shutdown()
    settle_down()
    return {"outcomes": outcomes, "ok": ok, "runs": runs()}


def grandchild_task(i: int) -> int:
    """Fork a child that outlives this worker (it inherits every descriptor), then die."""
    pid = os.fork()
    if pid == 0:
        os.closerange(0, 3)  # keep the worker's pipes, not the test's stdout/stderr
        time.sleep(10)
        record("grandchild-exited")
        os._exit(0)
    record(pid)
    os._exit(5)


@scenario
def crash_leaving_grandchild() -> dict[str, Any]:
    """The dying worker leaves a process behind holding its pipes: the crash is still seen."""
    ex = AutoExecutor(1, prefer="processes")
    result = outcome(ex.submit(grandchild_task, 0))
    seen = runs()
    after = outcome(ex.submit(pid_task, 1))
    ex.shutdown()
    for key in seen:
        if key.isdigit():
            os.kill(int(key), signal.SIGKILL)
    settle_down()
    return {"result": result, "after": after, "grandchild_exited_before_result": "grandchild-exited" in seen}


# ----------------------------------------------------------------------
# shutdown and lifetime scenarios


def wait_for_file(path: str, i: int) -> int:
    """Blocks until ``path`` exists: a task that never returns on its own."""
    while not os.path.exists(path):
        time.sleep(0.01)
    record(i)
    return i


@scenario
def shutdown_nowait_stuck(route: str) -> dict[str, Any]:
    """shutdown(wait=False) with a task that does not return: it returns at once."""
    release = LOG + ".release"
    ex = make_executor(route) if route != "threads" else AutoExecutor(2, prefer="threads")
    stuck = ex.submit(wait_for_file, release, 0)
    time.sleep(0.3)  # let it start
    ex.shutdown(wait=False)
    still_running = not stuck.done()
    try:
        ex.submit(idle_task, 1)
        refused = None
    except RuntimeError as exc:
        refused = str(exc)
    with open(release, "w"):
        pass
    result = outcome(stuck)
    settle_down()
    return {"still_running_after_shutdown": still_running, "refused": refused, "result": result, "runs": runs()}


def slow(i: int, seconds: float) -> int:
    time.sleep(seconds)
    record(i)
    return i


@scenario
def shutdown_cancel(route: str) -> dict[str, Any]:
    """shutdown(cancel_futures=True): started work finishes, the rest is cancelled."""
    ex = AutoExecutor(1, prefer=route)
    futures = [ex.submit(slow, i, 0.2) for i in range(6)]
    time.sleep(0.1)
    ex.shutdown(wait=True, cancel_futures=True)
    states = [outcome(f, timeout=0) if f.done() else ["pending"] for f in futures]
    settle_down()
    return {"states": states, "runs": runs()}


@scenario
def shutdown_while_submitting(route: str) -> dict[str, Any]:
    """shutdown() from another thread while threads submit: every future ends."""
    ex = AutoExecutor(2, prefer=route) if route != "auto" else AutoExecutor(2)
    futures: list[Future[Any]] = []
    lock = threading.Lock()
    refused = []
    go = threading.Event()

    def submitter(k: int) -> None:
        go.wait()
        for i in range(100000):
            try:
                f = ex.submit(abs, -i)
            except RuntimeError:
                refused.append(k)
                return
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    go.set()
    time.sleep(0.05)
    ex.shutdown(wait=True)
    for t in threads:
        t.join(30)
    done, not_done = wait(futures, timeout=30)
    wrong = [outcome(f, 0) for f in done if not f.cancelled() and (f.exception() is not None)]
    settle_down()
    return {"submitted": len(futures), "not_done": len(not_done), "refused": sorted(refused), "errors": wrong[:5]}


@scenario
def dropped_executor(route: str) -> dict[str, Any]:
    """An executor dropped without shutdown(): its work finishes, its workers go."""
    import weakref

    ex = make_executor(route) if route != "threads" else AutoExecutor(2, prefer="threads")
    first = ex.submit(slow, 0, 0.01)
    first.result(30)
    futures = [first] + [ex.submit(slow, i, 0.1) for i in range(1, 5)]
    pids = pool_pids(ex)
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    outcomes = [outcome(f) for f in futures]
    settle_down()
    return {
        "outcomes": outcomes,
        "runs": runs(),
        "worker_pids": pids,
        "collected": ref() is None,
        "workers_alive": [pid for pid in pids if is_running(pid)],
    }


@scenario
def exit_with_pending(route: str) -> dict[str, Any]:
    """The script ends with work queued and no shutdown(): the work still runs."""
    ex = make_executor(route) if route != "threads" else AutoExecutor(1, prefer="threads")
    for i in range(6):
        ex.submit(slow, i, 0.05)
    # The test reads the log after this interpreter has exited.
    return {"skip_checks": True}


class RaisingPolicy:
    """A policy with a bug (or a model that cannot be evaluated)."""

    source = "heuristic"

    def choose(self, features: Any, allowed: Any) -> Choice:
        raise RuntimeError("policy bug")


def square(i: int) -> int:
    return i * i


@scenario
def policy_raises() -> dict[str, Any]:
    """The policy fails: every call must still complete (on a safe route) or fail, not hang."""
    ex = AutoExecutor(2, policy=RaisingPolicy())
    futures = [ex.submit(square, i) for i in range(10)]
    mapping = _map_future(ex, square, range(5))
    wait(futures + [mapping], timeout=10)
    outcomes = [outcome(f, timeout=0) for f in futures]
    mapped = outcome(mapping, timeout=0)
    if not all(f.done() for f in futures + [mapping]):
        # Hung: report, and leave without the exit-time wait that would hang too.
        print(json.dumps({"outcomes": outcomes, "mapped": mapped, "hung": True}), flush=True)
        os._exit(0)
    ex.shutdown()
    return {"outcomes": outcomes, "mapped": mapped, "hung": False}


def _map_future(ex: AutoExecutor, fn: Callable[..., Any], items: Any) -> Future[Any]:
    """Consume a map in a helper thread, so a hang shows as a timeout."""
    box: Future[Any] = Future()

    def consume() -> None:
        try:
            box.set_result(list(ex.map(fn, items)))
        except BaseException as exc:
            box.set_exception(exc)

    threading.Thread(target=consume, daemon=True).start()
    return box


@scenario
def callback_shutdown_from_callback(route: str) -> dict[str, Any]:
    """A done-callback that shuts the executor down (wait=False) must not deadlock."""
    ex = make_executor(route) if route != "threads" else AutoExecutor(2, prefer="threads")
    called = threading.Event()

    def cb(_: Future[Any]) -> None:
        ex.shutdown(wait=False)
        called.set()

    f = ex.submit(square, 3)
    f.add_done_callback(cb)
    got = outcome(f)
    finished = called.wait(10)
    settle_down()
    return {"result": got, "callback_finished": finished}


@scenario
def stderr_of_worker_crash() -> dict[str, Any]:
    """What a crash leaves on stderr (a logged warning is expected, nothing else)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    ex = AutoExecutor(1, prefer="processes")
    result = outcome(ex.submit(crashing_task, 0, 0, "segfault", 0))
    ex.shutdown()
    return {"result": result}


def main() -> None:
    name = sys.argv[1]
    kwargs = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = SCENARIOS[name](**kwargs)
    if not result.pop("skip_checks", False):
        result["threads"] = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        result["children"] = children()
    sys.stdout.flush()
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

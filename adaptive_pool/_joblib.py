"""A joblib backend that routes each function the way AutoExecutor does.

>>> import joblib
>>> from adaptive_pool import register_joblib_backend
>>> register_joblib_backend()
>>> with joblib.parallel_config(backend="adaptive"):
...     squares = joblib.Parallel(n_jobs=-1)(joblib.delayed(pow)(i, 2) for i in range(10))

joblib hands a backend *batches* (``BatchedCalls``: a list of
``(func, args, kwargs)``, sized by joblib's auto-batching).  Each batch is
submitted to an :class:`~adaptive_pool.AutoExecutor` wrapped in a small
picklable runner that names the batch's function
(:data:`~adaptive_pool._identity.WRAPPED_FUNCTION_ATTRIBUTE`), so that
probing, the profile store and the decision are per function, exactly as
for ``submit``: waiting or GIL-free work runs on threads, pure-Python CPU
work in processes, tiny work inline.

joblib's hints map onto the executor's:

* ``prefer="threads"`` / ``prefer="processes"``: that route for every
  batch (as joblib's own default does when asked); no probing.
* ``require="sharedmem"``: the process route is never used.
* ``n_jobs=-1``: all cores as far as joblib is concerned (it slices work
  and pre-dispatches by :meth:`AdaptiveBackend.effective_n_jobs`), and no
  cap for the executor, which sizes each route from the measurements.
  ``n_jobs=k`` (k > 1) or ``n_jobs=-2`` and below: at most that many
  batches run at once (``max_workers``).  ``n_jobs=1`` runs sequentially
  in the caller, as with every joblib backend.

Executors are shared between ``Parallel`` calls with the same settings
(worker processes are slow to start), like loky's reusable executor, and
shut down at interpreter exit.

One thing is joblib's own: a decision is taken from single calls, but
joblib's auto-batching later sends batches of many calls.  When a function
was found too small for any pool (the inline route), each batch is judged
again as the single call it is, by the same policy with the measurements
scaled to the batch: a large batch of tiny pure-Python calls then goes to
a worker process, as loky would send it, while the function's first small
batches stay inline.

This module imports joblib; :mod:`adaptive_pool` imports it only when
:func:`register_joblib_backend` is called.
"""

from __future__ import annotations

import functools
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from joblib import cpu_count, register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from ._executor import AutoExecutor, pin
from ._identity import CALLS_ATTRIBUTE, WRAPPED_FUNCTION_ATTRIBUTE, function_key
from ._policy import Policy, decide

__all__ = ["AdaptiveBackend", "register_joblib_backend"]

#: AutoExecutor options a backend accepts, e.g.
#: ``parallel_config(backend="adaptive", process_executor=client.get_executor())``.
EXECUTOR_OPTIONS = frozenset(
    {
        "initializer",
        "initargs",
        "mp_context",
        "max_tasks_per_child",
        "thread_name_prefix",
        "model",
        "policy",
        "process_executor",
        "probes",
        "probe_deadline",
    }
)

#: Executors kept for reuse by later ``Parallel`` calls; idle ones beyond
#: this are shut down.
_CACHE_SIZE = 8


def register_joblib_backend(name: str = "adaptive", *, make_default: bool = False) -> None:
    """Register :class:`AdaptiveBackend` with joblib under ``name``.

    Then ``with joblib.parallel_config(backend="adaptive"): Parallel(n_jobs=-1)(...)``
    routes each function by measurement.  AutoExecutor options (``policy``,
    ``model``, ``process_executor``, ``probes``, ...) can be given as backend
    parameters: ``parallel_config(backend="adaptive", process_executor=ex)``.
    ``make_default=True`` makes it joblib's default backend (note that joblib
    then swaps in its threading backend for ``prefer="threads"`` calls
    made outside any ``parallel_config``, as it does for loky).
    """
    register_parallel_backend(name, AdaptiveBackend, make_default=make_default)


# ----------------------------------------------------------------------
# The task an executor sees


def _work_function(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function a joblib task runs, behind callable-object wrappers.

    scikit-learn's ``delayed`` wraps every function in one class, which
    would make all of scikit-learn one "function"; such wrappers set
    ``__wrapped__`` (``functools.update_wrapper``), which leads to the real
    one.  Plain functions are kept as they are: their own identity is
    already unique, decorated or not.
    """
    plain = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial, type)
    for _ in range(8):
        if isinstance(func, plain):
            break
        inner = getattr(func, "__wrapped__", None)
        if inner is None or inner is func or not callable(inner):
            break
        func = inner
    return func


class _BatchRunner:
    """Runs one joblib batch; profiled and decided as the batch's function.

    Returns the list of results, or ``None`` when every call returned
    ``None``: such functions work by side effects, and the executor keeps
    functions returning ``None`` off the process route, where those effects
    would be lost.  :meth:`AdaptiveBackend.retrieve_result_callback` turns
    ``None`` back into a list.
    """

    def __init__(self, func: Callable[..., Any], calls: int = 1) -> None:
        setattr(self, WRAPPED_FUNCTION_ATTRIBUTE, func)
        setattr(self, CALLS_ATTRIBUTE, calls)

    def __call__(self, batch: Callable[[], list[Any]]) -> list[Any] | None:
        results = batch()
        if all(result is None for result in results):
            return None
        return results

    def __repr__(self) -> str:
        return f"<joblib batch of {getattr(self, WRAPPED_FUNCTION_ATTRIBUTE)!r}>"


def _batch_function(batch: Any) -> Callable[..., Any] | None:
    items = getattr(batch, "items", None)
    if not items:
        return None
    try:
        func = items[0][0]
    except (TypeError, IndexError, KeyError):
        return None
    return _work_function(func) if callable(func) else None


# ----------------------------------------------------------------------
# Shared executors


class _Shared:
    __slots__ = ("executor", "options", "policy", "users")

    def __init__(self, executor: AutoExecutor, options: dict[str, Any]) -> None:
        self.executor = executor
        self.users = 0
        self.options = options  # keeps the objects whose ids are in the key alive
        self.policy: Policy | None = options.get("policy")


_SHARED: OrderedDict[Hashable, _Shared] = OrderedDict()
_SHARED_LOCK = threading.Lock()


def _acquire(
    max_workers: int | None, prefer: str | None, require: str | None, options: dict[str, Any]
) -> tuple[Hashable, _Shared]:
    key = (max_workers, prefer, require, tuple(sorted((name, id(value)) for name, value in options.items())))
    retired: list[AutoExecutor] = []
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is not None and (shared.executor._shutdown or shared.executor._broken is not None):
            del _SHARED[key]
            retired.append(shared.executor)
            shared = None
        if shared is None:
            executor = AutoExecutor(max_workers, prefer=prefer, require=require, **options)
            shared = _SHARED[key] = _Shared(executor, dict(options))
            for old_key in list(_SHARED):
                if len(_SHARED) <= _CACHE_SIZE:
                    break
                if _SHARED[old_key].users == 0:
                    retired.append(_SHARED.pop(old_key).executor)
        _SHARED.move_to_end(key)
        shared.users += 1
    for old in retired:
        old.shutdown(wait=False)
    return key, shared


def _release(key: Hashable) -> None:
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is not None:
            shared.users = max(0, shared.users - 1)


def _shutdown_shared(wait: bool = True) -> None:
    """Shut down every shared executor (tests; interpreter exit does it too)."""
    with _SHARED_LOCK:
        executors = [shared.executor for shared in _SHARED.values()]
        _SHARED.clear()
    for executor in executors:
        executor.shutdown(wait=wait)


# ----------------------------------------------------------------------
# The backend


class AdaptiveBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib backend over a shared :class:`~adaptive_pool.AutoExecutor`.

    See the module documentation for how ``n_jobs``, ``prefer`` and
    ``require`` are honoured.  Keyword arguments other than joblib's are
    AutoExecutor options (:data:`EXECUTOR_OPTIONS`).
    """

    supports_retrieve_callback = True
    # require="sharedmem" is honoured by keeping work off processes, so
    # joblib need not swap in its threading backend.
    supports_sharedmem = True
    uses_threads = False
    supports_inner_max_num_threads = False
    default_n_jobs = 1

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None, **options: Any):
        unknown = sorted(set(options) - EXECUTOR_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown option(s) for the adaptive joblib backend: {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(EXECUTOR_OPTIONS))}"
            )
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._options = options
        self._key: Hashable | None = None
        self._shared: _Shared | None = None
        self._executor: AutoExecutor | None = None
        self._allow_process = True
        # (function key, batch size bucket) -> route for batches of that size
        self._batch_routes: dict[Hashable, str | None] = {}
        self._futures: set[Future[Any]] = set()
        self._futures_lock = threading.Lock()
        self.parallel: Any = None

    # -- sizing -----------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many batches joblib should keep going: ``n_jobs``, with -1 = all cores."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(int(cpu_count()) + 1 + n_jobs, 1)
        return n_jobs

    @staticmethod
    def _max_workers(n_jobs: int | None, effective: int) -> int | None:
        # -1 asks for everything: let the executor size each route (a
        # waiting function may use more threads than there are cores).
        # Anything else is a limit the user chose.
        return None if n_jobs == -1 else effective

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Pick (or create) the shared executor for these settings; return the job count.

        joblib's memmapping options (``max_nbytes``, ``mmap_mode``,
        ``temp_folder``) do not apply: arguments travel pickled.
        """
        effective = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        if effective == 1:
            return 1  # Parallel runs the calls itself, sequentially
        if self._key is not None:
            self._release()
        self._key, self._shared = _acquire(self._max_workers(n_jobs, effective), prefer, require, self._options)
        self._executor = self._shared.executor
        self._allow_process = require != "sharedmem"
        return effective

    # -- running ----------------------------------------------------------

    def submit(self, func: Any, callback: Callable[[Any], None] | None = None) -> Future[Any]:
        """Submit one joblib batch; ``callback`` runs with the future when it is done."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the adaptive joblib backend is not configured")
        size = len(func) if hasattr(func, "__len__") else 1
        work = _batch_function(func)
        if work is None:
            future = executor.submit(func)
        else:
            runner = _BatchRunner(work, size)
            if size > 1 and self._batch_route(executor, runner, work, size) == "process":
                pin("processes")(runner)
            future = executor.submit(runner, func)
        future.adaptive_pool_batch_size = size  # type: ignore[attr-defined]
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _batch_route(self, executor: AutoExecutor, runner: _BatchRunner, work: Callable[..., Any], size: int) -> str | None:
        """The route for a batch of ``size`` calls, if it is not the function's.

        Only a function decided "inline" (too short for a pool, call by
        call) is judged again: its batch is asked about as one call lasting
        ``size`` calls, with the same policy and the same safety rules.
        The profile is per call whatever the batch size: each runner says
        how many calls it makes (``__adaptive_pool_calls__``).
        """
        decision = executor.decision_for(runner)
        if decision is None or decision.backend != "inline" or decision.source == "forced":
            return None
        if not self._allow_process or not decision.features:
            return None
        key = (function_key(work), size.bit_length())  # powers of two share an answer
        if key in self._batch_routes:
            return self._batch_routes[key]
        scaled = dict(decision.features)
        for name in ("wall_s", "cpu_s", "arg_bytes", "result_bytes"):
            if scaled.get(name, 0.0) > 0:
                scaled[name] *= size
        route = decide(scaled, self._policy(), allow_process=True).backend
        self._batch_routes[key] = route
        return route

    def _policy(self) -> Policy:
        shared = self._shared
        if shared is None:
            raise RuntimeError("the adaptive joblib backend is not configured")
        if shared.policy is None:
            from ._model import load_policy

            shared.policy = load_policy(self._options.get("model"))
        return shared.policy

    def _forget(self, future: Future[Any]) -> None:
        with self._futures_lock:
            self._futures.discard(future)

    def retrieve_result_callback(self, out: Future[Any]) -> Any:
        """The batch's list of results (or its exception, raised)."""
        result = out.result()
        if result is None and hasattr(out, "adaptive_pool_batch_size"):
            return [None] * out.adaptive_pool_batch_size
        return result

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: cancel this backend's batches that have not started.

        Batches already running finish (threads cannot be stopped, and a
        shared process pool serves other callers); their results are dropped.
        """
        with self._futures_lock:
            futures, self._futures = list(self._futures), set()
        for future in futures:
            future.cancel()
        if not ensure_ready:
            self._release()

    def terminate(self) -> None:
        """End of a ``Parallel`` call: release the shared executor, keep it warm."""
        self._release()
        with self._futures_lock:
            self._futures = set()
        self.reset_batch_stats()

    def _release(self) -> None:
        key, self._key, self._executor, self._shared = self._key, None, None, None
        if key is not None:
            _release(key)

    @property
    def executor(self) -> AutoExecutor | None:
        """The executor this backend submits to while configured (introspection)."""
        return self._executor

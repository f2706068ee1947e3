"""The program a worker process runs.

Started as ``python <this file> READ_FD WRITE_FD`` by
:mod:`adaptive_pool._workers`.  It is run by path, not imported through the
package, and imports nothing but the standard library and cloudpickle: a
worker must never re-run the user's ``__main__`` module (so scripts need no
``if __name__ == "__main__"`` guard, as with threads), and it starts faster
for importing little.

Protocol, one pickled message per frame (``multiprocessing.connection``):

* parent -> child, first: ``(sys_path, cwd, initializer_payload)``;
  child answers ``("ready",)`` or ``("init_error", traceback_text)``.
* parent -> child: a cloudpickled ``(fn, [(args, kwargs), ...])``;
  child answers ``("done", [outcome, ...])`` with one outcome per call:
  ``(True, value)`` or ``(False, exception_or_None, type_name, message,
  traceback_text)``.  An empty frame asks the worker to exit.
"""

import os
import pickle
import sys
import traceback
from multiprocessing.connection import Connection


def _dumps(obj):
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=5)


def _error_outcome(exc, tb_text=None):
    """An outcome that carries ``exc`` if it survives a round trip, else its text."""
    if tb_text is None:
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        # Exceptions whose __init__ takes other arguments pickle but do not
        # unpickle; checking here keeps such an exception from failing the
        # whole chunk (or the pool) in the parent.
        pickle.loads(_dumps(exc))
        carried = exc
    except Exception:
        carried = None
    return (False, carried, type(exc).__qualname__, str(exc), tb_text)


def _run_calls(fn, calls):
    outcomes = []
    for args, kwargs in calls:
        try:
            outcomes.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # SystemExit too: it fails its own future
            outcomes.append(_error_outcome(exc))
    return outcomes


def _encode_outcomes(outcomes):
    try:
        return _dumps(("done", outcomes))
    except Exception:
        pass
    # One result does not pickle: send the others and say which one failed.
    safe = []
    for outcome in outcomes:
        try:
            _dumps(outcome)
            safe.append(outcome)
        except Exception as exc:
            kind = type(outcome[1]).__qualname__ if outcome[0] else outcome[2]
            err = pickle.PicklingError(
                f"the result ({kind}) could not be pickled to return it from the worker process: {exc}"
            )
            safe.append((False, err, "PicklingError", str(err), ""))
    return _dumps(("done", safe))


def run_payload(payload):
    """Run a cloudpickled ``(fn, calls)`` here; return the pickled outcomes.

    This is what a foreign executor (a Dask cluster, a standard library
    process pool) runs when it serves as the process route.
    """
    try:
        fn, calls = pickle.loads(payload)
    except BaseException as exc:
        return _dumps(("done", [_error_outcome(exc)]))
    return _encode_outcomes(_run_calls(fn, calls))


def main():
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    sys_path, cwd, init_payload = pickle.loads(inbox.recv_bytes())
    sys.path[:] = sys_path
    try:
        os.chdir(cwd)
    except OSError:
        pass
    if init_payload is not None:
        try:
            initializer, initargs = pickle.loads(init_payload)
            initializer(*initargs)
        except BaseException:
            text = traceback.format_exc()
            import logging

            logging.getLogger("concurrent.futures").critical("Exception in initializer:\n%s", text)
            outbox.send_bytes(pickle.dumps(("init_error", text)))
            return
    outbox.send_bytes(pickle.dumps(("ready",)))
    while True:
        try:
            data = inbox.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        if not data:
            return
        try:
            fn, calls = pickle.loads(data)
        except BaseException as exc:
            count = 1
            outbox.send_bytes(_dumps(("done", [_error_outcome(exc)] * count)))
            continue
        outbox.send_bytes(_encode_outcomes(_run_calls(fn, calls)))
        del fn, calls, data  # do not keep the last task's objects alive


if __name__ == "__main__":
    main()

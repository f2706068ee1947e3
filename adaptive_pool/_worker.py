"""The program a worker process runs.

Started as ``python <this file> READ_FD WRITE_FD`` by
:mod:`adaptive_pool._workers`.  It is run by path, not imported through the
package, and imports nothing but the standard library and cloudpickle: a
worker must never re-run the user's ``__main__`` module (so scripts need no
``if __name__ == "__main__"`` guard, as with threads), and it starts faster
for importing little.

Protocol, one pickled message per frame, framed as
``multiprocessing.connection`` frames them (the parent uses its
``Connection``; this side reads and writes the same frames itself, since
importing ``multiprocessing`` would cost every worker ~10 ms of start-up):

* parent -> child, first: ``(sys_path, cwd, initializer_payload)``;
  child answers ``("ready",)`` or ``("init_error", traceback_text)``.
* parent -> child: a cloudpickled ``(fn, [(args, kwargs), ...], stream)``.
  With ``stream`` true the child answers one ``("one", outcome)`` frame per
  call, sent as soon as that call returns, so that if a later call kills
  the process the parent still has every earlier result and knows which
  call was running.  Otherwise it answers one ``("all", [outcome, ...])``
  frame.  If the job cannot even be read, the answer is a single
  ``("fail", outcome)`` frame that applies to every call.
* An outcome is ``(True, value)`` or ``(False, exception_or_None,
  type_name, message, traceback_text)``.
* A frame ``b"CTX:" + pickle((sys_path, cwd))`` updates both before the
  next job (the parent changed them since the worker started).
* An empty frame asks the worker to exit.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
from typing import Any, Callable

Call = tuple[tuple[Any, ...], dict[str, Any]]
Outcome = tuple[Any, ...]


class _Pipe:
    """One direction of a pipe to the parent, in ``multiprocessing.connection`` frames.

    A frame is a 4-byte big-endian signed length and the payload; payloads
    of 2 GiB or more have length -1 followed by an 8-byte unsigned length.
    """

    def __init__(self, fd: int, mode: str) -> None:
        self._file = io.FileIO(fd, mode, closefd=False)

    def recv_bytes(self) -> bytes | bytearray:
        """The next frame's payload; EOFError once the parent closed its end."""
        (size,) = struct.unpack("!i", self._read_exactly(4))
        if size == -1:
            (size,) = struct.unpack("!Q", self._read_exactly(8))
        return self._read_exactly(size)

    def send_bytes(self, payload: bytes) -> None:
        """Write one frame (BrokenPipeError if the parent is gone)."""
        size = len(payload)
        header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        if size <= 16384:
            self._write_all(header + payload)
        else:
            self._write_all(header)
            self._write_all(payload)

    def _read_exactly(self, size: int) -> bytes | bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            got = self._file.readinto(view[done:])
            if not got:
                raise EOFError("the parent closed the pipe")
            done += got
        return buffer

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]


def _dumps(obj: Any) -> bytes:
    # Plain pickle first: importing cloudpickle costs a worker ~20 ms, and
    # results are nearly always plain data.  What pickle cannot send by
    # reference (a lambda, a class shipped by value from the parent's
    # __main__) goes by value with cloudpickle.
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        import cloudpickle

        data: bytes = cloudpickle.dumps(obj, protocol=5)
        return data


def _error_outcome(exc: BaseException, tb_text: str | None = None) -> Outcome:
    """An outcome that carries ``exc`` if it survives a round trip, else its text."""
    if tb_text is None:
        import traceback  # only when a task fails: it costs start-up time

        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        # Exceptions whose __init__ takes other arguments pickle but do not
        # unpickle; checking here keeps such an exception from failing the
        # whole chunk (or the pool) in the parent.
        pickle.loads(_dumps(exc))
        carried = exc
    except Exception:
        carried = None
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not take the worker down
        message = f"<{type(exc).__qualname__} with an unprintable message>"
    return (False, carried, type(exc).__qualname__, message, tb_text)


def _run_one(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
    try:
        return (True, fn(*args, **kwargs))
    except BaseException as exc:  # SystemExit too: it fails its own future
        return _error_outcome(exc)


def _run_calls(fn: Callable[..., Any], calls: list[Call]) -> list[Outcome]:
    return [_run_one(fn, args, kwargs) for args, kwargs in calls]


def _unpicklable_result(outcome: Outcome, exc: Exception) -> Outcome:
    kind = type(outcome[1]).__qualname__ if outcome[0] else outcome[2]
    what = "the result" if outcome[0] else "the exception"
    err = pickle.PicklingError(
        f"{what} ({kind}) could not be pickled to return it from the worker process: {exc}"
    )
    return (False, err, "PicklingError", str(err), outcome[4] if not outcome[0] else "")


def _encode_one(outcome: Outcome) -> bytes:
    try:
        return _dumps(("one", outcome))
    except Exception as exc:
        return _dumps(("one", _unpicklable_result(outcome, exc)))


def _encode_outcomes(outcomes: list[Outcome], kind: str = "done") -> bytes:
    try:
        return _dumps((kind, outcomes))
    except Exception:
        pass
    # One result does not pickle: send the others and say which one failed.
    safe = []
    for outcome in outcomes:
        try:
            _dumps(outcome)
            safe.append(outcome)
        except Exception as exc:
            safe.append(_unpicklable_result(outcome, exc))
    return _dumps((kind, safe))


def run_payload(payload: bytes) -> bytes:
    """Run a cloudpickled ``(fn, calls)`` here; return the pickled outcomes.

    This is what a foreign executor (a Dask cluster, a standard library
    process pool) runs when it serves as the process route.
    """
    try:
        fn, calls = pickle.loads(payload)
    except BaseException as exc:
        return _dumps(("done", [_error_outcome(exc)]))
    return _encode_outcomes(_run_calls(fn, calls))


def _serve(inbox: _Pipe, outbox: _Pipe) -> None:
    while True:
        try:
            data = inbox.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        if not data:
            return
        if data[:4] == b"CTX:":
            _set_context(*pickle.loads(data[4:]))
            continue
        try:
            fn, calls, stream = pickle.loads(data)
        except BaseException as exc:
            outbox.send_bytes(_dumps(("fail", _error_outcome(exc))))
            continue
        del data
        if stream:
            for args, kwargs in calls:
                outbox.send_bytes(_encode_one(_run_one(fn, args, kwargs)))
        else:
            outbox.send_bytes(_encode_outcomes(_run_calls(fn, calls), "all"))
        del fn, calls  # do not keep the last task's objects alive


def _set_context(sys_path: list[str], cwd: str) -> None:
    sys.path[:] = sys_path
    try:
        os.chdir(cwd)
    except OSError:
        pass


def main() -> None:
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    # Processes a task starts must not inherit the pipes: a grandchild
    # holding them open would hide this worker's death from the parent.
    os.set_inheritable(read_fd, False)
    os.set_inheritable(write_fd, False)
    inbox = _Pipe(read_fd, "rb")
    outbox = _Pipe(write_fd, "wb")
    try:
        sys_path, cwd, init_payload = pickle.loads(inbox.recv_bytes())
    except (EOFError, OSError, KeyboardInterrupt):
        return
    _set_context(sys_path, cwd)
    if init_payload is not None:
        try:
            initializer, initargs = pickle.loads(init_payload)
            initializer(*initargs)
        except BaseException:
            # The parent logs it (on "concurrent.futures", as the stdlib does).
            import traceback

            outbox.send_bytes(pickle.dumps(("init_error", traceback.format_exc())))
            return
    outbox.send_bytes(pickle.dumps(("ready",)))
    try:
        _serve(inbox, outbox)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the whole process group.  A task it
        # interrupts fails with KeyboardInterrupt; one that arrives between
        # tasks just ends this worker, quietly (the parent starts another).
        return
    except (BrokenPipeError, EOFError):
        return  # the parent is gone
    _exit_now()


def _exit_now() -> None:
    """Leave without tearing the interpreter down.

    The parent's ``shutdown(wait=True)`` waits for every worker to exit, and
    freeing every module and object one by one takes 5-20 ms per worker:
    time the user pays for nothing (multiprocessing's forked workers skip
    it the same way).  atexit handlers a task or initializer registered
    still run, and buffered output is still written.
    """
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
        os._exit(0)


if __name__ == "__main__":
    main()

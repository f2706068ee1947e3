"""Scripts as users write them: no ``if __name__ == "__main__"`` guard, threads first.

The process route starts its workers by running ``_worker.py`` by path: the
user's ``__main__`` is never re-imported (so the script's top level runs
once) and nothing forks a parent that already has threads (so Python 3.12+
has no reason to warn).  Each script runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_python

pytestmark = pytest.mark.timeout(120)

NO_GUARD = """
import os, sys
from adaptive_pool import AutoExecutor

# The top level appends a line each time it runs: once, if no worker re-runs it.
with open(sys.argv[1], "a") as log:
    log.write(f"{os.getpid()}\\n")

OFFSET = 100

def square_plus(x):
    return x * x + OFFSET

def make_adder(n):
    def add(x):
        return x + n
    return add

ex = AutoExecutor(max_workers=2, prefer="processes")
print(list(ex.map(square_plus, range(5))))
print(ex.submit(lambda x: x * 3, 7).result())
print(ex.submit(make_adder(5), 1).result())
pids = {ex.submit(os.getpid).result() for _ in range(4)}
print("other process" if os.getpid() not in pids else "same process")
ex.shutdown()
"""


def test_script_without_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(NO_GUARD))
    log = tmp_path / "toplevel.log"
    result = run_python([str(script), str(log)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[100, 101, 104, 109, 116]",
        "21",
        "6",
        "other process",
    ]
    assert len(log.read_text().splitlines()) == 1, "the script's top level ran again in a worker"


THREADS_FIRST = """
import threading, time, warnings
from adaptive_pool import AutoExecutor

stop = threading.Event()
background = [threading.Thread(target=stop.wait, daemon=True) for _ in range(3)]
for t in background:
    t.start()

def work(x):
    return sum(i * i for i in range(x))

with AutoExecutor(max_workers=2, prefer="processes") as ex:
    print(list(ex.map(work, [10, 100, 1000])))
    print(ex.submit(lambda: "lambda ok").result())
stop.set()
print("done")
"""

#: Interpreters on which forking a threaded parent warns (3.12+).
NEW_PYTHONS = [
    path
    for path in (
        "/root/.pyenv/versions/3.12.1/bin/python",
        "/root/.pyenv/versions/3.13.0/bin/python",
    )
    if os.path.exists(path)
]
if sys.version_info >= (3, 12) and sys.executable not in NEW_PYTHONS:
    NEW_PYTHONS.append(sys.executable)


def _dependency_path(python: str, tmp_path: Path) -> list[str]:
    """Our cloudpickle (pure Python) for an interpreter that lacks it."""
    if run_python(["-c", "import cloudpickle"], python=python).returncode == 0:
        return []
    import cloudpickle

    target = tmp_path / "deps"
    shutil.copytree(Path(cloudpickle.__file__).parent, target / "cloudpickle")
    return [str(target)]


def _version_id(python: str | None) -> str:
    return os.path.basename(os.path.dirname(os.path.dirname(python))) if python else "none"


# ``-W error`` turns the warning into an exception that os.fork() reports
# nowhere visible, so the warning is also shown (``always``) and looked for.
WARNING_FLAGS = ["error::DeprecationWarning", "always::DeprecationWarning"]


@pytest.mark.parametrize("flag", WARNING_FLAGS)
@pytest.mark.parametrize("python", NEW_PYTHONS or [None], ids=_version_id)
def test_process_pool_after_threads_does_not_warn(python: str | None, flag: str, tmp_path: Path) -> None:
    if python is None:
        pytest.skip("no Python 3.12+ interpreter found (the warning exists from 3.12)")
    script = tmp_path / "threads_first.py"
    script.write_text(textwrap.dedent(THREADS_FIRST))
    result = run_python(
        ["-W", flag, str(script)],
        python=python,
        cwd=tmp_path,
        extra_path=_dependency_path(python, tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[285, 328350, 332833500]", "lambda ok", "done"]
    assert "DeprecationWarning" not in result.stderr
    assert "fork()" not in result.stderr


STDLIB_FORK = """
import multiprocessing, threading
from concurrent.futures import ProcessPoolExecutor

stop = threading.Event()
for _ in range(3):
    threading.Thread(target=stop.wait, daemon=True).start()

def work(x):
    return x

if __name__ == "__main__":
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as ex:
        print(list(ex.map(work, [1, 2])))
    stop.set()
"""


@pytest.mark.parametrize("python", NEW_PYTHONS or [None], ids=_version_id)
def test_the_warning_check_catches_a_fork_after_threads(python: str | None, tmp_path: Path) -> None:
    # The control: the standard library's fork-based pool in the same
    # situation is caught by the check above.
    if python is None:
        pytest.skip("no Python 3.12+ interpreter found (the warning exists from 3.12)")
    script = tmp_path / "stdlib_fork.py"
    script.write_text(textwrap.dedent(STDLIB_FORK))
    result = run_python(["-W", "always::DeprecationWarning", str(script)], python=python, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning" in result.stderr and "fork()" in result.stderr


def test_repo_root_is_what_children_import() -> None:
    # run_python puts this checkout first on PYTHONPATH: the scripts above
    # test this code, not some other installed copy.
    result = run_python(["-c", "import adaptive_pool, os; print(os.path.dirname(os.path.dirname(adaptive_pool.__file__)))"])
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == REPO

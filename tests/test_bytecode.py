"""What a function's byte code tells before it runs: self-contained calls.

A self-contained call may run on whichever thread is at hand (a map's first
call runs on its caller: see test_decisions), so every way a call could
tell, wait or run code of the user's must make it not self-contained.
"""

from __future__ import annotations

import math
import operator
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from adaptive_pool._bytecode import self_contained

sqrt = math.sqrt

pytestmark = pytest.mark.timeout(30)

FACTOR = 3
LOCK = threading.Lock()


class Number:
    """An operand whose arithmetic is the user's code."""

    def __mul__(self, other: object) -> Number:
        return self


class Doubler:
    """A callable whose call is the user's code."""

    def __call__(self, x: int) -> int:
        return 2 * x


def arithmetic(x: Any) -> Any:
    return x * 2 + 1


def branches(x: Any, y: int = 3) -> Any:
    if x > y and x is not None:
        return (x % 7) * 2.5 + y
    return -x if x else f"{x:>4}" + "ab"[0:1]


def reads_a_number(x: int) -> int:
    return x * FACTOR


def reads_a_lock(x: int) -> Any:
    return LOCK


def calls_builtins(x: Any) -> Any:
    return math.sqrt(abs(x)) + sqrt(x) + int(str(x)) + max(x, 3, key=None) + math.pi


def builds_and_unpacks(item: tuple[int, str]) -> Any:
    number, text = item
    *head, last = text
    return {"n": number, "parts": [*head], "set": {last}}, operator.mul(number, 2)


def calls_a_function_of_its_own(x: int) -> int:
    return arithmetic(x) + arithmetic(x + 1)  # (looked at once)


def calls_one_that_takes_a_lock(x: int) -> Any:
    return takes_a_lock(x)


def counts_down(x: int) -> int:
    return counts_down(x - 1) if x > 0 else 0  # recursion: a loop by other means


def ping(x: int) -> int:
    return pong(x - 1) if x > 0 else 0


def pong(x: int) -> int:
    return ping(x - 1) if x > 0 else 0


def nested(depth: int) -> Callable[[int], int]:
    """A chain of ``depth`` functions, each calling the next."""
    namespace: dict[str, Any] = {}
    exec("def f0(x):\n    return x + 1\n", namespace)
    for level in range(1, depth):
        exec(f"def f{level}(x):\n    return f{level - 1}(x) * 2\n", namespace)
    return cast(Callable[[int], int], namespace[f"f{depth - 1}"])


def sleeps(x: float) -> None:
    time.sleep(x)


def sums_a_range(x: int) -> int:
    return sum(range(x))


def grows_with_its_values(x: int) -> int:
    return math.factorial(x)


def takes_a_lock(x: int) -> Any:
    return LOCK.acquire()


def reads_a_modules_dict(x: int) -> Any:
    return math.__dict__


def prints(x: int) -> None:
    print(x)


def calls_methods(x: Any) -> Any:
    return str(x).upper().split(",")[0].zfill(8) + f"{x}".strip() + str(int.from_bytes(b"a", "big"))


def reads_an_attribute(x: int) -> int:
    return x.real + x.bit_length()


def reads_its_class(x: int) -> Any:
    return x.__class__


def reaches_beyond_through_a_dunder(x: int) -> Any:
    return abs.__self__


def loops(x: int) -> int:
    while x > 0:
        x -= 1
    return x


def iterates(x: int) -> int:
    total = 0
    for i in (1, 2, 3):
        total += i
    return total


def generates(x: int) -> Any:
    yield x


def comprehends(x: Any) -> list[Any]:
    return [y for y in x]


def defaults_to_a_lock(x: int, lock: Any = LOCK) -> int:
    return x


def adds(value: int) -> Callable[[int], int]:
    def inner(x: int) -> int:
        return x + value

    return inner


add_one, add_a_lock = adds(1), adds(LOCK)  # type: ignore[arg-type]  # closures of one code


def calls_two_closures(x: int) -> Any:
    return add_one(x) + add_a_lock(x)


def keeps(value: Any) -> Callable[[Any], Any]:
    def inner(x: Any) -> Any:
        return value

    return inner


def with_an_empty_cell() -> Callable[[int], int]:
    def inner(x: int) -> int:
        return x + later

    return inner
    later = 1  # never reached: the cell stays empty


@pytest.mark.parametrize(
    "fn, args",
    [
        (arithmetic, (1,)),
        (arithmetic, (1.5,)),
        (arithmetic, ("a",)),
        (arithmetic, ((1, (2.0, "x")),)),
        (branches, (9,)),
        (branches, (0,)),
        (reads_a_number, (2,)),
        (adds(5), (1,)),
        (lambda x: x + 1, (1,)),
        (calls_builtins, (4,)),
        (calls_a_function_of_its_own, (4,)),
        (builds_and_unpacks, ((3, "abc"),)),
        (operator.add, (1, 2)),
        (nested(8), (1,)),
        (calls_methods, ("a,b",)),
        (reads_an_attribute, (5,)),
        (abs, (-1,)),
        (math.sqrt, (2.0,)),
        (int, ("12",)),
        (str.upper, ("a",)),
        ("-".join, (("a", "b"),)),
    ],
)
def test_calls_that_only_compute_on_plain_values_are_self_contained(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    assert self_contained(fn, args, {})


@pytest.mark.parametrize(
    "fn, args, why",
    [
        (arithmetic, (Number(),), "an operand of the user's class"),
        (arithmetic, ([1],), "a mutable operand"),
        (arithmetic, (tuple(range(100)),), "a tuple too long to look through"),
        (reads_a_lock, (1,), "a global that is not a plain value"),
        (keeps(LOCK), (1,), "a closure over a lock"),
        (defaults_to_a_lock, (1,), "a default that is not a plain value"),
        (calls_one_that_takes_a_lock, (1,), "a call of a Python function that takes a lock"),
        (counts_down, (3,), "recursion"),
        (calls_two_closures, (1,), "a closure over a lock, of the code of a plain one"),
        (ping, (3,), "recursion through another function"),
        (nested(9), (1,), "more Python functions than are looked through"),
        (sleeps, (0.001,), "a call of a module that is not all computing"),
        (sums_a_range, (5,), "a builtin that loops"),
        (grows_with_its_values, (5,), "a math function whose time grows with its arguments"),
        (takes_a_lock, (1,), "a method of a lock"),
        (reads_a_modules_dict, (1,), "an attribute of a math module that is no function"),
        (prints, (1,), "print"),
        (reads_its_class, (1,), "a dunder attribute"),
        (reaches_beyond_through_a_dunder, (1,), "a builtin's module, through __self__"),
        (loops, (3,), "a loop"),
        (iterates, (1,), "a for loop"),
        (generates, (1,), "a generator"),
        (comprehends, ((1,),), "a comprehension"),
        (abs, (Number(),), "a builtin given a value of the user's class"),
        (builds_and_unpacks, (Number(),), "unpacking a value of the user's class"),
        (operator.attrgetter("real"), (1,), "a callable object of the operator module"),
        (sorted, ((1, 2),), "a builtin that loops"),
        (math.factorial, (5,), "a builtin whose time grows with its arguments"),
        (str.__add__, ("a", "b"), "a dunder method"),
        (LOCK.acquire, (), "a method of a lock"),
        ({}.get, (1,), "a method of a mutable value"),
        (str.maketrans, ("a", "b"), "a static method (bound to no value)"),
        (list.append, ([], 1), "a method of a mutable type"),
        (Doubler(), (1,), "a callable object of the user's class"),
        (with_an_empty_cell(), (1,), "a closure cell not yet assigned"),
    ],
)
def test_anything_else_is_not(fn: Callable[..., Any], args: tuple[Any, ...], why: str) -> None:
    assert not self_contained(fn, args, {}), why


def test_keyword_arguments_are_looked_at_too() -> None:
    assert self_contained(branches, (1,), {"y": 2})
    assert not self_contained(branches, (1,), {"y": Number()})


def test_nothing_is_self_contained_under_a_tracer() -> None:
    # sys.settrace is per thread: a debugger stepping through this thread
    # would see a call it never saw on a worker.
    assert self_contained(arithmetic, (1,), {})
    previous = sys.gettrace()
    sys.settrace(lambda *_: None)
    try:
        assert not self_contained(arithmetic, (1,), {})
    finally:
        sys.settrace(previous)

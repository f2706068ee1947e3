"""Using an executor from asyncio code.

``await loop.run_in_executor(executor, fn, x)`` already works with an
:class:`~adaptive_pool.AutoExecutor` (the loop calls ``submit`` and wraps
the future), and each call is routed as ``submit`` routes it.  :func:`amap`
is the coroutine counterpart of ``Executor.map`` for a whole iterable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["amap"]

T = TypeVar("T")


async def amap(executor: Executor, fn: Callable[..., T], *iterables: Iterable[Any]) -> list[T]:
    """Run ``fn`` over the zipped ``iterables`` on ``executor``; await the results, in order.

    Every call is submitted at once (so an :class:`~adaptive_pool.AutoExecutor`
    probes, decides and batches them as it would for ``submit``) and the
    event loop keeps running meanwhile.  The first exception is raised; if
    the awaiting task is cancelled, or a call fails, the calls that have not
    started are cancelled.
    """
    import asyncio  # here, so that importing adaptive_pool does not load asyncio

    futures = [executor.submit(fn, *args) for args in zip(*iterables)]
    if not futures:
        return []
    wrapped = [asyncio.wrap_future(future) for future in futures]
    try:
        return list(await asyncio.gather(*wrapped))
    finally:
        for future in futures:
            future.cancel()  # no-op for calls that finished or are running

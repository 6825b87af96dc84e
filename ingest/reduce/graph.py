"""A task graph in Dask's dict format, run step by step in this process.

``graph[key] = (function, *args)``; an argument that is a key of the graph (or a list
holding keys) is replaced by that step's result. That is all ``dask.get`` needs too, so
the reduction's graph can move to Dask workers without being rewritten; until then this
runner keeps one process, frees results as soon as nothing needs them, and turns a
failing step into a :class:`Failed` value instead of stopping a whole night.

Steps run with a single-threaded BLAS: their linear algebra is small (polynomial and
profile fits), where a BLAS thread pool costs more CPU spinning between calls than it
saves (a quarter of a night's CPU time, measured). Parallelism belongs to the scheduler,
one step per core.

Frame-sized buffers stay in the process between steps: glibc would otherwise hand
every freed 30 MB array back to the kernel and fault the next one in page by page, and
zeroing those pages cost a fifth of a night's CPU time (system time, measured).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

Graph = dict[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Failed:
    """The result of a step that raised, handed on to every step that needed it."""

    key: str
    error: str


def _refs(arg: Any, graph: Graph) -> list[str]:
    if isinstance(arg, str) and arg in graph:
        return [arg]
    if isinstance(arg, list):
        return [k for a in arg for k in _refs(a, graph)]
    return []


def _resolve(arg: Any, graph: Graph, results: dict[str, Any]) -> Any:
    if isinstance(arg, str) and arg in graph:
        return results[arg]
    if isinstance(arg, list):
        return [_resolve(a, graph, results) for a in arg]
    return arg


def _first_failure(value: Any) -> Failed | None:
    if isinstance(value, Failed):
        return value
    if isinstance(value, list):
        return next((f for v in value if (f := _first_failure(v)) is not None), None)
    return None


def run_graph(
    graph: Graph,
    targets: Sequence[str],
    on_done: Callable[[str, Any], None] | None = None,
    *,
    retain: bool = True,
) -> dict[str, Any]:
    """Run the steps ``targets`` need, one at a time, in dependency order.

    A step that raises yields :class:`Failed`, and so does every step depending on it;
    the others carry on. Results nobody needs any more are dropped as soon as possible,
    so a night of full frames does not pile up in memory. With ``retain=False`` the
    targets' results too are only handed to ``on_done`` and then dropped, and nothing is
    returned: a caller that stores each product as it comes needs no night of them kept.
    """
    order: list[str] = []
    state: dict[str, int] = {}
    for target in targets:
        stack: list[tuple[str, bool]] = [(target, False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                state[key] = 2
                order.append(key)
                continue
            if state.get(key):
                if state[key] == 1:
                    raise ValueError(f"cycle in the task graph at {key!r}")
                continue
            state[key] = 1
            stack.append((key, True))
            for dep in reversed(_refs(list(graph[key][1:]), graph)):
                if not state.get(dep):
                    stack.append((dep, False))
    users = Counter(dep for key in order for dep in set(_refs(list(graph[key][1:]), graph)))
    keep = set(targets) if retain else set()
    results: dict[str, Any] = {}
    with threadpool_limits(limits=1, user_api="blas"), _keep_freed_memory():
        _run(graph, order, users, keep, results, on_done)
    return {key: results[key] for key in targets if key in keep}


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_FRAME_BYTES = 32 * 2**20  # glibc's largest heap allocation: one 1x1 float32 frame fits


@contextlib.contextmanager
def _keep_freed_memory() -> Iterator[None]:
    """Serve frame-sized arrays from the heap and keep freed ones for the next step.

    glibc's defaults map each large array anew and return it on free, so every step
    pays page faults for memory the previous step just released. Restored afterwards,
    and the heap trimmed; a no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, _FRAME_BYTES)
    mallopt(_M_TRIM_THRESHOLD, 2**30)
    mallopt(_M_TOP_PAD, 2 * _FRAME_BYTES)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)  # glibc's defaults
        mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        mallopt(_M_TOP_PAD, 0)
        malloc_trim(0)


def _run(
    graph: Graph,
    order: list[str],
    users: Counter[str],
    keep: set[str],
    results: dict[str, Any],
    on_done: Callable[[str, Any], None] | None,
) -> None:
    for key in order:
        func, *args = graph[key]
        resolved = [_resolve(a, graph, results) for a in args]
        failed = _first_failure(resolved)
        if failed is not None:
            results[key] = failed
        else:
            try:
                results[key] = func(*resolved)
            except Exception as exc:  # one bad frame must not stop a night
                results[key] = Failed(key, f"{type(exc).__name__}: {exc}")
        if on_done is not None:
            on_done(key, results[key])
        for dep in set(_refs(args, graph)):
            users[dep] -= 1
            if users[dep] == 0 and dep not in keep:
                del results[dep]
        if users[key] == 0 and key not in keep:
            del results[key]

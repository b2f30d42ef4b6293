"""A local pool of worker processes (``spawn``): the default backend of ``edgeproof scan``.

``shared`` is pickled once per worker process (the pool's initializer), not once per task. A
worker that dies (killed, out of memory, a crash in native code) breaks the pool: the pool is
rebuilt and every task that was in flight is started again, each at most ``max_retries`` more
times; a task still failing is reported with the reason and the rest go on.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from edgeproof.execute.base import Admit, Executor, TaskOutcome, call_task

__all__ = ["ProcessExecutor"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

_SHARED: Any = None


def _init_worker(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _task(fn: Callable[[Any, Any], Any], item: Any, index: int) -> TaskOutcome[Any]:
    return call_task(fn, _SHARED, item, index)


class ProcessExecutor(Executor):
    """``workers`` spawned processes on this machine (module docstring)."""

    kind = "processes"

    def run(
        self,
        fn: Callable[[S, T], R],
        items: Sequence[T],
        shared: S,
        *,
        admit: Admit | None = None,
    ) -> Iterator[TaskOutcome[R]]:
        todo = list(range(len(items)))[::-1]  # popped from the end: submission order
        attempts = dict.fromkeys(range(len(items)), 0)
        ctx = multiprocessing.get_context("spawn")
        while todo:
            pool = ProcessPoolExecutor(
                max_workers=min(self.workers, len(items)),
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(shared,),
            )
            try:
                todo = yield from self._drain(pool, fn, items, todo, attempts, admit)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _drain(
        self,
        pool: ProcessPoolExecutor,
        fn: Callable[[S, T], R],
        items: Sequence[T],
        todo: list[int],
        attempts: dict[int, int],
        admit: Admit | None,
    ) -> Generator[TaskOutcome[R], None, list[int]]:
        """Run ``todo`` on ``pool`` until done or the pool breaks; returns what must run again
        (the tasks in flight when it broke, within their retries)."""
        flight: dict[Future[TaskOutcome[R]], int] = {}
        broken: list[int] = []
        while todo or flight:
            while todo and len(flight) < self.max_in_flight:
                i = todo.pop()
                why = None if admit is None or attempts[i] else admit(i)
                if why is not None:
                    yield TaskOutcome(i, not_started=why)
                    continue
                attempts[i] += 1
                flight[pool.submit(_task, fn, items[i], i)] = i
            if not flight:
                break
            finished, _ = wait(flight, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = flight.pop(fut)
                try:
                    out = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                except Exception as exc:  # e.g. a result that could not be sent back
                    out = TaskOutcome(
                        i,
                        error=f"{type(exc).__name__}: {exc}",
                        traceback="".join(traceback.format_exception(exc)),
                    )
                yield _with_attempts(out, attempts[i])
            if broken:  # the pool is broken: whatever is still in flight fails the same way
                broken += flight.values()
                break
        again = []
        for i in sorted(set(broken)):
            if attempts[i] <= self.max_retries:
                again.append(i)
            else:
                yield TaskOutcome(
                    i,
                    error=f"its worker process died ({attempts[i]} attempts)",
                    attempts=attempts[i],
                )
        return todo + again[::-1]


def _with_attempts(out: TaskOutcome[R], attempts: int) -> TaskOutcome[R]:
    from dataclasses import replace

    return out if out.attempts == attempts else replace(out, attempts=attempts)

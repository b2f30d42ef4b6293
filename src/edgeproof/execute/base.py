"""The executor interface: run one function over many items, results in completion order.

An :class:`Executor` runs ``fn(shared, item)`` for each item and yields a :class:`TaskOutcome`
per item as it completes (not in submission order). ``shared`` is sent to the workers once —
the in-process backend passes it as it is, the process pool sends it to each worker process
when the process starts, Ray puts it in the object store once and every task reads it from
there. ``fn`` must be a module-level function (it travels to the workers by reference), and it
should turn its own failures into its result (a scan's ``crashed`` status); an exception it
raises becomes the outcome's ``error``, not retried. A task whose *worker* dies (the process
killed, the Ray node lost) is retried up to ``max_retries`` times, then reported as failed;
the other tasks go on.

``admit(index)`` is asked before each task is started; a reason returned instead of ``None``
leaves the task out (its outcome says ``not_started``) — the compression search's time budget.
At most ``max_in_flight`` tasks are submitted at a time (default: twice the workers), so that
the budget and ``admit`` see the progress of the earlier tasks.
"""

from __future__ import annotations

import os
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

__all__ = ["Admit", "Executor", "InProcessExecutor", "TaskOutcome", "Worker"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: ``admit(index)`` → ``None`` to start task ``index``, or the reason it is not started
Admit = Callable[[int], str | None]


@dataclass(frozen=True)
class TaskOutcome(Generic[R]):
    """How task ``index`` (the item's position) ended.

    Attributes:
        index: the item's position in the sequence given.
        value: ``fn``'s result (``None`` when the task failed or was not started).
        error: one line when ``fn`` raised or its worker died after every retry.
        traceback: the traceback of ``error`` (when there is one).
        not_started: why the task was not started (``admit``'s reason).
        attempts: how many times the task was started (1 unless a worker died under it; Ray
            retries on its own, so its outcomes say 1 for a task Ray retried).
        worker: where it ran: ``"pid 123"``, or ``"node 3f2a…, pid 123"`` on Ray.
    """

    index: int
    value: R | None = None
    error: str | None = None
    traceback: str | None = None
    not_started: str | None = None
    attempts: int = 1
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.not_started is None


class Executor(ABC):
    """Runs ``fn(shared, item)`` over items (module docstring)."""

    #: the backend's name: ``inprocess``, ``processes``, ``ray``
    kind: ClassVar[str]

    def __init__(self, workers: int = 1, *, max_retries: int = 2, max_in_flight: int | None = None):
        from edgeproof.errors import OptionError

        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OptionError("workers", f"{workers!r} is not a positive number", "use e.g. 2")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise OptionError("max_retries", f"{max_retries!r} is not a count >= 0", "use e.g. 2")
        if max_in_flight is not None and max_in_flight < 1:
            raise OptionError("max_in_flight", f"{max_in_flight!r} must be >= 1", "use e.g. 4")
        self.workers = workers
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight or 2 * workers

    @abstractmethod
    def run(
        self,
        fn: Callable[[S, T], R],
        items: Sequence[T],
        shared: S,
        *,
        admit: Admit | None = None,
    ) -> Iterator[TaskOutcome[R]]:
        """Yield one outcome per item, in completion order."""

    def describe(self) -> dict[str, Any]:
        """What ran the tasks, for a report: the backend and its workers."""
        return {"executor": self.kind, "workers": self.workers}

    def check_sendable(self, what: str, obj: Any) -> None:
        """Refuse, before any work, an ``obj`` this backend cannot send to its workers (it
        pickles it as the backend will); :class:`~edgeproof.errors.OptionError` naming
        ``executor``, ``what`` and the reason."""
        import pickle

        self._check_sendable(what, obj, pickle.dumps)

    def _check_sendable(self, what: str, obj: Any, dumps: Callable[[Any], bytes]) -> None:
        from edgeproof.errors import OptionError

        try:
            dumps(obj)
        except Exception as exc:  # whatever the pickler raises: its message says what failed
            raise OptionError(
                "executor",
                f"{what} cannot be sent to the {self.kind} workers "
                f"({type(exc).__name__}: {str(exc)[:300]})",
                "run it in this process (executor='inprocess')",
            ) from None

    def close(self) -> None:
        """Release the workers (idempotent)."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def call_task(fn: Callable[[S, T], R], shared: S, item: T, index: int) -> TaskOutcome[R]:
    """Run one task where it is and wrap its result or exception (no retry: ``fn``'s own
    exception is deterministic)."""
    try:
        value = fn(shared, item)
    except Exception as exc:
        return TaskOutcome(
            index,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            worker=Worker.here(),
        )
    return TaskOutcome(index, value=value, worker=Worker.here())


class Worker:
    """Names the process a task ran in."""

    @staticmethod
    def here() -> str:
        return f"pid {os.getpid()}"


class InProcessExecutor(Executor):
    """Every task in this process, one after another (no retries: nothing to lose)."""

    kind = "inprocess"

    def __init__(self, workers: int = 1, *, max_retries: int = 0, max_in_flight: int | None = None):
        super().__init__(1, max_retries=max_retries, max_in_flight=max_in_flight)

    def check_sendable(self, what: str, obj: Any) -> None:
        return None  # nothing is sent

    def run(
        self,
        fn: Callable[[S, T], R],
        items: Sequence[T],
        shared: S,
        *,
        admit: Admit | None = None,
    ) -> Iterator[TaskOutcome[R]]:
        for i, item in enumerate(items):
            why = None if admit is None else admit(i)
            if why is not None:
                yield TaskOutcome(i, not_started=why)
                continue
            yield call_task(fn, shared, item, i)

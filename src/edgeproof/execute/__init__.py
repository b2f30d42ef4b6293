"""Where many independent tasks run: in this process, in a local process pool, or on Ray.

One interface (:class:`Executor`: ``run(fn, items, shared)`` yields a :class:`TaskOutcome` per
item in completion order), three backends — :class:`InProcessExecutor`,
:class:`ProcessExecutor` (``spawn``), :class:`RayExecutor` (the optional ``ray`` extra) — chosen
by :func:`make_executor`. ``edgeproof scan`` runs one task per model, ``compress`` one per
candidate, ``audit`` one per data set. Results are the same on every backend: every task runs
on one torch thread from the same seeds, so only timings differ.

:class:`ResultCache` keeps finished results on disk, keyed by what determines them, so a
repeated run recomputes only what changed and an interrupted one resumes.
"""

from __future__ import annotations

from typing import Literal

from edgeproof.execute.base import Admit, Executor, InProcessExecutor, TaskOutcome
from edgeproof.execute.cache import CacheStats, ResultCache, file_digest
from edgeproof.execute.processes import ProcessExecutor

__all__ = [
    "EXECUTORS",
    "Admit",
    "CacheStats",
    "Executor",
    "ExecutorKind",
    "InProcessExecutor",
    "ProcessExecutor",
    "ResultCache",
    "TaskOutcome",
    "executor_for",
    "file_digest",
    "make_executor",
]

ExecutorKind = Literal["inprocess", "processes", "ray"]
#: the backends :func:`make_executor` knows
EXECUTORS: tuple[str, ...] = ("inprocess", "processes", "ray")


def make_executor(
    kind: str,
    workers: int = 1,
    *,
    ray_address: str | None = None,
    max_retries: int = 2,
    max_in_flight: int | None = None,
) -> Executor:
    """The backend ``kind`` with ``workers`` workers.

    ``ray_address`` (Ray only): ``None`` starts Ray here, ``"auto"`` or ``"HOST:PORT"`` joins a
    cluster (then the cluster's CPUs set the workers). ``processes`` with one worker runs in
    this process.
    """
    from edgeproof.errors import OptionError

    if kind not in EXECUTORS:
        raise OptionError(
            "executor", f"unknown executor {kind!r}", f"use one of {', '.join(EXECUTORS)}"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError("workers", f"{workers!r} is not a positive number", "use e.g. 2")
    if ray_address is not None and kind != "ray":
        raise OptionError(
            "ray_address",
            f"is only used with executor='ray' (executor is {kind!r})",
            "add executor='ray' or leave the address out",
        )
    if kind == "ray":
        from edgeproof.execute.ray_cluster import RayExecutor

        return RayExecutor(
            workers, address=ray_address, max_retries=max_retries, max_in_flight=max_in_flight
        )
    if kind == "processes" and workers > 1:
        return ProcessExecutor(workers, max_retries=max_retries, max_in_flight=max_in_flight)
    return InProcessExecutor(max_in_flight=max_in_flight)


def executor_for(
    executor: str | Executor,
    jobs: int,
    tasks: int,
    *,
    ray_address: str | None = None,
    max_in_flight: int | None = None,
) -> tuple[Executor, bool]:
    """The executor a library call runs ``tasks`` tasks on, and whether the call made it (and so
    closes it): ``executor`` itself when it is an :class:`Executor` (``jobs`` and
    ``ray_address`` are then its own), else the backend of that name with ``jobs`` workers — a
    local pool never more than the tasks; on a Ray cluster the cluster's CPUs.

    Raises:
        OptionError: ``jobs`` is not a positive integer, or the backend refuses its options.
    """
    from edgeproof.errors import OptionError

    if isinstance(executor, Executor):
        return executor, False
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise OptionError("jobs", f"{jobs!r} is not a positive number of workers", "use e.g. 2")
    workers = jobs if executor == "ray" and ray_address is not None else min(jobs, tasks)
    workers = max(1, workers)
    limit = None if max_in_flight is None else max(1, min(max_in_flight, workers))
    return make_executor(executor, workers, ray_address=ray_address, max_in_flight=limit), True

"""Ray: tasks on a cluster (``address``) or on a Ray instance started here (no address).

Idiomatic Ray: the task is a ``@ray.remote(num_cpus=…, max_retries=…)`` function; ``shared`` is
put in the object store once (``ray.put``) and every task receives the reference; at most
``max_in_flight`` tasks are submitted at a time and results are collected in completion order
with ``ray.wait``. A task whose worker or node dies is retried by Ray (``max_retries``; system
failures only — an exception of ``fn`` is its result); after the last retry its outcome carries
Ray's error and the other tasks go on.

``address``: ``None`` starts a Ray instance on this machine with ``workers`` CPUs (stopped by
:meth:`RayExecutor.close`); ``"auto"`` joins the cluster this machine belongs to (``ray start``
was run here, or ``RAY_ADDRESS`` is set); ``"HOST:PORT"`` joins that cluster's head (its GCS
port, 6379 by default). An address where nothing answers is refused within
:data:`CONNECT_TIMEOUT_S` with one line (exit code 2). Every node must have edgeproof installed
(the tasks import it there).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from edgeproof.errors import MissingExtraError, OptionError
from edgeproof.execute.base import Admit, Executor, TaskOutcome, call_task

__all__ = ["CONNECT_TIMEOUT_S", "RayExecutor"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: Ray's own command for a head node (Ray's flags, not edgeproof's), named in the advice
START_HEAD = "ray start --head --port=6379"

CONNECT_TIMEOUT_S = 10.0
"""How long a ``HOST:PORT`` address may take to answer before it is refused."""


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "ray":
            raise
        raise MissingExtraError("ray", "ray", "to run on Ray (executor='ray')") from None
    return ray


def _on_ray(fn: Callable[[Any, Any], Any], shared: Any, item: Any, index: int) -> Any:
    """The task body on a Ray worker: ``fn`` wrapped as every backend wraps it."""
    import ray

    out = call_task(fn, shared, item, index)
    node = ray.get_runtime_context().get_node_id()
    from dataclasses import replace

    return replace(out, worker=f"node {node[:12]}, pid {os.getpid()}")


def check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` address where nothing accepts a connection (one line)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise OptionError(
            "ray_address",
            f"{address!r} is not HOST:PORT or 'auto'",
            "give the head node's address, e.g. 10.0.0.5:6379, or 'auto' on a cluster node",
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise OptionError(
            "ray_address",
            f"no Ray cluster answers at {address} ({exc.strerror or exc})",
            f"start a head node there (`{START_HEAD}`), or give the address the head node printed",
        ) from None


class RayExecutor(Executor):
    """Tasks on Ray (module docstring)."""

    kind = "ray"

    def __init__(
        self,
        workers: int = 1,
        *,
        address: str | None = None,
        num_cpus_per_task: float = 1.0,
        max_retries: int = 2,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(workers, max_retries=max_retries, max_in_flight=max_in_flight)
        if not num_cpus_per_task > 0:
            raise OptionError("num_cpus_per_task", f"{num_cpus_per_task!r} must be > 0")
        self.address = address
        self.num_cpus_per_task = num_cpus_per_task
        self._ray = _ray()
        self._started = False
        self._connect()

    def _connect(self) -> None:
        ray = self._ray
        if self.address not in (None, "auto"):
            check_reachable(str(self.address))
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        try:
            if self.address is None:  # "local": a new instance, even where `ray start` ran
                ray.init(address="local", num_cpus=self.workers, **kwargs)
            else:
                ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise OptionError(
                "ray_address",
                f"could not join the Ray cluster at {self.address} "
                f"({str(exc).splitlines()[0][:200]})",
                f"start a head node (`{START_HEAD}`) or give its HOST:PORT; a cluster with "
                "token authentication (Ray's default for a head node) also needs "
                "RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN) here",
            ) from None
        self._started = True
        if self.address is not None:  # a cluster: as many tasks in flight as it has CPUs, x2
            cpus = int(ray.cluster_resources().get("CPU", self.workers))
            self.workers = max(1, int(cpus / self.num_cpus_per_task))
            self.max_in_flight = max(self.max_in_flight, 2 * self.workers)

    def describe(self) -> dict[str, Any]:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        return {
            "executor": self.kind,
            "workers": self.workers,
            "address": self.address or "local",
            "nodes": len(nodes),
        }

    def check_sendable(self, what: str, obj: Any) -> None:
        import ray.cloudpickle

        self._check_sendable(what, obj, ray.cloudpickle.dumps)

    def run(
        self,
        fn: Callable[[S, T], R],
        items: Sequence[T],
        shared: S,
        *,
        admit: Admit | None = None,
    ) -> Iterator[TaskOutcome[R]]:
        ray = self._ray
        remote = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_retries)(_on_ray)
        shared_ref = ray.put(shared)
        pending: dict[Any, int] = {}
        nxt = 0
        while nxt < len(items) or pending:
            while nxt < len(items) and len(pending) < self.max_in_flight:
                i, nxt = nxt, nxt + 1
                why = None if admit is None else admit(i)
                if why is not None:
                    yield TaskOutcome(i, not_started=why)
                    continue
                pending[remote.remote(fn, shared_ref, items[i], i)] = i
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                yield TaskOutcome(
                    i,
                    error=f"{type(exc).__name__} after {self.max_retries} retries: {_said(exc)}",
                    attempts=self.max_retries + 1,
                )

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def _said(exc: BaseException) -> str:
    """What a Ray error says in one line: its last line (the cause, e.g. ``ModuleNotFoundError:
    No module named 'mine'`` when a worker cannot import what a task needs) and where it
    happened (its first line, ``ray::_on_ray() (pid=…, ip=…)``), without terminal colours."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    where = f" ({lines[0][:200]})" if len(lines) > 1 else ""
    return lines[-1][:300] + where

"""One model audited on several data sets: :func:`audit_datasets` → one :class:`Report` each.

Each data set is audited exactly as :func:`edgeproof.runner.audit` audits it alone — the same
threat model resolution, checks, seed and thread counts, so the same numbers in its report — as
one task of an :class:`~edgeproof.execute.Executor` (:mod:`edgeproof.execute`): one after
another in this process (the default), on a local pool of spawned processes, or on Ray. The
model, the checks and the audit's settings are sent once (``shared``); each task carries one data
set. Every task runs torch and the BLAS pools on the thread counts this process has, with the
checks registered here (:func:`~edgeproof.checks.registered_factories`), so a worker computes
what this process would.

The data sets are checked and their threat models resolved here, before any task starts (a data
set that does not fit the model is refused up front). :func:`dataset_folders` names a folder per
data set (``edgeproof audit --data a.npz --data b.npz --out DIR`` writes ``DIR/a/`` and
``DIR/b/``).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from edgeproof.checks import register_factories, registered_factories
from edgeproof.checks.base import Check
from edgeproof.data.dataset import Dataset
from edgeproof.errors import InternalError, OptionError
from edgeproof.execute import Executor, TaskOutcome, executor_for
from edgeproof.models.loaded import LoadedModel
from edgeproof.report.report import Report
from edgeproof.runner import audit, resolve_threat
from edgeproof.spec import ThreatModel

__all__ = ["audit_datasets", "dataset_folders"]

_DATA_SUFFIXES = (".npz", ".csv", ".gz", ".idx", ".bin", ".ubyte")


def dataset_folders(datasets: Sequence[Dataset]) -> list[str]:
    """A folder name per data set, from its name: the file name without its data extension
    (``data/val.npz`` → ``val``) or the built-in's name (``builtin:digits/train`` →
    ``digits-train``), lower case, anything but letters, digits, ``.``, ``_`` and ``-`` turned
    into ``-``; a name already taken gets ``-2``, ``-3``, …"""
    out: list[str] = []
    for d in datasets:
        slug = _slug(d.name)
        folder, n = slug, 1
        while folder in out:
            n += 1
            folder = f"{slug}-{n}"
        out.append(folder)
    return out


def _slug(name: str) -> str:
    if name.startswith("builtin:"):
        stem = name.removeprefix("builtin:")
    else:
        stem = PurePosixPath(name.replace("\\", "/")).name
        while (suffix := PurePosixPath(stem).suffix).lower() in _DATA_SUFFIXES and suffix:
            stem = stem[: -len(suffix)]
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "data"


@dataclass(frozen=True)
class _Shared:
    """What every data set's audit shares (sent to each worker once)."""

    model: LoadedModel
    checks: tuple[str | Check, ...] | None
    settings: Mapping[str, Any]
    factories: Mapping[str, Callable[..., Check]]
    torch_threads: int
    blas_threads: int | None


@dataclass(frozen=True)
class _Item:
    """One data set to audit, its threat model and its folder of side files."""

    data: Dataset
    threat: ThreatModel
    out_dir: Path | None


@dataclass(frozen=True)
class _Failed:
    """The exception one data set's audit raised (raised again in the calling process)."""

    error: BaseException
    traceback: str


def audit_datasets(
    model: LoadedModel,
    datasets: Sequence[Dataset],
    checks: Sequence[str | Check] | None = None,
    *,
    threat: ThreatModel | Sequence[ThreatModel] | None = None,
    executor: str | Executor = "inprocess",
    jobs: int = 1,
    ray_address: str | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    **settings: Any,
) -> list[Report]:
    """Audit ``model`` on each of ``datasets`` as :func:`~edgeproof.runner.audit` would alone
    (module docstring); the reports in the order of ``datasets``.

    Args:
        model: the model (it travels to the workers: a ``torch.export`` program cannot, see
            :class:`~edgeproof.models.loaded.LoadedModel`).
        datasets: at least one data set.
        checks: as :func:`~edgeproof.runner.audit` (names or Check objects; default all).
        threat: one threat model for every data set, one per data set, or ``None``: each data
            set's own, resolved as :func:`~edgeproof.runner.audit` resolves it.
        executor: where the audits run, one task per data set: ``"inprocess"`` (the
            default), ``"processes"`` (``jobs`` spawned workers), ``"ray"`` (``ray_address``:
            ``None`` starts Ray here with ``jobs`` CPUs, ``"auto"`` or ``"HOST:PORT"`` joins a
            cluster), or an :class:`~edgeproof.execute.Executor` (then ``jobs`` and
            ``ray_address`` are its own).
        out_dir: side files of each data set's checks go to ``out_dir/<folder>``
            (:func:`dataset_folders`).
        progress: progress bars (in this process only).
        settings: the other arguments of :func:`~edgeproof.runner.audit` (``seed``,
            ``batch_size``, ``threads``, ``baseline``, ``name_of`` — a module-level function).

    Raises:
        OptionError: no data set, a threat model per data set that does not match them, an
            argument :func:`~edgeproof.runner.audit` does not take, or a model the executor
            cannot send to its workers.
    """
    datasets = list(datasets)
    threats = _threats(model, datasets, threat)
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise OptionError(
            unknown[0], "is not an argument of audit", f"use some of {', '.join(sorted(_SETTINGS))}"
        )
    folders = dataset_folders(datasets)
    items = [
        _Item(d, t, None if out_dir is None else Path(out_dir) / f)
        for d, t, f in zip(datasets, threats, folders)
    ]
    ex, own = executor_for(executor, jobs, len(items), ray_address=ray_address)
    try:
        ex.check_sendable("the model", model)
        shared = _shared(model, checks, settings, progress and ex.kind == "inprocess")
        ex.check_sendable("the checks", (shared.checks, shared.factories))
        reports: dict[int, Report] = {}
        for o in ex.run(_audit_task, items, shared):
            reports[o.index] = _report(o, datasets[o.index])
    finally:
        if own:
            ex.close()
    return [reports[i] for i in range(len(items))]


#: the arguments of :func:`~edgeproof.runner.audit` ``settings`` may hold
_SETTINGS = frozenset({"seed", "batch_size", "threads", "baseline", "name_of"})


def _threats(
    model: LoadedModel,
    datasets: list[Dataset],
    threat: ThreatModel | Sequence[ThreatModel] | None,
) -> list[ThreatModel]:
    """One threat model per data set (each validated first, as the audit validates it)."""
    if not datasets:
        raise OptionError("datasets", "no data set was given", "give at least one")
    for d in datasets:
        d.validate()
    if threat is None:
        return [resolve_threat(model, d) for d in datasets]
    if isinstance(threat, ThreatModel):
        return [threat] * len(datasets)
    threats = list(threat)
    if len(threats) != len(datasets):
        raise OptionError(
            "threat",
            f"{len(threats)} threat models for {len(datasets)} data sets",
            "give one threat model, or one per data set",
        )
    return threats


def _shared(
    model: LoadedModel,
    checks: Sequence[str | Check] | None,
    settings: Mapping[str, Any],
    progress: bool,
) -> _Shared:
    from threadpoolctl import threadpool_info

    from edgeproof.checks import default_checks

    names = default_checks() if checks is None else [c for c in checks if isinstance(c, str)]
    blas = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    return _Shared(
        model,
        None if checks is None else tuple(checks),
        {**settings, "progress": progress},
        registered_factories(names),
        torch.get_num_threads(),
        max(blas) if blas else None,
    )


def _audit_task(shared: _Shared, item: _Item) -> Report | _Failed:
    """Audit one data set (a module-level function: it travels by reference)."""
    register_factories(shared.factories)
    with _threads(shared.torch_threads, shared.blas_threads):
        try:
            return audit(
                shared.model,
                item.data,
                shared.checks,
                threat=item.threat,
                out_dir=item.out_dir,
                **shared.settings,
            )
        except Exception as exc:  # raised again by audit_datasets, in the calling process
            return _Failed(exc, traceback.format_exc())


@contextmanager
def _threads(torch_threads: int, blas_threads: int | None) -> Iterator[None]:
    """Run on the thread counts of the calling process (a worker's own default differs)."""
    from threadpoolctl import threadpool_limits

    from edgeproof.runtime.threads import torch_threads as torch_count

    with torch_count(torch_threads):
        if blas_threads is None:
            yield
            return
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            yield


def _report(o: TaskOutcome[Report | _Failed], data: Dataset) -> Report:
    """The task's report; the error its audit raised, raised here (with the worker's traceback
    as a note when it ran elsewhere); a task that failed as a task, an InternalError."""
    if isinstance(o.value, Report):
        return o.value
    if isinstance(o.value, _Failed):
        err = o.value.error
        if err.__traceback__ is None:
            err.add_note(f"raised while auditing {data.name}:\n{o.value.traceback}")
        raise err
    where = f" ({o.worker})" if o.worker else ""
    raise InternalError(
        f"{data.name}: the task auditing this data set failed{where}: {o.error}"
        + (f"\n{o.traceback}" if o.traceback else "")
    )

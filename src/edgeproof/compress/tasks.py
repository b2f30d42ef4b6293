"""The search's candidates as tasks: one task per candidate, on any executor.

The baseline is measured first, in the calling process (every candidate's drop is against it).
Then each candidate is one task of an :class:`~edgeproof.execute.Executor`
(:mod:`edgeproof.execute`: in this process, the default and today's behaviour; a local pool of
spawned processes; Ray): ``fn(shared, (index, recipe))`` builds and measures one candidate and
returns a :class:`Measured` — the measured row and what was built, or why the recipe does not
apply, or the error it raised. Everything large (the module, the build context with the
calibration records, the evaluation records, the measurement settings, the baseline) is in
``shared``, which the executor sends once (once per worker process; on Ray one ``ray.put``).

The time budget is the executor's ``admit``: a candidate not started once ``time_budget_s`` has
elapsed is recorded as skipped, with the same reason and log line as ever. An executor made
here keeps at most one task per worker in flight, so a candidate is admitted when a worker is
free to start it.

Results do not depend on where a task runs: each runs torch and the BLAS pools on the search's
``threads`` (:func:`~edgeproof.runtime.threads.compute_threads`), from the search's seed, with
the checks the caller registered (:func:`~edgeproof.checks.registered_factories`); the build
context's caches arrive empty in a worker, which computes the same values
(:class:`~edgeproof.compress.context.BuildContext`). Rows go into the ledger in recipe order,
whatever order they finished in.

What the caller adds travels to the workers by pickle: a check they registered or a step of
their own must be defined at module level in a module the workers can import (or, on Ray, be
registered with ``ray.cloudpickle.register_pickle_by_value``); what a backend cannot send is
refused before any work (:meth:`~edgeproof.execute.Executor.check_sendable`). A candidate whose
task fails (a worker that died, a result that could not be sent back) fails the search with an
:class:`~edgeproof.errors.InternalError`; an error the build or the measurement raised is raised
again here, as itself.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from edgeproof.checks import register_factories, registered_factories
from edgeproof.checks.base import seed_everything
from edgeproof.compress.ledger import Candidate, Ledger, SkippedCandidate
from edgeproof.errors import InternalError
from edgeproof.execute import Executor, TaskOutcome, executor_for
from edgeproof.runtime.threads import compute_threads

if TYPE_CHECKING:
    from edgeproof.compress.artefacts import Artefact
    from edgeproof.compress.steps import Built

__all__ = [
    "Measured",
    "Planned",
    "TaskCommon",
    "WorkerCache",
    "candidate_executor",
    "candidate_line",
    "run_candidates",
    "run_task",
]

S = TypeVar("S")
T = TypeVar("T")

#: ``tell(candidate, index, stage)``: the search's progress (:func:`~edgeproof.compress.search.
#: progress_teller`)
Tell = Callable[[str, int, str], None]


@dataclass(frozen=True)
class Planned:
    """A candidate to build: its ledger name and technique (for its skip record)."""

    name: str
    technique: str


@dataclass(frozen=True)
class Measured:
    """What one candidate's task returns: the measured row and what was built (a
    :class:`~edgeproof.compress.steps.Built` or a graph artefact), or ``skipped`` (why the
    recipe does not apply to the model), or the ``error`` it raised with its ``traceback``."""

    candidate: Candidate | None = None
    built: Built | Artefact | None = None
    skipped: str | None = None
    error: BaseException | None = None
    traceback: str = ""


@dataclass(frozen=True)
class TaskCommon:
    """What every candidate task of one search runs with.

    Attributes:
        token: names the search: a Ray worker keeps the last search's shared inputs (and the
            caches they fill) for its next task of the same search (:func:`run_task`).
        threads: the torch and BLAS threads of every task.
        seed: every task starts from it (:func:`~edgeproof.checks.base.seed_everything`).
        checks: the check factories the caller registered, registered again in a worker.
        tell: the progress of each stage; only in this process (``None`` in workers, whose
            progress the search tells when a candidate starts and ends).
        keep: keep the shared inputs for the next task (Ray, which deserialises them for every
            task).
    """

    token: str
    threads: int
    seed: int
    checks: Mapping[str, Callable[..., Any]]
    tell: Tell | None = None
    keep: bool = False

    @classmethod
    def of(
        cls,
        executor: Executor,
        model: Any,
        *,
        threads: int,
        seed: int,
        checks: Sequence[str],
        tell: Tell,
    ) -> TaskCommon:
        """The settings of a new search of ``model`` on ``executor`` (progress of each stage
        in process); a model or registered checks the executor cannot send to its workers are
        refused first (:meth:`~edgeproof.execute.Executor.check_sendable`)."""
        factories = registered_factories(checks)
        executor.check_sendable("the model", model)
        executor.check_sendable("the checks registered with register_check", factories)
        return cls(
            uuid.uuid4().hex,
            threads,
            seed,
            factories,
            tell=tell if executor.kind == "inprocess" else None,
            keep=executor.kind == "ray",
        )


class WorkerCache(dict[Any, Any]):
    """A dict that pickles empty: what a task computes once and reuses in its process (keyed
    by values, filled again by each worker)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (WorkerCache, ())


_KEPT: dict[str, Any] = {}


def run_task(common: TaskCommon, shared: S, body: Callable[[S], Measured]) -> Measured:
    """Run one candidate's ``body(shared)`` as every backend runs it: on ``common.threads``,
    seeded, with the caller's checks; an exception becomes the result's ``error``.

    With ``common.keep`` the first ``shared`` of a search seen in this process is used for its
    later tasks too (and its caches with it)."""
    if common.keep:
        if common.token not in _KEPT:
            _KEPT.clear()
            _KEPT[common.token] = shared
        shared = _KEPT[common.token]
    register_factories(common.checks)
    with compute_threads(common.threads):
        seed_everything(common.seed)
        try:
            return body(shared)
        except Exception as exc:  # raised again by the search, in the calling process
            return Measured(error=exc, traceback=traceback.format_exc())


def candidate_executor(
    executor: str | Executor, jobs: int, ray_address: str | None, candidates: int
) -> tuple[Executor, bool]:
    """The executor of a search and whether the search made it (and closes it): ``executor``
    itself, or the backend of that name with ``jobs`` workers (a local pool never more than the
    candidates), one task per worker in flight (:func:`~edgeproof.execute.executor_for`)."""
    return executor_for(
        executor, jobs, candidates, ray_address=ray_address, max_in_flight=max(1, jobs)
    )


def run_candidates(
    executor: Executor,
    fn: Callable[[S, tuple[int, T]], Measured],
    shared: S,
    recipes: Sequence[T],
    plans: Sequence[Planned],
    ledger: Ledger,
    *,
    time_budget_s: float,
    t0: float,
    say: Callable[[str], None],
    tell: Tell,
) -> None:
    """Run ``fn`` once per recipe on ``executor`` and put each candidate in ``ledger``, in
    recipe order: measured rows and their artefacts, skipped ones with their reason; and where
    they ran (``ledger.execution``). Progress index ``i + 1`` is recipe ``i`` (the baseline is
    0)."""

    def admit(i: int) -> str | None:
        elapsed = time.perf_counter() - t0
        name = plans[i].name
        if elapsed > time_budget_s:
            why = f"not started: the time budget of {time_budget_s:g} s was spent"
            say(f"{name}: skipped, {why} ({elapsed:.0f} s elapsed)")
            tell(name, i + 1, "skipped")
            return why
        tell(name, i + 1, "build")
        return None

    done: dict[int, Candidate | SkippedCandidate] = {}
    built: dict[int, Built | Artefact] = {}
    items = list(enumerate(recipes, start=1))
    for o in executor.run(fn, items, shared, admit=admit):
        p = plans[o.index]
        m = _measured(o, p)
        if o.not_started is not None or m.skipped is not None:
            done[o.index] = SkippedCandidate(p.name, p.technique, o.not_started or str(m.skipped))
            if m.skipped is not None:
                say(f"{p.name}: skipped, not applicable: {m.skipped}")
                tell(p.name, o.index + 1, "skipped")
            continue
        assert m.candidate is not None and m.built is not None
        done[o.index], built[o.index] = m.candidate, m.built
        tell(p.name, o.index + 1, "done")
        say(candidate_line(m.candidate))
    for i in sorted(done):
        row = done[i]
        if isinstance(row, SkippedCandidate):
            ledger.skipped.append(row)
        else:
            ledger.candidates.append(row)
            ledger.artefacts[row.name] = built[i]
    ledger.execution = executor.describe()


def _measured(o: TaskOutcome[Measured], p: Planned) -> Measured:
    """The task's result; its error raised here (the worker's traceback as a note when it
    ran elsewhere), and a task that failed as a task an :class:`InternalError`."""
    if o.not_started is not None:
        return Measured()
    if o.value is None:
        where = f" ({o.worker})" if o.worker else ""
        raise InternalError(
            f"{p.name}: the task building and measuring this candidate failed{where}: {o.error}"
            + (f"\n{o.traceback}" if o.traceback else "")
        )
    m = o.value
    if m.error is not None:
        if m.error.__traceback__ is None:  # rebuilt from another process
            m.error.add_note(f"raised while building or measuring {p.name}:\n{m.traceback}")
        raise m.error
    return m


def candidate_line(cand: Candidate) -> str:
    """One line of a measured candidate: accuracy, the drop with its interval, size, latency."""
    from edgeproof.compress.selection import drop_text

    line = f"{cand.name}: accuracy {cand.accuracy:.4f}, {drop_text(cand)}, {cand.size_bytes} B, "
    line += f"p50 {cand.latency_p50_ms:.3f} ms"
    if cand.expected_macs is not None:
        line += f", expected MACs {cand.expected_macs:.0f}"
    return line

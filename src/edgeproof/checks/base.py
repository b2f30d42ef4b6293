"""The Check plug-in interface.

A check is a small class with one required method, :meth:`Check.run`. What it needs is declared
with class flags, so the runner can plan from what the model and data allow and skip with a stated
reason instead of failing::

    class MyCheck(Check):
        name = "mycheck"
        title = "My check"
        needs_data = True
        needs_gradients = True

        def run(self, ctx: AuditContext) -> CheckResult:
            ...

Settings are passed to the constructor and stored (``Check(**settings)``); the work happens in
``run``. A plain function becomes a check through :class:`FunctionCheck`. Checks are registered by
name with :func:`edgeproof.checks.register_check`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from edgeproof.data.dataset import Dataset
from edgeproof.errors import ModelError, param
from edgeproof.models.loaded import LoadedModel
from edgeproof.results import CheckResult
from edgeproof.spec import ThreatModel

__all__ = [
    "AuditContext",
    "Check",
    "FunctionCheck",
    "Progress",
    "seed_everything",
    "stage_progress",
]


class Progress(Protocol):
    """What a check may report while it runs (the runner draws the progress bar).

    ``start(total, description)`` begins a stage of ``total`` units (a second call begins the
    next stage, e.g. attacks then the minimal-ε bisection); ``advance(n)`` marks ``n`` done.
    """

    def start(self, total: int, description: str = "") -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _NullProgress:
    def start(self, total: int, description: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def stage_progress(ctx: AuditContext, description: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for a method in :mod:`edgeproof.methods` that feeds
    ``ctx.progress``: the first call (and any change of ``total``) starts a stage called
    ``description``; later calls advance it by the units done since."""
    state = {"total": -1, "done": 0}

    def report(done: int, total: int) -> None:
        if total != state["total"]:
            ctx.progress.start(total, description)
            state["total"], state["done"] = total, 0
        if done > state["done"]:
            ctx.progress.advance(done - state["done"])
            state["done"] = done

    return report


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs (checks also take explicit generators)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class AuditContext:
    """Everything a check may read: model, data, threat model, seed and where to write files.

    Attributes:
        model: the loaded model (any format).
        data: the dataset, or ``None`` for data-free audits.
        threat: the shared input specification and perturbation budget.
        seed: the audit's seed; checks derive their RNGs from it.
        out_dir: where the report goes (checks may write side files here).
        batch_size: evaluation batch size.
        progress: progress reporting hook.
        cache: a per-audit memo shared by checks (e.g. clean logits computed once).
    """

    model: LoadedModel
    data: Dataset | None
    threat: ThreatModel
    seed: int = 0
    out_dir: Path | None = None
    batch_size: int = 256
    progress: Progress = field(default_factory=_NullProgress)
    cache: dict[str, Any] = field(default_factory=dict)

    def require_data(self) -> Dataset:
        if self.data is None:  # the runner never calls a data check without data
            raise RuntimeError("this check needs data")
        return self.data

    def generator(self, salt: int = 0) -> torch.Generator:
        """A torch generator seeded from the audit seed and a per-use salt."""
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + salt) % (2**63))
        return g

    def clean_logits(self) -> np.ndarray:
        """Logits of the model on the whole dataset, computed once per audit.

        Raises :class:`~edgeproof.errors.ModelError` when some record's logits are NaN or Inf:
        no prediction, probability or gradient is defined for it, whatever the check.
        """
        if "clean_logits" not in self.cache:
            data = self.require_data()
            self.cache["clean_logits"] = self.model.predict_logits(data.x, self.batch_size)
        out: np.ndarray = self.cache["clean_logits"]
        bad = int((~np.isfinite(out).all(axis=1)).sum()) if out.size else 0
        if bad:
            raise ModelError(
                f"{self.model.name}: {bad} of {out.shape[0]} records give NaN or Inf logits, so "
                "their prediction is undefined; the model's output is broken (check its weights "
                "for NaN/Inf and that the data is in the model's input domain)"
            )
        return out


class Check(ABC):
    """Base class of every analysis.

    Class attributes declare identity and needs; the constructor stores settings (override
    ``__init__`` with explicit keyword arguments and call ``super().__init__(**settings)``).
    """

    # Identity and needs: set as class attributes by subclasses (instances may override them,
    # as FunctionCheck does).
    name: str
    title: str
    description: str = ""
    needs_data: bool = False
    needs_forward: bool = True
    needs_gradients: bool = False
    needs_architecture: bool = False
    #: the one to three metric names a reader acts on, shown first in the report
    headline: tuple[str, ...] = ()
    #: settings that make the check quick on a small model (the conformance suite runs every
    #: check with them; also a starting point for a fast preview)
    quick_settings: ClassVar[Mapping[str, Any]] = {}
    #: the check's work was measured to run faster on more threads: with no ``threads`` given,
    #: the runner lets it use every core (others run on one thread)
    parallel: bool = False

    def __init__(self, **settings: Any) -> None:
        self.settings: dict[str, Any] = dict(settings)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Why this check cannot run on ``ctx`` (``None`` if it can).

        The default derives the reason from the declared needs; override to add more.
        """
        m = ctx.model
        if self.needs_data and ctx.data is None:
            return f"needs labelled data (pass {param('data')})"
        if self.needs_forward and not m.can_forward:
            return f"needs a runnable model, but only weights were given (pass {param('arch')})"
        if self.needs_forward and not ctx.threat.input.shape_known:
            return (
                "needs the input shape, which neither the model's metadata nor data give "
                f"(pass {param('shape')}, e.g. {param('shape')} 3,32,32)"
            )
        if self.needs_gradients and not m.has_gradients:
            return f"needs gradients, which {m.described} does not provide"
        if self.needs_architecture and not m.has_architecture:
            return f"needs the layer structure, which {m.described} does not provide"
        return None

    @abstractmethod
    def run(self, ctx: AuditContext) -> CheckResult:
        """Run the analysis and return its typed result."""

    def new_result(self, **kwargs: Any) -> CheckResult:
        """An empty result for this check, with its settings recorded."""
        return CheckResult(
            check=self.name, title=self.title, settings=dict(self.settings), **kwargs
        )


class FunctionCheck(Check):
    """Adapt a plain function ``fn(ctx) -> CheckResult`` into a check.

    ``FunctionCheck("mine", fn, needs_data=True)``.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[AuditContext], CheckResult],
        *,
        title: str | None = None,
        needs_data: bool = False,
        needs_forward: bool = True,
        needs_gradients: bool = False,
        needs_architecture: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self._fn = fn
        self.name = name
        self.title = title or name
        self.needs_data = needs_data
        self.needs_forward = needs_forward
        self.needs_gradients = needs_gradients
        self.needs_architecture = needs_architecture

    def run(self, ctx: AuditContext) -> CheckResult:
        return self._fn(ctx)

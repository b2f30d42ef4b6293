"""Recipes as chains of steps: ``Chain(Prune(0.5, "magnitude"), Quantize(QuantConfig("int8")))``.

A :class:`Step` stores its settings in ``__init__`` and does its work in :meth:`Step.apply`,
which takes what the chain built so far (:class:`Built`: the module, the settings and notes of
the row) and returns the next. Transform steps (prune, remove channels, factor) return a new
module; a *terminal* step (quantize, mixed precision, early exit) also makes the candidate's
:class:`~edgeproof.compress.artefacts.Artefact` and must come last. A chain whose last step is
not terminal ships the fp32 graph of its module; the empty chain is the baseline. A step that
cannot apply to the model raises :class:`~edgeproof.errors.NotApplicableError` (the search
records the candidate as skipped with that reason); a misconfiguration raises
:class:`~edgeproof.errors.OptionError` and is not swallowed.

The chain's name joins its steps' labels with ``+`` (``prune50+int8``), its technique their
techniques. Transform outputs are cached per chain prefix in the
:class:`~edgeproof.compress.context.BuildContext`, so chains that share a prefix build it once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from edgeproof.compress.artefacts import Artefact, GraphArtefact
from edgeproof.compress.context import BuildContext
from edgeproof.errors import OptionError

__all__ = ["Built", "Chain", "Step"]


@dataclass(frozen=True)
class Built:
    """What a chain has built so far: the module, the row's settings and notes, and (after a
    terminal step, or at the end of the chain) the artefact."""

    module: nn.Module
    settings: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    artefact: Artefact | None = None

    def then(
        self,
        module: nn.Module | None = None,
        *,
        settings: dict[str, Any] | None = None,
        notes: tuple[str, ...] | list[str] = (),
        artefact: Artefact | None = None,
    ) -> Built:
        """The next state: a new module (or the same), settings and notes added."""
        return Built(
            self.module if module is None else module,
            {**self.settings, **(settings or {})},
            (*self.notes, *notes),
            artefact if artefact is not None else self.artefact,
        )


class Step(ABC):
    """One stage of a recipe. Settings in ``__init__``; the work in :meth:`apply`.

    Class attributes: ``terminal`` — the step makes the artefact (last in a chain);
    ``needs_grad`` — it trains something (runs with autograd on; other steps run under
    ``torch.no_grad``).
    """

    terminal: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False

    @property
    @abstractmethod
    def label(self) -> str:
        """This step's part of the candidate name (``prune50``, ``int8-mse``)."""

    @property
    @abstractmethod
    def technique(self) -> str:
        """What the step does, for the ledger's technique column."""

    @abstractmethod
    def apply(self, built: Built, ctx: BuildContext) -> Built:
        """Transform ``built`` (never in place: ``built.module`` stays as it was)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Chain:
    """A candidate recipe: steps applied in order to the baseline module.

    ``Chain()`` is the baseline (the fp32 graph, name ``fp32``). ``name`` and ``technique``
    default to the steps' labels and techniques joined with ``+``.

    Raises:
        OptionError: a terminal step is not the last one.
    """

    def __init__(self, *steps: Step, name: str | None = None, technique: str | None = None):
        for s in steps[:-1]:
            if s.terminal:
                raise OptionError(
                    "recipes",
                    f"{s!r} makes the candidate's artefact and must be the last step of a chain",
                    "move it to the end, e.g. Chain(Prune(0.5), Quantize(QuantConfig('int8')))",
                )
        self.steps = tuple(steps)
        self.name = name or ("+".join(s.label for s in steps) if steps else "fp32")
        self.technique = technique or ("+".join(s.technique for s in steps) or "baseline")

    def apply(self, module: nn.Module, ctx: BuildContext) -> Built:
        """Build the candidate from ``module`` (which is not changed)."""
        built = Built(module, {} if self.steps else {"precision": "fp32"})
        for i, step in enumerate(self.steps):
            if step.terminal:
                built = _apply(step, built, ctx)
            else:
                key = (id(module), tuple(repr(s) for s in self.steps[: i + 1]))
                built = ctx.step_output(key, partial(_apply, step, built, ctx))
        if built.artefact is None:
            art = GraphArtefact(built.module, ctx.fp32_graph(built.module))
            built = replace(built, artefact=art)
        return built

    def __repr__(self) -> str:
        return f"Chain({', '.join(repr(s) for s in self.steps)})"


def _apply(step: Step, built: Built, ctx: BuildContext) -> Built:
    with torch.enable_grad() if step.needs_grad else torch.no_grad():
        return step.apply(built, ctx)

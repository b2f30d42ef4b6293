"""Explain a model: the ``attribution`` check (with its sanity tests) as one library call.

:func:`explain` is what ``edgeproof explain`` runs: it resolves the input spec as an audit does
(:func:`edgeproof.runner.resolve_threat`), checks the caller's choices against the model *before*
any work (a target class outside the model's classes, ``n_steps`` ≤ 0, a baseline of the wrong
shape, an unknown method: one :class:`~edgeproof.errors.OptionError` naming the parameter), then
runs :class:`~edgeproof.checks.attribution.AttributionCheck` through the audit runner and
returns the :class:`~edgeproof.report.report.Report` (write it with
:func:`edgeproof.report.files.write_report`: ``report.json`` + ``report.html`` with the
per-class mean maps and a few per-sample ones).

A model without gradients (ONNX) gets the gradient-free methods (occlusion, feature ablation,
KernelSHAP, frequency occlusion); the gradient methods asked for are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeproof.checks.attribution import AttributionCheck, given_baseline
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.report.report import Report
from edgeproof.spec import ThreatModel

__all__ = ["explain"]


def explain(
    model: LoadedModel,
    data: Dataset,
    *,
    methods: Sequence[str] | None = None,
    target: int | None = None,
    n_steps: int = 16,
    tolerance: float | None = 0.01,
    samples: int = 64,
    baseline: float | np.ndarray | None = None,
    sanity: bool = True,
    threat: ThreatModel | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
    name_of: Callable[[str], str] | None = None,
    **settings: Any,
) -> Report:
    """Attributions of ``model`` on (a seeded subset of) ``data``, with sanity tests.

    Args:
        model, data: the model and the samples to explain (raw input units).
        methods: attribution methods (default: those that fit the data kind,
            :func:`~edgeproof.checks.attribution.methods_for_kind`).
        target: explain this class for every sample (default: each sample's predicted class).
        n_steps: Integrated Gradients steps (the start in adaptive mode).
        tolerance: IG completeness tolerance |δ| / |f(x) − f(x0)|; steps double until it is met
            (up to 256 or ``n_steps``); ``None`` runs ``n_steps`` once.
        samples: samples explained (a seeded subset).
        baseline: the reference input of IG / occlusion / feature ablation: a number or one
            sample of the input shape (default: the per-kind baseline of the check).
        sanity: run the model- and label-randomisation sanity tests.
        threat: the input spec (default: resolved from the model and the data).
        seed, threads, progress, name_of: as :func:`edgeproof.runner.audit`.
        settings: any other :class:`AttributionCheck` setting (``figure_samples``, ...).
    """
    from edgeproof.runner import audit, resolve_threat

    _check_counts(n_steps, tolerance, samples)
    data.validate()
    if threat is None:
        threat = resolve_threat(model, data)
    spec = threat.input
    k = spec.num_classes if spec.num_classes is not None else data.num_classes
    _check_target(target, k)
    if baseline is not None:
        given_baseline(baseline, tuple(spec.shape))  # the wrong shape fails before any work
    check = AttributionCheck(
        methods=methods,
        max_samples=int(samples),
        sanity_samples=min(16, int(samples)),
        ig_steps=int(n_steps),
        ig_tolerance=tolerance,
        ig_max_steps=max(256, int(n_steps)),
        sanity=sanity,
        target=None if target is None else int(target),
        baseline=baseline,
        **settings,
    )
    return audit(
        model,
        data,
        [check],
        threat=threat,
        seed=seed,
        threads=threads,
        progress=progress,
        name_of=name_of,
    )


def _check_counts(n_steps: int, tolerance: float | None, samples: int) -> None:
    """``n_steps`` and ``samples`` are integers >= 1, ``tolerance`` positive (or ``None``)."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise OptionError("n_steps", f"{n_steps!r} must be an integer >= 1", "use e.g. 16")
    if tolerance is not None and not (np.isfinite(tolerance) and tolerance > 0):
        raise OptionError("tolerance", f"{tolerance!r} must be a positive number", "use e.g. 0.01")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise OptionError("samples", f"{samples!r} must be an integer >= 1", "use e.g. 64")


def _check_target(target: int | None, k: int) -> None:
    """``target``, when given, is one of the model's ``k`` classes."""
    if target is not None and (
        isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < k
    ):
        raise OptionError(
            "target",
            f"class {target!r} is outside the model's {k} classes",
            f"use a class index in 0..{k - 1}, or leave it unset (the predicted class)",
        )

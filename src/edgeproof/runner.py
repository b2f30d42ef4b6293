"""The audit runner: resolve the input spec, plan checks, run them in isolation, build the report.

Planning asks every check whether it can run on this model and data (:meth:`Check.skip_reason`);
a check that cannot is recorded as ``skipped`` with the reason. A check that raises is recorded as
``error`` with its message and traceback, and the others still run. Every result carries its
duration; the report carries the seed, the versions and the thread count.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgeproof.checks import default_checks, get_check
from edgeproof.checks.base import AuditContext, Check, _NullProgress, seed_everything
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError, UserError, param, render_text
from edgeproof.models.loaded import LoadedModel
from edgeproof.options import positive_int
from edgeproof.report.report import Report
from edgeproof.results import CheckResult
from edgeproof.runtime.threads import resolve_threads, torch_threads
from edgeproof.spec import (
    DomainSource,
    InputKind,
    InputSpec,
    Norm,
    ThreatModel,
    check_feature_bounds,
    inferred_feature_bounds,
)

__all__ = ["PlannedCheck", "audit", "plan_checks", "resolve_threat", "run_checks"]


@dataclass(frozen=True)
class PlannedCheck:
    """A check and, if it cannot run, why."""

    check: Check
    skip_reason: str | None


def _kind_of(shape: tuple[int, ...]) -> InputKind:
    if len(shape) == 3 or not shape:
        return "image"
    if len(shape) == 2:
        return "timeseries"
    return "tabular"


def resolve_threat(
    model: LoadedModel,
    data: Dataset | None,
    *,
    shape: tuple[int, ...] | None = None,
    domain: tuple[float, float] | None = None,
    kind: InputKind | None = None,
    norm: Norm = "linf",
    eps: Sequence[float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    feature_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
) -> ThreatModel:
    """Build the one ThreatModel every check shares.

    Precedence for each field: explicit argument (a CLI flag) > model metadata > data.
    The data must fit the spec: a shape or class-count disagreement is a :class:`SpecError`.
    ``mean``/``std`` (given together): the model expects ``(x − mean) / std`` per channel,
    applied outside it (:attr:`InputSpec.outside_normalization`); data, domain and ε stay raw.
    An explicit ``shape`` or ``domain`` that is itself invalid is an :class:`OptionError`
    naming the parameter.

    ``feature_bounds`` (lo, hi per feature or channel, raw units): the features live on
    different scales; the audit then runs in fractions of each feature's range
    (:attr:`InputSpec.feature_bounds`), and ε is a fraction of each range. Without a declared
    domain, bounds or model metadata, tabular and time-series data get per-feature bounds
    inferred from their own min/max (and the report says they were inferred); images get one
    range.
    """
    if shape is not None:
        shape = _check_shape(shape)
    if domain is not None:
        domain = _check_domain(domain)
    _check_mean_and_std(mean, std)
    base = model.spec
    if shape is None:
        shape = (
            base.shape if base is not None else (data.sample_shape if data is not None else None)
        )
    if shape is None:
        # no metadata and no data: the data-free checks run; a check that needs an input says
        # so in its skip reason (Check.skip_reason)
        shape = ()
    kind = _resolved_kind(kind, base, data, shape)
    domain, bounds, source = _resolved_domain(domain, feature_bounds, base, data, kind, shape)
    num_classes, class_names = _classes(base, data, shape)
    spec = InputSpec(
        shape=tuple(int(s) for s in shape),
        domain=(float(domain[0]), float(domain[1])),
        kind=kind,
        normalization=base.normalization if base is not None else None,
        num_classes=num_classes,
        class_names=class_names,
        domain_source=source,
        feature_bounds=bounds,
        outside_normalization=(
            (tuple(float(v) for v in mean), tuple(float(v) for v in std))
            if mean is not None and std is not None
            else base.outside_normalization
            if base is not None
            else None
        ),
    )
    if eps is None:
        eps = tuple(round(f * spec.range, 6) for f in (0.01, 0.03, 0.1))
        if norm == "l2":
            eps = tuple(round(e * spec.numel**0.5 / 4, 6) for e in eps)
    return _classes_of_the_model(model, ThreatModel(input=spec, norm=norm, eps=tuple(eps)), data)


Bounds = tuple[tuple[float, ...], tuple[float, ...]]


def _check_mean_and_std(mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """``mean`` and ``std`` come together or not at all."""
    if (mean is None) != (std is None):
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise SpecError(
            f"{param(given)} was given without {param(missing)}; the normalisation outside the "
            f"model needs both, e.g. {param('mean')} 0.1307 {param('std')} 0.3081"
        )


def _resolved_kind(
    kind: InputKind | None, base: InputSpec | None, data: Dataset | None, shape: tuple[int, ...]
) -> InputKind:
    """The input kind: given > model metadata > data > guessed from the shape."""
    if kind is not None:
        return kind
    if base is not None:
        return base.kind
    if data is not None and data.kind in ("image", "timeseries", "tabular"):
        return cast(InputKind, data.kind)
    return _kind_of(tuple(shape))


def _resolved_domain(
    domain: tuple[float, float] | None,
    feature_bounds: tuple[Sequence[float], Sequence[float]] | None,
    base: InputSpec | None,
    data: Dataset | None,
    kind: InputKind,
    shape: tuple[int, ...],
) -> tuple[tuple[float, float], Bounds | None, DomainSource]:
    """The domain, the per-feature bounds and where they came from: declared bounds or domain
    > model metadata > the data's declared domain > inferred from the data (per feature for
    tabular and time-series data) > ``[0, 1]``. With per-feature bounds the domain is
    ``[0, 1]`` (fractions of each feature's range)."""
    bounds: Bounds | None = None
    source: DomainSource = "declared"
    if feature_bounds is not None:
        bounds = check_feature_bounds(
            (
                tuple(float(v) for v in feature_bounds[0]),
                tuple(float(v) for v in feature_bounds[1]),
            ),
            tuple(shape),
        )
    elif domain is None:
        if base is not None:
            domain, bounds = base.domain, base.feature_bounds
            # a range the training data only suggested stays a suggestion: widened below
            source = "inferred" if base.domain_source == "inferred" else "metadata"
        elif data is not None and data.domain is not None:
            domain, source = data.domain, "data"
        elif data is not None and kind in ("tabular", "timeseries") and data.x.ndim >= 2:
            bounds, source = inferred_feature_bounds(data.x), "inferred"
        elif data is not None:
            lo, hi = float(data.x.min()), float(data.x.max())
            domain, source = (lo, hi if hi > lo else lo + 1.0), "inferred"
        else:
            domain, source = (0.0, 1.0), "default"
    if source == "inferred" and base is not None and data is not None and data.x.size:
        domain, bounds = _widened_to_data(domain, bounds, data)
    if bounds is not None:
        domain = (0.0, 1.0)
    assert domain is not None
    return domain, bounds, source


def _widened_to_data(
    domain: tuple[float, float] | None, bounds: Bounds | None, data: Dataset
) -> tuple[tuple[float, float] | None, Bounds | None]:
    """A range inferred from the training data, widened to what the evaluation data reaches
    (it may reach a little further)."""
    if bounds is not None and data.x.ndim >= 2 and data.x.shape[1] == len(bounds[0]):
        seen = inferred_feature_bounds(data.x)
        bounds = (
            tuple(min(a, b) for a, b in zip(bounds[0], seen[0])),
            tuple(max(a, b) for a, b in zip(bounds[1], seen[1])),
        )
    elif bounds is None and domain is not None:
        domain = (min(domain[0], float(data.x.min())), max(domain[1], float(data.x.max())))
    return domain, bounds


def _classes(
    base: InputSpec | None, data: Dataset | None, shape: tuple[int, ...]
) -> tuple[int | None, tuple[str, ...] | None]:
    """The number of classes and their names (model metadata > data), after checking the data
    fits the model: its sample shape, and no more classes than the model has outputs."""
    num_classes = base.num_classes if base is not None else None
    class_names = base.class_names if base is not None else None
    if data is not None:
        if data.sample_shape != tuple(shape):
            raise SpecError(
                f"{data.name}: samples have shape {list(data.sample_shape)} but the model expects "
                f"{list(shape)}; reshape the data or pass {param('shape')}"
            )
        if num_classes is not None and data.num_classes > num_classes:
            raise SpecError(
                f"{data.name}: the data has {data.num_classes} classes but the model has "
                f"{num_classes} outputs; use data labelled for this model"
            )
        if num_classes is None:
            num_classes = data.num_classes
            class_names = tuple(data.classes)
    return num_classes, class_names


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    from edgeproof import limits

    dims = tuple(shape)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise OptionError(
            "shape", f"{list(dims)} is not a sample shape", "give positive integers, e.g. 3,32,32"
        )
    numel = math.prod(dims)
    cap = limits.current().max_sample_elements
    if numel > cap:
        raise OptionError(
            "shape",
            f"{list(dims)} has {numel:,} values per sample, over max_sample_elements={cap:,}",
            limits.how_to_raise("max_sample_elements"),
        )
    return dims


def _check_domain(domain: Sequence[float]) -> tuple[float, float]:
    values = tuple(domain)
    ok = len(values) == 2 and all(isinstance(v, (int, float)) for v in values)
    if not ok or not all(math.isfinite(v) for v in values) or not values[0] < values[1]:
        raise OptionError(
            "domain", f"{list(values)} is not a domain", "give two finite numbers lo < hi"
        )
    return float(values[0]), float(values[1])


def _classes_of_the_model(
    model: LoadedModel, threat: ThreatModel, data: Dataset | None
) -> ThreatModel:
    """``threat`` with the model's output width as the class count, where that count came from
    the data (no metadata declares it) and the model outputs more logits than the data has
    classes: data covering some of the model's classes (a test split sorted by label, one
    recording session). The classes the data does not name are named by their index."""
    spec = threat.input
    declared = model.spec is not None and model.spec.num_classes is not None
    if declared or data is None or not model.can_forward or not spec.shape_known:
        return threat
    if spec.num_classes != data.num_classes or data.sample_shape != spec.shape:
        return threat
    try:
        out = model.for_spec(spec).predict_logits(data.x[:1], batch_size=1)
    except Exception:  # the probe that follows reports an input that does not fit
        return threat
    k = int(out.shape[1]) if out.ndim == 2 else 0
    if k <= data.num_classes:
        return threat
    given = tuple(spec.class_names or ())
    names = (*given, *(str(i) for i in range(len(given), k)))
    return replace(threat, input=spec.with_(num_classes=k, class_names=names))


def _probe(model: LoadedModel, threat: ThreatModel, data: Dataset | None) -> None:
    """Run one sample through the model: the shape must fit and the output must be (1, K) logits."""
    if not model.can_forward or not threat.input.shape_known:
        return
    spec = threat.input
    if data is not None:
        x = data.x[:1]
    else:
        x = np.full((1, *spec.shape), (spec.domain[0] + spec.domain[1]) / 2, dtype=np.float32)
    try:
        out = model.predict_logits(x, batch_size=1)
    except UserError:
        raise
    except Exception as exc:  # any framework error here means the input does not fit
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(
            f"{model.name}: an input of shape {list(spec.shape)} does not fit the model "
            f"({first[:200]}); pass {param('shape')} or data of the right shape"
        ) from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise SpecError(
            f"{model.name}: the model returns shape {list(out.shape)} for one sample; "
            "edgeproof expects logits of shape (batch, classes)"
        )
    if data is not None and out.shape[1] == 1 < data.num_classes:
        raise SpecError(
            f"{model.name}: the model returns one score per sample and the data {data.name} has "
            f"{data.num_classes} classes; if it is a binary score of class 1, say whether it is "
            f"a logit or a probability with {param('scores')} logits or probabilities"
        )
    if data is not None and out.shape[1] < data.num_classes:
        raise SpecError(
            f"{model.name}: the model outputs {out.shape[1]} logits but the data "
            f"{data.name} has {data.num_classes} classes; use matching data or model"
        )
    if model.spec is not None and model.spec.num_classes not in (None, out.shape[1]):
        raise SpecError(
            f"{model.name}: the metadata declares {model.spec.num_classes} classes but the "
            f"model outputs {out.shape[1]} logits; fix the sidecar metadata"
        )


def plan_checks(checks: Sequence[Check], ctx: AuditContext) -> list[PlannedCheck]:
    """Ask each check whether it can run on ``ctx``."""
    return [PlannedCheck(c, c.skip_reason(ctx)) for c in checks]


class _RichProgress:
    """Adapter from the check Progress protocol to one rich task: each ``start`` begins a stage
    shown as ``check · stage`` with its own count; a check that never calls it shows a pulsing
    bar and its elapsed time, no count."""

    def __init__(self, progress: Any, task: Any, name: str) -> None:
        self._p = progress
        self._task = task
        self._name = name
        self.counted = False

    def start(self, total: int, description: str = "") -> None:
        label = f"{self._name} · {description}" if description else self._name
        self.counted = True
        self._p.update(
            self._task, total=max(int(total), 0), completed=0, description=label, counted=True
        )

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._task, n)


def _count_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """``done/total`` of the current stage, blank for a check that reports no units."""

        def render(self, task: Any) -> Text:
            if not task.fields.get("counted") or task.total is None:
                return Text("")
            return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")

    return CountColumn()


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # on stderr: stdout stays for what a command prints as its result (--json)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _count_column(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        yield bar


def _run_one(
    check: Check,
    ctx: AuditContext,
    threads: int | None = None,
    name_of: Callable[[str], str] | None = None,
) -> CheckResult:
    t0 = time.perf_counter()
    seed_everything(ctx.seed)
    try:
        with torch_threads(resolve_threads(threads, parallel=check.parallel)):
            result = check.run(ctx)
        # findings and the summary name library parameters as the caller wants them named
        result.findings = [
            replace(f, message=render_text(f.message, name_of)) for f in result.findings
        ]
        result.summary = render_text(result.summary, name_of)
    except UserError as exc:
        result = check.new_result(status="error", error=exc.render(name_of))
    except Exception as exc:  # a crashing check is recorded; the others still run
        result = check.new_result(
            status="error",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    result.duration_s = time.perf_counter() - t0
    if not result.headline:
        result.headline = tuple(check.headline)
    return result


def run_checks(
    checks: Sequence[Check],
    ctx: AuditContext,
    *,
    threads: int | None = None,
    progress: bool = False,
    name_of: Callable[[str], str] | None = None,
) -> list[CheckResult]:
    """Plan ``checks`` on ``ctx`` and run each that can run, in isolation: the one runner loop
    behind :func:`audit` and the compression ledger's re-audit of every candidate.

    A check that cannot run is ``skipped`` with its reason; one that refuses its input
    (:class:`~edgeproof.errors.UserError`) or crashes is ``error`` (a crash keeps its traceback,
    :attr:`CheckResult.crashed`); the others still run. Each runs seeded from ``ctx.seed`` with
    its thread count (:func:`~edgeproof.runtime.threads.resolve_threads`).
    """
    results: list[CheckResult] = []
    with _progress_bar(progress) as bar:
        for p in plan_checks(checks, ctx):
            if p.skip_reason is not None:
                reason = render_text(p.skip_reason, name_of)
                results.append(
                    p.check.new_result(
                        status="skipped", skip_reason=reason, headline=tuple(p.check.headline)
                    )
                )
                continue
            hook = None
            if bar is not None:
                task = bar.add_task(p.check.name, total=None, counted=False)
                hook = _RichProgress(bar, task, p.check.name)
                ctx.progress = hook
            res = _run_one(p.check, ctx, threads, name_of)
            if bar is not None and hook is not None:
                status = {"ok": "[green]ok", "error": "[red]error"}.get(res.status, res.status)
                done = bar.tasks[bar.task_ids.index(task)]
                total = done.total if hook.counted and done.total else 1
                bar.update(
                    task, description=f"{p.check.name} {status}", total=total, completed=total
                )
                ctx.progress = _NullProgress()
            results.append(res)
    return results


def audit(
    model: LoadedModel,
    data: Dataset | None = None,
    checks: Sequence[str | Check] | None = None,
    *,
    threat: ThreatModel | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    batch_size: int = 256,
    threads: int | None = None,
    progress: bool = False,
    baseline: Report | None = None,
    name_of: Callable[[str], str] | None = None,
) -> Report:
    """Audit ``model`` on ``data`` with ``checks`` (names or Check objects; default: all).

    ``name_of``: how the report's messages (skip reasons, a check's refusal of its input) name
    a library parameter (default: by its name; the CLI names its flags instead).

    ``threads``: the CPU threads every check may use; by default each check runs on one thread
    unless it gains from more (:attr:`Check.parallel`, :func:`~edgeproof.runtime.threads.
    resolve_threads`).

    ``baseline``: the report of an earlier (sealed, known-good) audit of the same model family;
    per-class accuracy shifts beyond their confidence intervals while overall accuracy holds are
    flagged in a ``baseline`` result (the poisoning symptom).

    Returns the :class:`Report`; nothing is written
    (see :func:`edgeproof.report.files.write_report`).
    """
    t_start = time.perf_counter()
    batch_size = positive_int("batch_size", batch_size)
    if data is not None:
        data.validate()
    if threat is None:
        threat = resolve_threat(model, data)
    model = model.for_spec(threat.input)
    if data is not None:
        data = data.in_units_of(threat.input)
    _probe(model, threat, data)
    if checks is None:
        checks = default_checks()
    instances = [get_check(c) if isinstance(c, str) else c for c in checks]
    ctx = AuditContext(
        model=model,
        data=data,
        threat=threat,
        seed=seed,
        out_dir=None if out_dir is None else Path(out_dir),
        batch_size=batch_size,
    )
    results = run_checks(instances, ctx, threads=threads, progress=progress, name_of=name_of)
    if baseline is not None:
        results.append(_baseline_result(baseline, results))
    model_info: dict[str, Any] = {
        "name": model.name,
        "path": None if model.path is None else str(model.path),
        "format": model.format,
        "arch": model.arch,
        "parameters": model.num_parameters,
        "can_forward": model.can_forward,
        "has_gradients": model.has_gradients,
    }
    return Report(
        model=model_info,
        data=None if data is None else data.to_json(),
        threat=threat.to_json(),
        checks=results,
        seed=seed,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        duration_s=time.perf_counter() - t_start,
        warnings=list(model.warnings),
    )


def _baseline_result(baseline: Report, results: list[CheckResult]) -> CheckResult:
    """Compare per-class accuracy against a baseline report (integrity: poisoning symptom)."""
    from edgeproof.integrity.baseline import compare_per_class

    t0 = time.perf_counter()
    current = Report(model={}, data=None, threat={}, checks=results, seed=0, created="")
    res = CheckResult(check="baseline", title="Baseline comparison (poisoning symptom)")
    try:
        res.findings = list(compare_per_class(baseline, current))
        res.summary = (
            f"{len(res.findings)} finding(s) against the baseline of {baseline.created}"
            if res.findings
            else f"nothing flagged against the baseline of {baseline.created}: every class's "
            "recall lies within its baseline interval"
        )
    except Exception as exc:  # recorded like any failing check
        res.status = "error"
        res.error = f"{type(exc).__name__}: {exc}"
        res.traceback = traceback.format_exc()
    res.duration_s = time.perf_counter() - t0
    return res

"""Decision stability along transformed inputs (veriFIRE-style property checks).

For each sample of a seeded subset and each transform — darkening, a brightness shift, a
contrast range, a Gaussian blur — the check decides whether the class predicted on the clean
input is kept on the *whole* segment from the input to its transformed copy (every blend
``x + t·(T(x) − x)``, ``t ∈ [0, 1]``, with ``T(x)`` clipped to the input domain): verified by a
bound over the segment, falsified by a point on it (a ``t`` grid or branch-and-bound, checked by
a forward pass), or unknown. A thin adapter over :func:`edgeproof.certify.properties.
segment_stability`, run only when asked for (``checks=["property"]``; not part of a default
audit: which transforms must hold is the user's claim). With ``monotone_features`` it also
decides monotonicity over the domain box (:func:`~edgeproof.certify.properties.monotonicity`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from edgeproof.certify import trace
from edgeproof.certify.properties import (
    PropertyResult,
    blur,
    brightness,
    contrast,
    darken,
    monotonicity,
    segment_stability,
)
from edgeproof.certify.sets import Segment
from edgeproof.checks.adversarial import attack_data
from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO
from edgeproof.checks.certify import certify_budget, crown_macs
from edgeproof.errors import OptionError, param
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["PropertyCheck", "parse_transform"]

_KINDS = ("darken", "brightness", "contrast", "blur")


def parse_transform(text: str) -> tuple[str, tuple[float, ...]]:
    """``"darken:0.3"``, ``"brightness:-0.2"``, ``"contrast:0.7:1.3"``, ``"blur:1.0"`` →
    ``(kind, parameters)`` (amounts in units of the domain's width; blur σ in pixels)."""
    kind, *rest = text.split(":")
    try:
        params = tuple(float(v) for v in rest)
    except ValueError:
        params = ()
    want = 2 if kind == "contrast" else 1
    if kind not in _KINDS or len(params) != want:
        raise OptionError(
            "transforms",
            f"{text!r} is not a transform",
            "use darken:A, brightness:D, contrast:LOW:HIGH or blur:SIGMA, e.g. darken:0.3",
        )
    return kind, params


def _segments(kind: str, params: tuple[float, ...], x: torch.Tensor, domain: Any) -> Segment:
    width = domain[1] - domain[0]
    if kind == "darken":
        return darken(x, params[0], domain)
    if kind == "brightness":
        return brightness(x, params[0] * width, domain)
    if kind == "contrast":
        return contrast(x, params[0], params[1], domain)
    return blur(x, params[0])


class PropertyCheck(Check):
    """Is the decision kept along darkening, brightness, contrast and blur segments?

    Settings:
        transforms: ``kind:parameters`` strings (default ``("darken:0.1", "brightness:0.05",
            "contrast:0.9:1.1", "blur:0.5")``; brightness as a fraction of the domain's width;
            blur only for image and time-series inputs).
        max_samples: a seeded subset of at most this many samples (default 20).
        methods: bound methods (default ``"auto"``: ``("crown",)`` — along a segment CROWN
            alone decides little on a CNN; splitting ``t`` does the work — or ``("crown-ibp",)``
            on a model whose CROWN back-substitution exceeds the work budget,
            :mod:`edgeproof.checks.budget`).
        bab_budget_s: per-segment branch-and-bound budget for segments left open (default
            ``"auto"``: 0.25, about 20 s for the defaults on the digits LeNet-5, deciding 60–80%
            of them; 0 on a model beyond the work budget, said in a finding).
        grid: points of the ``t`` grid searched for a counterexample (default 33).
        monotone_features: flat input indices; when given, also decide whether output
            ``monotone_output`` is monotone in each of them over the whole input domain box
            (:func:`~edgeproof.certify.properties.monotonicity`; default none).
        monotone_output: the output of that claim (default 0).
        monotone_increasing: non-decreasing (default) or non-increasing.
        level: confidence level of the intervals (default 0.95).
    """

    name = "property"
    title = "Decision stability along transforms"
    description = (
        "Proves or refutes that the predicted class is kept on the whole segment from each input "
        "to its darkened, brightened, contrast-changed or blurred copy."
    )
    needs_data = True
    needs_gradients = True
    needs_architecture = True
    headline = ("stable_fraction", "unstable_fraction")
    quick_settings: ClassVar[Mapping[str, Any]] = {
        "transforms": ("darken:0.3", "blur:1.0"),
        "max_samples": 12,
        "methods": ("crown",),
        "bab_budget_s": 0.0,
    }

    def __init__(
        self,
        *,
        transforms: Sequence[str] = (
            "darken:0.1",
            "brightness:0.05",
            "contrast:0.9:1.1",
            "blur:0.5",
        ),
        max_samples: int | None = 20,
        methods: Sequence[str] | Literal["auto"] = AUTO,
        bab_budget_s: float | Literal["auto"] = AUTO,
        grid: int = 33,
        monotone_features: Sequence[int] = (),
        monotone_output: int = 0,
        monotone_increasing: bool = True,
        level: float = 0.95,
    ) -> None:
        super().__init__(
            transforms=list(transforms),
            max_samples=max_samples,
            methods=methods if methods == AUTO else list(methods),
            bab_budget_s=bab_budget_s,
            grid=grid,
            monotone_features=list(monotone_features),
            monotone_output=monotone_output,
            monotone_increasing=monotone_increasing,
            level=level,
        )
        self.monotone_features = tuple(int(j) for j in monotone_features)
        self.monotone_output = int(monotone_output)
        self.monotone_increasing = bool(monotone_increasing)
        if not transforms:
            raise OptionError("transforms", "no transform given", "use e.g. darken:0.3")
        self.transforms = tuple((t, *parse_transform(t)) for t in transforms)
        self.max_samples = max_samples
        self.methods: tuple[str, ...] | Literal["auto"] = (
            AUTO if methods == AUTO else tuple(methods)
        )
        self.bab_budget_s: float | Literal["auto"] = (
            AUTO if bab_budget_s == AUTO else float(bab_budget_s)
        )
        self.grid = int(grid)
        self.level = float(level)

    def plan(
        self, ctx: AuditContext, segments: int
    ) -> tuple[tuple[str, ...], float, Finding | None]:
        """Methods and branch-and-bound budget; with ``"auto"``, CROWN and 0.25 s of
        branch-and-bound per segment when CROWN's back-substitution over the segments fits the
        work budget (:func:`~edgeproof.checks.certify.crown_macs`), else CROWN-IBP without
        branch-and-bound, and a finding that says so."""
        module = ctx.model.module
        assert module is not None
        per = 0
        if AUTO in (self.methods, self.bab_budget_s):
            shape = ctx.threat.input.shape
            try:
                graph = trace(module, shape)
            except OptionError:  # segment_stability names the op it cannot bound
                graph = None
            per = crown_macs(module, shape, graph)
        fits = per * segments <= certify_budget()
        methods = (("crown",) if fits else ("crown-ibp",)) if self.methods == AUTO else self.methods
        bab = (0.25 if fits else 0.0) if self.bab_budget_s == AUTO else self.bab_budget_s
        if fits or (self.methods != AUTO and self.bab_budget_s != AUTO):
            return methods, bab, None
        return (
            methods,
            bab,
            Finding(
                "info",
                f"segments bounded by {', '.join(methods)}"
                + ("" if bab else " without branch-and-bound")
                + f": CROWN costs about {per / 1e9:.3g} G MACs per segment ({segments} segments), "
                f"beyond the default work budget; pass {param('property.methods')}=crown and "
                f"{param('property.bab_budget_s')}=0.25 for the tighter (slower) proof",
                {"crown_macs_per_segment": per, "segments": segments},
            ),
        )

    def run(self, ctx: AuditContext) -> CheckResult:
        ad = attack_data(ctx, self.max_samples)
        module = ad.gradient_model()
        res = self.new_result()
        methods, bab_budget_s, note = self.plan(ctx, int(ad.x.shape[0]) * len(self.transforms))
        if note is not None:
            res.findings.append(note)
        counts: dict[str, dict[str, int]] = {}
        verdicts: dict[str, list[PropertyResult]] = {}
        skipped: list[str] = []
        for label, kind, params in self.transforms:
            if kind == "blur" and ad.x.dim() not in (3, 4):
                skipped.append(label)
                continue
            segs = _segments(kind, params, ad.x, ad.domain)
            out = segment_stability(
                module,
                segs,
                labels=ad.y,
                methods=methods,
                grid=self.grid,
                bab_budget_s=bab_budget_s,
                seed=ctx.seed,
            )
            verdicts[label] = out
            counts[label] = {v: sum(r.verdict == v for r in out) for v in _VERDICTS}
        n = int(ad.x.shape[0])
        res.settings.update(
            samples=n,
            domain=list(ad.domain),
            skipped_transforms=skipped,
            methods_used=list(methods),
            bab_budget_s_used=bab_budget_s,
        )
        res.metrics.extend(self._metrics(counts, n))
        res.tables.append(self._table(counts, verdicts, n))
        res.tables.append(self._samples(verdicts, ad.index))
        res.findings.extend(self._findings(counts, verdicts, skipped, n))
        res.figures.append(_figure(counts, n))
        if self.monotone_features:
            self._monotone(res, module, ad.x, ad.domain, ctx.seed, methods, bab_budget_s)
        worst = min(counts, key=lambda k: counts[k]["verified"]) if counts else None
        res.summary = (
            f"correct and stable on every transform segment: {_all_stable(verdicts, n)} of {n}"
            + (f"; least stable: {worst}" if worst else "")
        )
        return res

    def _monotone(
        self,
        res: CheckResult,
        module: torch.nn.Module,
        x: torch.Tensor,
        domain: Any,
        seed: int,
        methods: tuple[str, ...],
        bab_budget_s: float,
    ) -> None:
        lo = torch.full(tuple(x.shape[1:]), float(domain[0]))
        hi = torch.full(tuple(x.shape[1:]), float(domain[1]))
        r = monotonicity(
            module,
            lo,
            hi,
            self.monotone_features,
            self.monotone_output,
            increasing=self.monotone_increasing,
            methods=methods,
            bab_budget_s=bab_budget_s,
            seed=seed,
        )
        way = "non-decreasing" if self.monotone_increasing else "non-increasing"
        claim = (
            f"output {self.monotone_output} {way} in features {list(self.monotone_features)} "
            f"over the domain box [{domain[0]:g}, {domain[1]:g}]^n (tolerance 1e-5)"
        )
        value = {"verified": 1.0, "falsified": 0.0}.get(r.verdict, float("nan"))
        res.metrics.append(
            Metric(
                "monotone",
                value,
                unit="verdict",
                description=f"1 proved, 0 refuted, NaN unknown: {claim}",
                higher_is_better=True,
                settings={"features": list(self.monotone_features), "output": self.monotone_output},
            )
        )
        row: list[Any] = [claim, r.verdict, r.decided_by, round(r.lower_bound, 6)]
        if r.counterexample is not None:
            a, b = r.counterexample
            changed = [int(j) for j in np.flatnonzero(np.abs(b - a).reshape(-1) > 0)]
            row.append(
                ", ".join(
                    f"x[{j}] {a.reshape(-1)[j]:.4g} → {b.reshape(-1)[j]:.4g}" for j in changed
                )
            )
            res.findings.append(
                Finding(
                    "warning",
                    f"not monotone: {claim} is refuted by a checked pair (the output moves the "
                    f"wrong way by {-((r.margin or 0.0) - 1e-5):.4g})",
                    {"pair": row[-1]},
                )
            )
        else:
            row.append("")
        res.tables.append(
            Table(
                "monotonicity",
                "Monotonicity",
                ["claim", "verdict", "decided by", "lower bound", "counterexample"],
                [row],
                description="lower bound: proved min of the output change plus the tolerance over "
                "the two-copy graph (> 0 verifies); counterexample: the pair, checked by a forward "
                "pass",
            )
        )

    def _metrics(self, counts: dict[str, dict[str, int]], n: int) -> list[Metric]:
        out: list[Metric] = []
        for label, c in counts.items():
            for v, name, better in (
                ("verified", "stable_fraction", True),
                ("falsified", "unstable_fraction", False),
            ):
                out.append(
                    Metric(
                        f"{name}.{label}",
                        c[v] / n,
                        unit="fraction",
                        ci=wilson_interval(c[v], n, self.level),
                        description=f"samples {'proved' if better else 'shown (counterexample)'} "
                        f"{'' if better else 'not '}to keep their class along {label} (correct "
                        "at t=0 and the label predicted on the whole segment)",
                        higher_is_better=better,
                        settings={"transform": label, "samples": n},
                    )
                )
        if counts:
            k_ver = min(c["verified"] for c in counts.values())
            k_fal = max(c["falsified"] for c in counts.values())
            out.append(
                Metric(
                    "stable_fraction",
                    k_ver / n,
                    unit="fraction",
                    ci=wilson_interval(k_ver, n, self.level),
                    description="the smallest proved-stable fraction over the transforms",
                    higher_is_better=True,
                )
            )
            out.append(
                Metric(
                    "unstable_fraction",
                    k_fal / n,
                    unit="fraction",
                    ci=wilson_interval(k_fal, n, self.level),
                    description="the largest refuted fraction over the transforms "
                    "(misclassified at t=0 included)",
                    higher_is_better=False,
                )
            )
        return out

    def _table(
        self, counts: dict[str, dict[str, int]], verdicts: dict[str, list[PropertyResult]], n: int
    ) -> Table:
        rows: list[list[Any]] = []
        for label, c in counts.items():
            by: dict[str, int] = {}
            for r in verdicts[label]:
                if r.decided_by:
                    by[r.decided_by] = by.get(r.decided_by, 0) + 1
            rows.append(
                [
                    label,
                    c["verified"],
                    c["falsified"],
                    c["unknown"],
                    ", ".join(f"{k} {v}" for k, v in by.items()),
                    round(float(np.mean([r.time_s for r in verdicts[label]])), 6),
                    n,
                ]
            )
        return Table(
            "transforms",
            "Verdicts per transform",
            ["transform", "verified", "falsified", "unknown", "decided by", "s/sample", "n"],
            rows,
            description="segment from each input to its transformed copy (clipped to the domain); "
            "verified: the label is predicted on the whole segment (proved); falsified: "
            "misclassified at t=0, or a point of the segment checked by a forward pass",
        )

    def _samples(self, verdicts: dict[str, list[PropertyResult]], index: np.ndarray) -> Table:
        labels = list(verdicts)
        rows: list[list[Any]] = []
        for i in range(len(index)):
            row: list[Any] = [int(index[i])]
            for label in labels:
                r = verdicts[label][i]
                row.append(r.verdict if r.t is None else f"{r.verdict} (t={r.t:.3g})")
            rows.append(row)
        return Table(
            "samples",
            "Per-sample verdicts",
            ["sample", *labels],
            rows,
            description="t: where on the segment a counterexample was found (grid search)",
        )

    def _findings(
        self,
        counts: dict[str, dict[str, int]],
        verdicts: dict[str, list[PropertyResult]],
        skipped: list[str],
        n: int,
    ) -> list[Finding]:
        out: list[Finding] = []
        for label, c in counts.items():
            broken = [
                r
                for r in verdicts[label]
                if r.verdict == "falsified" and r.decided_by != "misclassified"
            ]
            if broken:
                ts = sorted(r.t for r in broken if r.t is not None)
                out.append(
                    Finding(
                        "warning",
                        f"{len(broken)} of {n} correctly classified samples change their class "
                        f"along {label}"
                        + (f" (first at t={ts[0]:.3g})" if ts else "")
                        + ": the model is not consistent under this transform",
                        {"transform": label, "falsified": len(broken), "n": n},
                    )
                )
            if c["unknown"] > 0.2 * n:
                out.append(
                    Finding(
                        "info",
                        f"{c['unknown']} of {n} samples are undecided along {label}: a larger "
                        "bab_budget_s or alpha-crown may decide more",
                        {"transform": label, "unknown": c["unknown"]},
                    )
                )
        if skipped:
            out.append(
                Finding(
                    "info",
                    f"not applicable to this input kind (blur needs images or time series): "
                    f"{', '.join(skipped)}",
                    {"skipped": skipped},
                )
            )
        return out


_VERDICTS = ("verified", "falsified", "unknown")


def _all_stable(verdicts: dict[str, list[PropertyResult]], n: int) -> int:
    if not verdicts:
        return 0
    return sum(all(v[i].verdict == "verified" for v in verdicts.values()) for i in range(n))


def _figure(counts: dict[str, dict[str, int]], n: int) -> Figure:
    labels = list(counts)
    ver = np.array([counts[k]["verified"] for k in labels], dtype=float) / max(1, n)
    unk = np.array([counts[k]["unknown"] for k in labels], dtype=float) / max(1, n)
    fal = np.array([counts[k]["falsified"] for k in labels], dtype=float) / max(1, n)

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import GREEN, GREY, VERMILLION

        chart = Chart(
            560,
            300,
            x=Axis("transform", scale="category", categories=tuple(labels), grid=False),
            y=Axis("fraction of samples", limits=(0, 1)),
        )
        chart.bars(labels, ver, color=GREEN, label="verified")
        chart.bars(labels, unk, bottom=ver, color=GREY, opacity=0.6, label="unknown")
        chart.bars(labels, fal, bottom=ver + unk, color=VERMILLION, opacity=0.8, label="falsified")
        return chart.svg()

    return Figure(
        "transforms",
        "Stability along transforms",
        draw,
        description=f"stacked fractions of {n} samples per transform segment",
    )

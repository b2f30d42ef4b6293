"""The ``bitflip`` check: how few weight sign flips break the model (DNL / 1P-DNL), and protection.

Method and sources in :mod:`edgeproof.methods.dnl`. With data the damage is the accuracy
reduction ``AR(k) = (acc_clean − acc_k) / acc_clean`` in % (the paper's relative definition);
without data it is the top-1 change rate (%) on seeded random inputs drawn uniformly from the
input specification's domain, with the mean KL divergence alongside. Every flip is applied to a
copy of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleCount, SampleSetting, forward_macs, resolve_samples
from edgeproof.errors import OptionError
from edgeproof.methods.dnl import (
    CandidateSet,
    apply_flips,
    ar_curve,
    candidate_set,
    kl_and_flip_rate,
    protect_set,
    random_flips,
    select_flips,
    validate_budget,
)
from edgeproof.results import CheckResult, Figure, Finding, Interval, JSONScalar, Metric, Table

__all__ = ["DEFAULT_BUDGETS", "BitflipCheck"]

DEFAULT_BUDGETS: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)


#: the damage measures spelled out where they are shown
_LABELS = {"AR": "accuracy reduction AR = (acc_clean − acc_k)/acc_clean"}


@dataclass(frozen=True)
class _Curves:
    """Damage (%) after k = 1..max_k flips.

    Attributes:
        curves: ``"DNL"``, ``"1P-DNL"`` and ``"random (mean)"``, one value per k.
        rand: the random flips' curves, one row per seed.
        rand_sd: their standard deviation per k (zeros with one seed).
    """

    curves: dict[str, list[float]]
    rand: np.ndarray
    rand_sd: np.ndarray


def _forward(module: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    outs = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            outs.append(module(x[i : i + batch]).float())
    return torch.cat(outs)


class BitflipCheck(Check):
    """DNL and 1P-DNL sign-flip attacks vs random flips, per-layer fragility, protect sets."""

    name = "bitflip"
    title = "Sign-bit flip fragility (Deep Neural Lesion)"
    headline = ("dnl_ar_10", "onep_dnl_ar_10", "random_ar_10")
    quick_settings: ClassVar[Mapping[str, Any]] = {
        "random_seeds": 2,
        "eval_samples": 48,
        "noise_samples": 32,
        "budgets": (1e-3,),
    }
    description = (
        "Data-free sign-flip attack on the largest/most sensitive weights (Galil et al. 2025, "
        "DNL and 1P-DNL) against random flips, and the effect of protecting top-scored bits."
    )
    needs_gradients = True

    def __init__(
        self,
        num_layers: int = 10,
        max_k: int = 10,
        random_seeds: int = 5,
        budgets: Sequence[float] = DEFAULT_BUDGETS,
        eval_samples: SampleSetting = AUTO,
        noise_samples: int = 256,
        protect_out: str | Path | None = None,
        protect_budget: float = 1e-4,
    ) -> None:
        for b in budgets:
            validate_budget(b, "bitflip.budgets")
        validate_budget(protect_budget)
        if max_k < 1:
            raise OptionError("bitflip.max_k", f"{max_k} flips", "use 1 or more")
        if num_layers < 1:
            raise OptionError("bitflip.num_layers", f"{num_layers} layers", "use 1 or more")
        super().__init__(
            num_layers=num_layers,
            max_k=max_k,
            random_seeds=random_seeds,
            budgets=list(budgets),
            eval_samples=eval_samples,
            noise_samples=noise_samples,
            protect_out=None if protect_out is None else str(protect_out),
            protect_budget=protect_budget,
        )
        self.num_layers = num_layers
        self.max_k = max_k
        self.random_seeds = random_seeds
        self.budgets = tuple(budgets)
        self.eval_samples = eval_samples
        self.noise_samples = noise_samples
        self.protect_out = protect_out
        self.protect_budget = protect_budget

    # ------------------------------------------------------------------ damage measure
    def _damage(
        self, ctx: AuditContext, module: nn.Module
    ) -> tuple[Callable[[nn.Module], float], str, dict[str, Any]]:
        """``damage(model) → %`` and its description."""
        spec = ctx.model.spec or ctx.threat.input
        if ctx.data is not None:
            evaluations = len(range(self.max_k)) * (2 + self.random_seeds + len(self.budgets))
            count = resolve_samples(
                ctx,
                self.eval_samples,
                len(ctx.data),
                passes=evaluations + 2 * self.num_layers,
                setting="eval_samples",
            )
            n = count.n
            x = ctx.model.preprocess(torch.as_tensor(ctx.data.x[:n]))
            y = torch.as_tensor(ctx.data.y[:n])
            clean_acc = float((_forward(module, x, ctx.batch_size).argmax(1) == y).float().mean())

            def damage(m: nn.Module) -> float:
                out = _forward(m, x, ctx.batch_size)
                ok = torch.isfinite(out).all(1) & (out.argmax(1) == y)
                acc = float(ok.float().mean())
                return 100.0 * (clean_acc - acc) / clean_acc if clean_acc > 0 else 0.0

            info = {
                "measure": "accuracy reduction AR(k) = (acc_clean − acc_k)/acc_clean",
                "samples": n,
                "samples_rule": count.rule,
                "clean_accuracy": clean_acc,
            }
            return damage, "AR", info
        g = ctx.generator(salt=0xB17)
        lo, hi = spec.domain
        x = lo + (hi - lo) * torch.rand((self.noise_samples, *spec.shape), generator=g)
        x = ctx.model.preprocess(x)
        clean = _forward(module, x, ctx.batch_size)

        def disruption(m: nn.Module) -> float:
            rate, _ = kl_and_flip_rate(clean, _forward(m, x, ctx.batch_size))
            return 100.0 * rate

        info = {
            "measure": "top-1 change rate on uniform random inputs in the domain",
            "samples": self.noise_samples,
            "domain": list(spec.domain),
        }
        self._kl_inputs = (x, clean)
        return disruption, "top-1 change", info

    def run(self, ctx: AuditContext) -> CheckResult:
        # the user's network (outside normalisation applied to its inputs below), so that the
        # flipped tensors carry the model's own parameter names
        module = ctx.model.network
        assert module is not None  # needs_gradients guarantees a module (loaded in eval mode)
        spec = ctx.model.spec or ctx.threat.input
        res = self.new_result()
        measure, label, info = self._damage(ctx, module)
        res.settings.update(info)
        if ctx.data is not None:
            note = SampleCount(
                int(info["samples"]), len(ctx.data), str(info["samples_rule"]), forward_macs(ctx)
            ).finding(self.name, "eval_samples")
            if note is not None:
                res.findings.append(note)
        ks = list(range(1, self.max_k + 1))
        c_dnl = candidate_set(module, kind="dnl", num_layers=self.num_layers)
        c_1p = candidate_set(
            module,
            kind="1p-dnl",
            num_layers=self.num_layers,
            input_shape=spec.shape,
            normalization=spec.normalization,
            seed=ctx.seed,
        )
        res.settings["candidate_tensors"] = c_dnl.order
        res.settings["candidates"] = c_dnl.num_candidates
        # progress: one step per evaluation of the flipped model (each k of each curve, each
        # layer of the per-layer table, each k of each protection budget)
        ctx.progress.start(
            len(ks) * (2 + self.random_seeds + len(self.budgets)) + 2 * len(c_dnl.order),
            "bit flips",
        )

        def damage(m: nn.Module) -> float:
            value = measure(m)
            ctx.progress.advance()
            return value

        flips = self._curves(module, c_dnl, c_1p, damage, ks, ctx.seed)
        curves, rand_sd = flips.curves, flips.rand_sd
        res.metrics.extend(self._curve_metrics(flips, label))
        if label != "AR":
            res.metrics.append(self._kl_metric(module, c_1p, ctx.batch_size))
        res.tables.append(_curve_table(ks, flips, label))
        res.tables.append(self._per_layer(module, c_dnl, c_1p, damage, label))
        res.tables.append(self._protection(module, c_1p, damage, label, ks, res))
        res.figures.append(_curve_figure(ks, curves, rand_sd, label))
        worst = curves["1P-DNL"][-1]
        if worst >= 50:
            res.findings.append(
                Finding(
                    "critical" if curves["1P-DNL"][0] >= 50 else "warning",
                    f"{self.max_k} sign flips in the first {len(c_dnl.order)} weight layers cause "
                    f"{worst:.1f}% {label} (random flips: {curves['random (mean)'][-1]:.1f}%); "
                    "protect the top-scored sign bits (protection table; `edgeproof protect`)",
                    {"k": self.max_k, "onep_dnl": worst},
                )
            )
        res.summary = (
            f"{_LABELS.get(label, label)}({self.max_k}): DNL {curves['DNL'][-1]:.1f}%, "
            f"1P-DNL {worst:.1f}%, random {curves['random (mean)'][-1]:.1f}%"
        )
        if self.protect_out is not None:
            ps = protect_set(c_1p, self.protect_budget)
            path = ps.save(self.protect_out)
            res.settings["protect_file"] = str(path)
        return res

    def _curves(
        self,
        module: nn.Module,
        c_dnl: CandidateSet,
        c_1p: CandidateSet,
        damage: Callable[[nn.Module], float],
        ks: list[int],
        seed: int,
    ) -> _Curves:
        """The damage after k = 1..max_k flips: DNL, 1P-DNL, and random flips (one curve per
        seed, their mean and sd)."""
        curves: dict[str, list[float]] = {}
        curves["DNL"] = ar_curve(module, select_flips(c_dnl, self.max_k), damage, ks)
        curves["1P-DNL"] = ar_curve(module, select_flips(c_1p, self.max_k), damage, ks)
        rand = np.array(
            [
                ar_curve(module, random_flips(c_dnl, self.max_k, seed * 7919 + s), damage, ks)
                for s in range(self.random_seeds)
            ]
        )
        curves["random (mean)"] = rand.mean(0).tolist()
        rand_sd = rand.std(0, ddof=1) if self.random_seeds > 1 else np.zeros(len(ks))
        return _Curves(curves, rand, rand_sd)

    def _curve_metrics(self, flips: _Curves, label: str) -> list[Metric]:
        """DNL and 1P-DNL damage after 1 and ``max_k`` flips, and random flips' after
        ``max_k`` (mean ± 1 sd over the seeds)."""
        curves, rand, rand_sd = flips.curves, flips.rand, flips.rand_sd
        out: list[Metric] = []
        unit = "%"
        for key, tag in (("DNL", "dnl"), ("1P-DNL", "onep_dnl")):
            for k in (1, self.max_k):
                out.append(
                    Metric(
                        f"{tag}_{'ar' if label == 'AR' else 'disruption'}_{k}",
                        curves[key][k - 1],
                        unit,
                        description=f"{_LABELS.get(label, label)} after the top-{k} {key} "
                        "sign flips",
                        higher_is_better=False,
                        settings={"k": k, "score": key},
                    )
                )
        lo_ci = float(rand.mean(0)[-1] - rand_sd[-1])
        hi_ci = float(rand.mean(0)[-1] + rand_sd[-1])
        out.append(
            Metric(
                f"random_{'ar' if label == 'AR' else 'disruption'}_{self.max_k}",
                float(rand.mean(0)[-1]),
                unit,
                ci=Interval(
                    lo_ci, hi_ci, level=0.68, method=f"mean ± 1 sd over {self.random_seeds} seeds"
                ),
                description=f"{_LABELS.get(label, label)} after {self.max_k} random sign "
                "flips (baseline)",
            )
        )
        return out

    def _kl_metric(self, module: nn.Module, c_1p: CandidateSet, batch: int) -> Metric:
        """Without data: the mean KL divergence of the outputs after the 1P-DNL flips."""
        x, clean = self._kl_inputs
        work_flips = select_flips(c_1p, self.max_k)
        _, kl = kl_and_flip_rate(clean, _forward(apply_flips(module, work_flips), x, batch))
        return Metric(
            f"onep_dnl_kl_{self.max_k}",
            kl,
            "nats",
            description="mean KL(p_clean ‖ p_flipped) after 1P-DNL flips",
        )

    def _per_layer(
        self,
        module: nn.Module,
        c_dnl: CandidateSet,
        c_1p: CandidateSet,
        damage: Callable[[nn.Module], float],
        label: str,
    ) -> Table:
        rows: list[list[JSONScalar]] = []
        for name in c_dnl.order:
            d = ar_curve(module, select_flips(c_dnl, self.max_k, only=name), damage, [self.max_k])[
                0
            ]
            p = ar_curve(module, select_flips(c_1p, self.max_k, only=name), damage, [self.max_k])[0]
            rows.append([name, int(c_dnl.scores[name].numel()), round(d, 3), round(p, 3)])
        return Table(
            "per_layer",
            f"Per-layer fragility: {label} (%) of top-{self.max_k} flips restricted to one layer",
            ["tensor", "parameters", "DNL", "1P-DNL"],
            rows,
        )

    def _protection(
        self,
        module: nn.Module,
        c_1p: CandidateSet,
        damage: Callable[[nn.Module], float],
        label: str,
        ks: list[int],
        res: CheckResult,
    ) -> Table:
        rows: list[list[JSONScalar]] = []
        tag = "ar" if label == "AR" else "disruption"
        for b in self.budgets:
            ps = protect_set(c_1p, b)
            curve = ar_curve(
                module, select_flips(c_1p, self.max_k, protected=ps.by_tensor()), damage, ks
            )
            rows.append([f"{100 * b:g}%", len(ps.bits), *[round(v, 3) for v in curve]])
            res.metrics.append(
                Metric(
                    f"protected_{tag}_{self.max_k}_budget_{b:g}",
                    curve[-1],
                    "%",
                    description=f"1P-DNL {label}({self.max_k}) when the top {100 * b:g}% "
                    "of parameters' sign bits are protected",
                    settings={"budget": b},
                )
            )
        return Table(
            "protection",
            f"1P-DNL {label} (%) with protected sign bits",
            ["budget", "protected bits", *[f"k={k}" for k in ks]],
            rows,
            "protected bits: top 1P-DNL scores, ⌈budget × all parameters⌉; the attacker skips them",
        )


def _curve_table(ks: list[int], flips: _Curves, label: str) -> Table:
    curves, rand_sd = flips.curves, flips.rand_sd
    return Table(
        "curve",
        f"{label} (%) after k sign flips",
        ["k", "DNL", "1P-DNL", "random mean", "random sd"],
        [
            [
                k,
                round(curves["DNL"][i], 3),
                round(curves["1P-DNL"][i], 3),
                round(curves["random (mean)"][i], 3),
                round(float(rand_sd[i]), 3),
            ]
            for i, k in enumerate(ks)
        ],
    )


def _curve_figure(
    ks: list[int], curves: dict[str, list[float]], sd: np.ndarray, label: str
) -> Figure:
    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import BLUE, GREY, ORANGE

        r = np.array(curves["random (mean)"], dtype=float)
        chart = Chart(
            600,
            340,
            x=Axis("number of sign flips k", integer=True),
            y=Axis(f"{label} (%)"),
        )
        chart.band(ks, r - sd, r + sd, color=GREY, opacity=0.22, label="random: ±1 sd over seeds")
        chart.line(ks, r, color=GREY, dash="dashed", marker="triangle", label="random (mean)")
        chart.line(ks, curves["DNL"], color=BLUE, marker="circle", label="DNL")
        chart.line(ks, curves["1P-DNL"], color=ORANGE, marker="square", label="1P-DNL")
        chart.legend(order=("DNL", "1P-DNL", "random (mean)"))
        return chart.svg()

    return Figure(
        "curve",
        f"{label} vs number of sign flips",
        draw,
        "DNL / 1P-DNL targeted flips vs random flips (band: ±1 sd over seeds)",
    )

"""Benchmark: bound agreement with auto_LiRPA 0.7.1, time per sample, verified counts on digits.

Three parts, each one run of a few minutes (``--part``; results are kept in
``docs/benchmarks/certify.json`` and ``docs/benchmarks/certify.md`` is rewritten from them):

* ``agreement`` — on seeded models (the 4-16-16-3 MLP of the issue, a digits-sized MLP, a 28×28
  CNN with 2 conv + 2 linear layers, the digits LeNet-5, a ResNet-8), IBP and CROWN lower and
  upper bounds of the margins ``f_y − f_j`` over L∞ balls clipped to [0, 1] must agree with
  auto_LiRPA to 1e-5 (relative to the bounds' scale); α-CROWN bounds at equal iterations
  (20, auto_LiRPA's defaults; ours with ``intermediate=True``, which is what auto_LiRPA's
  ``alpha-CROWN`` optimises) are reported side by side — ours should be at least as tight.
* ``speed`` — seconds per sample of CROWN and α-CROWN (lower bounds of the margins), one thread
  for both, medians of interleaved repeats, on the digits LeNet-5, the 28×28 CNN and ResNet-8
  (α-CROWN on ResNet-8: one sample, one interleaved run without warm-up, minutes each).
  auto_LiRPA is timed per sample (batch 1, the setting whose bounds are ours exactly) and on the
  whole batch; the ratio uses its faster one. Model construction (tracing / ``BoundedModule``)
  is done once, outside the timings.
* ``digits`` / ``digits-mlp`` — verified / falsified / unknown counts of the digits LeNet-5 / the
  digits MLP on the first samples of the digits test split at several ε, with CROWN + α-CROWN
  and then with branch-and-bound.

Normalisation lives inside our models (the zoo's ``Normalize``); auto_LiRPA crashes on it
(``_multiply_by_const``), so it gets the model without that layer and the equivalent box in
normalised units (the same set). Max-pool models use auto_LiRPA's ``conv_mode='matrix'`` (its
patches mode cannot optimise max-pool α).

This script installs nothing. auto_LiRPA (its public repository at 0.7.1) and its small
dependencies must be importable, e.g.::

    pip install --no-deps --target /work/peers/site-certify appdirs graphviz
    PYTHONPATH=src:/work/peers/auto_LiRPA:/work/peers/site-certify \\
        python benchmarks/bench_certify.py --part agreement

Without auto_LiRPA it prints how to get it and exits, leaving the results as they are.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeproof.certify import (
    AlphaSettings,
    certify_model,
    compute_bounds,
    linf_ball,
    margin_spec,
    trace,
)
from edgeproof.data.loading import load_data
from edgeproof.models.train import train_model
from edgeproof.models.zoo import Normalize, build_model

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "certify.md"
OUT_JSON = ROOT / "docs" / "benchmarks" / "certify.json"


# --------------------------------------------------------------------------------------------
# models


def mlp_issue() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).eval()


def _digits(
    size: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train, test = load_data("builtin:digits/train"), load_data("builtin:digits")

    def up(x: np.ndarray) -> torch.Tensor:
        t = F.interpolate(
            torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False
        )
        return t.clamp(0, 1).repeat(1, channels, 1, 1)

    return up(train.x), torch.from_numpy(train.y), up(test.x), torch.from_numpy(test.y)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    """A few epochs of Adam (lr 3e-3, batch 64, seed 0): realistic weights, quickly."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def cnn28() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """2 conv + 2 linear (auto_LiRPA's ``cnn_4layer`` shape) on digits upsampled to 28×28."""
    xtr, ytr, xte, yte = _digits(28, 1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    return _fit(model, xtr, ytr, 3), xte, yte


def resnet8() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Zoo ResNet-8 (BatchNorm, option-B shortcuts) on digits upsampled to 3×16×16."""
    xtr, ytr, xte, yte = _digits(16, 3)
    torch.manual_seed(0)
    model = build_model("resnet8", (3, 16, 16), 10, ((0.3, 0.3, 0.3), (0.3, 0.3, 0.3)))
    return _fit(model, xtr, ytr, 3), xte, yte


def lenet5() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The tests' digits LeNet-5 (tests/conftest.py: 20 epochs, seed 0, Adam lr 3e-3)."""
    train, test = load_data("builtin:digits/train"), load_data("builtin:digits")
    model = train_model("zoo:lenet5", train, epochs=20, seed=0, lr=3e-3)
    return model.eval(), torch.from_numpy(test.x), torch.from_numpy(test.y)


def digits_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    train, test = load_data("builtin:digits/train"), load_data("builtin:digits")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    model = _fit(net, torch.from_numpy(train.x), torch.from_numpy(train.y), 10)
    return model, torch.from_numpy(test.x), torch.from_numpy(test.y)


# --------------------------------------------------------------------------------------------
# auto_LiRPA side


def import_auto_lirpa() -> Any:
    try:
        import auto_LiRPA
    except ImportError:
        return None
    return auto_LiRPA


def strip_normalize(model: nn.Module) -> tuple[nn.Module, Normalize | None]:
    """The model without its leading ``Normalize`` (auto_LiRPA cannot bound it) and that layer."""
    if isinstance(model, nn.Sequential) and isinstance(model[0], Normalize):
        return nn.Sequential(*list(model.children())[1:]).eval(), model[0]
    norm = getattr(model, "normalize", None)
    if isinstance(norm, Normalize):
        m2: nn.Module = copy.deepcopy(model)
        m2.normalize = nn.Identity()
        return m2.eval(), norm
    return model, None


class Peer:
    """auto_LiRPA on one model: built once per batch size, bounds over the clipped L∞ box."""

    def __init__(self, al: Any, model: nn.Module, example: torch.Tensor, matrix: bool) -> None:
        self.al = al
        self.model, self.norm = strip_normalize(model)
        self.matrix = matrix
        self.example = example
        self._built: dict[tuple[int, int], Any] = {}

    def _module(self, batch: int, iterations: int) -> Any:
        key = (batch, iterations)
        if key not in self._built:
            opts: dict[str, Any] = {
                "verbosity": 0,
                "optimize_bound_args": {"iteration": iterations},
            }
            if self.matrix:
                opts["conv_mode"] = "matrix"
            ex = self.example[:1].expand(batch, *self.example.shape[1:]).contiguous()
            if self.norm is not None:
                ex = self.norm(ex)
            self._built[key] = self.al.BoundedModule(self.model, ex, device="cpu", bound_opts=opts)
        return self._built[key]

    def bounds(
        self,
        x: torch.Tensor,
        eps: float,
        spec: torch.Tensor,
        method: str,
        *,
        upper: bool,
        iterations: int = 20,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        xc = x
        if self.norm is not None:
            lo, hi, xc = self.norm(lo), self.norm(hi), self.norm(x)
        bm = self._module(int(x.shape[0]), iterations)
        ptb = self.al.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
        bx = self.al.BoundedTensor(xc, ptb)
        lb, ub = bm.compute_bounds(x=(bx,), C=spec, method=method, bound_upper=upper)
        return lb.detach(), (ub.detach() if upper else None)


# --------------------------------------------------------------------------------------------
# parts


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (1 + torch.maximum(a.abs(), b.abs()).max()))


def part_agreement(al: Any) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    torch.manual_seed(0)
    issue = mlp_issue()
    x = torch.rand(1, 4)
    g = trace(issue, (4,))
    s = linf_ball(x, 0.3, (-10.0, 10.0))
    widths_ours: dict[str, float] = {}
    widths_peer: dict[str, float] = {}
    bm = al.BoundedModule(issue, torch.zeros(1, 4), device="cpu", bound_opts={"verbosity": 0})
    for ours, theirs in (
        ("ibp", "IBP"),
        ("crown-ibp", "CROWN-IBP"),
        ("crown", "CROWN"),
        ("alpha-crown", "alpha-CROWN"),
    ):
        r = compute_bounds(g, s, None, ours, upper=True, alpha=AlphaSettings(intermediate=True))  # type: ignore[arg-type]
        assert r.upper is not None
        widths_ours[ours] = float((r.upper - r.lower).sum())
        bx = al.BoundedTensor(x, al.PerturbationLpNorm(norm=float("inf"), eps=0.3))
        lb, ub = bm.compute_bounds(x=(bx,), method=theirs)
        widths_peer[ours] = float((ub - lb).sum())
    issue_row = {"ours": widths_ours, "auto_lirpa": widths_peer}
    print("issue MLP widths", issue_row, flush=True)

    cases: list[
        tuple[str, Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]], float, int, bool]
    ] = [
        ("digits MLP 64-64-32-10", digits_mlp, 0.02, 4, False),
        ("28×28 CNN (2 conv + 2 linear)", cnn28, 0.01, 3, False),
        ("digits LeNet-5 (max pools)", lenet5, 0.01, 3, True),
        ("ResNet-8, 3×16×16", resnet8, 0.003, 2, False),
    ]
    for name, build, eps, n, matrix in cases:
        model, xte, _ = build()
        x = xte[:n]
        with torch.no_grad():
            pred = model(x).argmax(1)
        spec = margin_spec(pred, 10)
        g = trace(model, tuple(x.shape[1:]))
        peer = Peer(al, model, x, matrix)
        row: dict[str, Any] = {"model": name, "eps": eps, "samples": n}
        for ours, theirs in (("ibp", "IBP"), ("crown", "CROWN")):
            r = compute_bounds(g, linf_ball(x, eps), spec, ours, upper=True)  # type: ignore[arg-type]
            assert r.upper is not None
            lbs, ubs = [], []
            for i in range(n):
                lb, ub = peer.bounds(x[i : i + 1], eps, spec[i : i + 1], theirs, upper=True)
                assert ub is not None
                lbs.append(lb)
                ubs.append(ub)
            lb_t, ub_t = torch.cat(lbs), torch.cat(ubs)
            row[f"{ours}_rel_diff"] = max(_rel(r.lower, lb_t), _rel(r.upper, ub_t))
            row[f"{ours}_lower_sum"] = float(r.lower.sum())
        # α-CROWN, 20 iterations both, lower bounds
        t0 = time.perf_counter()
        ra = compute_bounds(
            g,
            linf_ball(x, eps),
            spec,
            "alpha-crown",
            alpha=AlphaSettings(iterations=20, intermediate=True),
        )
        t_ours = time.perf_counter() - t0
        rf = compute_bounds(
            g, linf_ball(x, eps), spec, "alpha-crown", alpha=AlphaSettings(iterations=20)
        )
        t0 = time.perf_counter()
        lbs = [
            peer.bounds(x[i : i + 1], eps, spec[i : i + 1], "alpha-CROWN", upper=False)[0]
            for i in range(n)
        ]
        t_peer = time.perf_counter() - t0
        la = torch.cat(lbs)
        row.update(
            alpha_ours_sum=float(ra.lower.sum()),
            alpha_final_only_sum=float(rf.lower.sum()),
            alpha_peer_sum=float(la.sum()),
            alpha_min_ours_minus_peer=float((ra.lower - la).min()),
            alpha_ours_rows=ra.lower.flatten().tolist(),
            alpha_peer_rows=la.flatten().tolist(),
            alpha_ours_s=t_ours,
            alpha_peer_s=t_peer,
        )
        print(row, flush=True)
        rows.append(row)
    return {"issue_mlp": issue_row, "models": rows}


def _median_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, float]:
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _time_method(
    graph: Any,
    peer: Peer,
    x: torch.Tensor,
    eps: float,
    spec: torch.Tensor,
    method: str,
    theirs: str,
    settings: AlphaSettings | None,
    repeats: int,
    warmup: bool = True,
) -> dict[str, float]:
    n = int(x.shape[0])
    s = linf_ball(x, eps)

    def ours() -> None:
        compute_bounds(graph, s, spec, method, alpha=settings)  # type: ignore[arg-type]

    def theirs_each() -> None:
        for i in range(n):
            peer.bounds(x[i : i + 1], eps, spec[i : i + 1], theirs, upper=False)

    def theirs_batch() -> None:
        peer.bounds(x, eps, spec, theirs, upper=False)

    fns: dict[str, Callable[[], object]] = {"ours": ours, "auto_lirpa_each": theirs_each}
    if method != "alpha-crown":  # auto_LiRPA's batched α run merges the samples' unstable sets
        fns["auto_lirpa_batch"] = theirs_batch
    return _median_interleaved(fns, repeats, warmup)


def part_speed(al: Any, repeats: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    cases: list[
        tuple[str, Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]], float, int, bool]
    ] = [
        ("digits LeNet-5, 1×8×8", lenet5, 0.01, 8, True),
        ("28×28 CNN (2 conv + 2 linear)", cnn28, 0.01, 8, False),
        ("ResNet-8, 3×16×16", resnet8, 0.003, 2, False),
    ]
    for name, build, eps, n, matrix in cases:
        model, xte, _ = build()
        x = xte[:n]
        with torch.no_grad():
            spec = margin_spec(model(x).argmax(1), 10)
        g = trace(model, tuple(x.shape[1:]))
        peer = Peer(al, model, x, matrix)
        resnet = name.startswith("ResNet")
        for method, theirs, settings in (
            ("crown", "CROWN", None),
            ("alpha-crown", "alpha-CROWN", AlphaSettings(iterations=20, intermediate=True)),
        ):
            xs, specs, warmup = x, spec, True
            rep = max(1, repeats // 2) if (resnet or method == "alpha-crown") else repeats
            if method == "alpha-crown" and resnet:
                # minutes per run for both (auto_LiRPA's most): one sample, one interleaved
                # run, no warm-up
                xs, specs, warmup, rep = x[:1], spec[:1], False, 1
            t = _time_method(g, peer, xs, eps, specs, method, theirs, settings, rep, warmup)
            best_peer = min(v for k, v in t.items() if k != "ours")
            row = {
                "model": name,
                "method": method,
                "eps": eps,
                "samples": int(xs.shape[0]),
                "repeats": rep,
                "warmup": warmup,
                **{f"{k}_s_per_sample": v / int(xs.shape[0]) for k, v in t.items()},
                "ratio": t["ours"] / best_peer,
            }
            print(row, flush=True)
            rows.append(row)
    return {"rows": rows}


def part_digits(n: int, eps: tuple[float, ...], budget: float, mlp: bool = False) -> dict[str, Any]:
    model, xte, yte = digits_mlp() if mlp else lenet5()
    from edgeproof.models.train import spec_from_data

    spec = spec_from_data(load_data("builtin:digits/train"))
    out: dict[str, Any] = {
        "samples": n,
        "eps": list(eps),
        "bab_budget_s": budget,
        "load": f"{os.getloadavg()[0]:.1f}",
        "runs": {},
    }
    for label, bab in (("crown + alpha-crown", 0.0), ("+ branch-and-bound", budget)):
        t0 = time.perf_counter()
        r = certify_model(
            model,
            xte[:n],
            yte[:n],
            spec,
            eps,
            methods=("ibp", "crown", "alpha-crown"),
            bab_budget_s=bab,
        )
        dt = time.perf_counter() - t0
        out["runs"][label] = {
            "seconds": dt,
            "per_eps": [
                {
                    "eps": e.eps,
                    "verified": e.count("verified"),
                    "falsified": e.count("falsified"),
                    "unknown": e.count("unknown"),
                    "verified_by": {m: int(mr.verified.sum()) for m, mr in e.methods.items()},
                    "bab_runs": len(e.bab),
                    "bab_s": e.bab_time_s,
                }
                for e in r.per_eps
            ],
            "clean_correct": int(r.clean_correct.sum()),
        }
        print(label, out["runs"][label], flush=True)
    return out


# --------------------------------------------------------------------------------------------
# report


def write_markdown(results: dict[str, Any]) -> None:
    lines = ["## Certified bounds (edgeproof.certify vs auto_LiRPA 0.7.1)", ""]
    meta = results.get("meta", {})
    lines.append(
        f"Machine: {meta.get('machine', '?')}, {meta.get('cores', '?')} cores shared with other "
        f"jobs (1-minute load average {meta.get('load', '?')} when the parts ran), torch "
        f"{meta.get('torch', '?')}, one intra-op thread for both tools; auto_LiRPA 0.7.1 from its "
        "public repository (installed beside torch 2.13 CPU with `--no-deps`). L∞ balls clipped "
        "to [0, 1]; margins `f_y − f_j` of the predicted class `y`."
    )
    agr = results.get("agreement")
    if agr:
        iss = agr["issue_mlp"]
        lines += [
            "",
            "### Agreement",
            "",
            "The issue's 4-16-16-3 MLP at ε = 0.3 (no clipping), total width of the output bounds "
            "(sum over outputs of upper − lower); α-CROWN 20 iterations, intermediate slopes "
            "optimised too (auto_LiRPA's `alpha-CROWN`):",
            "",
            "| method | edgeproof | auto_LiRPA |",
            "|---|---:|---:|",
            *[
                f"| {m} | {iss['ours'][m]:.6f} | {iss['auto_lirpa'][m]:.6f} |"
                for m in ("ibp", "crown-ibp", "crown", "alpha-crown")
            ],
            "",
            "Seeded models; IBP and CROWN lower and upper bounds of every margin, largest "
            "difference relative to `1 + |bound|` (target ≤ 1e-5); α-CROWN lower bounds summed "
            "over samples and margins, 20 iterations each (ours with `intermediate=True`, and "
            "our default, which optimises the final pass only), the margins where one is tighter "
            "by more than float32 noise (1e-5·(1 + |bound|)), and seconds for the samples:",
            "",
            "| model | ε | samples | IBP rel. diff | CROWN rel. diff | CROWN Σ lower "
            "| α-CROWN Σ ours | α-CROWN Σ auto_LiRPA | ours final-only Σ "
            "| margins ours tighter / auto tighter / all | α s ours / auto_LiRPA |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in agr["models"]:
            ours = np.asarray(r["alpha_ours_rows"])
            peer = np.asarray(r["alpha_peer_rows"])
            tol = 1e-5 * (1 + np.abs(peer))
            tighter = f"{int((ours > peer + tol).sum())} / {int((peer > ours + tol).sum())}"
            lines.append(
                f"| {r['model']} | {r['eps']:g} | {r['samples']} | {r['ibp_rel_diff']:.1e} "
                f"| {r['crown_rel_diff']:.1e} | {r['crown_lower_sum']:.4f} "
                f"| {r['alpha_ours_sum']:.4f} | {r['alpha_peer_sum']:.4f} "
                f"| {r['alpha_final_only_sum']:.4f} | {tighter} / {ours.size} "
                f"| {r['alpha_ours_s']:.1f} / {r['alpha_peer_s']:.1f} |"
            )
        worst = max(max(r["ibp_rel_diff"], r["crown_rel_diff"]) for r in agr["models"])
        lines += ["", f"Largest IBP/CROWN relative difference: {worst:.1e} (target 1e-5)."]
    sp = results.get("speed")
    if sp:
        lines += [
            "",
            "### Time per sample",
            "",
            "Seconds per sample, medians of interleaved repeats (warm-up excluded; graphs and "
            "`BoundedModule`s built once beforehand); auto_LiRPA per sample (batch 1) and on the "
            "whole batch (CROWN only: its batched α-CROWN merges the samples' unstable neurons, "
            "which changes its bounds); ratio = ours / auto_LiRPA's faster (target ≤ 0.5). "
            "α-CROWN: 20 iterations, intermediate slopes optimised (auto_LiRPA's algorithm); on "
            "ResNet-8 (minutes per run) one sample, one interleaved run, no warm-up.",
            "",
            "| model | method | ε | samples | repeats | edgeproof s | auto_LiRPA batch-1 s "
            "| auto_LiRPA batched s | ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sp["rows"]:
            batched = r.get("auto_lirpa_batch_s_per_sample")
            lines.append(
                f"| {r['model']} | {r['method']} | {r['eps']:g} | {r['samples']} | {r['repeats']} "
                f"| {r['ours_s_per_sample']:.3f} | {r['auto_lirpa_each_s_per_sample']:.3f} "
                f"| {'' if batched is None else f'{batched:.3f}'} | {r['ratio']:.2f} |"
            )
        missed = [
            f"{r['model']} {r['method']} ({r['ratio']:.2f})" for r in sp["rows"] if r["ratio"] > 0.5
        ]
        lines += [
            "",
            "Target ≤ 0.5× auto_LiRPA: "
            + ("met on every workload." if not missed else "missed on " + ", ".join(missed) + "."),
        ]
    for key, title, what in (
        ("digits", "digits LeNet-5", "the tests' LeNet-5"),
        (
            "digits_mlp",
            "digits MLP 64-64-32-10",
            "the seeded MLP of the agreement table (10 epochs of Adam)",
        ),
    ):
        dg = results.get(key)
        if not dg:
            continue
        lines += [
            "",
            f"### Verified counts, {title}",
            "",
            f"First {dg['samples']} samples of the digits test split (`builtin:digits`), {what}; "
            "IBP + CROWN + α-CROWN (final pass, 20 iterations; α-CROWN only on "
            f"samples CROWN left open), PGD-20 for counterexamples, then branch-and-bound with "
            f"{dg['bab_budget_s']:g} s per open sample. unknown = neither verified nor falsified"
            + (f"; 1-minute load average {dg['load']} when it ran." if "load" in dg else "."),
            "",
            "| ε | verified | falsified | unknown | verified +BaB | falsified +BaB | unknown +BaB "
            "| BaB runs | BaB s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        a, b = dg["runs"]["crown + alpha-crown"], dg["runs"]["+ branch-and-bound"]
        for ea, eb in zip(a["per_eps"], b["per_eps"]):
            lines.append(
                f"| {ea['eps']:g} | {ea['verified']} | {ea['falsified']} | {ea['unknown']} "
                f"| {eb['verified']} | {eb['falsified']} | {eb['unknown']} | {eb['bab_runs']} "
                f"| {eb['bab_s']:.1f} |"
            )
        lines += [
            "",
            f"Wall time: {a['seconds']:.1f} s without, {b['seconds']:.1f} s with branch-and-bound "
            f"({a['clean_correct']} of {dg['samples']} samples correctly classified).",
        ]
    OUT_MD.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT_MD}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--part",
        choices=("agreement", "speed", "digits", "digits-mlp", "all", "report"),
        default="all",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--digits-samples", type=int, default=100)
    ap.add_argument("--bab-budget", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    if args.part == "report":
        write_markdown(results)
        return
    al = import_auto_lirpa()
    if al is None and args.part in ("agreement", "speed", "all"):
        print(
            "auto_LiRPA is not importable; see this script's docstring (PYTHONPATH with the public "
            "auto_LiRPA 0.7.1 checkout and appdirs/graphviz); results left as they are",
            file=sys.stderr,
        )
        return
    load = os.getloadavg()[0]
    if args.part != "digits-mlp":  # that part records its own load
        results["meta"] = {
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "load": f"{load:.1f}",
        }
    if args.part in ("agreement", "all"):
        results["agreement"] = part_agreement(al)
    if args.part in ("speed", "all"):
        results["speed"] = part_speed(al, args.repeats)
    if args.part in ("digits", "all"):
        results["digits"] = part_digits(
            args.digits_samples, (0.005, 0.01, 0.02, 0.03), args.bab_budget
        )
    if args.part in ("digits-mlp", "all"):
        results["digits_mlp"] = part_digits(
            args.digits_samples, (0.005, 0.01, 0.02, 0.03), args.bab_budget, mlp=True
        )
    OUT_JSON.write_text(json.dumps(results, indent=1), encoding="utf-8")
    write_markdown(results)


if __name__ == "__main__":
    main()

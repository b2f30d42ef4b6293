"""Benchmark: Integrated Gradients at equal completeness gap δ, against Captum 0.9.0.

For each workload (model, samples) and each tolerance τ the criterion is the same for both
contenders: every sample's IG must satisfy ``|δ| ≤ τ·|f(x) − f(x0)| + 1e-6`` (δ recomputed in
float64 from the returned attributions, target = the predicted logit, baseline = zeros).

* **Captum** (``captum.attr.IntegratedGradients``, ``method="gausslegendre"``, its documented
  best settings): the smallest step count ``n*`` on the doubling grid 8, 16, …, 1024 at which
  every sample meets τ is found first (an oracle search, *not* timed — a Captum user has to find
  it somehow); Captum is then timed at ``n*`` with ``return_convergence_delta=True`` (δ is what
  says the attributions are good) and ``internal_batch_size`` either ``N·n*`` (one pass) or 512
  rows, whichever is faster in this run.
* **edgeproof adaptive**: :class:`edgeproof.methods.attribution.IntegratedGradients` with
  ``tolerance=τ``, starting at 8 steps, doubling per sample up to 1024 (it finds its own step
  counts; the search is timed), 512 rows per pass.
* **edgeproof fixed n***: the same class without tolerance at Captum's ``n*`` (equal work per
  sample; the ratio is the per-step cost).

Timings: medians of ``--repeats`` repeats, the contenders interleaved within each repeat, after
one warm-up each; one thread (``torch.set_num_threads(1)``) for every contender.

Workloads: the digits CNN of the tests (zoo LeNet-5 trained on ``builtin:digits/train``, 20
epochs, seed 0, Adam lr 3e-3; 64 test samples) and an MNIST-sized CNN (zoo LeNet-5 on 1×28×28,
trained the same way for 10 epochs on the digits upsampled bilinearly to 28×28; 32 samples).

If ``shap`` (0.51.0, not a test extra) is importable, also records KernelSHAP's agreement with
SHAP's ``KernelExplainer`` (``l1_reg=False``) and both timings on the breast-cancer MLP.

Writes docs/benchmarks/attribution.md.

    python benchmarks/bench_attribution.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.methods.attacks.base import frozen_copy
from edgeproof.methods.attribution import IntegratedGradients, KernelShap
from edgeproof.methods.attribution.base import scores
from edgeproof.models.train import train_model

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "attribution.md"
GRID = (8, 16, 32, 64, 128, 256, 512, 1024)
ROWS = 512


@dataclass(frozen=True)
class Row:
    workload: str
    tolerance: float
    n_star: int | None
    captum_ms: float
    captum_rows: int
    captum_worst: float
    ours_ms: float
    ours_rows: int
    ours_worst: float
    ours_steps_mean: float
    ours_steps_max: int
    fixed_ms: float

    @property
    def adaptive_ratio(self) -> float:
        return self.ours_ms / self.captum_ms

    @property
    def fixed_ratio(self) -> float:
        return self.fixed_ms / self.captum_ms


def relative_delta(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, attr: torch.Tensor
) -> np.ndarray:
    """|δ| / |f(x) − f(0)| per sample, δ in float64 from ``attr``."""
    fx = scores(model, x, t, "logit", 4096)
    f0 = scores(model, torch.zeros_like(x), t, "logit", 4096)
    delta = attr.double().flatten(1).sum(1) - (fx - f0)
    out: np.ndarray = (delta.abs() / (fx - f0).abs().clamp_min(1e-12)).numpy()
    return out


def meets(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, attr: torch.Tensor, tol: float
) -> bool:
    fx = scores(model, x, t, "logit", 4096)
    f0 = scores(model, torch.zeros_like(x), t, "logit", 4096)
    delta = attr.double().flatten(1).sum(1) - (fx - f0)
    return bool((delta.abs() <= tol * (fx - f0).abs() + 1e-6).all())


def timed(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in contenders.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for key, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000.0 for k, v in times.items()}


def bench(name: str, model: nn.Module, x: torch.Tensor, tol: float, repeats: int) -> Row:
    n = x.shape[0]
    with torch.no_grad():
        t = model(x).argmax(dim=1)
    cig = CaptumIG(model)
    n_star = None
    for steps in GRID:
        attr = cig.attribute(x, target=t, n_steps=steps, method="gausslegendre")
        if meets(model, x, t, attr, tol):
            n_star = steps
            break
    steps = n_star or GRID[-1]
    adaptive = IntegratedGradients(
        n_steps=GRID[0], tolerance=tol, max_steps=GRID[-1], internal_batch_size=ROWS
    )
    fixed = IntegratedGradients(n_steps=steps, internal_batch_size=ROWS)
    contenders: dict[str, Callable[[], object]] = {
        "captum_one_pass": lambda: cig.attribute(
            x,
            target=t,
            n_steps=steps,
            internal_batch_size=n * steps,
            return_convergence_delta=True,
        ),
        "captum_512": lambda: cig.attribute(
            x, target=t, n_steps=steps, internal_batch_size=ROWS, return_convergence_delta=True
        ),
        "ours": lambda: adaptive.attribute(model, x, target=t),
        "fixed": lambda: fixed.attribute(model, x, target=t),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns when internal_batch_size < N
        ms = timed(contenders, repeats)
        captum_attr, _ = cig.attribute(x, target=t, n_steps=steps, return_convergence_delta=True)
    ours = adaptive.attribute(model, x, target=t)
    assert ours.n_steps is not None and ours.converged is not None
    return Row(
        workload=name,
        tolerance=tol,
        n_star=n_star,
        captum_ms=min(ms["captum_one_pass"], ms["captum_512"]),
        captum_rows=n * (steps + 2),
        captum_worst=float(relative_delta(model, x, t, captum_attr).max()),
        ours_ms=ms["ours"],
        ours_rows=ours.evaluations,
        ours_worst=float(relative_delta(model, x, t, ours.values).max()),
        ours_steps_mean=float(ours.n_steps.double().mean()),
        ours_steps_max=int(ours.n_steps.max()),
        fixed_ms=ms["fixed"],
    )


def upsampled(data: Dataset, size: int) -> Dataset:
    x = torch.nn.functional.interpolate(
        torch.from_numpy(data.x), size=(size, size), mode="bilinear", align_corners=False
    ).clamp(0.0, 1.0)
    return Dataset(
        x=x.numpy(),
        y=data.y,
        classes=data.classes,
        name=f"{data.name}@{size}",
        format="builtin",
        kind="image",
        domain=(0.0, 1.0),
    )


def kernel_shap_section(repeats: int) -> list[str]:
    try:
        import shap
    except ImportError:
        return ["", "KernelSHAP vs SHAP: not measured in this run (shap is not installed)."]
    train = load_data("builtin:breast-cancer/train")
    test = load_data("builtin:breast-cancer")
    model = frozen_copy(train_model("zoo:mlp", train, epochs=30, seed=0, lr=1e-3))
    x = torch.from_numpy(test.x[:8])
    bg = torch.from_numpy(train.x[np.random.default_rng(0).choice(len(train), 16, replace=False)])
    target = 1

    def f(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.as_tensor(a, dtype=torch.float32)).double().numpy()
        return out

    def theirs(nsamples: int, seed: int) -> np.ndarray:
        np.random.seed(seed)
        ex = shap.KernelExplainer(f, bg.numpy(), link="identity")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = ex.shap_values(x.numpy(), nsamples=nsamples, l1_reg=False, silent=True)
        return np.asarray(v)[..., target]

    def ours(nsamples: int, seed: int) -> np.ndarray:
        return (
            KernelShap(n_samples=nsamples, internal_batch_size=4096)
            .attribute(model, x, baseline=bg, target=target, generator=np.random.default_rng(seed))
            .values.numpy()
        )

    m = x.shape[1]
    budget = 2 * m + 2048
    runs = 30
    a = np.stack([theirs(budget, r) for r in range(runs)])
    b = np.stack([ours(budget, r) for r in range(runs)])
    se = np.sqrt(a.var(axis=0) / runs + b.var(axis=0) / runs)
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / np.maximum(se, 1e-300)
    ratio = b.std(axis=0) / np.maximum(a.std(axis=0), 1e-300)
    ms = timed({"shap": lambda: theirs(budget, 0), "ours": lambda: ours(budget, 0)}, repeats)
    return [
        "",
        "### KernelSHAP against SHAP 0.51.0's KernelExplainer",
        "",
        f"zoo MLP trained on `builtin:breast-cancer/train` (30 epochs), M = {m} features, 8 test "
        f"samples, 16 background rows, target class {target}, `nsamples = 2M + 2048 = {budget}` "
        "(both sample coalitions: 2^30 are too many to enumerate), SHAP with `l1_reg=False` and "
        "`link='identity'` (our estimator has no LARS feature selection). Over "
        f"{runs} seeds each: largest |mean difference| / standard error over the 8 × {m} values "
        f"z = {z.max():.2f} (median {np.median(z):.2f}); spread ratio (ours / SHAP's standard "
        f"deviation over seeds) median {np.median(ratio):.2f}, range {ratio.min():.2f}–"
        f"{ratio.max():.2f}. With every coalition enumerated both give the exact Shapley values "
        "(tests/test_attribution_kernelshap.py: agreement to 1e-6 at M = 12).",
        "",
        "| contender | ms per call (8 samples) |",
        "|---|---:|",
        f"| SHAP KernelExplainer | {ms['shap']:.0f} |",
        f"| edgeproof KernelShap (4096 rows per pass) | {ms['ours']:.0f} |",
        f"| ratio edgeproof / SHAP | {ms['ours'] / ms['shap']:.2f} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    train = load_data("builtin:digits/train")
    test = load_data("builtin:digits")
    digits = frozen_copy(train_model("zoo:lenet5", train, epochs=20, seed=0, lr=3e-3))
    big = frozen_copy(train_model("zoo:lenet5", upsampled(train, 28), epochs=10, seed=0, lr=3e-3))
    workloads = [
        ("digits LeNet-5, 1×8×8, 64 samples", digits, torch.from_numpy(test.x[:64])),
        (
            "LeNet-5 on 1×28×28 (digits upsampled), 32 samples",
            big,
            torch.from_numpy(upsampled(test, 28).x[:32]),
        ),
    ]
    rows = []
    for name, model, x in workloads:
        for tol in (1e-2, 1e-3):
            rows.append(bench(name, model, x, tol, args.repeats))
            print(f"done: {name}, τ={tol:g}", file=sys.stderr, flush=True)
    extra = kernel_shap_section(args.repeats)
    load_after = os.getloadavg()[0]
    import captum

    lines = [
        "## Attribution: Integrated Gradients at equal δ",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs; "
        f"1-minute load average {load_before:.2f} before, {load_after:.2f} after), torch "
        f"{torch.__version__}, 1 intra-op thread for every contender; Captum {captum.__version__}. "
        f"Medians of {args.repeats} repeats, contenders interleaved; milliseconds per call "
        "for the whole batch.",
        "",
        "Criterion (both): every sample's IG has `|δ| ≤ τ·|f(x) − f(0)| + 1e-6`, δ = Σ attr − "
        "(f(x) − f(0)) in float64, baseline zeros, target the predicted logit. Captum is timed at "
        "the smallest Gauss–Legendre step count n* on the grid 8…1024 that meets τ for every "
        "sample (found beforehand, untimed), with `return_convergence_delta=True` and the faster "
        f"of one pass or {ROWS} rows per pass; edgeproof's adaptive IG starts at 8 steps and "
        "doubles per sample until it meets τ (its search is timed). *Model rows*: inputs "
        "evaluated (forward + backward for path points, forward only for f(x) and f(x0)).",
        "",
        "| workload | τ | Captum n* | Captum ms | Captum rows | Captum worst δ/Δf | "
        "edgeproof adaptive ms | rows | mean / max steps | worst δ/Δf | adaptive / Captum | "
        "edgeproof fixed n* / Captum |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.tolerance:g} | {r.n_star if r.n_star else '> 1024'} | "
            f"{r.captum_ms:.0f} | {r.captum_rows} | {r.captum_worst:.2g} | {r.ours_ms:.0f} | "
            f"{r.ours_rows} | {r.ours_steps_mean:.0f} / {r.ours_steps_max} | {r.ours_worst:.2g} | "
            f"{r.adaptive_ratio:.2f} | {r.fixed_ratio:.2f} |"
        )
    equal = [r for r in rows if r.n_star is not None]
    unreached = [r for r in rows if r.n_star is None]
    missed = [r for r in equal if r.adaptive_ratio > 1.0]
    verdict = (
        "met on every row where Captum reaches τ"
        if not missed
        else "missed on "
        + ", ".join(f"{r.workload} τ={r.tolerance:g} ({r.adaptive_ratio:.2f})" for r in missed)
    )
    if unreached:
        verdict += (
            "; where Captum does not reach τ within 1024 steps ("
            + ", ".join(f"{r.workload} τ={r.tolerance:g}" for r in unreached)
            + "), the row times Captum at 1024 steps, still short of τ (its worst δ/Δf is shown), "
            "against edgeproof meeting τ"
            + (
                ""
                if all(r.ours_worst <= r.tolerance for r in unreached)
                else " (or reaching its own 1024-step cap)"
            )
        )
    lines += [
        "",
        f"Target (edgeproof adaptive ≤ Captum's time at equal δ): {verdict}.",
        "",
        "Why the adaptive run is cheaper: one step count for the batch must serve its hardest "
        "sample, while most samples meet τ with far fewer steps (ReLU networks make the integrand "
        "piecewise constant along the path, so δ falls unevenly and not monotonically with n, "
        "captum #1334: more steps can give a larger δ); edgeproof "
        "re-integrates only the samples that still miss τ and keeps each sample's first estimate "
        "that meets it. The fixed-n* "
        "column compares equal work: edgeproof computes δ for every call (one forward each at x "
        "and x0, as Captum's `return_convergence_delta`) and feeds images to the conv net "
        "channels-last.",
        *extra,
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

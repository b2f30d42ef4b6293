"""Benchmark: edgeproof `spectral` vs WeightWatcher 0.7.7 `analyze()`, and the DNL scan time.

Model: the project's zoo ResNet-18 (ImageNet layout, 11.7M parameters, random init, seed 0).
Both tools run in the same process with the same torch/BLAS thread count; medians of a few repeats.
Writes docs/benchmarks/spectral.md.

    python benchmarks/bench_spectral.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from edgeproof.atomic import atomic_write_text
from edgeproof.diagnostics.dnl import candidate_set, select_flips
from edgeproof.diagnostics.layers import layers_from_module
from edgeproof.diagnostics.spectral import SpectralConfig, analyze_inventory
from edgeproof.models.zoo import build_model


def _median_time(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/benchmarks/spectral.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 224, 224), 1000).eval()
    params = sum(p.numel() for p in model.parameters())

    def run_ww():  # type: ignore[no-untyped-def]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ww.WeightWatcher(model=model).analyze()

    t_ww, details = _median_time(run_ww, args.repeats)
    t_def, ours = _median_time(
        lambda: analyze_inventory(layers_from_module(model), SpectralConfig()), args.repeats
    )
    t_cmp, compat = _median_time(
        lambda: analyze_inventory(layers_from_module(model), SpectralConfig(mode="ww-compat")),
        args.repeats,
    )
    ww_alpha = dict(zip(details["longname"], details["alpha"]))  # type: ignore[index]
    d_def = max(abs(s.alpha - ww_alpha[s.name]) for s in ours.layers if s.name in ww_alpha)  # type: ignore[attr-defined]
    d_cmp = max(abs(s.alpha - ww_alpha[s.name]) for s in compat.layers)  # type: ignore[attr-defined]

    def dnl_scan():  # type: ignore[no-untyped-def]
        c = candidate_set(model, kind="dnl")
        return select_flips(c, 10)

    def onep_scan():  # type: ignore[no-untyped-def]
        c = candidate_set(model, kind="1p-dnl", input_shape=(3, 224, 224))
        return select_flips(c, 10)

    t_dnl, _ = _median_time(dnl_scan, args.repeats)
    t_1p, _ = _median_time(onep_scan, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "## Spectral diagnostics and DNL scan",
        "",
        f"Model: zoo `resnet18` (ImageNet layout, {params:,} parameters, random init, seed 0); "
        f"{len(compat.layers)} layers analysed by both tools.  ",  # type: ignore[attr-defined]
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared; 1-min load average at the end {load:.1f}); torch threads {args.threads}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
        f"median of {args.repeats} runs; torch {torch.__version__}, "
        f"WeightWatcher {ww.__version__}.",
        "",
        "| tool | time (s) | ratio vs WW | max abs Δα vs WW |",
        "|---|---:|---:|---:|",
        f"| WeightWatcher 0.7.7 `analyze()` | {t_ww:.3f} | 1.00× | — |",
        f"| edgeproof `spectral` default | {t_def:.3f} | {t_ww / t_def:.2f}× | {d_def:.1e} |",
        f"| edgeproof `spectral` ww-compat | {t_cmp:.3f} | {t_ww / t_cmp:.2f}× | {d_cmp:.1e} |",
        "",
        "| DNL scan (score first 10 layers + top-10 selection) | time (s) |",
        "|---|---:|",
        f"| DNL (|θ|) | {t_dnl:.3f} |",
        f"| 1P-DNL (one forward + backward at 224×224) | {t_1p:.3f} |",
        "",
        "Default mode: float64 Gram `eigvalsh` per kernel position and a pruned, vectorised xmin",
        "search (exact argmin); ww-compat: float64 `svdvals` with WeightWatcher's conv2d ×0.5.",
        "Target of the issue: ≥ 5× faster than WeightWatcher with identical α; DNL scan < 2 s.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()

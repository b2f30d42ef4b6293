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

import numpy as np
import torch

from edgeproof.atomic import atomic_write_text
from edgeproof.methods.dnl import candidate_set, select_flips
from edgeproof.methods.esd import _gram_eigvals
from edgeproof.methods.layers import layers_from_module
from edgeproof.methods.spectral import SpectralConfig, analyze_inventory
from edgeproof.models.zoo import build_model

#: Idle time before each timed run. OpenBLAS worker threads spin-wait after a call (and OpenMP
#: threads after a parallel region) before they sleep; without a pause the previous run's
#: spinning threads steal the cores from the next run (whichever tool that is).
_SETTLE_S = 0.2

#: Fewer repeats than this give a bootstrap interval too coarse to call the target met with it.
_MIN_REPEATS_FOR_CI = 5


def _median_time(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _interleaved(
    fns: dict[tuple[int, str], object], repeats: int
) -> tuple[dict[tuple[int, str], list[float]], dict[tuple[int, str], object]]:
    """Times (one per repeat) and last result of each ``(threads, tool)`` run, all interleaved.

    Each repeat runs every tool at every thread budget once (A1 B1 C1 A2 B2 C2, A1 ...), so on a
    shared machine whose load drifts every configuration sees the same mix of quiet and busy
    moments, and ratios across rows (even across thread budgets) compare like with like.
    """
    from threadpoolctl import threadpool_limits

    times: dict[tuple[int, str], list[float]] = {k: [] for k in fns}
    outs: dict[tuple[int, str], object] = {}
    for _ in range(repeats):
        for key, fn in fns.items():
            torch.set_num_threads(key[0])
            with threadpool_limits(limits=key[0], user_api="blas"):
                time.sleep(_SETTLE_S)
                t = time.perf_counter()
                outs[key] = fn()  # type: ignore[operator]
                times[key].append(time.perf_counter() - t)
    torch.set_num_threads(1)
    return times, outs


def _ratio_interval(
    samples: dict[tuple[int, str], list[float]],
    threads: int,
    *,
    same_budget: bool = False,
    resamples: int = 2000,
) -> tuple[float, float]:
    """95% bootstrap interval of (WeightWatcher's fastest median at ≤ ``threads``, or at exactly
    ``threads`` with ``same_budget``) / (our default-mode median at ``threads``), resampling
    whole repeats (the runs of one repeat are interleaved and share the machine's state, so
    they are resampled together)."""
    budgets = [threads] if same_budget else sorted({t for t, _ in samples if t <= threads})
    ww = np.array([samples[(t, "ww")] for t in budgets])  # (budgets, repeats)
    ours = np.array(samples[(threads, "default")])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ours.size, size=(resamples, ours.size))
    ratios = np.median(ww[:, idx], axis=2).min(axis=0) / np.median(ours[idx], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def _max_delta(layers, details, key: str) -> float:  # type: ignore[no-untyped-def]
    """Max |ours − WW| of a scale-free fit value (``alpha`` or ``D``) over the shared layers."""
    ww_value = dict(zip(details["longname"], details[key]))
    got = [
        (s.alpha if key == "alpha" else s.fit.D, float(ww_value[s.name]))
        for s in layers
        if s.name in ww_value and s.fit is not None
    ]
    return max(abs(a - b) for a, b in got)


def _slice_costs(repeats: int) -> tuple[float, float]:
    """Per 512×512 float64 slice, one thread: WW's eigenvalues (SciPy ``svd`` values) vs ours
    (``_gram_eigvals``: Gram matmul + ``eigvalsh``), median ms; the floor of the whole ratio."""
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(9, 512, 512, generator=gen, dtype=torch.float64) / 64
    wn = w.numpy()
    with threadpool_limits(limits=1, user_api="blas"):
        t_svd, _ = _median_time(
            lambda: [scipy.linalg.svd(m, compute_uv=False) for m in wn], repeats
        )
        t_ours, _ = _median_time(lambda: _gram_eigvals(w), repeats)
    return 1000 * t_svd / 9, 1000 * t_ours / 9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread budgets to compare; each tool gets the same budget (torch intra-op and "
        "BLAS/LAPACK threads; edgeproof's layer pool size)",
    )
    ap.add_argument("--out", default="docs/benchmarks/spectral.md")
    args = ap.parse_args()
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 224, 224), 1000).eval()
    params = sum(p.numel() for p in model.parameters())
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def run_ww():  # type: ignore[no-untyped-def]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ww.WeightWatcher(model=model).analyze()

    fns: dict[tuple[int, str], object] = {}
    for threads in args.threads:
        fns[(threads, "ww")] = run_ww
        fns[(threads, "default")] = lambda t=threads: analyze_inventory(
            layers_from_module(model), SpectralConfig(), workers=t
        )
        fns[(threads, "compat")] = lambda t=threads: analyze_inventory(
            layers_from_module(model), SpectralConfig(mode="ww-compat"), workers=t
        )
    samples, outs = _interleaved(fns, args.repeats)
    tools = ("ww", "default", "compat")
    results = {
        t: {k: (statistics.median(samples[(t, k)]), outs[(t, k)]) for k in tools}
        for t in args.threads
    }
    rows: list[str] = []
    for threads, res in results.items():
        t_ww, details = res["ww"]
        (t_def, ours), (t_cmp, compat) = res["default"], res["compat"]
        ww_alpha = dict(zip(details["longname"], details["alpha"]))  # type: ignore[index]
        d_def = max(abs(s.alpha - ww_alpha[s.name]) for s in ours.layers if s.name in ww_alpha)  # type: ignore[attr-defined]
        d_cmp = max(abs(s.alpha - ww_alpha[s.name]) for s in compat.layers)  # type: ignore[attr-defined]
        dd_def = _max_delta(ours.layers, details, "D")  # type: ignore[attr-defined]
        rows += [
            f"| {threads} | WeightWatcher 0.7.7 `analyze()` | {t_ww:.3f} | 1.00× | — | — |",
            f"| {threads} | edgeproof `spectral` default | {t_def:.3f} | {t_ww / t_def:.2f}× "
            f"| {d_def:.1e} | {dd_def:.1e} |",
            f"| {threads} | edgeproof `spectral` ww-compat | {t_cmp:.3f} | {t_ww / t_cmp:.2f}× "
            f"| {d_cmp:.1e} | {_max_delta(compat.layers, details, 'D'):.1e} |",  # type: ignore[attr-defined]
        ]

    def dnl_scan():  # type: ignore[no-untyped-def]
        c = candidate_set(model, kind="dnl")
        return select_flips(c, 10)

    def onep_scan():  # type: ignore[no-untyped-def]
        c = candidate_set(model, kind="1p-dnl", input_shape=(3, 224, 224))
        return select_flips(c, 10)

    t_dnl, _ = _median_time(dnl_scan, args.repeats)
    t_1p, _ = _median_time(onep_scan, args.repeats)
    ms_svd, ms_gram = _slice_costs(args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # headline: ours at budget t against WeightWatcher's fastest time at any budget <= t (on a
    # busy machine OpenBLAS's spinning threads can make WW far slower with 2 threads than with 1;
    # that is not a speed-up of ours)
    ww_ref = {t: min(results[u]["ww"][0] for u in results if u <= t) for t in results}
    best = max(results, key=lambda t: ww_ref[t] / results[t]["default"][0])
    ratio = ww_ref[best] / results[best]["default"][0]
    if 1 in results and max(results) > 1:
        t_hi = max(results)
        gain = results[1]["default"][0] / results[t_hi]["default"][0]
        pool_note = f"gained {gain:.2f}× from 1 to {t_hi} threads in this run (shared cores)"
    else:
        pool_note = "was not compared across thread budgets in this run"
    one_ratio = (
        f"{results[1]['ww'][0] / results[1]['default'][0]:.2f}×" if 1 in results else "not measured"
    )
    d_best = _max_delta(results[best]["default"][1].layers, results[best]["ww"][1], "alpha")  # type: ignore[attr-defined]
    ci_low, ci_high = _ratio_interval(samples, best)
    if ratio < 5.0:
        verdict = "Not met"
    else:
        confident = ci_low >= 5.0 and args.repeats >= _MIN_REPEATS_FOR_CI
        verdict = "Met" if confident else "Met at the point estimate, not with confidence"
    verdict += f": {ratio:.2f}× [95% bootstrap interval {ci_low:.2f}–{ci_high:.2f}]"
    t_top = max(results)
    same_low, same_high = _ratio_interval(samples, t_top, same_budget=True)
    same_ratio = results[t_top]["ww"][0] / results[t_top]["default"][0]
    lines = [
        "## Spectral diagnostics and DNL scan",
        "",
        f"Model: zoo `resnet18` (ImageNet layout, {params:,} parameters, random init, seed 0); "
        f"{len(compat.layers)} layers analysed by both tools.  ",  # type: ignore[attr-defined]
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared "
        f"(1-min load average {load_start:.1f} at the start, {load:.1f} at the end); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; each row: the thread "
        "budget given to both tools (torch intra-op and BLAS/LAPACK threads via threadpoolctl; "
        "edgeproof's thread pool also gets that many threads); median of "
        f"{args.repeats} runs, all configurations interleaved; torch {torch.__version__}, "
        f"WeightWatcher {ww.__version__}.",
        "",
        "| threads | tool | time (s) | ratio vs WW | max abs Δα vs WW | max abs ΔD vs WW |",
        "|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
        "| DNL scan (score first 10 layers + top-10 selection) | time (s) |",
        "|---|---:|",
        f"| DNL (|θ|) | {t_dnl:.3f} |",
        f"| 1P-DNL (one forward + backward at 224×224) | {t_1p:.3f} |",
        "",
        "Default mode: per kernel position the float64 Gram matrix of the smaller side and its",
        "eigenvalues (`np.matmul` + `np.linalg.eigvalsh`, LAPACK `syevd`), the layers cut into",
        "chunks of kernel-position matrices that a thread pool runs largest first, and a",
        "branch-and-bound xmin search (exact KS argmin); ww-compat: float64",
        "`svdvals` with WeightWatcher's conv2d ×0.5. WeightWatcher computes SciPy `svd` values",
        "per slice and loops over xmin candidates in Python. The status line compares ours",
        "against WeightWatcher's fastest time at no more threads than ours"
        + (
            " (here WeightWatcher was slower with 2 threads than with 1)."
            if len(results) > 1 and results[max(results)]["ww"][0] > results[min(results)]["ww"][0]
            else "."
        ),
        "",
        f"Per 512×512 slice (one thread): WeightWatcher's `svd` values {ms_svd:.1f} ms, ours "
        f"{ms_gram:.1f} ms ({ms_svd / ms_gram:.1f}× cheaper).",
        "",
        "**Status against the target (≥ 5× with identical α).** "
        + verdict
        + f" at {best} thread(s), against WeightWatcher's fastest time with "
        f"at most {best} thread(s); with one thread each: {one_ratio}; α identical to "
        f"{d_best:.0e}. Against WeightWatcher given the same {t_top} thread(s) as ours (what "
        f"each tool does by default on this machine): {same_ratio:.2f}× [{same_low:.2f}–"
        f"{same_high:.2f}]. Both tools spend most of their time in float64 eigenvalues of the 27 "
        "512×512 kernel slices of `layers.3`; on one thread ours are "
        f"{ms_svd / ms_gram:.1f}× cheaper per slice (LAPACK tridiagonalisation of the Gram "
        "matrix, memory-bound, vs WeightWatcher's bidiagonalisation), so the one-thread ratio is "
        "about that plus what WeightWatcher's Python xmin loop costs; the thread pool "
        f"{pool_note}. What remains is LAPACK's float64 eigen-solve itself ({ms_gram:.1f} ms "
        "per 512×512 matrix on one core in this run, Gram matrix included). float32 eigenvalues "
        "would be cheaper but are not used: their rounding (~1e-7 of λmax) moves the fitted "
        "xmin, so α would not be identical.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()

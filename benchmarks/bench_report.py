"""Benchmark: drawing the report's figures with ``edgeproof.report.charts`` vs matplotlib.

What is measured, on the digits LeNet-5 audit (the conftest model: ``zoo:lenet5``, 20 epochs,
seed 0, lr 3e-3, audited on ``builtin:digits``, 360 records, the twelve built-in checks of
:data:`CHECKS`):

* **draw time per figure**: each check's figure builder (``PerformanceCheck._heatmap``,
  ``CalibrationCheck._diagram``, ``_alpha_figure``, ``esd_figure``, ``_curve_figure``,
  ``AdversarialCheck._figure``, ``CorruptionCheck._figure``, ``FisherCheck._figure``,
  ``accuracy_figure``, the backdoor, attribution and generalization figure functions of
  :data:`BUILDERS`) is wrapped during the audit to record its arguments; afterwards each is
  called again and its SVG drawn (``builder(*args).svg``), ``--rounds`` times, after one
  untimed warm-up round (which pays the lazy imports). CPU time of the process
  (``time.process_time``: the drawing is single-threaded Python, and CPU time does not count
  the other jobs of a shared machine) and wall time are both recorded.
* **import time**: a fresh interpreter imports ``edgeproof.report`` and numpy, then the timer
  covers importing the figure module alone — ``edgeproof.report.plots`` (matplotlib, Agg
  backend, pyplot) for the old version, ``edgeproof.report.charts`` for the new one.

The matplotlib version of the nine original checks is the source tree at ``--ref`` (default:
the commit before the charts module, where every figure was drawn with matplotlib); that of the
three later checks (backdoor, attribution, generalization: :data:`LATER`) is the tree at
``--later-ref`` (default: main before their figures were ported, where they still drew with
matplotlib and computed what they compute now). Each is extracted with ``git archive`` into a
temporary folder and runs only the checks it is the old version of; the new version is this
checkout's ``src`` and runs all twelve. Each version runs in its own worker processes
(``--processes`` each, alternating old/new so that load drift hits both), with one torch thread
and ``OMP_NUM_THREADS=1``. Medians over all timed rounds of all workers. The old trees need
matplotlib installed (edgeproof itself no longer depends on it).

    python benchmarks/bench_report.py [--ref 3553117] [--later-ref dd1c9a2] [--processes 2]

Writes docs/benchmarks/report.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = "3553117"  # main before edgeproof.report.charts: matplotlib draws every figure
# main before the backdoor/attribution/generalization figures were ported (still matplotlib)
LATER_REF = "dd1c9a2"

BUILDERS = (
    ("edgeproof.checks.performance", "PerformanceCheck._heatmap"),
    ("edgeproof.checks.calibration", "CalibrationCheck._diagram"),
    ("edgeproof.checks.spectral", "_alpha_figure"),
    ("edgeproof.checks.spectral", "esd_figure"),
    ("edgeproof.checks.bitflip", "_curve_figure"),
    ("edgeproof.checks.adversarial", "AdversarialCheck._figure"),
    ("edgeproof.checks.corruption", "CorruptionCheck._figure"),
    ("edgeproof.checks.fisher", "FisherCheck._figure"),
    ("edgeproof.checks.smoothing", "accuracy_figure"),
    ("edgeproof.checks.backdoor", "_anomaly_figure"),
    ("edgeproof.checks.backdoor", "_trigger_figure"),
    ("edgeproof.checks.attribution", "_image_classes_figure"),
    ("edgeproof.checks.attribution", "_image_samples_figure"),
    ("edgeproof.checks.attribution", "_series_classes_figure"),
    ("edgeproof.checks.attribution", "_bands_figure"),
    ("edgeproof.checks.attribution", "_tabular_figure"),
    ("edgeproof.checks.generalization", "density_figure"),
    ("edgeproof.checks.generalization", "conflict_figure"),
)
CHECKS = (
    "performance",
    "calibration",
    "footprint",
    "spectral",
    "bitflip",
    "adversarial",
    "corruption",
    "fisher",
    "smoothing",
    "backdoor",
    "attribution",
    "generalization",
)
LATER = ("backdoor", "attribution", "generalization")  # the checks whose old tree is LATER_REF
# the sample counts of tests/test_report_figures.py; the other checks run with their defaults
SETTINGS: dict[str, dict[str, Any]] = {
    "footprint": {"budget_s": 0.02, "warmup": 1, "min_runs": 3, "max_runs": 20},
    "bitflip": {"random_seeds": 2, "eval_samples": 96, "noise_samples": 32},
    "adversarial": {"pgd_steps": 5, "apgd_steps": 5, "square_queries": 50, "max_samples": 96},
    "smoothing": {"n0": 20, "n": 200, "max_samples": 64},
    "backdoor": {"freeeagle_steps": 50},
    # the four default methods, without the sanity tests (they retrain the model)
    "attribution": {
        "sanity": False,
        "max_samples": 24,
        "ig_steps": 8,
        "ig_max_steps": 32,
        "figure_samples": 2,
    },
    "generalization": {"max_samples": 120, "iterations": 20, "probes": 12, "tic_probes": 3},
}


def _worker(model_path: str, rounds: int, names: list[str]) -> dict[str, Any]:
    """Run in a worker process whose ``sys.path`` starts with the version's ``src``: audit with
    the checks ``names`` and time the figure builders of :data:`BUILDERS` that they called."""
    import torch

    torch.set_num_threads(1)
    calls: list[tuple[Any, str, tuple[Any, ...], dict[str, Any]]] = []
    for mod, attr in BUILDERS:
        if mod.rsplit(".", 1)[-1] not in names:
            continue
        owner: Any = importlib.import_module(mod)
        *path, name = attr.split(".")
        for p in path:
            owner = getattr(owner, p)
        orig = getattr(owner, name)

        def wrap(*a: Any, _orig: Any = orig, _name: str = attr, **k: Any) -> Any:
            fig = _orig(*a, **k)
            calls.append((_orig, _name, a, k))
            return fig

        setattr(owner, name, wrap)
    from edgeproof.checks import check_class
    from edgeproof.data.loading import load_data
    from edgeproof.models.loading import load_model
    from edgeproof.runner import audit

    model = load_model(Path(model_path))
    checks = [check_class(name)(**SETTINGS.get(name, {})) for name in names]
    report = audit(model, load_data("builtin:digits"), checks, threads=1)
    failed = [c.check for c in report.checks if c.status != "ok"]
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for r in range(rounds + 1):
        for orig, _name, a, k in calls:
            w0, c0 = time.perf_counter(), time.process_time()
            fig = orig(*a, **k)
            svg = fig.svg
            c1, w1 = time.process_time(), time.perf_counter()
            if r:  # round 0 warms up (lazy imports)
                cpu.setdefault(fig.name, []).append(c1 - c0)
                wall.setdefault(fig.name, []).append(w1 - w0)
                sizes[fig.name] = len(svg.encode())
    return {"cpu": cpu, "wall": wall, "bytes": sizes, "failed": failed}


def _import_time(src: Path, module: str) -> float:
    code = (
        "import time, numpy, edgeproof.report\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "print(time.perf_counter() - t)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _run_worker(src: Path, model: Path, rounds: int, names: tuple[str, ...]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, __file__, "--worker", str(model), "--rounds", str(rounds)]
    out = subprocess.run(
        [*cmd, "--checks", ",".join(names)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker on {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ref", default=DEFAULT_REF, help="git revision of the matplotlib version")
    ap.add_argument("--later-ref", default=LATER_REF,
                    help="git revision of the matplotlib version of the LATER checks")  # fmt: skip
    ap.add_argument("--processes", type=int, default=2, help="worker processes per version")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per worker")
    ap.add_argument("--imports", type=int, default=7, help="fresh interpreters per import timing")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--checks", default=",".join(CHECKS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.rounds, args.checks.split(","))))
        return

    from edgeproof.data.loading import load_data
    from edgeproof.models.train import train_and_save

    new_src = ROOT / "src"
    first = tuple(c for c in CHECKS if c not in LATER)
    with tempfile.TemporaryDirectory() as tmp:

        def extract(ref: str, folder: str) -> Path:
            root = Path(tmp) / folder
            root.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
            return root / "src"

        old_src = extract(args.ref, "old")
        later_src = extract(args.later_ref, "later")
        model = train_and_save(
            "zoo:lenet5",
            load_data("builtin:digits/train"),
            Path(tmp) / "digits-lenet5.safetensors",
            epochs=20,
            seed=0,
            lr=3e-3,
        ).path

        results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for _ in range(args.processes):
            for version, src, which in (
                ("old", old_src, first),
                ("new", new_src, CHECKS),
                ("old", later_src, LATER),
            ):
                results[version].append(_run_worker(src, model, args.rounds, which))
        imports: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.imports):
            imports["old"].append(_import_time(old_src, "edgeproof.report.plots"))
            imports["new"].append(_import_time(new_src, "edgeproof.report.charts"))

    med = statistics.median

    def pooled(version: str, kind: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for res in results[version]:
            for name, ts in res[kind].items():
                out.setdefault(name, []).extend(ts)
        return out

    cpu = {v: pooled(v, "cpu") for v in results}
    wall = {v: pooled(v, "wall") for v in results}
    names = [n for n in cpu["new"] if n in cpu["old"]]
    totals = {
        v: [
            sum(ts[i] for ts in (cpu[v][n] for n in names))
            for i in range(min(len(cpu[v][n]) for n in names))
        ]
        for v in results
    }
    wall_totals = {
        v: [
            sum(ts[i] for ts in (wall[v][n] for n in names))
            for i in range(min(len(wall[v][n]) for n in names))
        ]
        for v in results
    }
    size = {v: {n: b for r in results[v] for n, b in r["bytes"].items()} for v in results}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "## Report figures: edgeproof.report.charts vs matplotlib",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (load "
        f"{load:.1f} at the end), Python {platform.python_version()}; one torch thread, "
        f"OMP_NUM_THREADS=1. The digits LeNet-5 audit (conftest model, 360 records, the "
        f"{len(CHECKS)} built-in checks with figures); each figure builder re-run on its "
        f"recorded arguments and drawn, {args.rounds} timed rounds after a warm-up round, in "
        f"{args.processes} worker processes per version, old and new alternating. matplotlib: "
        f"the tree at `{args.ref}` ({', '.join(LATER)}: at `{args.later_ref}`). Medians of "
        "process CPU time (wall time in the last column pair).",
        "",
        "| figure | matplotlib ms | charts ms | ratio (charts / matplotlib) "
        "| SVG KB (mpl → charts) | wall ms (mpl → charts) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        o, c = med(cpu["old"][n]) * 1e3, med(cpu["new"][n]) * 1e3
        wo, wn = med(wall["old"][n]) * 1e3, med(wall["new"][n]) * 1e3
        lines.append(
            f"| `{n}` | {o:.1f} | {c:.1f} | {c / o:.3f} | "
            f"{size['old'][n] / 1024:.0f} → {size['new'][n] / 1024:.0f} | {wo:.0f} → {wn:.0f} |"
        )
    to, tn = med(totals["old"]) * 1e3, med(totals["new"]) * 1e3
    lines.append(
        f"| **all {len(names)} figures** | {to:.0f} | {tn:.0f} | {tn / to:.3f} | "
        f"{sum(size['old'][n] for n in names) / 1024:.0f} → "
        f"{sum(size['new'][n] for n in names) / 1024:.0f} | "
        f"{med(wall_totals['old']) * 1e3:.0f} → {med(wall_totals['new']) * 1e3:.0f} |"
    )
    io, inew = med(imports["old"]), med(imports["new"])
    lines += [
        "",
        f"Import of the figure module in a fresh interpreter (after `numpy` and "
        f"`edgeproof.report`), median of {args.imports} each, wall time: "
        f"`edgeproof.report.plots` (matplotlib + pyplot) {io * 1e3:.0f} ms, "
        f"`edgeproof.report.charts` {inew * 1e3:.0f} ms: {(io - inew) * 1e3:.0f} ms saved per "
        "process that draws a figure.",
        "",
    ]
    failed = {v: sorted({c for r in results[v] for c in r["failed"]}) for v in results}
    if failed["old"] or failed["new"]:
        lines.append(f"Checks that did not finish: {failed}.\n")
    out = ROOT / "docs" / "benchmarks" / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Scale-out: a 40-model backdoor scan and a full compression sweep, in this process vs 2 worker
processes vs Ray, on this machine's 2 CPUs.

Run: ``python benchmarks/bench_scale.py`` (writes docs/benchmarks/scale.md and the raw times to
scale.json; about 8 minutes); ``--rewrite`` writes the doc again from scale.json.

What is measured is the command a user runs, as a whole process (``/usr/bin/time``-style wall
clock from ``subprocess.run``): ``edgeproof scan DIR --no-cache --executor E [--jobs 2]`` over
40 model files, and ``edgeproof compress`` of the digits LeNet-5 with every default recipe
(``--time-budget 3600``, so none is skipped) with ``--executor E [--jobs 2]``. Every worker runs
one torch thread; the in-process run uses one thread too, so the ratio is the scaling over
workers. Ray runs a local instance started by the command (``ray.init(address="local",
num_cpus=2)``); its start-up is measured on its own (``ray.init`` + ``ray.shutdown`` of an
empty instance, median of the repeats) and is part of the Ray rows. Runs of the three
executors are interleaved; times are medians.

The 40 files: a ``make-population`` folder of 8 trained models (2 clean and 2 BadNets-backdoored
MLPs and LeNet-5s on builtin:digits, 3 epochs) copied 5 times under distinct names — 40 real
model files, each loaded and scanned from scratch (no cache), with the default detectors
(final-layer, head-probe, FreeEagle at 1000 steps per class).

Scaling efficiency = T(in-process) / (2 × T(executor)); 100 % is a perfect 2× on 2 workers.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "scale.md"
RAW = ROOT / "docs" / "benchmarks" / "scale.json"
EXE = [sys.executable, "-m", "edgeproof"]
EXECUTORS = {
    "in-process": ["--executor", "inprocess"],
    "2 processes": ["--executor", "processes", "--jobs", "2"],
    "Ray, 2 CPUs": ["--executor", "ray", "--jobs", "2"],
}
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _run(args: list[str], ok: tuple[int, ...] = (0, 1)) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([*EXE, *args], env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall


def _population(tmp: Path) -> Path:
    pop = tmp / "pop"
    _run(["make-population", str(pop), "--clean", "2", "--backdoored", "2", "--archs",
          "zoo:mlp,zoo:lenet5", "--families", "badnets", "--epochs", "3", "--quiet"])  # fmt: skip
    folder = tmp / "models40"
    folder.mkdir()
    for k in range(5):
        for f in sorted(pop.glob("*.safetensors")):
            shutil.copy(f, folder / f"{f.stem}-copy{k}.safetensors")
            shutil.copy(f.with_suffix(".json"), folder / f"{f.stem}-copy{k}.json")
    assert len(list(folder.glob("*.safetensors"))) == 40
    return folder


def _ray_startup() -> float:
    code = (
        "import time, logging, ray; t=time.perf_counter(); "
        "ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False, "
        "logging_level=logging.WARNING); ray.shutdown(); print(time.perf_counter()-t)"
    )
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    return float(p.stdout.strip().splitlines()[-1])


def _bench(name: str, base: list[str], tmp: Path, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in EXECUTORS}
    for r in range(repeats):
        for label, flags in EXECUTORS.items():
            out = tmp / f"{name}-{label.replace(' ', '_').replace(',', '')}-{r}"
            times[label].append(_run([*base, "--out", str(out), *flags]))
            print(f"{name} {label} repeat {r}: {times[label][-1]:.1f} s", flush=True)
    return times


def _table(times: dict[str, list[float]], tasks: int, ray_up: float) -> list[str]:
    base = statistics.median(times["in-process"])
    rows = [
        "| executor | wall time, median (runs) | speed-up | scaling efficiency | per task "
        "| less Ray's start-up |",
        "|---|---|---|---|---|---|",
    ]
    for label, ts in times.items():
        t = statistics.median(ts)
        workers = 1 if label == "in-process" else 2
        less = ""
        if label.startswith("Ray"):
            less = (
                f"{t - ray_up:.1f} s: {base / (t - ray_up):.2f}×, {base / (2 * (t - ray_up)):.0%}"
            )
        rows.append(
            f"| {label} | {t:.1f} s ({', '.join(f'{x:.1f}' for x in ts)}) | {base / t:.2f}× "
            f"| {base / (workers * t):.0%} | {t / tasks:.2f} s | {less} |"
        )
    return rows


def main() -> None:
    if "--rewrite" in sys.argv:  # the doc again from the last run's raw times
        write(json.loads(RAW.read_text()))
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = _population(tmp)
        startup = [_ray_startup() for _ in range(REPEATS)]
        scan = _bench("scan", ["scan", str(folder), "--no-cache", "--quiet"], tmp, REPEATS)
        model = next(folder.glob("*lenet5-000-clean-copy0.safetensors"))
        sweep_args = ["compress", str(model), "--data", "builtin:digits", "--time-budget", "3600"]
        sweep = _bench("compress", sweep_args, tmp, max(1, REPEATS - 1))
    raw = {"scan": scan, "sweep": sweep, "ray_startup": startup}
    RAW.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    write(raw)


def write(raw: dict[str, Any]) -> None:
    scan, sweep, startup = raw["scan"], raw["sweep"], raw["ray_startup"]
    ray_up = statistics.median(startup)
    per_model = statistics.median(scan["in-process"]) / 40
    eff = _eff(scan, ray_up)
    est = 10_000 * per_model / (100 * 2 * eff)  # 100 nodes × 2 workers at the measured efficiency
    lines = [
        "## Scale-out: scan and compression sweep on 1 process, 2 processes, Ray\n",
        f"`benchmarks/bench_scale.py` on {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, one torch thread per worker: whole `edgeproof` commands "
        "(the process's wall time), the three executors interleaved, medians; raw times in "
        "`docs/benchmarks/scale.json`. Ray runs a local 2-CPU instance the command starts.\n",
        "### Backdoor scan of 40 model files (`edgeproof scan --no-cache`)\n",
        "40 files: 8 trained models (2 clean + 2 BadNets MLPs and LeNet-5s, digits) copied 5 "
        "times; the default detectors (final-layer, head-probe, FreeEagle 1000 steps per class).\n",
        *_table(scan, 40, ray_up),
        "",
        f"Ray start-up on its own (`ray.init` of a local 2-CPU instance + shutdown): "
        f"**{ray_up:.1f} s** median ({', '.join(f'{x:.1f}' for x in startup)}); it is inside "
        "the Ray row, and the last column takes it out. Each spawned worker also imports torch "
        "once (~2 s, inside the 2-process and Ray rows). At 0.5 s per model the fixed costs are "
        "a large part of a 40-model scan; they are paid once per worker, not per model.\n",
        "### Full compression sweep (`edgeproof compress`, LeNet-5 / builtin:digits, every "
        "default recipe, `--time-budget 3600`)\n",
        *_table(sweep, 17, ray_up),
        "",
        "The fp32 baseline is measured first in the driver, then the 17 candidates are tasks. "
        "Latency and RSS of a candidate are measured inside its worker while the other worker "
        "runs, so on 2 cores they carry that interference; accuracy, drops and every "
        "trust-check number are identical across executors (tests/test_compress_exec.py). On "
        "this small model a candidate costs about 1 s, so the workers' start-up (torch import, "
        "Ray) is most of what parallelism could save: the sweep gains little on 2 CPUs.\n",
        "### Estimate: 10,000 models on 100 nodes\n",
        f"At {per_model:.2f} s per model (the in-process median / 40) and 2 workers per node at "
        f"the Ray scan's scaling efficiency less its start-up ({eff:.0%}), 10,000 such models on "
        f"100 2-CPU nodes take about **{est:.0f} s** of scanning "
        f"({10_000 * per_model / 3600:.1f} CPU-hours in all), plus the cluster's start-up and "
        "reading the files from shared storage. A larger model scales the per-model time "
        "(FreeEagle and the head probe dominate). See docs/scale.md.\n",
    ]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {OUT}")


def _eff(times: dict[str, list[float]], ray_up: float) -> float:
    """The Ray run's scaling efficiency with its start-up taken out."""
    base = statistics.median(times["in-process"])
    return base / (2 * (statistics.median(times["Ray, 2 CPUs"]) - ray_up))


if __name__ == "__main__":
    main()

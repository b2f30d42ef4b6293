"""Time the demo audit, stage by stage: training (uncached), loading, each check, report writing.

Run: ``python benchmarks/bench_demo.py [--repeats 3]``. Writes docs/benchmarks/demo.md.
The demo's goal is "under a minute on 2 cores" for the whole `edgeproof demo` (cached model).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgeproof.data.loading import load_data
from edgeproof.demo import demo_model
from edgeproof.report.files import write_report
from edgeproof.runner import audit

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        model, cached, train_s = demo_model(cache)
        first = time.perf_counter() - t0
        assert not cached
        data = load_data("builtin:digits")

        per_check: dict[str, list[float]] = {}
        totals: list[float] = []
        writes: list[float] = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            report = audit(model, data, seed=r)
            totals.append(time.perf_counter() - t0)
            for c in report.checks:
                per_check.setdefault(f"{c.check} ({c.status})", []).append(c.duration_s)
            t0 = time.perf_counter()
            write_report(report, Path(tmp) / f"out{r}")
            writes.append(time.perf_counter() - t0)

        # the whole CLI, cached model, as a user runs it (includes interpreter start and imports)
        env = dict(os.environ, EDGEPROOF_CACHE=str(cache))
        cli: list[float] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edgeproof.cli",
                    "demo",
                    "--quiet",
                    "--out",
                    str(Path(tmp) / "cli"),
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            cli.append(time.perf_counter() - t0)

    med = statistics.median
    lines = [
        "## Demo audit",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"{args.repeats} repeats, medians. Model: LeNet-5 on builtin:digits (360 test records).",
        "",
        "| stage | median s |",
        "|---|---:|",
        f"| train demo model (uncached, 30 epochs) | {train_s:.2f} |",
        f"| first `demo_model()` incl. training and save | {first:.2f} |",
    ]
    for name, ts in per_check.items():
        lines.append(f"| check `{name}` | {med(ts):.2f} |")
    lines += [
        f"| audit total (all checks) | {med(totals):.2f} |",
        f"| write report.json + report.html | {med(writes):.2f} |",
        f"| `edgeproof demo` end to end, cached model (CLI process) | {med(cli):.2f} |",
        "",
    ]
    out = ROOT / "docs" / "benchmarks" / "demo.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

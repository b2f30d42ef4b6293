"""Each check at the default thread count against 1 and 2 threads: where the default comes from.

Run: ``python benchmarks/bench_threads.py [--repeats 3] [--mnist]`` (writes
docs/benchmarks/threads.md).

Model and data: the demo's workload — ``zoo:lenet5`` trained on ``builtin:digits/train`` (20
epochs, seed 0, as ``tests/conftest.py`` trains it) audited on the 360 ``builtin:digits`` test
records — and, with ``--mnist``, the 28×28 MNIST CNN of ``bench_mnist_audit.py`` (421,642
parameters) on the 1,000 ``builtin:mnist`` test records. For each default check, the public
``edgeproof.audit(model, data, checks=[name], threads=T)`` with ``T`` = 1, 2 and ``None`` (the
default: :func:`edgeproof.runtime.threads.resolve_threads`), runs interleaved (1, 2, default, 1,
2, default, …), each time the runner's own ``duration_s`` of the check; medians of
``--repeats``. The ratio is the default's median over the faster of 1 and 2 threads (≤ 1.0× means
the default is the fastest choice measured).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import edgeproof
from edgeproof.checks import default_checks, get_check
from edgeproof.models import from_module
from edgeproof.models.loading import load_model
from edgeproof.models.train import train_and_save
from edgeproof.runtime.threads import available_cores
from edgeproof.spec import InputSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mnist_audit import mnist_cnn, train

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "threads.md"
SETTINGS = (1, 2, None)


def _time(model: object, data: object, name: str, threads: int | None) -> float:
    report = edgeproof.audit(model, data, [get_check(name)], threads=threads)  # type: ignore[arg-type]
    (result,) = report.checks
    return float(result.duration_s)


def _workloads(tmp: Path, mnist: bool) -> list[tuple[str, object, object]]:
    digits = edgeproof.load_data("builtin:digits/train")
    path = tmp / "lenet5.safetensors"
    train_and_save("zoo:lenet5", digits, path, epochs=20, seed=0, lr=3e-3)
    lenet = load_model(path)
    out: list[tuple[str, object, object]] = [
        ("LeNet-5 / digits (360 records)", lenet, edgeproof.load_data("builtin:digits"))
    ]
    if not mnist:
        return out
    torch.set_num_threads(1)
    net = mnist_cnn()
    mnist_train = edgeproof.load_data("builtin:mnist/train")
    train(net, mnist_train.x, mnist_train.y)
    spec = InputSpec(shape=(1, 28, 28), domain=(0.0, 1.0), kind="image", num_classes=10)
    return [
        ("LeNet-5 / digits (360 records)", lenet, edgeproof.load_data("builtin:digits")),
        (
            "MNIST CNN / mnist (1,000 records)",
            from_module(net, spec),
            edgeproof.load_data("builtin:mnist"),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mnist", action="store_true", help="also the 28×28 MNIST CNN")
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    lines = [
        "## Threads: each check at the default against 1 and 2 threads",
        "",
        f"Machine: {platform.machine()}, {available_cores()} cores available to this process "
        f"(1-minute load average {load0:.1f} at the start); torch {torch.__version__}. Public "
        "`edgeproof.audit(model, data, checks=[name], threads=T)` per check with T = 1, 2 and the "
        "default (`None`: 1, or every core for a check marked `parallel` — only `spectral`), "
        f"interleaved, medians of {args.repeats}; seconds are the runner's `duration_s`. "
        "Ratio = default / the faster of 1 and 2 threads.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for title, model, data in _workloads(Path(tmp), args.mnist):
            rows = []
            noise: list[float] = []
            for name in default_checks():
                times: dict[int | None, list[float]] = {t: [] for t in SETTINGS}
                for _ in range(args.repeats):
                    for t in SETTINGS:
                        times[t].append(_time(model, data, name, t))
                med = {t: statistics.median(v) for t, v in times.items()}
                best = min(med[1], med[2])
                ratio = med[None] / best if best > 0 else 1.0
                if name != "spectral" and med[1] > 0:  # default = 1 thread: the run's noise
                    noise.append(med[None] / med[1])
                rows.append(
                    f"| `{name}` | {med[1]:.2f} | {med[2]:.2f} | {med[None]:.2f} | {ratio:.2f}× |"
                )
                print(title, rows[-1], flush=True)
            lines += [
                f"### {title}",
                "",
                "| check | 1 thread (s) | 2 threads (s) | default (s) | default / best |",
                "|---|---:|---:|---:|---:|",
                *rows,
                "",
                f"For every check but `spectral` the default *is* 1 thread, so its ratio to the "
                f"1-thread column is this run's noise: {min(noise):.2f}–{max(noise):.2f}× here "
                "(medians of interleaved runs on a machine shared with other jobs); a ratio in "
                "that range is not a loss. The 2-thread column is the comparison.",
                "",
            ]
    lines.append(
        "The default is 1 thread for every check but `spectral`, whose eigen-solves run on a "
        "thread pool: on this machine a second intra-op thread mostly adds contention for the "
        "small convolutions and the per-sample loops of the attacks, bit flips and bounds. "
        "Training follows the same rule (`edgeproof train --threads`, default 1); its weights "
        "are reproducible for the same seed and thread count (torch's reductions are ordered "
        "differently with more threads), as `train --help` says."
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

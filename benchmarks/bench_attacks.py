"""Benchmark: cost of one PGD step, against a bare forward+backward and against torchattacks.

One PGD step should cost one forward and one backward pass. For each workload (model, batch) we
time, as medians over repeats after a warm-up:

* ``bare``: ``steps`` × (forward, summed cross-entropy, ``torch.autograd.grad`` w.r.t. the input
  only) on the frozen model — the least work a gradient step can do;
* ``edgeproof``: :class:`edgeproof.attacks.PGD` (L∞, random start, ``keep="last"`` so every sample
  runs every step, as in torchattacks) with ``steps`` steps; its one final forward pass (to judge
  success) is included;
* ``torchattacks``: ``torchattacks.PGD`` 3.5.1 with the same ε, α, steps and random start on the
  same frozen model and batch (its success needs a forward pass outside the call, not included).

Per-step time = total / steps. Targets: edgeproof/bare ≤ 1.2, edgeproof/torchattacks ≤ 1.0.
Also times the three checks on the demo workload (LeNet-5 trained on digits, 360 test samples).
Writes docs/benchmarks/attacks.md.

    python benchmarks/bench_attacks.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchattacks
from torch import nn

from edgeproof.attacks import PGD, Budget, frozen_copy
from edgeproof.models.zoo import build_model

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "attacks.md"


@dataclass(frozen=True)
class Row:
    workload: str
    bare_ms: float
    ours_ms: float
    peer_ms: float

    @property
    def vs_bare(self) -> float:
        return self.ours_ms / self.bare_ms

    @property
    def vs_peer(self) -> float:
        return self.ours_ms / self.peer_ms


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_workload(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                   steps: int, repeats: int) -> Row:
    model = frozen_copy(model)
    alpha = eps * 2.5 / steps

    def bare() -> None:
        for _ in range(steps):
            xg = x.detach().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
            torch.autograd.grad(loss, xg)

    pgd = PGD(steps=steps, keep="last")
    gen = torch.Generator().manual_seed(0)

    def ours() -> None:
        pgd.perturb(model, x, y, Budget("linf", eps), generator=gen)

    peer = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    def theirs() -> None:
        peer(x, y)

    # interleave the three so machine load drifts affect them alike
    t_bare, t_ours, t_peer = [], [], []
    for fn in (bare, ours, theirs):
        fn()  # warm-up
    for _ in range(repeats):
        for fn, acc in ((bare, t_bare), (ours, t_ours), (theirs, t_peer)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    per = 1000.0 / steps
    return Row(name, statistics.median(t_bare) * per, statistics.median(t_ours) * per,
               statistics.median(t_peer) * per)


def bench_checks(repeats: int) -> list[tuple[str, float]]:
    from edgeproof.checks.adversarial import AdversarialCheck
    from edgeproof.checks.base import AuditContext
    from edgeproof.checks.corruption import CorruptionCheck
    from edgeproof.checks.fisher import FisherCheck
    from edgeproof.data.loading import load_data
    from edgeproof.models.loading import from_module
    from edgeproof.models.train import spec_from_data, train_model
    from edgeproof.spec import ThreatModel

    train = load_data("builtin:digits/train")
    test = load_data("builtin:digits")
    module = train_model("zoo:lenet5", train, epochs=12, seed=0, lr=3e-3)
    spec = spec_from_data(train)
    model = from_module(module, spec)
    out = []
    for check in (AdversarialCheck(), CorruptionCheck(), FisherCheck()):
        def run(check: object = check) -> None:
            # a fresh context: the fisher check then pays for its own minimal-ε bisection
            ctx = AuditContext(model=model, data=test,
                               threat=ThreatModel(spec, "linf", (0.01, 0.03, 0.1)))
            check.run(ctx)  # type: ignore[attr-defined]

        out.append((check.name, median_time(run, max(1, repeats // 2))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    workloads = [
        ("lenet5, digits 1×8×8, batch 360", "lenet5", (1, 8, 8), 10, 360, 0.1),
        ("resnet8, 3×32×32, batch 64", "resnet8", (3, 32, 32), 10, 64, 8 / 255),
        ("mlp, 3×32×32, batch 256", "mlp", (3, 32, 32), 10, 256, 8 / 255),
    ]
    for label, arch, shape, k, n, eps in workloads:
        torch.manual_seed(0)
        model = build_model(arch, shape, k).eval()
        x = torch.rand((n, *shape), generator=gen)
        y = torch.randint(0, k, (n,), generator=gen)
        rows.append(bench_workload(label, model, x, y, eps=eps, steps=10, repeats=args.repeats))
        print(rows[-1])
    checks = bench_checks(args.repeats)
    print(checks)
    lines = [
        "## Attacks: cost of a PGD step",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch "
        f"{torch.__version__}, {torch.get_num_threads()} intra-op thread(s); torchattacks "
        f"{torchattacks.__version__}. Medians of {args.repeats} repeats (interleaved), 10 "
        "steps, L∞ PGD with random start; per-step milliseconds. Untrained zoo models with "
        "random inputs (the cost of a step does not depend on the weights).",
        "",
        "| workload | bare fwd+bwd (ms) | edgeproof PGD (ms/step) | torchattacks PGD (ms/step) "
        "| edgeproof / bare (target ≤ 1.2) | edgeproof / torchattacks (target ≤ 1.0) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.workload} | {r.bare_ms:.2f} | {r.ours_ms:.2f} | {r.peer_ms:.2f} | "
                     f"{r.vs_bare:.2f} | {r.vs_peer:.2f} |")
    lines += [
        "",
        "*bare*: forward, summed cross-entropy and `torch.autograd.grad` w.r.t. the input of the "
        "frozen model. *edgeproof* includes its final forward pass (success judged on the final "
        "iterate); torchattacks' time does not include one. Where the model is cheap relative "
        "to its input (the MLP on 3×32×32), that final forward and the step's elementwise work "
        "(sign, scaled add, one clamp to the precomputed ε-ball ∩ domain bounds) are a visible "
        "share of a step.",
        "",
        "### Check runtime on the demo workload",
        "",
        "LeNet-5 trained on digits (12 epochs), 360 test samples, ε = 0.01, 0.03, 0.1 (L∞), "
        f"default settings, median of {max(1, args.repeats // 2)} runs, fresh audit context each "
        "(the fisher check then runs its own minimal-ε bisection; in an audit it reuses the "
        "adversarial check's).",
        "",
        "| check | seconds |",
        "|---|---:|",
        *[f"| {name} | {sec:.2f} |" for name, sec in checks],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Audit a pretrained model whose normalisation happens outside it.

Most published checkpoints expect ``(x - mean) / std`` done by the data pipeline, not by the
network. Tell edgeproof the mean and std: data, the domain, ε, attacks and corruptions then stay
in raw input units (here pixels in [0, 1]) and the model sees normalised inputs.

    python examples/audit_pretrained.py --out runs/pretrained
"""

from __future__ import annotations

import copy
import sys

from _common import parser, trained_model
from torch import nn

from edgeproof import audit, get_check, load_data
from edgeproof.models import from_module
from edgeproof.models.zoo import Normalize
from edgeproof.report.files import write_report
from edgeproof.runner import resolve_threat


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    demo = trained_model(args.model)
    assert isinstance(demo.module, nn.Sequential) and isinstance(demo.module[0], Normalize)
    # play the user's checkpoint: the same network with its Normalize layer taken out
    mean, std = demo.module[0].as_tuple()
    net = copy.deepcopy(demo.module)
    net[0] = nn.Identity()
    assert demo.spec is not None
    model = from_module(net, demo.spec.with_(normalization=None))

    data = load_data("builtin:digits")  # raw pixels in [0, 1]
    threat = resolve_threat(model, data, mean=mean, std=std)
    checks = [
        get_check("performance"),
        get_check("calibration", resamples=50),
        get_check("adversarial", pgd_steps=10, apgd_steps=10, max_samples=60),
    ]
    report = audit(model, data, checks, threat=threat, seed=0)
    files = write_report(report, args.out)

    print(f"ε (raw pixel units): {list(threat.eps)}")
    for name in ("performance.accuracy", "calibration.ece"):
        print(f"{name} = {report.metric_value(name):.3f}")
    for check in report.checks:
        print(f"{check.check}: {check.status} — {check.summary}")
    print(f"report: {files.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI subcommand ``edgeproof protect``: export the top 1P-DNL-scored sign bits as a protect set."""

from __future__ import annotations

import argparse

from edgeproof.errors import OptionError
from edgeproof.methods.dnl import candidate_set, protect_set, validate_budget

__all__ = ["add_commands"]

_EPILOG = """example:
  edgeproof protect model.safetensors --budget 0.0001 --out protect.json
    protects the sign bits of the top 0.01% parameters by 1P-DNL score (JSON: tensor, index)"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``protect`` on the CLI's subparsers."""
    p = sub.add_parser(
        "protect",
        help="export the most fragile weight sign bits (1P-DNL) as a protect set",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model file (needs a runnable PyTorch module)")
    p.add_argument("--arch", default=None, help="architecture, e.g. zoo:resnet20")
    p.add_argument("--budget", default="0.0001", help="fraction of parameters in (0, 1]")
    p.add_argument("--layers", type=int, default=10, help="first L weight layers scored")
    p.add_argument("--out", required=True, help="output JSON path (written atomically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Gaussian-noise input")
    p.set_defaults(handler=run_protect)


def run_protect(args: argparse.Namespace) -> int:
    from edgeproof.models.loading import load_model

    budget = validate_budget(args.budget, "--budget")
    model = load_model(args.model, arch=args.arch)
    if model.module is None or model.spec is None:
        raise OptionError(
            "--arch",
            f"{args.model} has no runnable PyTorch module with a known input shape",
            "pass --arch (e.g. zoo:resnet20) for a weights-only file",
        )
    cands = candidate_set(
        model.module,
        kind="1p-dnl",
        num_layers=args.layers,
        input_shape=model.spec.shape,
        normalization=model.spec.normalization,
        seed=args.seed,
    )
    ps = protect_set(cands, budget)
    path = ps.save(args.out)
    print(f"{path}: {len(ps.bits)} sign bits protected ({100 * budget:g}% of {ps.num_parameters})")
    return 0

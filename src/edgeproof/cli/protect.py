"""``edgeproof protect``: export the top 1P-DNL-scored sign bits as a protect set."""

from __future__ import annotations

import argparse

from edgeproof.cli import options
from edgeproof.cli.app import formatter

__all__ = ["register", "run"]

_EPILOG = """example:
  edgeproof protect model.safetensors --budget 0.0001 --out protect.json
    protects the sign bits of the top 0.01% parameters by 1P-DNL score (JSON: tensor, index)"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "protect",
        help="export the most fragile weight sign bits (1P-DNL) as a protect set",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    options.add_model(p, help="model file (needs a runnable PyTorch module)")
    p.add_argument("--budget", default="0.0001", help="fraction of parameters in (0, 1]")
    p.add_argument(
        "--layers", type=options.at_least(1), default=10, help="first L weight layers scored"
    )
    options.add_output(p, default=None, help="output JSON path (written atomically)")
    options.add_seed(p, help="seed of the Gaussian-noise input")
    options.add_threads(p, default="1")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.errors import OptionError, param
    from edgeproof.methods.dnl import candidate_set, protect_set, validate_budget
    from edgeproof.runtime.threads import torch_threads

    options.check_outputs([args.out], options.model_inputs(args))
    budget = validate_budget(args.budget, "budget")
    model = options.load_model_arg(args)
    if model.module is None or model.spec is None:
        raise OptionError(
            "arch",
            f"{args.model} has no runnable PyTorch module with a known input shape",
            f"pass {param('arch')} (e.g. zoo:resnet20) for a weights-only file",
        )
    with torch_threads(args.threads or 1):
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

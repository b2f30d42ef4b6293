"""``edgeproof train``: train a zoo model on a dataset and save it with its sidecar metadata."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError
from edgeproof.models.catalog import ZOO_DESCRIPTIONS

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    zoo_lines = "\n".join(f"  zoo:{name:<10} {text}" for name, text in ZOO_DESCRIPTIONS.items())
    t = sub.add_parser(
        "train",
        help="train a zoo architecture on a dataset (deterministic) and save it",
        formatter_class=formatter,
        description="Train ARCH on DATA with Adam (seeded: the same seed and thread count give "
        "the same weights), then write OUT (.safetensors) and its sidecar .json "
        "(architecture, input spec, classes, training settings).",
        epilog=textwrap.dedent("""\
            example:
              edgeproof train --arch zoo:lenet5 --data builtin:digits/train --epochs 20 \\
                  --seed 0 --out model.safetensors

            architectures:
            """)
        + zoo_lines,
    )
    t.add_argument("--arch", required=True, help="zoo:NAME or package.module:callable")
    options.add_data(
        t,
        required=True,
        help="training data: .npz, .csv, image folder, IDX, CIFAR-10 binary, or "
        "builtin:digits/train / builtin:breast-cancer/train",
    )
    options.add_output(t, default=None, help="output .safetensors path (sidecar .json next to it)")
    t.add_argument(
        "--epochs", type=options.at_least(1), default=20, help="passes over the data (default 20)"
    )
    options.add_seed(t, help="seed for init and data order")
    t.add_argument(
        "--batch-size", type=options.at_least(1), default=64, help="mini-batch size (default 64)"
    )
    t.add_argument(
        "--lr", type=options.positive_float, default=1e-3, help="Adam learning rate (default 1e-3)"
    )
    options.add_threads(t, default="1 (small models train fastest on one thread)")
    t.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load, train, save, print one summary line."""
    from edgeproof.models.train import train_and_save
    from edgeproof.runtime.threads import torch_threads

    out = Path(args.out)
    if out.suffix not in ("", ".safetensors"):
        raise OptionError("out", f"{out} must end in .safetensors", "e.g. model.safetensors")
    options.check_outputs([out, out.with_suffix(".json")], [args.data])
    data = options.load_data_arg(args, args.data)
    with torch_threads(args.threads or 1):
        trained = train_and_save(
            args.arch,
            data,
            out,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
        )
    path = trained.path
    print(
        f"wrote {path} and {path.with_suffix('.json').name} "
        f"({args.arch}, train accuracy {trained.settings.train_accuracy:.2%})"
    )
    return 0

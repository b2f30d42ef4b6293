"""``edgeproof train``: train a zoo model on a dataset and save it with its sidecar metadata."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from edgeproof.errors import OptionError

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``train`` subcommand."""
    from edgeproof.models.zoo import ZOO

    zoo_lines = "\n".join(f"  zoo:{e.name:<10} {e.description}" for e in ZOO.values())
    t = sub.add_parser(
        "train",
        help="train a zoo architecture on a dataset (deterministic) and save it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train ARCH on DATA with Adam (seeded, deterministic: the same seed gives "
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
    t.add_argument(
        "--data",
        required=True,
        help="training data: .npz, .csv, image folder, IDX, "
        "CIFAR-10 binary, or builtin:digits/train / builtin:breast-cancer/train",
    )
    t.add_argument(
        "--out", required=True, help="output .safetensors path (sidecar .json next to it)"
    )
    t.add_argument("--epochs", type=int, default=20, help="passes over the data (default 20)")
    t.add_argument("--seed", type=int, default=0, help="seed for init and data order (default 0)")
    t.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--x-key", default="x", help="array name of inputs in .npz (default x)")
    t.add_argument("--y-key", default="y", help="array name of labels in .npz (default y)")
    t.add_argument("--label-column", default="label", help="label column in .csv (default label)")
    t.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``edgeproof train``: load, train, save, print one summary line."""
    from edgeproof.data.loading import load_data
    from edgeproof.models.train import train_and_save

    out = Path(args.out)
    if out.suffix not in ("", ".safetensors"):
        raise OptionError(
            "--out", f"{out} must end in .safetensors", "e.g. --out model.safetensors"
        )
    data = load_data(args.data, x_key=args.x_key, y_key=args.y_key, label_column=args.label_column)
    data.validate()
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

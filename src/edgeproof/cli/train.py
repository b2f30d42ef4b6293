"""``edgeproof train``: train a zoo model on a dataset and save it with its sidecar metadata."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError
from edgeproof.models.catalog import ZOO_DESCRIPTIONS

if TYPE_CHECKING:
    from edgeproof.models.train import EpochStats

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    t.set_defaults(handler=run)


@contextmanager
def epoch_progress(enabled: bool, epochs: int) -> Iterator[Callable[[EpochStats], None] | None]:
    """A rich bar over the epochs (on stderr) and one line per finished epoch: loss, running
    training accuracy, seconds. ``None`` (no reporting) when not ``enabled``."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=epochs, last="")

        def report(s: EpochStats) -> None:
            line = f"loss {s.loss:.4f} · train acc {s.accuracy:.2%}"
            bar.console.print(
                f"epoch {s.epoch:>{len(str(s.epochs))}}/{s.epochs}  {line}  ({s.seconds:.1f} s)",
                highlight=False,
            )
            bar.update(task, completed=s.epoch, last=line)

        yield report


def run(args: argparse.Namespace) -> int:
    """Load, train, save, print one summary line."""
    from edgeproof.models.train import train_and_save
    from edgeproof.runtime.threads import torch_threads

    out = Path(args.out)
    if out.suffix not in ("", ".safetensors"):
        raise OptionError("out", f"{out} must end in .safetensors", "e.g. model.safetensors")
    options.check_outputs([out, out.with_suffix(".json")], [args.data])
    data = options.load_data_arg(args, args.data)
    with torch_threads(args.threads or 1), epoch_progress(not args.quiet, args.epochs) as report:
        trained = train_and_save(
            args.arch,
            data,
            out,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            on_epoch=report,
        )
    path = trained.path
    print(
        f"wrote {path} and {path.with_suffix('.json').name} "
        f"({args.arch}, train accuracy {trained.settings.train_accuracy:.2%})"
    )
    return 0

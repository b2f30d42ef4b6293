"""``edgeproof make-population``: train a labelled population of clean and backdoored models.

A thin shell over :func:`edgeproof.testing.backdoor.make_population`: every model is written as
``<name>.safetensors`` + ``<name>.json`` (architecture, input spec, training settings, and a
``backdoor`` record: label, trigger family, target class, poisoning rate, clean accuracy, attack
success rate), with a ``population.json`` index. Deterministic by ``--seed`` (on the same
machine and thread count). Models already in OUT with the same recorded plan are reused.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError

__all__ = ["parse_rate", "register", "run"]

#: built-in data → the zoo architectures trained on it by default
_DATA_ARCHS: dict[str, tuple[str, ...]] = {
    "builtin:digits": ("zoo:lenet5", "zoo:mlp"),
    "builtin:synth-ecg": ("zoo:cnn1d",),
}
_FAMILIES = ("badnets", "blend", "label-flip", "sine-burst", "step")

_EPILOG = textwrap.dedent("""\
    examples:
      edgeproof make-population runs/pop --clean 20 --backdoored 20 --seed 1
      edgeproof make-population runs/ecg --clean 5 --backdoored 5 --data builtin:synth-ecg
      edgeproof make-population runs/pop --clean 2 --backdoored 4 --families badnets,blend \\
          --poison-rate 0.05,0.1 --archs zoo:mlp

    attack families: badnets, blend, label-flip (images); sine-burst, step, label-flip
    (time series). A poisoned model whose attack success rate stays below 90% is labelled
    attack-failed, not backdoored.""")


def parse_rate(text: str) -> tuple[float, float]:
    """``"0.1"`` → ``(0.1, 0.1)``; ``"0.05,0.15"`` → ``(0.05, 0.15)`` (checked by the spec)."""
    vals = options.csv_floats("poison_rate", text)
    if len(vals) not in (1, 2):
        raise OptionError(
            "poison_rate", f"{text!r} is not one rate or a low,high range", "use e.g. 0.05,0.15"
        )
    return (vals[0], vals[-1])


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "make-population",
        help="train clean and backdoored zoo models with ground-truth labels",
        formatter_class=formatter,
        description="Train --clean clean and --backdoored poisoned models per architecture on "
        "built-in data (BadNets patches, blended triggers, label flips; sine-burst and step "
        "triggers for time series), measure each one's clean accuracy and attack success rate, "
        "and write them with their labels to OUT.",
        epilog=_EPILOG,
    )
    p.add_argument("out", metavar="OUT", help="output folder (created)")
    p.add_argument(
        "--clean", type=options.at_least(0), required=True, help="clean models per architecture"
    )
    p.add_argument(
        "--backdoored",
        type=options.at_least(0),
        required=True,
        help="poisoned models per architecture",
    )
    p.add_argument(
        "--data",
        default="builtin:digits",
        help="built-in training data: builtin:digits (images: zoo:lenet5, zoo:mlp) or "
        "builtin:synth-ecg (time series: zoo:cnn1d); default builtin:digits",
    )
    p.add_argument("--archs", help="comma-separated zoo architectures (default: those of --data)")
    p.add_argument(
        "--families",
        help=f"comma-separated attack families, taken in turn (default: every family that "
        f"applies; {', '.join(_FAMILIES)})",
    )
    p.add_argument(
        "--poison-rate",
        default="0.05,0.15",
        metavar="LOW,HIGH",
        help="poisoning rate range in (0, 1), drawn uniformly (default 0.05,0.15)",
    )
    p.add_argument(
        "--epochs",
        type=options.at_least(1),
        default=None,
        help="training epochs (default: 20 for digits models, 15 for zoo:cnn1d)",
    )
    options.add_seed(p, help="population seed (plan and every model's training seed)")
    options.add_threads(p, default="1")
    options.add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.outputs import Output
    from edgeproof.runtime.threads import torch_threads
    from edgeproof.testing.backdoor import PopulationMember, PopulationSpec, make_population

    if args.data not in _DATA_ARCHS:
        raise OptionError(
            "data",
            f"{args.data!r} is not built-in training data of a population",
            f"use one of {', '.join(_DATA_ARCHS)}",
        )
    archs = (
        tuple("zoo:" + a.strip().removeprefix("zoo:") for a in args.archs.split(",") if a.strip())
        if args.archs
        else _DATA_ARCHS[args.data]
    )
    wrong = [a for a in archs if a in _other_archs(args.data)]
    if wrong:
        raise OptionError(
            "archs",
            f"{', '.join(wrong)} does not train on {args.data}",
            f"use {', '.join(_DATA_ARCHS[args.data])}, or the data those take",
        )
    families = (
        tuple(f.strip() for f in args.families.split(",") if f.strip()) if args.families else None
    )
    spec = PopulationSpec(
        archs=archs,
        clean_per_arch=args.clean,
        backdoored_per_arch=args.backdoored,
        families=families,  # validated by the spec
        poison_rate=parse_rate(args.poison_rate),
        epochs=args.epochs,
        seed=args.seed,
    )
    spec.validate()  # a bad spec is one line, exit 2, before anything is trained
    options.check_outputs([Output.folder(args.out, ["population.json"])], [])

    def progress(m: PopulationMember) -> None:
        if args.quiet:
            return
        asr = "-" if m.attack_success_rate is None else f"{m.attack_success_rate:.2f}"
        target = "-" if m.target is None else str(m.target)
        print(
            f"  {m.spec.name}: {m.label} (family {m.family}, target {target}, clean accuracy "
            f"{m.clean_accuracy:.3f}, ASR {asr})",
            file=sys.stderr,
        )

    with torch_threads(args.threads or 1):
        pop = make_population(spec, args.out, progress=progress)
    counts = {lab: len(pop.with_label(lab)) for lab in ("clean", "backdoored", "attack-failed")}
    print(
        f"wrote {len(pop.members)} models and population.json to {args.out}: "
        f"{counts['clean']} clean, {counts['backdoored']} backdoored, "
        f"{counts['attack-failed']} attack-failed (ASR < {spec.asr_threshold:.0%})"
    )
    return 0


def _other_archs(data: str) -> set[str]:
    return {a for d, archs in _DATA_ARCHS.items() if d != data for a in archs}

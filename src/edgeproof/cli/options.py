"""Option groups shared by the commands, and their translation into library arguments.

Each ``add_*`` function adds one group to a parser; the matching ``*_kwargs`` / ``load_*``
function turns the parsed values into the arguments of one library call. Values are checked
where they are parsed (argparse ``type=`` functions), so a bad number is one line naming the
option, exit 2, before any work is done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.errors import OptionError

if TYPE_CHECKING:
    from edgeproof.data.dataset import Dataset
    from edgeproof.models.loaded import LoadedModel

__all__ = [
    "add_data",
    "add_interface",
    "add_model",
    "add_output",
    "add_quiet",
    "add_seed",
    "add_spec",
    "add_threads",
    "at_least",
    "csv_floats",
    "csv_ints",
    "data_kwargs",
    "interface_arg",
    "load_data_arg",
    "load_model_arg",
    "spec_kwargs",
]


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def csv_ints(option: str, text: str) -> tuple[int, ...]:
    """``"1,8,8"`` → ``(1, 8, 8)``; ``option`` is the library parameter it sets."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OptionError(
            option, f"{text!r} is not a comma-separated list of integers", "use e.g. 3,32,32"
        ) from None


def csv_floats(option: str, text: str, n: int | None = None) -> tuple[float, ...]:
    """``"0,1"`` → ``(0.0, 1.0)``; exactly ``n`` values when ``n`` is given."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if not vals or (n is not None and len(vals) != n):
        count = f"{n} " if n is not None else ""
        raise OptionError(option, f"{text!r} is not {count}comma-separated numbers", "use e.g. 0,1")
    return vals


# --------------------------------------------------------------------------------------------
# Model


def add_model(p: argparse.ArgumentParser, *, help: str) -> None:
    """``MODEL``, ``--arch`` and the trust flag."""
    p.add_argument("model", help=help)
    p.add_argument("--arch", help="architecture for weights: zoo:NAME or package.module:callable")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="this file may run code: allow unpickling and TorchScript outside the pure-tensor "
        "allowlist (only for files you trust)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="the same as --trust-code (kept for old scripts)",
    )


def add_interface(p: argparse.ArgumentParser) -> None:
    """``--input --input-value --output --scores``: how to call a model whose forward is not
    ``logits = f(x)`` (:class:`edgeproof.models.interface.ModelInterface`)."""
    g = p.add_argument_group("model interface (models with several inputs or outputs)")
    g.add_argument(
        "--input",
        metavar="NAME",
        help="the model input the data feeds (an ONNX input or forward argument; default: the "
        "first); the other inputs get --input-value, sr=16000, or zeros of their declared shape",
    )
    g.add_argument(
        "--input-value",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="value of another scalar input, e.g. sr=16000 (repeatable)",
    )
    g.add_argument(
        "--output",
        type=at_least(0),
        metavar="INDEX",
        help="which output holds the class scores, for models with several outputs",
    )
    g.add_argument(
        "--scores",
        choices=["logits", "probabilities"],
        help="what that output holds (default: logits; a single column, class 1's score, "
        "must say which)",
    )


def interface_arg(args: argparse.Namespace) -> Any:
    """The :class:`~edgeproof.models.interface.ModelInterface` of the interface options (the
    default one for commands without them)."""
    from edgeproof.models.interface import ModelInterface

    values: dict[str, float] = {}
    for item in getattr(args, "input_value", None) or []:
        name, sep, text = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            values[name.strip()] = float(text)
        except ValueError:
            raise OptionError(
                "input_values", f"{item!r} is not NAME=NUMBER", "e.g. sr=16000"
            ) from None
    return ModelInterface(
        input=getattr(args, "input", None),
        input_values=values,
        output=getattr(args, "output", None),
        scores=getattr(args, "scores", None),
    )


def load_model_arg(args: argparse.Namespace) -> LoadedModel:
    """The model the ``add_model`` (and ``add_interface``) options name."""
    from edgeproof.models.loading import load_model

    trust = bool(args.trust_code or args.trust_pickle)
    return load_model(args.model, arch=args.arch, trust_code=trust, interface=interface_arg(args))


def model_inputs(args: argparse.Namespace) -> list[str]:
    """The files reading the model touches: the model and its sidecar metadata."""
    from pathlib import Path

    return [args.model, str(Path(args.model).with_suffix(".json"))]


def check_outputs(outputs: list[Any], inputs: list[Any]) -> None:
    """Refuse, before anything is read, an output that is, contains or would replace an input
    (:func:`edgeproof.outputs.check_output_paths`)."""
    from edgeproof.outputs import check_output_paths

    check_output_paths(outputs, inputs)


def report_folder(out: str) -> Any:
    """The ``--out`` folder of a command that writes a report."""
    from edgeproof.outputs import Output

    return Output.folder(out, ["report.json", "report.html"])


# --------------------------------------------------------------------------------------------
# Data


def add_data(
    p: argparse.ArgumentParser,
    *,
    required: bool = False,
    help: str | None = None,
    repeatable: bool = False,
) -> None:
    """``--data`` (``repeatable``: given once per data set, a list) and the options that say
    how to read a data file."""
    p.add_argument(
        "--data",
        required=required,
        action="append" if repeatable else "store",
        help=help
        or "data: .npz, .csv, image folder, IDX, CIFAR-10 binary, or builtin:digits / "
        "builtin:breast-cancer / builtin:synth-ecg",
    )
    g = p.add_argument_group("data files")
    g.add_argument("--x-key", default="x", help="array name of inputs in .npz (default x)")
    g.add_argument("--y-key", default="y", help="array name of labels in .npz (default y)")
    g.add_argument(
        "--label-column",
        default="label",
        help="label column in .csv: its header name, or its position (0-based; negative counts "
        "from the end, -1 = last column) (default label)",
    )
    g.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the .csv's first row names the columns (default: detected; a first row "
        "of numbers only is data)",
    )
    g.add_argument("--classes", help="comma-separated class names, in label order")


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_data`` keyword arguments of the data-file options."""
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return {
        "x_key": args.x_key,
        "y_key": args.y_key,
        "label_column": args.label_column,
        "header": args.header,
        "classes": classes,
    }


def load_data_arg(args: argparse.Namespace, source: str, **extra: Any) -> Dataset:
    """The dataset ``source`` (a path or ``builtin:NAME``) read with the data-file options."""
    from edgeproof.data.loading import load_data

    data = load_data(source, **data_kwargs(args), **extra)
    data.validate()
    return data


# --------------------------------------------------------------------------------------------
# Input specification and threat model


def add_spec(p: argparse.ArgumentParser, *, threat: bool = True) -> None:
    """``--shape --domain --kind`` and, with ``threat``, ``--norm --eps``."""
    g = p.add_argument_group("input specification (inferred from metadata and data when omitted)")
    g.add_argument("--shape", help="sample shape without batch, e.g. 1,8,8")
    g.add_argument("--domain", help="value domain lo,hi of valid inputs, e.g. 0,1")
    g.add_argument(
        "--kind", choices=["image", "timeseries", "tabular"], help="kind of input signal"
    )
    g.add_argument(
        "--mean",
        help="per-channel mean the model expects subtracted outside it, e.g. 0.485,0.456,0.406 "
        "(with --std; edgeproof applies (x - mean) / std, data and eps stay in raw units)",
    )
    g.add_argument("--std", help="per-channel std of that normalisation, e.g. 0.229,0.224,0.225")
    g.add_argument(
        "--feature-bounds",
        metavar="FILE",
        help="CSV of lo,hi rows, one per feature (or channel): the audit then measures eps "
        "as a fraction of each feature's range (tabular data without a domain get the data's "
        "own per-feature min/max)",
    )
    if threat:
        g.add_argument(
            "--norm",
            default="linf",
            choices=["linf", "l2"],
            help="threat-model norm (default linf)",
        )
        g.add_argument(
            "--eps",
            help="perturbation budgets, comma-separated, e.g. 0.01,2/255 "
            "(default: 1%%, 3%%, 10%% of the domain width)",
        )


def spec_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``resolve_threat`` keyword arguments of the spec options."""
    from edgeproof.spec import parse_eps_list

    out: dict[str, Any] = {
        "shape": csv_ints("shape", args.shape) if args.shape else None,
        "domain": csv_floats("domain", args.domain, 2) if args.domain else None,
        "kind": args.kind,
        "mean": csv_floats("mean", args.mean) if args.mean else None,
        "std": csv_floats("std", args.std) if args.std else None,
        "feature_bounds": _bounds(args.feature_bounds) if args.feature_bounds else None,
    }
    if hasattr(args, "eps"):
        out["norm"] = args.norm
        out["eps"] = parse_eps_list(args.eps) if args.eps else None
    return out


def _bounds(path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from edgeproof.data.bounds import read_feature_bounds

    return read_feature_bounds(path)


# --------------------------------------------------------------------------------------------
# Running


def add_threads(p: argparse.ArgumentParser, *, default: str) -> None:
    """``--threads N``: the CPU threads the command may use (torch, ONNX Runtime, hashing)."""
    p.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        metavar="N",
        help=f"CPU threads this command may use (torch, ONNX Runtime, hashing); default {default}",
    )


def add_seed(p: argparse.ArgumentParser, *, help: str = "seed for every random choice") -> None:
    p.add_argument("--seed", type=at_least(0), default=0, help=f"{help} (default 0)")


def add_output(
    p: argparse.ArgumentParser, *, default: str | None, help: str, metavar: str | None = None
) -> None:
    p.add_argument("--out", default=default, required=default is None, help=help, metavar=metavar)


def add_json(p: argparse.ArgumentParser, *, what: str) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} as JSON to stdout (progress and the summary go to stderr)",
    )


def summary_console(args: argparse.Namespace) -> Any:
    """The rich console for a command's summary: stderr when ``--json`` keeps stdout for the
    JSON, stdout otherwise."""
    from rich.console import Console

    return Console(stderr=bool(getattr(args, "json", False)))


def emit_file(path: str | Path) -> None:
    """Copy a file this command wrote (report.json, a seal) to stdout, as written.

    A reader that closes the pipe early (``| head``) ends the command quietly: the
    BrokenPipeError reaches :func:`edgeproof.cli.app.main`, which exits 0 without a traceback.
    """
    text = Path(path).read_text(encoding="utf-8")
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def add_settings(p: argparse.ArgumentParser) -> None:
    """``--set CHECK.SETTING=VALUE`` (repeatable): one check's setting, as its library name."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CHECK.SETTING=VALUE",
        help="a check's setting, e.g. adversarial.max_samples=1000 or certify.methods=ibp,crown "
        "(repeatable; values: numbers, true/false, none, comma lists; each check's settings are "
        "listed in its class's docstring, docs/api.md)",
    )


def _setting_value(text: str) -> Any:
    def one(t: str) -> Any:
        low = t.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        for kind in (int, float):
            try:
                return kind(t)
            except ValueError:
                pass
        return t.strip()

    if "," in text:
        return [one(t) for t in text.split(",") if t.strip()]
    return one(text)


def check_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``--set`` as ``{check: {setting: value}}``; a malformed entry is an OptionError."""
    from edgeproof.errors import OptionError

    out: dict[str, dict[str, Any]] = {}
    for entry in getattr(args, "set", None) or []:
        key, eq, value = entry.partition("=")
        check, dot, setting = key.strip().partition(".")
        if not (eq and dot and check and setting):
            raise OptionError(
                "set",
                f"{entry!r} is not CHECK.SETTING=VALUE",
                "write e.g. --set adversarial.max_samples=1000",
            )
        out.setdefault(check, {})[setting] = _setting_value(value)
    return out


def build_checks(names: list[str] | None, settings: dict[str, dict[str, Any]]) -> list[Any] | None:
    """The checks to run: ``names`` (default: the default checks) built with ``settings``;
    ``None`` when neither names nor settings were given (the library's default)."""
    if names is None and not settings:
        return None
    from edgeproof.checks import check_info, default_checks, get_check
    from edgeproof.errors import OptionError

    chosen = names if names is not None else default_checks()
    for check in settings:
        check_info(check)  # an unknown check name is an OptionError naming the choices
        if check not in chosen:
            raise OptionError(
                "set",
                f"{check} has settings but does not run",
                f"add it to --checks ({','.join([*chosen, check])})",
            )
    return [get_check(n, **settings.get(n, {})) for n in chosen]


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def add_jobs(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--jobs N``: how many workers run the command's tasks."""
    p.add_argument("--jobs", type=at_least(1), default=None, metavar="N", help=help)


def jobs_arg(args: argparse.Namespace) -> int:
    """``--jobs``, or the available cores when the tasks run outside this process (1 in it)."""
    from edgeproof.runtime.threads import available_cores

    if args.jobs is not None:
        return int(args.jobs)
    return 1 if args.executor == "inprocess" else available_cores()


def add_executor(p: argparse.ArgumentParser, *, per: str, default: str) -> None:
    """``--executor``, ``--ray-address``: where the command's tasks (one per ``per``) run."""
    p.add_argument(
        "--executor",
        choices=("inprocess", "processes", "ray"),
        default=default,
        help=f"where the tasks run, one per {per}: this process, a local pool of --jobs "
        f"processes, or Ray (pip install 'edgeproof[ray]') (default {default})",
    )
    p.add_argument(
        "--ray-address",
        metavar="HOST:PORT|auto",
        default=None,
        help="with --executor ray: the cluster's head (its GCS port, as `ray start --head` "
        "printed) or 'auto' on a cluster node; default: start Ray here with --jobs CPUs",
    )

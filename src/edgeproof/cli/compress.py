"""``edgeproof compress``: search compression candidates, re-audit each, write the chosen one.

The threat model of the re-audit is resolved exactly as ``edgeproof audit`` resolves it (the same
``--shape --domain --kind --norm --eps`` options, the same defaults), and every candidate is
attacked at its largest ε. The command exits like ``audit``: after writing everything, 2 when a
re-audit check refused its input, 3 when one crashed (one stderr line per such check).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.cli import options
from edgeproof.cli.app import formatter
from edgeproof.errors import OptionError, param

if TYPE_CHECKING:
    from rich.console import Console

    from edgeproof.compress.api import CompressionResult
    from edgeproof.compress.search import Budget, Progress
    from edgeproof.data.dataset import Dataset
    from edgeproof.models.loaded import LoadedModel
    from edgeproof.spec import InputSpec

__all__ = ["parse_drop", "parse_size", "register", "run", "trust_errors_exit"]


def parse_drop(text: str, name: str = "max_drop") -> float:
    """``"1%"`` → 0.01, ``"0.5%"`` → 0.005, ``"0.02"`` → 0.02 (absolute accuracy drop); errors
    name the library parameter ``name``."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise OptionError(
            name, f"{text!r} is not a number or percentage", "use e.g. 1% or 0.01"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise OptionError(name, f"{text!r} is outside [0%, 100%]", "use e.g. 1%")
    return value


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_size(text: str) -> int:
    """``"200KB"`` → 200000, ``"1.5MiB"`` → 1572864, ``"4096"`` → 4096 bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _UNITS:
        raise OptionError("max_size", f"{text!r} is not a size", "use e.g. 200KB, 1.5MiB or 4096")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise OptionError("max_size", f"{text!r} is not positive", "use e.g. 200KB")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compress",
        help="quantize/prune/factor a model, re-audit every candidate, pick one under a budget",
        description="Search compression candidates, measure each on its exported ONNX graph, "
        "re-audit it, and write the chosen one with the whole ledger.",
        epilog="example: edgeproof compress model.safetensors --arch zoo:cnn-lstm "
        "--data builtin:synth-ecg/train --eval builtin:synth-ecg --max-drop 1% "
        "--max-size 200KB --time-budget 120 --early-exit --out runs/c  "
        "(--executor processes --jobs 2: two candidates at a time; exit 2 when a re-audit "
        "check refused its input, 3 when one crashed)",
        formatter_class=formatter,
    )
    options.add_model(
        p,
        help="model file (.safetensors with sidecar, .pt2, TorchScript, or an ONNX graph: "
        "quantized in place, re-audited forward-only)",
    )
    options.add_interface(p)
    options.add_data(p, required=True, help="calibration data (npz/csv/builtin:NAME)")
    p.add_argument(
        "--eval",
        default=None,
        help="evaluation data (default: the part of --data not used to calibrate)",
    )
    p.add_argument("--max-drop", default=None, help="largest accuracy drop allowed, e.g. 1%%")
    p.add_argument(
        "--max-class-drop",
        default=None,
        help="largest drop of any one class's accuracy, e.g. 3%% (default 3x --max-drop, "
        "or 5%% without one)",
    )
    p.add_argument("--max-size", default=None, help="largest ONNX size, e.g. 200KB")
    p.add_argument(
        "--time-budget",
        type=options.positive_float,
        default=120.0,
        help="search time in seconds (default 120)",
    )
    options.add_threads(p, default="1")
    options.add_executor(p, per="candidate", default="inprocess")
    options.add_jobs(
        p,
        help="workers building and measuring candidates at once, each on --threads threads "
        "(default: the available cores with --executor processes or ray)",
    )
    options.add_seed(p)
    p.add_argument(
        "--early-exit",
        action="store_true",
        help="also try exit heads at intermediate blocks (zoo backbones), thresholds to --max-drop",
    )
    p.add_argument(
        "--exit-criterion",
        choices=("max-softmax", "entropy"),
        default="max-softmax",
        help="early-exit rule: max-softmax >= tau, or entropy <= T (default max-softmax)",
    )
    options.add_output(p, default=None, help="output folder")
    options.add_quiet(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the compress report (report.json) to stdout; progress goes to stderr",
    )
    options.add_spec(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.compress.api import ARTEFACT_FILES, write_artefacts
    from edgeproof.outputs import Output
    from edgeproof.runner import resolve_threat

    options.check_outputs(
        [Output.folder(args.out, ARTEFACT_FILES)],
        [*options.model_inputs(args), args.data, args.eval],
    )
    budget = _budget(args)
    loaded, graph = _load_model(args)
    data = options.load_data_arg(args, args.data, kind=args.kind)
    evaluation = options.load_data_arg(args, args.eval, kind=args.kind) if args.eval else None
    held_out = evaluation if evaluation is not None else data
    threat = resolve_threat(loaded, held_out, **options.spec_kwargs(args))
    t0 = time.perf_counter()
    from rich.console import Console  # here, not at the top: every command's parser imports this

    console = Console(stderr=args.json, highlight=False)
    if not console.is_terminal:  # a log file or a pipe: wide enough for the ledger table
        console = Console(stderr=args.json, highlight=False, width=140)
    with _progress(not args.quiet, console) as (progress, say):
        common: dict[str, Any] = dict(
            evaluation=evaluation,
            budget=budget,
            threat=threat,
            threads=args.threads or 1,
            seed=args.seed,
            log=say,
            progress=progress,
            executor=args.executor,
            jobs=options.jobs_arg(args),
            ray_address=args.ray_address,
        )
        result = _search(args, loaded, graph, threat.input, data, common)
    write_artefacts(
        result,
        args.out,
        source=str(args.model),
        data=data,
        seed=args.seed,
        duration_s=time.perf_counter() - t0,
    )
    _print_result(args, result, console)
    return trust_errors_exit(result)


def _budget(args: argparse.Namespace) -> Budget:
    """``--max-drop --max-size --time-budget --max-class-drop`` as the search's budget."""
    from edgeproof.compress.search import Budget

    return Budget(
        max_drop=None if args.max_drop is None else parse_drop(args.max_drop),
        max_size=None if args.max_size is None else parse_size(args.max_size),
        time_budget_s=float(args.time_budget),
        max_class_drop=None
        if args.max_class_drop is None
        else parse_drop(args.max_class_drop, "max_class_drop"),
    )


def _load_model(args: argparse.Namespace) -> tuple[LoadedModel, bool]:
    """The model and whether it is an ONNX graph (quantized in place, no exit heads)."""
    loaded = options.load_model_arg(args)
    graph = loaded.module is None and loaded.session is not None and loaded.path is not None
    if loaded.module is None and not graph:
        raise OptionError(
            "arch",
            f"{args.model}: compression needs a runnable PyTorch model",
            f"pass {param('arch')} zoo:NAME for a weights-only file",
        )
    if graph and args.early_exit:
        raise OptionError(
            "early_exit",
            f"{args.model}: exit heads need a PyTorch backbone to train them on; an ONNX "
            "graph is quantized in place",
            f"leave out {param('early_exit', switch=True)}, or compress the PyTorch model",
        )
    return loaded, graph


def _search(
    args: argparse.Namespace,
    loaded: LoadedModel,
    graph: bool,
    spec: InputSpec,
    data: Dataset,
    common: dict[str, Any],
) -> CompressionResult:
    """:func:`~edgeproof.compress.api.compress_graph` on an ONNX graph, else
    :func:`~edgeproof.compress.api.compress` (with exit heads under ``--early-exit``)."""
    from edgeproof.compress.api import compress, compress_graph
    from edgeproof.compress.earlyexit import EarlyExitConfig

    if graph:
        assert loaded.path is not None
        return compress_graph(
            loaded.path.read_bytes(),
            spec,
            data,
            interface=options.interface_arg(args),
            name=str(args.model),
            **common,
        )
    assert loaded.module is not None
    early_exit = None
    if args.early_exit:
        early_exit = EarlyExitConfig(criterion=args.exit_criterion.replace("-", "_"))
    return compress(loaded.module, spec, data, early_exit=early_exit, arch=loaded.arch, **common)


def _print_result(args: argparse.Namespace, result: CompressionResult, console: Console) -> None:
    """report.json under ``--json``, else the summary (one line under ``--quiet``), then where
    the files went."""
    from edgeproof.compress.terminal import print_summary

    if args.json:
        sys.stdout.write((Path(args.out) / "report.json").read_text() + "\n")
    elif not args.quiet:
        print_summary(result, console)
    else:
        print(result.selection.message)
    from rich.text import Text

    console.print(Text(f"wrote {Path(args.out) / 'model.onnx'} and the ledger in {args.out}"))


@contextmanager
def _progress(
    enabled: bool, console: Console
) -> Iterator[tuple[Progress | None, Callable[[str], None]]]:
    """A rich progress bar over the candidates (the current one and its stage: build, measure,
    re-audit) and a log that prints each candidate's line above it."""

    from rich.text import Text

    def say(line: str) -> None:
        console.print(Text(line))

    if not enabled:
        yield None, say
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("compress", total=None)

        def on_stage(name: str, stage: str, index: int, total: int) -> None:
            finished = stage in ("done", "skipped")
            text = f"candidate {index + 1}/{total} {name}: {stage}"
            bar.update(task, total=total, completed=index + finished, description=text)

        def log(line: str) -> None:
            bar.console.print(Text(line))

        yield on_stage, log


def trust_errors_exit(result: CompressionResult) -> int:
    """One stderr line per re-audit check that ended in ``error``; the exit code they call for.

    As ``edgeproof audit`` (:func:`edgeproof.cli.audit.check_errors_exit`): every candidate was
    measured and everything is written by now; 3 when a check crashed (an internal failure, its
    traceback is in compress.json), 2 when checks only refused their input, 0 when none did.
    """
    errored = result.errored_checks()
    for name, t in errored:
        print(f"edgeproof: error: {name}: {t.check}: {t.message}", file=sys.stderr)
    if not errored:
        return 0
    return 3 if any(t.crashed for _, t in errored) else 2

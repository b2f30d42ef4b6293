"""The parser, the dispatch to one command module, and the exit codes.

Each command module (``edgeproof.cli.<command>``) has ``register(subparsers)``, which adds its
parser(s) with ``handler=run`` — ``run(args) -> exit code``. Only argparse is imported to build
the parser; a handler imports the library when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from edgeproof._version import __version__
from edgeproof.errors import EdgeproofError

__all__ = ["COMMAND_MODULES", "Parser", "build_parser", "formatter", "main"]

#: the command modules, in ``--help`` order
COMMAND_MODULES: tuple[str, ...] = (
    "audit",
    "certify",
    "demo",
    "checks",
    "train",
    "compress",
    "protect",
    "integrity",
    "scan",
    "population",
    "explain",
    "diff",
    "history",
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2."""

    def error(self, message: str) -> Any:
        command = self.prog.removeprefix("edgeproof").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"edgeproof: error: {where}{message} (see {self.prog} --help)\n")


def formatter(prog: str) -> argparse.HelpFormatter:
    """The help layout of every command: descriptions and examples kept as written."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    """The ``edgeproof`` parser with every command."""
    parser = Parser(
        prog="edgeproof",
        formatter_class=formatter,
        description="Prepare trained PyTorch models for deployment where failure is expensive.",
        epilog=textwrap.dedent("""\
            examples:
              edgeproof demo
              edgeproof audit model.safetensors --arch zoo:resnet20 --data val.npz --out runs/a
              edgeproof audit weights.safetensors            # data-free checks only
              edgeproof scan models/ --out runs/scan         # backdoor scan of a folder
              edgeproof certify model.safetensors --data val.npz --eps 0.01

            exit codes: 0 ok, 1 policy/verification failed, 2 bad input (also: a check
            refused its input; the report is still written), 3 internal error"""),
    )
    parser.add_argument("--version", action="version", version=f"edgeproof {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"edgeproof.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``edgeproof`` command; returns its exit code."""
    from edgeproof.cli.flags import render

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    debug = bool(args.debug)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a reader gone by now is a BrokenPipeError here, not at exit
        return code
    except EdgeproofError as exc:
        if debug:
            raise
        print(f"edgeproof: error: {render(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeproof: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`edgeproof verify --json | head`): end quietly
        _silence_stdout()
        return 0
    except Exception as exc:  # an internal failure: one line, traceback with --debug
        if debug:
            raise
        print(
            f"edgeproof: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 3


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

"""``edgeproof checks``: list the registered checks and what each needs."""

from __future__ import annotations

import argparse

from edgeproof.cli.app import formatter

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "checks",
        help="list the available checks and what they need",
        epilog="example:\n  edgeproof checks",
        formatter_class=formatter,
    )
    c.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeproof.checks import available_checks, check_info

    for name in available_checks():
        info = check_info(name)
        needs = ", ".join(info.needs) or "weights only"
        asked = "" if info.default else "; only with --checks"
        print(f"{name:14s} {info.title}  (needs: {needs}{asked})")
    return 0

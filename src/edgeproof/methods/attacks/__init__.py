"""Adversarial attacks on the shared ThreatModel: FGSM, PGD, APGD-CE (gradient attacks) and the
Square Attack (score-based, forward passes only); robust-accuracy curves and minimal ε by
bisection.

Attacks are registered by name (``fgsm``, ``pgd``, ``apgd``, ``square``); third-party attacks
register with :func:`register_attack` and can then be named in the ``adversarial`` check's
``attacks`` setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeproof.errors import OptionError
from edgeproof.methods.attacks.apgd import APGD
from edgeproof.methods.attacks.base import (
    Attack,
    AttackResult,
    Budget,
    Forward,
    check_domain,
    check_logits,
    frozen_copy,
)
from edgeproof.methods.attacks.curve import RobustnessCurve, robustness_curve
from edgeproof.methods.attacks.fgsm import FGSM
from edgeproof.methods.attacks.minimal_eps import MinimalEps, minimal_eps
from edgeproof.methods.attacks.pgd import PGD
from edgeproof.methods.attacks.square import Square

__all__ = [
    "APGD",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "Budget",
    "Forward",
    "MinimalEps",
    "RobustnessCurve",
    "Square",
    "attack_names",
    "check_domain",
    "check_logits",
    "frozen_copy",
    "get_attack",
    "minimal_eps",
    "register_attack",
    "robustness_curve",
]

_ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM,
    "pgd": PGD,
    "apgd": APGD,
    "square": Square,
}


def register_attack(name: str, factory: Callable[..., Attack]) -> None:
    """Register an attack class (or factory) under ``name``; a later registration replaces it."""
    _ATTACKS[name] = factory


def attack_names() -> list[str]:
    """Names of the registered attacks."""
    return list(_ATTACKS)


def get_attack(name: str, **settings: Any) -> Attack:
    """Build the registered attack ``name`` with ``settings``."""
    try:
        factory = _ATTACKS[name]
    except KeyError:
        raise OptionError(
            "attacks", f"unknown attack {name!r}", f"choose from {', '.join(_ATTACKS)}"
        ) from None
    return factory(**settings)

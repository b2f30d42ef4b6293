"""Checks: one module per analysis, registered by name.

``available_checks()`` lists the registered names in report order; ``get_check(name, **settings)``
builds one. Third-party checks register with :func:`register_check`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeproof.checks.base import AuditContext, Check, FunctionCheck
from edgeproof.errors import OptionError

__all__ = [
    "AuditContext",
    "Check",
    "FunctionCheck",
    "available_checks",
    "get_check",
    "register_check",
]

_REGISTRY: dict[str, Callable[..., Check]] = {}


def register_check(name: str, factory: Callable[..., Check]) -> None:
    """Register a check class (or factory) under ``name``; later registrations replace earlier."""
    _REGISTRY[name] = factory


def available_checks() -> list[str]:
    """Names of all registered checks, in report order."""
    _load_builtin()
    return list(_REGISTRY)


def get_check(name: str, **settings: Any) -> Check:
    """Instantiate the registered check ``name`` with ``settings``."""
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise OptionError(
            "--checks",
            f"unknown check {name!r}",
            f"choose from {', '.join(_REGISTRY)}",
        ) from None
    return factory(**settings)


_loaded = False


def _load_builtin() -> None:
    """Import the built-in check modules once (each registers itself on import)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from edgeproof.checks import builtin  # noqa: F401

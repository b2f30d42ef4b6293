"""Checks: one module per analysis, registered by name.

``available_checks()`` lists the registered names in report order; ``get_check(name, **settings)``
builds one; ``check_info(name)`` says what a check needs without importing it (the built-in
checks are described by :data:`edgeproof.checks.builtin.BUILTIN_CHECKS` and imported on first
use). Third-party checks register with :func:`register_check`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeproof.errors import OptionError

if TYPE_CHECKING:
    from edgeproof.checks.base import Check

__all__ = [
    "CheckInfo",
    "available_checks",
    "check_class",
    "check_info",
    "default_checks",
    "get_check",
    "register_check",
    "register_factories",
    "registered_factories",
]


@dataclass(frozen=True)
class CheckInfo:
    """A check's identity and needs, readable without importing its module.

    ``target`` is ``"package.module:ClassName"``; the conformance suite checks that the class's
    own attributes say the same. ``default``: run by an audit that names no checks (``False``:
    only when asked for by name, e.g. a property the user must choose).
    """

    name: str
    title: str
    target: str
    needs_data: bool = False
    needs_forward: bool = True
    needs_gradients: bool = False
    needs_architecture: bool = False
    default: bool = True

    @property
    def needs(self) -> tuple[str, ...]:
        flags = (
            ("data", self.needs_data),
            ("forward", self.needs_forward),
            ("gradients", self.needs_gradients),
            ("architecture", self.needs_architecture),
        )
        return tuple(n for n, f in flags if f)


_INFO: dict[str, CheckInfo] = {}
_FACTORIES: dict[str, Callable[..., Check]] = {}
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from edgeproof.checks.builtin import BUILTIN_CHECKS

    for info in BUILTIN_CHECKS:
        _INFO.setdefault(info.name, info)


def register_check(name: str, factory: Callable[..., Check]) -> None:
    """Register a check class (or factory) under ``name``; later registrations replace earlier.

    A factory that is not a :class:`~edgeproof.checks.base.Check` subclass is described by the
    attributes of the instance it builds with no settings.
    """
    _load_builtin()
    from edgeproof.checks.base import Check

    probe: Any = factory if isinstance(factory, type) and issubclass(factory, Check) else factory()
    _INFO[name] = CheckInfo(
        name=name,
        title=str(getattr(probe, "title", name)),
        target=f"{factory.__module__}:{getattr(factory, '__qualname__', name)}",
        needs_data=bool(probe.needs_data),
        needs_forward=bool(probe.needs_forward),
        needs_gradients=bool(probe.needs_gradients),
        needs_architecture=bool(probe.needs_architecture),
    )
    _FACTORIES[name] = factory


def registered_factories(names: Iterable[str]) -> dict[str, Callable[..., Check]]:
    """The factories of those of ``names`` that :func:`register_check` registered in this
    process (not the built-in checks, which every process finds by name): what a worker process
    registers (:func:`register_factories`) to run the same checks as its caller. They travel by
    pickle: a class or function defined at module level in an importable module."""
    _load_builtin()
    from edgeproof.checks.builtin import BUILTIN_CHECKS

    builtin = {id(info) for info in BUILTIN_CHECKS}
    return {
        n: _FACTORIES[n]
        for n in names
        if n in _FACTORIES and n in _INFO and id(_INFO[n]) not in builtin
    }


def register_factories(factories: Mapping[str, Callable[..., Check]]) -> None:
    """Register each factory under its name unless that very factory is registered already
    (in the process that collected them: nothing to do)."""
    for name, factory in factories.items():
        if _FACTORIES.get(name) is not factory:
            register_check(name, factory)


def available_checks() -> list[str]:
    """Names of all registered checks, in report order."""
    _load_builtin()
    return list(_INFO)


def default_checks() -> list[str]:
    """The registered checks an audit runs when it names none (report order)."""
    _load_builtin()
    return [n for n, info in _INFO.items() if info.default]


def check_info(name: str) -> CheckInfo:
    """What check ``name`` is and needs (no import of its module)."""
    _load_builtin()
    try:
        return _INFO[name]
    except KeyError:
        raise OptionError(
            "checks", f"unknown check {name!r}", f"choose from {', '.join(_INFO)}"
        ) from None


def check_class(name: str) -> Callable[..., Check]:
    """The class (or factory) registered as ``name``, importing its module on first use."""
    info = check_info(name)
    factory = _FACTORIES.get(name)
    if factory is None:
        module, _, attr = info.target.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        _FACTORIES[name] = factory
    return factory


def get_check(name: str, **settings: Any) -> Check:
    """Instantiate the registered check ``name`` with ``settings``.

    A setting the check does not have is an :class:`OptionError` naming ``NAME.SETTING`` and
    the settings it has.
    """
    factory = check_class(name)
    if settings:
        import inspect

        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # no introspectable signature: let the call decide
            params = {}
        if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            known = [k for k, p in params.items() if p.kind is not p.VAR_POSITIONAL]
            for key in settings:
                if key not in params:
                    raise OptionError(
                        f"{name}.{key}",
                        f"the {name} check has no setting {key!r}",
                        f"use one of {', '.join(known)}",
                    )
    return factory(**settings)

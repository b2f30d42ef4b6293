"""Listing what a pickle would import, without importing or calling anything.

A pickle is a program for a small stack machine whose ``GLOBAL``/``STACK_GLOBAL`` opcodes import
any callable and whose ``REDUCE``/``BUILD`` opcodes call it. :func:`pickle_globals` runs the
machine with :class:`pickle.Unpickler`, but every global resolves to an inert stand-in class
and every persistent id to an inert object, so nothing is imported and nothing but our
stand-ins is ever called. What comes back is the set of ``module.name`` globals the pickle
names — the TorchScript checker compares it with an allowlist.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

__all__ = ["PickleUnreadable", "pickle_globals"]


class PickleUnreadable(ValueError):
    """The bytes are not a pickle the stand-in machine can run to the end."""


class _Inert:
    """Stands in for every imported global and every object built from one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass


class _Recorder(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.found: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.found.add(f"{module}.{name}")
        return type(name if name.isidentifier() else "_", (_Inert,), {})

    def persistent_load(self, pid: Any) -> Any:
        return _Inert()


def pickle_globals(data: bytes) -> frozenset[str]:
    """Every ``module.name`` global the pickle ``data`` refers to (nothing is imported).

    Raises:
        PickleUnreadable: the bytes are not a complete pickle.
    """
    recorder = _Recorder(data)
    try:
        recorder.load()
    except RecursionError:
        raise PickleUnreadable("the pickle nests too deeply") from None
    except Exception as exc:  # any malformed opcode stream: UnpicklingError, EOFError, ...
        raise PickleUnreadable(f"{type(exc).__name__}: {exc}") from None
    return frozenset(recorder.found)

"""The optional dependencies (extras) and the guard that names the extra when one is missing.

``pip install edgeproof`` installs the core: what auditing and sealing a PyTorch model needs
(torch, numpy, scipy, safetensors, jsonschema, rich, threadpoolctl, cryptography). The rest is
grouped into extras, declared in ``pyproject.toml`` and mirrored in :data:`EXTRAS`:

* ``onnx`` — onnx, onnxscript, onnxruntime: ONNX models, ``compress`` (every candidate is an
  ONNX graph), ONNX Runtime latency.
* ``data`` — scikit-learn, pillow: the built-in datasets (``builtin:digits``, used by the demo),
  image folders, the activation-clustering backdoor detector.
* ``ray`` — ray: ``--executor ray`` (``scan``, ``compress``, ``audit`` of several data sets on
  a Ray cluster, :mod:`edgeproof.execute`).
* ``all`` — the ``onnx`` and ``data`` extras (Ray is large and only needed on a cluster).

Where edgeproof imports an optional package it does so inside :func:`needs_extra`::

    with needs_extra("onnx", "to run a model with ONNX Runtime"):
        import onnxruntime as ort

so a missing package raises :class:`~edgeproof.errors.MissingExtraError` (exit code 2, one line
naming the extra) instead of a ``ModuleNotFoundError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgeproof.errors import MissingExtraError

__all__ = ["EXTRAS", "needs_extra"]

#: extra name → the top-level modules it provides (the distribution names are in pyproject.toml)
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "data": ("sklearn", "PIL"),
    "ray": ("ray",),
}

#: module → the name users know it by in the message (the distribution)
_DISTRIBUTION = {"sklearn": "scikit-learn", "PIL": "pillow"}


@contextmanager
def needs_extra(extra: str, purpose: str) -> Iterator[None]:
    """Convert a ``ModuleNotFoundError`` for one of ``extra``'s modules into a
    :class:`~edgeproof.errors.MissingExtraError`; ``purpose`` completes "needed ..."
    (e.g. ``"to load an ONNX model"``). Other import errors pass through unchanged."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(sorted(EXTRAS))}")
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS[extra]:
            raise
        raise MissingExtraError(extra, _DISTRIBUTION.get(top, top), purpose) from None

"""Symmetric linear operators for the Hessian methods (see :mod:`~edgeproof.methods.hessian`):
the :class:`LinearOperator` protocol, a dense one, Rademacher probes and argument checks."""

from __future__ import annotations

import math
from typing import Protocol

import torch

from edgeproof.errors import OptionError


class LinearOperator(Protocol):
    """A symmetric linear map on flat float64 vectors of length ``size``."""

    @property
    def size(self) -> int: ...

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise OptionError(name, f"{value} is too few", "use a positive integer")


def _check_tol(name: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise OptionError(name, f"{value} is not a positive tolerance", "use e.g. 1e-3")


def rademacher(size: int, generator: torch.Generator) -> torch.Tensor:
    """A float64 vector of independent ±1 entries (Rademacher), drawn from ``generator``."""
    return torch.randint(0, 2, (size,), generator=generator, dtype=torch.float64) * 2.0 - 1.0


class DenseOperator:
    """A dense symmetric matrix as a :class:`LinearOperator` (tests and exact references)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"DenseOperator needs a square matrix, got {tuple(matrix.shape)}")
        self.matrix = matrix.double()
        self.products = 0

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.products += 1
        return self.matrix @ v

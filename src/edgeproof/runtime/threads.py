"""Threads: the intra-op thread count torch (and the BLAS under numpy) runs with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["available_cores", "compute_threads", "resolve_threads", "torch_threads"]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int | None, *, parallel: bool) -> int:
    """The thread count one piece of work runs with.

    ``requested`` (the user's ``threads``) wins. Without it: all available cores for work that
    was measured to gain from them (``parallel``, e.g. the spectral check's eigen-solves), and
    1 for everything else — small models, attacks, bit flips and training run faster on one
    thread on this class of machine, whose second core only adds contention
    (``docs/benchmarks/threads.md``).
    """
    if requested is not None:
        return int(requested)
    return available_cores() if parallel else 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Temporarily set torch's intra-op thread count; yields the count in force."""
    old = torch.get_num_threads()
    if n is not None and n > 0:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@contextmanager
def compute_threads(n: int) -> Iterator[int]:
    """Temporarily run torch *and* the BLAS/LAPACK pools under NumPy and SciPy on ``n``
    threads; yields ``n``.

    What a piece of work computes can depend on how many threads split its reductions, so work
    whose numbers must not depend on where it runs (this process, a worker process, a Ray
    worker, each with its own default) runs under one stated count.
    """
    from threadpoolctl import threadpool_limits

    with torch_threads(n), threadpool_limits(limits=n, user_api="blas"):
        yield n

"""Sample layout: from an array's per-record shape to ``(C,H,W)`` / ``(C,T)`` / ``(F,)`` and a kind.

Rules (one per sample rank):

* ``(F,)`` → ``tabular``; with ``kind="timeseries"`` → ``(1, T)``.
* ``(H, W)`` → ``image`` with a channel added, ``(1, H, W)``; with ``kind="timeseries"`` the
  two axes are read as ``(C, T)`` and kept.
* ``(C, H, W)`` → ``image``. Channels-last ``(H, W, C)`` with ``C`` in {1, 3} (and a first axis
  that is not 1 or 3) is transposed to channels-first; the loader notes this in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeproof.errors import DataError, OptionError

__all__ = ["KINDS", "Arranged", "arrange", "check_kind"]

KINDS: tuple[str, ...] = ("image", "timeseries", "tabular")


def check_kind(kind: str | None, *, option: str = "--kind") -> str | None:
    """Return ``kind`` if it is ``None`` or a known kind, else raise :class:`OptionError`."""
    if kind is not None and kind not in KINDS:
        raise OptionError(option, f"unknown data kind {kind!r}", f"use one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class Arranged:
    """Inputs moved into the canonical layout.

    Attributes:
        x: ``(N, *sample_shape)`` in the canonical layout (same dtype as given).
        kind: ``image``, ``timeseries`` or ``tabular``.
        note: what was changed (``"added channel axis"``, ``"HWC->CHW"``) or ``""``.
    """

    x: np.ndarray
    kind: str
    note: str


def arrange(x: np.ndarray, kind: str | None, *, source: str) -> Arranged:
    """Infer the kind from the sample shape (or honour ``kind``) and arrange ``x`` to match.

    Raises:
        DataError: the sample shape does not fit any kind (or the requested one).
    """
    check_kind(kind)
    sample = tuple(int(s) for s in x.shape[1:])
    rank = len(sample)
    if rank == 0:
        raise DataError(
            f"{source}: inputs have shape {tuple(x.shape)}, one value per record; "
            "store tabular data as (N, features), e.g. x.reshape(-1, 1)"
        )
    if kind is None:
        if rank > 3:
            raise DataError(
                f"{source}: records of shape {sample} have {rank} dimensions; expected (F,) "
                "tabular, (C,T) time series, or (C,H,W)/(H,W) images"
            )
        kind = "tabular" if rank == 1 else "image"
    if kind == "tabular":
        if rank != 1:
            raise DataError(
                f"{source}: kind 'tabular' needs records of shape (F,), got {sample}; "
                "flatten the features or choose another kind"
            )
        return Arranged(x, kind, "")
    if kind == "timeseries":
        if rank == 1:
            return Arranged(x[:, None, :], kind, "added channel axis")
        if rank == 2:
            return Arranged(x, kind, "")
        raise DataError(
            f"{source}: kind 'timeseries' needs records of shape (C,T) or (T,), got {sample}"
        )
    # image
    if rank == 2:
        return Arranged(x[:, None, :, :], kind, "added channel axis")
    if rank == 3:
        if sample[2] in (1, 3) and sample[0] not in (1, 3):
            return Arranged(np.moveaxis(x, 3, 1), kind, "HWC->CHW")
        return Arranged(x, kind, "")
    raise DataError(f"{source}: kind 'image' needs records of shape (C,H,W) or (H,W), got {sample}")

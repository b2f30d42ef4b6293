"""Dataset: inputs, integer labels, class names and per-record identity.

Every loader returns this one type. ``x`` is float32 with shape ``(N, *sample_shape)`` in the raw
value domain (no normalisation: that lives inside the model); ``y`` is int64 in ``[0, K)``.
``ids`` name each record stably (a file path relative to the dataset root, or ``"<file>#<row>"``)
so integrity seals can name a changed record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeproof.errors import DataError
from edgeproof.serialize import JsonFields, fields_json

__all__ = ["Dataset"]

if TYPE_CHECKING:
    from edgeproof.spec import InputSpec


def _scalars(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with every value that is not a JSON scalar as its text."""
    return {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in metadata.items()}


@dataclass
class Dataset(JsonFields):
    """A labelled dataset held in memory.

    Attributes:
        x: float32 inputs ``(N, *shape)``.
        y: int64 labels ``(N,)`` in ``[0, len(classes))``.
        classes: class names, index = label.
        name: where it came from (path or ``builtin:<name>``).
        format: loader that produced it (``npz``, ``csv``, ``imagefolder``, ``idx``, ``cifar10``,
            ``builtin``).
        ids: one stable identifier per record.
        kind: ``image``, ``timeseries`` or ``tabular`` (guides the InputSpec and corruptions).
        domain: the value domain the data was scaled into, if the loader knows it.
        metadata: loader-specific facts (split, seed, source files).
    """

    x: np.ndarray = field(metadata={"json": False})
    y: np.ndarray = field(metadata={"json": False})
    classes: list[str]
    name: str
    format: str
    ids: list[str] = field(default_factory=list, metadata={"json": False})
    kind: str = "image"
    domain: tuple[float, float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict, metadata={"as": _scalars})

    json_order = ("name", "format", "records", "sample_shape", ...)

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y).astype(np.int64, copy=False)
        if not self.ids:
            self.ids = [f"{i}" for i in range(len(self.y))]

    def in_units_of(self, spec: InputSpec) -> Dataset:
        """This dataset in the units of an audit of ``spec``: with per-feature bounds
        (:attr:`InputSpec.feature_bounds`) each feature as a fraction of its range,
        ``(x − lo) / (hi − lo)``, domain ``[0, 1]``; otherwise the dataset itself."""
        if spec.feature_bounds is None:
            return self
        lo, hi = (np.asarray(v, dtype=np.float64) for v in spec.feature_bounds)
        view = (1, -1) + (1,) * (self.x.ndim - 2)
        x = (self.x - lo.reshape(view)) / (hi - lo).reshape(view)
        metadata = {**self.metadata, "scaled_to_feature_bounds": True}
        return replace(self, x=x.astype(np.float32), domain=(0.0, 1.0), metadata=metadata)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def validate(self) -> None:
        """Raise :class:`DataError` for empty data, NaN/Inf inputs, or labels out of range."""
        if len(self) == 0 or self.x.shape[0] == 0:
            raise DataError(f"{self.name}: the dataset is empty (0 records); give a non-empty file")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"{self.name}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels; "
                "inputs and labels must have the same length"
            )
        if self.y.ndim != 1:
            raise DataError(f"{self.name}: labels must be 1-D integers, got shape {self.y.shape}")
        bad = ~np.isfinite(self.x)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
            first = ", ".join(self.ids[i] for i in rows[:5])
            raise DataError(
                f"{self.name}: {rows.size} record(s) contain NaN or Inf (first: {first}); "
                "clean or drop them before auditing"
            )
        lo, hi = int(self.y.min()), int(self.y.max())
        if lo < 0 or hi >= self.num_classes:
            raise DataError(
                f"{self.name}: labels span [{lo}, {hi}] but there are {self.num_classes} classes "
                f"(valid labels 0..{self.num_classes - 1}); fix the labels or the class list"
            )

    def subset(self, index: np.ndarray | slice) -> Dataset:
        """A new dataset with the selected records (ids kept)."""
        idx = np.arange(len(self))[index]
        return Dataset(
            x=self.x[idx],
            y=self.y[idx],
            classes=list(self.classes),
            name=self.name,
            format=self.format,
            ids=[self.ids[i] for i in idx],
            kind=self.kind,
            domain=self.domain,
            metadata=dict(self.metadata),
        )

    def to_json(self) -> dict[str, Any]:
        """Summary for reports (not the data itself)."""
        # the number of records is derived (the length of the data)
        return fields_json(self, extra={"records": len(self)})

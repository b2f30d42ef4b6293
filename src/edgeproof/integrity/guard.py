"""WeightGuard: check a live model's tensors against a seal before each forward, or on demand.

Sign-bit and exponent flips in deployed weights (rowhammer, faulty memory, a patched file) change a
model's behaviour without changing its shape. The guard re-hashes the sealed chunks of the live
tensors and compares them with the seal's SHA-256 digests; a mismatch is localised like ``verify``
does (tensor, element, bit). With a *protect set* — ``{"tensors": [{"name": ..., "index": ...}]}``,
e.g. the most bit-flip-sensitive weights found by the data-free checks — only the chunks holding
those elements are hashed, which makes a check before every forward cheap.

The seal is trusted as loaded: read it with :meth:`Seal.read` (which checks its self-consistency)
and check its signature with ``edgeproof verify --pub`` in the release process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeproof.errors import EdgeproofError, InputFileError, OptionError
from edgeproof.integrity.changes import RegionChange, TensorChange, bit_flips
from edgeproof.integrity.chunks import DEFAULT_CHUNK_SIZE, locate_single_word_change
from edgeproof.integrity.items import ModelItem
from edgeproof.integrity.sealfile import Seal
from edgeproof.integrity.sources import DTYPE_ITEMSIZE, _tensor_bytes, torch_dtype_name
from edgeproof.models.loaded import LoadedModel
from edgeproof.structured import read_json

__all__ = ["GuardReport", "ProtectEntry", "WeightGuard", "WeightTamperError", "load_protect_set"]


@dataclass(frozen=True)
class ProtectEntry:
    """One protected element: tensor name and flat element index."""

    name: str
    index: int | tuple[int, ...]


def load_protect_set(source: str | Path | Mapping[str, Any]) -> tuple[ProtectEntry, ...]:
    """Parse a protect set ``{"tensors": [{"name": str, "index": int | [int, ...]}]}``.

    ``index`` is a flat element index; a list is taken as a multi-dimensional index and kept as
    given here (it is flattened against the tensor's shape by the guard).
    """
    label = str(source) if not isinstance(source, Mapping) else "<protect set>"
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        obj = read_json(Path(source), error=InputFileError, what="protect-set file")
    entries = obj.get("tensors") if isinstance(obj, Mapping) else None
    if not isinstance(entries, list):
        raise InputFileError(
            label,
            'has no "tensors" list',
            'write {"tensors": [{"name": "fc.weight", "index": 12}]}',
        )
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or not isinstance(e.get("name"), str):
            raise InputFileError(
                label,
                f'tensors[{i}] has no string "name"',
                'each entry is {"name": ..., "index": ...}',
            )
        idx = e.get("index", 0)
        if isinstance(idx, list) and all(isinstance(v, int) for v in idx):
            out.append(ProtectEntry(e["name"], tuple(int(v) for v in idx)))
        elif isinstance(idx, int) and not isinstance(idx, bool) and idx >= 0:
            out.append(ProtectEntry(e["name"], idx))
        else:
            raise InputFileError(
                label,
                f"tensors[{i}].index must be a non-negative integer or a list of them, got {idx!r}",
            )
    return tuple(out)


@dataclass(frozen=True)
class GuardReport:
    """One guard check: whether it passed, what was hashed, what changed, how long it took."""

    ok: bool
    tensors_checked: int
    chunks_checked: int
    bytes_hashed: int
    seconds: float
    regions: tuple[RegionChange, ...] = ()
    tensors: tuple[TensorChange, ...] = ()

    def messages(self) -> list[str]:
        return [t.message() for t in self.tensors] + [r.message() for r in self.regions]


class WeightTamperError(EdgeproofError):
    """The live weights differ from the seal (raised by the guard's forward pre-hook)."""

    exit_code = 1

    def __init__(self, report: GuardReport) -> None:
        self.report = report
        lines = report.messages()
        more = f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""
        super().__init__("weights differ from the seal: " + "; ".join(lines[:3]) + more)


class WeightGuard:
    """Wrap a model; check its tensors against a sealed model item.

    >>> guard = WeightGuard(model, Seal.read("release.seal.json")).attach()  # doctest: +SKIP
    >>> model.module(x)   # raises WeightTamperError if a sealed weight changed  # doctest: +SKIP

    Args:
        model: a :class:`LoadedModel` (its live module's ``state_dict`` if it has one, else its
            ``weights``) or a ``torch.nn.Module``.
        seal: a :class:`Seal` (or a path to one) or a :class:`ModelItem`.
        item: which model item of the seal, by path, when the seal holds several.
        protect: a protect set (path or parsed mapping); ``None`` checks every sealed chunk.
        chunk_size: the chunk size, when ``seal`` is a bare :class:`ModelItem`.
    """

    def __init__(
        self,
        model: LoadedModel | torch.nn.Module,
        seal: Seal | ModelItem | str | Path,
        *,
        item: str | None = None,
        protect: str | Path | Mapping[str, Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.module = model.module if isinstance(model, LoadedModel) else model
        self._weights = model.weights if isinstance(model, LoadedModel) else None
        loaded = Seal.read(seal) if isinstance(seal, (str, Path)) else seal
        self.item = _model_item(loaded, item)
        self.chunk_size = loaded.chunk_size if isinstance(loaded, Seal) else chunk_size
        self.protect = None if protect is None else load_protect_set(protect)
        self.checks = 0
        self.total_seconds = 0.0
        self._handle: Any = None
        self._plan = self._make_plan()

    def _live(self) -> Mapping[str, torch.Tensor]:
        if self.module is not None:
            return self.module.state_dict()
        return self._weights or {}

    def _make_plan(self) -> dict[str, list[int] | None]:
        if self.protect is None:
            return {t.name: None for t in self.item.tensors}
        plan: dict[str, list[int] | None] = {}
        for entry in self.protect:
            t = self.item.tensor(entry.name)
            if t is None:
                raise OptionError(
                    "protect",
                    f"tensor {entry.name!r} is not in the sealed model {self.item.path!r}",
                    "use tensor names from the seal",
                )
            index = entry.index
            if isinstance(index, tuple):
                try:
                    index = int(np.ravel_multi_index(index, t.shape))
                except ValueError:
                    raise OptionError(
                        "protect",
                        f"index {entry.index} does not fit tensor "
                        f"{entry.name!r} of shape {list(t.shape)}",
                        "use an index within the shape",
                    ) from None
            numel = t.nbytes // DTYPE_ITEMSIZE[t.dtype]
            if not 0 <= index < max(numel, 1):
                raise OptionError(
                    "protect",
                    f"index {index} is outside tensor {entry.name!r} of {numel} elements",
                    "use flat element indices",
                )
            chunk = index * DTYPE_ITEMSIZE[t.dtype] // self.chunk_size
            chunks = plan.setdefault(entry.name, [])
            assert chunks is not None
            if chunk not in chunks:
                chunks.append(chunk)
        return plan

    def check(self) -> GuardReport:
        """Hash the planned chunks of the live tensors and compare them with the seal."""
        t0 = time.perf_counter()
        live = self._live()
        regions: list[RegionChange] = []
        tchanges: list[TensorChange] = []
        n_chunks = n_bytes = 0
        cs = self.chunk_size
        path = self.item.path
        for name, chunks in self._plan.items():
            sealed = self.item.tensor(name)
            assert sealed is not None
            t = live.get(name)
            if t is None:
                tchanges.append(
                    TensorChange(
                        path, name, "missing", f"tensor {name!r} is missing from the live model"
                    )
                )
                continue
            dtype = torch_dtype_name(t.dtype)
            shape = tuple(int(s) for s in t.shape)
            if dtype != sealed.dtype or shape != sealed.shape:
                tchanges.append(
                    TensorChange(
                        path,
                        name,
                        "dtype" if dtype != sealed.dtype else "shape",
                        f"tensor {name!r} is {dtype}{list(shape)}, sealed as "
                        f"{sealed.dtype}{list(sealed.shape)}",
                    )
                )
                continue
            blob = _tensor_bytes(t)
            for i in range(len(sealed.chunks)) if chunks is None else chunks:
                a, b = i * cs, min(len(blob), (i + 1) * cs)
                n_chunks += 1
                n_bytes += b - a
                if hashlib.sha256(blob[a:b]).digest() == sealed.chunks[i].sha256:
                    continue
                located = locate_single_word_change(blob[a:b], sealed.chunks[i], a)
                flips = bit_flips(located, dtype, blob, a) if located else ()
                regions.append(RegionChange(path, name, dtype, shape, i, a, b, flips))
        dt = time.perf_counter() - t0
        self.checks += 1
        self.total_seconds += dt
        return GuardReport(
            not regions and not tchanges,
            len(self._plan),
            n_chunks,
            n_bytes,
            dt,
            tuple(regions),
            tuple(tchanges),
        )

    def _hook(self, module: torch.nn.Module, args: Any) -> None:
        report = self.check()
        if not report.ok:
            raise WeightTamperError(report)

    def attach(self) -> WeightGuard:
        """Check before every forward of the module (a forward pre-hook)."""
        if self.module is None:
            raise OptionError(
                "model",
                "a weights-only model has no forward to guard",
                "call check() on demand instead",
            )
        if self._handle is None:
            self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def detach(self) -> None:
        """Remove the pre-hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> WeightGuard:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def mean_check_seconds(self) -> float:
        """Average time of one check so far (the per-forward overhead when attached)."""
        return self.total_seconds / self.checks if self.checks else 0.0


def _model_item(seal: Seal | ModelItem, item: str | None) -> ModelItem:
    if isinstance(seal, ModelItem):
        return seal
    models = [it for it in seal.items if isinstance(it, ModelItem)]
    if item is not None:
        models = [it for it in models if it.path == item]
    if len(models) != 1:
        names = [it.path for it in seal.items if isinstance(it, ModelItem)]
        raise OptionError(
            "item",
            f"the seal holds {len(names)} model item(s) {names}"
            + (f", none called {item!r}" if item else ""),
            "pass item=<path> naming one of them",
        )
    return models[0]

"""A model built from a state dict and an architecture (see :mod:`~edgeproof.models.loading`):
the weights checked against the architecture, key by key and shape by shape; loaded models put
in eval mode."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeproof.errors import (
    ArchitectureMismatchError,
    ModelFileError,
    OptionError,
)
from edgeproof.models.loaded import LoadedModel, ModelFormat
from edgeproof.models.sidecar import (
    _SIDECAR_FIX,
    _file_arch,
    _metadata_of,
    _spec_of,
)
from edgeproof.models.zoo import (
    Normalization,
    Normalize,
    arch_from_string,
    infer_build_args,
    natural_key,
)
from edgeproof.spec import InputSpec

_MAX_LISTED = 5


def _from_state_dict(
    where: Path,
    path: Path,
    tensors: dict[str, torch.Tensor],
    arch: str | None,
    spec: InputSpec | None,
    sidecar: Mapping[str, Any] | None,
    fmt: ModelFormat,
) -> LoadedModel:
    """Build the module for a state dict. ``where`` is the file the metadata came from."""
    side_spec = _spec_of(where, sidecar)
    spec = spec or side_spec
    from_file = arch is None
    if arch is None:
        arch = _file_arch(where, sidecar)
    metadata = _metadata_of(sidecar)
    if not arch:
        return LoadedModel(
            path=path, format="weights-only", weights=tensors, spec=spec, metadata=metadata
        )
    try:
        module, spec = _build(path, arch, tensors, spec)
    except OptionError as exc:
        if not from_file:
            raise
        raise ModelFileError(
            where,
            f"its architecture {arch} cannot be built for these weights ({exc})",
            _SIDECAR_FIX,
        ) from None
    return LoadedModel(
        path=path,
        format=fmt,
        module=module,
        weights=tensors,
        spec=spec,
        arch=arch,
        metadata=metadata,
    )


def _build(
    path: Path, arch: str, tensors: dict[str, torch.Tensor], spec: InputSpec | None
) -> tuple[nn.Module, InputSpec | None]:
    shape: tuple[int, ...] | None
    normalization: Normalization | None
    if spec is not None:
        shape, normalization = spec.shape, spec.normalization
        num_classes = spec.num_classes or _last_linear_out(path, arch, tensors)
    elif arch.startswith("zoo:"):
        shape, num_classes, normalization = infer_build_args(arch, tensors)
    else:
        shape, normalization = None, None
        num_classes = _last_linear_out(path, arch, tensors)
    if arch.startswith("zoo:"):
        # Build on the meta device first: a declared shape cannot make edgeproof allocate a
        # module larger than the weights it is given.
        with torch.device("meta"):
            skeleton = arch_from_string(arch, shape, num_classes, normalization)
        _check_fits(path, arch, skeleton, tensors)
    module = arch_from_string(arch, shape, num_classes, normalization)
    _check_fits(path, arch, module, tensors)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # dtype or other detail not covered by the shape check
        raise ArchitectureMismatchError(
            f"{path}: weights do not load into {arch} ({_short(exc)}); give the architecture "
            "the weights were trained with (arch=)"
        ) from None
    module.eval()
    if spec is not None and spec.num_classes is None:
        spec = spec.with_(num_classes=num_classes)
    if spec is not None and spec.normalization is None:
        norm = next((m.as_tuple() for m in module.modules() if isinstance(m, Normalize)), None)
        if norm is not None and len(norm[0]) == spec.shape[0]:
            spec = spec.with_(normalization=norm)
    return module, spec


def _last_linear_out(path: Path, arch: str, tensors: Mapping[str, torch.Tensor]) -> int:
    two_d = [
        v
        for k, v in sorted(tensors.items(), key=lambda kv: natural_key(kv[0]))
        if v.dim() == 2 and k.endswith("weight")
    ]
    if not two_d:
        raise ArchitectureMismatchError(
            f"{path}: cannot tell the number of classes for {arch} (no linear layer in the "
            "weights); give spec= with num_classes or keep the sidecar .json"
        )
    return int(two_d[-1].shape[0])


def _check_fits(
    path: Path, arch: str, module: nn.Module, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Raise one line naming the missing, unexpected and wrongly shaped tensors, if any."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and expected[k] != given[k]]
    if not (missing or unexpected or wrong):
        return

    def listed(keys: list[str], show: Any) -> str:
        items = ", ".join(show(k) for k in keys[:_MAX_LISTED])
        more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
        return f"{items}{more}"

    def fmt_shape(s: tuple[int, ...]) -> str:
        return "(" + ",".join(str(d) for d in s) + ")"

    parts: list[str] = []
    if missing:
        parts.append(
            f"{len(missing)} missing ["
            + listed(missing, lambda k: f"{k} {fmt_shape(expected[k])}")
            + "]"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected ["
            + listed(unexpected, lambda k: f"{k} {fmt_shape(given[k])}")
            + "]"
        )
    if wrong:
        parts.append(
            f"{len(wrong)} with wrong shape ["
            + listed(
                wrong, lambda k: f"{k} file {fmt_shape(given[k])} vs arch {fmt_shape(expected[k])}"
            )
            + "]"
        )
    raise ArchitectureMismatchError(
        f"{path}: weights do not fit {arch}: "
        + "; ".join(parts)
        + ". Give the architecture the weights were trained with (arch=, and spec= for its "
        "input shape)"
    )


def _ignoring_arch(loaded: LoadedModel, arch: str | None) -> LoadedModel:
    if arch:
        loaded.warnings.append(
            f"{loaded.name}: arch {arch} ignored: {loaded.format_with_article} file carries "
            "its own architecture"
        )
    return loaded


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in module.state_dict().items()}


def _ensure_eval(loaded: LoadedModel, module: nn.Module, what: str) -> None:
    if any(m.training for m in module.modules()):
        module.eval()
        loaded.warnings.append(
            f"{what}: the model was in train mode (dropout/batch-norm would behave as in "
            "training); switched to eval mode"
        )


def _exported_to_eval(module: nn.Module) -> bool:
    """Rewrite train-mode batch-norm/dropout calls in an exported graph to eval mode.

    ``torch.export`` bakes the mode into the graph (``aten.batch_norm(..., training, ...)``,
    ``aten.dropout(x, p, train)``) and the resulting module refuses ``.eval()``. Returns True if
    anything was changed.
    """
    graph = getattr(module, "graph", None)
    if graph is None:
        return False
    flag_index = {
        torch.ops.aten.batch_norm.default: 5,
        torch.ops.aten.dropout.default: 2,
        torch.ops.aten.feature_dropout.default: 2,
    }
    changed = False
    for node in graph.nodes:
        idx = flag_index.get(node.target) if node.op == "call_function" else None
        if idx is not None and len(node.args) > idx and node.args[idx] is True:
            args = list(node.args)
            args[idx] = False
            node.args = tuple(args)
            changed = True
    if changed:
        module.recompile()  # type: ignore[operator]
    return changed


def _short(exc: BaseException) -> str:
    """The first line of an exception message, trimmed (third-party messages can be long)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."

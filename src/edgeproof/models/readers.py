"""The readers of each model file format (see :mod:`~edgeproof.models.loading`): safetensors,
ONNX, ``torch.export`` programs, TorchScript, and ``torch.save`` pickles (only with trust)."""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeproof import limits
from edgeproof.errors import (
    ModelFileError,
    UnsafePickleError,
    param,
)
from edgeproof.extras import needs_extra
from edgeproof.models.formats.export import load_export
from edgeproof.models.formats.torchscript import load_torchscript
from edgeproof.models.interface import SCORES_OUTPUT_KEY
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.sidecar import (
    _check_sidecar,
    _file_arch,
    _metadata_of,
    _spec_of,
    read_sidecar,
)
from edgeproof.models.state_dict import (
    _all_tensors,
    _ensure_eval,
    _exported_to_eval,
    _from_state_dict,
    _short,
    _state_of,
)
from edgeproof.spec import InputSpec
from edgeproof.structured import parse_json
from edgeproof.zipfiles import ZipArchive, is_zip

_TRUST_FIX = (
    f"pass {param('trust_code', switch=True)} only if you trust the file, or re-save it as a "
    "state dict / safetensors"
)


def _zip_kind(path: Path) -> str | None:
    """``torchscript``, ``export``, ``torch-save`` or ``None`` (not a zip) for a PyTorch file."""
    if not is_zip(path):
        return None
    with ZipArchive(path, ModelFileError, what="PyTorch archive") as zf:
        names = zf.names()
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names) or any(
        "/models/" in n and n.endswith(".json") for n in names
    ):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return "torch-save"


def _load_safetensors(path: Path, arch: str | None, spec: InputSpec | None) -> LoadedModel:
    from safetensors import SafetensorError, safe_open

    limits.check(ModelFileError, path, "max_model_bytes", "the model file", path.stat().st_size)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = fh.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelFileError(
            path,
            f"not a readable safetensors file ({_short(exc)})",
            "the file is truncated or corrupt; re-export or re-download it",
        ) from None
    sidecar = read_sidecar(path)
    where = path.with_suffix(".json") if sidecar is not None else path
    if sidecar is None and "edgeproof" in header:
        meta = parse_json(
            header["edgeproof"],
            path,
            error=ModelFileError,
            what="edgeproof header metadata",
        )
        sidecar = _check_sidecar(path, meta)
    return _from_state_dict(where, path, tensors, arch, spec, sidecar, "safetensors")


def _load_onnx(path: Path, spec: InputSpec | None) -> LoadedModel:
    with needs_extra("onnx", "to load an ONNX model"):
        import onnx
        import onnxruntime as ort

    fix = "the file is truncated or corrupt; re-export it with torch.onnx.export"
    limits.check(ModelFileError, path, "max_model_bytes", "the model file", path.stat().st_size)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends: convert at the boundary
        raise ModelFileError(path, f"not a valid ONNX model ({_short(exc)})", fix) from None
    if len(proto.graph.node) == 0:
        raise ModelFileError(path, "ONNX model has an empty graph", fix)
    weights = {init.name: _onnx_initializer(path, init) for init in proto.graph.initializer}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFileError(
            path,
            f"ONNX Runtime cannot load the model ({_short(exc)})",
            "check the opset and operators, or re-export it",
        ) from None
    sidecar = read_sidecar(path)
    return LoadedModel(
        path=path,
        format="onnx",
        session=session,
        weights=weights,
        spec=spec or _spec_of(path.with_suffix(".json"), sidecar),
        arch=_recorded_arch(path, sidecar),
        metadata={**_metadata_of(sidecar), **_scores_output(proto)},
    )


def _scores_output(proto: Any) -> dict[str, Any]:
    """The output an edgeproof-written graph says holds the class scores (:data:`~edgeproof.
    models.interface.SCORES_OUTPUT_KEY` in its ``metadata_props``), if it says so."""
    for prop in proto.metadata_props:
        if prop.key == SCORES_OUTPUT_KEY and prop.value.isdigit():
            return {SCORES_OUTPUT_KEY: int(prop.value)}
    return {}


def _onnx_initializer(path: Path, init: Any) -> torch.Tensor:
    """One ONNX initializer as a tensor, its declared dims checked against its data first."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    name = init.name
    dims = [int(d) for d in init.dims]
    if any(d < 0 for d in dims):
        raise ModelFileError(path, f"initializer {name!r} has negative dims {dims}")
    if init.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        kind = "STRING" if init.data_type == TensorProto.STRING else "UNDEFINED"
        raise ModelFileError(
            path,
            f"initializer {name!r} has dtype {kind}, not a numeric tensor",
            "export numeric weights only",
        )
    try:
        np_dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    except (KeyError, ValueError, TypeError):
        raise ModelFileError(
            path, f"initializer {name!r} has unknown ONNX dtype {init.data_type}"
        ) from None
    numel = math.prod(dims)
    itemsize = max(1, np_dtype.itemsize)
    limits.check(ModelFileError, path, "max_array_bytes", f"initializer {name!r}", numel * itemsize)
    packed = {TensorProto.INT4, TensorProto.UINT4} | {getattr(TensorProto, "FLOAT4E2M1", -1)}
    if (
        init.HasField("raw_data")
        and init.data_type not in packed
        and len(init.raw_data) != numel * itemsize
    ):
        raise ModelFileError(
            path,
            f"initializer {name!r} declares dims {dims} ({numel * itemsize} bytes) but holds "
            f"{len(init.raw_data)} bytes",
            "the file is corrupt; re-export it",
        )
    try:
        arr = numpy_helper.to_array(init)
        if init.data_type in packed:
            # 4-bit initializers come back as ml_dtypes' int4/uint4/float4 arrays, which torch
            # cannot hold: widened to int8/uint8/float32, the same values
            wide = {TensorProto.INT4: np.int8, TensorProto.UINT4: np.uint8}
            arr = arr.astype(wide.get(init.data_type, np.float32))
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"dtype {arr.dtype}")
        return torch.from_numpy(arr.copy())
    except (ValueError, TypeError, RuntimeError, OverflowError, KeyError) as exc:
        raise ModelFileError(
            path, f"initializer {name!r} cannot be read ({_short(exc)})", "re-export the model"
        ) from None


def _load_export(path: Path, spec: InputSpec | None, trust: bool) -> LoadedModel:
    limits.check(ModelFileError, path, "max_model_bytes", "the model file", path.stat().st_size)
    module = load_export(path, trust_code=trust)
    sidecar = read_sidecar(path)
    loaded = LoadedModel(
        path=path,
        format="torch-export",
        module=module,
        weights=_state_of(module),
        spec=spec or _spec_of(path.with_suffix(".json"), sidecar),
        arch=_recorded_arch(path, sidecar),
        metadata=_metadata_of(sidecar),
    )
    if _exported_to_eval(module):
        loaded.warnings.append(
            f"{path.name}: the program was exported in train mode (batch-norm/dropout used batch "
            "statistics or random masks); switched those operators to eval mode"
        )
    return loaded


def _load_torchscript(path: Path, spec: InputSpec | None, trust: bool) -> LoadedModel:
    limits.check(ModelFileError, path, "max_model_bytes", "the model file", path.stat().st_size)
    module = load_torchscript(path, trust_code=trust)
    sidecar = read_sidecar(path)
    loaded = LoadedModel(
        path=path,
        format="torchscript",
        module=module,
        weights=_state_of(module),
        spec=spec or _spec_of(path.with_suffix(".json"), sidecar),
        arch=_recorded_arch(path, sidecar),
        metadata=_metadata_of(sidecar),
    )
    _ensure_eval(loaded, module, path.name)
    return loaded


def _recorded_arch(path: Path, sidecar: Mapping[str, Any] | None) -> str | None:
    """A self-describing format's sidecar arch: recorded, never built. A name outside the zoo
    is dropped (the file carries its own architecture, so nothing needs it)."""
    try:
        return _file_arch(path.with_suffix(".json"), sidecar)
    except ModelFileError:
        return None


_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


def _torch_save_bytes(path: Path) -> io.BytesIO | str:
    """A zip ``torch.save`` file re-packed from its checked members (sizes within the limits),
    so ``torch.load`` reads exactly what was checked; a legacy (non-zip) file as its path."""
    limits.check(ModelFileError, path, "max_model_bytes", "the model file", path.stat().st_size)
    if not is_zip(path):
        return str(path)
    buf = io.BytesIO()
    total = 0
    with ZipArchive(path, ModelFileError, what="PyTorch archive") as zf:
        names = zf.names()
        if len(set(names)) != len(names):
            raise ModelFileError(path, "has duplicate archive members", "re-save it")
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
            for name in names:
                total += zf.size(name)
                limits.check(ModelFileError, path, "max_model_bytes", "the archive", total)
                out.writestr(name, zf.read(name))
    buf.seek(0)
    return buf


def _load_pickle(path: Path, arch: str | None, trust: bool, spec: InputSpec | None) -> LoadedModel:
    source = _torch_save_bytes(path) if not trust else str(path)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights only load failed" in str(exc).lower():
            raise UnsafePickleError(
                path,
                "the file contains pickled Python objects, not only tensors; loading it "
                "would run code from the file",
                _TRUST_FIX,
            ) from None
        raise ModelFileError(
            path,
            f"not a readable PyTorch file ({_short(exc)})",
            "the file is truncated or corrupt; re-save it",
        ) from None
    except Exception as exc:  # RuntimeError/EOFError/zip errors/MemoryError from torch.load
        raise ModelFileError(
            path,
            f"not a readable PyTorch file ({_short(exc)})",
            "the file is truncated or corrupt; re-save it",
        ) from None
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module) or (
                isinstance(inner, Mapping) and inner and _all_tensors(inner)
            ):
                obj = inner
                break
    sidecar = read_sidecar(path)
    where = path.with_suffix(".json")
    if isinstance(obj, nn.Module):
        loaded = LoadedModel(
            path=path,
            format="pickle",
            module=obj,
            weights=_state_of(obj),
            spec=spec or _spec_of(where, sidecar),
            arch=arch or _file_arch(where, sidecar),
            metadata=_metadata_of(sidecar),
        )
        _ensure_eval(loaded, obj, path.name)
        return loaded
    if isinstance(obj, Mapping) and obj and _all_tensors(obj):
        return _from_state_dict(where, path, dict(obj), arch, spec, sidecar, "pickle")
    raise ModelFileError(
        path,
        f"holds a {type(obj).__name__}, not a torch.nn.Module or a state dict of tensors",
        "save the model with torch.save(model.state_dict(), ...) or as safetensors",
    )

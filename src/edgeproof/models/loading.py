"""Load a model from any file format edgeproof supports, safely.

Dispatch is by file content where formats share a container (PyTorch zip archives), else by
extension:

========================  =========================================================================
``.safetensors``          weights via ``safetensors`` (never pickle). Architecture from ``arch``, or
                          from the sidecar ``<stem>.json`` / header metadata that
                          :func:`edgeproof.models.train.save_model` writes; without either the model
                          is *weights-only* (data-free checks only).
``.pt2``                  ``torch.export`` program, read piece by piece without unpickling
                          (:mod:`edgeproof.models.formats.export`), then ``.module()``.
``.pt .pth .ts .jit``     a TorchScript archive (zip with ``code/`` or ``constants.pkl``) →
                          statically checked against an operator allowlist
                          (:mod:`edgeproof.models.formats.torchscript`), then ``torch.jit.load``;
                          a ``torch.export`` archive under another name → as ``.pt2``;
                          otherwise a ``torch.save`` file → ``torch.load(weights_only=True)``
                          (a state dict; built with ``arch``), or with ``trust_code=True``
                          ``torch.load(weights_only=False)`` (a full module or a state dict).
``.onnx``                 ONNX Runtime ``InferenceSession`` (CPUExecutionProvider), forward only;
                          ``weights`` are the graph initializers.
========================  =========================================================================

Nothing in a file is executed unless ``trust_code=True`` (``trust_pickle=True`` is the old name,
kept as an alias): ``torch.load(weights_only=True)`` uses PyTorch's restricted unpickler, which
refuses any object that is not a tensor or plain container; TorchScript code may only call
allowlisted pure tensor operators; a ``.pt2`` archive is never unpickled. An architecture named
*inside a file* (the sidecar's or the safetensors header's ``arch``) may only name the zoo
(``zoo:NAME``): anything else is refused, and only the caller's ``arch`` argument can name user
code (``arch="pkg.mod:callable"`` imports code the user named, not code from the file).
Declared sizes are bounded by :mod:`edgeproof.limits` before anything is allocated.

Every failure is a :class:`~edgeproof.errors.UserError` with one line naming the file, the problem
and the fix. A module found in train mode is switched to eval mode, with a warning recorded in
:attr:`LoadedModel.warnings`.

The input spec is the ``spec`` argument if given (an explicit choice wins), else the sidecar's,
else ``None`` (the runner infers it from the data later). A sidecar's spec is validated field by
field (types, finite domain, bounded shape and class count); a bad field names the sidecar.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeproof import limits
from edgeproof.errors import (
    ArchitectureMismatchError,
    ModelFileError,
    OptionError,
    UnsafePickleError,
    UserError,
    param,
)
from edgeproof.extras import needs_extra
from edgeproof.models.formats.export import load_export
from edgeproof.models.formats.torchscript import load_torchscript
from edgeproof.models.interface import (
    SCORES_OUTPUT_KEY,
    ModelInterface,
    bind_module,
    bind_session,
    needs_binding,
    needs_session_binding,
)
from edgeproof.models.loaded import LoadedModel, ModelFormat
from edgeproof.models.zoo import (
    ZOO,
    Normalization,
    Normalize,
    arch_from_string,
    infer_build_args,
    natural_key,
)
from edgeproof.spec import InputSpec
from edgeproof.structured import parse_json, read_json
from edgeproof.zipfiles import ZipArchive, is_zip

__all__ = ["SUPPORTED_SUFFIXES", "bind", "from_module", "load_model", "read_sidecar"]

SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".safetensors",
    ".pt2",
    ".pt",
    ".pth",
    ".ts",
    ".jit",
    ".onnx",
)
_SIDECAR_FORMAT = "edgeproof-model"
_SIDECAR_VERSION = 1
_MAX_LISTED = 5
_ZOO_ARCH = re.compile(r"zoo:[A-Za-z0-9_\-]+")
_TRUST_FIX = (
    f"pass {param('trust_code', switch=True)} only if you trust the file, or re-save it as a "
    "state dict / safetensors"
)


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    trust_code: bool = False,
    trust_pickle: bool = False,
    spec: InputSpec | None = None,
    interface: ModelInterface | None = None,
) -> LoadedModel:
    """Load the model in ``path``.

    Args:
        path: the model file (see the module docstring for the formats).
        arch: ``zoo:NAME`` or ``package.module:callable`` building the module for a state dict
            (``.safetensors`` or a weights-only ``.pt``). Overrides the sidecar's architecture;
            the only way to name code outside the zoo.
        trust_code: let the file run code: full unpickling of ``.pt``/``.pth`` files,
            TorchScript operators outside the allowlist, ``torch.export.load`` on ``.pt2``.
            Only for files you trust.
        trust_pickle: the old name of ``trust_code`` (either one enables it).
        spec: the input specification; overrides the sidecar's.
        interface: how to call a model whose forward is not ``logits = f(x)``: which input the
            data feeds, values of the other inputs, which output holds the class scores and
            whether they are probabilities (:mod:`edgeproof.models.interface`). Default: the
            model's only input and output as logits; a forward with more required arguments,
            an ONNX graph with several inputs or outputs, or a module with a ``reset_states``
            method is bound with the defaults there, and how it is called is recorded in
            :attr:`LoadedModel.warnings`.

    Raises:
        ModelFileError: missing, unsupported, truncated or corrupt file, or a sidecar/header
            that names an architecture outside the zoo.
        UnsafeCodeError: loading would run code from the file and ``trust_code`` is false
            (``UnsafePickleError`` for pickles).
        ArchitectureMismatchError: the weights do not fit ``arch``.
    """
    trust = bool(trust_code or trust_pickle)
    p = Path(path)
    if not p.exists():
        raise ModelFileError(p, "no such file", "check the path")
    if p.is_dir():
        raise ModelFileError(p, "is a folder, not a model file", "give the model file inside it")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ModelFileError(
            p,
            f"unsupported model file type {suffix or '(no extension)'!r}",
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}",
        )
    if arch is not None and not isinstance(arch, str):
        raise OptionError("arch", f"{arch!r} is not a string", "give e.g. arch='zoo:resnet20'")
    loaded = _load(p, suffix, arch, trust, spec)
    interface = interface or ModelInterface()
    recorded = loaded.metadata.get(SCORES_OUTPUT_KEY)
    if interface.output is None and recorded is not None:
        interface = replace(interface, output=int(recorded))
    return bind(loaded, interface)


def _load(
    p: Path, suffix: str, arch: str | None, trust: bool, spec: InputSpec | None
) -> LoadedModel:
    if suffix == ".safetensors":
        return _load_safetensors(p, arch, spec)
    if suffix == ".onnx":
        return _ignoring_arch(_load_onnx(p, spec), arch)
    kind = _zip_kind(p)
    if suffix == ".pt2" or kind == "export":
        return _ignoring_arch(_load_export(p, spec, trust), arch)
    if kind == "torchscript":
        return _ignoring_arch(_load_torchscript(p, spec, trust), arch)
    return _load_pickle(p, arch, trust, spec)


def bind(loaded: LoadedModel, interface: ModelInterface) -> LoadedModel:
    """``loaded`` called as ``interface`` says (:mod:`edgeproof.models.interface`): its module
    or ONNX session wrapped where needed, how it is called added to its warnings. A weights-only
    model is returned as it is."""
    if loaded.module is not None and needs_binding(loaded.module, interface):
        bound = bind_module(loaded.module, interface, loaded.name)
        loaded.module = bound
        loaded.warnings.append(bound.described)
    elif loaded.session is not None and needs_session_binding(loaded.session, interface):
        session = bind_session(loaded.session, interface, loaded.name)
        loaded.session = session
        loaded.warnings.append(session.described)
    return loaded


def from_module(
    module: nn.Module, spec: InputSpec | None = None, arch: str | None = None
) -> LoadedModel:
    """Wrap an in-memory module (format ``"module"``); a module in train mode is set to eval."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_module needs a torch.nn.Module, got {type(module).__name__}")
    loaded = LoadedModel(path=None, format="module", module=module, spec=spec, arch=arch)
    _ensure_eval(loaded, module, "the module")
    loaded.weights = _state_of(module)
    return loaded


# --------------------------------------------------------------------------------------------
# Sidecar metadata


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The edgeproof metadata next to ``path`` (``<stem>.json``), or ``None`` if there is none.

    Raises :class:`ModelFileError` for a sidecar that is not valid JSON, is too large or too
    deeply nested, is from a newer edgeproof, or has a malformed field. A ``.json`` of another
    format is ignored.
    """
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    obj = read_json(side, error=ModelFileError, what="sidecar metadata")
    return _check_sidecar(side, obj)


def _check_sidecar(where: Path, obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or obj.get("format") != _SIDECAR_FORMAT:
        return None
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > _SIDECAR_VERSION:
        raise ModelFileError(
            where,
            f"sidecar metadata version {version!r} is not supported (this edgeproof "
            f"reads version {_SIDECAR_VERSION})",
            "upgrade edgeproof",
        )
    arch = obj.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise ModelFileError(where, f"sidecar 'arch' is {arch!r}, not a string", _SIDECAR_FIX)
    return obj


_SIDECAR_FIX = "fix or delete the sidecar and pass arch=/spec= explicitly"


def _spec_of(where: Path, sidecar: Mapping[str, Any] | None) -> InputSpec | None:
    if not sidecar or not sidecar.get("spec"):
        return None
    raw = sidecar["spec"]
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"it is a {type(raw).__name__}, not an object")
        return InputSpec.from_json(raw)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ModelFileError(
            where, f"sidecar 'spec' is malformed ({type(exc).__name__}: {exc})", _SIDECAR_FIX
        ) from None
    except UserError as exc:  # SpecError: shape/domain/classes out of range
        raise ModelFileError(where, f"sidecar 'spec' is invalid ({exc})", _SIDECAR_FIX) from None


def _metadata_of(sidecar: Mapping[str, Any] | None) -> dict[str, Any]:
    if not sidecar:
        return {}
    return {k: v for k, v in sidecar.items() if k not in ("format", "version", "spec", "arch")}


def _file_arch(where: Path, sidecar: Mapping[str, Any] | None) -> str | None:
    """The architecture a sidecar/header names, which may only be ``zoo:NAME``."""
    arch = (sidecar or {}).get("arch")
    if arch is None:
        return None
    if not isinstance(arch, str) or not _ZOO_ARCH.fullmatch(arch) or arch[4:] not in ZOO:
        shown = repr(arch) if len(repr(arch)) <= 80 else repr(arch)[:77] + "..."
        raise ModelFileError(
            where,
            f"names the architecture {shown}; an architecture read from a file may only name "
            f"the zoo ({', '.join('zoo:' + n for n in ZOO)}), so edgeproof does not import it",
            f"pass {param('arch')} package.module:callable yourself if you trust that code, "
            "or fix the metadata",
        )
    return arch


# --------------------------------------------------------------------------------------------
# Formats


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


# --------------------------------------------------------------------------------------------
# State dicts


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


# --------------------------------------------------------------------------------------------
# Helpers


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

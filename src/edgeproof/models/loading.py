"""Load a model from any file format edgeproof supports, safely.

Dispatch is by file content where formats share a container (PyTorch zip archives), else by
extension:

========================  =========================================================================
``.safetensors``          weights via ``safetensors`` (never pickle). Architecture from ``arch``, or
                          from the sidecar ``<stem>.json`` / header metadata that
                          :func:`edgeproof.models.train.save_model` writes; without either the model
                          is *weights-only* (data-free checks only).
``.pt2``                  ``torch.export`` program (``torch.export.load(...).module()``).
``.pt .pth .ts .jit``     a TorchScript archive (zip with ``code/`` or ``constants.pkl``) →
                          ``torch.jit.load``; otherwise a ``torch.save`` file →
                          ``torch.load(weights_only=True)`` (a state dict; built with ``arch``),
                          or with ``trust_pickle=True`` ``torch.load(weights_only=False)``
                          (a full module or a state dict).
``.onnx``                 ONNX Runtime ``InferenceSession`` (CPUExecutionProvider), forward only;
                          ``weights`` are the graph initializers.
========================  =========================================================================

Nothing in a file is executed unless ``trust_pickle=True``: ``torch.load(weights_only=True)`` uses
PyTorch's restricted unpickler, which refuses any object that is not a tensor or plain container.
(``arch="pkg.mod:callable"`` imports user code, but code the user named, not code from the file.)

Every failure is a :class:`~edgeproof.errors.UserError` with one line naming the file, the problem
and the fix. A module found in train mode is switched to eval mode, with a warning recorded in
:attr:`LoadedModel.warnings`.

The input spec is the ``spec`` argument if given (an explicit choice wins), else the sidecar's,
else ``None`` (the runner infers it from the data later).
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeproof.errors import ArchitectureMismatchError, ModelFileError, UnsafePickleError
from edgeproof.models.loaded import LoadedModel, ModelFormat
from edgeproof.models.zoo import (
    Normalization,
    Normalize,
    arch_from_string,
    infer_build_args,
    natural_key,
)
from edgeproof.spec import InputSpec

__all__ = ["SUPPORTED_SUFFIXES", "from_module", "load_model", "read_sidecar"]

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


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    spec: InputSpec | None = None,
) -> LoadedModel:
    """Load the model in ``path``.

    Args:
        path: the model file (see the module docstring for the formats).
        arch: ``zoo:NAME`` or ``package.module:callable`` building the module for a state dict
            (``.safetensors`` or a weights-only ``.pt``). Overrides the sidecar's architecture.
        trust_pickle: allow full unpickling of ``.pt``/``.pth`` files. Only for files you trust:
            unpickling can run arbitrary code.
        spec: the input specification; overrides the sidecar's.

    Raises:
        ModelFileError: missing, unsupported, truncated or corrupt file.
        UnsafePickleError: the file holds pickled objects and ``trust_pickle`` is false.
        ArchitectureMismatchError: the weights do not fit ``arch``.
    """
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
    if suffix == ".safetensors":
        return _load_safetensors(p, arch, spec)
    if suffix == ".onnx":
        return _ignoring_arch(_load_onnx(p, spec), arch)
    kind = _zip_kind(p)
    if suffix == ".pt2" or kind == "export":
        return _ignoring_arch(_load_export(p, spec), arch)
    if kind == "torchscript":
        return _ignoring_arch(_load_torchscript(p, spec), arch)
    return _load_pickle(p, arch, trust_pickle, spec)


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

    Raises :class:`ModelFileError` for a sidecar that is not valid JSON or is from a newer
    edgeproof. A ``.json`` of another format is ignored.
    """
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        obj = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            side,
            f"sidecar metadata is not valid JSON ({exc})",
            "rewrite it with `edgeproof train`, or delete it and pass --arch",
        ) from None
    return _check_sidecar(side, obj)


def _check_sidecar(where: Path, obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or obj.get("format") != _SIDECAR_FORMAT:
        return None
    version = obj.get("version")
    if not isinstance(version, int) or version > _SIDECAR_VERSION:
        raise ModelFileError(
            where,
            f"sidecar metadata version {version!r} is not supported (this edgeproof "
            f"reads version {_SIDECAR_VERSION})",
            "upgrade edgeproof",
        )
    return obj


def _spec_of(where: Path, sidecar: Mapping[str, Any] | None) -> InputSpec | None:
    if not sidecar or not sidecar.get("spec"):
        return None
    try:
        return InputSpec.from_json(sidecar["spec"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(
            where,
            f"sidecar 'spec' is malformed ({type(exc).__name__}: {exc})",
            "fix or delete the sidecar and pass --spec",
        ) from None


def _metadata_of(sidecar: Mapping[str, Any] | None) -> dict[str, Any]:
    if not sidecar:
        return {}
    return {k: v for k, v in sidecar.items() if k not in ("format", "version", "spec", "arch")}


# --------------------------------------------------------------------------------------------
# Formats


def _zip_kind(path: Path) -> str | None:
    """``torchscript``, ``export``, ``torch-save`` or ``None`` (not a zip) for a PyTorch file."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(
        n.endswith("/archive_format") or ("/models/" in n and n.endswith(".json")) for n in names
    ):
        return "export"
    return "torch-save"


def _load_safetensors(path: Path, arch: str | None, spec: InputSpec | None) -> LoadedModel:
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = fh.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(
            path,
            f"not a readable safetensors file ({_short(exc)})",
            "the file is truncated or corrupt; re-export or re-download it",
        ) from None
    sidecar = read_sidecar(path)
    if sidecar is None and "edgeproof" in header:
        try:
            sidecar = _check_sidecar(path, json.loads(header["edgeproof"]))
        except json.JSONDecodeError:
            sidecar = None
    return _from_state_dict(path, tensors, arch, spec, sidecar, "safetensors")


def _load_onnx(path: Path, spec: InputSpec | None) -> LoadedModel:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    fix = "the file is truncated or corrupt; re-export it with torch.onnx.export"
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends: convert at the boundary
        raise ModelFileError(path, f"not a valid ONNX model ({_short(exc)})", fix) from None
    if len(proto.graph.node) == 0:
        raise ModelFileError(path, "ONNX model has an empty graph", fix)
    weights = {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in proto.graph.initializer
    }
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
        spec=spec or _spec_of(path, sidecar),
        arch=(sidecar or {}).get("arch"),
        metadata=_metadata_of(sidecar),
    )


def _load_export(path: Path, spec: InputSpec | None) -> LoadedModel:
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # it logs a traceback before raising; we convert
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as exc:  # torch raises RuntimeError/KeyError/zip errors for bad archives
        raise ModelFileError(
            path,
            f"not a loadable torch.export program ({_short(exc)})",
            "the file is truncated or corrupt, or not written by torch.export.save; re-export it",
        ) from None
    finally:
        export_log.setLevel(level)
    sidecar = read_sidecar(path)
    loaded = LoadedModel(
        path=path,
        format="torch-export",
        module=module,
        weights=_state_of(module),
        spec=spec or _spec_of(path, sidecar),
        arch=(sidecar or {}).get("arch"),
        metadata=_metadata_of(sidecar),
    )
    if _exported_to_eval(module):
        loaded.warnings.append(
            f"{path.name}: the program was exported in train mode (batch-norm/dropout used batch "
            "statistics or random masks); switched those operators to eval mode"
        )
    return loaded


def _load_torchscript(path: Path, spec: InputSpec | None) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError for bad archives
        raise ModelFileError(
            path,
            f"not a loadable TorchScript archive ({_short(exc)})",
            "the file is truncated or corrupt; re-save it with torch.jit.save",
        ) from None
    sidecar = read_sidecar(path)
    loaded = LoadedModel(
        path=path,
        format="torchscript",
        module=module,
        weights=_state_of(module),
        spec=spec or _spec_of(path, sidecar),
        arch=(sidecar or {}).get("arch"),
        metadata=_metadata_of(sidecar),
    )
    _ensure_eval(loaded, module, path.name)
    return loaded


_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


def _load_pickle(
    path: Path, arch: str | None, trust_pickle: bool, spec: InputSpec | None
) -> LoadedModel:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "weights only load failed" in str(exc).lower():
            raise UnsafePickleError(
                path,
                "the file contains pickled Python objects, not only tensors; loading it "
                "would run code from the file",
                "pass --trust-pickle (trust_pickle=True) only if you trust the file, or re-save "
                "it as a state dict / safetensors",
            ) from None
        raise ModelFileError(
            path,
            f"not a readable PyTorch file ({_short(exc)})",
            "the file is truncated or corrupt; re-save it",
        ) from None
    except Exception as exc:  # RuntimeError/EOFError/zip errors from torch.load
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
    if isinstance(obj, nn.Module):
        loaded = LoadedModel(
            path=path,
            format="pickle",
            module=obj,
            weights=_state_of(obj),
            spec=spec or _spec_of(path, sidecar),
            arch=arch or (sidecar or {}).get("arch"),
            metadata=_metadata_of(sidecar),
        )
        _ensure_eval(loaded, obj, path.name)
        return loaded
    if isinstance(obj, Mapping) and obj and _all_tensors(obj):
        return _from_state_dict(path, dict(obj), arch, spec, sidecar, "pickle")
    raise ModelFileError(
        path,
        f"holds a {type(obj).__name__}, not a torch.nn.Module or a state dict of tensors",
        "save the model with torch.save(model.state_dict(), ...) or as safetensors",
    )


# --------------------------------------------------------------------------------------------
# State dicts


def _from_state_dict(
    path: Path,
    tensors: dict[str, torch.Tensor],
    arch: str | None,
    spec: InputSpec | None,
    sidecar: Mapping[str, Any] | None,
    fmt: ModelFormat,
) -> LoadedModel:
    side_spec = _spec_of(path, sidecar)
    spec = spec or side_spec
    arch = arch or (sidecar or {}).get("arch")
    metadata = _metadata_of(sidecar)
    if not arch:
        return LoadedModel(
            path=path, format="weights-only", weights=tensors, spec=spec, metadata=metadata
        )
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
    module = arch_from_string(arch, shape, num_classes, normalization)
    _check_fits(path, arch, module, tensors)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # dtype or other detail not covered by the shape check
        raise ArchitectureMismatchError(
            f"{path}: weights do not load into {arch} ({_short(exc)}); pass the --arch the "
            "weights were trained with"
        ) from None
    module.eval()
    if spec is not None and spec.num_classes is None:
        spec = spec.with_(num_classes=num_classes)
    if spec is not None and spec.normalization is None:
        norm = next((m.as_tuple() for m in module.modules() if isinstance(m, Normalize)), None)
        if norm is not None and len(norm[0]) == spec.shape[0]:
            spec = spec.with_(normalization=norm)
    return LoadedModel(
        path=path,
        format=fmt,
        module=module,
        weights=tensors,
        spec=spec,
        arch=arch,
        metadata=metadata,
    )


def _last_linear_out(path: Path, arch: str, tensors: Mapping[str, torch.Tensor]) -> int:
    two_d = [
        v
        for k, v in sorted(tensors.items(), key=lambda kv: natural_key(kv[0]))
        if v.dim() == 2 and k.endswith("weight")
    ]
    if not two_d:
        raise ArchitectureMismatchError(
            f"{path}: cannot tell the number of classes for {arch} (no linear layer in the "
            "weights); pass --spec with num_classes or keep the sidecar .json"
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
        + ". Pass the --arch the weights were trained with (and --spec for its input shape)"
    )


# --------------------------------------------------------------------------------------------
# Helpers


def _ignoring_arch(loaded: LoadedModel, arch: str | None) -> LoadedModel:
    if arch:
        loaded.warnings.append(
            f"{loaded.name}: --arch {arch} ignored: a {loaded.format} file carries its own "
            "architecture"
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

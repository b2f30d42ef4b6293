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

from dataclasses import replace
from pathlib import Path

from torch import nn

from edgeproof.errors import (
    ModelFileError,
    OptionError,
)
from edgeproof.models.interface import (
    SCORES_OUTPUT_KEY,
    ModelInterface,
    bind_module,
    bind_session,
    needs_binding,
    needs_session_binding,
)
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.readers import (
    _load_export,
    _load_onnx,
    _load_pickle,
    _load_safetensors,
    _load_torchscript,
    _zip_kind,
)
from edgeproof.models.sidecar import read_sidecar
from edgeproof.models.state_dict import (
    _ensure_eval,
    _ignoring_arch,
    _state_of,
)
from edgeproof.spec import InputSpec

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

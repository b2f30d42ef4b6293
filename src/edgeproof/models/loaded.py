"""LoadedModel: one wrapper over every model format edgeproof reads.

A loaded model is one of three things:

* a PyTorch module (safetensors + architecture, TorchScript, ``torch.export`` program, trusted
  pickle) — forward and gradients are available;
* an ONNX Runtime session — forward only; checks needing gradients are skipped with a reason;
* weights only (safetensors without an architecture, or any file loaded for data-free checks) —
  no forward at all, only the named tensors.

Every form exposes its named weight tensors (``weights``), so data-free checks work on all of them.

A loaded model pickles (to go to a worker process or to Ray): a TorchScript module as the bytes
``torch.jit.save`` writes, an ONNX Runtime session as the graph it was built from and its thread
settings, each rebuilt on the other side into the same program. A ``torch.export`` program's
module cannot travel (torch builds it with local functions); pickling one raises a
:class:`TypeError` that says so.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from edgeproof.errors import SpecError
from edgeproof.spec import InputSpec

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["LoadedModel", "ModelFormat"]

ModelFormat = Literal[
    "safetensors", "weights-only", "torchscript", "torch-export", "onnx", "pickle", "module"
]


@dataclass
class LoadedModel:
    """A model ready for checks, whatever file it came from.

    Attributes:
        path: the file it was loaded from (``None`` for an in-memory module).
        format: which loader produced it.
        module: a ``torch.nn.Module`` in eval mode, if the model can run in PyTorch.
        session: an ONNX Runtime inference session, for ``.onnx`` models.
        weights: named weight tensors (float or int), always present.
        spec: the input specification, if known (from metadata, or set later).
        arch: the architecture name (``zoo:resnet20`` or ``pkg.mod:fn``), if known.
        metadata: anything else the sidecar metadata said (training settings, etc.).
        warnings: things the loader noticed and fixed (e.g. "model was in train mode").
        input_affine: ``(scale, shift)`` per channel edgeproof applies before the model (set by
            :meth:`for_spec`: a normalisation outside the model, per-feature ranges); ``module``
            then takes the audit's inputs and :attr:`network` is the user's module, which takes
            ``x · scale + shift``.
    """

    path: Path | None
    format: ModelFormat
    module: torch.nn.Module | None = None
    session: onnxruntime.InferenceSession | None = None
    weights: Mapping[str, torch.Tensor] = field(default_factory=dict)
    spec: InputSpec | None = None
    arch: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    input_affine: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    _network: torch.nn.Module | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """The fields, with the forms pickle cannot carry turned into bytes (module docstring)."""
        state = dict(self.__dict__)
        if self._network is not None:  # a view (for_spec): rebuilt around the user's module
            state["module"] = None
        for key in ("module", "_network"):
            if isinstance(state[key], torch.jit.ScriptModule):
                state[key] = _Scripted.of(state[key])
            elif state[key] is not None and self.format == "torch-export":
                raise TypeError(
                    f"{self.name}: a torch.export program's module cannot be sent to another "
                    "process (torch builds it with local functions); run it in this process "
                    "(executor='inprocess'), or give the model as ONNX or TorchScript"
                )
        if self.session is not None:
            state["session"] = _Session.of(self.session)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("module", "_network", "session"):
            if isinstance(state[key], (_Scripted, _Session)):
                state[key] = state[key].rebuilt()
        if state["_network"] is not None and state["input_affine"] is not None:
            from edgeproof.models.modules import InputAffine

            state["module"] = InputAffine(state["_network"], *state["input_affine"])
        self.__dict__.update(state)

    @property
    def described(self) -> str:
        """``an onnx model``, ``a torchscript model``: the format with its article, for messages."""
        return f"{self.format_with_article} model"

    @property
    def format_with_article(self) -> str:
        """``an onnx``, ``a torchscript``."""
        return f"{'an' if self.format[:1] in 'aeiou' else 'a'} {self.format}"

    @property
    def network(self) -> torch.nn.Module | None:
        """The user's module as loaded: without edgeproof's input transform (weight-level
        checks read and flip its parameters; it takes ``x · scale + shift``)."""
        return self._network if self._network is not None else self.module

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (the audit's units) in the units :attr:`network` takes."""
        if self.input_affine is None:
            return x
        scale, shift = (torch.tensor(v, dtype=x.dtype) for v in self.input_affine)
        shape = (-1,) + (1,) * (x.dim() - 2) if x.dim() >= 2 else (-1,)
        return x * scale.view(shape) + shift.view(shape)

    def for_spec(self, spec: InputSpec) -> LoadedModel:
        """This model as an audit of ``spec`` runs it: when the spec declares a normalisation
        outside the model or per-feature ranges (:meth:`InputSpec.input_affine`), a view whose
        ``module`` takes the audit's inputs (the transform applied first,
        :class:`~edgeproof.models.modules.InputAffine`) and whose ONNX session is fed the
        transformed inputs; otherwise the model itself."""
        affine = spec.input_affine()
        if affine == self.input_affine:
            return self
        if self.input_affine is not None:
            raise SpecError(
                f"{self.name}: its inputs are already transformed by {self.input_affine}; "
                "pass the model as loaded"
            )
        from edgeproof.models.modules import InputAffine

        assert affine is not None
        module = None if self.module is None else InputAffine(self.module, *affine)
        return replace(
            self,
            module=module,
            input_affine=affine,
            _network=self.module,
            spec=spec,
            warnings=list(self.warnings),
        )

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else (self.arch or "in-memory model")

    @property
    def can_forward(self) -> bool:
        """True if inputs can be run through the model (PyTorch or ONNX Runtime)."""
        return self.module is not None or self.session is not None

    @property
    def has_gradients(self) -> bool:
        """True if input/parameter gradients are available (a PyTorch module)."""
        return self.module is not None

    @property
    def has_architecture(self) -> bool:
        """True if the model's layer structure is available as a PyTorch module."""
        return self.module is not None

    @property
    def num_parameters(self) -> int:
        """Parameter elements: the module's parameters (shared tensors once, buffers such as a
        normalisation layer's mean/std or BatchNorm statistics excluded) when there is a module;
        otherwise every named tensor (ONNX initializers, a weights-only file), as the footprint
        check counts them."""
        if self.module is not None:
            return int(sum(p.numel() for p in self.module.parameters()))
        return int(sum(t.numel() for t in self.weights.values()))

    def predict_logits(self, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Run inputs through the model in batches; returns float32 logits ``(N, K)``."""
        from edgeproof.options import positive_int

        batch_size = positive_int("batch_size", batch_size)
        xt = (
            torch.as_tensor(np.asarray(x, dtype=np.float32))
            if not isinstance(x, torch.Tensor)
            else x
        )
        outs: list[np.ndarray] = []
        if self.module is not None:
            with torch.inference_mode():
                for i in range(0, xt.shape[0], batch_size):
                    out = self.module(xt[i : i + batch_size].float())
                    if isinstance(out, (tuple, list)):
                        from edgeproof.models.interface import outputs_error

                        raise outputs_error(
                            self.name,
                            [
                                f"tensor {tuple(o.shape)}" if hasattr(o, "shape") else "?"
                                for o in out
                            ],
                        )
                    outs.append(out.detach().float().cpu().numpy())
        elif self.session is not None:
            inp = self.session.get_inputs()[0].name
            xn = self.preprocess(xt.detach().float()).cpu().numpy().astype(np.float32)
            for i in range(0, xn.shape[0], batch_size):
                res = self.session.run(None, {inp: xn[i : i + batch_size]})
                outs.append(np.asarray(res[0], dtype=np.float32))
        else:
            raise RuntimeError(f"{self.name}: weights-only model has no forward pass")
        if not outs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(outs, axis=0)


@dataclass(frozen=True)
class _Scripted:
    """A TorchScript module as ``torch.jit.save`` writes it (it does not pickle itself)."""

    data: bytes
    training: bool

    @classmethod
    def of(cls, module: torch.jit.ScriptModule) -> _Scripted:
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        return cls(buf.getvalue(), module.training)

    def rebuilt(self) -> torch.nn.Module:
        module = torch.jit.load(io.BytesIO(self.data), map_location="cpu")
        result: torch.nn.Module = module.train(self.training)
        return result


@dataclass(frozen=True)
class _Session:
    """An ONNX Runtime session as the graph it runs and its thread settings."""

    model: bytes
    intra_op_threads: int
    inter_op_threads: int
    providers: tuple[str, ...]

    @classmethod
    def of(cls, session: onnxruntime.InferenceSession) -> _Session:
        # the session keeps the bytes it was built from (onnxruntime's _model_bytes); one built
        # from a path is not read again here: the file may have changed since
        data = getattr(session, "_model_bytes", None)
        if data is None:
            raise TypeError(
                "an ONNX Runtime session built from a file path cannot be sent to another "
                "process; build it from the graph's bytes (as load_model does)"
            )
        opts = session.get_session_options()
        return cls(
            bytes(data),
            opts.intra_op_num_threads,
            opts.inter_op_num_threads,
            tuple(session.get_providers()),
        )

    def rebuilt(self) -> onnxruntime.InferenceSession:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        return ort.InferenceSession(self.model, sess_options=opts, providers=list(self.providers))

"""How the audit calls a model whose forward is not ``logits = f(x)``.

Published models often take more than the data (a recurrent state, a sample rate), return more
than class scores (a tuple of boxes, landmarks and probabilities), return probabilities instead of
logits, or keep a state between calls. :class:`ModelInterface` says how to call such a model;
:func:`bind_module` and :func:`bind_session` wrap a PyTorch module or an ONNX Runtime session so
that every check sees a plain ``(N, ...) -> (N, K) logits`` model. Settings, each one library
argument of :func:`edgeproof.models.loading.load_model`:

* ``input`` — the model input the data feeds (an ONNX input or a ``forward`` argument name);
  default: the first input (ONNX) or the first ``Tensor`` argument (PyTorch).
* ``input_values`` — values for the other scalar inputs (``{"sr": 16000}``). Defaults, in this
  order: the value given; the argument's default in the ``forward`` signature; :data:`DEFAULTS`
  by name (``sr``/``sample_rate`` = 16000, the rate of 16 kHz speech models such as silero-vad);
  else zeros of the input's declared shape and type (a recurrent state starts at zero; each
  symbolic dimension of its shape is the batch size). A PyTorch argument with none of these is
  refused with the fix.
* ``output`` — which output holds the class scores (an index into the outputs). Required when
  the model has several outputs: the audit refuses to guess (:func:`outputs_error`).
* ``scores`` — ``"logits"`` or ``"probabilities"``; not given: several columns are logits and
  a single column is refused (a logit and a probability cannot be told apart). Probabilities
  are audited as ``log p`` (``softmax(log p) = p``, so the predictions and calibration are the
  model's own); a single column is a binary score of class 1: a logit ``z`` becomes ``[0, z]``
  (``softmax = [1 − σ(z), σ(z)]``), a probability ``p`` becomes ``[log(1 − p), log p]``.
  Probabilities are clipped to ``[1e-12, 1]`` before the log.
* ``reset`` — a method the model is asked to run before each call (default ``reset_states``,
  which streaming models such as silero-vad define to drop the state they keep between calls),
  so that each batch is independent records and not the continuation of the previous batch.

The wrapper never copies weights: :attr:`BoundModule.inner` is the user's module, and its
parameters are the wrapper's.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError, param

__all__ = [
    "DEFAULTS",
    "SCORES_OUTPUT_KEY",
    "BoundModule",
    "BoundSession",
    "ModelInterface",
    "bind_module",
    "bind_session",
    "needs_binding",
    "needs_session_binding",
    "outputs_error",
    "scores_to_logits",
]

Scores = Literal["logits", "probabilities"]

#: default values of scalar inputs, by name (a 16 kHz sample rate: silero-vad's ``sr``)
DEFAULTS: Mapping[str, float] = {"sr": 16000, "sample_rate": 16000}
_EPS = 1e-12


SCORES_OUTPUT_KEY = "edgeproof.scores_output"
"""ONNX metadata key (``metadata_props``) naming, by index, the output that holds the class
scores, for graphs with several outputs that edgeproof writes (an early-exit cascade's all-exits
graph): loading such a graph without ``output`` reads that one."""


@dataclass(frozen=True)
class ModelInterface:
    """How to call the model (see the module docstring)."""

    input: str | None = None
    input_values: Mapping[str, float] = field(default_factory=dict)
    output: int | None = None
    scores: Scores | None = None
    reset: str | None = "reset_states"

    def __post_init__(self) -> None:
        if self.output is not None and (isinstance(self.output, bool) or self.output < 0):
            raise OptionError("output", f"{self.output!r} is not an output index", "give 0, 1, ...")
        if self.scores not in (None, "logits", "probabilities"):
            raise OptionError(
                "scores", f"unknown value {self.scores!r}", "give logits or probabilities"
            )

    @property
    def is_default(self) -> bool:
        return self == ModelInterface()


def scores_to_logits(out: torch.Tensor, scores: Scores | None, name: str = "model") -> torch.Tensor:
    """The chosen output as ``(N, K)`` logits (see the module docstring). ``scores=None`` (not
    declared) reads several columns as logits and refuses a single column (a logit or a
    probability cannot be told apart)."""
    if out.dim() == 1:
        out = out.unsqueeze(1)
    if scores is None and out.dim() == 2 and out.shape[-1] == 1:
        raise SpecError(
            f"{name}: the model returns one score per sample; if it is a binary score of "
            f"class 1, say whether it is a logit or a probability with {param('scores')} "
            "logits or probabilities"
        )
    if scores == "probabilities":
        p = out.clamp(_EPS, 1.0)
        if out.shape[-1] == 1:
            return torch.cat([torch.log((1.0 - out).clamp(_EPS, 1.0)), torch.log(p)], dim=-1)
        return torch.log(p)
    if out.shape[-1] == 1:
        return torch.cat([torch.zeros_like(out), out], dim=-1)
    return out


def outputs_error(name: str, shapes: Sequence[str]) -> SpecError:
    """The refusal for a model with several outputs and no ``output`` chosen."""
    listed = ", ".join(f"{i}: {s}" for i, s in enumerate(shapes))
    return SpecError(
        f"{name}: the model returns {len(shapes)} outputs ({listed}) and the audit needs one "
        f"set of class scores; say which with {param('output')} (an index), and "
        f"{param('scores')} probabilities if it holds probabilities"
    )


def _shape_text(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"array {tuple(value.shape)}"
    return type(value).__name__


# ------------------------------------------------------------------------------------ PyTorch


@dataclass(frozen=True)
class _Argument:
    name: str
    is_tensor: bool
    has_default: bool
    default: Any


def _arguments(module: nn.Module) -> list[_Argument]:
    """The ``forward`` arguments after ``self`` (TorchScript schema, or the Python signature)."""
    if isinstance(module, torch.jit.ScriptModule):
        schema = module.forward.schema  # type: ignore[attr-defined]
        out = []
        for a in schema.arguments[1:]:
            kind = str(a.type)
            out.append(
                _Argument(
                    a.name,
                    kind.startswith("Tensor") or kind.startswith("Optional[Tensor"),
                    a.default_value is not None or kind.startswith("Optional"),
                    a.default_value,
                )
            )
        return out
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return [_Argument("x", True, False, None)]
    out = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        is_tensor = ann is inspect.Parameter.empty or "Tensor" in str(ann)
        has = p.default is not inspect.Parameter.empty
        out.append(_Argument(p.name, is_tensor, has, p.default if has else None))
    return out


def _has_method(module: nn.Module, name: str) -> bool:
    if isinstance(module, torch.jit.ScriptModule):
        return bool(module._c._has_method(name))
    return callable(getattr(module, name, None))


class BoundModule(nn.Module):
    """A module called as :class:`ModelInterface` says: ``forward(x)`` returns ``(N, K)`` logits.

    Attributes:
        inner: the user's module (its parameters are this module's).
        described: one line saying how the model is called (recorded in the audit's warnings).
    """

    def __init__(self, inner: nn.Module, interface: ModelInterface, name: str) -> None:
        super().__init__()
        self.inner = inner
        self.interface = interface
        self.model_name = name
        args = _arguments(inner)
        names = [a.name for a in args]
        if interface.input is not None:
            if interface.input not in names:
                raise OptionError(
                    "input",
                    f"{name}: forward has no argument {interface.input!r} "
                    f"(arguments: {', '.join(names) or 'none'})",
                    "give one of them",
                )
            data_arg = interface.input
        else:
            tensors = [a.name for a in args if a.is_tensor]
            if not tensors:
                raise OptionError(
                    "input",
                    f"{name}: forward takes no Tensor argument ({', '.join(names)})",
                    "name the argument the data feeds",
                )
            data_arg = tensors[0]
        unknown = sorted(set(interface.input_values) - set(names))
        if unknown:
            raise OptionError(
                "input_values",
                f"{name}: forward has no argument {unknown[0]!r} (arguments: {', '.join(names)})",
                "give values for its arguments only",
            )
        self.data_arg = data_arg
        self.fixed: dict[str, Any] = {}
        said: list[str] = []
        for a in args:
            if a.name == data_arg:
                continue
            if a.name in interface.input_values:
                value = interface.input_values[a.name]
                self.fixed[a.name] = int(value) if float(value).is_integer() else float(value)
                said.append(f"{a.name} = {self.fixed[a.name]} (given)")
            elif a.has_default:
                continue  # the signature's own default
            elif a.name in DEFAULTS and not a.is_tensor:
                self.fixed[a.name] = int(DEFAULTS[a.name])
                said.append(f"{a.name} = {self.fixed[a.name]} (edgeproof's default)")
            else:
                raise OptionError(
                    "input_values",
                    f"{name}: forward also takes {a.name!r} "
                    f"({'a tensor' if a.is_tensor else 'a scalar'}) besides the data in "
                    f"{data_arg!r}, with no default",
                    f"give it a value with {param('input_values')} {a.name}=VALUE",
                )
        self.reset_method = (
            interface.reset
            if interface.reset is not None and _has_method(inner, interface.reset)
            else None
        )
        parts = [f"the data feeds forward argument {data_arg!r}"]
        parts += said
        if self.reset_method is not None:
            parts.append(f"{self.reset_method}() runs before every call (state kept between calls)")
        out = "the output" if interface.output is None else f"output {interface.output}"
        parts.append(f"{out} is audited as {interface.scores or 'logits'}")
        self.described = f"{name}: " + "; ".join(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reset_method is not None:
            getattr(self.inner, self.reset_method)()
        out = self.inner(**{self.data_arg: x}, **self.fixed)
        if isinstance(out, (tuple, list)):
            if self.interface.output is None:
                raise outputs_error(self.model_name, [_shape_text(o) for o in out])
            if self.interface.output >= len(out):
                raise OptionError(
                    "output",
                    f"{self.model_name}: output {self.interface.output} does not exist (the "
                    f"model returns {len(out)} outputs)",
                    f"give 0..{len(out) - 1}",
                )
            out = out[self.interface.output]
        elif self.interface.output not in (None, 0):
            raise OptionError(
                "output",
                f"{self.model_name}: the model returns one output, not {self.interface.output + 1}",
                "drop the option or give 0",
            )
        return scores_to_logits(out, self.interface.scores, self.model_name)


def needs_binding(module: nn.Module, interface: ModelInterface) -> bool:
    """Whether ``module`` must be wrapped: an interface option is set, ``forward`` takes more
    than one argument without a default, or the module defines the ``reset`` method."""
    if not interface.is_default:
        return True
    required = [a for a in _arguments(module) if not a.has_default]
    if len(required) > 1:
        return True
    return interface.reset is not None and _has_method(module, interface.reset)


def bind_module(module: nn.Module, interface: ModelInterface, name: str) -> BoundModule:
    """``module`` wrapped as ``interface`` says (see :class:`BoundModule`)."""
    return BoundModule(module, interface, name).eval()


# --------------------------------------------------------------------------------------- ONNX

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def choose_io(
    interface: ModelInterface, inputs: Sequence[str], outputs: Sequence[str], name: str
) -> tuple[str, int]:
    """The input the data feeds and the index of the output holding the scores of an ONNX
    graph with ``inputs`` (names) and ``outputs`` (each shown as ``"name shape"``), as
    ``interface`` chooses them; one-line errors for a choice the graph does not have."""
    if interface.input is not None and interface.input not in inputs:
        raise OptionError(
            "input",
            f"{name}: the ONNX graph has no input {interface.input!r} "
            f"(inputs: {', '.join(inputs)})",
            "give one of them",
        )
    unknown = sorted(set(interface.input_values) - set(inputs))
    if unknown:
        raise OptionError(
            "input_values",
            f"{name}: the ONNX graph has no input {unknown[0]!r} (inputs: {', '.join(inputs)})",
            "give values for its inputs only",
        )
    if interface.output is None and len(outputs) > 1:
        raise outputs_error(name, outputs)
    index = interface.output or 0
    if index >= len(outputs):
        raise OptionError(
            "output",
            f"{name}: output {index} does not exist (the graph has {len(outputs)})",
            f"give 0..{len(outputs) - 1}",
        )
    return interface.input or inputs[0], index


class BoundSession:
    """An ONNX Runtime session seen as a one-input, one-output model.

    ``get_inputs()`` lists only the data input; ``run(None, {name: x})`` adds the other inputs
    (:class:`ModelInterface`: given values, :data:`DEFAULTS` by name, else zeros of the declared
    shape and type with every symbolic dimension set to the batch size) and returns the chosen
    output first. Everything else is the session's own.
    """

    def __init__(self, session: Any, interface: ModelInterface, name: str) -> None:
        self.session = session
        self.interface = interface
        inputs = list(session.get_inputs())
        outputs = list(session.get_outputs())
        names = [i.name for i in inputs]
        data_name, index = choose_io(
            interface, names, [f"{o.name} {o.shape}" for o in outputs], name
        )
        self.data_input = next(i for i in inputs if i.name == data_name)
        self.others = [i for i in inputs if i.name != data_name]
        self.output = outputs[index]
        self.name = name
        said = [f"the data feeds input {data_name!r} {self.data_input.shape}"]
        for i in self.others:
            if i.name in interface.input_values:
                said.append(f"{i.name} = {interface.input_values[i.name]} (given)")
            elif i.name in DEFAULTS and not i.shape:
                said.append(f"{i.name} = {DEFAULTS[i.name]:g} (edgeproof's default)")
            else:
                said.append(f"{i.name} = zeros {i.shape} (symbolic dimensions = batch)")
        said.append(
            f"output {index} {self.output.name!r} is audited as {interface.scores or 'logits'}"
        )
        self.described = f"{name}: " + "; ".join(said)

    def get_inputs(self) -> list[Any]:
        return [self.data_input]

    def get_outputs(self) -> list[Any]:
        return [self.output]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.session, attr)

    def _value(self, inp: Any, batch: int) -> np.ndarray:
        dtype = _ORT_TYPES.get(inp.type, np.float32)
        if inp.name in self.interface.input_values:
            given: np.ndarray = np.asarray(self.interface.input_values[inp.name], dtype=dtype)
            return given if not inp.shape else np.broadcast_to(given, self._shape(inp, batch))
        if inp.name in DEFAULTS and not inp.shape:
            return np.asarray(DEFAULTS[inp.name], dtype=dtype)
        return np.zeros(self._shape(inp, batch), dtype=dtype)

    @staticmethod
    def _shape(inp: Any, batch: int) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else batch for d in inp.shape)

    def run(self, output_names: Any, feed: Mapping[str, np.ndarray], *args: Any) -> list[Any]:
        x = np.asarray(feed[self.data_input.name])
        full = dict(feed)
        for inp in self.others:
            full[inp.name] = np.ascontiguousarray(self._value(inp, int(x.shape[0])))
        (out,) = self.session.run([self.output.name], full, *args)
        logits = scores_to_logits(
            torch.from_numpy(np.asarray(out, np.float32)), self.interface.scores
        )
        return [logits.numpy()]


def needs_session_binding(session: Any, interface: ModelInterface) -> bool:
    """Whether an ONNX session must be wrapped: an option is set, or it has several inputs or
    outputs."""
    return (
        not interface.is_default or len(session.get_inputs()) > 1 or len(session.get_outputs()) > 1
    )


def bind_session(session: Any, interface: ModelInterface, name: str) -> BoundSession:
    """``session`` wrapped as ``interface`` says (see :class:`BoundSession`)."""
    return BoundSession(session, interface, name)

"""Layer discovery for data-free diagnostics: which weight tensors are matrices, and of what kind.

Two sources, one result (:class:`LayerInventory`):

* :func:`layers_from_module` walks ``module.named_modules()`` in definition order and dispatches
  on the module type through a registry (:func:`register_layer_rule`): ``Linear`` (and
  subclasses, e.g. attention ``out_proj``), ``Conv1d``, ``Conv2d``, ``Embedding``,
  ``LSTM``/``GRU``/``RNN`` (one matrix per gate, PyTorch gate order: LSTM ``i, f, g, o``,
  GRU ``r, z, n``) and ``MultiheadAttention`` (the fused ``in_proj_weight`` split into Q, K, V, or
  the separate ``q/k/v_proj_weight``).
* :func:`layers_from_tensors` works on bare named tensors (a weights-only ``.safetensors`` or ONNX
  initializers): no code is run, the kind is inferred from the name and the shape —
  names containing ``weight_ih``/``weight_hh`` are RNN gate stacks (gate count from the
  ``rows / hidden`` ratio of the ``weight_hh`` sibling: 4 → LSTM, 3 → GRU, 1 → RNN),
  ``in_proj_weight`` with ``rows = 3·cols`` is a fused QKV projection, other 2-D tensors are
  linear-like (``embedding`` when the name says ``embed``), 3-D are Conv1d, 4-D are Conv2d.

Every parameter that is not analysed is listed in :attr:`LayerInventory.skipped` with the reason
(1-D biases and normalisation scales, integer tensors, >4-D tensors, unknown module types).
NaN/Inf weights in a tensor that would be analysed raise :class:`~edgeproof.errors.ModelFileError`
naming the tensor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from edgeproof.errors import ModelFileError

__all__ = [
    "LayerInventory",
    "LayerKind",
    "SkippedTensor",
    "WeightLayer",
    "check_finite",
    "layers_from_module",
    "layers_from_tensors",
    "register_layer_rule",
]

LayerKind = Literal["linear", "conv1d", "conv2d", "embedding", "rnn-gate", "attention"]

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


@dataclass(frozen=True)
class WeightLayer:
    """One weight matrix (or stack of matrices) to analyse.

    Attributes:
        name: display name, e.g. ``layers.0.conv1`` or ``lstm.weight_hh_l0[f]``.
        tensor: the source tensor's name (``layers.0.conv1.weight``); flips and protect sets
            address parameters by this name.
        kind: what the matrix is.
        weight: the raw weight (a view: 2-D for linear-like, 3-D Conv1d, 4-D Conv2d).
        index: position in definition order (0-based).
        part: for split tensors, ``(start_row, stop_row)`` inside ``tensor``; else ``None``.
    """

    name: str
    tensor: str
    kind: LayerKind
    weight: torch.Tensor
    index: int
    part: tuple[int, int] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.weight.shape)


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor that is not analysed, and why."""

    name: str
    shape: tuple[int, ...]
    reason: str


@dataclass
class LayerInventory:
    """The analysable layers (definition order) and the tensors left out."""

    layers: list[WeightLayer] = field(default_factory=list)
    skipped: list[SkippedTensor] = field(default_factory=list)


def check_finite(name: str, tensor: torch.Tensor, source: str) -> None:
    """Raise :class:`ModelFileError` if ``tensor`` holds NaN or Inf values.

    Fast path: a NaN/Inf entry makes the sum NaN/Inf, so a finite sum proves every entry finite
    (one reduction, no boolean mask); only a non-finite sum (NaN/Inf entries, or an overflow of
    finite ones) pays for the element-wise test.
    """
    if not tensor.is_floating_point() or math.isfinite(float(tensor.detach().sum())):
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ModelFileError(
            source,
            f"weight tensor {name!r} contains {bad} NaN/Inf value(s) out of {tensor.numel()}",
            "the weights are corrupt or training diverged; re-export a finite checkpoint",
        )


# --------------------------------------------------------------------------- module rules

_Found = tuple[str, str, LayerKind, torch.Tensor, tuple[int, int] | None]
LayerRule = Callable[[str, nn.Module], list[_Found]]
_RULES: list[tuple[type[nn.Module], LayerRule]] = []


def register_layer_rule(module_type: type[nn.Module], rule: LayerRule) -> None:
    """Register how to turn a module type into matrices.

    ``rule(prefix, module)`` returns ``(display name, tensor name, kind, weight, part)`` tuples.
    Later registrations take precedence (checked first).
    """
    _RULES.insert(0, (module_type, rule))


def _p(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


def _linear_rule(prefix: str, m: nn.Module) -> list[_Found]:
    return [
        (
            prefix or "linear",
            _p(prefix, "weight"),
            "linear",
            torch.as_tensor(m.weight).detach(),
            None,
        )
    ]


def _conv_rule(kind: LayerKind) -> LayerRule:
    def rule(prefix: str, m: nn.Module) -> list[_Found]:
        return [
            (prefix or kind, _p(prefix, "weight"), kind, torch.as_tensor(m.weight).detach(), None)
        ]

    return rule


def _embedding_rule(prefix: str, m: nn.Module) -> list[_Found]:
    return [
        (
            prefix or "embedding",
            _p(prefix, "weight"),
            "embedding",
            torch.as_tensor(m.weight).detach(),
            None,
        )
    ]


def _gate_names(mode: str) -> tuple[str, ...]:
    if mode == "LSTM":
        return _LSTM_GATES
    if mode == "GRU":
        return _GRU_GATES
    return ("h",)


def _split_gates(tensor_name: str, w: torch.Tensor, gates: tuple[str, ...]) -> list[_Found]:
    h = w.shape[0] // len(gates)
    return [
        (
            f"{tensor_name}[{g}]",
            tensor_name,
            "rnn-gate",
            w[k * h : (k + 1) * h],
            (k * h, (k + 1) * h),
        )
        for k, g in enumerate(gates)
    ]


def _rnn_rule(prefix: str, m: nn.Module) -> list[_Found]:
    assert isinstance(m, nn.RNNBase)
    gates = _gate_names(m.mode)
    out: list[_Found] = []
    for pname, p in m.named_parameters(recurse=False):
        if pname.startswith(("weight_ih", "weight_hh")):
            out.extend(_split_gates(_p(prefix, pname), p.detach(), gates))
    return out


def _mha_rule(prefix: str, m: nn.Module) -> list[_Found]:
    assert isinstance(m, nn.MultiheadAttention)
    out: list[_Found] = []
    if m.in_proj_weight is not None:
        w = m.in_proj_weight.detach()
        e = w.shape[0] // 3
        tname = _p(prefix, "in_proj_weight")
        for k, part in enumerate("QKV"):
            out.append(
                (
                    f"{tname}[{part}]",
                    tname,
                    "attention",
                    w[k * e : (k + 1) * e],
                    (k * e, (k + 1) * e),
                )
            )
    else:
        for part, attr in zip("QKV", ("q_proj_weight", "k_proj_weight", "v_proj_weight")):
            t = getattr(m, attr)
            out.append(
                (f"{_p(prefix, attr)}[{part}]", _p(prefix, attr), "attention", t.detach(), None)
            )
    # out_proj is a Linear child module: found on its own.
    return out


register_layer_rule(nn.Linear, _linear_rule)
register_layer_rule(nn.Conv1d, _conv_rule("conv1d"))
register_layer_rule(nn.Conv2d, _conv_rule("conv2d"))
register_layer_rule(nn.Embedding, _embedding_rule)
register_layer_rule(nn.RNNBase, _rnn_rule)
register_layer_rule(nn.MultiheadAttention, _mha_rule)


def _skip_reason_for(t: torch.Tensor) -> str:
    if not t.is_floating_point():
        return f"{t.dtype} tensor (quantised or index data): not a float weight matrix"
    if t.dim() <= 1:
        return "1-D tensor (bias, normalisation scale or shift): no matrix to analyse"
    if t.dim() > 4:
        return f"{t.dim()}-D tensor: only 2-D (linear), 3-D (Conv1d) and 4-D (Conv2d) are analysed"
    return "parameter of a module type without a layer rule (register one with register_layer_rule)"


def layers_from_module(module: nn.Module, *, source: str = "model") -> LayerInventory:
    """Discover analysable layers of a PyTorch module, in definition order.

    ``source`` names the model in error messages (NaN weights). A module whose layers are not
    Python modules of the known types (TorchScript, a ``torch.export`` program: their
    submodules are compiled or inlined) is read from its own parameters by
    :func:`layers_from_tensors` instead.
    """
    if isinstance(module, torch.jit.ScriptModule) or not any(
        isinstance(m, mtype) for m in module.modules() for mtype, _ in _RULES
    ):
        return layers_from_tensors(dict(module.named_parameters()), source=source)
    inv = LayerInventory()
    used: set[str] = set()
    index = 0
    for prefix, m in module.named_modules():
        for mtype, rule in _RULES:
            if isinstance(m, mtype):
                for name, tname, kind, w, part in rule(prefix, m):
                    check_finite(tname, w, source)
                    if w.dim() < 2 or min(w.shape) < 1:
                        continue
                    inv.layers.append(WeightLayer(name, tname, kind, w, index, part))
                    used.add(tname)
                    index += 1
                break
    for pname, p in module.named_parameters():
        if pname in used:
            continue
        inv.skipped.append(SkippedTensor(pname, tuple(p.shape), _skip_reason_for(p)))
    return inv


_GATE_RE = re.compile(r"weight_(ih|hh)")


def _gate_count(name: str, w: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> int:
    """Gates stacked in an RNN weight: rows / hidden, hidden read from the ``weight_hh`` sibling."""
    hh_name = _GATE_RE.sub("weight_hh", name, count=1)
    hh = weights.get(hh_name)
    if hh is not None and hh.dim() == 2 and hh.shape[1] > 0 and hh.shape[0] % hh.shape[1] == 0:
        g = hh.shape[0] // hh.shape[1]
        if g in (1, 3, 4):
            return g
    rows = int(w.shape[0])
    return 4 if rows % 4 == 0 else 3 if rows % 3 == 0 else 1


def layers_from_tensors(
    weights: Mapping[str, torch.Tensor], *, source: str = "weights"
) -> LayerInventory:
    """Infer layers from bare named tensors (no module, no code executed).

    Rules (first match wins): non-float → skipped; ≤1-D → skipped; names with ``weight_ih`` /
    ``weight_hh`` → RNN gates; ``in_proj_weight`` with rows = 3·cols → Q, K, V; 2-D →
    ``embedding`` if the name contains ``embed`` else ``linear``; 3-D → Conv1d; 4-D → Conv2d;
    more dimensions → skipped. Tensor order is the mapping's order.
    """
    inv = LayerInventory()
    index = 0
    for name, t in weights.items():
        shape = tuple(int(s) for s in t.shape)
        if not t.is_floating_point() or t.dim() <= 1 or t.dim() > 4:
            inv.skipped.append(SkippedTensor(name, shape, _skip_reason_for(t)))
            continue
        w = t.detach()
        check_finite(name, w, source)
        found: list[_Found]
        if t.dim() == 2 and _GATE_RE.search(name):
            g = _gate_count(name, w, weights)
            gates = _LSTM_GATES if g == 4 else _GRU_GATES if g == 3 else ("h",)
            found = _split_gates(name, w, gates)
        elif t.dim() == 2 and name.endswith("in_proj_weight") and shape[0] == 3 * shape[1]:
            e = shape[1]
            found = [
                (f"{name}[{p}]", name, "attention", w[k * e : (k + 1) * e], (k * e, (k + 1) * e))
                for k, p in enumerate("QKV")
            ]
        elif t.dim() == 2:
            kind: LayerKind = "embedding" if "embed" in name.lower() else "linear"
            found = [(_strip_weight(name), name, kind, w, None)]
        elif t.dim() == 3:
            found = [(_strip_weight(name), name, "conv1d", w, None)]
        else:
            found = [(_strip_weight(name), name, "conv2d", w, None)]
        for disp, tname, k, ww, part in found:
            inv.layers.append(WeightLayer(disp, tname, k, ww, index, part))
            index += 1
    return inv


def _strip_weight(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name

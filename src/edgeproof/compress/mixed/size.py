"""The serialised ONNX size of a 4/8-bit plan, exact to a few bytes (:class:`SizeModel`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto
from torch import nn

from edgeproof.compress.folding import fold_batchnorm
from edgeproof.compress.mixed.sensitivity import (
    BITS,
    QuantLayer,
    check_group,
    quantizable_layers,
    weight_tensors,
)
from edgeproof.compress.qdq import weight_qdq_bytes
from edgeproof.compress.quantize import QuantConfig, QuantizedModel, quantize
from edgeproof.errors import InternalError

__all__ = ["SizeModel", "check_applied"]


def _tensor_bytes(w: np.ndarray, bits: int, group_size: int, name: str) -> int:
    """Serialised bytes of the initializers and nodes :func:`build_qdq_model` writes for ``w``."""
    return weight_qdq_bytes(name, w, 0, bits, group_size)


@dataclass(frozen=True)
class SizeModel:
    """Serialised ONNX size of a 4/8-bit plan: ``overhead + Σ layer_bytes[layer][bits]``.

    ``layer_bytes`` are the exact byte sizes of each layer's quantized initializers and
    dequantization nodes (:func:`weight_qdq_bytes`: 8-bit per channel, 4-bit per group, INT4
    packed two per byte); ``overhead`` is fitted once against the real all-4-bit graph. A mixed
    graph is opset 21 whatever its plan, so every plan is estimated to within a few bytes.
    """

    layer_bytes: Mapping[str, Mapping[int, int]]
    overhead: int
    group_size: int

    @classmethod
    def fit(
        cls, module: nn.Module, input_shape: Sequence[int], x: np.ndarray, group_size: int = 32
    ) -> SizeModel:
        check_group(group_size)
        folded = fold_batchnorm(module)
        mods = dict(folded.named_modules())
        layers = quantizable_layers(folded)
        lb: dict[str, dict[int, int]] = {}
        for layer in layers:
            ws = weight_tensors(mods[layer.name])
            lb[layer.name] = {
                b: sum(
                    _tensor_bytes(w.detach().numpy(), b, group_size, f"{layer.name}.{n}")
                    for n, w in ws
                )
                for b in BITS
            }
        all4 = {layer.name: 4 for layer in layers}
        real = quantize(
            module,
            input_shape,
            np.asarray(x, np.float32)[:4],
            QuantConfig("mixed", bits_per_layer=all4, group_size=group_size),
        )
        check_applied(real, all4, layers)
        overhead = len(real.onnx_bytes()) - sum(v[4] for v in lb.values())
        return cls(lb, overhead, group_size)

    def estimate(self, plan: Mapping[str, int]) -> int:
        return self.overhead + sum(self.layer_bytes[n][plan.get(n, 8)] for n in self.layer_bytes)

    def saving(self, layer: str) -> int:
        """Bytes saved by taking ``layer`` from 8 to 4 bits (negative when 4-bit is larger)."""
        return self.layer_bytes[layer][8] - self.layer_bytes[layer][4]

    @property
    def smallest_plan(self) -> dict[str, int]:
        """4 bits wherever that saves bytes (``saving > 0``), 8 elsewhere: the smallest plan."""
        return {n: (4 if self.saving(n) > 0 else 8) for n in self.layer_bytes}

    @property
    def smallest(self) -> int:
        """Estimated bytes of :attr:`smallest_plan`."""
        return self.estimate(self.smallest_plan)


def check_applied(q: QuantizedModel, plan: Mapping[str, int], layers: Sequence[QuantLayer]) -> None:
    """The exported graph really has one INT4 weight per 4-bit layer (two for an LSTM)."""
    kinds = {layer.name: layer.kind for layer in layers}
    want = sum(2 if kinds.get(n) == "lstm" else 1 for n, b in plan.items() if b == 4)
    got = sum(
        1
        for t in q.onnx_model.graph.initializer
        if t.data_type == TensorProto.INT4 and t.name.endswith("__q")
    )
    if got != want:
        raise InternalError(
            f"the mixed-precision plan was not applied to the ONNX graph: {want} 4-bit weights "
            f"planned, {got} found (PyTorch layers could not be matched to ONNX nodes)"
        )

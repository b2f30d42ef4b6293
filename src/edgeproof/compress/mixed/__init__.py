"""Mixed precision: per-layer sensitivity and SigmaQuant-style 4/8-bit allocation (weight-only).

Modules: :mod:`~edgeproof.compress.mixed.sensitivity` (layers, σ clustering, the plan simulator,
per-layer sensitivity), :mod:`~edgeproof.compress.mixed.size` (the exact size model of a plan),
:mod:`~edgeproof.compress.mixed.allocate` (the refinement and its budgets).

Follows SigmaQuant (Liu, Yu, Zapater, Atienza, arXiv 2602.22136, "Hardware-Aware Heterogeneous
Quantization Method for Edge DNN Inference") in its two phases, as a *post-training* variant:

1. **σ clustering (initial bits).** The standard deviation σ of every quantizable layer's weights
   (BatchNorm folded; an LSTM's input and recurrent matrices together) is clustered into two
   groups by 1-D k-means (Lloyd, initialised at the smallest and largest σ, hence deterministic).
   The high-σ group starts at 8 bits, the low-σ group at 4 bits: with max-scaled symmetric
   quantization the absolute rounding error grows with the spread of the weights.
2. **KL-guided refinement.** Each layer's cost of going from 8 to 4 bits is ``ΔKL = KL₄ − KL₈``,
   the increase of ``KL(p_fp32 ‖ p_q)`` on the calibration data when only that layer is
   quantized (:func:`layer_sensitivity`); its saving ``ΔS`` is the exact byte difference of its
   serialised ONNX initializers. While the size budget fails, the 8-bit layer with the smallest
   ``ΔKL/ΔS`` drops to 4 bits; then 4-bit layers with the largest ``ΔKL/ΔS`` that still fit are
   raised to 8 bits ("fill": the budget is spent where it lowers KL most). With only an accuracy
   budget, layers are raised (largest ``ΔKL/ΔS`` first) until the drop holds, then lowered
   (smallest first) while it still holds. After every move the whole plan is re-measured (KL and
   accuracy of the PyTorch simulation). Where the paper runs short QAT cycles between moves, this
   variant does no training.

Deviations stated: no QAT; bits are {4, 8} (what the ONNX QDQ path executes); the σ→bits direction
is high σ → more bits. Sensitivity per layer (HAWQ-style "quantize only this layer") reports the
accuracy change, ``KL(p_fp32 ‖ p_q)`` and the SQNR of that layer's output; :meth:`by_type`
summarises it by module type (conv / LSTM / linear), the question of Roodi et al. (CNN parts more
sensitive to low bits than LSTM parts) — answered by measurement, whatever it shows.

Quantizer: symmetric weights, 4-bit with per-group scales (``group_size`` consecutive inputs),
8-bit with per-output-channel scales — what :func:`edgeproof.compress.quantize.quantize` executes
for a ``mixed`` plan (the simulation fake-quantizes exactly that). A 4-bit layer is not always
smaller: its group scales (and the ``Reshape`` back to the weight's layout) can outweigh the saved
nibbles on a tiny layer, so the allocator only lowers layers whose saving
(:meth:`SizeModel.saving`) is positive and the smallest plan keeps the others at 8 bits.
The chosen plan is executed for real: ``QuantConfig("mixed",
bits_per_layer=...)`` → ONNX QDQ graph → ONNX Runtime, whose accuracy and serialised size are
reported. Without labels, the fp32 model's own predictions are the labels (accuracy then means
top-1 agreement with fp32).
"""

from edgeproof.compress.mixed.allocate import (
    Allocation,
    AllocationSettings,
    RefinementStep,
    allocate,
    allocate_between,
)
from edgeproof.compress.mixed.sensitivity import (
    LayerKind,
    LayerSensitivity,
    QuantLayer,
    SensitivityReport,
    TypeSensitivity,
    layer_sensitivity,
    quantizable_layers,
    sigma_clusters,
)
from edgeproof.compress.mixed.size import SizeModel

__all__ = [
    "Allocation",
    "AllocationSettings",
    "LayerKind",
    "LayerSensitivity",
    "QuantLayer",
    "RefinementStep",
    "SensitivityReport",
    "SizeModel",
    "TypeSensitivity",
    "allocate",
    "allocate_between",
    "layer_sensitivity",
    "quantizable_layers",
    "sigma_clusters",
]

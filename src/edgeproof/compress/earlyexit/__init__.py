"""Early exits: classifier heads at intermediate blocks, a confidence-gated cascade, ONNX Runtime.

Modules: :mod:`~.backbone` (split points, the model with exits), :mod:`~.heads` (head training),
:mod:`~.thresholds` (exit rule, costs, threshold calibration), :mod:`~.cascade` (ONNX export, the
ONNX Runtime and PyTorch cascades, evaluation), :mod:`~.build` (end to end). In the compression
search the cascade is one recipe, ``Chain(EarlyExit(config))`` (:mod:`edgeproof.compress.recipes`),
measured like every other candidate.

Follows BranchyNet (Teerapittayanon, McDanel & Kung, ICPR 2016) in its post-hoc form, as used for
deployed backbones by Fernandez et al. (arXiv 2604.14789): the trained backbone is **frozen**
and only small side branches are trained; at inference a sample leaves at the first branch that
is confident enough.

* **Split points** (:func:`split_backbone`, extensible with :func:`register_splitter`):
  ResNet-8/20/18 after every residual stage but the last; LeNet-5 after each conv block
  (conv-ReLU-pool); the 1-D CNN after each conv block but the last; the CNN-LSTM after each
  conv block (the last one is just before the LSTM); the MLP after its first hidden layer. The
  stages composed are exactly the backbone (checked on a dummy input when exits are attached).
* **Heads** (:class:`ExitHead`): global average pooling over every axis after the channels (none
  for flat features) + one linear layer. They are trained with the backbone in eval mode and no
  gradient (weights *and* BatchNorm statistics unchanged): stage outputs are computed once, pooled,
  and each head is fitted by Adam on cross-entropy against the true labels, seeded
  (initialisation and shuffling from a ``torch.Generator``), deterministic.
* **Exit rule** (:class:`ExitRule`): exit at the first head whose max-softmax ≥ τ_i
  (``"max_softmax"``) or whose softmax entropy (nats) ≤ T_i (``"entropy"``); the final stage
  always answers. τ_i > 1 (or T_i < 0) disables exit i.
* **Threshold calibration** (:func:`calibrate_thresholds`), on held-out calibration data:

  1. run every exit on every calibration sample; score = max-softmax, or −entropy;
  2. per exit, candidate thresholds are midpoints between consecutive *distinct* sorted scores
     chosen so that the exit alone would take ≈ r of the samples, for
     r ∈ :data:`EXIT_RATE_GRID`, plus "off" (so a threshold never equals a calibration score,
     and float-level differences between PyTorch and ONNX Runtime cannot flip a calibration
     sample);
  3. every combination of per-exit candidates is evaluated (exhaustive; the grid is thinned
     evenly when the product would exceed :data:`MAX_COMBINATIONS`);
  4. kept: the combination with the **lowest expected MACs** whose cascade accuracy is
     ≥ (full-model accuracy − ``max_drop``) on the calibration data; ties go to higher
     accuracy. "All exits off" is the full model, so a feasible answer always exists.

* **Costs** — MACs from :func:`edgeproof.runtime.macs.count_macs` per stage and per head;
  leaving at exit i costs stages 0..i plus heads 0..i; the final exit costs every stage and head.
  Expected MACs = mean cost over the data's actual exits.
* **ONNX Runtime** (:func:`export_segments`, :class:`OrtCascade`): one graph per segment —
  stage i + head i with outputs ``features`` and ``logits`` — and the final stage alone. The
  cascade runs the sessions one sample at a time (batch 1), deciding in NumPy between sessions;
  the latency of each sample (sessions + decisions) is measured with ``time.perf_counter``.
  Parity: ORT cascade predictions and exits vs the PyTorch cascade on the same inputs.
"""

from edgeproof.compress.earlyexit.backbone import (
    EarlyExitModel,
    ExitHead,
    attach_exits,
    register_splitter,
    split_backbone,
)
from edgeproof.compress.earlyexit.build import EarlyExitConfig, EarlyExitResult, build_early_exit
from edgeproof.compress.earlyexit.cascade import (
    CascadeModule,
    CascadeParity,
    EarlyExitReport,
    ExitStats,
    OrtCascade,
    evaluate_early_exit,
    export_all_exits,
    export_segments,
)
from edgeproof.compress.earlyexit.heads import HeadFit, train_exit_heads
from edgeproof.compress.earlyexit.thresholds import (
    EXIT_RATE_GRID,
    MAX_COMBINATIONS,
    Calibration,
    CascadeOutput,
    Criterion,
    ExitRule,
    calibrate_thresholds,
    cascade_predict,
    exit_costs,
    exit_scores,
    mac_costs,
)

__all__ = [
    "EXIT_RATE_GRID",
    "MAX_COMBINATIONS",
    "Calibration",
    "CascadeModule",
    "CascadeOutput",
    "CascadeParity",
    "Criterion",
    "EarlyExitConfig",
    "EarlyExitModel",
    "EarlyExitReport",
    "EarlyExitResult",
    "ExitHead",
    "ExitRule",
    "ExitStats",
    "HeadFit",
    "OrtCascade",
    "attach_exits",
    "build_early_exit",
    "calibrate_thresholds",
    "cascade_predict",
    "evaluate_early_exit",
    "exit_costs",
    "exit_scores",
    "export_all_exits",
    "export_segments",
    "mac_costs",
    "register_splitter",
    "split_backbone",
    "train_exit_heads",
]

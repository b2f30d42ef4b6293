"""Compression with a trust ledger: recipes as chains of steps, one measurement, one audit path.

``compress(module, spec, data, budget=Budget(max_drop=0.01))`` searches candidates — each a
:class:`Chain` of :class:`Step` objects, e.g. ``Chain(Prune(0.5, "magnitude"),
Quantize(QuantConfig("int8")))`` — measures every one the same way (:func:`measure`), re-audits
it through the audit's own runner at the threat model's largest ε, and selects one;
``quantize(module, shape, x_calib, QuantConfig("int8", "mse"))`` is one int8/int4 quantization
(PyTorch simulation + ONNX Runtime QDQ graph + parity). The CLI is ``edgeproof compress``
(:mod:`edgeproof.cli.compress`).

Layout: ``steps`` (Step, Chain, Built), ``recipes`` (the steps, the default search), ``context``
(shared caches), ``artefacts`` (graph, cascade), ``measure``, ``reaudit``, ``ledger`` (rows,
table, figure), ``selection`` (the budget, with confidence), ``search``, ``api``; the methods:
``calibrate``, ``weights``,
``folding``, ``simulate``, ``onnx_export``, ``qdq``, ``quantize``, ``prune``, ``lowrank``,
``mixed/``, ``earlyexit/``.
"""

import edgeproof.compress._requires  # noqa: F401  (names the [onnx] extra when it is missing)
from edgeproof.compress.api import CompressionResult, compress, write_artefacts
from edgeproof.compress.artefacts import Artefact, CascadeArtefact, GraphArtefact
from edgeproof.compress.calibrate import CALIBRATION_METHODS, ActivationStats, RangeObserver
from edgeproof.compress.context import BuildContext
from edgeproof.compress.earlyexit import (
    EarlyExitConfig,
    ExitRule,
    attach_exits,
    build_early_exit,
    calibrate_thresholds,
)
from edgeproof.compress.ledger import Candidate, Ledger, PairedDrop, SkippedCandidate
from edgeproof.compress.lowrank import factorize_lowrank
from edgeproof.compress.measure import MeasureSettings, measure
from edgeproof.compress.mixed import (
    Allocation,
    AllocationSettings,
    SensitivityReport,
    allocate,
    layer_sensitivity,
)
from edgeproof.compress.prune import (
    prune_n_m,
    prune_unstructured,
    recalibrate_batchnorm,
    remove_channels,
)
from edgeproof.compress.quantize import Parity, Prepared, QuantConfig, QuantizedModel, quantize
from edgeproof.compress.reaudit import TRUST_CHECKS, TrustAudit, TrustCheck, reaudit
from edgeproof.compress.recipes import (
    EarlyExit,
    LowRank,
    MixedPrecision,
    Prune,
    PruneNM,
    Quantize,
    RemoveChannels,
    default_recipes,
)
from edgeproof.compress.search import Budget, search
from edgeproof.compress.selection import Refusal, Selection, select
from edgeproof.compress.steps import Built, Chain, Step

__all__ = [
    "CALIBRATION_METHODS",
    "TRUST_CHECKS",
    "ActivationStats",
    "Allocation",
    "AllocationSettings",
    "Artefact",
    "Budget",
    "BuildContext",
    "Built",
    "Candidate",
    "CascadeArtefact",
    "Chain",
    "CompressionResult",
    "EarlyExit",
    "EarlyExitConfig",
    "ExitRule",
    "GraphArtefact",
    "Ledger",
    "LowRank",
    "MeasureSettings",
    "MixedPrecision",
    "PairedDrop",
    "Parity",
    "Prepared",
    "Prune",
    "PruneNM",
    "QuantConfig",
    "Quantize",
    "QuantizedModel",
    "RangeObserver",
    "Refusal",
    "RemoveChannels",
    "Selection",
    "SensitivityReport",
    "SkippedCandidate",
    "Step",
    "TrustAudit",
    "TrustCheck",
    "allocate",
    "attach_exits",
    "build_early_exit",
    "calibrate_thresholds",
    "compress",
    "default_recipes",
    "factorize_lowrank",
    "layer_sensitivity",
    "measure",
    "prune_n_m",
    "prune_unstructured",
    "quantize",
    "reaudit",
    "recalibrate_batchnorm",
    "remove_channels",
    "search",
    "select",
    "write_artefacts",
]

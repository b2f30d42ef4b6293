"""Compression with a trust ledger: quantize, prune, factor; measure and re-audit every candidate.

``compress(module, spec, data, budget=Budget(max_drop=0.01))`` searches candidates and selects one;
``quantize(module, shape, x_calib, QuantConfig("int8", "mse"))`` is one int8/int4 quantization
(PyTorch simulation + ONNX Runtime QDQ graph + parity). The CLI is ``edgeproof compress``
(:mod:`edgeproof.cli.compress`).
"""

from edgeproof.compress.api import CompressionResult, compress, write_artefacts
from edgeproof.compress.calibrate import CALIBRATION_METHODS, RangeObserver
from edgeproof.compress.earlyexit import (
    EarlyExitConfig,
    ExitRule,
    attach_exits,
    build_early_exit,
    calibrate_thresholds,
)
from edgeproof.compress.ledger import Candidate, Ledger, Selection
from edgeproof.compress.lowrank import factorize_lowrank
from edgeproof.compress.mixed import Allocation, SensitivityReport, allocate, layer_sensitivity
from edgeproof.compress.prune import (
    prune_n_m,
    prune_unstructured,
    recalibrate_batchnorm,
    remove_channels,
)
from edgeproof.compress.quantize import Parity, QuantConfig, QuantizedModel, quantize
from edgeproof.compress.search import Budget, default_recipes, search

__all__ = [
    "CALIBRATION_METHODS",
    "Allocation",
    "Budget",
    "Candidate",
    "CompressionResult",
    "EarlyExitConfig",
    "ExitRule",
    "Ledger",
    "Parity",
    "QuantConfig",
    "QuantizedModel",
    "RangeObserver",
    "Selection",
    "SensitivityReport",
    "allocate",
    "attach_exits",
    "build_early_exit",
    "calibrate_thresholds",
    "compress",
    "default_recipes",
    "factorize_lowrank",
    "layer_sensitivity",
    "prune_n_m",
    "prune_unstructured",
    "quantize",
    "recalibrate_batchnorm",
    "remove_channels",
    "search",
    "write_artefacts",
]

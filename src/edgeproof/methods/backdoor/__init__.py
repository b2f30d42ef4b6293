"""Backdoor detection: data-free detectors, trigger inversion, run-time and training-set defences.

One module per detector; every detector returns a
:class:`~edgeproof.methods.backdoor.scoring.DetectorResult` (per-class anomaly, suspected target,
model score). :func:`~edgeproof.methods.backdoor.scan.scan_model` runs them on one model and
decides against calibrated thresholds (``thresholds.json``, shipped with the package).
"""

from edgeproof.methods.backdoor.activation_clustering import (
    ActivationClusteringConfig,
    ClusteringResult,
    activation_clustering,
)
from edgeproof.methods.backdoor.final_layer import (
    DEFAULT_INDICATORS,
    INDICATORS,
    final_layer_indicators,
    final_layer_scan,
)
from edgeproof.methods.backdoor.freeeagle import FreeEagleConfig, freeeagle
from edgeproof.methods.backdoor.head import (
    FinalLayer,
    HeadSplit,
    NotAClassifierError,
    final_layer,
    register_split,
    split_model,
)
from edgeproof.methods.backdoor.head_probe import HeadProbeConfig, embedding_unit, head_probe
from edgeproof.methods.backdoor.neural_cleanse import (
    NeuralCleanseConfig,
    ReversedTrigger,
    neural_cleanse,
)
from edgeproof.methods.backdoor.scan import (
    DATA_FREE_DETECTORS,
    BackdoorScan,
    DetectorVerdict,
    StripSummary,
    scan_model,
)
from edgeproof.methods.backdoor.scoring import DetectorResult, quartile_anomaly, robust_z
from edgeproof.methods.backdoor.spectral_signatures import (
    SpectralSignatureConfig,
    SpectralSignatureResult,
    spectral_signatures,
)
from edgeproof.methods.backdoor.strip import (
    STRIPConfig,
    StripThreshold,
    strip_entropies,
    strip_threshold,
)
from edgeproof.methods.backdoor.thresholds import (
    Threshold,
    Thresholds,
    calibrate,
    load_thresholds,
    shipped_thresholds,
)

__all__ = [
    "DATA_FREE_DETECTORS",
    "DEFAULT_INDICATORS",
    "INDICATORS",
    "ActivationClusteringConfig",
    "BackdoorScan",
    "ClusteringResult",
    "DetectorResult",
    "DetectorVerdict",
    "FinalLayer",
    "FreeEagleConfig",
    "HeadProbeConfig",
    "HeadSplit",
    "NeuralCleanseConfig",
    "NotAClassifierError",
    "ReversedTrigger",
    "STRIPConfig",
    "SpectralSignatureConfig",
    "SpectralSignatureResult",
    "StripSummary",
    "StripThreshold",
    "Threshold",
    "Thresholds",
    "activation_clustering",
    "calibrate",
    "embedding_unit",
    "final_layer",
    "final_layer_indicators",
    "final_layer_scan",
    "freeeagle",
    "head_probe",
    "load_thresholds",
    "neural_cleanse",
    "quartile_anomaly",
    "register_split",
    "robust_z",
    "scan_model",
    "shipped_thresholds",
    "spectral_signatures",
    "split_model",
    "strip_entropies",
    "strip_threshold",
]

"""The built-in checks, in report order, described without importing them."""

from __future__ import annotations

from edgeproof.checks import CheckInfo

__all__ = ["BUILTIN_CHECKS"]

BUILTIN_CHECKS: tuple[CheckInfo, ...] = (
    CheckInfo(
        "performance",
        "Performance",
        "edgeproof.checks.performance:PerformanceCheck",
        needs_data=True,
    ),
    CheckInfo(
        "calibration",
        "Calibration",
        "edgeproof.checks.calibration:CalibrationCheck",
        needs_data=True,
    ),
    CheckInfo("footprint", "Footprint", "edgeproof.checks.footprint:FootprintCheck"),
    CheckInfo(
        "spectral",
        "Weight spectra (heavy-tailed self-regularisation)",
        "edgeproof.checks.spectral:SpectralCheck",
        needs_forward=False,
    ),
    CheckInfo(
        "bitflip",
        "Sign-bit flip fragility (Deep Neural Lesion)",
        "edgeproof.checks.bitflip:BitflipCheck",
        needs_gradients=True,
    ),
    CheckInfo(
        "adversarial",
        "Adversarial robustness",
        "edgeproof.checks.adversarial:AdversarialCheck",
        needs_data=True,
    ),
    CheckInfo(
        "certify",
        "Certified robustness",
        "edgeproof.checks.certify:CertifyCheck",
        needs_data=True,
        needs_gradients=True,
        needs_architecture=True,
    ),
    CheckInfo(
        "property",
        "Decision stability along transforms",
        "edgeproof.checks.property:PropertyCheck",
        needs_data=True,
        needs_gradients=True,
        needs_architecture=True,
        default=False,  # the transforms are the user's claim (and BaB costs seconds per sample)
    ),
    CheckInfo(
        "corruption",
        "Corruption robustness",
        "edgeproof.checks.corruption:CorruptionCheck",
        needs_data=True,
    ),
    CheckInfo(
        "fisher",
        "Fisher-information sensitivity",
        "edgeproof.checks.fisher:FisherCheck",
        needs_data=True,
        needs_gradients=True,
    ),
    CheckInfo(
        "smoothing",
        "Randomised smoothing (certified L2 radius)",
        "edgeproof.checks.smoothing:SmoothingCheck",
        needs_data=True,
    ),
    CheckInfo(
        "backdoor",
        "Backdoor scan",
        "edgeproof.checks.backdoor:BackdoorCheck",
        needs_forward=False,
    ),
    CheckInfo(
        "attribution",
        "Attributions and their sanity",
        "edgeproof.checks.attribution:AttributionCheck",
        needs_data=True,
    ),
    CheckInfo(
        "generalization",
        "Generalization diagnostics (curvature, collapse, TIC)",
        "edgeproof.checks.generalization:GeneralizationCheck",
        needs_data=True,
        needs_gradients=True,
    ),
)

"""Registration of the built-in checks, in report order."""

from __future__ import annotations

from edgeproof.checks import register_check
from edgeproof.checks.adversarial import AdversarialCheck
from edgeproof.checks.bitflip import BitflipCheck
from edgeproof.checks.calibration import CalibrationCheck
from edgeproof.checks.certify import CertifyCheck
from edgeproof.checks.corruption import CorruptionCheck
from edgeproof.checks.fisher import FisherCheck
from edgeproof.checks.footprint import FootprintCheck
from edgeproof.checks.performance import PerformanceCheck
from edgeproof.checks.spectral import SpectralCheck

for _cls in (
    PerformanceCheck,
    CalibrationCheck,
    FootprintCheck,
    SpectralCheck,
    BitflipCheck,
    AdversarialCheck,
    CertifyCheck,
    CorruptionCheck,
    FisherCheck,
):
    register_check(_cls.name, _cls)

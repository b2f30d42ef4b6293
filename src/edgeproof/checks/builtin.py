"""Registration of the built-in checks, in report order."""

from __future__ import annotations

from edgeproof.checks import register_check
from edgeproof.checks.calibration import CalibrationCheck
from edgeproof.checks.footprint import FootprintCheck
from edgeproof.checks.performance import PerformanceCheck

for _cls in (PerformanceCheck, CalibrationCheck, FootprintCheck):
    register_check(_cls.name, _cls)

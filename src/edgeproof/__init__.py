"""edgeproof: prepare trained PyTorch models for deployment where failure is expensive.

Public API::

    model = edgeproof.load_model("model.safetensors", arch="zoo:resnet20")
    data = edgeproof.load_data("val.npz")
    report = edgeproof.audit(model, data, checks=["performance", "calibration"])
    reports = edgeproof.audit_datasets(model, [data, other], executor="processes", jobs=2)

Heavy modules (torch, onnxruntime) are imported on first use of the names that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeproof._lazy import lazy_exports
from edgeproof._torch_version import check_torch
from edgeproof._version import __version__

check_torch()

if TYPE_CHECKING:
    from edgeproof.audit_many import audit_datasets
    from edgeproof.checks import available_checks, get_check, register_check
    from edgeproof.checks.base import AuditContext, Check, FunctionCheck
    from edgeproof.data.dataset import Dataset
    from edgeproof.data.loading import load_data
    from edgeproof.models.loaded import LoadedModel
    from edgeproof.models.loading import load_model
    from edgeproof.policy import Policy, load_policy
    from edgeproof.report.report import Report
    from edgeproof.results import CheckResult, Figure, Finding, Interval, Metric, Table
    from edgeproof.runner import audit
    from edgeproof.spec import InputSpec, ThreatModel

__all__ = [
    "AuditContext",
    "Check",
    "CheckResult",
    "Dataset",
    "Figure",
    "Finding",
    "FunctionCheck",
    "InputSpec",
    "Interval",
    "LoadedModel",
    "Metric",
    "Policy",
    "Report",
    "Table",
    "ThreatModel",
    "__version__",
    "audit",
    "audit_datasets",
    "available_checks",
    "get_check",
    "load_data",
    "load_model",
    "load_policy",
    "register_check",
]

_WHERE: dict[str, str] = {
    "AuditContext": "edgeproof.checks.base",
    "Check": "edgeproof.checks.base",
    "FunctionCheck": "edgeproof.checks.base",
    "available_checks": "edgeproof.checks",
    "get_check": "edgeproof.checks",
    "register_check": "edgeproof.checks",
    "Dataset": "edgeproof.data.dataset",
    "load_data": "edgeproof.data.loading",
    "LoadedModel": "edgeproof.models.loaded",
    "load_model": "edgeproof.models.loading",
    "Policy": "edgeproof.policy",
    "load_policy": "edgeproof.policy",
    "Report": "edgeproof.report.report",
    "CheckResult": "edgeproof.results",
    "Figure": "edgeproof.results",
    "Finding": "edgeproof.results",
    "Interval": "edgeproof.results",
    "Metric": "edgeproof.results",
    "Table": "edgeproof.results",
    "audit": "edgeproof.runner",
    "audit_datasets": "edgeproof.audit_many",
    "InputSpec": "edgeproof.spec",
    "ThreatModel": "edgeproof.spec",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

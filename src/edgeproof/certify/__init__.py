"""Certification: what can be proved about a model.

Bounds on traced PyTorch models (IBP, CROWN, CROWN-IBP, α-CROWN, branch-and-bound):

* :func:`trace` — a model → a :class:`BoundGraph` (``torch.fx``, or ``torch.export`` where fx
  cannot trace); :func:`register_module` / :func:`register_function` add bounds for more
  operations.
* Input sets: :func:`linf_ball`, :func:`l2_ball` (clipped to the input domain), :func:`box`,
  :func:`segment`.
* :func:`compute_bounds` — lower (and upper) bounds of ``C·f(x)`` by ``ibp``, ``crown-ibp``,
  ``crown`` or ``alpha-crown``; :func:`margin_spec` builds ``C`` for classification margins.
* :func:`branch_and_bound` — complete verification of one sample within a time budget.
* :func:`certify_model` — per-sample verdicts (verified / falsified / unknown) and certified
  margins over several ε, the entry point of the ``certify`` check and the compression ledger.

Randomised smoothing (a probabilistic L2 certificate) is :mod:`edgeproof.certify.smoothing`.
Names are imported on first access (the engine imports torch.fx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeproof._lazy import lazy_exports

if TYPE_CHECKING:
    from edgeproof.certify.api import (
        CertifyResult,
        EpsResult,
        MethodResult,
        Verdict,
        certify_model,
    )
    from edgeproof.certify.bab import (
        BabResult,
        BabSettings,
        branch_and_bound,
        search_counterexample,
    )
    from edgeproof.certify.bounds import (
        METHODS,
        AlphaSettings,
        BoundResult,
        Method,
        compute_bounds,
        margin_spec,
    )
    from edgeproof.certify.graph import (
        BoundGraph,
        Node,
        maxpool_as_relus,
        register_function,
        register_module,
        trace,
    )
    from edgeproof.certify.sets import (
        Box,
        InputSet,
        L2Ball,
        Segment,
        box,
        l2_ball,
        linf_ball,
        segment,
    )

_WHERE: dict[str, str] = {
    **dict.fromkeys(
        ("CertifyResult", "EpsResult", "MethodResult", "Verdict", "certify_model"),
        "edgeproof.certify.api",
    ),
    **dict.fromkeys(
        ("BabResult", "BabSettings", "branch_and_bound", "search_counterexample"),
        "edgeproof.certify.bab",
    ),
    **dict.fromkeys(
        ("METHODS", "AlphaSettings", "BoundResult", "Method", "compute_bounds", "margin_spec"),
        "edgeproof.certify.bounds",
    ),
    **dict.fromkeys(
        (
            "BoundGraph",
            "Node",
            "maxpool_as_relus",
            "register_function",
            "register_module",
            "trace",
        ),
        "edgeproof.certify.graph",
    ),
    **dict.fromkeys(
        ("Box", "InputSet", "L2Ball", "Segment", "box", "l2_ball", "linf_ball", "segment"),
        "edgeproof.certify.sets",
    ),
}

__all__ = [
    "METHODS",
    "AlphaSettings",
    "BabResult",
    "BabSettings",
    "BoundGraph",
    "BoundResult",
    "Box",
    "CertifyResult",
    "EpsResult",
    "InputSet",
    "L2Ball",
    "Method",
    "MethodResult",
    "Node",
    "Segment",
    "Verdict",
    "box",
    "branch_and_bound",
    "certify_model",
    "compute_bounds",
    "l2_ball",
    "linf_ball",
    "margin_spec",
    "maxpool_as_relus",
    "register_function",
    "register_module",
    "search_counterexample",
    "segment",
    "trace",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

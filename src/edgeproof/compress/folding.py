"""BatchNorm folding: the ``torch.fx`` graph every compressor and every exported graph starts from.

``fold_batchnorm`` traces the module with ``torch.fx`` and folds each BatchNorm into the preceding
Conv/Linear (``torch.fx.experimental.optimization.fuse``), function-preserving, so each Conv/Linear
of the result becomes exactly one ONNX ``Conv``/``Gemm``/``MatMul`` when exported.
"""

from __future__ import annotations

import copy

from torch import fx, nn

from edgeproof.errors import SpecError

__all__ = ["fold_batchnorm", "has_batchnorm"]


def fold_batchnorm(module: nn.Module) -> fx.GraphModule:
    """A copy of ``module`` as a ``torch.fx`` graph with BatchNorm folded into Conv/Linear.

    Raises:
        SpecError: the module cannot be traced (data-dependent control flow).
    """
    from torch.fx.experimental.optimization import fuse

    m = copy.deepcopy(module).eval()
    try:
        fused = fuse(m)
    except Exception as exc:  # torch.fx raises many types for untraceable code
        raise SpecError(
            f"the model cannot be traced with torch.fx ({type(exc).__name__}: {exc}); compression "
            "needs a traceable forward (no data-dependent control flow)"
        ) from exc
    if not isinstance(fused, fx.GraphModule):  # pragma: no cover - fuse always returns one
        raise SpecError(f"torch.fx fuse returned {type(fused).__name__}, not a GraphModule")
    return fused


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())

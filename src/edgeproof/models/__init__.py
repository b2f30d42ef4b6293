"""Model loading, the zoo of reference architectures, and the trainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeproof._lazy import lazy_exports

if TYPE_CHECKING:
    from edgeproof.models.loaded import LoadedModel, ModelFormat
    from edgeproof.models.loading import from_module, load_model

__all__ = ["LoadedModel", "ModelFormat", "from_module", "load_model"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LoadedModel": "edgeproof.models.loaded",
        "ModelFormat": "edgeproof.models.loaded",
        "from_module": "edgeproof.models.loading",
        "load_model": "edgeproof.models.loading",
    },
)

"""Model loading, the zoo of reference architectures, and the trainer."""

from edgeproof.models.loaded import LoadedModel, ModelFormat
from edgeproof.models.loading import from_module, load_model

__all__ = ["LoadedModel", "ModelFormat", "from_module", "load_model"]

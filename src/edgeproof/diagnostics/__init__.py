"""Data-free weight diagnostics: weight spectra (WeightWatcher method), sign-flip fragility."""

from edgeproof.diagnostics.dnl import ProtectSet, SignFlip, candidate_set, protect_set, select_flips
from edgeproof.diagnostics.layers import (
    LayerInventory,
    WeightLayer,
    layers_from_module,
    layers_from_tensors,
)
from edgeproof.diagnostics.spectral import SpectralAnalysis, SpectralConfig, analyze_inventory

__all__ = [
    "LayerInventory",
    "ProtectSet",
    "SignFlip",
    "SpectralAnalysis",
    "SpectralConfig",
    "WeightLayer",
    "analyze_inventory",
    "candidate_set",
    "layers_from_module",
    "layers_from_tensors",
    "protect_set",
    "select_flips",
]

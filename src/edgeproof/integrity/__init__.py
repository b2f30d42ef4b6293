"""Integrity: RFC 6962 Merkle seals over models, datasets and files; tamper localisation;
inclusion proofs; Ed25519 signatures; a weight guard; the per-class poisoning symptom."""

from edgeproof.integrity.baseline import compare_per_class
from edgeproof.integrity.guard import GuardReport, WeightGuard, WeightTamperError, load_protect_set
from edgeproof.integrity.merkle import (
    MerkleTree,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)
from edgeproof.integrity.proof import InclusionProof, prove, verify_proof
from edgeproof.integrity.seal import (
    Seal,
    VerifyResult,
    model_item_from_weights,
    seal_paths,
    verify_seal,
)
from edgeproof.integrity.signing import generate_key, load_private_key, load_public_key

__all__ = [
    "GuardReport",
    "InclusionProof",
    "MerkleTree",
    "Seal",
    "VerifyResult",
    "WeightGuard",
    "WeightTamperError",
    "compare_per_class",
    "generate_key",
    "leaf_hash",
    "load_private_key",
    "load_protect_set",
    "load_public_key",
    "merkle_root",
    "model_item_from_weights",
    "node_hash",
    "prove",
    "seal_paths",
    "verify_inclusion",
    "verify_proof",
    "verify_seal",
]

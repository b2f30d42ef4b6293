"""Integrity: RFC 6962 Merkle seals over models, datasets and files; tamper localisation;
inclusion proofs; Ed25519 signatures; a weight guard; the per-class poisoning symptom."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeproof._lazy import lazy_exports

if TYPE_CHECKING:
    from edgeproof.integrity.baseline import compare_per_class
    from edgeproof.integrity.guard import (
        GuardReport,
        WeightGuard,
        WeightTamperError,
        load_protect_set,
    )
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

_WHERE = {
    "compare_per_class": "edgeproof.integrity.baseline",
    "GuardReport": "edgeproof.integrity.guard",
    "WeightGuard": "edgeproof.integrity.guard",
    "WeightTamperError": "edgeproof.integrity.guard",
    "load_protect_set": "edgeproof.integrity.guard",
    "MerkleTree": "edgeproof.integrity.merkle",
    "leaf_hash": "edgeproof.integrity.merkle",
    "merkle_root": "edgeproof.integrity.merkle",
    "node_hash": "edgeproof.integrity.merkle",
    "verify_inclusion": "edgeproof.integrity.merkle",
    "InclusionProof": "edgeproof.integrity.proof",
    "prove": "edgeproof.integrity.proof",
    "verify_proof": "edgeproof.integrity.proof",
    "Seal": "edgeproof.integrity.seal",
    "VerifyResult": "edgeproof.integrity.seal",
    "model_item_from_weights": "edgeproof.integrity.seal",
    "seal_paths": "edgeproof.integrity.seal",
    "verify_seal": "edgeproof.integrity.seal",
    "generate_key": "edgeproof.integrity.signing",
    "load_private_key": "edgeproof.integrity.signing",
    "load_public_key": "edgeproof.integrity.signing",
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

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

"""RFC 6962 tree hashing and inclusion proofs, against the certificate-transparency vectors.

Vectors: transparency-dev/merkle ``testonly/constants.go`` (leaf inputs, root per tree size) and
``proof/verify_test.go`` (``inclusionProofs``; its leaf numbers are 1-based, converted here).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproof.integrity.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion,
    verify_inclusion,
)

LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (0-based leaf index, tree size, audit path)
PATHS = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip


def reference_mth(data: list[bytes]) -> bytes:
    """MTH written straight from RFC 6962 §2.1 (recursive split at the largest power of two < n)."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(data[:k]) + reference_mth(data[k:])).digest()


def test_empty_tree_hash_is_sha256_of_empty_string() -> None:
    assert EMPTY_ROOT.hex() == ROOTS[0]
    assert merkle_root([]).hex() == ROOTS[0]
    assert MerkleTree([]).root.hex() == ROOTS[0]


@pytest.mark.parametrize("size", range(1, 9))
def test_root_of_each_prefix_matches_ct_vectors(size: int) -> None:
    assert MerkleTree.from_data(LEAVES[:size]).root.hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), PATHS)
def test_audit_paths_match_ct_vectors(index: int, size: int, path: list[str]) -> None:
    tree = MerkleTree.from_data(LEAVES[:size])
    assert [h.hex() for h in tree.inclusion_proof(index)] == path
    assert verify_inclusion(
        leaf_hash(LEAVES[index]),
        index,
        size,
        [bytes.fromhex(h) for h in path],
        bytes.fromhex(ROOTS[size]),
    )


def test_inclusion_rejects_wrong_leaf_index_size_or_path() -> None:
    tree = MerkleTree.from_data(LEAVES)
    proof = tree.inclusion_proof(5)
    leaf = leaf_hash(LEAVES[5])
    assert verify_inclusion(leaf, 5, 8, proof, tree.root)
    assert not verify_inclusion(leaf_hash(LEAVES[4]), 5, 8, proof, tree.root)
    assert not verify_inclusion(leaf, 4, 8, proof, tree.root)
    assert not verify_inclusion(leaf, 5, 6, proof, tree.root)
    assert not verify_inclusion(leaf, 5, 8, proof[:-1], tree.root)
    assert not verify_inclusion(leaf, 5, 8, [*proof, proof[0]], tree.root)
    assert not verify_inclusion(leaf, 8, 8, proof, tree.root)
    assert root_from_inclusion(leaf, 0, 0, []) is None


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"x"), leaf_hash(b"y")
    # a leaf holding the bytes of two child hashes must not collide with their parent
    assert leaf_hash(a + b) != node_hash(a, b)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=40))
def test_tree_matches_recursive_rfc_definition_and_every_path_verifies(leaves: list[bytes]) -> None:
    tree = MerkleTree.from_data(leaves)
    assert tree.root == reference_mth(leaves)
    for i, d in enumerate(leaves):
        assert verify_inclusion(leaf_hash(d), i, len(leaves), tree.inclusion_proof(i), tree.root)

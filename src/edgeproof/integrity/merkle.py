"""RFC 6962 Merkle tree hashing, inclusion proofs (audit paths) and their verification.

Follows RFC 6962 §2.1 (Certificate Transparency), SHA-256:

* leaf hash ``MTH({d}) = SHA-256(0x00 ‖ d)``;
* node hash ``SHA-256(0x01 ‖ left ‖ right)``;
* ``MTH(D[n])`` splits at ``k``, the largest power of two smaller than ``n`` — not a balanced tree
  padded by duplicating the last leaf (the Bitcoin construction, which admits second preimages);
* the empty tree hashes to ``SHA-256("")``.

Building level by level — pair neighbours, carry an unpaired last node up unchanged — gives exactly
the RFC's split-at-the-largest-power-of-two tree, and its audit paths (§2.1.1) are read off the
stored levels bottom-up. :func:`verify_inclusion` is the algorithm of RFC 9162 §2.1.3.2.
Checked against the certificate-transparency reference vectors (``tests/test_merkle.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_from_inclusion",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF = b"\x00"
_NODE = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""``MTH({})``: the hash of an empty tree (RFC 6962 §2.1)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 ‖ data)``: the hash of one leaf."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``: the hash of an interior node."""
    return hashlib.sha256(_NODE + left + right).digest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    sha = hashlib.sha256
    up = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        up.append(level[-1])  # an unpaired node moves up unchanged (RFC 6962 split rule)
    return up


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of a list of *leaf hashes* (already ``SHA-256(0x00 ‖ d)``)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


class MerkleTree:
    """An RFC 6962 tree over leaf hashes, keeping every level so audit paths can be read off.

    >>> tree = MerkleTree([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> verify_inclusion(leaf_hash(b"c"), 2, 3, tree.inclusion_proof(2), tree.root)
    True
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            self.levels.append(_next_level(self.levels[-1]))

    @classmethod
    def from_data(cls, leaves: Sequence[bytes]) -> MerkleTree:
        """A tree over raw leaf data (each hashed with :func:`leaf_hash`)."""
        return cls([leaf_hash(d) for d in leaves])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path ``PATH(index, D[n])`` of RFC 6962 §2.1.1, from the leaf upwards."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} is outside a tree of {self.size} leaves")
        path: list[bytes] = []
        i = index
        for level in self.levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return path


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root implied by a leaf hash and its audit path (RFC 9162 §2.1.3.2), or ``None``.

    ``None`` when the path has the wrong length for ``(index, size)``.
    """
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True if ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` with ``root``."""
    got = root_from_inclusion(leaf, index, size, proof)
    return got is not None and got == root

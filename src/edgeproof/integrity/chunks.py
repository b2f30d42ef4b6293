"""Fixed-size chunk digests of a byte blob (a tensor's or a file's bytes), and single-word repair.

Each chunk gets its SHA-256 plus a two-number *syndrome* over its little-endian 32-bit words
``w_i`` (the chunk zero-padded to a multiple of 4 bytes):

    s1 = Σ w_i        s2 = Σ i · w_i          (exact integers)

If one word ``k`` changed by ``d = w'_k - w_k``, then ``s1' - s1 = d`` and
``s2' - s2 = k·d``, so the changed word and its original value follow by one division. The
candidate repair is confirmed by re-hashing the chunk with the original word restored: only a
SHA-256 match counts, so a change of several words is never misreported as a single one. This is
what lets ``verify`` name the element and the bit of a single flipped bit without keeping a copy
of the weights (16 bytes per chunk instead of the chunk). The syndrome is a position-weighted
checksum in the spirit of Fletcher's (our own construction, not from a paper); SHA-256 carries
the security, the syndrome only the localisation.

Chunks up to 256 KiB keep ``s2 < 2**63``, so numpy's uint64 arithmetic is exact.

Speed: hashing runs in a thread pool (``hashlib`` and numpy release the GIL for large buffers), in
blocks of several chunks so Python overhead stays per megabyte, not per chunk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "BitChange",
    "ChunkDigest",
    "chunk_sha256s",
    "default_threads",
    "digest_blob",
    "digest_chunk",
    "hashing_pool",
    "locate_single_word_change",
    "num_chunks",
]

DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 4 * 1024
MAX_CHUNK_SIZE = 256 * 1024
_BLOCK_BYTES = 4 * 1024 * 1024
_IDX = np.arange(MAX_CHUNK_SIZE // 4, dtype=np.uint64)


@dataclass(frozen=True)
class ChunkDigest:
    """SHA-256 of one chunk and its word-sum syndrome ``(s1, s2)``."""

    sha256: bytes
    s1: int
    s2: int


@dataclass(frozen=True)
class BitChange:
    """One bit that differs: byte offset in the blob and bit 0–7 within that byte (LSB = 0)."""

    byte: int
    bit: int
    now_set: bool


def default_threads() -> int:
    """Hashing threads: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def hashing_pool(threads: int | None = None) -> Iterator[Executor | None]:
    """A thread pool for :func:`digest_blob` (``None`` when one thread is asked for)."""
    from edgeproof.options import positive_int

    n = default_threads() if threads is None else positive_int("threads", threads)
    if n <= 1:
        yield None
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="edgeproof-hash") as pool:
        yield pool


def num_chunks(nbytes: int, chunk_size: int) -> int:
    """Chunks covering ``nbytes``; an empty blob still has one (empty) chunk, so it is committed."""
    return max(1, -(-nbytes // chunk_size))


def _words(buf: bytes | memoryview) -> np.ndarray:
    n = len(buf)
    if n % 4:
        padded = bytes(buf) + b"\x00" * (4 - n % 4)
        return np.frombuffer(padded, dtype="<u4")
    return np.frombuffer(buf, dtype="<u4")


def _syndrome(words: np.ndarray) -> tuple[int, int]:
    if words.size == 0:
        return 0, 0
    s1 = int(words.sum(dtype=np.uint64))
    s2 = int(np.dot(words.astype(np.uint64), _IDX[: words.size]))
    return s1, s2


def digest_chunk(buf: bytes | memoryview) -> ChunkDigest:
    """The digest of one chunk."""
    s1, s2 = _syndrome(_words(buf))
    return ChunkDigest(hashlib.sha256(buf).digest(), s1, s2)


def _digest_block(mv: memoryview, start: int, stop: int, chunk_size: int) -> list[ChunkDigest]:
    """Digests of the chunks in ``mv[start:stop]`` (``start`` chunk-aligned)."""
    full = (stop - start) // chunk_size
    out: list[ChunkDigest] = []
    if full:
        words = np.frombuffer(mv[start : start + full * chunk_size], dtype="<u4").reshape(
            full, chunk_size // 4
        )
        s1 = words.sum(axis=1, dtype=np.uint64)
        s2 = words.astype(np.uint64) @ _IDX[: chunk_size // 4]
        sha = hashlib.sha256
        for j in range(full):
            a = start + j * chunk_size
            out.append(ChunkDigest(sha(mv[a : a + chunk_size]).digest(), int(s1[j]), int(s2[j])))
    tail = start + full * chunk_size
    if tail < stop:
        out.append(digest_chunk(mv[tail:stop]))
    return out


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size % 4 or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(
            f"chunk size {chunk_size} must be a multiple of 4 in [{MIN_CHUNK_SIZE}, "
            f"{MAX_CHUNK_SIZE}] bytes"
        )


def _byte_view(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    """``data``'s bytes, without a copy where it is contiguous."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    return memoryview(data).cast("B")


_T = TypeVar("_T")


def _per_block(
    n: int,
    chunk_size: int,
    pool: Executor | None,
    digest: Callable[[int, int], list[_T]],
) -> list[_T]:
    """``digest(start, stop)`` over blocks of about 4 MiB of ``n`` bytes (whole chunks each),
    in parallel on ``pool`` when there is one and more than one block; the results in order."""
    per_block = max(1, _BLOCK_BYTES // chunk_size) * chunk_size
    bounds = [(a, min(n, a + per_block)) for a in range(0, n, per_block)]
    if pool is None or len(bounds) == 1:
        parts = [digest(a, b) for a, b in bounds]
    else:
        parts = list(pool.map(lambda ab: digest(ab[0], ab[1]), bounds))
    return [d for part in parts for d in part]


def digest_blob(
    data: bytes | bytearray | memoryview | np.ndarray,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    pool: Executor | None = None,
) -> list[ChunkDigest]:
    """Digests of ``data`` cut into ``chunk_size`` pieces (the last may be shorter).

    ``chunk_size`` must be a multiple of 4 between 4 KiB and 256 KiB. With a ``pool``, blocks of
    about 4 MiB are digested in parallel.
    """
    _check_chunk_size(chunk_size)
    mv = _byte_view(data)
    if len(mv) == 0:
        return [digest_chunk(b"")]
    return _per_block(len(mv), chunk_size, pool, lambda a, b: _digest_block(mv, a, b, chunk_size))


def chunk_sha256s(
    data: bytes | bytearray | memoryview | np.ndarray,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    pool: Executor | None = None,
) -> list[bytes]:
    """The SHA-256 of each chunk of ``data``, as :func:`digest_blob` cuts it, without the
    syndromes: what a seal's leaves commit, and all a verification needs while nothing changed
    (the syndromes only locate a change). ``chunk_size`` and ``pool`` as for
    :func:`digest_blob`."""
    _check_chunk_size(chunk_size)
    mv = _byte_view(data)
    if len(mv) == 0:
        return [hashlib.sha256(b"").digest()]
    sha = hashlib.sha256

    def block(a: int, stop: int) -> list[bytes]:
        return [sha(mv[i : min(stop, i + chunk_size)]).digest() for i in range(a, stop, chunk_size)]

    return _per_block(len(mv), chunk_size, pool, block)


def locate_single_word_change(
    current: bytes | memoryview, stored: ChunkDigest, chunk_offset: int = 0
) -> list[BitChange] | None:
    """The bits that differ, if the chunk differs from ``stored`` in exactly one 32-bit word.

    Returns ``None`` when no single-word change explains the difference (several words changed,
    or the chunk's length changed). ``chunk_offset`` is added to the byte offsets returned.
    """
    words = _words(current)
    s1, s2 = _syndrome(words)
    d, e = s1 - stored.s1, s2 - stored.s2
    if d == 0 or e % d:
        return None
    k = e // d
    if not 0 <= k < words.size:
        return None
    new = int(words[k])
    old = new - d
    if not 0 <= old < 2**32:
        return None
    rebuilt = bytearray(words.tobytes())
    rebuilt[4 * k : 4 * k + 4] = old.to_bytes(4, "little")
    n = len(current)
    if any(rebuilt[n:]):  # the repair would need bytes beyond the chunk's end
        return None
    if hashlib.sha256(bytes(rebuilt[:n])).digest() != stored.sha256:
        return None
    diff = old ^ new
    return [
        BitChange(chunk_offset + 4 * k + p // 8, p % 8, bool(new >> p & 1))
        for p in range(32)
        if diff >> p & 1
    ]

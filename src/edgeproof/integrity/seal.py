"""Seals: RFC 6962 Merkle commitments to model tensors, dataset records and raw files.

A seal (``*.seal.json``, schema ``seal.schema.json`` in this package) holds one *item* per sealed
path and a top-level root over the items. Each item keeps its own root *and* the per-leaf digests
that produced it, because a seal that stored only a root could say *that* something changed but
not *what*:

* **model** (``.safetensors``, ``.onnx``): per tensor — name, dtype, shape — the SHA-256 and the
  word-sum syndrome of each fixed-size chunk (default 64 KiB): about 50 bytes of JSON per 64 KiB,
  i.e. ~80 KB for a 100 MB model. Verify names the tensor and element range of every changed chunk,
  and for a chunk where one 32-bit word changed, the element, the bit (31 = sign for float32) and
  the value before and after (:mod:`edgeproof.integrity.chunks`).
  The model's sidecar metadata (``<stem>.json``, which names its architecture, input domain and
  classes) is committed as one metadata digest when it exists, so adding, removing or editing it
  is a change.
* **dataset** (every format :func:`edgeproof.data.loading.load_data` reads): a header (format,
  sample shape, class names, input kind, value domain, loader options), one *source* per file or
  archive member the data is read from (name, size, SHA-256: every member of an ``.npz`` —
  ``domain``, ``classes`` and any unused array included —, each IDX/CIFAR/CSV file, CIFAR's class
  list), then per record — id, SHA-256 of its content, label — ~110 bytes of JSON per record,
  ~5.5 MB for 50k records. Content is the record's raw file bytes for image folders (any byte of
  the file counts, decoding cannot hide a change) and the record's float32 array bytes as loaded
  (C order, little-endian) for the array formats, whose files pack many records together. Verify
  says, per record id, whether the content, the label, or both changed, which records were added
  or removed, and which sources changed.
* **file** (anything else, or ``raw=True``): the file's size and chunk digests of its bytes; verify
  names the byte range (and the bit, for a single-word change).

Paths are stored relative to the seal's folder; ``seal_paths`` refuses a path outside it and
``verify_seal`` refuses an absolute path, a ``..`` escape or a symlink out of it, unless
``allow_outside=True``. A sealed path that vanished or can no longer be read is a verification
*failure* (``VerifyResult.ok`` is false), as is a signature by another key than the one pinned,
or a missing signature when a key is pinned.

Leaf encodings are in :mod:`edgeproof.integrity.records`. The top root is the MTH of one leaf per
item; an optional Ed25519 signature covers :meth:`Seal.message` (top root and every item's root).
Reading a seal checks its size and nesting (:mod:`edgeproof.limits`), the schema, and that every
stored digest list reproduces its item root, so a hand-edited seal is rejected before any
comparison.

The parts: the item types (:mod:`~edgeproof.integrity.items`), their JSON
(:mod:`~edgeproof.integrity.item_json`), the seal file (:mod:`~edgeproof.integrity.sealfile`),
building model and dataset items (:mod:`~edgeproof.integrity.model_items`,
:mod:`~edgeproof.integrity.dataset_items`), sealing (:mod:`~edgeproof.integrity.sealing`), the
localised changes (:mod:`~edgeproof.integrity.changes`), verifying
(:mod:`~edgeproof.integrity.verify`, results in :mod:`~edgeproof.integrity.verify_result`) and the
errors (:mod:`~edgeproof.integrity.seal_errors`). This module re-exports their public names.
"""

from __future__ import annotations

from edgeproof.integrity.changes import (
    BitFlip,
    RecordChange,
    RegionChange,
    TensorChange,
    bit_role,
    compare_tensors,
)
from edgeproof.integrity.items import (
    LOADER_OPTIONS,
    DatasetItem,
    FileItem,
    ItemHeader,
    ModelItem,
    SealItem,
    SourceEntry,
    TensorEntry,
    seal_message,
)
from edgeproof.integrity.seal_errors import SealedPathError, SealFileError, SignatureKeyError
from edgeproof.integrity.sealfile import SCHEMA_VERSION, Seal
from edgeproof.integrity.sealfile import load_schema as load_schema
from edgeproof.integrity.sealing import DATA_SUFFIXES as DATA_SUFFIXES
from edgeproof.integrity.sealing import MODEL_FORMATS as MODEL_FORMATS
from edgeproof.integrity.sealing import model_item_from_weights, seal_paths
from edgeproof.integrity.verify import check_signature as check_signature
from edgeproof.integrity.verify import verify_seal
from edgeproof.integrity.verify_result import ItemVerification, SignatureCheck, VerifyResult

__all__ = [
    "LOADER_OPTIONS",
    "SCHEMA_VERSION",
    "BitFlip",
    "DatasetItem",
    "FileItem",
    "ItemHeader",
    "ItemVerification",
    "ModelItem",
    "RecordChange",
    "RegionChange",
    "Seal",
    "SealFileError",
    "SealItem",
    "SealedPathError",
    "SignatureCheck",
    "SignatureKeyError",
    "SourceEntry",
    "TensorChange",
    "TensorEntry",
    "VerifyResult",
    "bit_role",
    "compare_tensors",
    "model_item_from_weights",
    "seal_message",
    "seal_paths",
    "verify_seal",
]

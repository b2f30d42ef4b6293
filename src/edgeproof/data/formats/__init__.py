"""One reader per on-disk data format; :func:`edgeproof.data.loading.load_data` dispatches to them.

Each reader returns an unvalidated :class:`~edgeproof.data.dataset.Dataset`; ``load_data``
validates it. Shared steps live in :mod:`.layout` (sample shape → kind) and :mod:`.labels`
(raw labels → class indices and names).
"""

from edgeproof.data.formats.cifar import load_cifar10
from edgeproof.data.formats.csvfile import load_csv
from edgeproof.data.formats.idx import load_idx, read_idx
from edgeproof.data.formats.imagefolder import IMAGE_SUFFIXES, load_image_folder
from edgeproof.data.formats.npz import load_npz

__all__ = [
    "IMAGE_SUFFIXES",
    "load_cifar10",
    "load_csv",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "read_idx",
]

"""``load_data``: one entry point that reads any supported data source into a validated Dataset.

Dispatch, by the source:

=================================================  ==============  =================================
source                                             format          reader
=================================================  ==============  =================================
``builtin:<name>``                                 ``builtin``     :mod:`edgeproof.data.builtin`
``*.npz``                                          ``npz``         :mod:`.formats.npz`
``*.csv``, ``*.csv.gz``                            ``csv``         :mod:`.formats.csvfile`
``*-images-idx3-ubyte`` (``.gz``), IDX names       ``idx``         :mod:`.formats.idx`
``*.bin``, or a folder of CIFAR-10 batches         ``cifar10``     :mod:`.formats.cifar`
any other folder (one sub-folder per class)        ``imagefolder`` :mod:`.formats.imagefolder`
=================================================  ==============  =================================

Whatever the format, the result has float32 inputs in a canonical layout (``(C,H,W)`` images,
``(C,T)`` time series, ``(F,)`` tabular), int64 labels, class names, a stable id per record and,
where the loader knows it, the value domain. It is validated (:meth:`Dataset.validate`) before it
is returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from edgeproof.data.builtin import PREFIX, builtin_names, load_builtin, register_builtin
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats import (
    load_cifar10,
    load_csv,
    load_idx,
    load_image_folder,
    load_npz,
)
from edgeproof.data.formats.cifar import batch_files
from edgeproof.data.formats.layout import check_kind
from edgeproof.errors import DataFileError, OptionError

__all__ = [
    "SUPPORTED",
    "builtin_names",
    "format_of",
    "load_data",
    "register_builtin",
]

SUPPORTED: tuple[str, ...] = (
    ".npz",
    ".csv (optionally .gz)",
    "IDX (*-images-idx3-ubyte, optionally .gz)",
    "CIFAR-10 binary (*.bin or a folder of batches)",
    "an image folder (one sub-folder per class)",
    "builtin:<name>",
)
_IDX_NAME = re.compile(r"(?:[-.]idx\d|-ubyte)(?:\.gz)?$|\.idx$", re.IGNORECASE)


def format_of(path: Path) -> str:
    """Name of the reader for ``path``: ``npz``, ``csv``, ``idx``, ``cifar10`` or ``imagefolder``.

    Raises:
        DataFileError: the path does not exist or its type is not supported.
    """
    if not path.exists():
        raise DataFileError(path, "does not exist", "Check the path")
    if path.is_dir():
        return "cifar10" if batch_files(path) else "imagefolder"
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".bin"):
        return "cifar10"
    if _IDX_NAME.search(name):
        return "idx"
    suffix = "".join(path.suffixes[-2:]) if name.endswith(".gz") else path.suffix
    raise DataFileError(
        path,
        f"has an unknown data file type ({suffix or 'no extension'})",
        f"Supported: {', '.join(SUPPORTED)}",
    )


def load_data(
    source: str | Path,
    *,
    x_key: str = "x",
    y_key: str = "y",
    label_column: str | int = "label",
    header: bool | None = None,
    classes: Sequence[str] | None = None,
    kind: str | None = None,
) -> Dataset:
    """Load and validate a dataset from a file, a folder or ``builtin:<name>``.

    Args:
        source: path to a ``.npz``/``.csv``/IDX/CIFAR-10 file, an image or CIFAR folder, or
            ``builtin:<name>`` (see :func:`edgeproof.data.builtin.builtin_names`).
        x_key: ``.npz`` only — the array holding the inputs.
        y_key: ``.npz`` only — the array holding the labels.
        label_column: ``.csv`` only — the column holding the labels: its header name, or its
            position (an ``int`` or an integer string naming no column; negative counts from
            the end, ``-1`` is the last column).
        header: ``.csv`` only — whether the first row names the columns; ``None`` (default)
            detects it: a first row of numbers only is data.
        classes: class names, index = label. For string labels (csv/npz) this fixes the label
            order; for an image folder it picks and orders the class sub-folders; otherwise it
            names the integer labels. Default: from the file, else ``"0".."K-1"``.
        kind: ``image``, ``timeseries`` or ``tabular``. For ``.npz``/IDX it decides how records
            are read (a 2-D record is an ``(H,W)`` image unless this, or the npz ``kind`` array,
            says ``timeseries``); for other formats it must match the format's kind.

    Raises:
        DataFileError: missing file, unsupported type, unreadable/truncated content, missing key.
        DataError: empty data, NaN/Inf inputs, labels out of range or not integral.
        OptionError: ``kind`` is unknown or does not fit the data.
    """
    check_kind(kind)
    text = str(source)
    if isinstance(source, str) and text.startswith(PREFIX):
        data = load_builtin(text)
        if classes is not None:
            data.classes = [str(c) for c in classes]
    else:
        path = Path(source)
        fmt = format_of(path)
        if fmt == "npz":
            data = load_npz(path, x_key=x_key, y_key=y_key, classes=classes, kind=kind)
        elif fmt == "csv":
            data = load_csv(path, label_column=label_column, header=header, classes=classes)
        elif fmt == "idx":
            data = load_idx(path, classes=classes, kind=kind)
        elif fmt == "cifar10":
            data = load_cifar10(path, classes=classes)
        else:
            data = load_image_folder(path, classes=classes)
    if kind is not None and data.kind != kind:
        raise OptionError(
            "kind",
            f"{data.name} holds {data.kind} records of shape {data.sample_shape}, not {kind}",
            "Drop the option or give data of that kind",
        )
    data.validate()
    return data

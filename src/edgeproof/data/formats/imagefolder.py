"""Image folders: one sub-folder per class, images inside (the torchvision ``ImageFolder`` layout).

``root/<class>/**/<image>`` with PNG, JPEG, BMP or PGM/PPM images, read with Pillow. Classes
are the sub-folder names in sorted order (or the ``classes`` given, which then must all exist as
folders); hidden files and folders are skipped, as are files with other extensions. All
images must share one size. Grayscale images give 1 channel and colour images 3; if the folder
mixes them, grayscale images are repeated to 3 channels. 8-bit values are scaled by 1/255 and
16-bit values by 1/65535 into ``[0, 1]``. Ids are the paths relative to ``root`` in POSIX form,
e.g. ``"cat/img3.png"``.

Sizes are read from the image headers first (no decoding): one image may have at most
``max_image_pixels`` pixels and the whole folder as float32 at most ``max_array_bytes``
(:mod:`edgeproof.limits`), checked before the output array is allocated. Pillow's own
decompression-bomb guard applies too; its warning is not shown (the limit here is lower).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof import limits
from edgeproof.data.dataset import Dataset
from edgeproof.data.formats.labels import check_class_count
from edgeproof.errors import DataFileError
from edgeproof.extras import needs_extra

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm")
_GRAY_8 = frozenset({"1", "L", "LA", "La"})
_GRAY_16 = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_LAYOUT = "Put images in one folder per class, e.g. root/cat/1.png and root/dog/2.png"


def load_image_folder(root: Path, *, classes: Sequence[str] | None = None) -> Dataset:
    """Read a class-per-folder image tree into a :class:`Dataset` (not yet validated).

    Two passes: the headers of every image first (size and channel count, checked against the
    limits before anything is decoded), then each image decoded straight into the output.
    """
    with needs_extra("data", "to read image folders"):
        from PIL import Image

    names = _class_folders(root, classes)
    files = _labelled_images(root, names)
    width, height, channels = _common_geometry(Image, root, files)
    x = _decode_all(Image, files, channels, height, width)
    return Dataset(
        x=x,
        y=np.array([label for _, label in files], dtype=np.int64),
        classes=names,
        name=str(root),
        format="imagefolder",
        ids=[_relative(path, root) for path, _ in files],
        kind="image",
        domain=(0.0, 1.0),
        metadata={"channels": channels, "size": f"{width}x{height}"},
    )


def _class_folders(root: Path, classes: Sequence[str] | None) -> list[str]:
    """The class names in label order: ``classes`` (each must have a folder), else the
    sub-folders sorted by name (hidden ones left out)."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        names = [str(c) for c in classes]
        missing = [name for name in names if name not in folders]
        if missing:
            raise DataFileError(
                root,
                f"has no folder for class(es) {', '.join(missing)} "
                f"(folders present: {', '.join(folders) or 'none'})",
                "Name one existing sub-folder per class, in label order",
            )
    else:
        names = folders
    if not names:
        raise DataFileError(root, "has no class sub-folders", _LAYOUT)
    check_class_count(len(names), str(root), "the class folders")
    return names


def _labelled_images(root: Path, names: list[str]) -> list[tuple[Path, int]]:
    """Every image with its label (the index of its class folder); an empty folder is an
    error."""
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        found = _images_in(root / name)
        if not found:
            raise DataFileError(
                root / name,
                f"holds no images ({', '.join(IMAGE_SUFFIXES)})",
                "Add images to the class folder or remove it",
            )
        files.extend((path, label) for path in found)
    return files


def _common_geometry(
    image_module: Any, root: Path, files: list[tuple[Path, int]]
) -> tuple[int, int, int]:
    """Width, height and channels (3 if any image is in colour, else 1) shared by the images,
    from their headers only (no decoding); every image within the pixel limit, all of one size,
    and the decoded array within the memory limit."""
    first: tuple[str, tuple[int, int]] | None = None
    colour = False
    for path, _ in files:
        with _open(image_module, path) as image:
            size = image.size
            mode = image.mode
        limits.check(
            DataFileError,
            path,
            "max_image_pixels",
            f"an image of {size[0]}x{size[1]}",
            size[0] * size[1],
        )
        if mode == "F":
            raise DataFileError(
                path, "has floating-point pixels (mode F)", "Save 8-bit or 16-bit images"
            )
        colour = colour or (mode not in _GRAY_8 and mode not in _GRAY_16)
        if first is None:
            first = (_relative(path, root), size)
        elif size != first[1]:
            raise DataFileError(
                path,
                f"is {size[0]}x{size[1]} pixels but {first[0]} is {first[1][0]}x{first[1][1]}; "
                "all images must share one size",
                "Resize the images to one size first",
            )
    assert first is not None  # files is non-empty here
    width, height = first[1]
    channels = 3 if colour else 1
    limits.check(
        DataFileError,
        root,
        "max_array_bytes",
        f"{len(files)} images of {width}x{height}x{channels} as float32",
        len(files) * channels * width * height * 4,
    )
    return width, height, channels


def _decode_all(
    image_module: Any, files: list[tuple[Path, int]], channels: int, height: int, width: int
) -> np.ndarray:
    """Decode every image into one ``(N, C, H, W)`` float32 array in ``[0, 1]``."""
    x = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, (path, _) in enumerate(files):
        with _open(image_module, path) as image:
            try:
                x[i] = _pixels(image, channels)
            except (OSError, ValueError, SyntaxError, MemoryError) as exc:
                raise DataFileError(
                    path, "is not a readable image (truncated or corrupt)", "Replace or remove it"
                ) from exc
    return x


def _images_in(folder: Path) -> list[Path]:
    found = [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _open(image_module: Any, path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            return image_module.open(path)
    except image_module.DecompressionBombError as exc:
        raise DataFileError(
            path,
            f"is larger than Pillow decodes ({str(exc)[:100]})",
            "Resize the image; edgeproof's own limit is max_image_pixels",
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataFileError(
            path,
            "is not a readable image (corrupt, or not PNG/JPEG/BMP/PGM)",
            "Replace or remove it",
        ) from exc


def _pixels(image: Any, channels: int) -> np.ndarray:
    """``(C, H, W)`` float32 in ``[0, 1]`` from a Pillow image."""
    if image.mode in _GRAY_16:
        plane = np.asarray(image, dtype=np.float32) / np.float32(65535)
        values = plane[None]
    elif image.mode in _GRAY_8:
        values = (np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255))[None]
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
        values = rgb.transpose(2, 0, 1)
    if values.shape[0] != channels:
        values = np.repeat(values, channels, axis=0)
    return values

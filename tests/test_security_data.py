"""Hostile data files: sizes are checked before allocating; every bad file is one line naming it.

Bombs are built small: a header that *declares* a huge array, a gzip/deflate stream that
inflates far past the limit in force (lowered with ``edgeproof.limits.override`` so the test
stays fast), a sparse file. Each test checks the refusal comes before the memory is spent.
See docs/security.md ("Data").
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeproof import limits
from edgeproof.data.loading import load_data
from edgeproof.errors import DataError, DataFileError, UserError


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npz(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _good(n: int = 4) -> dict[str, bytes]:
    return {
        "x.npy": _npy(np.zeros((n, 3), np.float32)),
        "y.npy": _npy(np.arange(n) % 2),
    }


def _header_only(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """An .npy header declaring ``shape`` with no data behind it."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- npz


def test_npz_header_declaring_a_233_tib_array_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    members = _good()
    members["x.npy"] = _header_only((2**22, 2**22, 4))  # 2^46 float32 = 256 TiB
    path = _npz(tmp_path / "bomb.npz", members)
    with pytest.raises(DataFileError, match=r"bomb\.npz: array 'x' needs .* max_array_bytes"):
        load_data(path)


def test_npz_header_lying_about_its_data_size_is_refused(tmp_path: Path) -> None:
    members = _good()
    members["x.npy"] = _header_only((1000, 3)) + b"\x00" * 48
    path = _npz(tmp_path / "lie.npz", members)
    with pytest.raises(DataFileError, match=r"lie\.npz: array 'x' is truncated"):
        load_data(path)


def test_npz_deflate_bomb_over_the_limit_is_refused_before_inflating(tmp_path: Path) -> None:
    members = _good()
    members["x.npy"] = _npy(np.zeros((4, 2**20), np.float32))  # 16 MB of zeros, ~16 KB deflated
    path = _npz(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    with (
        limits.override(max_array_bytes=2**20),
        pytest.raises(DataFileError, match=r"bomb\.npz: member 'x\.npy' needs 16,777,344"),
    ):
        load_data(path)


def _patch_sizes(path: Path, member: str, uncompressed: int) -> None:
    """Rewrite the declared uncompressed size of ``member`` in both zip headers."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    local = raw.find(b"PK\x03\x04")
    while local >= 0:
        n = struct.unpack_from("<H", raw, local + 26)[0]
        if raw[local + 30 : local + 30 + n] == name:
            struct.pack_into("<I", raw, local + 22, uncompressed)
        local = raw.find(b"PK\x03\x04", local + 4)
    central = raw.find(b"PK\x01\x02")
    while central >= 0:
        n = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46 : central + 46 + n] == name:
            struct.pack_into("<I", raw, central + 24, uncompressed)
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))


def test_npz_member_inflating_past_its_declared_size_is_refused(tmp_path: Path) -> None:
    members = _good()
    members["x.npy"] = _npy(np.zeros((4, 2**18), np.float32))
    path = _npz(tmp_path / "lie.npz", members, zipfile.ZIP_DEFLATED)
    _patch_sizes(path, "x.npy", 176)  # claims a tiny member; the stream holds 4 MB
    with pytest.raises(DataFileError, match=r"lie\.npz: "):
        load_data(path)


def test_npz_member_needing_zip_version_9_9_names_the_file(tmp_path: Path) -> None:
    path = _npz(tmp_path / "new.npz", _good())
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, central + 6, 99)  # version needed to extract: 9.9
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=r"new\.npz: .*(version|zip)"):
        load_data(path)


def test_npz_object_array_payload_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    members = _good()
    members["y.npy"] = _npy(np.array([Payload()] * 4, dtype=object))
    path = _npz(tmp_path / "pickle.npz", members)
    with pytest.raises(DataFileError, match=r"array 'y' holds Python objects"):
        load_data(path)
    assert not marker.exists()


def test_npz_label_of_2_to_the_40_is_refused_before_building_the_class_list(
    tmp_path: Path,
) -> None:
    members = _good()
    members["y.npy"] = _npy(np.array([0, 1, 2**40, 3], dtype=np.int64))
    path = _npz(tmp_path / "big.npz", members)
    with pytest.raises(DataError, match=r"big\.npz: the largest label implies 1,099,511,627,777"):
        load_data(path)


def test_npz_non_utf8_class_names_name_the_array(tmp_path: Path) -> None:
    members = _good()
    members["classes.npy"] = _npy(np.array([b"cat", b"\xff\xfe"], dtype="S2"))
    path = _npz(tmp_path / "names.npz", members)
    with pytest.raises(DataError, match=r"names\.npz: array 'classes': entry 1 is not UTF-8"):
        load_data(path)


@pytest.mark.parametrize("domain", [[-np.inf, np.inf], [0.0, np.nan], [1.0, 0.0]])
def test_npz_domain_that_is_not_finite_and_ordered_is_refused(
    tmp_path: Path, domain: list[float]
) -> None:
    members = _good()
    members["domain.npy"] = _npy(np.array(domain))
    path = _npz(tmp_path / "dom.npz", members)
    with pytest.raises(DataFileError, match=r"dom\.npz: array 'domain' must hold two finite"):
        load_data(path)


# ---------------------------------------------------------------------------------------- IDX


def _idx(dims: tuple[int, ...], data: bytes = b"") -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data


def test_idx_declaring_a_huge_array_is_refused_from_its_header(tmp_path: Path) -> None:
    images = tmp_path / "t-images-idx3-ubyte"
    images.write_bytes(_idx((100_000, 100_000, 100)))
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(_idx((100_000,)))
    with pytest.raises(DataFileError, match=r"t-images-idx3-ubyte: data of shape .* needs"):
        load_data(images)


def test_idx_gzip_bomb_is_inflated_only_to_its_declared_size(tmp_path: Path) -> None:
    images = tmp_path / "t-images-idx3-ubyte.gz"
    # declares 2 images of 2x2 but inflates to 64 MB: read stops after 5 data bytes
    with gzip.open(images, "wb") as fh:
        fh.write(_idx((2, 2, 2), b"\x00" * 64 * 2**20))
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(_idx((2,), b"\x00\x01"))
    with pytest.raises(DataFileError, match=r"has trailing bytes.*the file has more"):
        load_data(images)


def test_idx_gzip_declaring_more_than_the_limit_is_refused(tmp_path: Path) -> None:
    images = tmp_path / "t-images-idx3-ubyte.gz"
    with gzip.open(images, "wb") as fh:
        fh.write(_idx((60_000, 28, 28), b"\x00" * 60_000 * 784))
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(_idx((60_000,), b"\x00" * 60_000))
    with (
        limits.override(max_array_bytes=2**20),
        pytest.raises(DataFileError, match=r"images-idx3-ubyte\.gz: data of shape \(60000, 28"),
    ):
        load_data(images)


# -------------------------------------------------------------------------------------- CIFAR


def test_cifar_sparse_30_gb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    with path.open("wb") as fh:
        fh.truncate(3073 * 10_000_000)  # sparse: 30.7 GB declared, no disk used
    with pytest.raises(DataFileError, match=r"data_batch_1\.bin: the batches needs .*max_array"):
        load_data(path)


def test_cifar_non_utf8_class_list_names_the_meta_file(tmp_path: Path) -> None:
    (tmp_path / "test_batch.bin").write_bytes(bytes(3073 * 2))
    (tmp_path / "batches.meta.txt").write_bytes(b"cat\n\xff\xfedog\n")
    with pytest.raises(DataFileError, match=r"batches\.meta\.txt: is not UTF-8 text"):
        load_data(tmp_path)


# -------------------------------------------------------------------------------- image folder


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk declaring width x height, and IEND (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [30_000, 9_000])
def test_png_claiming_a_huge_size_is_refused_from_its_header(tmp_path: Path, side: int) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "big.png").write_bytes(_png_header(side, side))
    with pytest.raises(DataFileError, match=r"big\.png: "):
        load_data(tmp_path)


def test_image_folder_whose_images_together_exceed_the_limit_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (64, 64)).save(tmp_path / cls / f"{i}.png")
    with (
        limits.override(max_array_bytes=50_000),
        pytest.raises(DataFileError, match=r"6 images of 64x64x1 as float32 needs 98,304"),
    ):
        load_data(tmp_path)


def test_image_folder_symlink_loop_does_not_hang_and_symlinked_non_image_is_named(
    tmp_path: Path,
) -> None:
    from PIL import Image

    (tmp_path / "cat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "cat" / "1.png")
    (tmp_path / "cat" / "loop").symlink_to(tmp_path / "cat")
    data = load_data(tmp_path)
    assert data.ids == ["cat/1.png"]
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("not an image")
    (tmp_path / "cat" / "2.png").symlink_to(secret)
    with pytest.raises(DataFileError, match=r"2\.png: is not a readable image"):
        load_data(tmp_path)


# ---------------------------------------------------------------------------------------- CSV


def test_csv_over_the_text_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,label\n" + "1,0\n" * 1000)
    with (
        limits.override(max_text_bytes=1000),
        pytest.raises(DataFileError, match=r"big\.csv: the CSV file needs .*max_text_bytes"),
    ):
        load_data(path)


def test_csv_with_a_hundred_thousand_columns_loads(tmp_path: Path) -> None:
    cols = 100_000
    path = tmp_path / "wide.csv"
    header = ",".join(f"f{i}" for i in range(cols)) + ",label\n"
    path.write_text(header + ",".join(["0.5"] * cols) + ",1\n")
    data = load_data(path)
    assert data.x.shape == (1, cols)


# ------------------------------------------------------------------------------------- limits


def test_limits_can_be_raised_from_the_environment() -> None:
    raised = limits.Limits.from_env({"EDGEPROOF_MAX_CLASSES": "2_000_000"})
    assert raised.max_classes == 2_000_000


def test_limit_environment_variable_that_is_not_a_number_names_the_variable() -> None:
    with pytest.raises(UserError, match=r"EDGEPROOF_MAX_CLASSES: 'many' is not an integer"):
        limits.Limits.from_env({"EDGEPROOF_MAX_CLASSES": "many"})

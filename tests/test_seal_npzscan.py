"""The one-pass ``.npz`` reader gives exactly what the straightforward reading gives; what it
leaves to ``load_data`` still seals and verifies; seals are read and written as before."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeproof.errors import DataError, DataFileError
from edgeproof.integrity.dataset_items import dataset_item, load_dataset, npz_item
from edgeproof.integrity.merkle import leaf_hash
from edgeproof.integrity.records import record_leaf, record_leaf_hashes
from edgeproof.integrity.seal import (
    Seal,
    SealFileError,
    load_schema,
    seal_paths,
    verify_seal,
)

LOADER = {"x_key": "x", "y_key": "y", "label_column": "label"}


def _slow(path: Path, loader: dict[str, str]) -> Any:
    """The straightforward reading: ``load_data``, then the file, members and records hashed."""
    return dataset_item(path.name, str(path), loader, load_dataset(str(path), loader))


def _x_offsets(path: Path) -> tuple[int, int]:
    """(first byte of the x array's data in the file, bytes per record)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
    raw = path.read_bytes()
    n, m = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + n + m
    assert raw[start : start + 6] == b"\x93NUMPY"
    (hlen,) = struct.unpack("<H", raw[start + 8 : start + 10])
    x = np.load(path)["x"]
    return start + 10 + hlen, x[0].nbytes


rng = np.random.default_rng(0)
LAYOUTS: dict[str, dict[str, Any]] = {
    "tabular f32": {"x": rng.random((30, 6), dtype=np.float32), "y": np.arange(30) % 3},
    "HW images": {"x": rng.random((12, 5, 7), dtype=np.float32), "y": np.arange(12) % 2},
    "CHW images": {"x": rng.random((9, 1, 4, 4), dtype=np.float32), "y": np.arange(9) % 3},
    "uint8 images (scaled)": {
        "x": rng.integers(0, 256, (10, 6, 6), dtype=np.uint8),
        "y": np.arange(10) % 2,
    },
    "float64": {"x": rng.random((8, 5)), "y": np.arange(8) % 2},
    "big-endian f32": {"x": rng.random((8, 5)).astype(">f4"), "y": np.arange(8) % 2},
    "int16 tabular": {"x": rng.integers(-50, 50, (7, 3), dtype=np.int16), "y": np.zeros(7, int)},
    "HWC images (transposed)": {
        "x": rng.random((6, 8, 8, 3), dtype=np.float32),
        "y": np.arange(6) % 2,
    },
    "HW1 images": {"x": rng.random((6, 8, 8, 1), dtype=np.float32), "y": np.arange(6) % 2},
    "string labels": {
        "x": rng.random((6, 4), dtype=np.float32),
        "y": np.array(["cat", "dog", "cat", "emu", "dog", "cat"]),
    },
    "classes, kind, domain, extra": {
        "x": rng.random((5, 2, 9), dtype=np.float32),
        "y": np.arange(5) % 2,
        "classes": np.array(["normal", "ñ-abnormal"]),
        "kind": np.array("timeseries"),
        "domain": np.array([-1.0, 1.0]),
        "unused": np.arange(4),
    },
    "records larger than a block": {
        "x": rng.random((3, 300_000), dtype=np.float32),
        "y": np.arange(3) % 2,
    },
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_one_pass_reader_gives_the_straightforward_digests(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **LAYOUTS[layout])
    fast = npz_item(path.name, str(path), LOADER)
    assert fast is not None, "a stored npz takes the one-pass reader"
    assert fast == _slow(path, LOADER)


def test_loader_kind_option_is_honoured_like_load_data(tmp_path: Path) -> None:
    path = tmp_path / "ts.npz"
    np.savez(path, x=rng.random((6, 3, 20), dtype=np.float32), y=np.arange(6) % 2)
    loader = {**LOADER, "kind": "timeseries"}
    fast = npz_item(path.name, str(path), loader)
    assert fast is not None and fast.input_kind == "timeseries"
    assert fast == _slow(path, loader)
    # a kind that does not fit is refused, by load_data's own error
    np.savez(path, x=rng.random((6, 3, 20, 2), dtype=np.float32), y=np.arange(6) % 2)
    with pytest.raises(DataError, match="kind 'timeseries' needs records"):
        seal_paths([path], base_dir=tmp_path, loader=loader)


def test_compressed_and_fortran_npz_take_the_straightforward_path(tmp_path: Path) -> None:
    x, y = rng.random((20, 6), dtype=np.float32), np.arange(20) % 4
    comp = tmp_path / "c.npz"
    np.savez_compressed(comp, x=x, y=y)
    fort = tmp_path / "f.npz"
    np.savez(fort, x=np.asfortranarray(x), y=y)
    for path in (comp, fort):
        assert npz_item(path.name, str(path), LOADER) is None
        seal = seal_paths([path], base_dir=tmp_path, loader=LOADER, threads=1)
        assert seal.items[0] == _slow(path, LOADER)
        assert verify_seal(seal, base_dir=tmp_path).ok
    # the same data gives the same records, stored or compressed
    stored = tmp_path / "s.npz"
    np.savez(stored, x=x, y=y)
    a = seal_paths([stored], base_dir=tmp_path, loader=LOADER).items[0]
    b = seal_paths([comp], base_dir=tmp_path, loader=LOADER).items[0]
    assert a.content_sha256 == b.content_sha256  # type: ignore[union-attr]


def test_a_re_saved_record_change_is_named_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "val.npz"
    x, y = rng.random((40, 1, 6, 6), dtype=np.float32), np.arange(40) % 4
    np.savez(path, x=x, y=y)
    seal = seal_paths([path], base_dir=tmp_path, loader=LOADER)
    x[17, 0, 2, 3] += 0.5
    np.savez(path, x=x, y=y)  # a consistent archive: new CRC, one record changed
    result = verify_seal(seal, base_dir=tmp_path)
    assert not result.ok
    assert [r.record_id for r in result.items[0].records] == ["val.npz#17"]
    assert "record 'val.npz#17' content changed" in "\n".join(result.messages())
    assert any("source 'val.npz:x.npy' changed" in m for m in result.messages())


def test_a_flipped_byte_is_detected_and_its_archive_refused_by_crc(tmp_path: Path) -> None:
    path = tmp_path / "val.npz"
    np.savez(path, x=rng.random((40, 6), dtype=np.float32), y=np.arange(40) % 4)
    seal = seal_paths([path], base_dir=tmp_path, loader=LOADER)
    start, row = _x_offsets(path)
    raw = bytearray(path.read_bytes())
    raw[start + 17 * row + 5] ^= 0x10
    path.write_bytes(bytes(raw))
    # the CRC is checked even though a sealed digest was offered (the file's digest differs)
    sealed = seal.items[0].sources[0].sha256  # type: ignore[union-attr]
    assert npz_item(path.name, str(path), LOADER, sealed) is None
    result = verify_seal(seal, base_dir=tmp_path)
    assert not result.ok
    text = "\n".join(result.messages())
    assert "can no longer be read" in text and "CRC" in text
    assert "source 'val.npz:x.npy' changed" in text
    with pytest.raises(DataFileError, match="CRC"):  # and such an archive is not sealed
        seal_paths([path], base_dir=tmp_path, loader=LOADER)


def test_nan_inputs_are_refused_with_load_datas_message(tmp_path: Path) -> None:
    path = tmp_path / "nan.npz"
    x = rng.random((10, 3), dtype=np.float32)
    x[4, 1] = np.nan
    np.savez(path, x=x, y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"1 record\(s\) contain NaN or Inf \(first: nan.npz#4\)"):
        seal_paths([path], base_dir=tmp_path, loader=LOADER)


def test_record_leaf_hashes_are_the_leaf_hashes_of_record_leaves() -> None:
    ids = ["a#0", "ñ/é#1", "x" * 300, ""]
    digests = [bytes([i]) * 32 for i in range(4)]
    labels = [0, 2, 1, 2]
    classes = ["zero", "dos", "трёх"]
    want = [leaf_hash(record_leaf(r, d, classes[lab])) for r, d, lab in zip(ids, digests, labels)]
    assert record_leaf_hashes(ids, digests, labels, classes) == want
    odd = [*digests[:3], b"short"]
    want_odd = [leaf_hash(record_leaf(r, d, classes[lab])) for r, d, lab in zip(ids, odd, labels)]
    assert record_leaf_hashes(ids, odd, labels, classes) == want_odd


def test_written_seals_match_the_full_schema(tmp_path: Path) -> None:
    import jsonschema
    from safetensors.numpy import save_file

    save_file({"w": rng.random((64, 70), dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    np.savez(tmp_path / "d.npz", x=rng.random((5, 3), dtype=np.float32), y=np.arange(5) % 2)
    (tmp_path / "f.bin").write_bytes(b"abc" * 5000)
    seal = seal_paths(
        [tmp_path / "m.safetensors", tmp_path / "d.npz", tmp_path / "f.bin"],
        base_dir=tmp_path,
        loader=LOADER,
        chunk_size=4096,
    )
    out = seal.write(tmp_path / "s.seal.json")
    obj = json.loads(out.read_text())
    jsonschema.validate(obj, load_schema())  # every entry, not only the first two
    assert {it["kind"] for it in obj["items"]} == {"model", "dataset", "file"}
    assert Seal.read(out) == seal


def test_reading_refuses_nesting_hidden_in_a_digest_list(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=rng.random((5, 3), dtype=np.float32), y=np.arange(5) % 2)
    out = seal_paths([tmp_path / "d.npz"], base_dir=tmp_path, loader=LOADER).write(
        tmp_path / "s.seal.json"
    )
    obj = json.loads(out.read_text())
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    obj["items"][0]["records"]["ids"][3] = deep
    out.write_text(json.dumps(obj))
    with pytest.raises(SealFileError, match="nested more than 64 levels deep"):
        Seal.read(out)
    out.write_text(out.read_text().replace('"bytes":', '"bytes":NaN,"x":', 1))
    with pytest.raises(SealFileError, match="not valid JSON"):
        Seal.read(out)


def test_seal_and_verify_commands_import_no_heavy_module(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": rng.random((8, 8), dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    np.savez(tmp_path / "d.npz", x=rng.random((5, 3), dtype=np.float32), y=np.arange(5) % 2)
    seal = tmp_path / "s.seal.json"
    probe = (
        "import sys\nfrom edgeproof.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "heavy = {'torch', 'onnx', 'onnxruntime', 'jsonschema', 'cryptography'}\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )

    def loaded(*argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return out.stdout.strip().splitlines()[-1]

    sealed = [str(tmp_path / "m.safetensors"), str(tmp_path / "d.npz")]
    assert loaded("seal", *sealed, "--out", str(seal)) == "0 []"
    assert loaded("verify", str(seal)) == "0 ['jsonschema']"  # a seal read is schema-checked

"""Seals: untouched copies verify; every change is detected and localised; bad input is named."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from edgeproof.integrity.chunks import digest_blob, locate_single_word_change
from edgeproof.integrity.guard import WeightGuard, WeightTamperError
from edgeproof.integrity.merkle import leaf_hash, merkle_root
from edgeproof.integrity.proof import prove, verify_proof
from edgeproof.integrity.records import encode_leaf, record_leaf
from edgeproof.integrity.seal import (
    Seal,
    SealFileError,
    model_item_from_weights,
    seal_paths,
    verify_seal,
)
from edgeproof.integrity.signing import generate_key, load_private_key, load_public_key

CHUNK = 4096


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))


def _safetensors_offsets(path: Path) -> tuple[int, dict[str, list[int]]]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return 8 + n, {k: v["data_offsets"] for k, v in header.items() if k != "__metadata__"}


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    """A folder with a model, an npz dataset and a raw file, sealed into seal.json."""
    save_file(
        {k: v.contiguous() for k, v in _model().state_dict().items()},
        str(tmp_path / "model.safetensors"),
        metadata={"arch": "mlp"},
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", x=rng.random((20, 6), dtype=np.float32), y=np.arange(20) % 3)
    (tmp_path / "notes.txt").write_bytes(bytes(range(256)) * 40)
    seal = seal_paths(
        [tmp_path / "model.safetensors", tmp_path / "val.npz", tmp_path / "notes.txt"],
        base_dir=tmp_path,
        chunk_size=CHUNK,
        threads=2,
    )
    seal.write(tmp_path / "seal.json")
    return tmp_path


def _verify(folder: Path, **kw: Any) -> object:
    return verify_seal(Seal.read(folder / "seal.json"), base_dir=folder, threads=1, **kw)


def _flip_bit(path: Path, byte: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_untouched_copy_verifies_and_seal_is_deterministic(
    release: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy = tmp_path_factory.mktemp("copy") / "r"
    shutil.copytree(release, copy)
    result = _verify(copy)
    assert result.ok and result.messages() == []  # type: ignore[attr-defined]
    again = seal_paths(
        [copy / "model.safetensors", copy / "val.npz", copy / "notes.txt"],
        base_dir=copy,
        chunk_size=CHUNK,
        threads=1,
    )
    assert again.root == Seal.read(release / "seal.json").root


def test_sign_bit_flip_in_weights_names_tensor_element_and_bit(release: Path) -> None:
    path = release / "model.safetensors"
    base, offsets = _safetensors_offsets(path)
    before = load_tensor(path, "2.weight").reshape(-1)[7].item()
    _flip_bit(path, base + offsets["2.weight"][0] + 7 * 4 + 3, 7)  # element 7, bit 31
    result = _verify(release)
    assert not result.ok  # type: ignore[attr-defined]
    (item,) = [i for i in result.items if not i.ok]  # type: ignore[attr-defined]
    (region,) = item.regions
    (flip,) = region.flips
    assert (region.tensor, flip.element, flip.bit, flip.role) == ("2.weight", 7, 31, "sign")
    assert flip.old_value == pytest.approx(before) and flip.new_value == pytest.approx(-before)
    assert "tensor '2.weight' element 7 [0, 7] bit 31 (sign) flipped" in region.message()


def load_tensor(path: Path, name: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.get_tensor(name)


def test_multi_word_change_reports_element_range(release: Path) -> None:
    path = release / "model.safetensors"
    base, offsets = _safetensors_offsets(path)
    data = bytearray(path.read_bytes())
    start = base + offsets["0.weight"][0]
    data[start + 4100 : start + 4120] = bytes(20)  # elements 1025..1029, in chunk 1
    path.write_bytes(bytes(data))
    (region,) = [r for i in _verify(release).items for r in i.regions]  # type: ignore[attr-defined]
    assert region.chunk == 1 and region.flips == ()
    assert region.element_range == (1024, 2048)
    assert "elements 1024–2047 changed" in region.message()


def test_label_flip_is_reported_as_label_only(release: Path) -> None:
    with np.load(release / "val.npz") as f:
        x, y = f["x"], f["y"].copy()
    y[4] = (y[4] + 1) % 3
    np.savez(release / "val.npz", x=x, y=y)
    (change,) = [c for i in _verify(release).items for c in i.records]  # type: ignore[attr-defined]
    assert (change.record_id, change.change, change.old_label, change.new_label) == (
        "val.npz#4",
        "label",
        "1",
        "2",
    )
    assert "label changed '1' → '2' (content unchanged)" in change.message()


def test_swapped_records_are_detected_and_point_at_each_other(release: Path) -> None:
    with np.load(release / "val.npz") as f:
        x, y = f["x"].copy(), f["y"].copy()
    x[[2, 9]], y[[2, 9]] = x[[9, 2]], y[[9, 2]]
    np.savez(release / "val.npz", x=x, y=y)
    changes = {
        c.record_id: c
        for i in _verify(release).items  # type: ignore[attr-defined]
        for c in i.records
    }
    assert set(changes) == {"val.npz#2", "val.npz#9"}
    assert changes["val.npz#2"].same_as == "val.npz#9"
    assert changes["val.npz#9"].same_as == "val.npz#2"


def test_raw_file_byte_change_names_byte_and_bit(release: Path) -> None:
    _flip_bit(release / "notes.txt", 5000, 2)
    (region,) = [r for i in _verify(release).items for r in i.regions]  # type: ignore[attr-defined]
    (flip,) = region.flips
    assert (flip.byte, flip.bit, flip.element) == (5000, 2, None)


def test_unknown_schema_version_is_rejected_with_versions_named(release: Path) -> None:
    obj = json.loads((release / "seal.json").read_text())
    obj["schema_version"] = "9.9"
    (release / "seal.json").write_text(json.dumps(obj))
    with pytest.raises(
        SealFileError,
        match=r"seal schema version '9.9' is not supported .*reads "
        r"2.0.*re-seal with this version",
    ):
        Seal.read(release / "seal.json")


def test_hand_edited_digest_is_rejected(release: Path) -> None:
    obj = json.loads((release / "seal.json").read_text())
    obj["items"][1]["records"]["labels"][0] = 2
    (release / "seal.json").write_text(json.dumps(obj))
    with pytest.raises(SealFileError, match="the seal was edited after sealing"):
        Seal.read(release / "seal.json")


def test_vanished_or_unreadable_sealed_path_is_a_verification_failure(release: Path) -> None:
    (release / "notes.txt").unlink()
    result = _verify(release)
    assert not result.ok  # type: ignore[attr-defined]
    assert "notes.txt: was sealed as a file (raw) but no longer exists" in result.messages()  # type: ignore[attr-defined]
    (release / "notes.txt").write_bytes(bytes(range(256)) * 40)
    (release / "model.safetensors").write_bytes(b"PK\x03\x04 not a safetensors file")
    result = _verify(release)
    assert not result.ok  # type: ignore[attr-defined]
    assert any(
        "was sealed as a safetensors model but can no longer be read as one" in m
        for m in result.messages()  # type: ignore[attr-defined]
    )


def test_signature_valid_other_key_and_tampered(release: Path) -> None:
    k1, p1 = generate_key(release / "a.key")
    _, p2 = generate_key(release / "b.key")
    seal = Seal.read(release / "seal.json").signed(load_private_key(k1))
    seal.write(release / "seal.json")
    assert _verify(release, public_key=load_public_key(p1)).signature.status == "valid"  # type: ignore[attr-defined]
    other = _verify(release, public_key=load_public_key(p2))
    assert other.signature.status == "wrong-key" and not other.ok  # type: ignore[attr-defined]
    assert "signed by ANOTHER KEY" in other.messages()[0]  # type: ignore[attr-defined]
    obj = json.loads((release / "seal.json").read_text())
    obj["signature"]["value"] = ("00" if obj["signature"]["value"][:2] != "00" else "11") + obj[
        "signature"
    ]["value"][2:]
    (release / "seal.json").write_text(json.dumps(obj))
    result = _verify(release)
    assert result.signature.status == "invalid" and not result.ok  # type: ignore[attr-defined]


def test_record_proof_verifies_alone_and_rejects_a_relabel(release: Path) -> None:
    seal = Seal.read(release / "seal.json")
    proof = prove(seal, "val.npz#4")
    assert verify_proof(proof).ok
    forged = type(proof)(**{**proof.__dict__, "leaf": {**proof.leaf, "label": "0"}})
    check = verify_proof(forged)
    assert not check.ok and "audit path does not lead" in check.reason
    assert verify_proof(prove(seal, "2.weight#0")).ok


# ------------------------------------------------------------------- properties and campaign


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=3 * CHUNK), st.data())
def test_any_single_bit_change_is_localised_exactly(blob: bytes, data: st.DataObject) -> None:
    sealed = digest_blob(blob, CHUNK)
    pos = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    changed = bytearray(blob)
    changed[pos] ^= 1 << bit
    now = digest_blob(bytes(changed), CHUNK)
    diff = [i for i, (a, b) in enumerate(zip(sealed, now)) if a.sha256 != b.sha256]
    assert diff == [pos // CHUNK]
    i = diff[0]
    located = locate_single_word_change(
        bytes(changed[i * CHUNK : (i + 1) * CHUNK]), sealed[i], i * CHUNK
    )
    assert located is not None and [(c.byte, c.bit) for c in located] == [(pos, bit)]


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=2 * CHUNK), st.data())
def test_any_single_byte_change_is_localised_exactly(blob: bytes, data: st.DataObject) -> None:
    sealed = digest_blob(blob, CHUNK)
    pos = data.draw(st.integers(0, len(blob) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != blob[pos]))
    changed = bytearray(blob)
    changed[pos] = value
    i = pos // CHUNK
    located = locate_single_word_change(
        bytes(changed[i * CHUNK : (i + 1) * CHUNK]), sealed[i], i * CHUNK
    )
    assert located is not None and {c.byte for c in located} == {pos}


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(8)))
def test_any_reordering_of_records_changes_the_root(order: list[int]) -> None:
    leaves = [record_leaf(f"r{i}", bytes([i]) * 32, "a") for i in range(8)]
    root = merkle_root([leaf_hash(x) for x in leaves])
    moved = merkle_root([leaf_hash(leaves[i]) for i in order])
    assert (moved == root) == (list(order) == list(range(8)))


def test_randomized_flip_campaign_detects_all_1000_flips_without_false_alarms() -> None:
    module = _model()
    guard = WeightGuard(
        module,
        model_item_from_weights(module.state_dict(), chunk_size=CHUNK, threads=1),
        chunk_size=CHUNK,
    )
    params = {k: v for k, v in module.state_dict().items()}
    names = sorted(params)
    rng = np.random.default_rng(1)
    detected = localised = false_alarms = 0
    for _ in range(1000):
        name = names[rng.integers(len(names))]
        flat = params[name].view(-1).view(torch.int32)
        element, bit = int(rng.integers(flat.numel())), int(rng.integers(32))
        flat[element] ^= (1 << bit) if bit < 31 else -(2**31)
        report = guard.check()
        detected += not report.ok
        flips = [(r.tensor, f.element, f.bit) for r in report.regions for f in r.flips]
        localised += flips == [(name, element, bit)]
        flat[element] ^= (1 << bit) if bit < 31 else -(2**31)
        false_alarms += not guard.check().ok
    assert (detected, localised, false_alarms) == (1000, 1000, 0)


def test_guard_pre_hook_blocks_forward_after_a_flip_and_protect_set_limits_hashing() -> None:
    module = _model()
    first = module.get_submodule("0")
    assert isinstance(first, torch.nn.Linear)
    item = model_item_from_weights(module.state_dict(), chunk_size=CHUNK, threads=1)
    guard = WeightGuard(
        module, item, chunk_size=CHUNK, protect={"tensors": [{"name": "0.weight", "index": [3, 5]}]}
    )
    assert guard.check().chunks_checked == 1
    x = torch.zeros(1, 64)
    with guard:
        module(x)
        with torch.no_grad():
            first.weight[3, 5] *= -1
        with pytest.raises(
            WeightTamperError,
            match=r"tensor '0.weight' element 197 \[3, 5\] "
            r"bit 31 \(sign\) flipped",
        ):
            module(x)
    assert guard.mean_check_seconds > 0
    module(x)  # detached: no check


@pytest.mark.parametrize(
    ("record_id", "label"), [("r1", "cat"), ("üü", ""), ("val.npz#49999", "9"), ("", "x" * 300)]
)
def test_the_record_leaf_is_the_generic_leaf_encoding(record_id: str, label: str) -> None:
    """record_leaf writes its bytes directly (it runs once per record); they must be exactly
    encode_leaf's, or every seal's root would change."""
    digest = bytes(range(32))
    assert record_leaf(record_id, digest, label) == encode_leaf(
        "edgeproof/record/1", record_id, digest, label
    )


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5, 5 * 1024 * 1024 + 7])
def test_chunk_sha256s_are_the_digest_blob_sha256s_with_and_without_a_pool(size: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from edgeproof.integrity.chunks import chunk_sha256s

    blob = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    want = [d.sha256 for d in digest_blob(blob, CHUNK)]
    assert chunk_sha256s(blob, CHUNK) == want
    with ThreadPoolExecutor(2) as pool:
        assert chunk_sha256s(blob, CHUNK, pool) == want


@pytest.mark.parametrize("chunk_size", [4094, 2048, 512 * 1024])
def test_chunk_sha256s_refuses_the_chunk_sizes_digest_blob_refuses(chunk_size: int) -> None:
    from edgeproof.integrity.chunks import chunk_sha256s

    for digest in (digest_blob, chunk_sha256s):
        with pytest.raises(ValueError, match=f"chunk size {chunk_size} must be a multiple of 4"):
            digest(b"x" * 10_000, chunk_size)


def test_an_unchanged_release_verifies_from_file_and_chunk_digests_alone(
    release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing changed: the npz is checked by its file digest (its records are not read again)
    and the model by its chunks' SHA-256 (no syndromes); a change still takes the full path."""
    import edgeproof.integrity.verify as verify_mod

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the detailed path ran for an unchanged item")

    with monkeypatch.context() as m:
        m.setattr(verify_mod, "npz_item", must_not_run)
        m.setattr(verify_mod, "model_item", must_not_run)
        assert _verify(release).ok  # type: ignore[attr-defined]
    _flip_bit(release / "val.npz", (release / "val.npz").stat().st_size // 2, 3)
    result = _verify(release)
    assert not result.ok  # type: ignore[attr-defined]

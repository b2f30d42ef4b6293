"""Seals commit everything that decides what an audit reads; no tampering verifies as clean.

Each test tampers the way the hostile corpus did — relabel data and point the seal's loader at
the originals, widen an npz ``domain``, swap a sidecar, strip or replace the signature, hand the
verifier a seal naming ``/etc/passwd`` — and checks the result is a failed verification (or a
refusal), never ``ok``. See docs/security.md ("Seals").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from edgeproof.errors import ModelFileError, OptionError
from edgeproof.integrity.proof import InclusionProof, ProofFileError, prove
from edgeproof.integrity.seal import (
    Seal,
    SealedPathError,
    SealFileError,
    VerifyResult,
    seal_paths,
    verify_seal,
)
from edgeproof.integrity.signing import generate_key, load_private_key, load_public_key

CHUNK = 4096


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "val.npz",
        x=rng.random((40, 5), dtype=np.float32),
        y=np.arange(40) % 4,
        domain=np.array([0.0, 1.0]),
    )
    torch.manual_seed(0)
    save_file({"w": torch.randn(8, 5)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "model.json").write_text(
        json.dumps({"format": "edgeproof-model", "version": 1, "arch": None})
    )
    (tmp_path / "notes.bin").write_bytes(bytes(range(256)) * 20)
    key, _ = generate_key(tmp_path / "k")
    seal = seal_paths(
        [tmp_path / "val.npz", tmp_path / "model.safetensors", tmp_path / "notes.bin"],
        base_dir=tmp_path,
        chunk_size=CHUNK,
        threads=1,
        loader={"x_key": "x", "y_key": "y"},
        key=load_private_key(key),
    )
    seal.write(tmp_path / "seal.json")
    return tmp_path


def _verify(folder: Path, *, pinned: bool = True, allow_outside: bool = False) -> VerifyResult:
    pub = load_public_key(folder / "k.pub") if pinned else None
    return verify_seal(
        Seal.read(folder / "seal.json"),
        base_dir=folder,
        public_key=pub,
        threads=1,
        allow_outside=allow_outside,
    )


def _resign(folder: Path, edit: object) -> None:
    """Rewrite the seal with ``edit(seal) -> seal`` applied and the roots recomputed."""
    seal = Seal.read(folder / "seal.json")
    new = edit(seal)  # type: ignore[operator]
    dataclasses.replace(new, signature=None).write(folder / "seal.json")


def test_untouched_release_verifies(release: Path) -> None:
    assert _verify(release).ok


def test_relabel_with_originals_kept_and_loader_pointed_at_them_fails_verification(
    release: Path,
) -> None:
    with np.load(release / "val.npz") as f:
        arrays = dict(f)
    y = arrays["y"].copy()
    y[:20] = (y[:20] + 1) % 4
    np.savez(release / "val.npz", **{**arrays, "y": y, "y_orig": arrays["y"]})
    # the attacker edits the signed seal to read y_orig: the stored roots no longer match
    original = (release / "seal.json").read_text()
    obj = json.loads(original)
    obj["items"][0]["loader"]["y_key"] = "y_orig"
    (release / "seal.json").write_text(json.dumps(obj))
    with pytest.raises(SealFileError, match="the seal was edited after sealing"):
        Seal.read(release / "seal.json")
    (release / "seal.json").write_text(original)
    # and re-computing the roots of the edited seal strips the signature: still a failure
    _resign(
        release,
        lambda s: dataclasses.replace(
            s,
            items=(
                dataclasses.replace(s.items[0], loader={"x_key": "x", "y_key": "y_orig"}),
                *s.items[1:],
            ),
        ),
    )
    result = _verify(release)
    assert not result.ok and result.signature.status == "missing"


def test_relabelled_npz_with_extra_member_names_the_members_and_records(release: Path) -> None:
    with np.load(release / "val.npz") as f:
        arrays = dict(f)
    y = arrays["y"].copy()
    y[:20] = (y[:20] + 1) % 4
    np.savez(release / "val.npz", **{**arrays, "y": y, "y_orig": arrays["y"]})
    result = _verify(release)
    msgs = result.messages()
    assert not result.ok
    assert any("source 'val.npz:y_orig.npy' was added" in m for m in msgs)
    assert any("source 'val.npz:y.npy' changed" in m for m in msgs)
    assert sum("label changed" in m for m in msgs) == 20


def test_widened_npz_domain_fails_verification_and_is_named(release: Path) -> None:
    with np.load(release / "val.npz") as f:
        arrays = dict(f)
    np.savez(release / "val.npz", **{**arrays, "domain": np.array([0.0, 1000.0])})
    result = _verify(release)
    assert not result.ok
    assert any("value domain changed (0.0, 1.0) → (0.0, 1000.0)" in m for m in result.messages())


def test_edited_model_sidecar_fails_verification(release: Path) -> None:
    side = release / "model.json"
    side.write_text(side.read_text().replace('"arch": null', '"arch": "zoo:mlp"'))
    result = _verify(release)
    assert not result.ok
    assert any("model metadata 'sidecar model.json' changed" in m for m in result.messages())


def test_sidecar_added_after_sealing_fails_verification(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(3)}, str(tmp_path / "m.safetensors"))
    seal_paths([tmp_path / "m.safetensors"], base_dir=tmp_path, threads=1).write(
        tmp_path / "s.json"
    )
    (tmp_path / "m.json").write_text('{"format": "edgeproof-model", "version": 1}')
    result = verify_seal(Seal.read(tmp_path / "s.json"), base_dir=tmp_path, threads=1)
    assert not result.ok


def test_signature_by_another_key_is_a_verification_failure(release: Path) -> None:
    _, other = generate_key(release / "other")
    result = verify_seal(
        Seal.read(release / "seal.json"),
        base_dir=release,
        public_key=load_public_key(other),
        threads=1,
    )
    assert not result.ok and result.signature.status == "wrong-key"


def test_stripped_signature_with_a_pinned_key_is_a_verification_failure(release: Path) -> None:
    obj = json.loads((release / "seal.json").read_text())
    obj["signature"] = None
    (release / "seal.json").write_text(json.dumps(obj))
    result = _verify(release)
    assert not result.ok and result.signature.status == "missing"
    assert "NOT SIGNED" in result.messages()[0]


def test_seal_naming_an_absolute_path_is_refused_not_read(release: Path) -> None:
    def edit(seal: Seal) -> Seal:
        item = dataclasses.replace(seal.items[2], path="/etc/passwd")
        return dataclasses.replace(seal, items=(*seal.items[:2], item))

    _resign(release, edit)
    with pytest.raises(SealFileError, match=r"seal\.json: item path '/etc/passwd' leaves"):
        _verify(release, pinned=False)


def test_seal_path_escaping_with_dotdot_or_a_symlink_is_refused(release: Path) -> None:
    outside = release.parent / f"{release.name}-outside.bin"
    outside.write_bytes(b"secret")
    (release / "link.bin").symlink_to(outside)
    for path in (f"../{outside.name}", "link.bin"):

        def edit(seal: Seal, path: str = path) -> Seal:
            item = dataclasses.replace(seal.items[2], path=path)
            return dataclasses.replace(seal, items=(*seal.items[:2], item))

        _resign(release, edit)
        with pytest.raises(SealFileError, match="leaves the seal's folder"):
            _verify(release, pinned=False)
    assert _verify(release, pinned=False, allow_outside=True).items[2].path == "link.bin"


def test_sealing_a_path_outside_the_seal_folder_needs_allow_outside(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"x" * 100)
    out = tmp_path / "seals"
    out.mkdir()
    with pytest.raises(SealedPathError, match=r"data\.bin: is outside the seal's folder"):
        seal_paths([tmp_path / "data.bin"], base_dir=out, threads=1)
    seal = seal_paths([tmp_path / "data.bin"], base_dir=out, threads=1, allow_outside=True)
    assert seal.items[0].path == "../data.bin"


def test_raw_file_size_is_committed_under_the_roots(release: Path) -> None:
    obj = json.loads((release / "seal.json").read_text())
    obj["items"][2]["bytes"] += 1
    (release / "seal.json").write_text(json.dumps(obj))
    with pytest.raises(SealFileError, match="edited"):
        Seal.read(release / "seal.json")


def test_truncating_a_raw_file_to_a_chunk_boundary_fails_verification(release: Path) -> None:
    data = (release / "notes.bin").read_bytes()
    (release / "notes.bin").write_bytes(data[:CHUNK])
    assert not _verify(release).ok


def test_unknown_loader_option_is_refused_when_sealing_and_when_reading(
    release: Path, tmp_path: Path
) -> None:
    with pytest.raises(OptionError, match=r"loader: unknown dataset loader option 'allow_pickle'"):
        seal_paths([release / "val.npz"], base_dir=release, loader={"allow_pickle": "1"})
    obj = json.loads((release / "seal.json").read_text())
    obj["items"][0]["loader"]["allow_pickle"] = "1"
    (release / "seal.json").write_text(json.dumps(obj))
    with pytest.raises(SealFileError, match=r"seal\.json: "):
        Seal.read(release / "seal.json")


def test_seal_options_are_validated_as_library_parameters(release: Path) -> None:
    with pytest.raises(OptionError, match=r"^threads: -5 is out of range"):
        seal_paths([release / "notes.bin"], base_dir=release, threads=-5)
    with pytest.raises(OptionError, match=r"^chunk_size: "):
        seal_paths([release / "notes.bin"], base_dir=release, chunk_size=1000)
    with pytest.raises(OptionError, match=r"^threads: "):
        verify_seal(Seal.read(release / "seal.json"), base_dir=release, threads=0)


def test_complex_model_tensor_is_refused_with_the_tensor_named(tmp_path: Path) -> None:
    save_file({"z": torch.zeros(3, dtype=torch.complex64)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(ModelFileError, match=r"c\.safetensors: tensor 'z' has dtype C64"):
        seal_paths([tmp_path / "c.safetensors"], base_dir=tmp_path, threads=1)


def test_deeply_nested_seal_is_refused_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    with pytest.raises(SealFileError, match=r"s\.json: the seal is nested"):
        Seal.read(tmp_path / "s.json")


def test_record_proof_still_verifies_after_the_sources(release: Path) -> None:
    from edgeproof.integrity.proof import verify_proof

    seal = Seal.read(release / "seal.json")
    check = verify_proof(prove(seal, "val.npz#7"), load_public_key(release / "k.pub"))
    assert check.ok and check.signature == "valid"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda o: o["leaf"].pop("label"), "leaf.label"),
        (lambda o: o["leaf"].update(content_sha256="zz" * 32), "leaf.content_sha256"),
        (lambda o: o.update(audit_path=["00"]), "audit_path"),
        (lambda o: o.update(leaf_index=10**9), "leaf_index"),
        (lambda o: o.update(leaf_kind="exec"), "leaf_kind"),
        (lambda o: o["items"][0].update(root="x"), "item root"),
    ],
)
def test_malformed_proof_is_refused_with_the_file_named(
    release: Path, tmp_path: Path, edit: object, named: str
) -> None:
    proof = prove(Seal.read(release / "seal.json"), "val.npz#7")
    obj = proof.to_json()
    edit(obj)  # type: ignore[operator]
    (tmp_path / "p.json").write_text(json.dumps(obj))
    with pytest.raises(ProofFileError, match=rf"p\.json: is not a valid proof .*{named}"):
        InclusionProof.read(tmp_path / "p.json")


@pytest.mark.parametrize(
    "content",
    [
        b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
        b"\xff\xfe" * 10,
        b"A" * 100_000,
    ],
)
def test_malformed_key_file_is_one_line_naming_the_file(tmp_path: Path, content: bytes) -> None:
    from edgeproof.integrity.signing import KeyFileError

    path = tmp_path / "bad.pub"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=r"bad\.pub: ") as err:
        load_public_key(path)
    assert "\n" not in str(err.value)
    with pytest.raises(KeyFileError, match=r"bad\.pub: "):
        load_private_key(path)

"""The integrity subcommands: exit codes and the lines a user reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli import build_parser
from edgeproof.errors import UserError


def run(*argv: str) -> int:
    """Run one command's handler (errors propagate, as the library raised them)."""
    args = build_parser().parse_args(list(argv))
    code: int = args.handler(args)
    return code


@pytest.fixture()
def sealed(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", x=rng.random((12, 4), dtype=np.float32), y=np.arange(12) % 2)
    (tmp_path / "w.bin").write_bytes(rng.bytes(10_000))
    assert run("keygen", "--out", str(tmp_path / "k")) == 0
    assert (
        run(
            "seal",
            str(tmp_path / "val.npz"),
            str(tmp_path / "w.bin"),
            "--out",
            str(tmp_path / "s.json"),
            "--key",
            str(tmp_path / "k"),
            "--threads",
            "1",
        )
        == 0
    )
    return tmp_path


def test_seal_then_verify_with_pinned_key_exits_0(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("verify", str(sealed / "s.json"), "--pub", str(sealed / "k.pub")) == 0
    out = capsys.readouterr().out
    assert "signature valid, by the expected key sha256:" in out
    assert "verified: everything matches the seal" in out


def test_verify_exits_1_and_names_the_changed_byte(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray((sealed / "w.bin").read_bytes())
    data[4321] ^= 0x10
    (sealed / "w.bin").write_bytes(bytes(data))
    assert run("verify", str(sealed / "s.json")) == 1
    out = capsys.readouterr().out
    assert "w.bin: byte 4321 bit 4 flipped" in out and "verification FAILED" in out


def test_verify_json_output_lists_record_changes(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(sealed / "val.npz") as f:
        x, y = f["x"], f["y"].copy()
    y[3] = 1 - y[3]
    np.savez(sealed / "val.npz", x=x, y=y)
    capsys.readouterr()
    assert run("verify", str(sealed / "s.json"), "--json") == 1
    obj = json.loads(capsys.readouterr().out)
    (rec,) = obj["items"][0]["records"]
    assert (rec["record_id"], rec["change"]) == ("val.npz#3", "label")


def test_verify_does_not_modify_any_file(sealed: Path) -> None:
    before = {p: p.read_bytes() for p in sealed.iterdir()}
    (sealed / "w.bin").write_bytes(b"changed")
    before[sealed / "w.bin"] = b"changed"
    assert run("verify", str(sealed / "s.json")) == 1
    assert {p: p.read_bytes() for p in sealed.iterdir()} == before


def test_prove_and_verify_proof_round_trip(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = sealed / "p.json"
    assert run("prove", str(sealed / "s.json"), "val.npz#5", "--out", str(proof)) == 0
    assert run("verify-proof", str(proof), "--pub", str(sealed / "k.pub")) == 0
    assert (
        "valid: leaf is included in the sealed item (signed by sha256:" in capsys.readouterr().out
    )
    obj = json.loads(proof.read_text())
    obj["leaf"]["label"] = "0" if obj["leaf"]["label"] != "0" else "1"
    proof.write_text(json.dumps(obj))
    assert run("verify-proof", str(proof)) == 1


def test_seal_signed_by_another_key_or_unsigned_fails_verification_with_exit_1(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("keygen", "--out", str(sealed / "other")) == 0
    assert run("verify", str(sealed / "s.json"), "--pub", str(sealed / "other.pub")) == 1
    assert "signed by ANOTHER KEY" in capsys.readouterr().out
    obj = json.loads((sealed / "s.json").read_text())
    obj["signature"] = None
    (sealed / "s.json").write_text(json.dumps(obj))
    assert run("verify", str(sealed / "s.json"), "--pub", str(sealed / "k.pub")) == 1
    assert "seal is NOT SIGNED" in capsys.readouterr().out


def test_unknown_record_and_existing_key_are_usage_errors(sealed: Path) -> None:
    with pytest.raises(UserError, match="'nope#1' is not a record id"):
        run("prove", str(sealed / "s.json"), "nope#1")
    with pytest.raises(UserError, match="already exists; refusing to overwrite a private key"):
        run("keygen", "--out", str(sealed / "k"))
    with pytest.raises(UserError, match="chunk_size: 1000 is not a multiple of 4") as exc:
        run("seal", str(sealed / "w.bin"), "--out", str(sealed / "t.json"), "--chunk-size", "1000")
    from edgeproof.cli.flags import render

    assert render(exc.value).startswith("--chunk-size: 1000 is not a multiple of 4")

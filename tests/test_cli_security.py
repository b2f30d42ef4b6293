"""The CLI keeps the security promises of docs/security.md: no --out that is, contains or
would replace an input (checked before anything is read, nothing lost), one trust flag, and
exit codes that mean what they say."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgeproof.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeproof: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["seal", "{model}", "--out", "{model}"],
        ["protect", "{model}", "--out", "{model}"],
        ["train", "--arch", "zoo:mlp", "--data", "{npz}", "--out", "{npz}"],
        ["audit", "{model}", "--out", "{parent}"],
        ["prove", "{seal}", "x.npz#0", "--out", "{seal}"],
    ],
)
def test_an_output_onto_an_input_is_refused_and_the_input_is_kept(
    argv: list[str],
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    import numpy as np

    model = tmp_path / "m.safetensors"
    shutil.copy(digits_model_path, model)
    shutil.copy(digits_model_path.with_suffix(".json"), tmp_path / "m.json")
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros((4, 8), np.float32), y=np.arange(4) % 2)
    seal = tmp_path / "s.json"
    assert main(["seal", str(npz), "--out", str(seal)]) == 0
    capsys.readouterr()
    before = {p: _digest(p) for p in (model, npz, seal)}
    values = {"model": model, "npz": npz, "parent": tmp_path, "seal": seal}
    code = main([a.format(**values) for a in argv])
    _one_line(code, capsys.readouterr().err, "--out")
    assert {p: _digest(p) for p in before} == before
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_a_sidecar_naming_code_is_refused_without_blaming_arch(
    digits_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    model = tmp_path / "m.safetensors"
    shutil.copy(digits_model_path, model)
    meta = json.loads(digits_model_path.with_suffix(".json").read_text())
    meta["arch"] = "os:getpid"
    (tmp_path / "m.json").write_text(json.dumps(meta))
    code = main(["audit", str(model), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    _one_line(code, err, "m.json")
    assert "--arch package.module:callable yourself" in err


def test_trust_code_and_its_old_name_are_the_same_flag() -> None:
    from edgeproof.cli import build_parser

    parser = build_parser()
    for flag in ("--trust-code", "--trust-pickle"):
        args = parser.parse_args(["audit", "m.pt", flag])
        assert args.trust_code or args.trust_pickle


def test_verify_with_another_key_is_a_verification_failure_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "w.bin"
    data.write_bytes(b"weights" * 100)
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    seal = tmp_path / "s.json"
    assert main(["seal", str(data), "--out", str(seal), "--key", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    assert main(["verify", str(seal), "--pub", str(tmp_path / "other.pub")]) == 1
    assert main(["verify", str(seal), "--pub", str(tmp_path / "k.pub")]) == 0

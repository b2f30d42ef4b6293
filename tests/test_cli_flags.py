"""The CLI/library seam: one table from library parameters to flags, and a start-up that loads
only what a command uses."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproof.cli import build_parser, main
from edgeproof.cli.flags import FLAGS, flag_of, render
from edgeproof.errors import OptionError, param

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeproof"
HEAVY = ("torch", "numpy", "scipy", "onnx", "onnxruntime", "matplotlib", "sklearn", "safetensors")

#: library modules whose messages still name flags (converted when the loaders are hardened)
_PENDING: tuple[str, ...] = ()


def _parser_flags() -> set[str]:
    flags: set[str] = set()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for p in sub.choices.values():  # type: ignore[union-attr]
        for action in p._actions:
            flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags


def test_every_flag_in_the_table_exists_in_a_parser() -> None:
    missing = {name: flag for name, flag in FLAGS.items() if flag not in _parser_flags()}
    assert not missing


def test_an_option_error_names_the_parameter_in_python_and_the_flag_on_the_cli() -> None:
    exc = OptionError("max_drop", "150% is outside [0%, 100%]", f"or raise {param('max_size')}")
    assert str(exc) == "max_drop: 150% is outside [0%, 100%]. or raise max_size"
    assert render(exc) == "--max-drop: 150% is outside [0%, 100%]. or raise --max-size"
    # a check setting is set with --set CHECK.SETTING=VALUE
    assert flag_of("adversarial.max_samples") == "--set adversarial.max_samples"


def _flag_strings_in_messages(path: Path) -> list[str]:
    """String parts of the arguments of ``*Error(...)`` calls that name a ``--flag``."""
    hits: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if not name.endswith("Error"):
            continue
        for arg in ast.walk(node):
            text = arg.value if isinstance(arg, ast.Constant) else None
            if isinstance(text, str) and any(
                w.startswith("--") and w[2:3].isalpha() for w in text.split()
            ):
                hits.append(f"{path.relative_to(SRC)}:{getattr(arg, 'lineno', 0)}: {text!r}")
    return hits


def test_library_error_messages_never_name_a_cli_flag() -> None:
    hits: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/") or rel.startswith(_PENDING):
            continue
        hits += _flag_strings_in_messages(path)
    assert not hits, "\n".join(hits)


def _loaded_after(code: str) -> list[str]:
    probe = (
        "import sys\n"
        f"{code}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1].replace("'", '"')))


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["checks"], ["audit", "--help"], ["compress", "--help"]]
)
def test_start_up_commands_import_no_numerical_library(argv: list[str]) -> None:
    code = f"from edgeproof.cli import main\nmain({argv!r})"
    assert _loaded_after(code) == []


def test_import_edgeproof_imports_no_numerical_library() -> None:
    assert _loaded_after("import edgeproof") == []


def test_cli_skip_reasons_name_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from safetensors.torch import save_file

    model = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.randn(16, 32)}, str(model))
    assert main(["audit", str(model), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    reasons = {c["check"]: c["skip_reason"] for c in report["checks"] if c["status"] == "skipped"}
    assert reasons["performance"] == "needs labelled data (pass --data)"


def test_a_weights_only_check_runs_without_shape_or_data_and_the_others_say_what_they_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file
    from torch import nn

    (tmp_path / "usermlp.py").write_text(
        "from torch import nn\n\n"
        "def make(input_shape=None, num_classes=3, normalization=None):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    model = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(model))
    out = tmp_path / "spectral"
    argv = ["audit", str(model), "--arch", "usermlp:make", "--out", str(out), "--quiet"]
    assert main([*argv, "--checks", "spectral"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checks"][0]["status"] == "ok"
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    reasons = {c["check"]: c["skip_reason"] for c in report["checks"] if c["status"] == "skipped"}
    assert "pass --shape" in reasons["footprint"] and "pass --data" in reasons["performance"]
    # the advice works: with the shape, the forward checks run
    assert main([*argv, "--shape", "20", "--checks", "footprint"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checks"][0]["status"] == "ok"


def test_seal_and_verify_commands_import_neither_torch_nor_rich(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 64)
    seal = tmp_path / "blob.seal"
    probe = (
        "import sys\n"
        "from edgeproof.cli import main\n"
        f"assert main(['seal', {str(blob)!r}, '--out', {str(seal)!r}]) == 0\n"
        f"assert main(['verify', {str(seal)!r}]) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'rich', 'scipy'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"

"""Optional dependencies: a missing extra is named in one line (exit code 2), everything outside
the extra still imports, and pyproject.toml's extras match :data:`edgeproof.extras.EXTRAS`.

A missing package is simulated in a subprocess with ``sys.modules[name] = None`` (the import
then raises ``ModuleNotFoundError`` exactly as when the package is not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import edgeproof
from edgeproof._torch_version import torch_problem
from edgeproof.errors import MissingExtraError, UserError
from edgeproof.extras import _DISTRIBUTION, EXTRAS, needs_extra

SRC = Path(edgeproof.__file__).resolve().parents[1]
PYPROJECT = SRC.parent / "pyproject.toml"


def run_python(
    code: str, cwd: Path, *, blocked: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with ``blocked`` modules made unimportable."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


ONNX = ("onnx", "onnxruntime", "onnxscript")
DATA = ("sklearn", "PIL")


def test_missing_extra_is_a_user_error_naming_the_extra() -> None:
    err = MissingExtraError("onnx", "onnxruntime", "to load an ONNX model")
    assert isinstance(err, UserError) and err.exit_code == 2
    assert str(err) == (
        "onnxruntime is not installed (needed to load an ONNX model); "
        "install it with: pip install 'edgeproof[onnx]'"
    )


def test_needs_extra_converts_only_the_extras_own_modules() -> None:
    with pytest.raises(ModuleNotFoundError) as info, needs_extra("onnx", "to test"):
        import edgeproof_no_such_module  # noqa: F401
    assert not isinstance(info.value, MissingExtraError)
    with pytest.raises(ValueError, match="unknown extra 'onx'"), needs_extra("onx", "to test"):
        pass


def test_compress_command_without_onnx_says_install_the_onnx_extra(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not a graph")
    out = run_python(
        """
        from edgeproof.cli import main
        sys.exit(main(["compress", "m.onnx", "--data", "builtin:digits", "--out", "c"]))
        """,
        tmp_path,
        blocked=ONNX,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "edgeproof: error: onnx is not installed (needed to compress a model); "
        "install it with: pip install 'edgeproof[onnx]'"
    ]


def test_audit_of_an_onnx_file_without_onnx_says_install_the_onnx_extra(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"not a graph")
    out = run_python(
        """
        from edgeproof.cli import main
        sys.exit(main(["audit", "m.onnx", "--out", "a"]))
        """,
        tmp_path,
        blocked=ONNX,
    )
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert "needed to load an ONNX model" in out.stderr
    assert "pip install 'edgeproof[onnx]'" in out.stderr


def test_builtin_data_without_scikit_learn_names_the_data_extra(tmp_path: Path) -> None:
    out = run_python(
        """
        from edgeproof.errors import MissingExtraError
        from edgeproof.data.loading import load_data
        try:
            load_data("builtin:digits")
        except MissingExtraError as exc:
            print(exc.extra, exc.module, "|", exc)
        """,
        tmp_path,
        blocked=DATA,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("data scikit-learn | scikit-learn is not installed")
    assert "pip install 'edgeproof[data]'" in out.stdout


# every module is imported with the extra blocked; compress is the one package that needs [onnx]
_IMPORT_ALL = """
import importlib, pkgutil
import edgeproof
failed = []
def walk(pkg, prefix):
    for m in pkgutil.iter_modules(pkg.__path__, prefix):
        if m.name.endswith("__main__"):
            continue
        try:
            mod = importlib.import_module(m.name)
        except Exception as exc:
            failed.append(f"{m.name}: {type(exc).__name__}: {exc}")
            continue
        if m.ispkg:
            walk(mod, m.name + ".")
walk(edgeproof, "edgeproof.")
print("\\n".join(failed))
"""


@pytest.mark.slow  # imports every module of edgeproof in a fresh interpreter (~5-20 s)
@pytest.mark.parametrize(
    ("blocked", "allowed_failures"),
    [(ONNX, ["edgeproof.compress"]), (DATA, [])],
    ids=["without-onnx", "without-data"],
)
def test_modules_outside_an_extra_import_without_it(
    tmp_path: Path, blocked: tuple[str, ...], allowed_failures: list[str]
) -> None:
    out = run_python(_IMPORT_ALL, tmp_path, blocked=blocked)
    assert out.returncode == 0, out.stderr
    failed = [line for line in out.stdout.splitlines() if line]
    assert [f.split(":")[0] for f in failed] == allowed_failures, failed
    for line in failed:  # and the one that fails names the extra
        assert "MissingExtraError" in line and "edgeproof[onnx]" in line


def test_pyproject_extras_match_the_guard_table() -> None:
    if not PYPROJECT.exists():
        pytest.skip("pyproject.toml is not beside the package (an installed wheel)")
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        declared = {req.split(">")[0].split("=")[0].split("<")[0] for req in extras[extra]}
        assert declared == {_DISTRIBUTION.get(m, m) for m in modules}, extra
    # "all" is every extra but Ray, which only a cluster user needs (about 80 MB)
    assert extras["all"] == [f"edgeproof[{','.join(e for e in EXTRAS if e != 'ray')}]"]


# -- the torch version --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.13.0", "2.13.0+cpu", "2.14.1", "2.14.1+cu130"])
def test_torch_in_the_supported_range_is_accepted(version: str) -> None:
    assert torch_problem(version) is None


@pytest.mark.parametrize(
    "version", ["2.12.1", "2.15.0", "2.15.0.dev20270101+cpu", "3.0.0", "1.13.1"]
)
def test_torch_outside_the_range_is_refused_naming_the_range(version: str) -> None:
    problem = torch_problem(version)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"edgeproof supports torch>=2.13,<2.15; torch {version} is installed")


def test_missing_torch_says_which_to_install() -> None:
    assert torch_problem(None) == (
        "edgeproof needs torch (torch>=2.13,<2.15), which is not installed: "
        "pip install 'torch>=2.13,<2.15'"
    )


def _fake_torch(tmp_path: Path, version: str) -> Path:
    """A folder whose only content is a torch distribution's metadata (no torch module)."""
    info = tmp_path / "fake" / f"torch-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    return info.parent


def _with_fake_torch(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    path = f"{_fake_torch(tmp_path, '2.12.0')}{os.pathsep}{SRC}"
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unsupported_torch_fails_import_edgeproof_in_one_line(tmp_path: Path) -> None:
    out = _with_fake_torch(tmp_path, ["-c", "import edgeproof"])
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "ImportError: edgeproof supports torch>=2.13,<2.15; torch 2.12.0 is installed: "
        "pip install 'torch>=2.13,<2.15' (or set EDGEPROOF_ANY_TORCH=1 to try it anyway)"
    )


def test_the_command_with_an_unsupported_torch_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    out = _with_fake_torch(tmp_path, ["-m", "edgeproof", "--version"])
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "edgeproof: error: edgeproof supports torch>=2.13,<2.15; torch 2.12.0 is installed: "
        "pip install 'torch>=2.13,<2.15' (or set EDGEPROOF_ANY_TORCH=1 to try it anyway)"
    ]
    forced = _with_fake_torch(tmp_path, ["-m", "edgeproof", "--version"], EDGEPROOF_ANY_TORCH="1")
    assert forced.returncode == 0 and forced.stdout.startswith("edgeproof ")


def test_the_torch_version_read_from_dist_info_is_what_importlib_metadata_says() -> None:
    from importlib import metadata

    from edgeproof._torch_version import _installed_torch

    assert _installed_torch() == metadata.version("torch")


def test_import_edgeproof_does_not_import_importlib_metadata(tmp_path: Path) -> None:
    out = run_python("import edgeproof, sys; print('importlib.metadata' in sys.modules)", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

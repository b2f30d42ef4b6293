"""The built wheel works on its own: ``python -m build`` makes a wheel and an sdist; the wheel,
installed into a fresh venv (no editable install, the repository not on the path, run from a
temporary folder), runs ``edgeproof demo`` and an example, ships its package data, and reports
one version (``edgeproof.__version__`` is what ``importlib.metadata`` says).

The fresh venv reuses the running interpreter's site-packages for the dependencies (torch and the
rest) through a ``.pth`` line, so nothing is downloaded; ``.pth`` files inside that folder (the
editable install of the checkout) are not processed, so edgeproof comes only from the wheel.
The builder is ``$EDGEPROOF_BUILD_PYTHON`` or this interpreter; without ``build`` the test skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = (
    "edgeproof/py.typed",
    "edgeproof/report/report.schema.json",
    "edgeproof/report/template.html",
    "edgeproof/integrity/seal.schema.json",
    "edgeproof/methods/backdoor/thresholds.json",
)


def _builder() -> str:
    python = os.environ.get("EDGEPROOF_BUILD_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import build"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} has no 'build' (pip install 'edgeproof[build]')")
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` on a copy of the tracked tree (no build/ or egg-info left in it)."""
    python = _builder()
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "edgeproof"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    has_setuptools = _run([python, "-c", "import setuptools.command.bdist_wheel"], out)
    flags = ["--no-isolation"] if has_setuptools.returncode == 0 else []
    built = _run([python, "-m", "build", *flags, "--outdir", str(out), str(src)], out)
    if built.returncode != 0 and not flags:
        pytest.skip(f"isolated build needs the package index: {built.stderr.strip()[-300:]}")
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (no deps: they come from this interpreter's)."""
    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = Path(
        subprocess.run(
            [
                str(where / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_edgeproof_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("edgeproof-*.whl"))
    # pip comes from the linked site-packages; it installs into this venv (sys.prefix), and the
    # console script's shebang is this venv's python
    pip = _run(
        [
            str(where / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        where.parent,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    return where


def test_build_makes_a_wheel_and_an_sdist_with_the_package_data(dist: Path) -> None:
    wheel = next(dist.glob("edgeproof-*-py3-none-any.whl"))
    assert next(dist.glob("edgeproof-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)


@pytest.mark.slow  # builds the wheel and runs the demo from a fresh venv (~1-3 min)
def test_the_installed_wheel_runs_the_demo_and_an_example_outside_the_repository(
    venv: Path, tmp_path: Path
) -> None:
    python = str(venv / "bin" / "python")
    probe = _run(
        [
            python,
            "-c",
            "import importlib.metadata as m, importlib.resources as r, edgeproof\n"
            "print(edgeproof.__file__)\n"
            "print(edgeproof.__version__, m.version('edgeproof'))\n"
            "files = r.files('edgeproof')\n"
            f"print(all(files.joinpath(p[10:]).is_file() for p in {PACKAGE_DATA!r}))",
        ],
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    where, versions, data_ok = probe.stdout.splitlines()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT)
    version, meta = versions.split()
    assert version == meta
    assert data_ok == "True"

    cache = tmp_path / "cache"
    demo = _run(
        [str(venv / "bin" / "edgeproof"), "demo", "--out", str(tmp_path / "demo")],
        tmp_path,
        EDGEPROOF_CACHE=str(cache),
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert (tmp_path / "demo" / "report.html").exists()

    # an example, on the demo's cached model, with edgeproof from the wheel
    model = next(cache.glob("demo-*.safetensors"))
    example = _run(
        [
            python,
            str(ROOT / "examples" / "seal_release.py"),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "release"),
        ],
        tmp_path,
    )
    assert example.returncode == 0, example.stdout + example.stderr
    assert "verify: ok" in example.stdout

"""The documentation site: a page per built-in check and per command is generated from the code,
and ``mkdocs build --strict`` passes, while a broken reference fails it.

mkdocs comes from the ``[docs]`` extra; the build tests skip, naming it, without it
(``$EDGEPROOF_DOCS_PYTHON`` may name an interpreter that has it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgeproof
from edgeproof.checks.builtin import BUILTIN_CHECKS

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(edgeproof.__file__).resolve().parents[1]


def _generate(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(out)


def test_every_builtin_check_and_command_gets_a_generated_page(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    _generate(out)
    for info in BUILTIN_CHECKS:
        page = (out / "checks" / f"{info.name}.md").read_text()
        assert page.startswith(f"# {info.title} (`{info.name}`)")
        assert "## What it measures, and its source" in page and "## Settings" in page
        assert "## Limits" in page
    calibration = (out / "checks" / "calibration.md").read_text()
    assert "Guo et al. 2017" in calibration  # the source paper, from the module docstring
    assert "| `n_bins` | int | `15` |" in calibration  # a setting, from the constructor
    for command in ("audit", "compress", "seal", "verify", "demo"):
        assert f"usage: edgeproof {command}" in (out / "commands" / f"{command}.md").read_text()
    schema = (out / "report-schema.md").read_text()
    assert "| `checks` |" in schema and "## `metric`" in schema


def _mkdocs() -> str:
    python = os.environ.get("EDGEPROOF_DOCS_PYTHON", sys.executable)
    probe = subprocess.run(
        [python, "-c", "import mkdocs, mkdocstrings_handlers.python"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} has no mkdocs/mkdocstrings (pip install 'edgeproof[docs]')")
    return python


def _site(tmp_path: Path) -> Path:
    """A copy of mkdocs.yml and docs/ (generated pages included) beside the package source."""
    site = tmp_path / "site-src"
    site.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", site / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", site / "docs", ignore=shutil.ignore_patterns("generated"))
    _generate(site / "docs" / "generated")
    (site / "src").symlink_to(SRC)
    return site


def _build(python: str, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [python, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site / "out")],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # mkdocs + mkdocstrings over the whole site (~10-30 s)
def test_the_site_builds_strictly_and_a_broken_reference_fails_it(tmp_path: Path) -> None:
    python = _mkdocs()
    site = _site(tmp_path)
    ok = _build(python, site)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (site / "out" / "generated" / "checks" / "calibration" / "index.html").exists()
    assert "edgeproof.runner.audit" in (site / "out" / "api" / "index.html").read_text()

    # a link to a page that does not exist, and an API reference to a name that does not exist
    index = site / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    broken = _build(python, site)
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stderr
    index.write_text(index.read_text().replace("[the missing page](no-such-page.md)", ""))
    (site / "docs" / "api.md").write_text("::: edgeproof.runner.no_such_function\n")
    broken = _build(python, site)
    assert broken.returncode != 0

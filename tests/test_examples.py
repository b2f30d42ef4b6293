"""The examples in ``examples/`` run on small data, and every fenced code block of the README and
the docs runs (Python blocks execute, policy TOML blocks load) or is marked
``<!-- not-run: reason -->`` on the line before its fence.

The examples use the session's digits LeNet-5 (``--model``), so nothing is trained here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgeproof
from edgeproof.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SRC = Path(edgeproof.__file__).resolve().parents[1]


def run_example(name: str, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--model", str(model), "--out", str(out), *extra],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # an audit with PGD/APGD on 60 digits (~5-15 s on one thread)
def test_audit_pretrained_keeps_eps_in_raw_units_and_writes_the_report(
    digits_model_path: Path, tmp_path: Path
) -> None:
    out = run_example("audit_pretrained.py", digits_model_path, tmp_path / "a")
    assert out.returncode == 0, out.stderr
    assert "ε (raw pixel units): [0.01, 0.03, 0.1]" in out.stdout
    accuracy = float(re.search(r"performance.accuracy = ([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert accuracy > 0.9
    assert (tmp_path / "a" / "report.html").exists()


@pytest.mark.slow  # two candidates exported, measured on ONNX Runtime and re-audited (~10-30 s)
def test_compress_to_budget_prints_the_ledger_and_meets_the_budget(
    digits_model_path: Path, tmp_path: Path
) -> None:
    out = run_example("compress_to_budget.py", digits_model_path, tmp_path / "c")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:4]}
    assert set(rows) == {"fp32", "int8-percentile", "w4g32"}
    assert int(rows["w4g32"][1]) <= 20_000 < int(rows["fp32"][1])
    assert "meets the budget" in out.stdout
    assert {"model.onnx", "compress.json", "report.json"} <= {
        p.name for p in (tmp_path / "c").iterdir()
    }


@pytest.mark.slow  # trains nothing, but seals, verifies twice and imports the stack (~5-25 s)
def test_seal_release_verifies_then_localises_the_flipped_bit(
    digits_model_path: Path, tmp_path: Path
) -> None:
    out = run_example("seal_release.py", digits_model_path, tmp_path / "s")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "verify: ok" in lines and "after the tamper: FAILED" in lines
    tamper = lines[lines.index("after the tamper: FAILED") + 1]
    assert "model.safetensors: tensor" in tamper and "flipped" in tamper


@pytest.mark.slow  # two audits (performance, calibration) in subprocesses (~10-40 s)
def test_ci_gate_passes_the_shipped_policy_and_fails_a_strict_one(
    digits_model_path: Path, tmp_path: Path
) -> None:
    ok = run_example("ci_gate.py", digits_model_path, tmp_path / "g")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1] == "gate: passed"
    strict = tmp_path / "strict.toml"
    strict.write_text('[thresholds]\n"performance.accuracy" = ">= 0.999"\n')
    failed = run_example("ci_gate.py", digits_model_path, tmp_path / "g2", "--policy", str(strict))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED" in failed.stdout.splitlines()[0]


# -- code blocks in the README and the docs ----------------------------------------------------

FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not-run: (.+\S) -->$")


def code_blocks(path: Path) -> list[tuple[int, str, str, str | None]]:
    """``(line, language, code, not-run reason)`` of every fenced block in a Markdown file."""
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        before = lines[start - 1] if start > 0 else ""
        reason = NOT_RUN.match(before)
        code = "\n".join(lines[start + 1 : j])
        blocks.append((start + 1, m.group(1), code, reason.group(1) if reason else None))
        i = j + 1
    return blocks


def documents() -> list[Path]:
    """The hand-written Markdown: docs/benchmarks/ and docs/benchmarks.md hold measured output
    (their blocks are logs a benchmark wrote), docs/generated/ what ``docs/generate.py`` writes."""
    skip = {"generated", "benchmarks", "benchmarks.md"}
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if not skip & set(p.parts))
    return [ROOT / "README.md", *docs, ROOT / "CONTRIBUTING.md"]


# a Python block runs in a fresh interpreter (imports torch, often audits): ~3-8 s each
ALL_BLOCKS = [
    pytest.param(
        doc,
        line,
        lang,
        code,
        reason,
        id=f"{doc.relative_to(ROOT)}:{line}",
        marks=[pytest.mark.slow] if lang == "python" and reason is None else [],
    )
    for doc in documents()
    if doc.exists()
    for line, lang, code, reason in code_blocks(doc)
]


def test_the_readme_has_code_blocks() -> None:
    readme = [p for p in ALL_BLOCKS if Path(str(p.values[0])).name == "README.md"]
    assert len(readme) >= 5


@pytest.mark.parametrize(("doc", "line", "lang", "code", "reason"), ALL_BLOCKS)
def test_code_block_runs_or_says_why_not(
    doc: Path,
    line: int,
    lang: str,
    code: str,
    reason: str | None,
    digits_model_path: Path,
    tmp_path: Path,
) -> None:
    if reason is not None:
        return  # marked not-run, with its reason on the line before the fence
    if lang == "python":
        # the snippets' files: model.safetensors (+ its model.json sidecar) in the working folder
        shutil.copy(digits_model_path, tmp_path / "model.safetensors")
        shutil.copy(digits_model_path.with_suffix(".json"), tmp_path / "model.json")
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, f"{doc.name}:{line}\n{out.stderr}"
    elif lang == "toml" and "[thresholds]" in code:
        (tmp_path / "policy.toml").write_text(code + "\n")
        assert load_policy(tmp_path / "policy.toml").rules
    else:
        pytest.fail(
            f"{doc.name}:{line}: a ```{lang} block neither runs nor says why not; put "
            "'<!-- not-run: <reason> -->' on the line before its fence"
        )

"""Data outside the model's input domain: a warning from `performance`, a refusal from the checks
that clip to the domain, and advice that works (rescale, or declare the domain the model knows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli import main
from edgeproof.data.dataset import Dataset


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def _audit(model: Path, data: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(
        [
            "audit",
            str(model),
            "--data",
            str(data),
            "--checks",
            "performance,adversarial",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )
    return code, json.loads((out / "report.json").read_text())


def test_digits_in_0_16_fed_to_a_0_1_model_warn_refuse_and_the_advice_works(
    digits_model_path: Path,
    digits_test: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sixteen = _npz(tmp_path / "d16.npz", digits_test.x * 16, digits_test.y)
    code, report = _audit(digits_model_path, sixteen, tmp_path / "a")
    err = capsys.readouterr().err
    assert code == 2  # adversarial refused its input; the report is written
    perf, adv = report["checks"]
    warning = perf["findings"][0]
    assert warning["severity"] == "warning"
    assert (
        "of the input values lie outside the input domain [0, 1] (from the model's "
        in (warning["message"])
    )
    assert "rescale the data into [0, 1] (e.g. multiply by 0.0625)" in warning["message"]
    assert warning["evidence"]["fraction_outside"] == pytest.approx(
        float(np.mean(digits_test.x * 16 > 1 + 1e-6))
    )
    assert adv["status"] == "error" and "multiply by 0.0625" in adv["error"]
    assert "--domain 0,16" in err and "Traceback" not in err
    assert report["threat"]["input"]["domain_source"] == "metadata"
    # following the advice: rescaled, the data are in the domain; nothing to warn about
    rescaled = _npz(tmp_path / "d1.npz", digits_test.x * 16 * 0.0625, digits_test.y)
    code, report = _audit(digits_model_path, rescaled, tmp_path / "b")
    assert code == 0
    assert not any(
        "outside the input domain" in f["message"] for f in report["checks"][0]["findings"]
    )
    # or declaring the range (if the model really took it): the clipping checks run
    code, report = _audit(digits_model_path, sixteen, tmp_path / "c", "--domain", "0,16")
    assert code == 0 and report["checks"][1]["status"] == "ok"
    assert report["threat"]["input"]["domain_source"] == "declared"

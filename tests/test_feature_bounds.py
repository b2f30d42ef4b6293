"""Per-feature domains: tabular data whose features live on different scales (the wine data:
alcohol 11–15 %, proline 278–1680) are attacked and corrupted in fractions of each feature's
range, declared or inferred, and every range-dependent number says which."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli import main
from edgeproof.data.loading import load_data
from edgeproof.models.train import train_and_save


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    folder = tmp_path_factory.mktemp("wine")
    d = load_wine()
    xtr, xte, ytr, yte = train_test_split(
        d.data, d.target, test_size=0.3, random_state=0, stratify=d.target
    )
    paths = []
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        path = folder / f"wine_{name}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*d.feature_names, "label"])
            w.writerows([*(f"{v:.6g}" for v in r), int(lab)] for r, lab in zip(x, y))
        paths.append(path)
    model = folder / "mlp.safetensors"
    train_and_save("zoo:mlp", load_data(paths[0]), model, epochs=60, seed=0)
    return model, paths[0], paths[1]


def _audit(model: Path, data: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(
        [
            "audit",
            str(model),
            "--data",
            str(data),
            "--checks",
            "performance,adversarial,corruption",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )
    return code, json.loads((out / "report.json").read_text())


def test_tabular_features_on_different_scales_get_relative_eps_and_no_false_findings(
    wine: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, _, test = wine
    code, report = _audit(model, test, tmp_path / "a")
    assert code == 0
    threat = report["threat"]
    assert threat["eps"] == [0.01, 0.03, 0.1]
    assert threat["eps_units"] == "fraction of each feature's range"
    spec = threat["input"]
    assert spec["domain"] == [0.0, 1.0] and spec["domain_source"] == "inferred"
    hi = spec["feature_bounds"]["hi"]
    assert max(hi) >= 1000 and min(hi) < 10  # proline and hue kept on their own scales
    findings = [f["message"] for c in report["checks"] for f in c["findings"]]
    assert not any("gradient masking" in m and "weaker" in m for m in findings)
    assert not any("check the sensor pipeline" in m for m in findings)
    adv = next(c for c in report["checks"] if c["check"] == "adversarial")
    acc = {m["name"]: m["value"] for m in adv["metrics"]}
    assert acc["robust_accuracy@0.01"] >= acc["robust_accuracy@0.1"]


def test_declared_feature_bounds_are_used_and_bad_files_are_one_line(
    wine: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train, test = wine
    x = np.concatenate([load_data(train).x, load_data(test).x])
    bounds = tmp_path / "bounds.csv"
    width = x.max(axis=0) - x.min(axis=0)
    lo, hi = x.min(axis=0) - 0.05 * width, x.max(axis=0) + 0.05 * width
    bounds.write_text("lo,hi\n" + "".join(f"{a:.6g},{b:.6g}\n" for a, b in zip(lo, hi)))
    code, report = _audit(model, test, tmp_path / "a", "--feature-bounds", str(bounds))
    assert code == 0
    spec = report["threat"]["input"]
    assert spec["domain_source"] == "declared"
    assert spec["feature_bounds"]["lo"] == pytest.approx([float(f"{a:.6g}") for a in lo])
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\n2,1\n")
    code = main(["audit", str(model), "--data", str(test), "--feature-bounds", str(bad),
                 "--out", str(tmp_path / "b"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv: row 2: lo 2 is not below hi 1" in err
    short = tmp_path / "short.csv"
    short.write_text("0,1\n0,2\n")
    code = main(["audit", str(model), "--data", str(test), "--feature-bounds", str(short),
                 "--out", str(tmp_path / "c"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--feature-bounds gives 2 features but the input has 13" in err


def test_audit_inputs_are_fractions_of_each_features_range(wine: tuple[Path, Path, Path]) -> None:
    from edgeproof.models.loading import load_model
    from edgeproof.runner import resolve_threat

    model_path, _, test = wine
    model, data = load_model(model_path), load_data(test)
    threat = resolve_threat(model, data)
    scaled = data.in_units_of(threat.input)
    assert float(scaled.x.min()) >= 0.0 and float(scaled.x.max()) <= 1.0
    view = model.for_spec(threat.input)
    np.testing.assert_allclose(
        view.predict_logits(scaled.x), model.predict_logits(data.x), rtol=1e-4, atol=1e-4
    )


def test_compress_on_per_feature_ranges_writes_a_model_the_audit_reads_back(
    wine: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Candidates are built and measured on the raw features (the network's units), the re-audit
    in fractions of each range; the written ONNX, audited again, has the accuracy compress
    reported, and its forward-only attack starts from that same clean accuracy."""
    model, train, test = wine
    out = tmp_path / "c"
    code = main(["compress", str(model), "--data", str(train), "--eval", str(test),
                 "--time-budget", "5", "--out", str(out)])  # fmt: skip
    assert code == 0
    picked = json.loads((out / "compress.json").read_text())["candidate"]
    trust = {m["name"]: m["value"] for m in picked["trust"]}
    assert trust["adversarial.clean_accuracy"] == pytest.approx(picked["accuracy"], abs=0.02)
    code, report = _audit(out / "model.onnx", test, tmp_path / "a")
    assert code == 0
    assert report["threat"]["eps_units"] == "fraction of each feature's range"
    metrics = {m["name"]: m["value"] for c in report["checks"] for m in c["metrics"]}
    assert metrics["accuracy"] == pytest.approx(picked["accuracy"], abs=0.01)
    assert metrics["clean_accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)


@pytest.mark.parametrize("form", ["torchscript", "pt2"])
def test_torchscript_and_exported_programs_take_the_same_feature_bounds(
    wine: tuple[Path, Path, Path], tmp_path: Path, form: str
) -> None:
    import torch

    from edgeproof.models.loading import load_model

    model_path, train, test = wine
    x = np.concatenate([load_data(train).x, load_data(test).x])
    bounds = tmp_path / "bounds.csv"
    width = x.max(axis=0) - x.min(axis=0)
    lo, hi = x.min(axis=0) - 0.05 * width, x.max(axis=0) + 0.05 * width
    bounds.write_text("".join(f"{a:.6g},{b:.6g}\n" for a, b in zip(lo, hi)))
    module = load_model(model_path).module
    assert module is not None
    example = torch.from_numpy(x[:2].astype(np.float32))
    path = tmp_path / ("mlp.pt" if form == "torchscript" else "mlp.pt2")
    if form == "torchscript":
        torch.jit.save(torch.jit.trace(module, example), str(path))
    else:
        batch = torch.export.Dim("batch", max=4096)
        torch.export.save(
            torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), path
        )
    flags = ["--feature-bounds", str(bounds), "--kind", "tabular"]
    _, want = _audit(model_path, test, tmp_path / "s", *flags)
    code, got = _audit(path, test, tmp_path / form, *flags)
    assert code == 0
    # the same per-feature ranges and relative ε (the zoo net's own Normalize layer is inside
    # the traced program, recorded in the safetensors metadata only)
    for key in ("eps", "norm"):
        assert got["threat"][key] == want["threat"][key]
    for key in ("feature_bounds", "domain", "domain_source", "shape"):
        assert got["threat"]["input"][key] == want["threat"]["input"][key]

    def values(report: dict) -> dict[str, float]:
        return {
            f"{c['check']}.{m['name']}": m["value"]
            for c in report["checks"]
            for m in c["metrics"]
            if m["unit"] not in ("ms", "s")
        }

    assert _all_ran(got) and values(got) == pytest.approx(values(want), abs=1e-6)


def _all_ran(report: dict) -> bool:
    """Every check of ``report`` ran."""
    return all(c["status"] == "ok" for c in report["checks"])

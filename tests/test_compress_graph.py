"""Compressing a third-party ONNX graph (``edgeproof compress model.onnx``): the quantizations are
written into the given graph with edgeproof's calibration, every candidate is measured and
re-audited on the graph (forward only), and what is written loads back in ``edgeproof audit``
with the accuracy compress reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeproof.cli import main
from edgeproof.compress.graph import GraphRecipe, graph_candidate
from edgeproof.data.dataset import Dataset
from edgeproof.errors import NotApplicableError
from edgeproof.models.loaded import LoadedModel


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """An ONNX file as another project would write it: the legacy exporter, its own names."""
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, *shape),),
        str(path),
        input_names=["pixels"],
        output_names=["scores"],
        dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}},
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def graph_and_data(
    tmp_path_factory: pytest.TempPathFactory, digits_model: LoadedModel, digits_test: Dataset
) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("graph")
    assert digits_model.module is not None
    path = _export(digits_model.module, (1, 8, 8), folder / "third_party.onnx")
    data = folder / "digits.npz"
    np.savez(data, x=digits_test.x, y=digits_test.y)
    return path, data


def test_compress_quantizes_the_given_graph_and_audit_reads_it_back(
    graph_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = graph_and_data
    out = tmp_path / "c"
    code = main(["compress", str(path), "--data", str(data), "--max-drop", "2%",
                 "--time-budget", "120", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "compress.json").read_text())
    rows = {c["name"]: c for c in [meta["ledger"]["baseline"], *meta["ledger"]["candidates"]]}
    assert set(rows) == {"fp32", "int8-percentile", "int8-entropy", "int8-minmax", "w8", "w4g32"}
    base = rows["fp32"]["accuracy"]
    for name in ("int8-percentile", "w8"):
        assert rows[name]["accuracy"] >= base - 0.03, name
        assert rows[name]["size_bytes"] < rows["fp32"]["size_bytes"]
    assert rows["w4g32"]["size_bytes"] < rows["w8"]["size_bytes"]
    # re-audited on the graph: forward-only checks ran, gradient checks said why not
    status = {t["check"]: t for t in rows["int8-percentile"]["trust_checks"]}
    assert status["adversarial"]["status"] == "ok"
    assert status["bitflip"]["status"] == "skipped"
    assert "gradients" in status["bitflip"]["message"]
    trust = {m["name"]: m["value"] for m in rows["int8-percentile"]["trust"]}
    assert trust["adversarial.clean_accuracy"] >= trust[f"adversarial.robust_accuracy@{0.1:g}"]
    assert not (out / "model.safetensors").exists()  # no PyTorch form to write
    picked = meta["candidate"]
    q = onnx.load(str(out / "model.onnx"))
    assert q.graph.input[0].name == "pixels"  # the given graph, not a re-export
    if picked["name"] != "fp32":
        assert any(n.op_type == "DequantizeLinear" for n in q.graph.node)
    report = tmp_path / "a"
    code = main(["audit", str(out / "model.onnx"), "--data", str(data),
                 "--checks", "performance", "--out", str(report), "--quiet"])  # fmt: skip
    assert code == 0
    audited = json.loads((report / "report.json").read_text())
    acc = next(
        m["value"] for c in audited["checks"] for m in c["metrics"] if m["name"] == "accuracy"
    )
    assert acc == pytest.approx(picked["accuracy"], abs=0.01)


def test_int8_graph_candidate_puts_qdq_on_every_weight_and_activation(
    graph_and_data: tuple[Path, Path], digits_test: Dataset
) -> None:
    from edgeproof.compress.quantize import onnx_activation_stats

    path, _ = graph_and_data
    model = onnx.load(str(path))
    x = digits_test.x[:64].astype(np.float32)
    q = graph_candidate(
        model, GraphRecipe("int8", "int8", "percentile"), onnx_activation_stats(model, x)
    )
    ops = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    weights_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    quant = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quant) >= len(ops)  # every activation point (the input of each op at least)
    assert len(weights_dq) >= 2 * len(ops)  # weights and activations dequantized
    import onnxruntime as ort

    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = sess.run(None, {"pixels": digits_test.x.astype(np.float32)})[0].argmax(1)
    b = ref.run(None, {"pixels": digits_test.x.astype(np.float32)})[0].argmax(1)
    assert float(np.mean(a == b)) > 0.95


def test_a_graph_with_nothing_to_quantize_is_not_applicable(tmp_path: Path) -> None:
    relu = _export(nn.Sequential(nn.Flatten(), nn.ReLU()), (4,), tmp_path / "relu.onnx")
    with pytest.raises(NotApplicableError, match="no Conv/Gemm/MatMul"):
        graph_candidate(onnx.load(str(relu)), GraphRecipe("w8", "w8"), None)


def test_bad_graph_inputs_are_one_line_errors(
    graph_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = graph_and_data
    code = main(["compress", str(path), "--data", str(data), "--early-exit",
                 "--out", str(tmp_path / "e")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--early-exit" in err and len(err.strip().splitlines()) == 1
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((8, 64), np.float32), y=np.zeros(8, np.int64))
    code = main(["compress", str(path), "--data", str(flat), "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "f" / "model.onnx").exists()


class _Stateful(nn.Module):
    """A digits classifier with a state input and a second output, as RNN exports have."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.mix = nn.Linear(4, 10)

    def forward(self, pixels: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores = self.net(pixels) + self.mix(state)
        return scores, state + scores[:, :4]


@pytest.fixture(scope="module")
def stateful_graph(tmp_path_factory: pytest.TempPathFactory, digits_model: LoadedModel) -> Path:
    import copy

    assert digits_model.module is not None
    path = tmp_path_factory.mktemp("stateful") / "stateful.onnx"
    torch.onnx.export(
        _Stateful(copy.deepcopy(digits_model.module)).eval(),
        (torch.zeros(1, 1, 8, 8), torch.zeros(1, 4)),
        str(path),
        input_names=["pixels", "state"],
        output_names=["scores", "new_state"],
        dynamic_axes={n: {0: "batch"} for n in ("pixels", "state", "scores", "new_state")},
        dynamo=False,
    )
    return path


def test_a_graph_with_several_inputs_and_outputs_is_compressed_as_the_audit_calls_it(
    stateful_graph: Path, digits_test: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calib, data = tmp_path / "calib.npz", tmp_path / "eval.npz"
    np.savez(calib, x=digits_test.x[:180], y=digits_test.y[:180])
    np.savez(data, x=digits_test.x[180:], y=digits_test.y[180:])
    base = ["compress", str(stateful_graph), "--data", str(calib), "--eval", str(data),
            "--max-drop", "2%", "--time-budget", "120", "--quiet"]  # fmt: skip
    # two outputs: compress asks which holds the scores, as the audit does ...
    code = main([*base, "--input", "pixels", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "returns 2 outputs" in err and "--output" in err
    assert not (tmp_path / "x").exists()
    # ... and with the advice followed, the state input is fed zeros and output 0 is read
    out = tmp_path / "c"
    code = main([*base, "--input", "pixels", "--output", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "compress.json").read_text())
    assert "the data feeds input 'pixels'" in meta["interface"]
    assert "state = 0 [None, 4] (zeros; symbolic dimensions = batch)" in meta["interface"]
    rows = {c["name"]: c for c in [meta["ledger"]["baseline"], *meta["ledger"]["candidates"]]}
    assert rows["fp32"]["accuracy"] > 0.9  # the zero state leaves the digits classifier as is
    assert rows["int8-percentile"]["accuracy"] >= rows["fp32"]["accuracy"] - 0.03
    # what is written keeps the source's interface: both inputs, both outputs
    q = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in q.graph.input if i.name in ("pixels", "state")] == ["pixels", "state"]
    assert [o.name for o in q.graph.output] == ["scores", "new_state"]
    assert not [n for n in q.graph.node if n.name.startswith("edgeproof.bind/")]
    # and audits again, with the same flags, at the accuracy compress reported
    code = main(["audit", str(out / "model.onnx"), "--data", str(data), "--input", "pixels",
                 "--output", "0", "--checks", "performance", "--out", str(tmp_path / "a"),
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    audited = json.loads((tmp_path / "a" / "report.json").read_text())
    acc = next(
        m["value"] for c in audited["checks"] for m in c["metrics"] if m["name"] == "accuracy"
    )
    assert acc == pytest.approx(meta["candidate"]["accuracy"], abs=1e-9)


def test_a_graph_input_that_does_not_exist_is_one_line_naming_the_inputs(
    stateful_graph: Path,
    graph_and_data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, data = graph_and_data
    code = main(["compress", str(stateful_graph), "--data", str(data), "--input", "image",
                 "--output", "0", "--out", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "has no input 'image' (inputs: pixels, state)" in err and "--input" in err

"""Post-training quantization: PyTorch simulation vs real ONNX Runtime QDQ execution."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from edgeproof.compress.onnx_export import make_session, run_session
from edgeproof.compress.quantize import QuantConfig, quantize
from edgeproof.data.dataset import Dataset
from edgeproof.errors import SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import build_model


def _ort_accuracy(model: onnx.ModelProto, data: Dataset) -> float:
    logits = run_session(make_session(model), data.x)[0]
    return float((logits.argmax(1) == data.y).mean())


def _fp32_accuracy(module: torch.nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((module(torch.from_numpy(data.x)).argmax(1).numpy() == data.y).mean())


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_int8_qdq_graph_keeps_accuracy_and_matches_the_simulation(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset, method: str
) -> None:
    module = copy.deepcopy(digits_model.module)
    assert module is not None
    q = quantize(
        module, (1, 8, 8), digits_train.x[:128], QuantConfig("int8", method), x_eval=digits_test.x
    )
    assert q.parity is not None
    assert q.parity.top1_agreement >= 0.99
    # Both sides calibrate independently; MSE's grid argmin can land one grid point apart on
    # float-level differences, shifting a scale by ~1% (about one logit quantization step).
    assert q.parity.max_abs_logit_diff < (0.5 if method == "mse" else 0.05)
    assert _ort_accuracy(q.onnx_model, digits_test) >= _fp32_accuracy(module, digits_test) - 0.02
    # ONNX Runtime really runs the convolutions and Gemms in int8: none is left in float.
    assert not [f for f in q.float_nodes if f.op_type in ("Conv", "FusedConv", "Gemm")]
    inits = {i.name: i for i in q.onnx_model.graph.initializer}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in inits.values())


def test_int4_weight_only_graph_is_smaller_than_int8_and_agrees_with_simulation(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    module = copy.deepcopy(digits_model.module)
    assert module is not None
    w8 = quantize(module, (1, 8, 8), digits_train.x[:64], QuantConfig("w8"), x_eval=digits_test.x)
    w4 = quantize(
        module,
        (1, 8, 8),
        digits_train.x[:64],
        QuantConfig("w4", group_size=32),
        x_eval=digits_test.x,
    )
    assert len(w4.onnx_bytes()) < len(w8.onnx_bytes())
    assert any(t.data_type == onnx.TensorProto.INT4 for t in w4.onnx_model.graph.initializer)
    assert w4.parity is not None and w4.parity.top1_agreement >= 0.99
    assert _ort_accuracy(w4.onnx_model, digits_test) >= 0.85


def test_batchnorm_resnet_int8_simulation_agrees_with_onnxruntime() -> None:
    torch.manual_seed(0)
    module = build_model("resnet8", (1, 8, 8), 4).eval()
    x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    q = quantize(module, (1, 8, 8), x[:32], QuantConfig("int8", "minmax"), x_eval=x[32:])
    assert q.parity is not None
    assert q.parity.top1_agreement >= 0.95
    assert q.parity.max_abs_logit_diff < 0.1


def test_lstm_is_listed_as_left_in_float_for_static_int8_and_quantized_weight_only() -> None:
    torch.manual_seed(0)
    module = build_model("cnn-lstm", (1, 32), 3).eval()
    x = np.random.default_rng(0).standard_normal((16, 1, 32)).astype(np.float32)
    q8 = quantize(module, (1, 32), x, QuantConfig("int8"), x_eval=x)
    assert [u.kind for u in q8.unquantized] == ["LSTM"]
    assert "LSTM" in [f.op_type for f in q8.float_nodes]
    w4 = quantize(module, (1, 32), x, QuantConfig("w4", group_size=16), x_eval=x)
    assert w4.unquantized == []
    lstm = next(n for n in w4.onnx_model.graph.node if n.op_type == "LSTM")
    producers = {o: n.op_type for n in w4.onnx_model.graph.node for o in n.output}
    assert producers[lstm.input[1]] in ("Reshape", "DequantizeLinear")
    assert w4.parity is not None and w4.parity.max_abs_logit_diff < 1e-4


def test_calibration_data_of_the_wrong_shape_names_the_option(digits_model: LoadedModel) -> None:
    assert digits_model.module is not None
    with pytest.raises(SpecError, match=r"--data: calibration data has sample shape \(1, 16\)"):
        quantize(digits_model.module, (1, 8, 8), np.zeros((4, 1, 16), np.float32), QuantConfig())

"""Post-training quantization: PyTorch simulation vs real ONNX Runtime QDQ execution."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from edgeproof.compress.qdq import pack_int4
from edgeproof.compress.quantize import QuantConfig, fold_batchnorm, quantize
from edgeproof.data.dataset import Dataset
from edgeproof.errors import SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import build_model
from edgeproof.runtime.ort import make_session, run_session


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
    # W/R carry the PyTorch parameter names, not the exporter's "onnx::LSTM_<n>".
    assert list(lstm.input[1:3]) == ["lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    assert w4.parity is not None and w4.parity.max_abs_logit_diff < 1e-4


def test_calibration_data_of_the_wrong_shape_names_the_option(digits_model: LoadedModel) -> None:
    assert digits_model.module is not None
    with pytest.raises(SpecError, match=r"x_calib: calibration data has sample shape \(1, 16\)"):
        quantize(digits_model.module, (1, 8, 8), np.zeros((4, 1, 16), np.float32), QuantConfig())


def test_pack_int4_puts_the_even_element_in_the_low_nibble_and_round_trips() -> None:
    assert pack_int4(np.array([1, -1, 7])) == bytes([0xF1, 0x07])
    q = np.random.default_rng(0).integers(-7, 8, size=(5, 7))
    t = onnx.TensorProto(name="q", data_type=onnx.TensorProto.INT4, dims=[5, 7])
    t.raw_data = pack_int4(q)
    assert len(t.raw_data) == 18
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(t).astype(np.int64), q)


def test_int4_weights_are_packed_two_per_byte_and_run_exactly_as_varint_int4(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    module = copy.deepcopy(digits_model.module)
    assert module is not None
    w4 = quantize(module, (1, 8, 8), digits_train.x[:16], QuantConfig("w4", group_size=32))
    packed = w4.onnx_model
    onnx.checker.check_model(packed)
    # The same graph with INT4 written the way onnx.helper.make_tensor does (varint int32_data).
    varint = onnx.ModelProto()
    varint.CopyFrom(packed)
    weights = 0
    for t in varint.graph.initializer:
        if t.data_type != onnx.TensorProto.INT4:
            continue
        q = onnx.numpy_helper.to_array(t).astype(np.int8)
        assert len(t.raw_data) == (q.size + 1) // 2 and not t.int32_data
        if t.name.endswith("__q"):
            weights += q.size
        t.CopyFrom(
            onnx.helper.make_tensor(t.name, t.data_type, list(q.shape), q.flatten().tolist())
        )
    a = run_session(make_session(packed), digits_test.x)[0]
    b = run_session(make_session(varint), digits_test.x)[0]
    np.testing.assert_array_equal(a, b)
    # varints spend ~0.75 B per weight, packing 0.5 B: about a third of the weight bytes go.
    saved = len(varint.SerializeToString()) - len(packed.SerializeToString())
    assert 0.2 * weights < saved < 0.3 * weights


def test_mixed_graph_keeps_per_channel_scales_for_8_bit_and_groups_for_4_bit(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    module = copy.deepcopy(digits_model.module)
    assert module is not None
    layers = [
        n
        for n, m in fold_batchnorm(module).named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    plan = {layers[0]: 4}
    q = quantize(
        module,
        (1, 8, 8),
        digits_train.x[:16],
        QuantConfig("mixed", bits_per_layer=plan, group_size=32),
        x_eval=digits_test.x,
    )
    inits = {t.name: t for t in q.onnx_model.graph.initializer}
    dqs = [n for n in q.onnx_model.graph.node if n.input[0].endswith(".weight__q")]
    assert len(dqs) == len(layers)
    for node in dqs:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        q_t, s_t = inits[node.input[0]], inits[node.input[1]]
        if node.input[0] == f"{layers[0]}.weight__q":
            assert q_t.data_type == onnx.TensorProto.INT4 and attrs["block_size"] == 32
        else:
            assert q_t.data_type == onnx.TensorProto.INT8 and "block_size" not in attrs
            assert list(s_t.dims) == [q_t.dims[attrs["axis"]]]  # one scale per output channel
    # ONNX Runtime executes the mix, and the simulation (also per channel at 8 bits) agrees.
    assert q.parity is not None and q.parity.max_abs_logit_diff < 1e-4
    # An all-8-bit mixed graph (opset 21, no inferred-shape metadata) is the w8 graph's size.
    all8 = quantize(module, (1, 8, 8), digits_train.x[:16], QuantConfig("mixed"))
    w8 = quantize(module, (1, 8, 8), digits_train.x[:16], QuantConfig("w8"))
    assert abs(len(all8.onnx_bytes()) - len(w8.onnx_bytes())) <= 4


def _producer_types(model: onnx.ModelProto) -> dict[str, str]:
    return {o: n.op_type for n in model.graph.node for o in n.output}


def test_int8_graph_keeps_the_logits_float_and_runs_maxpool_on_uint8() -> None:
    torch.manual_seed(0)
    module = build_model("cnn-lstm", (1, 64), 3).eval()
    x = np.random.default_rng(0).standard_normal((32, 1, 64)).astype(np.float32)
    q = quantize(module, (1, 64), x, QuantConfig("int8", "minmax"), x_eval=x)
    g = q.onnx_model.graph
    # the logits come straight from the Gemm: no Quantize/Dequantize on the model output
    assert _producer_types(q.onnx_model)[g.output[0].name] == "Gemm"
    # the Conv after a MaxPool reuses the scale of the ReLU before it, so ONNX Runtime drops
    # the DQ → MaxPool → Q pair and pools the integers: no MaxPool is left in float
    pools = [n for n in g.node if n.op_type == "MaxPool"]
    scales = {
        i.name: float(onnx.numpy_helper.to_array(i))
        for i in g.initializer
        if i.name.endswith("__act_scale")
    }
    shared = [
        (p.input[0].removesuffix("__f32"), p.output[0].removesuffix("__f32"))
        for p in pools
        if f"{p.output[0].removesuffix('__f32')}__act_scale" in scales
    ]
    assert shared  # the first pool feeds the second Conv
    for src, dst in shared:
        assert scales[f"{dst}__act_scale"] == scales[f"{src}__act_scale"]
    assert not [f for f in q.float_nodes if f.op_type in ("MaxPool", "Conv", "Gemm")]
    assert q.parity is not None and q.parity.top1_agreement == 1.0
    assert q.parity.max_abs_logit_diff < 0.05


def test_int8_resnet_runs_every_residual_add_and_the_pool_in_uint8() -> None:
    torch.manual_seed(0)
    module = build_model("resnet8", (1, 8, 8), 4).eval()
    x = np.random.default_rng(0).random((48, 1, 8, 8), dtype=np.float32)
    q = quantize(module, (1, 8, 8), x[:32], QuantConfig("int8", "minmax"), x_eval=x[32:])
    left = {f.op_type for f in q.float_nodes}
    assert not left & {"Add", "Relu", "GlobalAveragePool", "Conv", "Gemm"}, left
    assert q.parity is not None and q.parity.top1_agreement >= 0.95


def test_auto_calibration_picks_the_method_closest_to_fp32_on_calibration_data(
    digits_model: LoadedModel, digits_train: Dataset
) -> None:
    assert digits_model.module is not None
    q = quantize(digits_model.module, (1, 8, 8), digits_train.x[:64], QuantConfig("int8"))
    choice = q.calibration_choice
    assert choice is not None and choice.samples == 64
    assert set(choice.kl) == {"minmax", "percentile", "entropy", "mse"}
    assert choice.kl[choice.chosen] == min(choice.kl.values())
    assert q.config.calibration == choice.chosen and q.config.label == f"int8[{choice.chosen}]"
    assert {r.method.split(" ")[0] for r in q.ranges.values()} == {choice.chosen}
    # weight-only schemes have nothing to calibrate: no choice is made
    assert (
        quantize(
            digits_model.module, (1, 8, 8), digits_train.x[:8], QuantConfig("w8")
        ).calibration_choice
        is None
    )


@pytest.mark.parametrize(("reduce_range", "qmax"), [(True, 63), (False, 127)])
def test_int8_reduced_range_stores_seven_bit_weights_and_keeps_parity(
    digits_model: LoadedModel,
    digits_train: Dataset,
    digits_test: Dataset,
    reduce_range: bool,
    qmax: int,
) -> None:
    module = copy.deepcopy(digits_model.module)
    assert module is not None
    cfg = QuantConfig("int8", "minmax", reduce_range=reduce_range)
    q = quantize(module, (1, 8, 8), digits_train.x[:64], cfg, x_eval=digits_test.x[:64])
    ints = [
        onnx.numpy_helper.to_array(i)
        for i in q.onnx_model.graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("__q")
    ]
    assert ints and max(int(np.abs(a).max()) for a in ints) == qmax
    if reduce_range:  # 7-bit weights cannot saturate the 16-bit pair sums on any x86 CPU
        assert q.parity is not None and q.parity.max_abs_logit_diff < 1e-3


def test_candidates_sharing_one_prepared_module_are_the_ones_built_alone(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    from edgeproof.compress.quantize import Prepared

    module = copy.deepcopy(digits_model.module)
    assert module is not None
    x = digits_train.x[:48]
    prep = Prepared(module, (1, 8, 8), x)
    xt = torch.from_numpy(digits_test.x[:64])
    for cfg in (
        QuantConfig("int8"),  # auto: every method on the shared statistics
        QuantConfig("int8", "minmax"),
        QuantConfig("int8", "percentile", percentile=99.9),
        QuantConfig("w4", group_size=16),
    ):
        shared = quantize(module, (1, 8, 8), x, cfg, prepared=prep)
        alone = quantize(module, (1, 8, 8), x, cfg)
        assert shared.onnx_bytes() == alone.onnx_bytes(), cfg
        assert shared.ranges == alone.ranges and shared.config == alone.config
        with torch.no_grad():
            assert torch.equal(shared.sim(xt), alone.sim(xt))
    assert prep.onnx_stats() is prep.onnx_stats()  # ONNX Runtime calibrated once

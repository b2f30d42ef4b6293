"""Footprint: parameter/byte counts, MACs counted by hand, latency settings, ONNX graphs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeproof.checks.base import AuditContext
from edgeproof.checks.footprint import FootprintCheck
from edgeproof.errors import OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.runtime.latency import measure_latency
from edgeproof.runtime.macs import count_macs, flop_counter_macs, onnx_layer_costs
from edgeproof.spec import InputSpec, ThreatModel


def _fast(**settings: object) -> FootprintCheck:
    """A footprint check with a tiny timing budget (tests stay fast)."""
    return FootprintCheck(budget_s=0.05, min_runs=5, max_runs=50, warmup=1, **settings)  # type: ignore[arg-type]


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # out 8×16×16 = 2048 · (3·3·3 = 27) = 55296 MACs
        nn.BatchNorm2d(8),  # 2048 MACs (one per element)
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(512, 10),  # 10 · 512 = 5120 MACs
    ).eval()


def _ctx(model: LoadedModel, shape: tuple[int, ...]) -> AuditContext:
    return AuditContext(model, None, ThreatModel(InputSpec(shape)))


def _loaded(module: nn.Module, path: Path | None = None) -> LoadedModel:
    return LoadedModel(
        path=path, format="safetensors", module=module, weights=dict(module.state_dict())
    )


def test_macs_per_layer_match_hand_counts() -> None:
    layers = count_macs(_small_cnn(), torch.rand(1, 3, 16, 16))
    got = {c.name: (c.type, c.output_shape, c.params, c.macs) for c in layers}
    assert got == {
        "0": ("Conv2d", (1, 8, 16, 16), 8 * 27 + 8, 55296),
        "1": ("BatchNorm2d", (1, 8, 16, 16), 16, 2048),
        "5": ("Linear", (1, 10), 5130, 5120),
    }


def test_grouped_and_transposed_conv_macs() -> None:
    grouped = nn.Conv2d(4, 8, 3, groups=2)  # out 8×8×8 = 512 · (2·9) = 9216
    assert count_macs(grouped, torch.rand(1, 4, 10, 10))[0].macs == 9216
    up = nn.ConvTranspose1d(4, 6, 3)  # input 4·10 = 40 elements · 6 · 3 = 720
    assert count_macs(up, torch.rand(1, 4, 10))[0].macs == 720


def test_recurrent_macs_count_the_gate_products() -> None:
    x = torch.rand(1, 7, 6)
    lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True)
    # per step: 4·5·(6 + 5) = 220 (layer 1) + 4·5·(5 + 5) = 200 (layer 2); 7 steps
    assert count_macs(lstm, x)[0].macs == 7 * 420
    gru = nn.GRU(6, 5, batch_first=True, bidirectional=True)
    assert count_macs(gru, x)[0].macs == 2 * 7 * 3 * 5 * (6 + 5)


def test_hook_total_agrees_with_torch_flop_counter_for_conv_and_linear() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 7))
    x = torch.rand(1, 3, 16, 16)
    hooked = sum(c.macs or 0 for c in count_macs(net, x))
    assert hooked == 4 * 144 * 75 + 7 * 576
    assert flop_counter_macs(net, x) == hooked


def test_measure_latency_adapts_runs_to_the_budget() -> None:
    stats = measure_latency(lambda: time.sleep(0.002), batch=1, budget_s=0.05, min_runs=3)
    assert 3 <= stats.runs <= 25
    assert 2.0 <= stats.p50_ms <= stats.p95_ms
    capped = measure_latency(lambda: None, batch=1, budget_s=10.0, max_runs=40)
    assert capped.runs == 40


def test_check_reports_sizes_macs_latency_and_settings(tmp_path: Path) -> None:
    module = _small_cnn()
    path = tmp_path / "m.bin"
    path.write_bytes(b"x" * 1234)
    res = _fast().run(_ctx(_loaded(module, path), (3, 16, 16)))
    n_params = 224 + 16 + 5130
    assert res.metric("parameters").value == n_params
    assert res.metric("parameters").settings["by_dtype"] == {"float32": n_params}
    # buffers: running mean/var (2·8 float32) + num_batches_tracked (one int64)
    assert res.metric("weight_bytes").value == 4 * n_params + 4 * 16 + 8
    assert res.metric("file_bytes").value == 1234
    assert res.metric("macs").value == 55296 + 2048 + 5120
    for b in (1, 32):
        p50 = res.metric(f"latency_p50_b{b}_ms")
        assert 0 < p50.value <= res.metric(f"latency_p95_b{b}_ms").value
        assert p50.settings["torch_threads"] == torch.get_num_threads()
        assert p50.settings["batch"] == b and 5 <= p50.settings["runs"] <= 50
        assert "logical cores" in p50.settings["cpu"]
    assert res.metric("throughput_b32").value > 0
    assert res.metric("peak_rss_mib").value > 10
    assert res.metric("peak_rss_increase_mib").value >= 0
    layers = next(t for t in res.tables if t.name == "layers")
    assert [r[0] for r in layers.rows] == ["0", "1", "5"]
    json.dumps(res.to_json(), allow_nan=False)


def test_thread_setting_is_applied_and_stated() -> None:
    res = _fast(threads=1, batch_sizes=(1,)).run(_ctx(_loaded(_small_cnn()), (3, 16, 16)))
    assert res.metric("latency_p50_b1_ms").settings["torch_threads"] == 1
    with pytest.raises(KeyError):
        res.metric("latency_p50_b32_ms")


def test_layer_without_a_mac_rule_is_listed_and_reported() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    net = nn.Sequential(nn.Linear(3, 4), Scale()).eval()
    res = _fast(batch_sizes=(1,)).run(_ctx(_loaded(net), (3,)))
    assert res.metric("macs").value == 12
    rows = next(t for t in res.tables if t.name == "layers").rows
    assert rows[1][1] == "Scale" and rows[1][4] is None
    assert any("1 layer(s) with parameters have no MAC rule" in f.message for f in res.findings)


def _onnx_cnn(path: Path, batch: int | str) -> Path:
    """Conv(2→4, 3×3) → Relu → Flatten → Gemm(4·6·6 → 5), built by hand."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    fw = numpy_helper.from_array(rng.normal(size=(5, 144)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(5, np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        [w, b, fw, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime of this era reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _loaded_onnx(path: Path) -> LoadedModel:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    weights = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
        for i in onnx.load(str(path)).graph.initializer
    }
    return LoadedModel(path=path, format="onnx", session=session, weights=weights)


def test_onnx_graph_macs_match_hand_counts(tmp_path: Path) -> None:
    path = _onnx_cnn(tmp_path / "m.onnx", "N")
    costs = {
        c.name: (c.type, c.output_shape, c.params, c.macs)
        for c in onnx_layer_costs(path, (2, 8, 8))
    }
    assert costs == {
        "conv": ("Conv", (1, 4, 6, 6), 76, 144 * 18),
        "fc": ("Gemm", (1, 5), 725, 5 * 144),
    }


def test_onnx_model_is_timed_in_its_own_session_with_stated_threads(tmp_path: Path) -> None:
    path = _onnx_cnn(tmp_path / "m.onnx", "N")
    res = _fast(threads=1).run(_ctx(_loaded_onnx(path), (2, 8, 8)))
    s = res.metric("latency_p50_b32_ms").settings
    assert (s["backend"], s["intra_op_threads"]) == ("onnxruntime", 1)
    assert res.metric("macs").value == 144 * 18 + 5 * 144
    assert res.metric("parameters").value == 76 + 725
    assert res.metric("file_bytes").value == path.stat().st_size


def test_onnx_graph_with_fixed_batch_skips_batch_32_with_a_reason(tmp_path: Path) -> None:
    path = _onnx_cnn(tmp_path / "fixed.onnx", 1)
    res = _fast().run(_ctx(_loaded_onnx(path), (2, 8, 8)))
    assert res.metric("latency_p50_b1_ms").value > 0
    msgs = [f.message for f in res.findings]
    assert any("batch 32 not timed: the ONNX graph's input has a fixed batch" in m for m in msgs)


def test_digits_model_hook_total_matches_flop_counter(digits_model) -> None:  # type: ignore[no-untyped-def]
    assert digits_model.module is not None and digits_model.spec is not None
    ctx = AuditContext(digits_model, None, ThreatModel(digits_model.spec))
    start = time.perf_counter()
    res = _fast().run(ctx)
    assert time.perf_counter() - start < 5
    x = torch.rand(1, *digits_model.spec.shape)
    # LeNet-5 has only Conv2d and Linear layers, which both counters see the same way.
    assert res.metric("macs").value == flop_counter_macs(digits_model.module, x)
    assert res.metric("parameters").value == sum(
        p.numel() for p in digits_model.module.parameters()
    )


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"budget_s": 0}, "footprint.budget_s: 0 is not positive. use e.g. 1.0"),
        ({"batch_sizes": (0,)}, r"footprint.batch_sizes: \[0\] is invalid. use e.g. 1,32"),
        ({"threads": 0}, "footprint.threads: 0 threads. use 1 or more"),
    ],
)
def test_invalid_settings_are_rejected_naming_the_option(
    settings: dict[str, object], text: str
) -> None:
    with pytest.raises(OptionError, match=text):
        FootprintCheck(**settings)  # type: ignore[arg-type]


def test_exported_static_batch_graph_falls_back_to_flop_counter_and_skips_batch_32() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 7))
    graph = torch.export.export(net.eval(), (torch.rand(1, 3, 16, 16),)).module()
    lm = LoadedModel(path=None, format="torch-export", module=graph, weights={})
    res = _fast().run(_ctx(lm, (3, 16, 16)))
    assert res.metric("macs").value == 4 * 144 * 75 + 7 * 576
    assert "FlopCounterMode" in res.metric("macs").settings["source"]
    assert not [t for t in res.tables if t.name == "layers"]
    msgs = [f.message for f in res.findings]
    assert any(m.startswith("no per-layer MAC table:") for m in msgs)
    assert any(m.startswith("batch 32 not timed: the model rejected a batch of 32") for m in msgs)
    assert res.metric("latency_p50_b1_ms").value > 0


def test_slow_model_gets_fewer_runs_than_min_runs_to_respect_the_budget() -> None:
    start = time.perf_counter()
    stats = measure_latency(lambda: time.sleep(0.02), batch=1, budget_s=0.03, warmup=3, min_runs=10)
    # 10 calls would take 0.2 s > 3 budgets: the floor drops to 3 calls; warm-up stops early.
    assert stats.runs == 3
    assert stats.warmup == 2
    assert time.perf_counter() - start < 0.2

"""Mixed precision: per-layer sensitivity, σ clustering, KL-guided allocation under budgets."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from edgeproof.compress.context import BuildContext
from edgeproof.compress.mixed import (
    AllocationSettings,
    SizeModel,
    allocate,
    layer_sensitivity,
    quantizable_layers,
    sigma_clusters,
)
from edgeproof.compress.quantize import fold_batchnorm
from edgeproof.compress.recipes import default_recipes
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import build_model
from edgeproof.runtime.ort import make_session, run_session
from edgeproof.spec import InputSpec

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def lenet(digits_model: LoadedModel) -> torch.nn.Module:
    assert digits_model.module is not None
    return copy.deepcopy(digits_model.module).eval()


@pytest.fixture(scope="module")
def sizes(lenet: torch.nn.Module, digits_train: Dataset) -> SizeModel:
    return SizeModel.fit(lenet, SHAPE, digits_train.x[:16])


def test_eight_bit_layer_sensitivity_is_near_zero_and_four_bit_is_larger(
    lenet: torch.nn.Module, digits_train: Dataset
) -> None:
    rep = layer_sensitivity(lenet, digits_train.x[:128], digits_train.y[:128])
    layers = {r.layer for r in rep.rows}
    assert len(layers) >= 3 and len(rep.rows) == 2 * len(layers)
    for name in layers:
        r4 = next(r for r in rep.rows if r.layer == name and r.bits == 4)
        r8 = next(r for r in rep.rows if r.layer == name and r.bits == 8)
        assert r8.kl < 1e-4 and abs(r8.accuracy_change) <= 1 / 128
        assert r4.kl > 10 * r8.kl
        assert r8.sqnr_db > r4.sqnr_db + 15  # ~6 dB per bit
    assert rep.labels == "given" and rep.samples == 128


def test_sensitivity_by_type_summarises_conv_lstm_and_linear_layers() -> None:
    torch.manual_seed(0)
    module = build_model("cnn-lstm", (1, 32), 3).eval()
    x = np.random.default_rng(0).standard_normal((32, 1, 32)).astype(np.float32)
    rep = layer_sensitivity(module, x)
    assert rep.labels == "fp32-predictions"
    by = {(t.kind, t.bits): t for t in rep.by_type()}
    assert set(by) == {(k, b) for k in ("conv", "lstm", "linear") for b in (4, 8)}
    lstm4 = [r for r in rep.rows if r.kind == "lstm" and r.bits == 4]
    assert by[("lstm", 4)].layers == len(lstm4) == 1
    assert by[("lstm", 4)].mean_kl == pytest.approx(lstm4[0].kl)
    assert rep.type_table().rows[0][0] == "conv"


def test_sigma_clusters_split_low_and_high_spread() -> None:
    labels, thr = sigma_clusters([0.10, 0.5, 0.11, 0.52, 0.09])
    assert labels == [0, 1, 0, 1, 0]
    assert 0.11 < thr < 0.5
    assert sigma_clusters([0.2, 0.2])[0] == [1, 1]


def test_size_model_predicts_the_serialised_onnx_size(
    lenet: torch.nn.Module, digits_train: Dataset, sizes: SizeModel
) -> None:
    names = list(sizes.layer_bytes)
    plan = {n: (4 if i % 2 else 8) for i, n in enumerate(names)}
    a = allocate(
        lenet,
        SHAPE,
        digits_train.x[:64],
        digits_train.y[:64],
        AllocationSettings(max_size=sizes.estimate(plan)),
        size_model=sizes,
    )
    assert abs(a.size_bytes - a.estimated_size) <= 8


def test_allocator_respects_a_size_budget_and_runs_in_onnxruntime(
    lenet: torch.nn.Module, digits_train: Dataset, digits_test: Dataset, sizes: SizeModel
) -> None:
    budget = (sizes.smallest + sizes.estimate({})) // 2
    a = allocate(
        lenet,
        SHAPE,
        digits_train.x[:128],
        digits_train.y[:128],
        AllocationSettings(max_size=budget),
        size_model=sizes,
        x_eval=digits_test.x,
        y_eval=digits_test.y,
    )
    assert a.met_size and a.size_bytes <= budget
    assert 0 < len(a.low_bit_layers) < len(a.bits)
    assert any(s.reason in ("size", "fill") for s in a.steps)
    # the accuracy reported is that of the executed QDQ graph
    logits = run_session(make_session(a.quantized.onnx_model), digits_test.x)[0]
    assert a.accuracy == pytest.approx(float((logits.argmax(1) == digits_test.y).mean()))
    n_int4 = sum(
        t.data_type == onnx.TensorProto.INT4
        for t in a.quantized.onnx_model.graph.initializer
        if t.name.endswith("__q")
    )
    assert n_int4 == len(a.low_bit_layers)
    assert a.accuracy >= a.fp32_accuracy - 0.03


def test_a_size_budget_nobody_can_meet_says_so_and_keeps_the_smallest_plan(
    lenet: torch.nn.Module, digits_train: Dataset, sizes: SizeModel
) -> None:
    a = allocate(
        lenet,
        SHAPE,
        digits_train.x[:64],
        digits_train.y[:64],
        AllocationSettings(max_size=1000),
        size_model=sizes,
    )
    assert not a.met_size and not a.met_budget
    assert dict(a.bits) == sizes.smallest_plan
    assert "max_size 1000 B cannot be met: the smallest plan (4 bits wherever that saves " in (
        a.message
    )
    assert a.size_bytes == pytest.approx(sizes.smallest, abs=8)


class _TinyHead(torch.nn.Module):
    """A conv body plus a 16→3 head: 48 weights, too few for 4-bit group scales to pay off."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.fc1 = torch.nn.Linear(16 * 64, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def test_allocator_never_lowers_a_layer_whose_4_bit_form_is_larger() -> None:
    torch.manual_seed(0)
    module = _TinyHead().eval()
    x = np.random.default_rng(0).random((32, *SHAPE), dtype=np.float32)
    sizes = SizeModel.fit(module, SHAPE, x)
    assert sizes.saving("fc2") < 0 < sizes.saving("fc1")
    assert sizes.smallest_plan == {"conv": 4 if sizes.saving("conv") > 0 else 8, "fc1": 4, "fc2": 8}
    assert sizes.smallest < sizes.estimate({n: 4 for n in sizes.layer_bytes})
    # an impossible budget: lower everything that helps, nothing that hurts
    a = allocate(module, SHAPE, x, settings=AllocationSettings(max_size=100), size_model=sizes)
    assert a.bits["fc2"] == 8 and dict(a.bits) == sizes.smallest_plan
    assert a.size_bytes == pytest.approx(sizes.smallest, abs=8)
    # every step that lowers bits makes the estimated plan smaller
    est = sizes.estimate(a.initial_bits)
    for step in a.steps:
        if step.to_bits < step.from_bits:
            assert step.estimated_size < est
        est = step.estimated_size


def test_simulation_uses_per_channel_scales_for_8_bit_and_groups_for_4_bit(
    lenet: torch.nn.Module,
) -> None:
    from edgeproof.compress.mixed.sensitivity import PlanSimulator
    from edgeproof.compress.weights import fake_quantize_weight

    sim = PlanSimulator(lenet, 32)
    name = max(sim.layers, key=lambda ly: ly.params).name
    w = dict(sim.model.named_modules())[name].weight.detach().numpy()
    got8 = sim._q[(name, 8)][0].numpy()
    got4 = sim._q[(name, 4)][0].numpy()
    np.testing.assert_array_equal(got8, fake_quantize_weight(w, 0, 8, None))
    assert not np.array_equal(got8, fake_quantize_weight(w, 0, 8, 32))
    np.testing.assert_array_equal(got4, fake_quantize_weight(w, 0, 4, 32))


def test_an_accuracy_budget_nobody_can_meet_says_so_and_keeps_the_best_found(
    lenet: torch.nn.Module, digits_train: Dataset, digits_test: Dataset, sizes: SizeModel
) -> None:
    # fp32 predictions as labels: at the all-4-bit size some test record always flips.
    a = allocate(
        lenet,
        SHAPE,
        digits_train.x[:64],
        settings=AllocationSettings(max_size=sizes.smallest, max_drop=0.0),
        size_model=sizes,
        x_eval=digits_test.x,
    )
    assert a.met_size and not a.met_accuracy
    assert a.fp32_accuracy == 1.0 and a.accuracy < 1.0
    assert "max_drop 0.0000 not met: best found drops" in a.message
    assert a.quantized.onnx_model is not None


def test_accuracy_budget_alone_shrinks_only_while_the_drop_holds(
    lenet: torch.nn.Module, digits_train: Dataset, sizes: SizeModel
) -> None:
    a = allocate(
        lenet,
        SHAPE,
        digits_train.x[:128],
        digits_train.y[:128],
        AllocationSettings(max_drop=0.02),
        size_model=sizes,
    )
    assert a.met_accuracy
    assert {s.reason for s in a.steps} <= {"accuracy", "shrink"}
    assert all(s.accuracy >= a.sensitivity.fp32_accuracy - 0.02 for s in a.steps)


def test_allocation_is_deterministic_under_seed(
    lenet: torch.nn.Module, digits_train: Dataset, sizes: SizeModel
) -> None:
    budget = (sizes.smallest + sizes.estimate({})) // 2
    x, y = digits_train.x[:200], digits_train.y[:200]
    settings = AllocationSettings(max_size=budget, samples=48, seed=3)
    a = allocate(lenet, SHAPE, x, y, settings, size_model=sizes)
    b = allocate(lenet, SHAPE, x, y, settings, size_model=sizes)
    assert a.bits == b.bits and a.steps == b.steps and a.sensitivity == b.sensitivity
    assert a.quantized.onnx_bytes() == b.quantized.onnx_bytes()


def test_bad_budgets_and_bits_name_the_option(
    lenet: torch.nn.Module, digits_train: Dataset
) -> None:
    with pytest.raises(OptionError, match=r"max_drop: 1.5 is not in \[0, 1\]"):
        allocate(lenet, SHAPE, digits_train.x[:8], settings=AllocationSettings(max_drop=1.5))
    with pytest.raises(OptionError, match=r"max_size: 0 bytes is not positive"):
        allocate(lenet, SHAPE, digits_train.x[:8], settings=AllocationSettings(max_size=0))
    with pytest.raises(OptionError, match=r"bits: 3-bit sensitivity is not supported"):
        layer_sensitivity(lenet, digits_train.x[:8], bits=(3,))
    with pytest.raises(SpecError, match=r"x_calib: calibration data has sample shape \(1, 16\)"):
        allocate(lenet, SHAPE, np.zeros((4, 1, 16), np.float32))


def test_search_recipes_include_mixed_precision_candidates_that_execute() -> None:
    torch.manual_seed(0)
    module = build_model("cnn-lstm", (1, 32), 3).eval()
    x = np.random.default_rng(1).standard_normal((32, 1, 32)).astype(np.float32)
    recipes = {r.name: r for r in default_recipes()}
    assert {"mixed-s50", "mixed-d1"} <= set(recipes)
    calib = Dataset(x, np.zeros(len(x), np.int64), ["a", "b", "c"], "random", "npz")
    built = recipes["mixed-s50"].apply(module, BuildContext(InputSpec(shape=(1, 32)), calib))
    assert built.settings["scheme"] == "mixed" and built.artefact is not None
    bits = built.settings["bits"]
    layers = quantizable_layers(fold_batchnorm(module))
    assert isinstance(bits, dict) and set(bits) == {ly.name for ly in layers}
    assert {ly.kind for ly in layers} == {"conv", "lstm", "linear"}
    logits = run_session(make_session(built.artefact.onnx_bytes), x[:4])[0]
    assert logits.shape == (4, 3)

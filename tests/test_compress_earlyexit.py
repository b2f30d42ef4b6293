"""Early exits: split points, frozen-backbone head training, threshold calibration, ORT cascade."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.cli import build_parser
from edgeproof.compress.api import compress
from edgeproof.compress.earlyexit import (
    EarlyExitConfig,
    EarlyExitModel,
    ExitRule,
    OrtCascade,
    attach_exits,
    calibrate_thresholds,
    cascade_predict,
    evaluate_early_exit,
    exit_costs,
    exit_scores,
    export_segments,
    mac_costs,
    train_exit_heads,
)
from edgeproof.compress.search import Budget
from edgeproof.data.dataset import Dataset
from edgeproof.errors import NotApplicableError, OptionError
from edgeproof.methods.stats import wilson_interval
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import build_model

SHAPES = {
    "resnet8": ((1, 8, 8), 3),
    "resnet20": ((1, 8, 8), 3),
    "resnet18": ((3, 8, 8), 4),
    "lenet5": ((1, 8, 8), 3),
    "mlp": ((1, 8, 8), 2),
    "cnn1d": ((2, 16), 0),  # exits counted from the conv blocks in the test
    "cnn-lstm": ((2, 16), 0),
}


def _random_data(shape: tuple[int, ...], n: int, k: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.random((n, *shape)).astype(np.float32) + y.reshape(-1, *([1] * len(shape))) * 0.3
    return Dataset(x, y, [str(c) for c in range(k)], "synthetic", "npz", kind="timeseries")


@pytest.fixture(scope="module")
def digits_exits(digits_model: LoadedModel, digits_train: Dataset) -> EarlyExitModel:
    """The shared LeNet-5 with exit heads trained on 600 training records."""
    assert digits_model.module is not None
    model = attach_exits(digits_model.module, (1, 8, 8), 10)
    train_exit_heads(model, digits_train.subset(np.arange(600)), epochs=30, seed=0)
    return model


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_stages_compose_to_the_backbone_and_their_macs_sum_to_its_macs(arch: str) -> None:
    shape, exits = SHAPES[arch]
    torch.manual_seed(0)
    backbone = build_model(arch, shape, 5)
    convs_1d = sum(isinstance(m, nn.Conv1d) for m in backbone.modules())
    exits = {"cnn1d": convs_1d, "cnn-lstm": convs_1d + 1}.get(arch, exits)  # one per conv block
    model = attach_exits(backbone, shape, 5)
    assert model.num_exits == exits
    x = torch.rand(3, *shape)
    with torch.no_grad():
        outs = model(x)
        assert torch.allclose(outs[-1], backbone(x), atol=1e-5)
    assert [tuple(o.shape) for o in outs] == [(3, 5)] * exits
    stage, head, full = mac_costs(model)
    assert sum(stage) == full > 0
    assert all(h > 0 for h in head)
    costs = exit_costs(model)
    assert np.all(np.diff(costs) > 0), "a later exit must cost more than an earlier one"


def test_head_training_leaves_the_backbone_weights_and_batchnorm_statistics_unchanged() -> None:
    torch.manual_seed(0)
    backbone = build_model("resnet8", (1, 8, 8), 3)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = _random_data((1, 8, 8), 96, 3)
    model = attach_exits(backbone, (1, 8, 8), 3)
    init_heads = [p.detach().clone() for p in model.heads.parameters()]
    train_exit_heads(model, data, epochs=3, seed=0)
    after = model.backbone.state_dict()
    assert set(after) == set(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), f"backbone tensor {name} changed"
        assert torch.equal(backbone.state_dict()[name], value), f"caller's {name} changed"
    trained = list(model.heads.parameters())
    assert all(not torch.equal(p, p0) for p, p0 in zip(trained, init_heads)), "heads not trained"


def test_head_training_is_deterministic_for_a_seed() -> None:
    torch.manual_seed(0)
    backbone = build_model("cnn1d", (2, 16), 3)
    data = _random_data((2, 16), 64, 3)
    weights = []
    for _ in range(2):
        model = attach_exits(backbone, (2, 16), 3)
        train_exit_heads(model, data, epochs=3, seed=7)
        weights.append([p.detach().clone() for p in model.heads.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


@pytest.mark.parametrize("criterion", ["max_softmax", "entropy"])
@pytest.mark.parametrize("max_drop", [0.0, 0.02])
def test_calibrated_thresholds_meet_the_accuracy_budget_on_calibration_data(
    digits_exits: EarlyExitModel, digits_test: Dataset, criterion: str, max_drop: float
) -> None:
    calib = digits_test.subset(np.arange(180))
    cal = calibrate_thresholds(digits_exits, calib, max_drop=max_drop, criterion=criterion)  # type: ignore[arg-type]
    out = cascade_predict(digits_exits, cal.rule, calib.x)
    full = float((digits_exits(torch.from_numpy(calib.x))[-1].argmax(1).numpy() == calib.y).mean())
    acc = float((out.pred == calib.y).mean())
    assert acc >= full - max_drop - 1e-12
    assert cal.full_accuracy == pytest.approx(full)
    assert cal.cascade_accuracy == pytest.approx(acc)
    rates = np.bincount(out.exit_index, minlength=digits_exits.num_exits) / len(calib)
    assert cal.exit_rates == pytest.approx(tuple(rates))
    # the budget is not met by switching every exit off: some samples do leave early
    assert rates[:-1].sum() > 0.2
    assert cal.expected_macs == pytest.approx(
        float(exit_costs(digits_exits)[out.exit_index].mean())
    )
    assert cal.expected_macs < cal.full_macs


def test_a_larger_accuracy_budget_never_costs_more_macs(
    digits_exits: EarlyExitModel, digits_test: Dataset
) -> None:
    calib = digits_test.subset(np.arange(180))
    macs = [
        calibrate_thresholds(digits_exits, calib, max_drop=d).expected_macs
        for d in (0.0, 0.01, 0.05)
    ]
    assert macs[0] >= macs[1] >= macs[2]


@pytest.mark.parametrize(
    "rule",
    [
        ExitRule("max_softmax", (1.0001, 1.0001)),
        ExitRule("max_softmax", (math.inf, math.inf)),
        ExitRule("entropy", (-1e-9, -1e-9)),
    ],
)
def test_thresholds_beyond_reach_send_everyone_to_the_final_exit_with_backbone_predictions(
    digits_exits: EarlyExitModel, digits_model: LoadedModel, digits_test: Dataset, rule: ExitRule
) -> None:
    assert digits_model.module is not None
    out = cascade_predict(digits_exits, rule, digits_test.x)
    with torch.no_grad():
        want = digits_model.module(torch.from_numpy(digits_test.x)).numpy()
    assert np.all(out.exit_index == digits_exits.num_exits - 1)
    np.testing.assert_array_equal(out.pred, want.argmax(1))
    np.testing.assert_allclose(out.logits, want, atol=1e-5)


def test_ort_cascade_predictions_and_exits_equal_the_pytorch_cascade(
    digits_exits: EarlyExitModel, digits_test: Dataset
) -> None:
    calib, evaluation = digits_test.subset(np.arange(180)), digits_test.subset(np.arange(180, 360))
    rule = calibrate_thresholds(digits_exits, calib, max_drop=0.02).rule
    ort = OrtCascade(export_segments(digits_exits), rule).run(evaluation.x)
    ref = cascade_predict(digits_exits, rule, evaluation.x)
    assert len(set(ref.exit_index.tolist())) >= 2, "parity needs samples at several exits"
    np.testing.assert_array_equal(ort.exit_index, ref.exit_index)
    np.testing.assert_array_equal(ort.pred, ref.pred)
    np.testing.assert_allclose(ort.logits, ref.logits, atol=1e-4)
    assert ort.latency_ms is not None and np.all(ort.latency_ms > 0)


def test_ort_cascade_runs_the_lstm_backbone_with_parity() -> None:
    torch.manual_seed(0)
    backbone = build_model("cnn-lstm", (2, 16), 3)
    data = _random_data((2, 16), 64, 3)
    model = attach_exits(backbone, (2, 16), 3)
    train_exit_heads(model, data, epochs=5, seed=0)
    logits = model(torch.from_numpy(data.x))[0].detach().numpy()
    median = float(np.median(exit_scores(logits, "max_softmax")))
    later_off = (math.inf,) * (model.num_exits - 2)
    rule = ExitRule("max_softmax", (median + 1e-4, *later_off))
    report = evaluate_early_exit(model, rule, data)
    assert report.parity.prediction_agreement == 1.0
    assert report.parity.exit_agreement == 1.0
    assert 0 < report.exits[0].exits < len(data)


def test_report_counts_exits_accuracy_macs_and_latency_consistently(
    digits_exits: EarlyExitModel, digits_test: Dataset
) -> None:
    calib, evaluation = digits_test.subset(np.arange(180)), digits_test.subset(np.arange(180, 360))
    rule = calibrate_thresholds(digits_exits, calib, max_drop=0.02).rule
    rep = evaluate_early_exit(digits_exits, rule, evaluation)
    assert sum(e.exits for e in rep.exits) == len(evaluation)
    assert sum(e.exit_rate for e in rep.exits) == pytest.approx(1.0)
    correct = int((rep.predictions == evaluation.y).sum())
    assert rep.accuracy_ci == wilson_interval(correct, len(evaluation))
    assert rep.expected_macs == pytest.approx(sum(e.exit_rate * e.macs for e in rep.exits))
    assert rep.expected_macs < rep.full_macs
    for e in rep.exits:
        if e.exits:
            mask = rep.exit_index == e.index
            assert e.accuracy == pytest.approx(
                float((rep.predictions[mask] == evaluation.y[mask]).mean())
            )
            assert e.mean_latency_ms is not None and e.mean_latency_ms > 0
            assert e.p50_latency_ms is not None and e.p50_latency_ms > 0
    assert rep.latency_p95_ms >= rep.latency_p50_ms > 0 and rep.full_latency_mean_ms > 0
    assert rep.table().columns[0] == "exit" and len(rep.table().rows) == digits_exits.num_exits
    assert rep.to_json()["rule"]["criterion"] == "max_softmax"


def test_exit_rule_rejects_a_wrong_threshold_count_and_an_unknown_criterion(
    digits_exits: EarlyExitModel, digits_test: Dataset
) -> None:
    with pytest.raises(
        OptionError, match=r"1 thresholds for 2 exits.*one threshold per early exit"
    ):
        cascade_predict(digits_exits, ExitRule("max_softmax", (0.9,)), digits_test.x[:4])
    with pytest.raises(OptionError, match="criterion: unknown criterion 'margin'"):
        ExitRule("margin", (0.9, 0.9))  # type: ignore[arg-type]


def test_an_architecture_without_split_points_is_rejected_with_the_fix() -> None:
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(
        NotApplicableError, match=r"no split points are known for Sequential.*register_splitter"
    ):
        attach_exits(module, (1, 8, 8), 10)


def test_compress_adds_an_early_exit_row_with_wilson_ci_and_expected_macs(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    module = copy.deepcopy(digits_model.module)
    res = compress(
        module,
        digits_model.spec,
        digits_test,
        budget=Budget(max_drop=0.02),
        calib_size=180,
        checks=(),
        recipes=[],
        early_exit=EarlyExitConfig(epochs=20),
    )
    [row] = res.ledger.candidates
    assert row.technique == "early-exit" and row.name == "early-exit-max-softmax"
    n = len(digits_test) - 180
    assert row.accuracy_ci == wilson_interval(round(row.accuracy * n), n)
    assert row.expected_macs is not None and row.expected_macs < row.settings["full_macs"]
    assert row.parity is not None and row.parity.top1_agreement == 1.0
    table = res.ledger.table()
    assert table.rows[1][table.columns.index("expected_macs")] == round(row.expected_macs)
    assert res.ledger.to_json()["candidates"][0]["expected_macs"] == row.expected_macs


def test_cli_maps_early_exit_options() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "compress",
            "m.safetensors",
            "--data",
            "d.npz",
            "--out",
            "o",
            "--early-exit",
            "--exit-criterion",
            "entropy",
        ]
    )
    assert args.early_exit is True and args.exit_criterion == "entropy"
    args = parser.parse_args(["compress", "m.safetensors", "--data", "d.npz", "--out", "o"])
    assert args.early_exit is False

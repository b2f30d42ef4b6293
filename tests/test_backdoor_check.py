"""The ``backdoor`` check and scan_model: registered, data-free and with data, refusals, and the
detectors' measured separation on a small population."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from edgeproof.checks import available_checks, get_check
from edgeproof.checks.base import AuditContext
from edgeproof.data.dataset import Dataset
from edgeproof.methods.backdoor import (
    FreeEagleConfig,
    NeuralCleanseConfig,
    NotAClassifierError,
    neural_cleanse,
    scan_model,
    shipped_thresholds,
)
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module, load_model
from edgeproof.spec import ThreatModel
from edgeproof.testing.backdoor import PopulationSpec, make_population


def _ctx(model: LoadedModel, data: Dataset | None = None) -> AuditContext:
    assert model.spec is not None
    return AuditContext(model=model, data=data, threat=ThreatModel(model.spec))


def test_backdoor_check_is_registered_with_headline_metrics() -> None:
    assert "backdoor" in available_checks()
    check = get_check("backdoor")
    assert check.headline and not check.needs_data and not check.needs_forward


def test_shipped_thresholds_name_their_population_and_fpr() -> None:
    th = shipped_thresholds()
    assert 0 < th.fpr < 1
    assert th.population["seed"] is not None
    for det in ("final-layer", "head-probe", "freeeagle"):
        t = th.lookup(det, "zoo:lenet5")
        assert t is not None and t.n_clean >= 5
        assert th.lookup(det, "zoo:never-seen") == th.by_detector[det]["*"]


def test_data_free_scan_of_a_clean_model(digits_model: LoadedModel) -> None:
    check = get_check("backdoor", freeeagle_steps=100)
    res = check.run(_ctx(digits_model))
    names = {m.name for m in res.metrics}
    assert {
        "flagged_detectors",
        "final_layer_score",
        "head_probe_score",
        "freeeagle_score",
    } <= names
    assert set(check.headline) <= names
    table = res.tables[0]
    assert len(table.rows) == 10 and table.columns[0] == "class"
    assert res.figures and res.figures[0].svg.startswith("<svg")


def test_weights_only_model_gets_the_final_layer_detector_only(digits_model_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    bare = digits_model_path.parent / "bare.safetensors"
    save_file(load_file(str(digits_model_path)), str(bare))
    model = load_model(bare)
    assert model.module is None
    scan = scan_model(model)
    assert [v.result.detector for v in scan.verdicts] == ["final-layer"]
    assert set(scan.skipped) == {"head-probe", "freeeagle"}


def test_not_a_classifier_is_refused(digits_model: LoadedModel) -> None:
    assert digits_model.module is not None
    body = copy.deepcopy(digits_model.module)
    assert isinstance(body, nn.Sequential)
    feats = from_module(nn.Sequential(*list(body)[:-2]), spec=digits_model.spec)
    with pytest.raises(NotAClassifierError, match="has 84 outputs but the model declares 10"):
        get_check("backdoor").run(_ctx(feats))
    relu_out = from_module(nn.Sequential(*list(body), nn.Softmin(dim=1)), spec=digits_model.spec)
    with pytest.raises(NotAClassifierError, match="not a monotone function"):
        get_check("backdoor").run(_ctx(relu_out))


def test_with_data_runs_neural_cleanse_and_strip_within_budget(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    check = get_check(
        "backdoor", freeeagle_steps=50, nc_epochs=3, max_clean_samples=64, trigger_inversion=True
    )
    res = check.run(_ctx(digits_model, digits_test))
    nc = res.metric("neural_cleanse_anomaly_index")
    assert np.isfinite(nc.value)
    assert 0.0 <= res.metric("strip_flagged_fraction").value <= 1.0
    assert any(f.name == "reversed_trigger" for f in res.figures)


@pytest.mark.slow  # trains 6 MLPs and inverts 10 triggers (about 20 s on one core)
def test_small_population_separates_as_measured(tmp_path: Path) -> None:
    """FreeEagle's measured AUROC on the MLP evaluation population (docs/benchmarks/backdoor.md)
    was 0.71 [0.52, 0.88]; on 3 clean + 3 BadNets models it must reach that minus a 0.2 margin,
    and Neural Cleanse must find the BadNets target."""
    spec = PopulationSpec(
        archs=("zoo:mlp",),
        clean_per_arch=3,
        backdoored_per_arch=3,
        families=("badnets",),
        poison_rate=(0.1, 0.15),
        seed=7,
    )
    pop = make_population(spec, tmp_path)
    bad = pop.with_label("backdoored")
    clean = pop.with_label("clean")
    assert len(bad) >= 2 and len(clean) == 3
    cfg = FreeEagleConfig(steps=300)
    s_bad = [
        scan_model(load_model(m.path), freeeagle_config=cfg).verdict("freeeagle").result.score
        for m in bad
    ]
    s_clean = [
        scan_model(load_model(m.path), freeeagle_config=cfg).verdict("freeeagle").result.score
        for m in clean
    ]
    auc = np.mean([[float(b > c) + 0.5 * float(b == c) for c in s_clean] for b in s_bad])
    assert auc >= 0.71 - 0.2
    from edgeproof.data.loading import load_data

    x = load_data("builtin:digits").x[:128]
    m = bad[0]
    module = load_model(m.path).module
    assert module is not None
    res, _ = neural_cleanse(module, x, (0.0, 1.0), 10, config=NeuralCleanseConfig(epochs=15))
    assert res.suspected_target == m.target

"""Verified accuracy in the compression ledger: ``certify`` re-audits every candidate at the
threat model's smallest ε (CROWN, 50 records), and says what it proves for quantized ones."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgeproof.certify import certify_model
from edgeproof.compress.quantize import QuantConfig, quantize
from edgeproof.compress.reaudit import (
    QUANTIZED_CERTIFY_NOTE,
    REAUDIT_SETTINGS,
    reaudit,
    straight_through,
)
from edgeproof.compress.search import Budget, default_recipes, search
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel
from edgeproof.results import Metric
from edgeproof.spec import ThreatModel

EPS = (0.004, 0.1)


@pytest.fixture(scope="module")
def int8_sim(digits_model: LoadedModel, digits_train: Dataset) -> torch.nn.Module:
    assert digits_model.module is not None and digits_model.spec is not None
    q = quantize(
        digits_model.module, digits_model.spec.shape, digits_train.x[:128], QuantConfig("int8")
    )
    return q.sim


def _by_name(metrics: tuple[Metric, ...]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def test_certify_reaudits_at_the_smallest_eps_with_crown_and_notes_what_a_quantized_proof_covers(
    int8_sim: torch.nn.Module, digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    audit = digits_test.subset(np.arange(60))
    threat = ThreatModel(digits_model.spec, eps=EPS)
    result = reaudit(int8_sim, threat, audit, checks=("calibration", "certify"))
    assert [c.check for c in result.checks] == ["calibration", "certify"]
    assert all(c.status == "ok" for c in result.checks), result.checks
    m = _by_name(result.metrics)
    verified = m["certify.verified_accuracy"]
    assert verified.settings["eps"] == EPS[0]
    assert verified.settings["samples"] == REAUDIT_SETTINGS["certify"]["max_samples"]
    assert "certify.verified_accuracy.crown@0.004" in m
    assert "certify.verified_accuracy.ibp@0.004" not in m  # CROWN alone
    assert QUANTIZED_CERTIFY_NOTE in result.notes
    # the number is what certify_model proves on the same straight-through fake-quant module
    wrapped, _ = straight_through(int8_sim)
    rng = np.random.default_rng(0)
    index = np.sort(rng.choice(len(audit), size=50, replace=False))
    direct = certify_model(
        copy.deepcopy(wrapped),
        audit.x[index],
        audit.y[index],
        digits_model.spec,
        EPS[0],
        methods=("crown",),
        pgd_steps=10,
    )
    assert verified.value == pytest.approx(direct.verified_accuracy(EPS[0]))
    assert 0.3 < verified.value <= 1.0


def test_a_float_candidate_gets_no_quantization_note(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    audit = digits_test.subset(np.arange(20))
    threat = ThreatModel(digits_model.spec, eps=EPS)
    result = reaudit(
        digits_model.module,
        threat,
        audit,
        checks=("certify",),
        settings={"certify": {"methods": ("crown",), "max_samples": 20, "pgd_steps": 0}},
    )
    assert result.checks[0].status == "ok"
    assert QUANTIZED_CERTIFY_NOTE not in result.notes


def test_ledger_shows_verified_accuracy_at_the_smallest_eps_for_fp32_and_int8(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    recipes = [r for r in default_recipes() if r.name == "int8-percentile"]
    ledger = search(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_train.subset(np.arange(128)),
        digits_test.subset(np.arange(80)),
        Budget(time_budget_s=60),
        recipes=recipes,
        threat=ThreatModel(digits_model.spec, eps=EPS),
        checks=("certify",),
    )
    table = ledger.table()
    idx = {c: i for i, c in enumerate(table.columns)}
    assert "verified_acc" in idx
    values = {r[idx["candidate"]]: r[idx["verified_acc"]] for r in table.rows}
    assert set(values) == {"fp32", "int8-percentile"}
    assert all(isinstance(v, float) and 0 < v <= 1 for v in values.values()), values
    assert "smallest ε = 0.004" in table.description
    assert "fake-quant simulation" in table.description
    assert ledger.to_json()["certify_threat"]["eps"] == [EPS[0]]
    int8 = next(c for c in ledger.candidates if c.name == "int8-percentile")
    assert QUANTIZED_CERTIFY_NOTE in int8.notes

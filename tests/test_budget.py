"""The audit's work budget: default sample counts scaled to a model's MACs, said in the report,
and the advice that takes every record (``--set CHECK.SETTING=VALUE``) works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgeproof.checks.budget as budget
import edgeproof.checks.certify as certify_check
from edgeproof.checks import get_check
from edgeproof.cli import main
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.runner import audit

QUICK_ADV = {"pgd_steps": 3, "apgd_steps": 3, "bisection_steps": 2}


def _adversarial(report_checks: list) -> object:
    return next(c for c in report_checks if c.check == "adversarial")


def test_auto_samples_take_every_record_of_a_small_model(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    report = audit(digits_model, digits_test, [get_check("adversarial", **QUICK_ADV)], threads=1)
    res = report.checks[0]
    assert res.settings["samples"] == len(digits_test)
    assert res.settings["samples_rule"].startswith("auto:")
    assert not [f for f in res.findings if "work budget" in f.message]


def test_auto_samples_follow_the_budget_formula_on_a_costly_model(
    digits_model: LoadedModel, digits_test: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the digits LeNet-5 made "costly" by a budget of 100 samples at the default passes
    check = get_check("adversarial", **QUICK_ADV)
    report = audit(digits_model, digits_test, [get_check("footprint")], threads=1)
    value = report.metric_value("footprint.macs")
    assert value is not None
    macs = int(value)
    eps = len(audit(digits_model, digits_test, ["performance"]).threat["eps"])
    from edgeproof.checks.adversarial import attack_passes
    from edgeproof.methods.attacks import APGD, FGSM, PGD

    pgd = PGD(steps=3)
    passes = attack_passes([FGSM(), pgd, APGD(steps=3)], eps + 1, pgd=pgd, bisection_steps=2)
    monkeypatch.setattr(budget, "WORK_BUDGET_MACS", float(macs * passes * 100))
    res = audit(digits_model, digits_test, [check], threads=1).checks[0]
    assert res.settings["samples"] == 100
    note = [f for f in res.findings if "work budget" in f.message]
    assert len(note) == 1
    assert f"of the {len(digits_test)} records" in note[0].message
    assert f"pass adversarial.max_samples={len(digits_test)}" in note[0].message
    # the floor holds when the budget would allow fewer
    monkeypatch.setattr(budget, "WORK_BUDGET_MACS", 1.0)
    res = audit(digits_model, digits_test, [get_check("adversarial", **QUICK_ADV)]).checks[0]
    assert res.settings["samples"] == 64


def _cli_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_following_the_budget_advice_on_the_command_line_uses_every_record(
    digits_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(budget, "WORK_BUDGET_MACS", 1.0)  # every model is costly
    quick = [f"--set=adversarial.{k}={v}" for k, v in QUICK_ADV.items()]
    base = [
        "audit",
        str(digits_model_path),
        "--data",
        "builtin:digits",
        "--checks",
        "adversarial",
        "--quiet",
        *quick,
    ]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    res = _cli_report(tmp_path / "a")["checks"][0]
    note = [f["message"] for f in res["findings"] if "work budget" in f["message"]]
    assert res["settings"]["samples"] == 64 and len(note) == 1
    advice = note[0].split("pass ")[-1].split(" to use")[0]
    assert advice == "--set adversarial.max_samples=360"
    assert main([*base, *advice.split(" "), "--out", str(tmp_path / "b")]) == 0
    res = _cli_report(tmp_path / "b")["checks"][0]
    assert res["settings"]["samples"] == 360
    assert not [f for f in res["findings"] if "work budget" in f["message"]]
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--set", "adversarial"], ["--set", "CHECK.SETTING=VALUE"]),
        (["--set", "adversarial.nope=1"], ["adversarial.nope", "max_samples"]),
        (["--set", "nosuch.x=1"], ["unknown check 'nosuch'"]),
        (["--checks", "performance", "--set", "bitflip.max_k=2"], ["--checks", "bitflip"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needles: list[str],
) -> None:
    argv = ["audit", str(digits_model_path), "--data", "builtin:digits", "--out", str(tmp_path)]
    code = main([*argv, *extra])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (tmp_path / "report.json").exists()


def test_get_check_names_an_unknown_setting_and_the_known_ones() -> None:
    with pytest.raises(OptionError) as info:
        get_check("bitflip", max_samples=3)
    assert info.value.option == "bitflip.max_samples"
    assert "eval_samples" in str(info.value)


def test_certify_leaves_out_crown_beyond_the_budget_and_says_how_to_run_it(
    digits_model: LoadedModel, digits_test: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"max_samples": 4, "pgd_steps": 5}
    monkeypatch.setattr(certify_check, "CERTIFY_BUDGET_MACS", 1)
    res = audit(digits_model, digits_test, [get_check("certify", **settings)]).checks[0]
    names = {m.name.split("@")[0] for m in res.metrics}
    assert "verified_accuracy.ibp" in names and "verified_accuracy.crown-ibp" in names
    assert "verified_accuracy.crown" not in names
    note = [f for f in res.findings if "CROWN and α-CROWN did not run" in f.message]
    assert len(note) == 1 and "certify.methods=ibp,crown-ibp,crown,alpha-crown" in note[0].message
    methods = note[0].message.split("certify.methods=")[1].split(" ")[0].split(",")
    res = audit(
        digits_model, digits_test, [get_check("certify", methods=methods, **settings)]
    ).checks[0]
    names = {m.name.split("@")[0] for m in res.metrics}
    assert {"verified_accuracy.crown", "verified_accuracy.alpha-crown"} <= names
    assert not [f for f in res.findings if "did not run" in f.message]


def test_certify_leaves_out_only_alpha_crown_when_crown_alone_fits(
    digits_model: LoadedModel, digits_test: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert digits_model.module is not None
    per = certify_check.crown_macs(digits_model.module, (1, 8, 8))
    crown = per * 4 * 3  # 4 samples × 3 ε
    monkeypatch.setattr(certify_check, "CERTIFY_BUDGET_MACS", crown * 2)  # < the 6 of alpha-CROWN
    res = audit(
        digits_model, digits_test, [get_check("certify", max_samples=4, pgd_steps=5)]
    ).checks[0]
    names = {m.name.split("@")[0] for m in res.metrics}
    assert "verified_accuracy.crown" in names and "verified_accuracy.alpha-crown" not in names
    assert [f for f in res.findings if f.message.startswith("α-CROWN did not run")]


def test_certify_auto_keeps_crown_on_a_small_model(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    res = audit(
        digits_model, digits_test, [get_check("certify", max_samples=4, pgd_steps=5)]
    ).checks[0]
    names = {m.name.split("@")[0] for m in res.metrics}
    assert {"verified_accuracy.crown", "verified_accuracy.alpha-crown"} <= names


def test_property_falls_back_to_crown_ibp_beyond_the_budget_and_the_advice_restores_crown(
    digits_model: LoadedModel, digits_test: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = {"transforms": ("darken:0.3",), "max_samples": 4}
    monkeypatch.setattr(certify_check, "CERTIFY_BUDGET_MACS", 1)
    res = audit(digits_model, digits_test, [get_check("property", **quick)]).checks[0]
    assert res.settings["methods_used"] == ["crown-ibp"] and res.settings["bab_budget_s_used"] == 0
    note = [f for f in res.findings if "beyond the default work budget" in f.message]
    assert len(note) == 1
    advice = note[0].message.split("pass ")[1].split(" for the")[0]
    assert advice == "property.methods=crown and property.bab_budget_s=0.25"
    res = audit(
        digits_model,
        digits_test,
        [get_check("property", methods=["crown"], bab_budget_s=0.25, **quick)],
    ).checks[0]
    assert res.settings["methods_used"] == ["crown"] and res.settings["bab_budget_s_used"] == 0.25
    assert not [f for f in res.findings if "work budget" in f.message]

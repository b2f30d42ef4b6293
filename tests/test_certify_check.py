"""The certify check and certify_model on the digits LeNet-5: verdicts, metrics, skips, bad
input, fake-quant models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.certify import certify_model
from edgeproof.checks import available_checks, get_check
from edgeproof.checks.base import AuditContext
from edgeproof.checks.certify import CertifyCheck
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError, param
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module
from edgeproof.models.zoo import build_model
from edgeproof.spec import InputSpec, ThreatModel

EPS = (0.005, 0.02)


def _ctx(model: LoadedModel, data: Dataset, eps: tuple[float, ...] = EPS) -> AuditContext:
    assert model.spec is not None
    return AuditContext(model=model, data=data, threat=ThreatModel(model.spec, "linf", eps))


@pytest.fixture(scope="module")
def certified(digits_model: LoadedModel, digits_test: Dataset) -> object:
    check = CertifyCheck(
        methods=("ibp", "crown", "alpha-crown"), max_samples=24, alpha_iterations=5
    )
    return check.run(_ctx(digits_model, digits_test))


def test_certify_check_is_registered_with_its_headline() -> None:
    assert "certify" in available_checks()
    check = get_check("certify", max_samples=3)
    assert isinstance(check, CertifyCheck)
    assert check.headline == ("verified_accuracy", "verification_gap")


def test_verified_accuracy_is_bounded_by_pgd_robust_and_clean_accuracy(certified: object) -> None:
    res = certified
    assert res.status == "ok"  # type: ignore[attr-defined]
    m = {x.name: x for x in res.metrics}  # type: ignore[attr-defined]
    for e in EPS:
        v = m[f"verified_accuracy@{e:g}"]
        assert v.ci is not None and v.ci.low <= v.value <= v.ci.high
        assert v.value <= m[f"pgd_robust_accuracy@{e:g}"].value
        assert m[f"verification_gap@{e:g}"].value == pytest.approx(
            m[f"pgd_robust_accuracy@{e:g}"].value - v.value
        )
        for method in ("ibp", "crown", "alpha-crown"):
            assert m[f"verified_accuracy.{method}@{e:g}"].value <= v.value
            assert m[f"time_per_sample.{method}@{e:g}"].unit == "s"
        assert (
            m[f"verified_accuracy.alpha-crown@{e:g}"].value
            >= m[f"verified_accuracy.crown@{e:g}"].value
        )
    # a larger ε proves less; CROWN proves much more than IBP on this net at the small ε
    assert m["verified_accuracy@0.02"].value <= m["verified_accuracy@0.005"].value
    assert m["verified_accuracy.crown@0.005"].value > m["verified_accuracy.ibp@0.005"].value
    assert m["verified_accuracy.crown@0.005"].value >= 0.8
    assert m["verified_accuracy"].value == m["verified_accuracy@0.02"].value
    assert {h for h in CertifyCheck.headline} <= set(m)


def test_certify_check_tables_figure_and_findings(certified: object) -> None:
    res = certified
    verdicts = res.tables[0]  # type: ignore[attr-defined]
    assert verdicts.name == "verdicts" and len(verdicts.rows) == len(EPS)
    cols = list(verdicts.columns)
    for row in verdicts.rows:
        assert (
            row[cols.index("verified")] + row[cols.index("falsified")] + row[cols.index("unknown")]
            == row[cols.index("n")]
        )
    samples = res.tables[1]  # type: ignore[attr-defined]
    assert samples.name == "samples" and len(samples.rows) == 24
    assert {r[1] for r in samples.rows} <= {"verified", "falsified", "unknown"}
    fig = res.figures[0]  # type: ignore[attr-defined]
    assert fig.svg.startswith("<svg") and "verified" in fig.svg
    assert any(f.severity == "info" and "verified" in f.message for f in res.findings)  # type: ignore[attr-defined]
    assert res.to_json()["status"] == "ok"  # type: ignore[attr-defined]


def test_certify_check_with_branch_and_bound_decides_more(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    plain = CertifyCheck(methods=("crown",), max_samples=6).run(
        _ctx(digits_model, digits_test, (0.02,))
    )
    bab = CertifyCheck(methods=("crown",), max_samples=6, bab_budget_s=1.0).run(
        _ctx(digits_model, digits_test, (0.02,))
    )
    gap_plain = plain.metric("verification_gap").value
    gap_bab = bab.metric("verification_gap").value
    assert gap_plain > 0  # the chosen ε leaves CROWN undecided samples
    assert gap_bab < gap_plain
    assert bab.metric("verified_accuracy").value >= plain.metric("verified_accuracy").value


def test_certify_check_skips_without_data_gradients_or_a_boundable_model(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    check = CertifyCheck()
    assert digits_model.spec is not None
    ctx = AuditContext(model=digits_model, data=None, threat=ThreatModel(digits_model.spec))
    assert check.skip_reason(ctx) == f"needs labelled data (pass {param('data')})"
    weights_only = LoadedModel(path=None, format="weights-only", spec=digits_model.spec)
    assert "needs a runnable model" in str(check.skip_reason(_ctx(weights_only, digits_test)))
    spec = InputSpec((1, 64), num_classes=3)
    lstm = from_module(build_model("cnn-lstm", (1, 64), 3), spec)
    data = Dataset(
        np.random.default_rng(0).random((8, 1, 64), dtype=np.float32),
        np.zeros(8, dtype=np.int64),
        ["a", "b", "c"],
        "random",
        "npz",
    )
    reason = check.skip_reason(AuditContext(model=lstm, data=data, threat=ThreatModel(spec)))
    assert reason is not None and "cannot bound this model" in reason and "lstm" in reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ("deeppoly",)}, "methods: unknown bound method"),
        ({"methods": ()}, "methods: no method given"),
        ({"bab_budget_s": -1.0}, "bab_budget_s"),
        ({"alpha_iterations": 0}, "alpha_iterations"),
        ({"pgd_steps": -1}, "pgd_steps"),
    ],
)
def test_bad_certify_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        CertifyCheck(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# certify_model


def test_certify_model_at_zero_radius_verifies_exactly_the_correct_samples(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    x, y = digits_test.x[:16], digits_test.y[:16].copy()
    y[:2] = (y[:2] + 1) % 10  # two wrong labels
    res = certify_model(digits_model.module, x, y, digits_model.spec, 0.0, methods=("crown",))
    r = res.at(0.0)
    assert not res.clean_correct[:2].any()
    assert (r.verdict[:2] == "falsified").all()
    assert ((r.verdict == "verified") == res.clean_correct).all()
    assert res.verified_accuracy(0.0) == res.clean_correct.mean()
    assert res.to_json()["per_eps"][0]["counts"]["verified"] == int(res.clean_correct.sum())


def test_certified_margins_hold_at_random_points_of_the_threat_set(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    x, y = torch.from_numpy(digits_test.x[:12]), torch.from_numpy(digits_test.y[:12])
    res = certify_model(
        digits_model.module, x, y, digits_model.spec, (0.01, 0.03), methods=("ibp", "crown")
    )
    gen = torch.Generator().manual_seed(0)
    for r in res.per_eps:
        lo, hi = (x - r.eps).clamp(0, 1), (x + r.eps).clamp(0, 1)
        pts = lo + (hi - lo) * torch.rand((200, *x.shape), generator=gen)
        with torch.no_grad():
            out = digits_model.module(pts.flatten(0, 1)).view(200, 12, 10)
        true = out.gather(2, y.view(1, 12, 1).expand(200, 12, 1)).squeeze(2)
        other = out.scatter(2, y.view(1, 12, 1).expand(200, 12, 1), -np.inf).max(2).values
        worst = (true - other).min(0).values.numpy()
        for m in ("ibp", "crown"):
            lb = r.methods[m].margin_lower
            ok = np.isfinite(lb)
            assert ok.sum() > 0
            assert (lb[ok] <= worst[ok] + 1e-5).all()
        assert not ((r.verdict == "verified") & r.pgd_fooled).any()
        assert set(np.unique(r.verdict)) <= {"verified", "falsified", "unknown"}


def test_certify_model_refuses_bad_input(digits_model: LoadedModel, digits_test: Dataset) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    m, spec = digits_model.module, digits_model.spec
    x, y = digits_test.x[:2], digits_test.y[:2]
    with pytest.raises(OptionError, match=r"eps: ε=-0\.1 is negative"):
        certify_model(m, x, y, spec, -0.1)
    with pytest.raises(OptionError, match="methods: unknown bound method"):
        certify_model(m, x, y, spec, 0.1, methods=("exact",))
    with pytest.raises(OptionError, match="norm"):
        certify_model(m, x, y, spec, 0.1, "l1")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="outside the domain"):
        certify_model(m, x + 2.0, y, spec, 0.1)
    with pytest.raises(SpecError, match="do not fit the spec"):
        certify_model(m, x[:, :, :4], y, spec, 0.1)
    with pytest.raises(SpecError, match="labels must lie"):
        certify_model(m, x, y + 10, spec, 0.1)


def test_certify_model_bounds_a_fake_quant_simulation(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    from edgeproof.compress.reaudit import straight_through
    from edgeproof.compress.simulate import ActFakeQuant

    assert digits_model.module is not None and digits_model.spec is not None
    base = copy.deepcopy(digits_model.module)
    fq = ActFakeQuant("minmax", 99.99)
    layers = list(base.children())
    model = nn.Sequential(*layers[:3], fq, *layers[3:]).eval()  # quantize the first ReLU output
    with torch.no_grad():
        model(torch.from_numpy(digits_test.x))  # calibrate
    fq.freeze()
    wrapped, n = straight_through(model)
    assert n == 1
    x, y = digits_test.x[:8], digits_test.y[:8]
    res = certify_model(wrapped, x, y, digits_model.spec, (0.0, 0.005), methods=("ibp", "crown"))
    assert res.verified_accuracy(0.0) == pytest.approx(res.clean_correct.mean())
    assert 0 <= res.verified_accuracy(0.005) <= res.verified_accuracy(0.0)

"""The ``property`` check: decision stability of the digits model along transform segments."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.checks import get_check
from edgeproof.checks.base import AuditContext
from edgeproof.checks.property import parse_transform
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.spec import ThreatModel


def test_the_digits_model_is_proved_stable_under_slight_darkening_and_refuted_under_blackout(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.spec is not None
    check = get_check(
        "property",
        transforms=("darken:0.02", "darken:1.0", "blur:0.5"),
        max_samples=16,
        methods=("crown",),
        bab_budget_s=0.0,
    )
    data = digits_test.subset(np.arange(40))
    res = check.run(AuditContext(digits_model, data, ThreatModel(digits_model.spec)))
    m = {x.name: x.value for x in res.metrics}
    assert m["stable_fraction.darken:0.02"] >= 0.75
    assert m["unstable_fraction.darken:1.0"] >= 0.5  # a black image is one digit only
    assert m["stable_fraction"] == min(v for k, v in m.items() if k.startswith("stable_fraction."))
    table = next(t for t in res.tables if t.name == "transforms")
    for row in table.rows:
        assert sum(int(str(v)) for v in row[1:4]) == 16  # verified + falsified + unknown = n
    assert any("darken:1.0" in f.message and f.severity == "warning" for f in res.findings)
    assert res.figures[0].svg.startswith("<svg")


@pytest.mark.parametrize("text", ["sharpen:1", "darken", "contrast:0.5", "blur:x"])
def test_a_bad_transform_names_the_setting(text: str) -> None:
    with pytest.raises(OptionError, match="transforms"):
        parse_transform(text)
    assert parse_transform("contrast:0.5:1.5") == ("contrast", (0.5, 1.5))


def test_monotonicity_is_decided_over_the_domain_box_of_a_tabular_model() -> None:
    import torch
    from torch import nn

    from edgeproof.models.loading import from_module
    from edgeproof.spec import InputSpec

    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.5, -0.2, 0.0], [-1.0, 0.0, 0.3, 0.1]]))
        net.bias.zero_()
    spec = InputSpec((4,), domain=(0.0, 1.0), kind="tabular", num_classes=2)
    x = np.random.default_rng(0).random((10, 4), dtype=np.float32)
    data = Dataset(x, (x[:, 0] < 0.5).astype(np.int64), ["a", "b"], "t", "npz", kind="tabular")
    ctx = AuditContext(from_module(net.eval(), spec), data, ThreatModel(spec))
    quick = {"transforms": ("darken:0.1",), "max_samples": 10, "methods": ("crown",)}
    ok = get_check("property", **quick, monotone_features=(0, 1), monotone_output=0).run(ctx)
    assert next(m.value for m in ok.metrics if m.name == "monotone") == 1.0
    bad = get_check("property", **quick, monotone_features=(2,), monotone_output=0).run(ctx)
    assert next(m.value for m in bad.metrics if m.name == "monotone") == 0.0
    row = next(t for t in bad.tables if t.name == "monotonicity").rows[0]
    assert row[1] == "falsified" and "x[2]" in str(row[4])
    assert any(f.message.startswith("not monotone") for f in bad.findings)


def test_the_property_check_runs_only_when_asked_for() -> None:
    from edgeproof.checks import available_checks, check_info, default_checks

    assert "property" in available_checks() and "property" not in default_checks()
    assert not check_info("property").default and check_info("certify").default
    assert [c for c in available_checks() if c != "property"] == default_checks()


def test_edgeproof_checks_marks_it_as_opt_in(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeproof.cli import main

    assert main(["checks"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "only with --checks" in lines["property"]
    assert "only with --checks" not in lines["certify"]

"""Square Attack: budget and domain, determinism, query accounting, analytic linear models, the
schedule, bad settings, and attacking ONNX Runtime graphs (fp32 and int8 QDQ) forward-only."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgeproof.compress.onnx_export import export_onnx
from edgeproof.compress.quantize import QuantConfig, quantize
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attacks import (
    FGSM,
    Budget,
    Square,
    frozen_copy,
    get_attack,
    robustness_curve,
)
from edgeproof.methods.attacks.square import p_selection
from edgeproof.models.loaded import LoadedModel
from edgeproof.runtime.ort import make_session, run_session, session_forward
from edgeproof.spec import Norm


def _wrong(model: object, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(x).argmax(1) != y  # type: ignore[operator]
    return out


class _Linear(nn.Module):
    """Logits ``W·flatten(x) + b``: a fixed random linear classifier for any input shape."""

    def __init__(self, d: int, k: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = torch.randn(d, k, generator=gen)
        self.b = torch.randn(k, generator=gen) * 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


class _Counting:
    """A forward function that counts the rows it is called on (the queries it answers)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rows = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        with torch.no_grad():
            out: torch.Tensor = self.model(x)
        return out


_SHAPES = st.sampled_from([(7,), (2, 9), (1, 6, 6), (3, 5, 7), (2, 3, 2, 4)])


@settings(max_examples=30, deadline=None)
@given(
    shape=_SHAPES,
    norm=st.sampled_from(["linf", "l2"]),
    lo=st.floats(-2.0, 0.5),
    width=st.floats(0.5, 3.0),
    eps_scale=st.floats(0.01, 2.0),
    p_init=st.floats(0.01, 1.0),
    loss=st.sampled_from(["margin", "ce"]),
    seed=st.integers(0, 2**16),
)
def test_square_stays_inside_the_budget_and_the_domain(
    shape: tuple[int, ...],
    norm: str,
    lo: float,
    width: float,
    eps_scale: float,
    p_init: float,
    loss: str,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = (float(v) for v in torch.tensor([lo, lo + width]))  # float32 bounds, as the data
    n = 12
    x = (torch.rand(n, *shape, generator=gen) * (hi - lo) + lo).clamp(lo, hi)
    y = torch.randint(0, 3, (n,), generator=gen)
    model = _Linear(int(np.prod(shape)), 3, seed)
    eps = torch.rand(n, generator=gen, dtype=torch.float64) * eps_scale + 1e-3  # per sample
    budget = Budget(norm, eps, domain=(lo, hi))  # type: ignore[arg-type]
    attack = Square(n_queries=15, p_init=p_init, n_restarts=2, loss=loss)  # type: ignore[arg-type]
    res = attack.perturb(model, x, y, budget, generator=gen)
    assert res.x_adv.shape == x.shape
    delta = (res.x_adv - x).flatten(1).double()
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-5) + 1e-6).all())
    assert float(res.x_adv.min()) >= lo and float(res.x_adv.max()) <= hi
    assert torch.equal(res.success, _wrong(model, res.x_adv, y))
    assert res.queries is not None
    assert bool((res.queries >= 0).all()) and bool((res.queries <= 2 * 15).all())


def test_square_is_deterministic_under_a_seed_and_varies_with_it(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None
    model = frozen_copy(digits_model.module)
    x, y = torch.from_numpy(digits_test.x[:48]), torch.from_numpy(digits_test.y[:48])
    cases: tuple[tuple[Norm, float], ...] = (("linf", 0.1), ("l2", 0.6))
    for norm, eps in cases:
        runs = [
            Square(n_queries=40).perturb(
                model, x, y, Budget(norm, eps), generator=torch.Generator().manual_seed(s)
            )
            for s in (1, 1, 2)
        ]
        assert torch.equal(runs[0].x_adv, runs[1].x_adv)
        assert torch.equal(runs[0].queries, runs[1].queries)  # type: ignore[arg-type]
        assert not torch.equal(runs[0].x_adv, runs[2].x_adv)


def test_square_counts_every_query_it_makes_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 2, 6, 6, generator=gen)
    model = _Linear(72, 4, 1)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:5] = (pred[:5] + 1) % 4  # five samples misclassified before any attack
    cases: tuple[tuple[Norm, float], ...] = (("linf", 0.05), ("l2", 0.3))
    for norm, eps in cases:
        counting = _Counting(model)
        res = Square(n_queries=25, n_restarts=3).perturb(
            counting, x, y, Budget(norm, eps), generator=gen
        )
        assert res.queries is not None
        # one clean pass over the batch, then exactly the counted queries
        assert counting.rows == 30 + int(res.queries.sum())
        assert bool((res.queries[:5] == 0).all()) and bool(res.success[:5].all())
        # a sample left robust spent the whole budget: n_queries in each of the 3 restarts
        robust = ~res.success
        assert bool(robust.any()) and bool((res.queries[robust] == 75).all())
        fooled = res.success.clone()
        fooled[:5] = False
        assert bool((res.queries[fooled] >= 1).all() and (res.queries[fooled] < 75).all())


def test_a_constant_model_is_never_fooled_and_costs_the_full_budget() -> None:
    class _Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1.0, 0.0]]).expand(x.shape[0], 2)

    x = torch.rand(6, 10)
    res = Square(n_queries=12, n_restarts=2).perturb(
        _Constant(), x, torch.zeros(6, dtype=torch.long), Budget("linf", 0.5)
    )
    assert not bool(res.success.any())
    assert res.queries is not None and res.queries.tolist() == [24] * 6


class _TwoLogits(nn.Module):
    """Logits ``[0, w·x + b]``: the smallest L∞ (L2) perturbation that flips the prediction is
    ``|w·x + b| / ‖w‖₁`` (``/ ‖w‖₂``) when the domain does not bind."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(m), m], dim=1)


@pytest.mark.parametrize(("norm", "factor"), [("linf", 1.05), ("l2", 1.6)])
def test_square_finds_adversarials_above_the_analytic_margin_and_none_below(
    norm: str, factor: float
) -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(16, generator=gen)
    model = _TwoLogits(w, 0.1)
    x = torch.rand(60, 16, generator=gen) * 2 - 1
    margin = x @ w + 0.1
    y = (margin > 0).long()
    dual = w.abs().sum() if norm == "linf" else w.norm()
    exact = (margin.abs() / dual).double()
    domain = (-10.0, 10.0)  # never binds: the analytic margin is the minimal ε
    attack = Square(n_queries=1000)
    below = attack.perturb(model, x, y, Budget(norm, exact * 0.98, domain), generator=gen)  # type: ignore[arg-type]
    assert not bool(below.success.any())
    above = attack.perturb(model, x, y, Budget(norm, exact * factor, domain), generator=gen)  # type: ignore[arg-type]
    assert bool(above.success.all())


def test_cross_entropy_loss_also_finds_the_linear_adversarials() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(10, generator=gen)
    model = _TwoLogits(w, -0.2)
    x = torch.rand(40, 10, generator=gen) * 2 - 1
    margin = x @ w - 0.2
    y = (margin > 0).long()
    exact = (margin.abs() / w.abs().sum()).double()
    res = Square(n_queries=500, loss="ce").perturb(
        model, x, y, Budget("linf", exact * 1.2, (-10.0, 10.0)), generator=gen
    )
    assert bool(res.success.all())


def test_p_schedule_halves_at_the_reference_breakpoints() -> None:
    # AutoAttack's p_selection with resc_schedule=True, on a 10 000-iteration run
    expected = {10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 201: 0.1, 501: 0.05, 1001: 0.025}
    expected |= {2001: 0.0125, 4001: 0.00625, 6001: 0.003125, 8001: 0.0015625, 9999: 0.0015625}
    for it, p in expected.items():
        assert p_selection(0.8, it, 10_000) == pytest.approx(p, rel=1e-12)
    # rescaled to the run's length: iteration 1 of 100 is iteration 100 of 10 000
    assert p_selection(0.8, 0, 100) == 0.8 and p_selection(0.8, 1, 100) == 0.2


def test_square_rejects_bad_settings_naming_the_parameter() -> None:
    with pytest.raises(OptionError, match=r"^n_queries: 0 is not a positive number of queries"):
        Square(n_queries=0)
    with pytest.raises(OptionError, match=r"^n_queries: -5 is not"):
        Square(n_queries=-5)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(OptionError, match=rf"^p_init: {bad} is outside \(0, 1\]"):
            Square(p_init=bad)
    with pytest.raises(OptionError, match=r"^loss: unknown loss 'hinge'\. use one of margin, ce"):
        Square(loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match=r"^n_restarts: 0 is too few"):
        Square(n_restarts=0)


def test_square_is_registered_and_forward_only() -> None:
    attack = get_attack("square", n_queries=10)
    assert isinstance(attack, Square) and attack.n_queries == 10
    assert not Square.needs_gradients
    assert repr(attack) == "Square(n_queries=10, p_init=0.8, n_restarts=1, loss='margin')"


def test_square_through_session_forward_matches_the_pytorch_model(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    module = frozen_copy(digits_model.module)
    session = make_session(export_onnx(copy.deepcopy(module), digits_model.spec.shape))
    forward = session_forward(session)
    x, y = torch.from_numpy(digits_test.x[:96]), torch.from_numpy(digits_test.y[:96])
    runs = [
        Square(n_queries=100).perturb(
            m, x, y, Budget("linf", 0.1), generator=torch.Generator().manual_seed(0)
        )
        for m in (module, forward)
    ]
    # float32 rounding differs between the runtimes; the accepted steps almost never do
    assert abs(int(runs[0].success.sum()) - int(runs[1].success.sum())) <= 2
    assert int((runs[0].success != runs[1].success).sum()) <= 2


def test_square_attacks_an_int8_qdq_graph_directly(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    assert digits_model.module is not None
    q = quantize(
        copy.deepcopy(digits_model.module),
        (1, 8, 8),
        digits_train.x[:128],
        QuantConfig("int8", "minmax"),
    )
    session = make_session(q.onnx_model)
    x, y = torch.from_numpy(digits_test.x[:64]), torch.from_numpy(digits_test.y[:64])
    res = Square(n_queries=60).perturb(
        session_forward(session), x, y, Budget("linf", 0.1), generator=torch.Generator()
    )
    assert float((res.x_adv - x).abs().max()) <= 0.1 + 1e-6
    graph_wrong = run_session(session, res.x_adv.numpy())[0].argmax(1) != y.numpy()
    assert np.array_equal(res.success.numpy(), graph_wrong)
    assert int(res.success.sum()) > 0


def test_session_forward_runs_a_fixed_batch_graph_record_by_record_and_checks_shapes(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    import onnx

    assert digits_model.module is not None
    proto = export_onnx(copy.deepcopy(digits_model.module), (1, 8, 8))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 1  # a graph exported for batch 1
    out_dim = proto.graph.output[0].type.tensor_type.shape.dim[0]
    out_dim.ClearField("dim_param")
    out_dim.dim_value = 1
    onnx.checker.check_model(proto)
    forward = session_forward(make_session(proto))
    x = torch.from_numpy(digits_test.x[:5])
    with torch.no_grad():
        ref = digits_model.module(x)
    torch.testing.assert_close(forward(x), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(SpecError, match=r"input 'input' has shape \[1, 1, 8, 8\] but the inputs"):
        forward(torch.zeros(2, 1, 4, 16))


def test_robustness_curve_records_square_queries_and_marks_attacks_that_count_none(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None
    model = frozen_copy(digits_model.module)
    x, y = torch.from_numpy(digits_test.x[:80]), torch.from_numpy(digits_test.y[:80])
    curve = robustness_curve(
        model,
        x,
        y,
        norm="linf",
        eps=(0.05, 0.2),
        domain=(0.0, 1.0),
        attacks=[FGSM(), Square(n_queries=30)],
        batch_size=32,
    )
    assert curve.queries is not None and curve.queries.shape == (2, 2, 80)
    assert not curve.counts_queries("fgsm") and bool((curve.queries[0] == -1).all())
    assert np.isnan(curve.mean_queries("fgsm", 0))
    assert curve.counts_queries("square")
    spent = curve.queries[1]
    assert bool((spent[:, ~curve.clean_correct] == 0).all())  # never attacked
    assert bool((spent[:, curve.clean_correct] >= 1).all() and (spent <= 30).all())
    fooled = curve.clean_correct & curve.fooled[1, 1]
    assert curve.mean_queries("square", 1) == pytest.approx(spent[1][fooled].mean())

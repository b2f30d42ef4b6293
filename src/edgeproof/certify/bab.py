"""Complete verification within a budget: branch-and-bound (BaB) with β-CROWN split constraints.

Sources and the variant followed:

* **ReLU splitting with β-CROWN** (Wang et al. 2021, arXiv 2103.06624; the BaB framework of Bunel
  et al. 2020, JMLR 21(42)). A subdomain fixes some unstable ReLUs active (``z ≥ 0``) or inactive
  (``z ≤ 0``). In a subdomain the fixed neurons are exact (identity or zero), their bounds are
  clipped at 0, the intermediate bounds of the whole network are recomputed by CROWN under those
  relaxations (intersected with the parent's), and the final bound is optimised over α (lower
  slopes, per domain, row and neuron) and β ≥ 0: the Lagrangian ``C·f(x) − Σ β_j s_j z_j(x)``
  (``s_j = ±1`` the split's side) lower-bounds ``C·f`` on the subdomain for every β ≥ 0, and its
  CROWN bound is maximised by projected Adam (learning rates 0.1 for α and 0.05 for β, 20
  iterations, the defaults of α,β-CROWN's BaB). The β terms enter the backward pass as extra
  coefficients on the split neurons' pre-activations.
* **Branching**: the unstable neuron with the largest ``|a_j|·u_j(−l_j)/(u_j − l_j)`` — the
  coefficient of its output in the worst row's final backward pass times the height of its
  triangle relaxation at 0 (a BaBSR-style estimate of the bound's sensitivity to the split,
  Bunel et al. 2020 §5.1) — is split; domains are processed best-first (lowest bound first), in
  batches.
* **Leaves**: a subdomain with no unstable ReLU is affine on its region; with a box input its
  minimum is a linear program (the split constraints are affine in the input), solved exactly by
  HiGHS (scipy): infeasible or positive → verified; otherwise its minimiser is a candidate
  counterexample.
* **Input splitting** where the input is low-dimensional (segments, whose input is the
  one-dimensional ``t``; boxes with at most ``input_split_dims`` non-degenerate coordinates):
  the set is bisected along its widest coordinate and each part bounded by CROWN (complete for
  any network in the limit, so it needs no piecewise-linearity).

Max pools are rewritten into ReLUs first (:func:`~edgeproof.certify.graph.maxpool_as_relus`), so
ReLU splitting is complete for max-pool networks too. Counterexamples come from PGD on the margin
inside the set (before branching), from the minimisers of the domains' linear bounds and from the
leaves' LPs; every one is checked by a forward pass of the real model, and only a checked one
gives the verdict ``falsified``. A model that is not piecewise-linear (sigmoid, tanh, fake
quantizers) is refused for ReLU splitting.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from edgeproof.certify.bab_input import (
    _free_dims,
    _input_split,
)
from edgeproof.certify.bab_relu import _relu_split
from edgeproof.certify.bab_settings import (
    BabResult,
    BabSettings,
    ModelFn,
    Verdict,
    _margins,
)
from edgeproof.certify.graph import BoundGraph
from edgeproof.certify.sets import InputSet
from edgeproof.errors import OptionError

__all__ = ["BabResult", "BabSettings", "Verdict", "branch_and_bound", "search_counterexample"]


def search_counterexample(
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    *,
    steps: int = 30,
    restarts: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float]:
    """PGD on the smallest margin inside ``iset`` (batch 1): the best point and its margin.

    Signed-gradient steps of a tenth of the set's box width, projected onto the set, from the
    set's anchor and from ``restarts − 1`` random points of its box; the margin is the model's
    (``model_fn``) smallest ``spec`` row.
    """
    lo, hi = iset.box()
    width = (hi - lo).clamp(min=0)
    starts = [iset.anchor()]
    for _ in range(max(0, restarts - 1)):
        r = torch.rand(lo.shape, generator=generator, dtype=lo.dtype)
        starts.append(iset.project(lo + r * width))
    x = torch.cat(starts)
    sets = iset.select(torch.zeros(x.shape[0], dtype=torch.long))
    step = width / 10
    best_x, best_m = x[:1], math.inf
    for it in range(steps + 1):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            m = (
                torch.einsum("rk,nk->nr", spec[0].to(lo.dtype), model_fn(xg).to(lo.dtype))
                .min(1)
                .values
            )
            (g,) = torch.autograd.grad(m.sum(), xg)
        m = m.detach()
        worst = int(m.argmin())
        if float(m[worst]) < best_m:
            best_m, best_x = float(m[worst]), x[worst : worst + 1].detach().clone()
        if best_m < 0 or it == steps:
            break
        x = sets.project(x.detach() - step * g.sign() * (0.5 + 0.5 * (1 - it / steps)))
    # the margin as the model computes it on the returned point (no gradient mode differences)
    return best_x, float(_margins(model_fn, best_x, spec).min())


# --------------------------------------------------------------------------------------------
# Entry point


def branch_and_bound(
    graph: BoundGraph,
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    settings: BabSettings | None = None,
    *,
    generator: torch.Generator | None = None,
) -> BabResult:
    """Decide ``spec·f(x) > 0`` for every ``x`` of ``iset`` (one sample) within the budget.

    Args:
        graph: the traced model.
        model_fn: the real model (eval mode); every counterexample is checked with it.
        iset: the input set of one sample (batch 1).
        spec: ``(1, R, K)`` rows; the property is that every row is positive.
        settings: budget and optimisation settings.
        generator: random starts of the counterexample search.

    Raises:
        OptionError: ReLU splitting on a model that is not piecewise-linear (the message names
            the first such node), or a set of more than one sample.
    """
    settings = settings or BabSettings()
    t0 = time.perf_counter()
    if iset.batch != 1 or spec.shape[0] != 1:
        raise OptionError(
            "x",
            f"branch-and-bound takes one sample at a time, got {iset.batch}",
            "loop over samples",
        )
    split_inputs = _free_dims(iset) <= settings.input_split_dims
    bad = next((n for n in graph.nodes if n.op is not None and not n.op.piecewise_linear), None)
    if bad is not None and not split_inputs:
        assert bad.op is not None
        raise OptionError(
            "bab_budget_s",
            f"branch-and-bound splits ReLUs, but node '{bad.name}' ({bad.op.kind}) is not "
            "piecewise-linear",
            "set bab_budget_s=0 (bound without branching) or bound a ReLU network",
        )
    x, m = search_counterexample(
        model_fn,
        iset,
        spec,
        steps=settings.pgd_steps,
        restarts=settings.pgd_restarts,
        generator=generator,
    )
    if m < 0:
        return BabResult("falsified", -math.inf, x, m, 0, time.perf_counter() - t0, "pgd")
    if split_inputs:
        return _input_split(graph, model_fn, iset, spec, settings, t0)
    return _relu_split(graph, model_fn, iset, spec, settings, t0)

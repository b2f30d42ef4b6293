"""KernelSHAP for tabular data (Lundberg & Lee, NeurIPS 2017, "A unified approach to
interpreting model predictions", §4.1 and Theorem 2).

The Shapley values of the coalition game ``v(S) = E_{b~background}[f(x_S, b_S̄)]`` (features in
``S`` from the explained sample, the others from a background row: the *interventional* value
function SHAP's ``KernelExplainer`` uses) are the solution of the weighted least-squares problem

    min_φ Σ_z π(z) (v(z) − v(∅) − zᵀφ)²   subject to   Σ_j φ_j = v(all) − v(∅)

over coalitions ``z ∈ {0,1}^M`` with the **Shapley kernel**
``π(z) = (M−1) / (C(M,|z|)·|z|·(M−|z|))`` (Theorem 2; the empty and full coalitions have
infinite weight, which is the constraint and ``φ0 = v(∅)``). Solved exactly: the constraint
eliminates the last feature, ``φ_M = Δ − Σ_{j<M} φ_j``, and the remaining unconstrained problem
is solved by its normal equations in float64 (as SHAP does; least squares on the √π-scaled rows
where they are singular).

Coalition design — SHAP 0.51.0's ``KernelExplainer`` (``shap/explainers/_kernel.py``): with
``n_samples`` coalitions (default ``2M + 2048``, capped at ``2^M − 2``), whole subset sizes are
enumerated from the outside in (sizes ``s`` and ``M − s`` together, "paired") while the budget
covers their share of the kernel's mass; the rest of the budget is drawn at random — a size from
the remaining kernel mass, a uniform subset of that size, and its complement — a repeated draw
adding weight to the coalition it repeats; the random coalitions share the remaining kernel mass
in proportion to their counts. When the budget covers all ``2^M − 2`` coalitions, every one is
enumerated and φ is the exact Shapley value. Unlike SHAP's default (``l1_reg="num_features(10)"``,
a LARS selection of 10 features before the fit), no feature selection is done: the plain
constrained regression of the paper (SHAP's ``l1_reg=False``). As in SHAP, features whose value
equals every background row's cannot change ``v`` and get φ = 0 without being sampled (the
Shapley dummy axiom).

Groups: an integer mask of the sample's shape makes each group one player; every element of a
group carries the group's value (Captum's ``return_input_shape``), and δ is computed over groups.
The model is any callable ``Tensor -> logits``; coalitions × background rows are evaluated
``internal_batch_size`` rows at a time.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import binom
from threadpoolctl import ThreadpoolController

from edgeproof.errors import OptionError
from edgeproof.methods.attribution.base import (
    Attribution,
    AttributionMethod,
    BaselineKind,
    BaselineLike,
    Forward,
    Output,
    TargetLike,
    as_batch,
    check_distribution,
    check_internal_batch_size,
    check_output,
    check_positive_int,
    eval_mode,
    resolve_target,
    scores,
)

__all__ = ["Coalitions", "KernelShap", "kernel_coalitions", "solve_constrained"]


class Coalitions:
    """Coalition rows ``z`` (``(K, M)`` float64 of 0/1) and their weights ``(K,)``."""

    def __init__(self, z: np.ndarray, weights: np.ndarray, exact: bool) -> None:
        self.z = z
        self.weights = weights
        self.exact = exact


def kernel_coalitions(m: int, n_samples: int, rng: np.random.Generator) -> Coalitions:
    """SHAP 0.51's coalition design for ``m`` players and a budget of ``n_samples``."""
    budget = n_samples
    max_samples = 2**m - 2 if m <= 30 else 2**30
    budget = min(budget, max_samples)
    num_sizes = int(np.ceil((m - 1) / 2.0))
    num_paired = int(np.floor((m - 1) / 2.0))
    wv = np.array([(m - 1.0) / (s * (m - s)) for s in range(1, num_sizes + 1)])
    wv[:num_paired] *= 2
    wv /= wv.sum()
    rows: list[np.ndarray] = []
    weights: list[float] = []
    full = 0
    left = budget
    remaining = wv.copy()
    for s in range(1, num_sizes + 1):
        nsub = binom(m, s) * (2 if s <= num_paired else 1)
        if left * remaining[s - 1] / nsub < 1.0 - 1e-8:
            break
        full += 1
        left -= int(nsub)
        if remaining[s - 1] < 1.0:
            remaining /= 1.0 - remaining[s - 1]
        w = wv[s - 1] / binom(m, s)
        if s <= num_paired:
            w /= 2.0
        for inds in itertools.combinations(range(m), s):
            z = np.zeros(m)
            z[list(inds)] = 1.0
            rows.append(z)
            weights.append(w)
            if s <= num_paired:
                rows.append(1.0 - z)
                weights.append(w)
    fixed = len(rows)
    if full != num_sizes:
        rw = wv.copy()
        rw[:num_paired] /= 2
        rw = rw[full:]
        rw /= rw.sum()
        samples_left = budget - fixed
        sizes = rng.choice(len(rw), 4 * samples_left, p=rw)
        used: dict[bytes, int] = {}
        pos = 0
        while samples_left > 0 and pos < len(sizes):
            s = int(sizes[pos]) + full + 1
            pos += 1
            z = np.zeros(m)
            z[rng.permutation(m)[:s]] = 1.0
            key = z.astype(np.uint8).tobytes()
            if key not in used:
                used[key] = len(rows)
                rows.append(z)
                weights.append(1.0)
                samples_left -= 1
                if samples_left > 0 and s <= num_paired:
                    rows.append(1.0 - z)
                    weights.append(1.0)
                    samples_left -= 1
            else:
                weights[used[key]] += 1.0
                if s <= num_paired and used[key] + 1 < len(rows):
                    weights[used[key] + 1] += 1.0
        w_arr = np.asarray(weights)
        rand = w_arr[fixed:]
        if rand.size:
            rand *= wv[full:].sum() / rand.sum()
            w_arr[fixed:] = rand
        return Coalitions(np.asarray(rows).reshape(-1, m), w_arr, exact=False)
    return Coalitions(np.asarray(rows).reshape(-1, m), np.asarray(weights), exact=True)


def solve_constrained(z: np.ndarray, w: np.ndarray, y: np.ndarray, total: float) -> np.ndarray:
    """``argmin Σ w_k (y_k − z_k·φ)²`` subject to ``Σ φ = total`` (float64, exact).

    ``y`` is ``v(z) − v(∅)``. The constraint eliminates the last player; the reduced problem is
    solved by its normal equations (least squares on the √w-scaled rows if they are singular).
    """
    m = z.shape[1]
    if m == 1:
        return np.array([total])
    y2 = y - z[:, -1] * total
    x2 = z[:, :-1] - z[:, -1:]
    wx = w[:, None] * x2
    try:
        head = np.linalg.solve(x2.T @ wx, wx.T @ y2)
        if not np.all(np.isfinite(head)):
            raise np.linalg.LinAlgError("non-finite solution")
    except np.linalg.LinAlgError:  # singular normal equations: least squares instead
        sw = np.sqrt(w)
        head = np.linalg.lstsq(x2 * sw[:, None], y2 * sw, rcond=None)[0]
    return np.append(head, total - head.sum())


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


class KernelShap(AttributionMethod):
    """KernelSHAP (Shapley kernel, constrained weighted least squares) over a background set.

    Args:
        n_samples: coalitions per sample; ``None`` (default) is SHAP's ``2M + 2048``. At or above
            ``2^M − 2`` every coalition is enumerated and the values are exact.
        groups: integer mask of the sample's shape (one player per group); default one player
            per element.
        internal_batch_size: rows per forward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "kernel_shap"
    needs_gradients: ClassVar[bool] = False
    baseline_kind: ClassVar[BaselineKind] = "distribution"
    has_delta: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_samples: int | None = None,
        groups: torch.Tensor | np.ndarray | None = None,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        if n_samples is not None:
            check_positive_int("n_samples", n_samples, 2, "use e.g. 2048 or None (2M + 2048)")
        self.n_samples = None if n_samples is None else int(n_samples)
        self.groups = None if groups is None else torch.as_tensor(np.asarray(groups))
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "groups": None if self.groups is None else int(self.groups.unique().numel()),
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def _group_index(self, shape: tuple[int, ...]) -> np.ndarray:
        """Player index of every element (flattened sample), 0..G−1."""
        d = math.prod(shape)
        if self.groups is None:
            return np.arange(d)
        if tuple(self.groups.shape) != shape or self.groups.dtype.is_floating_point:
            raise OptionError(
                "groups",
                f"an integer mask of shape {list(self.groups.shape)} does not fit samples of "
                f"shape {list(shape)}",
                f"give integer group labels of shape {list(shape)}",
            )
        _, inverse = np.unique(self.groups.numpy().reshape(-1), return_inverse=True)
        return inverse.astype(np.int64)

    def attribute(
        self,
        model: Forward,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | np.random.Generator | None = None,
    ) -> Attribution:
        """Shapley-value estimates ``(N, *shape)`` for ``x`` over the background set
        ``baseline`` ``(B, *shape)`` (one row ``(*shape)``, or ``None``: the all-zero row).

        ``generator``: a numpy Generator, or a torch Generator from which one is seeded.
        """
        xb = as_batch(x)
        bg = check_distribution(
            None if isinstance(baseline, (int, float)) else baseline, xb, "baseline"
        )
        if isinstance(baseline, (int, float)):
            bg = torch.full_like(bg, float(baseline))
        if isinstance(generator, np.random.Generator):
            rng = generator
        else:
            seed = torch.randint(0, 2**62, (1,), generator=generator).item()
            rng = np.random.default_rng(int(seed))
        shape = tuple(xb.shape[1:])
        n, nb = xb.shape[0], bg.shape[0]
        gidx = self._group_index(shape)
        n_players = int(gidx.max()) + 1
        member = torch.from_numpy(gidx)
        ibs = self.internal_batch_size
        xf, bgf = xb.reshape(n, -1), bg.reshape(nb, -1)
        values = torch.zeros((n, xf.shape[1]), dtype=torch.float64)
        delta = torch.zeros(n, dtype=torch.float64)
        exact = torch.zeros(n, dtype=torch.bool)
        evaluations = 0
        # One BLAS thread for the small solves: a multi-threaded OpenBLAS takes ~100x longer
        # for (M−1)-unknown systems on a busy machine.
        with eval_mode(model), _blas().limit(limits=1, user_api="blas"):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            f_bg = torch.stack(
                [scores(model, bg, t[i].expand(nb), self.output, ibs) for i in range(n)]
            )
            evaluations += n * (1 + nb)
            ref = f_bg.mean(dim=1)
            for i in range(n):
                differs = (bgf != xf[i]).any(dim=0)  # element differs from some background row
                varying = np.unique(gidx[differs.numpy()])
                total = float(f_x[i] - ref[i])
                m = varying.size
                if m == 0:
                    delta[i] = -total
                    continue
                if m == 1:
                    phi = np.array([total])
                    exact[i] = True
                else:
                    budget = self.n_samples if self.n_samples is not None else 2 * m + 2048
                    co = kernel_coalitions(m, budget, rng)
                    v = self._values(model, xf[i], bgf, t[i], member, varying, co.z, shape)
                    evaluations += co.z.shape[0] * nb
                    phi = solve_constrained(co.z, co.weights, v - float(ref[i]), total)
                    exact[i] = co.exact
                per_player = torch.zeros(n_players, dtype=torch.float64)
                per_player[torch.from_numpy(varying)] = torch.from_numpy(phi)
                values[i] = per_player[member]
                delta[i] = float(per_player.sum()) - total
        return Attribution(
            method=self.name,
            values=values.view(n, *shape),
            target=t,
            output=self.output,
            score=f_x,
            reference_score=ref,
            delta=delta,
            converged=exact,
            evaluations=evaluations,
            settings=self.settings,
        )

    def _values(
        self,
        model: Forward,
        xi: torch.Tensor,
        bgf: torch.Tensor,
        ti: torch.Tensor,
        member: torch.Tensor,
        varying: np.ndarray,
        z: np.ndarray,
        shape: tuple[int, ...],
    ) -> np.ndarray:
        """``v(z) = mean_b f(x_z, b_z̄)`` for every coalition row (float64)."""
        nb = bgf.shape[0]
        n_players = int(member.max()) + 1
        full = np.zeros((z.shape[0], n_players), dtype=bool)
        full[:, varying] = z > 0.5
        on = torch.from_numpy(full)[:, member]  # (K, d) element takes the sample's value
        kc = max(1, self.internal_batch_size // nb)
        out = np.empty(z.shape[0])
        for k0 in range(0, z.shape[0], kc):
            mk = on[k0 : k0 + kc].unsqueeze(1)  # (kc, 1, d)
            rows = torch.where(mk, xi.view(1, 1, -1), bgf.unsqueeze(0)).reshape(-1, *shape)
            sc = scores(
                model, rows, ti.expand(rows.shape[0]), self.output, self.internal_batch_size
            )
            out[k0 : k0 + kc] = sc.view(-1, nb).mean(dim=1).numpy()
        return out

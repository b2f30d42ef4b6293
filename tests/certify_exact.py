"""Exact references for the bound tests on small ReLU MLPs (``nn.Sequential`` of Linear/ReLU):

* :func:`exact_min` — the exact minimum of ``c·f(x)`` over a box, by enumerating every ReLU
  activation pattern and solving one linear program per pattern (the network is affine on each
  pattern's region, which is a polytope);
* :func:`triangle_lp` — the LP over the triangle ("planet") relaxation with given pre-activation
  bounds (Ehlers 2017): the optimum every CROWN-style bound with those bounds lower-bounds;
* :func:`fixed_lines_lp` — the LP where each unstable ReLU lies between CROWN's two lines only.

All in float64 with scipy's HiGHS.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import linprog
from torch import nn


def layers(model: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for m in model:
        if isinstance(m, nn.Linear):
            out.append((m.weight.detach().double().numpy(), m.bias.detach().double().numpy()))
    return out


def _interval_states(
    ws: list[tuple[np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray
) -> list[np.ndarray]:
    """Per hidden layer: +1 neuron always active, -1 always inactive, 0 unknown (IBP)."""
    states = []
    c, r = (hi + lo) / 2, (hi - lo) / 2
    for w, b in ws[:-1]:
        zc, zr = w @ c + b, np.abs(w) @ r
        zl, zu = zc - zr, zc + zr
        states.append(np.where(zl >= 0, 1, np.where(zu <= 0, -1, 0)))
        yl, yu = np.maximum(zl, 0), np.maximum(zu, 0)
        c, r = (yu + yl) / 2, (yu - yl) / 2
    return states


def exact_min_enumerated(
    model: nn.Sequential, c: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[float, np.ndarray]:
    """Exact ``min c·f(x)`` over ``lo ≤ x ≤ hi`` and a minimiser, by enumerating activation
    patterns (neurons that interval arithmetic proves stable are not enumerated)."""
    ws = layers(model)
    states = _interval_states(ws, lo, hi)
    free = [np.flatnonzero(s == 0) for s in states]
    best, arg = np.inf, lo
    d = lo.size
    for pattern in itertools.product((0, 1), repeat=sum(len(f) for f in free)):
        a = np.eye(d)
        a0 = np.zeros(d)
        a_ub, b_ub = [], []
        k = 0
        for (w, b), st, fr in zip(ws[:-1], states, free):
            za, z0 = w @ a, w @ a0 + b
            s = (st > 0).astype(float)
            s[fr] = pattern[k : k + len(fr)]
            k += len(fr)
            # active: z >= 0  ->  -za x <= z0 ; inactive: z <= 0 -> za x <= -z0
            sign = np.where(s > 0, -1.0, 1.0)
            a_ub.append(sign[:, None] * za)
            b_ub.append(np.where(s > 0, z0, -z0))
            a, a0 = s[:, None] * za, s * z0
        w, b = ws[-1]
        obj, const = c @ (w @ a), c @ (w @ a0 + b)
        res = linprog(
            obj,
            A_ub=np.vstack(a_ub),
            b_ub=np.concatenate(b_ub),
            bounds=list(zip(lo, hi)),
            method="highs",
        )
        if res.status == 0 and res.fun + const < best:
            best, arg = float(res.fun + const), res.x
    return best, arg


def exact_min(
    model: nn.Sequential, c: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[float, np.ndarray]:
    """Exact ``min c·f(x)`` over ``lo ≤ x ≤ hi`` and a minimiser, as one mixed-integer LP
    (Tjeng et al. 2019): a binary per unstable ReLU with big-M constraints from interval
    bounds (``y ≥ z, y ≥ 0, y ≤ z − l(1 − δ), y ≤ u·δ``)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    ws = layers(model)
    d = lo.size
    # interval bounds of every pre-activation
    pre = []
    cc, rr = (hi + lo) / 2, (hi - lo) / 2
    for w, b in ws[:-1]:
        zc, zr = w @ cc + b, np.abs(w) @ rr
        pre.append((zc - zr, zc + zr))
        yl, yu = np.maximum(zc - zr, 0), np.maximum(zc + zr, 0)
        cc, rr = (yu + yl) / 2, (yu - yl) / 2
    sizes = [w.shape[0] for w, _ in ws[:-1]]
    # variables: x (d) | per layer: y (n), delta (n)
    n_var = d + 2 * sum(sizes)
    rows: list[np.ndarray] = []
    lb_c: list[float] = []
    ub_c: list[float] = []
    lower = np.concatenate([lo, *[np.concatenate([np.zeros(n), np.zeros(n)]) for n in sizes]])
    upper = np.concatenate(
        [hi, *[np.concatenate([np.maximum(u, 0), np.ones(n)]) for (_, u), n in zip(pre, sizes)]]
    )
    integrality = np.concatenate(
        [np.zeros(d), *[np.concatenate([np.zeros(n), np.ones(n)]) for n in sizes]]
    )
    prev = (0, d)
    off = d
    for (w, b), (zl, zu), n in zip(ws[:-1], pre, sizes):
        ys, ds = off, off + n
        for j in range(n):
            zrow = np.zeros(n_var)
            zrow[prev[0] : prev[1]] = w[j]  # z_j = zrow·v + b_j
            y = np.zeros(n_var)
            y[ys + j] = 1
            dl = np.zeros(n_var)
            dl[ds + j] = 1
            if zl[j] >= 0:  # y = z
                rows.append(y - zrow)
                lb_c.append(b[j])
                ub_c.append(b[j])
            elif zu[j] <= 0:  # y = 0
                rows.append(y)
                lb_c.append(0.0)
                ub_c.append(0.0)
            else:
                rows.append(y - zrow)  # y >= z
                lb_c.append(b[j])
                ub_c.append(np.inf)
                rows.append(y - zrow - zl[j] * dl)  # y <= z - l (1 - delta)
                lb_c.append(-np.inf)
                ub_c.append(b[j] - zl[j])
                rows.append(y - zu[j] * dl)  # y <= u delta
                lb_c.append(-np.inf)
                ub_c.append(0.0)
        prev = (ys, ys + n)
        off = ds + n
    w, b = ws[-1]
    obj = np.zeros(n_var)
    obj[prev[0] : prev[1]] = c @ w
    res = milp(
        obj,
        constraints=LinearConstraint(np.array(rows), lb_c, ub_c),
        integrality=integrality,
        bounds=Bounds(lower, upper),
        options={"mip_rel_gap": 0.0},
    )
    assert res.status == 0, res.message
    return float(res.fun + c @ b), res.x[:d]


def _relaxed_lp(
    model: nn.Sequential,
    c: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    pre_bounds: list[tuple[np.ndarray, np.ndarray]],
    lower_slopes: list[np.ndarray] | None,
) -> float:
    ws = layers(model)
    d = lo.size
    sizes = [w.shape[0] for w, _ in ws[:-1]]
    n = d + sum(sizes)  # variables: x, then the ReLU outputs y of each layer
    offs = np.cumsum([d, *sizes])
    a_ub, b_ub, a_eq, b_eq = [], [], [], []
    bounds = list(zip(lo, hi)) + [(None, None)] * sum(sizes)

    def row() -> np.ndarray:
        return np.zeros(n)

    prev = slice(0, d)
    for li, (w, b) in enumerate(ws[:-1]):
        lower, u = pre_bounds[li]
        cur = slice(offs[li], offs[li + 1])
        for j in range(w.shape[0]):
            zrow = row()
            zrow[prev] = w[j]  # z_j = zrow·v + b_j
            yj = offs[li] + j
            if lower[j] >= 0:
                r = -zrow.copy()
                r[yj] += 1
                a_eq.append(r)
                b_eq.append(b[j])
            elif u[j] <= 0:
                r = row()
                r[yj] = 1
                a_eq.append(r)
                b_eq.append(0.0)
            else:
                slope = u[j] / (u[j] - lower[j])
                # y <= slope (z - l)
                r = -slope * zrow
                r[yj] += 1
                a_ub.append(r)
                b_ub.append(slope * (b[j] - lower[j]))
                if lower_slopes is None:
                    # y >= 0 and y >= z
                    r = row()
                    r[yj] = -1
                    a_ub.append(r)
                    b_ub.append(0.0)
                    r = zrow.copy()
                    r[yj] -= 1
                    a_ub.append(r)
                    b_ub.append(-b[j])
                else:
                    a = lower_slopes[li][j]
                    r = a * zrow
                    r[yj] -= 1
                    a_ub.append(r)
                    b_ub.append(-a * b[j])
        prev = cur
    w, b = ws[-1]
    obj = row()
    obj[prev] = c @ w
    res = linprog(
        obj,
        A_ub=np.array(a_ub) if a_ub else None,
        b_ub=np.array(b_ub) if b_ub else None,
        A_eq=np.array(a_eq) if a_eq else None,
        b_eq=np.array(b_eq) if b_eq else None,
        bounds=bounds,
        method="highs",
    )
    assert res.status == 0, res.message
    return float(res.fun + c @ b)


Bounds = list[tuple[np.ndarray, np.ndarray]]


def triangle_lp(
    model: nn.Sequential, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, pre_bounds: Bounds
) -> float:
    """``min c·f(x)`` over the triangle relaxation with the given pre-activation bounds."""
    return _relaxed_lp(model, c, lo, hi, pre_bounds, None)


def fixed_lines_lp(
    model: nn.Sequential,
    c: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    pre_bounds: Bounds,
    lower_slopes: list[np.ndarray],
) -> float:
    """Each unstable ReLU between CROWN's upper line and the lower line of the given slope."""
    return _relaxed_lp(model, c, lo, hi, pre_bounds, lower_slopes)


def mlp(sizes: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).double().eval()

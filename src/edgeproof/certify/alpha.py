"""α-CROWN (see :mod:`~edgeproof.certify.bounds`): the slopes of unstable ReLUs and the
coefficients of max pools, initialised, clipped or projected, and optimised with Adam on the
final lower bound (and on the intermediate bounds with ``AlphaSettings(intermediate=True)``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.backward import backward
from edgeproof.certify.bound_state import (
    AlphaSettings,
    BoundState,
)
from edgeproof.certify.graph import BoundGraph
from edgeproof.certify.intermediate import (
    RowPlan,
    _crown_node,
    _joint_intermediate,
    _sparse_safe,
    crown_nodes,
    row_plan,
)
from edgeproof.certify.patches import Patches


def _project_simplex(v: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Euclidean projection of ``v`` onto the probability simplex along ``dim`` (positions where
    ``valid`` is False are held at 0); the sort-based algorithm of Held et al. 1974 /
    Duchi et al. 2008. The condition ``s_k > (Σ_{i≤k} s_i − 1)/k`` holds for a prefix of the
    sorted values, so its count gives the support size without a search. Windows of up to
    :data:`_NETWORK_SORT` entries are sorted by a sorting network along ``dim`` (the values
    and prefix sums of ``torch.sort``/``cumsum``, without moving ``dim`` last)."""
    big = torch.finfo(v.dtype).max / 4
    w = torch.where(valid, v, torch.full_like(v, -big))
    n = int(w.shape[dim])
    if n <= _NETWORK_SORT:
        out = (w - _simplex_theta(w, dim)).clamp(min=0)
        return torch.where(valid, out, torch.zeros_like(out))
    w = w.movedim(dim, -1)
    srt = torch.sort(w, dim=-1, descending=True).values
    css = srt.cumsum(-1) - 1
    k = torch.arange(1, w.shape[-1] + 1, dtype=v.dtype)
    rho = ((srt - css / k) > 0).sum(-1, keepdim=True).clamp(min=1)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    out = (w - theta).clamp(min=0).movedim(-1, dim)
    return torch.where(valid, out, torch.zeros_like(out))


#: windows up to this size are sorted by an odd-even transposition network in the projection
_NETWORK_SORT = 4


def _simplex_theta(w: Tensor, dim: int) -> Tensor:
    """The projection's threshold along ``dim`` (size ≤ :data:`_NETWORK_SORT`), kept as a size-1
    ``dim``: the sorted values by compare-exchanges, the prefix sums accumulated in double as
    ``cumsum`` does."""
    s = list(w.unbind(dim))
    n = len(s)
    for rnd in range(n):
        for i in range(rnd % 2, n - 1, 2):
            s[i], s[i + 1] = torch.maximum(s[i], s[i + 1]), torch.minimum(s[i], s[i + 1])
    acc = s[0].double()
    css = [acc.to(w.dtype) - 1]
    for i in range(1, n):
        acc = acc + s[i]
        css.append(acc.to(w.dtype) - 1)
    rho = sum(((s[i] - css[i] / (i + 1)) > 0).to(torch.int64) for i in range(n))
    rho = rho.clamp(min=1)  # type: ignore[union-attr]
    theta = css[0]
    for i in range(1, n):
        theta = torch.where(rho == i + 1, css[i] / (i + 1), theta)
    return theta.unsqueeze(dim)


#: Adam's second moments below this give the denominator ``1e-8`` exactly (float32: ``√v`` is
#: under half an ulp of ``1e-8``), so they are raised to it before the square root
_TINY = 1e-34


class _Adam:
    """Adam (Kingma & Ba 2015) with torch.optim.Adam's defaults (β = (0.9, 0.999), eps 1e-8, no
    weight decay) and an exponentially decayed learning rate; written out because the first use
    of ``torch.optim`` imports ``torch._dynamo`` (seconds per process)."""

    def __init__(self, params: Sequence[Tensor], lr: float, decay: float = 1.0) -> None:
        self.params = list(params)
        self.lr = lr
        self.decay = decay
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.scratch = [torch.empty_like(p) for p in self.params]  # the step's denominators

    def add(self, params: Sequence[Tensor]) -> None:
        """Optimise more parameters from now on (their moments start at zero)."""
        for p in params:
            self.params.append(p)
            self.m.append(torch.zeros_like(p))
            self.v.append(torch.zeros_like(p))
            self.scratch.append(torch.empty_like(p))

    def step(self, sign: float = 1.0) -> None:
        """One step *descending* the gradient (``sign=-1`` ascends)."""
        self.t += 1
        b1, b2 = 0.9, 0.999
        c1 = 1 - b1**self.t
        c2 = 1 - b2**self.t
        with torch.no_grad():
            for p, m, v, denom in zip(self.params, self.m, self.v, self.scratch):
                g = p.grad
                if g is None:
                    continue
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                # (clamped from below: the square root of 0 and of subnormals takes a slow path,
                # and any value under ~1e-31 gives the same denominator, 1e-8, after the add)
                torch.div(v, c2, out=denom).clamp_(min=_TINY).sqrt_().add_(1e-8)
                p.addcdiv_(m, denom, value=-sign * self.lr / c1)
                p.grad = None
        self.lr *= self.decay


def init_alpha(
    state: BoundState,
    rows: int,
    start: int | None = None,
    plan: RowPlan | None = None,
    kinds: tuple[str, ...] = ("relu", "maxpool"),
) -> tuple[dict[int, Tensor], dict[int, Tensor | None]]:
    """Initial α of a backward pass from ``start`` (default: the output) with ``rows`` rows:
    CROWN's lower slopes of unstable ReLUs ``(B, rows, *shape)`` — or, where the coefficients
    from ``start`` reach a ReLU as patches, their windows ``(B, rows, C, Kh, Kw)`` (``plan``
    gives the rows' neurons; rows are the plan's lower rows then its upper rows) — and the
    one-hot max-pool coefficients ``(B, rows, C, window, L)``. Returns the α tensors and, per
    node, the simplex validity mask (``None`` for ReLUs)."""
    graph = state.graph
    b = state.batch
    alphas: dict[int, Tensor] = {}
    masks: dict[int, Tensor | None] = {}
    root = graph.output if start is None else start
    forms = state.forms.get(root, {}) if start is not None else {}
    ancestors = _ancestors(graph, root)
    for n in graph.nodes:
        if n.index not in ancestors or n.op is None or n.index == root:
            continue
        op = n.op
        form = forms.get(n.index, ("dense",))
        if isinstance(op, O.Activation) and op.optimisable and "relu" in kinds:
            rel = state.relaxation(n.index)
            assert isinstance(rel, O.Relaxation)
            if rel.unstable is None or not bool(rel.unstable.any()):
                continue
            if form[0] == "patch":
                assert plan is not None and start is not None
                _, stride, pad, kernel = form
                _c, h_, w_ = graph.nodes[start].shape
                pos = plan.index
                pi, pj = (pos // w_) % h_, pos % w_
                probe = Patches(
                    torch.zeros(b, 2 * plan.rows, 1, *kernel, dtype=rel.lower_slope.dtype),  # type: ignore[misc]
                    torch.cat([pi, pi], 1),
                    torch.cat([pj, pj], 1),
                    stride,  # type: ignore[arg-type]
                    pad,  # type: ignore[arg-type]
                    (h_, w_),
                )
                alphas[n.index] = probe.window(rel.lower_slope).clone()
            else:
                alphas[n.index] = rel.lower_slope.unsqueeze(1).expand(b, rows, *n.shape).clone()
            masks[n.index] = None
        elif isinstance(op, O.MaxPool) and op.padding == (0, 0) and "maxpool" in kinds:
            pr = state.relaxation(n.index)
            assert isinstance(pr, O.PoolRelaxation)
            if bool((pr.upper.sum(2) > 0).all()):
                continue  # every window is linear: nothing to optimise
            alphas[n.index] = pr.lower.unsqueeze(1).expand(b, rows, *pr.lower.shape[1:]).clone()
            masks[n.index] = pr.valid.unsqueeze(1)
    return alphas, masks


def clip_alpha(
    graph: BoundGraph, alphas: dict[int, Tensor], masks: dict[int, Tensor | None]
) -> None:
    """Project α back onto its feasible set in place: ``[a, 1]`` for (leaky) ReLUs, the
    simplex for max pools."""
    with torch.no_grad():
        for idx, a in alphas.items():
            mask = masks[idx]
            if mask is None:
                op = graph.nodes[idx].op
                assert isinstance(op, O.Activation)
                a.clamp_(op.alpha_min, 1.0)
            else:
                a.copy_(_project_simplex(a, mask, 3))


def optimise_alpha(state: BoundState, a0: Tensor, settings: AlphaSettings) -> Tensor:
    """α-CROWN: the best lower bound of ``a0·f(x)`` over the iterations, ``(B, R)``.

    ``settings.iterations`` bound evaluations, a projected Adam step after each but the last
    (auto_LiRPA's loop). With ``settings.intermediate`` the slopes of every intermediate CROWN
    bound (per start node, per row, per neuron) are optimised jointly through the final bound,
    as auto_LiRPA's ``alpha-CROWN`` does: each iteration recomputes the intermediate bounds —
    of the neurons the first CROWN pass left unstable where only their stability matters (every
    consumer a ReLU whose output bounds nothing reads), of every neuron otherwise (a max pool's
    relaxation reads the values) — and uses them as they are (auto_LiRPA's iterations). ReLU
    slopes start at CROWN's; max-pool coefficients start one-hot at the window maximum of the
    lower bounds of the first iteration (auto_LiRPA initialises them lazily, too).
    """
    graph = state.graph
    rows = int(a0.shape[1])
    final_alpha, final_masks = init_alpha(state, rows, kinds=("relu",))
    inter: dict[int, dict[int, Tensor]] = {}
    inter_masks: dict[int, dict[int, Tensor | None]] = {}
    plans: dict[int, RowPlan] = {}
    if settings.intermediate:
        _init_intermediate_alpha(state, inter, inter_masks, plans)
    has_pools = any(isinstance(n.op, O.MaxPool) for n in graph.nodes)
    params = list(final_alpha.values()) + [a for d in inter.values() for a in d.values()]
    if not params and not has_pools:
        with torch.no_grad():
            return backward(state, graph.output, a0)[0]
    for p in params:
        p.requires_grad_(True)
    opt = _Adam(params, settings.lr, settings.lr_decay)
    best: Tensor | None = None
    first_pass = list(state.bounds)
    joint = bool(plans)

    def add_pools(cur: BoundState, k: int | None) -> None:
        """Max-pool coefficients of start ``k`` (None: the output), one-hot at the current
        relaxation, created just before their first use."""
        if k is None:
            al, ms = init_alpha(cur, rows, kinds=("maxpool",))
            final_alpha.update(al)
            final_masks.update(ms)
        else:
            plan = plans[k]
            al, ms = init_alpha(cur, 2 * plan.rows, start=k, plan=plan, kinds=("maxpool",))
            inter[k].update(al)
            inter_masks[k].update(ms)
        for p in al.values():
            p.requires_grad_(True)
        opt.add(list(al.values()))

    for it in range(settings.iterations):
        last = it == settings.iterations - 1
        first = it == 0 and has_pools
        with torch.set_grad_enabled(not last):
            if joint:
                cur = _unbounded_copy(state)
                _joint_intermediate(cur, first_pass, plans, inter, add_pools if first else None)
            else:
                cur = state
            if first:
                add_pools(cur, None)
            lb, _ = backward(cur, graph.output, a0, alpha=final_alpha)
        best = lb.detach() if best is None else torch.maximum(best, lb.detach())
        if last:
            break
        if lb.requires_grad:
            (-lb.sum()).backward()
            opt.step()
        clip_alpha(graph, final_alpha, final_masks)
        for k, d in inter.items():
            clip_alpha(graph, d, inter_masks[k])
    assert best is not None
    return best


def _init_intermediate_alpha(
    state: BoundState,
    inter: dict[int, dict[int, Tensor]],
    inter_masks: dict[int, dict[int, Tensor | None]],
    plans: dict[int, RowPlan],
) -> None:
    """Fill the ReLU slopes (and their masks and row plans) of every intermediate CROWN bound
    with unstable rows, per start node, starting at CROWN's."""
    graph = state.graph
    for k in crown_nodes(graph, state.iset):
        ref = state.bounds[k]
        assert ref is not None
        plan = row_plan(graph, k, ref, sparse=_sparse_safe(graph, k))
        if plan.rows == 0:
            continue
        plans[k] = plan
        if not state.forms.get(k):
            # the first pass had no unstable row here: probe the coefficient forms
            probe = RowPlan(plan.index[:, :1], plan.valid[:, :1])
            with torch.no_grad():
                _crown_node(state, k, ref, probe, forms=state.forms.setdefault(k, {}))
        al, ms = init_alpha(state, 2 * plan.rows, start=k, plan=plan, kinds=("relu",))
        inter[k], inter_masks[k] = al, ms


def _unbounded_copy(state: BoundState) -> BoundState:
    """``state`` with no node bounds yet (each joint iteration recomputes them)."""
    graph = state.graph
    return BoundState(
        graph=graph,
        iset=state.iset,
        bounds=[None] * len(graph.nodes),
        splits=state.splits,
        max_elements=state.max_elements,
        forms=state.forms,
    )


def _ancestors(graph: BoundGraph, idx: int) -> set[int]:
    seen = {idx}
    for n in reversed(graph.nodes[: idx + 1]):
        if n.index in seen:
            seen.update(n.inputs)
    return seen

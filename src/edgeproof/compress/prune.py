"""Pruning: unstructured magnitude, N:M, elimination–compensation, structured channel removal,
and BatchNorm recalibration.

* :func:`prune_unstructured` — per layer, zero the ``ratio`` fraction of Conv/Linear weights with
  the smallest score. ``method="magnitude"``: score |w| (Han et al. 2015). ``method="ec"``:
  elimination–compensation (Ballini et al., arXiv 2602.20467): score ``w_ij² · Var(a_j)`` and,
  for every removed weight, ``b_i += w_ij · E[a_j]`` (for convolutions ``a_j`` is input channel j
  averaged over positions, so the compensation ignores zero-padding at the borders — stated
  approximation).
* :func:`prune_n_m` — in every group of M consecutive weights along the input axis keep the N of
  largest magnitude (NVIDIA 2:4 sparsity pattern).
* :func:`remove_channels` — structured: removes the ``ratio`` fraction of output channels with
  the smallest L1 norm (Li et al. 2017, "Pruning Filters for Efficient ConvNets") from every
  Conv/Linear whose output reaches exactly one Conv/Linear/LSTM through channel-wise ops only
  (ReLU, pooling, transpose, mean, flatten). Tensors really shrink (new, smaller modules); the
  removed channels' mean contribution is folded into the consumer's bias (channel-level
  elimination–compensation). Works on the BatchNorm-folded ``torch.fx`` graph.
* :func:`recalibrate_batchnorm` — re-estimates BatchNorm running statistics on calibration data
  (cumulative average, ``momentum=None``) after weights changed.

Ratios must lie in [0, 1); an :class:`~edgeproof.errors.OptionError` names the option otherwise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from edgeproof.errors import OptionError

__all__ = [
    "ChannelRemoval",
    "check_ratio",
    "prune_n_m",
    "prune_unstructured",
    "recalibrate_batchnorm",
    "remove_channels",
    "sparsity",
]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def check_ratio(ratio: float, option: str = "ratio") -> float:
    """Validate a pruning ratio in [0, 1)."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio < 1.0):
        raise OptionError(
            option,
            f"pruning ratio {ratio!r} is outside [0, 1)",
            "use e.g. 0.5 to remove half of the weights",
        )
    return float(ratio)


def _input_stats(module: nn.Module, x: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: mean and variance of each input feature/channel on ``x``."""
    sums: dict[str, list[torch.Tensor]] = {}
    hooks = []

    def make(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].detach()
            a = a.transpose(0, 1).reshape(a.shape[1], -1) if a.ndim > 2 else a.T
            s = sums.setdefault(
                name,
                [
                    torch.zeros(a.shape[0], dtype=torch.float64),
                    torch.zeros(a.shape[0], dtype=torch.float64),
                    torch.zeros((), dtype=torch.float64),
                ],
            )
            s[0] += a.double().sum(1)
            s[1] += (a.double() ** 2).sum(1)
            s[2] += a.shape[1]

        return hook

    for name, mod in module.named_modules():
        if isinstance(mod, _WEIGHTED):
            hooks.append(mod.register_forward_pre_hook(make(name)))
    try:
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
            for i in range(0, xt.shape[0], 128):
                module(xt[i : i + 128])
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        out[name] = (mean.float(), (s2 / n - mean**2).clamp_min(0).float())
    return out


def prune_unstructured(
    module: nn.Module, ratio: float, *, method: str = "magnitude", x_calib: np.ndarray | None = None
) -> nn.Module:
    """A copy of ``module`` with ``ratio`` of each Conv/Linear weight tensor set to zero."""
    check_ratio(ratio)
    if method not in ("magnitude", "ec"):
        raise OptionError("method", f"unknown method {method!r}", "use magnitude or ec")
    if method == "ec" and x_calib is None:
        raise OptionError("x_calib", "elimination-compensation needs calibration data")
    m = copy.deepcopy(module).eval()
    stats = _input_stats(m, x_calib) if method == "ec" and x_calib is not None else {}
    with torch.no_grad():
        for name, mod in m.named_modules():
            if not isinstance(mod, _WEIGHTED):
                continue
            w = mod.weight
            k = int(ratio * w.numel())
            if k == 0:
                continue
            bshape = (1, -1) + (1,) * (w.ndim - 2)
            if method == "ec":
                mean, var = stats[name]
                score = w**2 * var.reshape(bshape)
            else:
                score = w.abs()
            thresh = score.flatten().kthvalue(k).values
            drop = score <= thresh
            if method == "ec":
                removed = torch.where(drop, w, torch.zeros_like(w))
                contrib = (removed * mean.reshape(bshape)).sum(dim=tuple(range(1, w.ndim)))
                if mod.bias is None:
                    mod.bias = nn.Parameter(torch.zeros(w.shape[0]))
                mod.bias.add_(contrib)
            w.masked_fill_(drop, 0.0)
    return m


def prune_n_m(module: nn.Module, n: int = 2, m: int = 4) -> nn.Module:
    """A copy with N:M sparsity: in each group of ``m`` consecutive inputs keep ``n`` largest."""
    if not (0 < n < m):
        raise OptionError("n", f"N:M = {n}:{m} is invalid", "use 0 < N < M, e.g. 2:4")
    out = copy.deepcopy(module).eval()
    with torch.no_grad():
        for mod in out.modules():
            if not isinstance(mod, _WEIGHTED):
                continue
            w = mod.weight
            flat = w.reshape(w.shape[0], -1)
            k = flat.shape[1]
            pad = (-k) % m
            padded = torch.nn.functional.pad(flat.abs(), (0, pad), value=-1.0)
            groups = padded.reshape(flat.shape[0], -1, m)
            keep_idx = groups.topk(n, dim=2).indices
            mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep_idx, True)
            mask = mask.reshape(flat.shape[0], -1)[:, :k].reshape(w.shape)
            w.mul_(mask)
    return out


def sparsity(module: nn.Module) -> float:
    """Fraction of exactly-zero weights over all Conv/Linear weight tensors."""
    total = zeros = 0
    for mod in module.modules():
        if isinstance(mod, _WEIGHTED):
            total += mod.weight.numel()
            zeros += int((mod.weight == 0).sum())
    return zeros / max(total, 1)


def recalibrate_batchnorm(
    module: nn.Module, x_calib: np.ndarray, batch_size: int = 128
) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/var on ``x_calib`` (in place); returns module."""
    bns = [mod for mod in module.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return module
    saved = [(bn.momentum, bn.training) for bn in bns]
    module.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x_calib, np.float32))
        for i in range(0, xt.shape[0], batch_size):
            if xt[i : i + batch_size].shape[0] > 1:
                module(xt[i : i + batch_size])
    for bn, (mom, _) in zip(bns, saved):
        bn.momentum = mom
        bn.eval()
    return module


# ---------------------------------------------------------------------------------------------
# Structured channel removal


@dataclass(frozen=True)
class ChannelRemoval:
    """One producer/consumer pair that was shrunk."""

    producer: str
    consumer: str
    kept: int
    removed: int


_PASS_MODULES = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
    nn.Flatten,
)
_PASS_METHODS = {"transpose", "mean", "flatten", "relu", "contiguous"}
_PASS_FUNCTIONS = {torch.relu, nn.functional.relu, torch.flatten, torch.mean, torch.transpose}


def _passes_channels(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _PASS_MODULES)
    if node.op == "call_method":
        return str(node.target) in _PASS_METHODS
    return node.op == "call_function" and node.target in _PASS_FUNCTIONS


def _single_consumer(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """Follow channel-wise ops from ``node`` to the one weighted consumer, or None."""
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return None
        u = users[0]
        if u.op == "call_module" and isinstance(
            gm.get_submodule(str(u.target)), (*_WEIGHTED, nn.LSTM)
        ):
            return u if u.args and u.args[0] is cur else None
        if not _passes_channels(gm, u) or (u.args and u.args[0] is not cur):
            return None
        cur = u


def remove_channels(
    module: nn.Module, ratio: float, x_calib: np.ndarray
) -> tuple[fx.GraphModule, list[ChannelRemoval]]:
    """BatchNorm-folded copy of ``module`` with ``ratio`` of prunable output channels removed."""
    from edgeproof.compress.folding import fold_batchnorm

    check_ratio(ratio, "ratio")
    gm = fold_batchnorm(module)
    stats = _input_stats(gm, x_calib)
    lstm_means = _lstm_input_means(gm, x_calib)
    done: list[ChannelRemoval] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        prod = gm.get_submodule(str(node.target))
        if not isinstance(prod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        cons_node = _single_consumer(gm, node)
        if cons_node is None:
            continue
        cons = gm.get_submodule(str(cons_node.target))
        c_out = int(_weight(prod).shape[0])
        n_remove = int(ratio * c_out)
        if n_remove == 0 or n_remove >= c_out:
            continue
        if isinstance(cons, nn.LSTM):
            if cons.input_size != c_out or cons.num_layers != 1 or cons.bidirectional:
                continue
            mean_in = lstm_means[str(cons_node.target)]
        else:
            cin = int(_weight(cons).shape[1])
            if cin % c_out != 0 or (isinstance(cons, (nn.Conv1d, nn.Conv2d)) and cin != c_out):
                continue
            mean_in = stats[str(cons_node.target)][0]
        score = _weight(prod).detach().abs().reshape(c_out, -1).sum(1)
        keep = torch.sort(torch.argsort(score, descending=True)[: c_out - n_remove]).values
        drop = torch.tensor(sorted(set(range(c_out)) - set(keep.tolist())))
        with torch.no_grad():
            new_prod = _slice_out(prod, keep)
            new_cons = _slice_in(cons, keep, drop, c_out, mean_in)
        _set(gm, str(node.target), new_prod)
        _set(gm, str(cons_node.target), new_cons)
        done.append(ChannelRemoval(str(node.target), str(cons_node.target), len(keep), n_remove))
    gm.recompile()
    return gm, done


def _set(gm: nn.Module, target: str, mod: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, mod)


def _weight(mod: nn.Module) -> torch.Tensor:
    w = mod.weight
    assert isinstance(w, torch.Tensor)
    return w


def _bias(mod: nn.Module) -> torch.Tensor | None:
    b = getattr(mod, "bias", None)
    return b if isinstance(b, torch.Tensor) else None


def _resized(mod: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A copy of Conv/Linear ``mod`` holding new (smaller) ``weight``/``bias`` tensors."""
    new = copy.deepcopy(mod)
    new.weight = nn.Parameter(weight.detach().clone())
    new.bias = None if bias is None else nn.Parameter(bias.detach().clone())  # type: ignore[assignment]
    if isinstance(new, nn.Linear):
        new.out_features, new.in_features = int(weight.shape[0]), int(weight.shape[1])
    elif isinstance(new, (nn.Conv1d, nn.Conv2d)):
        new.out_channels, new.in_channels = int(weight.shape[0]), int(weight.shape[1])
    return new.eval()


def _slice_out(mod: nn.Module, keep: torch.Tensor) -> nn.Module:
    b = _bias(mod)
    return _resized(mod, _weight(mod)[keep], None if b is None else b[keep])


def _slice_in(
    mod: nn.Module, keep: torch.Tensor, drop: torch.Tensor, c_out: int, mean_in: torch.Tensor
) -> nn.Module:
    """Consumer with only the kept input channels; the dropped ones' mean goes into the bias."""
    if isinstance(mod, nn.LSTM):
        new_l = nn.LSTM(len(keep), mod.hidden_size, batch_first=mod.batch_first)
        sd = {k: v.clone() for k, v in mod.state_dict().items()}
        w_ih = sd["weight_ih_l0"]
        comp = w_ih[:, drop] @ mean_in[drop]
        sd["weight_ih_l0"] = w_ih[:, keep]
        sd["bias_ih_l0"] = sd["bias_ih_l0"] + comp
        new_l.load_state_dict(sd)
        return new_l.eval()
    w = _weight(mod)
    cin = int(w.shape[1])
    rep = cin // c_out  # Linear after flatten: each channel owns `rep` consecutive columns
    cols_keep = (keep[:, None] * rep + torch.arange(rep)[None, :]).reshape(-1)
    cols_drop = (drop[:, None] * rep + torch.arange(rep)[None, :]).reshape(-1)
    red = tuple(range(2, w.ndim))
    w_drop = w[:, cols_drop]
    comp = (w_drop.sum(dim=red) if red else w_drop) @ mean_in[cols_drop]
    b = _bias(mod)
    bias = (torch.zeros(w.shape[0]) if b is None else b.detach().clone()) + comp
    return _resized(mod, w[:, cols_keep], bias)


def _lstm_input_means(module: nn.Module, x: np.ndarray) -> dict[str, torch.Tensor]:
    sums: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, mod in module.named_modules():
        if isinstance(mod, nn.LSTM):

            def hook(m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                a = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                s = sums.setdefault(
                    name,
                    [
                        torch.zeros(a.shape[1], dtype=torch.float64),
                        torch.zeros((), dtype=torch.float64),
                    ],
                )
                s[0] += a.sum(0)
                s[1] += a.shape[0]

            hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(x[:256], np.float32)))
    finally:
        for h in hooks:
            h.remove()
    return {k: (s / n).float() for k, (s, n) in sums.items()}

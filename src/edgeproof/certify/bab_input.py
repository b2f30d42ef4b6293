"""Input splitting (see :mod:`~edgeproof.certify.bab`): a low-dimensional input set bisected
along its widest coordinate, each part bounded by CROWN."""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from edgeproof.certify.bab_relu import _finished
from edgeproof.certify.bab_settings import (
    BabResult,
    BabSettings,
    ModelFn,
    _margins,
)
from edgeproof.certify.bounds import (
    backward,
    prepare,
)
from edgeproof.certify.graph import BoundGraph
from edgeproof.certify.sets import Box, InputSet, Segment
from edgeproof.errors import OptionError


def _free_dims(iset: InputSet) -> int:
    if isinstance(iset, Segment):
        return 1
    lo, hi = iset.box()
    return int((hi > lo).sum())


def _input_split(
    graph: BoundGraph,
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    settings: BabSettings,
    t0: float,
) -> BabResult:
    parts = _initial_parts(iset)
    rows = int(spec.shape[1])
    count = 0
    verified_min = math.inf
    lbs: list[float] = []
    while parts:
        if time.perf_counter() - t0 > settings.budget_s or len(parts) > settings.max_domains:
            break
        batch = parts[: settings.batch_domains * 2]
        parts = parts[settings.batch_domains * 2 :]
        d = len(batch)
        sets = _part_sets(iset, batch)
        state = prepare(graph, sets, "crown")
        a0 = spec.expand(d, *spec.shape[1:]).reshape(d, rows, *graph.nodes[graph.output].shape)
        with torch.no_grad():
            lb, a_in = backward(state, graph.output, a0, keep_input=True)
        count += d
        assert a_in is not None
        cand = sets.minimiser(a_in)[torch.arange(d), lb.argmin(1)]
        m = _margins(model_fn, cand, spec).min(1).values
        k = int(m.argmin())
        if float(m[k]) < 0:
            return _finished(
                "falsified", float(lb.min()), count, t0, "input-split", cand[k : k + 1], float(m[k])
            )
        nxt: list[tuple[Tensor, Tensor]] = []
        for i in range(d):
            if bool((lb[i] > 0).all()):
                verified_min = min(verified_min, float(lb[i].min()))
                continue
            nxt += _bisect(iset, *batch[i])
            lbs.append(float(lb[i].min()))
        parts = nxt + parts
    if not parts:
        return _finished("verified", verified_min, count, t0, "input-split")
    return _finished("unknown", min(lbs) if lbs else -math.inf, count, t0, "input-split")


def _initial_parts(iset: InputSet) -> list[tuple[Tensor, Tensor]]:
    """The one part input splitting starts from: a segment's ``t`` range or a box's corners."""
    if isinstance(iset, Segment):
        return [(iset.t_lo, iset.t_hi)]
    if isinstance(iset, Box):
        return [(iset.lo, iset.hi)]
    raise OptionError(
        "bab", "input splitting needs a box or a segment", "use an L∞ ball, a box or a segment"
    )


def _part_sets(iset: InputSet, batch: list[tuple[Tensor, Tensor]]) -> InputSet:
    """The parts in ``batch`` as one batched input set (sub-segments of ``iset``, or boxes)."""
    d = len(batch)
    lo = torch.cat([p[0] for p in batch])
    hi = torch.cat([p[1] for p in batch])
    if isinstance(iset, Segment):
        return Segment(iset.start.expand(d, *iset.shape), iset.end.expand(d, *iset.shape), lo, hi)
    return Box(lo, hi)


def _bisect(iset: InputSet, plo: Tensor, phi: Tensor) -> list[tuple[Tensor, Tensor]]:
    """A part's two halves: a segment's ``t`` range at its midpoint, a box along its widest
    dimension."""
    if isinstance(iset, Segment):
        mid = (plo + phi) / 2
        return [(plo, mid), (mid, phi)]
    width = (phi - plo).flatten()
    j = int(width.argmax())
    mid = (plo.flatten()[j] + phi.flatten()[j]) / 2
    left_hi = phi.clone().flatten()
    left_hi[j] = mid
    right_lo = plo.clone().flatten()
    right_lo[j] = mid
    return [(plo, left_hi.view_as(phi)), (right_lo.view_as(plo), phi)]

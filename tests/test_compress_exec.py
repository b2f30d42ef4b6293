"""Compression candidates as executor tasks: the same ledger in this process, on two worker
processes and on Ray, in recipe order; the time budget, errors raised in a worker, the checks a
caller registered, and where the candidates ran recorded in compress.json.

One Ray instance serves the module (``ray_executor``); the three searches run once
(``ledgers``) and the tests read them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edgeproof.checks
from edgeproof.checks import register_check
from edgeproof.checks.base import AuditContext, Check
from edgeproof.cli import build_parser
from edgeproof.compress.api import CompressionResult, compress, write_artefacts
from edgeproof.compress.context import BuildContext
from edgeproof.compress.quantize import QuantConfig
from edgeproof.compress.recipes import Quantize, RemoveChannels
from edgeproof.compress.search import Budget, search
from edgeproof.compress.steps import Built, Chain, Step
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.execute import Executor, make_executor
from edgeproof.models.loaded import LoadedModel
from edgeproof.results import CheckResult, Metric

#: the slowest first: on two workers the cheap ones finish before it
RECIPES = (
    Chain(RemoveChannels(0.25), Quantize(QuantConfig("int8"))),
    Chain(Quantize(QuantConfig("w8"))),
    Chain(RemoveChannels(0.25)),
    Chain(Quantize(QuantConfig("int8", "percentile"))),
)
CHECKS = ("calibration", "adversarial", "bitflip", "weight-norm")
#: what differs from run to run: wall-clock measurements
TIMINGS = {
    "latency_p50_ms",
    "latency_p95_ms",
    "full_latency_p50_ms",
    "peak_rss_mb",
    "build_s",
    "duration_s",
}


class WeightNorm(Check):
    """A check registered by the caller (not built in): workers must register it too."""

    name = "weight-norm"
    title = "Weight norm"

    def run(self, ctx: AuditContext) -> CheckResult:
        assert ctx.model.module is not None
        sq = sum(float((p.detach().double() ** 2).sum()) for p in ctx.model.module.parameters())
        return self.new_result(
            metrics=[Metric("l2", sq**0.5, "", None, "L2 norm of every parameter", False)]
        )


class Misconfigured(Step):
    label = "bad"
    technique = "misconfigured"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        raise OptionError("ratio", "2.0 is outside [0, 1)", "use e.g. 0.5")


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[Executor]:
    """Ray on two CPUs; this module's check and step travel to its workers by value (the
    workers cannot import a test module)."""
    import ray.cloudpickle

    ex = make_executor("ray", 2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ex
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ex.close()


@pytest.fixture(scope="module")
def weight_norm_registered() -> Iterator[None]:
    edgeproof.checks.available_checks()  # the built-ins loaded first: kept after the module
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(edgeproof.checks, "_INFO", dict(edgeproof.checks._INFO))
        mp.setattr(edgeproof.checks, "_FACTORIES", dict(edgeproof.checks._FACTORIES))
        register_check("weight-norm", WeightNorm)
        yield


def _compress(
    model: LoadedModel, train: Dataset, test: Dataset, executor: str | Executor, **kw: Any
) -> CompressionResult:
    assert model.module is not None and model.spec is not None
    return compress(
        model.module,
        model.spec,
        train.subset(np.arange(96)),
        evaluation=test.subset(np.arange(100)),
        budget=Budget(max_drop=0.05, time_budget_s=120),
        recipes=list(RECIPES),
        checks=CHECKS,
        executor=executor,
        **kw,
    )


@pytest.fixture(scope="module")
def ledgers(
    digits_model: LoadedModel,
    digits_train: Dataset,
    digits_test: Dataset,
    ray_executor: Executor,
    weight_norm_registered: None,
) -> dict[str, CompressionResult]:
    torch.set_num_threads(2)  # the search's threads=1 must hold whatever the caller's count
    try:
        return {
            "inprocess": _compress(digits_model, digits_train, digits_test, "inprocess"),
            "processes": _compress(digits_model, digits_train, digits_test, "processes", jobs=2),
            "ray": _compress(digits_model, digits_train, digits_test, ray_executor),
        }
    finally:
        torch.set_num_threads(1)


def _numbers(obj: Any) -> Any:
    """The ledger's JSON without its timings."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items() if k not in TIMINGS}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def test_every_backend_gives_the_same_ledger_bit_for_bit_timings_aside(
    ledgers: dict[str, CompressionResult],
) -> None:
    ref = ledgers["inprocess"].ledger
    want = json.dumps(_numbers(ref.to_json()), sort_keys=True)
    assert len(ref.candidates) == len(RECIPES) and ref.skipped == []
    for kind in ("processes", "ray"):
        got = ledgers[kind].ledger
        assert json.dumps(_numbers(got.to_json()), sort_keys=True) == want, kind
        for a, b in zip(ref.rows, got.rows):
            assert a.correct is not None and b.correct is not None
            assert np.array_equal(a.correct, b.correct), (kind, a.name)
            art_a, art_b = ref.artefact(a.name), got.artefact(b.name)
            assert art_a.onnx_bytes == art_b.onnx_bytes, (kind, a.name)
        assert ledgers[kind].selection.chosen.name == ledgers["inprocess"].selection.chosen.name


def test_the_ledger_is_in_recipe_order_not_the_order_candidates_finished(
    ledgers: dict[str, CompressionResult],
) -> None:
    for kind, result in ledgers.items():
        assert [c.name for c in result.ledger.candidates] == [r.name for r in RECIPES], kind
        assert list(result.ledger.artefacts) == ["fp32", *[r.name for r in RECIPES]], kind


def test_a_check_the_caller_registered_runs_in_every_worker(
    ledgers: dict[str, CompressionResult],
) -> None:
    for kind, result in ledgers.items():
        for row in result.ledger.rows:
            assert row.trust_value("weight-norm.l2") is not None, (kind, row.name, row.notes)
    norms = [r.ledger.candidates[0].trust_value("weight-norm.l2") for r in ledgers.values()]
    assert len(set(norms)) == 1


def test_compress_json_records_where_the_candidates_ran(
    ledgers: dict[str, CompressionResult], digits_train: Dataset, tmp_path: Path
) -> None:
    seen = {}
    for kind, result in ledgers.items():
        write_artefacts(result, tmp_path / kind, source="digits", data=digits_train)
        seen[kind] = json.loads((tmp_path / kind / "compress.json").read_text())["execution"]
    assert seen["inprocess"] == {"executor": "inprocess", "workers": 1}
    assert seen["processes"] == {"executor": "processes", "workers": 2}
    assert seen["ray"] == {"executor": "ray", "workers": 2, "address": "local", "nodes": 1}


def test_a_third_party_graph_gives_the_same_ledger_in_process_and_on_ray(
    digits_model: LoadedModel, digits_test: Dataset, ray_executor: Executor
) -> None:
    from edgeproof.compress.api import compress_graph
    from edgeproof.compress.onnx_export import export_onnx

    assert digits_model.module is not None and digits_model.spec is not None
    graph = export_onnx(digits_model.module, (1, 8, 8)).SerializeToString()
    got = {
        str(ex): compress_graph(
            graph,
            digits_model.spec,
            digits_test.subset(np.arange(120)),
            checks=("calibration",),
            executor=ex,
        ).ledger
        for ex in ("inprocess", ray_executor)
    }
    here, there = got.values()
    assert [c.name for c in there.candidates] == [c.name for c in here.candidates]
    assert len(here.candidates) == 5 and here.execution["executor"] == "inprocess"
    assert there.execution["executor"] == "ray"
    assert _numbers(there.to_json()) == _numbers(here.to_json())
    for c in here.candidates:
        assert there.artefact(c.name).onnx_bytes == here.artefact(c.name).onnx_bytes


def test_a_spent_time_budget_skips_the_candidates_not_started_on_ray_and_says_so(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset, ray_executor: Executor
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    lines: list[str] = []
    ledger = search(
        digits_model.module,
        digits_model.spec,
        digits_train.subset(np.arange(64)),
        digits_test.subset(np.arange(64)),
        Budget(time_budget_s=1e-6),
        recipes=list(RECIPES[:2]),
        checks=(),
        log=lines.append,
        executor=ray_executor,
    )
    assert ledger.candidates == []
    assert [s.name for s in ledger.skipped] == [r.name for r in RECIPES[:2]]
    assert all(
        "not started: the time budget of 1e-06 s was spent" in s.reason for s in ledger.skipped
    )
    assert [line.split(":")[0] for line in lines] == [r.name for r in RECIPES[:2]]
    assert all("skipped, not started" in line for line in lines)


def test_an_error_raised_in_a_worker_is_raised_again_as_itself(
    digits_model: LoadedModel, digits_test: Dataset, ray_executor: Executor
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    with pytest.raises(
        OptionError, match=r"ratio: 2\.0 is outside \[0, 1\)\. use e\.g\. 0\.5"
    ) as e:
        search(
            digits_model.module,
            digits_model.spec,
            digits_test.subset(np.arange(64)),
            digits_test.subset(np.arange(64, 128)),
            Budget(),
            recipes=[Chain(Misconfigured())],
            checks=(),
            executor=ray_executor,
        )
    assert "raised while building or measuring bad" in "".join(e.value.__notes__)


def test_cli_compress_takes_the_executor_and_records_it(
    digits_model_path: Path, tmp_path: Path
) -> None:
    args = build_parser().parse_args(
        [
            "compress",
            str(digits_model_path),
            "--data",
            "builtin:digits",
            "--executor",
            "processes",
            "--jobs",
            "2",
            "--time-budget",
            "0.01",  # spent by the baseline: no worker is started
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.handler(args) == 0
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["execution"] == {"executor": "processes", "workers": 2}
    assert meta["ledger"]["candidates"] == [] and meta["ledger"]["skipped"]


def test_a_ray_address_without_the_ray_executor_is_refused_before_any_work(
    digits_model: LoadedModel, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    lines: list[str] = []
    with pytest.raises(OptionError, match=r"ray_address: is only used with executor='ray'"):
        search(
            digits_model.module,
            digits_model.spec,
            digits_test,
            digits_test,
            Budget(),
            log=lines.append,
            executor="processes",
            ray_address="auto",
        )
    assert lines == []

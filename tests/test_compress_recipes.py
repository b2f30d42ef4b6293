"""Recipes as chains of steps, one measurement for every candidate, one audit path.

Chains compose exactly as the functions they wrap; a step that cannot apply is a skipped candidate
and a misconfiguration is raised; the re-audit runs through the audit's runner with the audit's
threat model (ε pinned here on a [−1, 2] domain); a crashing or refusing trust check fails the
candidate and the CLI's exit code; early exit goes through the same ``measure``; the written
files record the source architecture; ``compress/`` has no import cycle.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgeproof.checks
from edgeproof.checks import register_check
from edgeproof.checks.base import AuditContext, Check, FunctionCheck
from edgeproof.cli import build_parser
from edgeproof.compress.api import compress, write_artefacts
from edgeproof.compress.artefacts import CascadeArtefact
from edgeproof.compress.context import BuildContext
from edgeproof.compress.earlyexit import EarlyExitConfig
from edgeproof.compress.prune import prune_unstructured, recalibrate_batchnorm
from edgeproof.compress.quantize import QuantConfig, quantize
from edgeproof.compress.recipes import LowRank, Prune, Quantize, RemoveChannels
from edgeproof.compress.search import Budget, search
from edgeproof.compress.steps import Built, Chain, Step
from edgeproof.data.dataset import Dataset
from edgeproof.errors import InternalError, OptionError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import from_module, load_model
from edgeproof.results import CheckResult, Metric
from edgeproof.runner import resolve_threat
from edgeproof.spec import InputSpec

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeproof"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Callable[..., Check]], None]:
    """Register checks for one test only (the registry is restored afterwards)."""
    monkeypatch.setattr(edgeproof.checks, "_INFO", dict(edgeproof.checks._INFO))
    monkeypatch.setattr(edgeproof.checks, "_FACTORIES", dict(edgeproof.checks._FACTORIES))
    return register_check


def _probe_eps(ctx: AuditContext) -> CheckResult:
    return CheckResult(
        "eps-probe",
        "ε probe",
        metrics=[Metric("eps", ctx.threat.eps[-1], "", None, "the ε the re-audit ran at", False)],
    )


def _crash(ctx: AuditContext) -> CheckResult:
    raise RuntimeError("the check has a bug")


def _refuse(ctx: AuditContext) -> CheckResult:
    raise OptionError("refusing.level", "NaN weights", "fix the model")


def _ok(ctx: AuditContext) -> CheckResult:
    return CheckResult("ok", "ok", metrics=[Metric("one", 1.0, "", None, "", True)])


def _factory(name: str, fn: Callable[[AuditContext], CheckResult]) -> Callable[..., Check]:
    def make(**settings: object) -> Check:
        return FunctionCheck(name, fn, needs_data=True)

    return make


def _ctx(digits_model: LoadedModel, digits_train: Dataset) -> BuildContext:
    assert digits_model.spec is not None
    return BuildContext(digits_model.spec, digits_train.subset(np.arange(128)))


def test_a_chain_equals_its_steps_applied_by_hand(
    digits_model: LoadedModel, digits_train: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    module = copy.deepcopy(digits_model.module)
    ctx = _ctx(digits_model, digits_train)
    cfg = QuantConfig("int8", "minmax")
    chain = Chain(Prune(0.5, "magnitude"), Quantize(cfg))
    built = chain.apply(module, ctx)
    assert chain.name == "prune50+int8-minmax"
    xc = ctx.x_calib
    pruned = recalibrate_batchnorm(prune_unstructured(module, 0.5, x_calib=xc), xc)
    q = quantize(pruned, digits_model.spec.shape, xc, cfg)
    assert built.artefact is not None and built.artefact.onnx_bytes == q.onnx_bytes()
    x = torch.from_numpy(digits_train.x[:64])
    with torch.no_grad():
        assert torch.equal(built.module(x), q.sim(x))
    assert built.settings["prune"] == "magnitude" and built.settings["scheme"] == "int8"
    assert built.settings["sparsity"] == pytest.approx(0.5, abs=0.01)
    # the caller's module is untouched
    for a, b in zip(module.state_dict().values(), digits_model.module.state_dict().values()):
        assert torch.equal(a, b)


def test_chains_sharing_a_prefix_build_it_once(
    digits_model: LoadedModel, digits_train: Dataset
) -> None:
    assert digits_model.module is not None
    ctx = _ctx(digits_model, digits_train)
    plain = Chain(RemoveChannels(0.25)).apply(digits_model.module, ctx)
    then = Chain(RemoveChannels(0.25), Quantize()).apply(digits_model.module, ctx)
    assert "channel_ratio" in then.settings
    # the same shrunk module fed the quantizer, and its calibration was prepared once
    assert ctx.prepared(plain.module) is ctx.prepared(plain.module)
    assert len(ctx._prepared) == 1


def test_a_terminal_step_must_end_the_chain() -> None:
    with pytest.raises(OptionError, match=r"recipes: Quantize.*must be the last step"):
        Chain(Quantize(), Prune(0.5))


class _Misconfigured(Step):
    label = "bad"
    technique = "misconfigured"

    def apply(self, built: Built, ctx: BuildContext) -> Built:
        raise OptionError("ratio", "2.0 is outside [0, 1)", "use e.g. 0.5")


def test_a_step_that_cannot_apply_is_a_skipped_candidate_and_a_misconfiguration_raises(
    digits_test: Dataset,
) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()  # no layer pair, no rank
    spec = InputSpec((1, 8, 8), num_classes=10)
    calib, evaluation = digits_test.subset(np.arange(64)), digits_test.subset(np.arange(64, 128))
    lines: list[str] = []
    ledger = search(
        module,
        spec,
        calib,
        evaluation,
        Budget(),
        recipes=[Chain(RemoveChannels(0.25)), Chain(LowRank())],
        checks=(),
        log=lines.append,
    )
    assert [s.name for s in ledger.skipped] == ["channels25", "lowrank-mp"]
    assert ledger.skipped[0].reason == "no layer pair can lose channels in this model"
    assert ledger.candidates == []
    assert "channels25: skipped, not applicable: no layer pair" in lines[0]
    with pytest.raises(OptionError, match=r"ratio: 2\.0 is outside"):
        search(module, spec, calib, evaluation, Budget(), recipes=[Chain(_Misconfigured())])


def test_candidates_left_when_the_time_budget_runs_out_are_skipped_and_said(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    lines: list[str] = []
    ledger = search(
        digits_model.module,
        digits_model.spec,
        digits_train.subset(np.arange(64)),
        digits_test.subset(np.arange(64)),
        Budget(time_budget_s=1e-6),
        recipes=[Chain(Quantize()), Chain(Prune(0.5), Quantize())],
        checks=(),
        log=lines.append,
    )
    assert [s.name for s in ledger.skipped] == ["int8", "prune50+int8"]
    assert all("time budget of 1e-06 s was spent" in s.reason for s in ledger.skipped)
    assert [line.split(":")[0] for line in lines] == ["int8", "prune50+int8"]
    assert all("skipped, not started" in line for line in lines)


def _wide_domain_model() -> tuple[nn.Module, InputSpec, Dataset]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = (rng.random((96, 1, 16)) * 3 - 1).astype(np.float32)
    x[:, 0, :4] += y[:, None] * 0.5
    x = np.clip(x, -1, 2)
    data = Dataset(x, y, ["a", "b", "c"], "wide", "npz", kind="timeseries", domain=(-1.0, 2.0))
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    spec = InputSpec((1, 16), domain=(-1.0, 2.0), kind="timeseries", num_classes=3)
    return module, spec, data


def test_compress_reaudits_at_the_largest_eps_of_the_audit_threat_model(
    registry: Callable[[str, Callable[..., Check]], None], tmp_path: Path
) -> None:
    registry("eps-probe", _factory("eps-probe", _probe_eps))
    module, spec, data = _wide_domain_model()
    res = compress(module, spec, data, recipes=[Chain(Quantize())], checks=("eps-probe",))
    # audit resolves ε = 1/3/10 % of the domain width 3: the re-audit attacks at 0.3, as audit
    audit_eps = resolve_threat(from_module(module, spec), data).eps
    assert audit_eps == pytest.approx((0.03, 0.09, 0.3))
    assert res.threat.eps == pytest.approx(audit_eps)
    for row in res.ledger.rows:
        assert row.trust_value("eps-probe.eps") == pytest.approx(0.3)
    write_artefacts(res, tmp_path, source="wide", data=data)
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["ledger"]["reaudit_threat"]["eps"] == pytest.approx([0.3])
    assert meta["threat"]["eps"] == pytest.approx([0.03, 0.09, 0.3])


def test_the_ledger_states_the_eps_it_attacked_at(
    registry: Callable[[str, Callable[..., Check]], None],
) -> None:
    def robust(ctx: AuditContext) -> CheckResult:
        m = Metric("robust_accuracy", 0.5, "", None, "", True)
        return CheckResult("adversarial", "adversarial", metrics=[m])

    registry("adversarial", _factory("adversarial", robust))
    module, spec, data = _wide_domain_model()
    res = compress(module, spec, data, recipes=[], checks=("adversarial",))
    desc = res.ledger.table().description
    assert "at the threat model's largest ε = 0.3 (linf;" in desc


def test_a_crashing_trust_check_fails_the_candidate_and_the_others_still_run(
    registry: Callable[[str, Callable[..., Check]], None],
) -> None:
    registry("crashing", _factory("crashing", _crash))
    registry("ok", _factory("ok", _ok))
    module, spec, data = _wide_domain_model()
    res = compress(module, spec, data, recipes=[Chain(Quantize())], checks=("crashing", "ok"))
    for row in res.ledger.rows:
        crash, fine = row.trust_checks
        assert crash.status == "error" and crash.crashed
        assert crash.message == "RuntimeError: the check has a bug"
        assert fine.status == "ok" and row.trust_value("ok.one") == 1.0
    assert [(n, t.check) for n, t in res.errored_checks()] == [
        ("fp32", "crashing"),
        ("int8", "crashing"),
    ]
    notes = str(res.ledger.table().rows[0][-1])
    assert "trust check crashing failed: RuntimeError: the check has a bug" in notes


@pytest.mark.parametrize(("fn", "code"), [(_crash, 3), (_refuse, 2)])
def test_cli_compress_exits_like_audit_when_a_trust_check_crashes_or_refuses(
    registry: Callable[[str, Callable[..., Check]], None],
    digits_model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fn: Callable[[AuditContext], CheckResult],
    code: int,
) -> None:
    for name in ("calibration", "adversarial", "bitflip"):
        registry(name, _factory(name, _ok))
    registry("certify", _factory("certify", fn))
    args = build_parser().parse_args(
        [
            "compress",
            str(digits_model_path),
            "--data",
            "builtin:digits/train",
            "--eval",
            "builtin:digits",
            "--time-budget",
            "0.001",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.handler(args) == code
    err = capsys.readouterr().err
    assert err.startswith("edgeproof: error: fp32: certify: ")
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "report.json").exists()
    meta = json.loads((tmp_path / "compress.json").read_text())
    [failed] = [t for t in meta["ledger"]["baseline"]["trust_checks"] if t["status"] == "error"]
    assert failed["check"] == "certify" and failed["crashed"] is (code == 3)


def test_cli_compress_takes_the_threat_model_options() -> None:
    args = build_parser().parse_args(
        ["compress", "m.safetensors", "--data", "d.npz", "--out", "o", "--eps", "0.3"]
    )
    assert args.eps == "0.3" and args.norm == "linf" and args.domain is None


def test_early_exit_is_a_recipe_measured_and_reaudited_like_the_others(
    digits_model: LoadedModel, digits_test: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    search_module = importlib.import_module("edgeproof.compress.search")  # not the function
    seen: list[tuple[str, str]] = []
    real = search_module.measure

    def spy(name: str, technique: str, built: Built, *args: object, **kw: object) -> object:
        assert built.artefact is not None
        seen.append((name, built.artefact.kind))
        return real(name, technique, built, *args, **kw)

    monkeypatch.setattr(search_module, "measure", spy)
    res = compress(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_test,
        budget=Budget(max_drop=0.02),
        calib_size=180,
        checks=("calibration",),
        recipes=[],
        early_exit=EarlyExitConfig(epochs=20),
    )
    assert seen == [("fp32", "graph"), ("early-exit-max-softmax", "cascade")]
    [row] = res.ledger.candidates
    assert row.artefact_kind == "cascade"
    assert isinstance(res.ledger.artefact(row.name), CascadeArtefact)
    assert row.trust_value("calibration.ece") is not None  # the PyTorch cascade is re-audited
    assert row.latency_p95_ms >= row.latency_p50_ms > 0 and row.peak_rss_mb is not None


def test_written_files_record_the_source_architecture(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset, tmp_path: Path
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    res = compress(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_train.subset(np.arange(128)),
        evaluation=digits_test,
        recipes=[Chain(Quantize(QuantConfig("int8", "minmax")))],
        budget=Budget(max_drop=0.05),
        checks=(),
        arch=digits_model.arch,
    )
    assert res.selection.chosen.name == "int8-minmax"
    write_artefacts(res, tmp_path, source="digits", data=digits_train)
    meta = json.loads((tmp_path / "compress.json").read_text())
    assert meta["arch"] == "zoo:lenet5"
    # the dequantized LeNet-5 weights fit the source architecture: the file loads with it
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.arch == "zoo:lenet5" and loaded.module is not None
    assert loaded.spec == digits_model.spec


def test_a_shrunk_candidate_records_its_source_architecture_without_claiming_it(
    digits_model: LoadedModel, digits_train: Dataset, digits_test: Dataset, tmp_path: Path
) -> None:
    assert digits_model.module is not None and digits_model.spec is not None
    res = compress(
        copy.deepcopy(digits_model.module),
        digits_model.spec,
        digits_train.subset(np.arange(128)),
        evaluation=digits_test,
        recipes=[Chain(RemoveChannels(0.25))],
        budget=Budget(max_size=60_000),
        checks=(),
        arch="zoo:lenet5",
    )
    assert res.selection.chosen.name == "channels25"
    write_artefacts(res, tmp_path, source="digits", data=digits_train)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        header = json.loads(fh.metadata()["edgeproof"])
    assert header["source_arch"] == "zoo:lenet5" and header["arch"] is None
    assert header["candidate"] == "channels25"


def test_a_report_that_fails_its_schema_is_an_internal_error(
    digits_model: LoadedModel,
    digits_train: Dataset,
    digits_test: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jsonschema

    from edgeproof.report.report import Report

    assert digits_model.module is not None and digits_model.spec is not None
    res = compress(
        digits_model.module,
        digits_model.spec,
        digits_train.subset(np.arange(64)),
        evaluation=digits_test.subset(np.arange(64)),
        recipes=[],
        checks=(),
    )

    def invalid(self: Report) -> None:
        raise jsonschema.ValidationError("'status' is a required property")

    monkeypatch.setattr(Report, "validate", invalid)
    with pytest.raises(InternalError, match=r"does not match the report schema.*'status'"):
        write_artefacts(res, tmp_path, source="digits", data=digits_train)
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "compress.json").exists()
    assert not (tmp_path / "report.json").exists()
    assert not (tmp_path / "report.error.txt").exists()


def _imports(path: Path, package: str) -> Iterator[str]:
    """Every ``edgeproof.*`` module ``path`` imports, at any depth (functions included)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            yield f"{base}.{node.module}" if node.module else base
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_compress_has_no_import_cycle_and_imports_no_cli() -> None:
    files = sorted((SRC / "compress").rglob("*.py"))
    names = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set(_imports(path, package))
        assert not any(d.startswith("edgeproof.cli") for d in deps), (name, deps)
        graph[name] = {d for d in deps if d in names and d != name}
    assert len(graph) > 20
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d) :], d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def _long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if length > 80 and "Long because" not in doc:
                out.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_compress_modules_and_functions_stay_small() -> None:
    """No module in compress/ over 600 lines, no function over 80 without its reason stated
    ("Long because ..." in its docstring)."""
    files = sorted((SRC / "compress").rglob("*.py"))
    big = [f"{p.name}: {n}" for p in files if (n := len(p.read_text().splitlines())) > 600]
    assert not big
    long = [f for p in files for f in _long_functions(p)]
    assert not long


def _function_lengths(root: Path) -> dict[tuple[str, str], int]:
    """``{(path relative to root, function name): lines}`` of every function (methods and nested
    functions too; the longest where a file has several of one name), compress/ left out (its own
    test above), and so are the functions whose docstring states why they are long
    ("Long because ...")."""
    out: dict[tuple[str, str], int] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("compress/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if "Long because" in (ast.get_docstring(node) or ""):
                    continue
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                key = (rel, node.name)
                out[key] = max(out.get(key, 0), length)
    return out


def test_functions_outside_compress_stay_under_80_lines_unless_they_say_why() -> None:
    """No function outside compress/ over 80 lines (docstring included) unless its docstring
    states the reason ("Long because ...", as in compress/)."""
    long = sorted(
        f"{rel}: {name} ({n} lines)" for (rel, name), n in _function_lengths(SRC).items() if n > 80
    )
    assert not long, (
        "functions over 80 lines: split them into helpers with one responsibility each (or, "
        "where splitting would obscure it, state why in the docstring: 'Long because ...'): "
        + "; ".join(long)
    )


def test_no_module_in_src_is_over_600_lines() -> None:
    """No module in src/edgeproof over 600 lines (every line of the file counted)."""
    long = sorted(
        f"{p.relative_to(SRC).as_posix()}: {n} lines"
        for p in sorted(SRC.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    )
    assert not long, (
        "modules over 600 lines: split them into modules with one concern each: " + "; ".join(long)
    )


def test_a_normalisation_outside_the_model_is_applied_as_the_audit_applies_it(
    registry: Callable[[str, Callable[..., Check]], None],
) -> None:
    def probe(ctx: AuditContext) -> CheckResult:
        wrapped = float(ctx.model.network is not ctx.model.module)
        return CheckResult(
            "probe",
            "probe",
            metrics=[
                Metric("eps", ctx.threat.eps[-1], "", None, "", False),
                Metric("wrapped", wrapped, "", None, "", True),
            ],
        )

    registry("probe", _factory("probe", probe))
    module, spec, data = _wide_domain_model()
    spec = spec.with_(outside_normalization=((0.5,), (1.5,)))
    res = compress(module, spec, data, recipes=[Chain(Quantize())], checks=("probe",))
    evaluation = data.subset(np.arange(48, 96))
    with torch.no_grad():
        x = (torch.from_numpy(evaluation.x) - 0.5) / 1.5
        want = float((module(x).argmax(1).numpy() == evaluation.y).mean())
    # built and measured in the network's units (a drop-in replacement for the module) ...
    assert res.ledger.baseline.accuracy == pytest.approx(want)
    # ... re-audited in raw units, the candidate normalised first, at the raw domain's ε
    for row in res.ledger.rows:
        assert row.trust_value("probe.wrapped") == 1.0
        assert row.trust_value("probe.eps") == pytest.approx(0.3)


def test_cli_compress_refuses_an_output_folder_holding_its_model(
    digits_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeproof.cli import main

    out = str(digits_model_path.parent)
    code = main(["compress", str(digits_model_path), "--data", "builtin:digits", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and "contains the input" in err and "--out" in err

"""Every model file compress writes loads in ``edgeproof audit`` with the accuracy compress
reported: int8, int4, mixed, pruned, low-rank, channel-removed, the early-exit cascade — the
ONNX graph always; ``model.safetensors`` with its architecture recorded where the weights still
fit it (then audited as the PyTorch model, no ``--arch`` needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli import main
from edgeproof.compress.api import compress, write_artefacts
from edgeproof.compress.earlyexit import EarlyExitConfig
from edgeproof.compress.quantize import QuantConfig
from edgeproof.compress.recipes import LowRank, MixedPrecision, Prune, Quantize, RemoveChannels
from edgeproof.compress.steps import Chain
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel

INT8 = QuantConfig("int8")
WRITERS = {
    "int8": Chain(Quantize(QuantConfig("int8", "percentile"))),
    "int4": Chain(Quantize(QuantConfig("w4", group_size=32))),
    "mixed": Chain(MixedPrecision(size_fraction=0.5)),
    "pruned-int8": Chain(Prune(0.5, "magnitude"), Quantize(INT8)),
    "lowrank": Chain(LowRank()),
    "channels": Chain(RemoveChannels(0.25)),
}
# the architecture is recorded in model.safetensors exactly when the weights still fit it
ARCH_FITS = {"lowrank": False, "channels": False}


def _accuracy(report: Path) -> float:
    doc = json.loads((report / "report.json").read_text())
    perf = next(c for c in doc["checks"] if c["check"] == "performance")
    assert perf["status"] == "ok", perf
    return float(next(m["value"] for m in perf["metrics"] if m["name"] == "accuracy"))


def _audit(model: Path, data: Path, out: Path) -> float:
    code = main(["audit", str(model), "--data", str(data), "--checks", "performance",
                 "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, model
    return _accuracy(out)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory, digits_test: Dataset) -> Path:
    path = tmp_path_factory.mktemp("roundtrip") / "eval.npz"
    half = digits_test.subset(np.arange(len(digits_test) // 2, len(digits_test)))
    np.savez(path, x=half.x, y=half.y)
    return path


def _compress(model: LoadedModel, data: Dataset, chain: Chain, out: Path) -> dict:
    """Compress with one recipe and write that candidate (:meth:`CompressionResult.choose`)."""
    assert model.module is not None and model.spec is not None
    calib = data.subset(np.arange(len(data) // 2))
    held = data.subset(np.arange(len(data) // 2, len(data)))
    result = compress(
        model.module,
        model.spec,
        calib,
        evaluation=held,
        recipes=[chain],
        checks=(),
        arch=model.arch,
    )
    result = result.choose(result.ledger.candidates[0].name)
    write_artefacts(result, out, source=str(model.path), data=calib)
    meta: dict = json.loads((out / "compress.json").read_text())
    return meta


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_output_audits_with_the_accuracy_compress_reported(
    writer: str,
    digits_model: LoadedModel,
    digits_test: Dataset,
    evaluation: Path,
    tmp_path: Path,
) -> None:
    meta = _compress(digits_model, digits_test, WRITERS[writer], tmp_path / "c")
    picked = meta["candidate"]
    assert picked["name"] != "fp32", meta["selection"]
    assert meta["arch"] == "zoo:lenet5"
    acc = _audit(tmp_path / "c" / "model.onnx", evaluation, tmp_path / "a")
    assert acc == pytest.approx(picked["accuracy"], abs=1e-9)  # the same graph, the same records
    header = _safetensors_header(tmp_path / "c" / "model.safetensors")
    assert header["source_arch"] == "zoo:lenet5"
    if writer in ARCH_FITS:
        assert (header["arch"] == "zoo:lenet5") is ARCH_FITS[writer]
    if header["arch"] is not None:  # loads as the PyTorch model, without --arch
        acc_st = _audit(tmp_path / "c" / "model.safetensors", evaluation, tmp_path / "s")
        assert acc_st == pytest.approx(picked["accuracy"], abs=0.01)


def test_the_early_exit_cascade_graph_audits_at_its_final_exit(
    digits_model: LoadedModel, digits_test: Dataset, evaluation: Path, tmp_path: Path
) -> None:
    """model.onnx of a cascade is the all-exits graph; audited, its first output is the final
    exit's logits (the full network), which agree with the uncompressed model."""
    from edgeproof.compress.recipes import EarlyExit

    chain = Chain(EarlyExit(EarlyExitConfig(max_drop=0.02, epochs=2)))
    meta = _compress(digits_model, digits_test, chain, tmp_path / "c")
    picked = meta["candidate"]
    assert picked["artefact_kind"] == "cascade", meta["selection"]
    acc = _audit(tmp_path / "c" / "model.onnx", evaluation, tmp_path / "a")
    base = meta["ledger"]["baseline"]["accuracy"]
    assert acc == pytest.approx(base, abs=0.02)


def _safetensors_header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    out: dict = json.loads(meta["edgeproof"])
    return out

"""Byte-mutation fuzzing of every loader: a one-line ``UserError`` naming the file, or a result.

Each reader gets a small valid file and hypothesis mutates it — flipped, overwritten, inserted,
deleted or truncated bytes, biased towards the header and the tail (a zip's central directory),
and for zip formats also mutations *inside* one member, re-zipped with valid CRCs so the parser
behind the zip layer sees them. The contract checked: the reader returns its documented type,
or raises a :class:`~edgeproof.errors.UserError` whose single line names the file; never another
exception, never a hang (a per-example alarm). Examples are bounded so the module runs in well
under a minute. See docs/security.md ("Every reader").
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.errors import UserError
from edgeproof.integrity.proof import InclusionProof, prove
from edgeproof.integrity.seal import Seal, VerifyResult, seal_paths, verify_seal
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import load_model
from edgeproof.models.train import save_model
from edgeproof.policy import Policy, load_policy
from edgeproof.report.report import Report
from edgeproof.spec import InputSpec

_PER_EXAMPLE_S = 30
_CAMPAIGN = int(os.environ.get("EDGEPROOF_FUZZ_EXAMPLES", "0"))
_FUZZ = settings(
    max_examples=_CAMPAIGN or 12,
    deadline=None,
    derandomize=not _CAMPAIGN,  # the suite is deterministic; a campaign explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
"""Bounded for the suite (12 examples per reader, fixed seed); ``EDGEPROOF_FUZZ_EXAMPLES=500``
runs a longer, random campaign."""


class _Hang(BaseException):
    """Raised by the alarm: a BaseException so no ``except Exception`` in a reader swallows it."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def ring(signum: int, frame: object) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _contract(call: Callable[[], Any], expected: type | tuple[type, ...], names: list[str]) -> None:
    try:
        with _alarm(_PER_EXAMPLE_S):
            result = call()
    except _Hang:
        pytest.fail(f"no answer within {_PER_EXAMPLE_S} s (a hang) for {names}")
    except UserError as exc:
        msg = str(exc)
        assert "\n" not in msg, msg
        assert any(n in msg for n in names), f"{msg!r} does not name {names}"
        return
    assert isinstance(result, expected), type(result)


# ----------------------------------------------------------------------------- mutations


@st.composite
def _raw_mutation(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data = bytearray(b"\x00")
        n = len(data)
        region = draw(st.sampled_from(["head", "tail", "any"]))
        lo, hi = {"head": (0, min(n, 512)), "tail": (max(0, n - 512), n), "any": (0, n)}[region]
        i = draw(st.integers(lo, max(lo, hi - 1)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, ord("9"), ord("[")]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        else:
            del data[i:]
    return bytes(data)


@st.composite
def _mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """Raw byte mutations, or (for a zip) mutations of one member, re-zipped validly."""
    if seed[:4] == b"PK\x03\x04" and draw(st.booleans()):
        with zipfile.ZipFile(io.BytesIO(seed)) as zf:
            members = [(i, zf.read(i)) for i in zf.infolist()]
        k = draw(st.integers(0, len(members) - 1))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zo:
            for j, (info, data) in enumerate(members):
                zo.writestr(info.filename, draw(_raw_mutation(data)) if j == k else data)
        return out.getvalue()
    return draw(_raw_mutation(seed))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------- seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One small valid file per format, as bytes."""
    d = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    out: dict[str, bytes] = {}
    path = save_model(mlp, d / "m", arch="zoo:mlp", spec=InputSpec(shape=(4,), num_classes=3))
    out["safetensors"] = path.read_bytes()
    out["sidecar"] = path.with_suffix(".json").read_bytes()
    torch.save(mlp.state_dict(), d / "s.pt")
    out["pt"] = (d / "s.pt").read_bytes()
    torch.jit.script(mlp).save(str(d / "t.pt"))
    out["torchscript"] = (d / "t.pt").read_bytes()
    program = torch.export.export(
        mlp, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("b", max=64)},)
    )
    torch.export.save(program, str(d / "e.pt2"))
    out["pt2"] = (d / "e.pt2").read_bytes()
    torch.onnx.export(mlp, (torch.zeros(1, 4),), str(d / "o.onnx"), dynamo=False)
    out["onnx"] = (d / "o.onnx").read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.random((6, 4), dtype=np.float32), y=np.arange(6) % 3,
             classes=np.array(["a", "b", "c"]), domain=np.array([0.0, 1.0]))  # fmt: skip
    out["npz"] = buf.getvalue()
    out["csv"] = b"f0,f1,label\n0.1,0.2,cat\n0.3,0.4,dog\n0.5,0.6,cat\n"
    idx = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4, 3, 3) + bytes(range(36))
    out["idx"] = idx
    out["idx.gz"] = gzip.compress(idx)
    out["cifar"] = bytes(3073 * 2)
    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (4, 4), 128).save(png, format="PNG")
    out["png"] = png.getvalue()
    out["policy"] = (
        b'[thresholds]\n"performance.accuracy" = ">= 0.9"\n[options]\nuse_confidence_bound = true\n'
    )
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("safetensors", "m.safetensors"),
        ("pt", "m.pt"),
        ("torchscript", "m.pt"),
        ("pt2", "m.pt2"),
        ("onnx", "m.onnx"),
    ],
)
def test_fuzzed_model_files_load_or_fail_with_the_file_named(
    seeds: dict[str, bytes], work: Path, fmt: str, name: str
) -> None:
    folder = work / f"model-{fmt}"
    folder.mkdir(exist_ok=True)

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(folder / name, data.draw(_mutated(seeds[fmt])))
        _contract(lambda: load_model(path), LoadedModel, [name])

    run()


def test_fuzzed_sidecar_loads_or_fails_with_the_sidecar_named(
    seeds: dict[str, bytes], work: Path
) -> None:
    folder = work / "sidecar"
    folder.mkdir(exist_ok=True)
    (folder / "m.safetensors").write_bytes(seeds["safetensors"])

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        _write(folder / "m.json", data.draw(_mutated(seeds["sidecar"])))
        _contract(lambda: load_model(folder / "m.safetensors"), LoadedModel, ["m.json", "m."])

    run()


# --------------------------------------------------------------------------------- data


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("npz", "d.npz"), ("csv", "d.csv"), ("cifar", "data_batch_1.bin")],
)
def test_fuzzed_data_files_load_or_fail_with_the_file_named(
    seeds: dict[str, bytes], work: Path, fmt: str, name: str
) -> None:
    folder = work / f"data-{fmt}"
    folder.mkdir(exist_ok=True)

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(folder / name, data.draw(_mutated(seeds[fmt])))
        _contract(lambda: load_data(path), Dataset, [name])

    run()


@pytest.mark.parametrize("gz", [False, True])
def test_fuzzed_idx_files_load_or_fail_with_the_file_named(
    seeds: dict[str, bytes], work: Path, gz: bool
) -> None:
    folder = work / f"idx-{gz}"
    folder.mkdir(exist_ok=True)
    labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes([0, 1, 2, 1])
    (folder / "t-labels-idx1-ubyte").write_bytes(labels)
    name = "t-images-idx3-ubyte" + (".gz" if gz else "")

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(folder / name, data.draw(_mutated(seeds["idx.gz" if gz else "idx"])))
        _contract(lambda: load_data(path), Dataset, [name])

    run()


def test_fuzzed_image_in_a_folder_loads_or_fails_with_the_image_named(
    seeds: dict[str, bytes], work: Path
) -> None:
    root = work / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / "0.png").write_bytes(seeds["png"])

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        _write(root / "b" / "0.png", data.draw(_mutated(seeds["png"])))
        _contract(lambda: load_data(root), Dataset, ["0.png", str(root)])

    run()


@_FUZZ
@given(st.text(max_size=40))
def test_fuzzed_builtin_names_load_or_fail_with_the_name(name: str) -> None:
    source = "builtin:" + name
    _contract(lambda: load_data(source), Dataset, ["builtin:"])


# ---------------------------------------------------------------------------- documents


def test_fuzzed_policy_loads_or_fails_with_the_file_named(
    seeds: dict[str, bytes], work: Path
) -> None:
    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(work / "p.toml", data.draw(_mutated(seeds["policy"])))
        _contract(lambda: load_policy(path), Policy, ["p.toml"])

    run()


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, seeds: dict[str, bytes]) -> Path:
    d = tmp_path_factory.mktemp("sealed")
    (d / "d.npz").write_bytes(seeds["npz"])
    (d / "m.safetensors").write_bytes(seeds["safetensors"])
    (d / "w.bin").write_bytes(bytes(range(256)) * 20)
    seal = seal_paths(
        [d / "d.npz", d / "m.safetensors", d / "w.bin"], base_dir=d, chunk_size=4096, threads=1
    )
    seal.write(d / "seal.json")
    prove(seal, "d.npz#2").write(d / "proof.json")
    return d


def test_fuzzed_seal_reads_or_fails_with_the_seal_named(sealed: Path, work: Path) -> None:
    seed = (sealed / "seal.json").read_bytes()

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(sealed / "fuzzed.seal.json", data.draw(_mutated(seed)))

        def read_and_verify() -> object:
            result = verify_seal(Seal.read(path), base_dir=sealed, threads=1)
            assert isinstance(result, VerifyResult)
            return Seal.read(path)

        _contract(read_and_verify, Seal, ["fuzzed.seal.json"])

    run()


@pytest.mark.parametrize("name", ["d.npz", "m.safetensors", "w.bin"])
def test_fuzzed_sealed_files_verify_as_changed_never_crash(
    sealed: Path, tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    d = tmp_path_factory.mktemp(f"verify-{name}")
    for f in sealed.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    seal = Seal.read(d / "seal.json")
    seed = (sealed / name).read_bytes()

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        mutated = data.draw(_mutated(seed))
        _write(d / name, mutated)

        def check() -> VerifyResult:
            result = verify_seal(seal, base_dir=d, threads=1)
            item = next(i for i in result.items if i.path == name)
            if mutated != seed:
                assert not item.ok or _same_content(name, mutated, seed), item
            return result

        _contract(check, VerifyResult, [name, "seal.json"])

    run()


def _same_content(name: str, mutated: bytes, seed: bytes) -> bool:
    """A mutation that changes nothing a seal commits (only possible for zip-level metadata)."""
    return name.endswith(".npz") and mutated[:4] == b"PK\x03\x04"


def test_fuzzed_proof_reads_or_fails_with_the_file_named(sealed: Path, work: Path) -> None:
    seed = (sealed / "proof.json").read_bytes()

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(work / "fuzzed.proof.json", data.draw(_mutated(seed)))
        _contract(lambda: InclusionProof.read(path), InclusionProof, ["fuzzed.proof.json"])

    run()


def test_fuzzed_baseline_report_reads_or_fails_with_the_file_named(work: Path) -> None:
    from edgeproof.report.report import environment

    report = Report(
        model={"path": "m"}, data=None, threat={}, checks=[], seed=0, created="2026-01-01",
        environment=environment(),
    )  # fmt: skip
    seed = json.dumps(report.to_json()).encode()

    @_FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        path = _write(work / "report.json", data.draw(_mutated(seed)))
        _contract(lambda: Report.read_json(path), Report, ["report.json"])

    run()

"""Hostile model files: nothing from a file runs without ``trust_code``; every bad file is one line.

Each hostile file is built here and carries a payload that, if it ran, would create a marker
file. Where torch's own loader is the reference, the test also shows that trusting the file does
run the payload — so the refusal is what protects the user, not an inert payload.
See docs/security.md ("Models") for the promises these tests are named after.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof import limits
from edgeproof.errors import ModelFileError, OptionError, UnsafeCodeError, UnsafePickleError
from edgeproof.models.formats.export import check_sym_expr
from edgeproof.models.formats.ops import ALLOWED_ATEN, ALLOWED_PRIM, PRIM_NODE_KINDS, is_allowed
from edgeproof.models.formats.pickles import pickle_globals
from edgeproof.models.formats.torchscript import inspect_archive
from edgeproof.models.loading import load_model
from edgeproof.models.train import save_model
from edgeproof.models.zoo import arch_from_string, build_model
from edgeproof.spec import InputSpec


class _Marker:
    """Unpickling this creates the folder ``path`` (the payload of every hostile pickle)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def _rewrite_zip(
    src: Path, dst: Path, change: Callable[[str, bytes], bytes | None], add: dict[str, bytes]
) -> Path:
    """Copy a zip, passing each member through ``change`` (None drops it), then add members."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = change(info.filename, zi.read(info))
            if data is not None:
                zo.writestr(info.filename, data)
        for name, data in add.items():
            zo.writestr(name, data)
    return dst


def _pickled(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory: pytest.TempPathFactory, tiny: nn.Module) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    batch = torch.export.Dim("b", min=1, max=64)
    program = torch.export.export(tiny, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def _member(zf_path: Path, suffix: str) -> str:
    with zipfile.ZipFile(zf_path) as zf:
        return next(n for n in zf.namelist() if n.endswith(suffix))


def _program_json(pt2: Path) -> dict:
    with zipfile.ZipFile(pt2) as zf:
        return json.loads(zf.read(_member(pt2, "models/model.json")))


def _with_program(pt2: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    obj = _program_json(pt2)
    edit(obj)
    name = _member(pt2, "models/model.json")
    return _rewrite_zip(pt2, dst, lambda n, d: json.dumps(obj).encode() if n == name else d, {})


# ------------------------------------------------------------------------------------- .pt2


def test_pt2_loads_safely_and_matches_the_module(tiny_pt2: Path, tiny: nn.Module) -> None:
    x = torch.rand(5, 4)
    loaded = load_model(tiny_pt2)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.predict_logits(x), tiny(x).numpy(), rtol=1e-6)


def test_pt2_sample_inputs_that_need_unpickling_are_refused_not_unpickled(
    tiny_pt2: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    sample = _member(tiny_pt2, "data/sample_inputs/model.pt")
    evil = _rewrite_zip(
        tiny_pt2,
        tmp_path / "evil.pt2",
        lambda n, d: _pickled((_Marker(marker),)) if n == sample else d,
        {},
    )
    with pytest.raises(UnsafePickleError, match=r"evil\.pt2: data/sample_inputs/model\.pt holds"):
        load_model(evil)
    assert not marker.exists()
    # torch.export.load itself falls back to a full unpickle: the payload is real (whether torch
    # then fails on the odd sample inputs or not depends on its version)
    with contextlib.suppress(Exception):  # whatever torch raises after the payload ran
        torch.export.load(str(evil))
    assert marker.exists()


def test_pt2_renamed_to_pt_is_still_read_without_unpickling(tiny_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    sample = _member(tiny_pt2, "data/sample_inputs/model.pt")
    evil = _rewrite_zip(
        tiny_pt2,
        tmp_path / "innocent.pt",
        lambda n, d: _pickled((_Marker(marker),)) if n == sample else d,
        {},
    )
    with pytest.raises(UnsafePickleError, match=r"innocent\.pt: "):
        load_model(evil)
    assert not marker.exists()


def test_pt2_weight_stored_as_a_pickle_is_read_weights_only(tiny_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config_name = _member(tiny_pt2, "model_weights_config.json")
    with zipfile.ZipFile(tiny_pt2) as zf:
        config = json.loads(zf.read(config_name))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    weight = config_name.rsplit("/", 1)[0] + "/" + config["config"][first]["path_name"]

    def change(name: str, data: bytes) -> bytes:
        if name == config_name:
            return json.dumps(config).encode()
        return _pickled(_Marker(marker)) if name == weight else data

    evil = _rewrite_zip(tiny_pt2, tmp_path / "evil.pt2", change, {})
    with pytest.raises(UnsafePickleError, match=r"evil\.pt2: data/weights/weight_\d holds pickled"):
        load_model(evil)
    assert not marker.exists()
    # with trust, torch.load(weights_only=False) runs it
    with pytest.raises(ModelFileError):
        load_model(evil, trust_code=True)
    assert marker.exists()


def test_pt2_graph_calling_a_file_operator_is_refused_with_the_operator_named(
    tiny_pt2: Path, tmp_path: Path
) -> None:
    def edit(obj: dict) -> None:
        obj["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.aten.from_file.default"

    evil = _with_program(tiny_pt2, tmp_path / "evil.pt2", edit)
    with pytest.raises(UnsafeCodeError, match=r"evil\.pt2: .*a call to aten::from_file"):
        load_model(evil)


def test_pt2_graph_calling_torch_save_by_name_is_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    def edit(obj: dict) -> None:
        obj["graph_module"]["graph"]["nodes"][0]["target"] = "torch.save"

    evil = _with_program(tiny_pt2, tmp_path / "evil.pt2", edit)
    with pytest.raises(UnsafeCodeError, match=r"a call to torch\.save"):
        load_model(evil)


def test_pt2_symbolic_expression_that_is_python_code_is_refused_not_evaluated(
    tiny_pt2: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"

    def edit(obj: dict) -> None:
        meta = next(iter(obj["graph_module"]["graph"]["tensor_values"].values()))
        meta["sizes"][0] = {
            "as_expr": {
                "expr_str": f"__import__('os').mkdir({str(marker)!r}) or Symbol('s0')",
                "hint": {"as_int": 3},
            }
        }

    evil = _with_program(tiny_pt2, tmp_path / "evil.pt2", edit)
    with pytest.raises(UnsafeCodeError, match=r"symbolic expression"):
        load_model(evil)
    assert not marker.exists()
    with pytest.raises(ModelFileError):
        load_model(evil, trust_code=True)  # torch.export.load: sympify evaluates the string
    assert marker.exists()


def test_pt2_guard_code_is_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    evil = _with_program(
        tiny_pt2, tmp_path / "evil.pt2", lambda o: o.update(guards_code=["__import__('os')"])
    )
    with pytest.raises(UnsafeCodeError, match=r"guard code"):
        load_model(evil)


def test_pt2_with_compiled_aotinductor_code_is_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    prefix = _member(tiny_pt2, "archive_format").removesuffix("archive_format")
    evil = _rewrite_zip(
        tiny_pt2,
        tmp_path / "evil.pt2",
        lambda n, d: d,
        {f"{prefix}data/aotinductor/model/model.so": b"\x7fELF"},
    )
    with pytest.raises(UnsafeCodeError, match=r"compiled code \(data/aotinductor/"):
        load_model(evil)


def test_pt2_pickled_custom_object_constant_is_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config_name = _member(tiny_pt2, "model_constants_config.json")
    config = {"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False,
                                 "use_pickle": True, "tensor_meta": None}}}  # fmt: skip
    prefix = config_name.split("data/constants/")[0]
    evil = _rewrite_zip(
        tiny_pt2,
        tmp_path / "evil.pt2",
        lambda n, d: json.dumps(config).encode() if n == config_name else d,
        {f"{prefix}data/constants/opaque_obj_0": _pickled(_Marker(marker))},
    )
    with pytest.raises(UnsafePickleError, match=r"constant 'obj' .* pickled Python"):
        load_model(evil)
    assert not marker.exists()


def test_pt2_tensor_declaring_more_elements_than_its_bytes_is_refused(
    tiny_pt2: Path, tmp_path: Path
) -> None:
    config_name = _member(tiny_pt2, "model_weights_config.json")
    with zipfile.ZipFile(tiny_pt2) as zf:
        config = json.loads(zf.read(config_name))
    first = next(iter(config["config"].values()))
    first["tensor_meta"]["sizes"] = [{"as_int": 2**20}, {"as_int": 2**20}]
    evil = _rewrite_zip(
        tiny_pt2,
        tmp_path / "evil.pt2",
        lambda n, d: json.dumps(config).encode() if n == config_name else d,
        {},
    )
    with pytest.raises(ModelFileError, match=r"evil\.pt2: .*(needs|declares)"):
        load_model(evil)


@pytest.mark.parametrize(
    "expr",
    [
        "Symbol('s0', positive=True, integer=True)",
        "Mul(Integer(2), Symbol('s1', positive=True, integer=True))",
        "FloorDiv(Symbol('s0', integer=True), Integer(4)) + 1",
        "Pow(Symbol('s0', positive=True), Integer(-1))",
        "Float('1.5', precision=53)",
    ],
)
def test_symbolic_shape_expressions_torch_writes_are_accepted(expr: str) -> None:
    assert check_sym_expr(expr) == ""


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",
        "Symbol('s0').__class__",
        "eval('1')",
        "Integer(2) ** Integer(10 ** 10)",
        "PowByNatural(Integer(2), Integer(4294967296))",
        "Symbol('a; import os')",
        "lambda: 0",
        "[x for x in ()]",
    ],
)
def test_symbolic_shape_expressions_that_are_code_or_bombs_are_refused(expr: str) -> None:
    assert check_sym_expr(expr) != ""


# ----------------------------------------------------------------------------- TorchScript


class _ReadsAFileInForward(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, shared=True, size=4)
        return self.lin(x) + t.sum()


class _WritesAFileOnLoad(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 4))
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]  # type: ignore[assignment]
        self.path = state[1]
        t = torch.from_file(self.path, shared=True, size=8)
        self.training = state[2] and t.numel() < 0


def test_torchscript_forward_calling_from_file_is_refused_naming_the_op(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    path = tmp_path / "fwd.pt"
    torch.jit.script(_ReadsAFileInForward(str(marker))).save(str(path))
    with pytest.raises(
        UnsafeCodeError,
        match=r"fwd\.pt: the TorchScript archive uses operator aten::from_file in "
        r"code/__torch__",
    ):
        load_model(path)
    assert not marker.exists()


def test_torchscript_setstate_calling_from_file_is_refused_before_loading(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    path = tmp_path / "state.pt"
    torch.jit.script(_WritesAFileOnLoad(str(marker))).save(str(path))
    assert not marker.exists()  # saving runs __getstate__; __setstate__ runs on load
    with pytest.raises(UnsafeCodeError, match=r"aten::from_file"):
        load_model(path)
    assert not marker.exists()
    # torch.jit.load runs __setstate__ while loading: the file is written
    torch.jit.load(str(path))
    assert marker.exists()


def test_torchscript_with_a_trust_flag_loads_code_outside_the_allowlist(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    path = tmp_path / "state.pt"
    torch.jit.script(_WritesAFileOnLoad(str(marker))).save(str(path))
    loaded = load_model(path, trust_code=True)
    assert loaded.format == "torchscript" and marker.exists()


def test_torchscript_print_and_imports_are_refused(tmp_path: Path) -> None:
    class Prints(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            print("hello")
            return x

    path = tmp_path / "p.pt"
    torch.jit.script(Prints()).save(str(path))
    found = inspect_archive(path)
    assert not found.safe and any("prim::Print" in what for what, _ in found.refused)


def _edit_code(src: Path, dst: Path, old: str, new: str) -> Path:
    def change(name: str, data: bytes) -> bytes:
        if name.endswith(".py") and "/code/" in name:
            return data.decode().replace(old, new).encode()
        return data

    return _rewrite_zip(src, dst, change, {})


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("torch.relu(", "torch.save(", "aten::save"),
        ("torch.relu(", "ops.prim.rpc_async(", "prim::rpc_async"),
        ("torch.relu(", 'getattr(torch, "from_file")(', "aten::from_file"),
        ("torch.relu(", "torch.ops.aten.from_file(", "aten::from_file"),
        ("torch.relu(", "__torch__.torch.classes.io.Writer(", "torchbind class"),
    ],
)
def test_hand_written_torchscript_source_is_checked_as_written(
    tmp_path: Path, old: str, new: str, named: str
) -> None:
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x)

    clean = tmp_path / "clean.pt"
    torch.jit.script(Net()).save(str(clean))
    evil = _edit_code(clean, tmp_path / "evil.pt", old, new)
    with pytest.raises(UnsafeCodeError, match=named):
        load_model(evil)


def test_torchscript_pickle_naming_a_foreign_global_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))
    data_pkl = _member(path, "data.pkl")
    payload = pickle.dumps(_Marker(tmp_path / "x"), protocol=2)
    evil = _rewrite_zip(
        path, tmp_path / "evil.pt", lambda n, d: payload if n == data_pkl else d, {}
    )
    with pytest.raises(UnsafeCodeError, match=r"pickled global posix\.mkdir"):
        load_model(evil)
    assert not (tmp_path / "x").exists()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_zoo_models_scripted_and_traced_pass_the_static_check(tmp_path: Path) -> None:
    for name, shape in (("lenet5", (1, 8, 8)), ("cnn-lstm", (1, 64))):
        for how in ("script", "trace"):
            model = build_model(name, shape, 3).eval()
            path = tmp_path / f"{name}-{how}.pt"
            x = torch.zeros(1, *shape)
            m = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
            m.save(str(path))
            found = inspect_archive(path)
            assert found.safe, (name, how, found.refused)
            assert load_model(path).module is not None


def test_recording_unpickler_lists_globals_without_importing_them() -> None:
    data = pickle.dumps(_Marker(Path("/nonexistent/never")))
    assert "posix.mkdir" in pickle_globals(data) or "nt.mkdir" in pickle_globals(data)


def test_the_allowlist_names_only_registered_pure_operators() -> None:
    for name in ALLOWED_ATEN:
        assert torch._C._jit_get_schemas_for_operator(f"aten::{name}"), name
    for name in ALLOWED_PRIM - PRIM_NODE_KINDS:
        assert torch._C._jit_get_schemas_for_operator(f"prim::{name}"), name
    for bad in ("aten::from_file", "aten::save", "prim::Print", "prim::rpc_async", "aten::set_"):
        assert not is_allowed(bad)
    assert is_allowed("torch.ops.aten.add_.Tensor") and is_allowed("aten::conv2d")


# ------------------------------------------------------------------------ architectures in files


@pytest.fixture()
def evil_arch_module(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An importable module whose ``build`` records that it was called."""
    calls: list[str] = []
    mod = types.ModuleType("edgeproof_evil_arch")

    def build(**kwargs: object) -> nn.Module:
        calls.append("called")
        return nn.Linear(4, 3)

    mod.build = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edgeproof_evil_arch", mod)
    return calls


def _weights(tmp_path: Path, tiny: nn.Module) -> Path:
    return save_model(tiny, tmp_path / "m", arch="zoo:mlp", spec=None)


@pytest.mark.parametrize("arch", ["edgeproof_evil_arch:build", "os:getpid", "pdb:set_trace"])
def test_sidecar_architecture_outside_the_zoo_is_never_imported(
    tmp_path: Path, tiny: nn.Module, evil_arch_module: list[str], arch: str
) -> None:
    path = _weights(tmp_path, tiny)
    side = json.loads(path.with_suffix(".json").read_text())
    side["arch"] = arch
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    msg = str(err.value)
    assert msg.startswith(str(path.with_suffix(".json"))) and "may only name the zoo" in msg
    assert "\n" not in msg and not msg.startswith("--arch")
    assert evil_arch_module == []


def test_header_metadata_architecture_outside_the_zoo_is_never_imported(
    tmp_path: Path, tiny: nn.Module, evil_arch_module: list[str]
) -> None:
    from safetensors.torch import save_file

    meta = {"format": "edgeproof-model", "version": 1, "arch": "edgeproof_evil_arch:build"}
    path = tmp_path / "m.safetensors"
    save_file(dict(tiny.state_dict()), str(path), metadata={"edgeproof": json.dumps(meta)})
    with pytest.raises(ModelFileError, match=r"m\.safetensors: names the architecture "):
        load_model(path)
    assert evil_arch_module == []


def test_user_named_architecture_is_the_way_to_run_user_code(
    tmp_path: Path, tiny: nn.Module, evil_arch_module: list[str]
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    layer = tiny[0]  # type: ignore[index]
    save_file({"weight": layer.weight.detach(), "bias": layer.bias.detach()}, str(path))
    loaded = load_model(path, arch="edgeproof_evil_arch:build")
    assert loaded.module is not None and evil_arch_module == ["called"]


@pytest.mark.parametrize("arch", ["os:system", "builtins:exec", "os:getpid"])
def test_user_arch_that_cannot_build_a_model_is_an_option_error(arch: str) -> None:
    with pytest.raises(OptionError, match=r"arch"):
        arch_from_string(arch, (4,), 3)


def test_sidecar_num_classes_of_the_wrong_type_names_the_sidecar(
    tmp_path: Path, tiny: nn.Module
) -> None:
    path = save_model(tiny, tmp_path / "m", arch="zoo:mlp", spec=InputSpec(shape=(4,)))
    side = json.loads(path.with_suffix(".json").read_text())
    side["spec"]["num_classes"] = "ten"
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match=r"m\.json: sidecar 'spec' is malformed.*num_classes"):
        load_model(path)


def test_sidecar_spec_declaring_a_huge_shape_names_the_limit(
    tmp_path: Path, tiny: nn.Module
) -> None:
    path = save_model(tiny, tmp_path / "m", arch="zoo:mlp", spec=InputSpec(shape=(4,)))
    side = json.loads(path.with_suffix(".json").read_text())
    side["spec"]["shape"] = [1, 1000000, 1000000]
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match=r"m\.json: .*max_sample_elements"):
        load_model(path)


def test_deeply_nested_sidecar_is_refused_with_the_file_named(
    tmp_path: Path, tiny: nn.Module
) -> None:
    path = _weights(tmp_path, tiny)
    path.with_suffix(".json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match=r"m\.json: the sidecar metadata is nested"):
        load_model(path)


def test_deeply_nested_header_metadata_is_refused_with_the_file_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    deep = "[" * 50_000 + "]" * 50_000
    save_file({"w": torch.zeros(2)}, str(path), metadata={"edgeproof": deep})
    with pytest.raises(ModelFileError, match=r"m\.safetensors: .*nested"):
        load_model(path)


def test_zoo_architecture_from_a_sidecar_with_a_huge_declared_shape_is_not_allocated(
    tmp_path: Path,
) -> None:
    model = build_model("lenet5", (1, 8, 8), 3)
    path = save_model(model, tmp_path / "m", arch="zoo:lenet5", spec=InputSpec(shape=(1, 8, 8)))
    side = json.loads(path.with_suffix(".json").read_text())
    side["spec"]["shape"] = [1, 4096, 4096]  # LeNet-5's first linear layer would be 32 GB
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(Exception) as err:
        load_model(path)
    assert ("wrong shape" in str(err.value) and isinstance(err.value, (ModelFileError,))) or (
        "weights do not fit" in str(err.value)
    )


# -------------------------------------------------------------------------------------- ONNX


def _onnx_with_initializer(tmp_path: Path, init: object) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[init],  # type: ignore[list-item]
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_initializer_shorter_than_its_dims_names_the_initializer(tmp_path: Path) -> None:
    from onnx import TensorProto

    init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], raw_data=b"\x00" * 8)
    with pytest.raises(ModelFileError, match=r"m\.onnx: initializer 'w' declares dims \[4, 4\]"):
        load_model(_onnx_with_initializer(tmp_path, init))


def test_onnx_initializer_with_huge_dims_names_the_limit(tmp_path: Path) -> None:
    from onnx import TensorProto

    init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**31, 2**31], raw_data=b"\0")
    with pytest.raises(ModelFileError, match=r"m\.onnx: initializer 'w' needs .*max_array_bytes"):
        load_model(_onnx_with_initializer(tmp_path, init))


def test_onnx_string_initializer_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    init = helper.make_tensor("w", TensorProto.STRING, [2], [b"a", b"b"])  # type: ignore[list-item]
    with pytest.raises(ModelFileError, match=r"m\.onnx: initializer 'w' has dtype STRING"):
        load_model(_onnx_with_initializer(tmp_path, init))


# --------------------------------------------------------------------------- torch.save files


def test_state_dict_pt_declaring_a_huge_storage_is_refused(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "m.pt"
    torch.save(tiny.state_dict(), path)
    with (
        limits.override(max_model_bytes=64),
        pytest.raises(ModelFileError, match=r"m\.pt: the model file needs .*max_model_bytes"),
    ):
        load_model(path)


# ---------------------------------------------------------------- kept: what was handled well


def _safetensors(header: object, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _t(dtype: str, shape: list[int], offsets: list[int]) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


_NESTED = b'{"w":' + b"[" * 10000 + b"]" * 10000 + b"}"


@pytest.mark.parametrize(
    ("name", "blob"),
    [
        ("length-huge", struct.pack("<Q", 2**63) + b"{}"),
        ("length-past-end", struct.pack("<Q", 1000) + b"{}"),
        ("not-json", _safetensors(None, raw_header=b"{not json")),
        ("not-utf8", _safetensors(None, raw_header=b'{"\xff": 1}')),
        ("offsets-past-end", _safetensors({"w": _t("F32", [4], [0, 16])}, b"\0" * 4)),
        (
            "offsets-overlap",
            _safetensors({"a": _t("F32", [1], [0, 4]), "b": _t("F32", [1], [0, 4])}, b"\0" * 4),
        ),
        ("shape-vs-bytes", _safetensors({"w": _t("F32", [2**40], [0, 4])}, b"\0" * 4)),
        ("unknown-dtype", _safetensors({"w": _t("X99", [1], [0, 4])}, b"\0" * 4)),
        ("nested-header", _safetensors(None, raw_header=_NESTED)),
    ],
)
def test_safetensors_header_attacks_are_one_line_naming_the_file(
    tmp_path: Path, name: str, blob: bytes
) -> None:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(blob)
    with pytest.raises(ModelFileError, match=rf"{name}\.safetensors: ") as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_fake_torchscript_zip_is_a_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.pt"
    _rewrite_zip_from({"fake/constants.pkl": b"\x80\x02garbage", "fake/code/x.py": b"def f("}, path)
    with pytest.raises(ModelFileError, match=r"fake\.pt: "):
        load_model(path)


def _rewrite_zip_from(members: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _onnx_external(tmp_path: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    init.data_location = TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[init],
    )
    path = tmp_path / "ext.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.bin"
    secret.write_bytes(b"\x00" * 8)
    with pytest.raises(ModelFileError, match=r"ext\.onnx: "):
        load_model(_onnx_external(tmp_path, f"../{secret.name}"))


def test_onnx_external_data_through_a_symlink_is_refused(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.bin"
    secret.write_bytes(b"\x00" * 8)
    (tmp_path / "w.bin").symlink_to(secret)
    with pytest.raises(ModelFileError, match=r"ext\.onnx: "):
        load_model(_onnx_external(tmp_path, "w.bin"))


def test_onnx_custom_operator_is_refused_by_onnx_runtime(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Backdoor", ["x"], ["y"], domain="evil.ops")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)]
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=r"custom\.onnx: ONNX Runtime cannot load"):
        load_model(path)


def test_trust_pickle_is_an_alias_of_trust_code(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny, path)
    with pytest.raises(UnsafePickleError, match=r"full\.pt: .*trust_code=True"):
        load_model(path)
    for loaded in (load_model(path, trust_code=True), load_model(path, trust_pickle=True)):
        assert loaded.format == "pickle" and loaded.module is not None

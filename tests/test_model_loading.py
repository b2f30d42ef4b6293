"""load_model / from_module: every format round-trips, every bad input fails with one clear line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeproof.errors import ArchitectureMismatchError, ModelFileError, UnsafePickleError
from edgeproof.models import LoadedModel, load_model
from edgeproof.models.loading import SUPPORTED_SUFFIXES, from_module
from edgeproof.models.train import save_model
from edgeproof.models.zoo import build_model
from edgeproof.spec import InputSpec

SHAPE = (1, 8, 8)
SPEC = InputSpec(
    shape=SHAPE, domain=(0.0, 1.0), num_classes=10, class_names=tuple(str(i) for i in range(10))
)


def make_model(arch: str = "lenet5") -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, SHAPE, 10, normalization=((0.3,), (0.4,)))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_model()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, model: nn.Module, inputs: torch.Tensor
) -> dict[str, Path]:
    """The same LeNet-5 saved in every format."""
    d = tmp_path_factory.mktemp("formats")
    out = {"safetensors": save_model(model, d / "lenet", arch="zoo:lenet5", spec=SPEC)}
    torch.jit.script(model).save(str(d / "lenet_script.pt"))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (inputs,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(d / "lenet.pt2"))
    torch.onnx.export(
        model,
        (inputs,),
        str(d / "lenet.onnx"),
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )
    torch.save(model.state_dict(), d / "lenet_state.pt")
    torch.save(model, d / "lenet_full.pt")
    out.update(
        torchscript=d / "lenet_script.pt",
        export=d / "lenet.pt2",
        onnx=d / "lenet.onnx",
        state=d / "lenet_state.pt",
        full=d / "lenet_full.pt",
    )
    return out


def logits(loaded: LoadedModel, x: torch.Tensor) -> np.ndarray:
    return loaded.predict_logits(x.numpy())


def reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("safetensors", "safetensors"),
        ("torchscript", "torchscript"),
        ("export", "torch-export"),
        ("onnx", "onnx"),
    ],
)
def test_each_format_round_trips_to_the_same_logits(
    files: dict[str, Path], model: nn.Module, inputs: torch.Tensor, key: str, fmt: str
) -> None:
    loaded = load_model(files[key])
    assert loaded.format == fmt
    assert loaded.can_forward
    np.testing.assert_allclose(logits(loaded, inputs), reference(model, inputs), atol=1e-5, rtol=0)
    assert loaded.warnings == []


@pytest.mark.parametrize("key", ["export", "onnx"])
def test_exported_models_accept_other_batch_sizes(
    files: dict[str, Path], model: nn.Module, key: str
) -> None:
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    loaded = load_model(files[key])
    np.testing.assert_allclose(logits(loaded, x), reference(model, x), atol=1e-5, rtol=0)


def test_safetensors_with_sidecar_restores_arch_spec_and_classes(files: dict[str, Path]) -> None:
    loaded = load_model(files["safetensors"])
    assert loaded.arch == "zoo:lenet5"
    assert loaded.spec is not None
    assert loaded.spec.shape == SHAPE
    assert loaded.spec.normalization is not None
    mean, std = loaded.spec.normalization
    assert mean == pytest.approx((0.3,)) and std == pytest.approx((0.4,))
    assert loaded.metadata["classes"] == [str(i) for i in range(10)]


def test_safetensors_header_metadata_stands_in_for_a_lost_sidecar(
    files: dict[str, Path], tmp_path: Path, model: nn.Module, inputs: torch.Tensor
) -> None:
    lone = tmp_path / "lone.safetensors"
    shutil.copy(files["safetensors"], lone)
    loaded = load_model(lone)
    assert loaded.arch == "zoo:lenet5"
    np.testing.assert_allclose(logits(loaded, inputs), reference(model, inputs), atol=1e-5, rtol=0)


def test_safetensors_without_arch_or_metadata_is_weights_only(
    tmp_path: Path, model: nn.Module
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(path)
    assert loaded.format == "weights-only"
    assert loaded.module is None and not loaded.can_forward
    assert torch.equal(loaded.weights["1.weight"], model.state_dict()["1.weight"])


@pytest.mark.parametrize("arch", ["lenet5", "mlp"])
def test_weights_without_sidecar_build_the_named_zoo_arch(
    tmp_path: Path, inputs: torch.Tensor, arch: str
) -> None:
    from safetensors.torch import save_file

    net = make_model(arch)
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    loaded = load_model(path, arch=f"zoo:{arch}")
    assert loaded.format == "safetensors" and loaded.spec is None
    np.testing.assert_allclose(logits(loaded, inputs), reference(net, inputs), atol=1e-5, rtol=0)


def test_arch_given_for_a_self_describing_format_is_ignored_with_a_warning(
    files: dict[str, Path],
) -> None:
    loaded = load_model(files["onnx"], arch="zoo:mlp")
    assert loaded.warnings == [
        "lenet.onnx: arch zoo:mlp ignored: an onnx file carries its own architecture"
    ]


def test_explicit_spec_overrides_the_sidecar(files: dict[str, Path]) -> None:
    mine = SPEC.with_(domain=(0.0, 16.0))
    spec = load_model(files["safetensors"], spec=mine).spec
    assert spec is not None and spec.domain == (0.0, 16.0)
    # the spec gave no normalisation: it is read from the model's Normalize layer
    assert spec.normalization is not None and spec.normalization[0] == pytest.approx((0.3,))


def test_onnx_weights_are_the_graph_initializers(files: dict[str, Path], model: nn.Module) -> None:
    loaded = load_model(files["onnx"])
    assert loaded.module is None and loaded.session is not None
    conv = model.state_dict()["1.weight"]
    assert any(v.shape == conv.shape and torch.allclose(v, conv) for v in loaded.weights.values())


def test_state_dict_pt_loads_without_pickle_trust_and_builds_the_arch(
    files: dict[str, Path], model: nn.Module, inputs: torch.Tensor
) -> None:
    weights_only = load_model(files["state"])
    assert weights_only.format == "weights-only"
    built = load_model(files["state"], arch="zoo:lenet5")
    assert built.format == "pickle"
    np.testing.assert_allclose(logits(built, inputs), reference(model, inputs), atol=1e-5, rtol=0)


def test_training_checkpoint_dict_is_unwrapped_to_its_state_dict(
    tmp_path: Path, model: nn.Module, inputs: torch.Tensor
) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "lr": 0.1, "state_dict": model.state_dict()}, path)
    loaded = load_model(path, arch="zoo:lenet5")
    np.testing.assert_allclose(logits(loaded, inputs), reference(model, inputs), atol=1e-5, rtol=0)


def test_torchscript_saved_in_train_mode_is_switched_to_eval(tmp_path: Path) -> None:
    path = tmp_path / "ts_train.pt"
    torch.jit.script(make_model("resnet8").train()).save(str(path))
    loaded = load_model(path)
    assert loaded.module is not None and not loaded.module.training
    assert "ts_train.pt: the model was in train mode" in loaded.warnings[0]


def test_from_module_wraps_an_in_memory_model(model: nn.Module) -> None:
    loaded = from_module(model, SPEC, arch="zoo:lenet5")
    assert loaded.format == "module" and loaded.path is None
    assert loaded.name == "zoo:lenet5"
    assert set(loaded.weights) == set(model.state_dict())


# ---------------------------------------------------------------------------------------------
# Pickles


class _MakesMarker:
    """Unpickling this calls os.mkdir(marker): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_pickle_with_code_is_not_executed_without_trust_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _MakesMarker(marker)}, path)
    with pytest.raises(
        UnsafePickleError, match=r"evil\.pt: .*pickled Python objects.*trust_code=True"
    ):
        load_model(path)
    assert not marker.exists()


def test_plain_python_pickle_is_not_executed_either(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_MakesMarker(marker)))
    with pytest.raises(UnsafePickleError, match="only if you trust the file"):
        load_model(path)
    assert not marker.exists()


def test_full_module_pickle_needs_the_flag_and_loads_with_it(
    files: dict[str, Path], model: nn.Module, inputs: torch.Tensor
) -> None:
    with pytest.raises(UnsafePickleError, match="trust_code=True"):
        load_model(files["full"])
    loaded = load_model(files["full"], trust_pickle=True)
    assert loaded.format == "pickle"
    np.testing.assert_allclose(logits(loaded, inputs), reference(model, inputs), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Train mode


def test_module_saved_in_train_mode_is_switched_to_eval_with_a_warning(tmp_path: Path) -> None:
    net = make_model("resnet8").train()
    path = tmp_path / "train_mode.pt"
    torch.save(net, path)
    loaded = load_model(path, trust_pickle=True)
    assert loaded.module is not None and not loaded.module.training
    assert len(loaded.warnings) == 1
    assert "train_mode.pt: the model was in train mode" in loaded.warnings[0]
    assert "switched to eval mode" in loaded.warnings[0]


def test_program_exported_in_train_mode_is_rewritten_to_eval(
    tmp_path: Path, inputs: torch.Tensor
) -> None:
    net = nn.Sequential(make_model("resnet8"), nn.Dropout(0.5)).train()
    program = torch.export.export(net, (inputs,))
    path = tmp_path / "train_mode.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(path)
    assert "exported in train mode" in loaded.warnings[0]
    np.testing.assert_allclose(
        logits(loaded, inputs), reference(net.eval(), inputs), atol=1e-5, rtol=0
    )


def test_from_module_in_train_mode_warns_and_switches(model: nn.Module) -> None:
    net = make_model("mlp").train()
    loaded = from_module(net)
    assert not net.training
    assert "the module: the model was in train mode" in loaded.warnings[0]


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, the problem and the fix


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileError, match=r"nope\.safetensors: no such file\. check the path"):
        load_model(path)


def test_wrong_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    msg = str(err.value)
    assert "model.h5: unsupported model file type '.h5'" in msg
    assert all(s in msg for s in SUPPORTED_SUFFIXES)


def test_truncated_safetensors_is_reported_as_truncated(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = files["safetensors"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelFileError,
        match=r"cut\.safetensors: not a readable safetensors file "
        r".*truncated or corrupt",
    ):
        load_model(path)


def test_corrupt_onnx_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"this is not protobuf\x00\xff" * 8)
    with pytest.raises(ModelFileError, match=r"bad\.onnx: not a valid ONNX model .*re-export"):
        load_model(path)


def test_truncated_pt2_is_reported(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["export"].read_bytes()
    path = tmp_path / "cut.pt2"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.pt2: .*torch\.export (archive|program)"):
        load_model(path)


def test_arch_that_does_not_fit_names_missing_and_unexpected_tensors(
    files: dict[str, Path],
) -> None:
    with pytest.raises(ArchitectureMismatchError) as err:
        load_model(files["safetensors"], arch="zoo:resnet8")
    msg = str(err.value)
    assert "weights do not fit zoo:resnet8" in msg
    assert "missing [normalize.mean (1), normalize.std (1), stem.0.weight (16,1,3,3)" in msg
    assert "unexpected [0.mean (1), 0.std (1), 1.bias (6), 1.weight (6,1,5,5)" in msg
    assert "and 53 more" in msg
    assert "\n" not in msg


def test_arch_with_wrong_layer_sizes_names_the_shapes(files: dict[str, Path]) -> None:
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"2 with wrong shape \[12\.weight file \(10,84\) vs arch \(5,84\), "
        r"12\.bias file \(10\) vs arch \(5\)\]",
    ):
        load_model(files["safetensors"], spec=SPEC.with_(num_classes=5, class_names=None))


def test_sidecar_that_is_not_json_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    shutil.copy(files["safetensors"], path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"m\.json: the sidecar metadata is not valid JSON"):
        load_model(path)


def test_sidecar_from_a_newer_version_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    shutil.copy(files["safetensors"], path)
    side = json.loads(files["safetensors"].with_suffix(".json").read_text())
    side["version"] = 99
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match=r"version 99 is not supported.*upgrade edgeproof"):
        load_model(path)


def test_loading_zoo_weights_does_not_import_torch_dynamo(tmp_path: Path) -> None:
    """The loader's meta-device size check must not pull in torch._dynamo (~2 s of imports:
    ``normal_`` on meta tensors runs torch's Python refs); the whole-process audit pays it."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = build_model("resnet8", (3, 16, 16), 10)
    path = tmp_path / "r8.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    probe = (
        "import sys\n"
        "from edgeproof.models import load_model\n"
        f"load_model({str(path)!r}, arch='zoo:resnet8')\n"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"

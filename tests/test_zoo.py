"""The zoo architectures: output shapes, parameter counts, normalisation, --arch strings."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from edgeproof.errors import ArchitectureMismatchError, OptionError
from edgeproof.models.zoo import (
    ZOO,
    Normalize,
    arch_from_string,
    build_model,
    infer_build_args,
    zoo_names,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def first_conv_kernel(module: nn.Module) -> tuple[int, ...]:
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    return tuple(conv.kernel_size)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("mlp", (1, 8, 8)),
        ("mlp", (30,)),
        ("lenet5", (1, 8, 8)),
        ("lenet5", (1, 28, 28)),
        ("lenet5", (3, 32, 32)),
        ("resnet8", (1, 8, 8)),
        ("resnet20", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
        ("cnn1d", (3, 50)),
        ("cnn-lstm", (1, 64)),
    ],
)
def test_every_arch_maps_a_batch_to_logits_of_num_classes(
    name: str, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_zoo_lists_every_name_of_the_shared_convention() -> None:
    assert zoo_names() == ["mlp", "lenet5", "resnet8", "resnet20", "resnet18", "cnn1d", "cnn-lstm"]
    assert set(ZOO) == set(zoo_names())


def test_resnet20_has_option_b_parameter_count() -> None:
    # He et al. report 0.27M for ResNet-20 (option A: 269,722); option B adds the two 1x1
    # projection convs (16*32 + 32*64) and their BatchNorms (2*(32+64)) = 2,752.
    model = build_model("resnet20", (3, 32, 32), 10)
    assert n_params(model) == 269_722 + 2_752


def test_resnet18_matches_torchvision_parameter_count_at_imagenet_size() -> None:
    # torchvision.models.resnet18(): 11,689,512 parameters (1000 classes).
    model = build_model("resnet18", (3, 224, 224), 1000)
    assert n_params(model) == 11_689_512
    assert first_conv_kernel(model) == (7, 7)


def test_resnet18_uses_a_3x3_stem_for_small_images() -> None:
    model = build_model("resnet18", (3, 32, 32), 10)
    assert first_conv_kernel(model) == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.get_submodule("stem").modules())


def test_normalize_layer_applies_per_channel_mean_and_std() -> None:
    model = build_model("lenet5", (2, 8, 8), 3, normalization=((0.5, 0.25), (0.5, 2.0)))
    norm = model.get_submodule("0")
    assert isinstance(norm, Normalize)
    x = torch.ones(1, 2, 8, 8)
    out = norm(x)
    assert torch.allclose(out[0, 0], torch.full((8, 8), 1.0))
    assert torch.allclose(out[0, 1], torch.full((8, 8), 0.375))
    assert norm.as_tuple() == ((0.5, 0.25), (0.5, 2.0))


def test_normalize_is_identity_without_normalization_and_travels_in_state_dict() -> None:
    model = build_model("cnn1d", (2, 16), 3)
    x = torch.randn(2, 2, 16)
    assert torch.equal(model.get_submodule("normalize")(x), x)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_unknown_zoo_name_lists_the_known_ones() -> None:
    with pytest.raises(OptionError, match=r"arch: unknown zoo architecture 'vgg'.*zoo:resnet20"):
        build_model("vgg", (3, 32, 32), 10)


def test_image_arch_on_time_series_shape_says_which_input_it_takes() -> None:
    with pytest.raises(OptionError, match=r"zoo:resnet8 takes images \(C, H, W\).*\(3, 50\)"):
        build_model("resnet8", (3, 50), 10)


def test_arch_string_that_is_not_zoo_or_callable_is_rejected() -> None:
    with pytest.raises(OptionError, match=r"neither zoo:NAME nor package\.module:callable"):
        arch_from_string("resnet20", (3, 32, 32), 10)


def test_arch_string_imports_a_user_callable_with_the_arguments_it_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod = types.ModuleType("edgeproof_test_user_arch")

    def build(num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes)).train()

    mod.build = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edgeproof_test_user_arch", mod)
    model = arch_from_string("edgeproof_test_user_arch:build", (1, 2, 2), 5)
    assert model(torch.rand(1, 1, 2, 2)).shape == (1, 5)
    assert not model.training


def test_arch_string_naming_a_missing_module_says_so() -> None:
    with pytest.raises(
        OptionError, match=r"cannot import module 'no_such_pkg_xyz\.models'.*PYTHONPATH"
    ):
        arch_from_string("no_such_pkg_xyz.models:build", (1, 8, 8), 10)


def test_build_args_are_read_back_from_weights() -> None:
    norm = ((0.3,), (0.4,))
    for name, shape in [("lenet5", (1, 8, 8)), ("resnet8", (3, 32, 32)), ("cnn1d", (2, 64))]:
        sd = build_model(name, shape, 6, normalization=norm if shape[0] == 1 else None).state_dict()
        got_shape, k, got_norm = infer_build_args(name, sd)
        assert k == 6
        assert got_shape[0] == shape[0]
        if name == "lenet5":
            assert got_shape == shape
            assert got_norm is not None and got_norm[0] == pytest.approx(norm[0])


def test_build_args_do_not_depend_on_the_stored_key_order() -> None:
    sd = build_model("lenet5", (1, 28, 28), 4).state_dict()
    lexical = dict(sorted(sd.items()))  # how safetensors stores them: "10.weight" < "8.weight"
    assert infer_build_args("zoo:lenet5", lexical)[:2] == ((1, 28, 28), 4)
    sd18 = dict(sorted(build_model("resnet18", (3, 224, 224), 5).state_dict().items()))
    assert infer_build_args("resnet18", sd18)[:2] == ((3, 224, 224), 5)


def test_build_args_without_a_linear_layer_ask_for_the_sidecar_or_spec() -> None:
    sd = {"0.weight": torch.zeros(3, 1, 5, 5)}
    with pytest.raises(ArchitectureMismatchError, match=r"sidecar \.json.*pass spec"):
        infer_build_args("lenet5", sd)

"""Tracing models into bound graphs: zoo architectures, folding, rewrites, unsupported ops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeproof.certify import ops as O
from edgeproof.certify.graph import trace
from edgeproof.errors import OptionError
from edgeproof.models.zoo import build_model

torch.manual_seed(0)


def _randomise_batchnorm(m: nn.Module) -> nn.Module:
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            assert mod.running_mean is not None and mod.running_var is not None
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        ("mlp", (1, 8, 8)),
        ("lenet5", (1, 8, 8)),
        ("resnet8", (3, 8, 8)),
        ("cnn1d", (2, 32)),
    ],
)
def test_zoo_models_trace_to_graphs_that_reproduce_their_outputs(
    arch: str, shape: tuple[int, ...]
) -> None:
    model = _randomise_batchnorm(
        build_model(arch, shape, 5, ((0.3,) * shape[0], (0.2,) * shape[0]))
    )
    g = trace(model, shape)
    x = torch.rand(7, *shape)
    with torch.no_grad():
        assert torch.allclose(g.forward(x), model(x), atol=1e-5)
    assert g.nodes[0].op is None and g.output == len(g.nodes) - 1


def test_normalisation_becomes_one_affine_node_and_batchnorm_folds_into_convolutions() -> None:
    model = _randomise_batchnorm(
        build_model("resnet8", (3, 8, 8), 4, ((0.4, 0.5, 0.6), (0.2, 0.3, 0.4)))
    )
    g = trace(model, (3, 8, 8))
    affine = [n for n in g.nodes if isinstance(n.op, O.Elementwise)]
    assert len(affine) == 1 and affine[0].inputs == (0,)  # the Normalize layer only
    assert not any(type(m).__name__ == "BatchNorm2d" for m in [n.op for n in g.nodes])
    assert sum(isinstance(n.op, O.Add) for n in g.nodes) == 3  # one residual sum per block
    unfolded = trace(model, (3, 8, 8), fold_batchnorm=False)
    assert len(unfolded.nodes) > len(g.nodes)


def test_functional_code_and_constant_arithmetic_are_traced() -> None:
    class Net(nn.Module):
        offset: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)
            self.register_buffer("offset", torch.tensor([0.5, -0.5, 1.0]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = (x - self.offset) * 2.0 / 3.0 + 1
            h = torch.cat([torch.relu(h), torch.clamp(-h, -0.5, 0.25)], dim=1)
            h = torch.nn.functional.leaky_relu(self.fc(h), 0.1)
            return (
                torch.sigmoid(h) - torch.tanh(h)[:, :4] + x.view(x.size(0), -1).sum(1, keepdim=True)
            )

    model = Net().eval()
    g = trace(model, (3,))
    x = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.allclose(g.forward(x), model(x), atol=1e-6)
    kinds = {n.op.kind for n in g.nodes if n.op is not None}
    assert {"relu", "leaky_relu", "sigmoid", "tanh", "cat"} <= kinds


@pytest.mark.slow  # torch.export compiles the model (~7 s on one core, mostly first-use imports)
def test_model_with_shape_dependent_python_control_flow_is_traced_by_export() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] > 2:  # fx cannot branch on a traced shape
                return torch.relu(self.a(x))
            return self.b(x)

    model = Branchy().eval()
    g = trace(model, (4,))
    assert g.source == "export"
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(g.forward(x), model(x), atol=1e-6)


def test_unsupported_module_is_refused_with_its_node_and_operation() -> None:
    model = build_model("cnn-lstm", (1, 64), 3)
    with pytest.raises(OptionError, match=r"module: node 'lstm' \(LSTM\) cannot be bounded"):
        trace(model, (1, 64))


def test_product_of_two_input_dependent_tensors_is_refused() -> None:
    class Square(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    with pytest.raises(OptionError, match=r"node 'mul'.*product of two input-dependent"):
        trace(Square(), (3,))


def test_models_of_two_inputs_and_bad_input_shapes_are_refused() -> None:
    class Two(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + y

    with pytest.raises(OptionError, match="more than one input"):
        trace(Two(), (3,))
    with pytest.raises(OptionError, match="input_shape"):
        trace(nn.Linear(3, 2), (0,))


def test_batchnorm_in_training_mode_is_traced_in_eval_mode_without_changing_the_module() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU()).train()
    g = trace(model, (3,))
    assert model.training  # restored
    model.eval()
    x = torch.randn(6, 3)
    with torch.no_grad():
        assert torch.allclose(g.forward(x), model(x), atol=1e-6)


@pytest.mark.parametrize(
    "form", ["torchscript", "torch-trace", "torch-export", "input-affine-torchscript"]
)
def test_torchscript_exported_and_wrapped_models_trace_like_the_module(form: str) -> None:
    from edgeproof.models.modules import InputAffine

    model = _randomise_batchnorm(build_model("resnet8", (3, 8, 8), 4))
    x = torch.rand(5, 3, 8, 8)
    if form == "torch-export":
        dim = torch.export.Dim("batch", max=64)
        loaded: nn.Module = torch.export.export(
            model, (x[:2],), dynamic_shapes=({0: dim},)
        ).module()
    elif form == "torch-trace":  # records aten::_convolution, not aten::conv2d
        loaded = torch.jit.trace(model, x[:1])
    else:
        loaded = torch.jit.script(model)
    if form == "input-affine-torchscript":
        loaded = InputAffine(loaded, (2.0, 1.0, 0.5), (-0.5, 0.0, 0.25)).eval()
    graph = trace(loaded, (3, 8, 8))
    with torch.no_grad():
        want = loaded(x)
    assert torch.allclose(graph.forward(x), want, atol=1e-5)
    assert any(isinstance(n.op, O.ReLU) for n in graph.nodes)


def test_a_model_returning_nan_is_refused_as_a_broken_model() -> None:
    from edgeproof.errors import ModelError

    model = build_model("mlp", (1, 8, 8), 3).eval()
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() > 1).view(-1)[0] = float("nan")
    with pytest.raises(ModelError, match="NaN or Inf"):
        trace(model, (1, 8, 8))


def test_a_torchscript_program_that_branches_on_input_values_is_refused() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool(x.sum() > 2.0):
                return self.fc(x)
            return -self.fc(x)

    # make_fx cannot record a branch on a traced value, or the recorded graph disagrees on
    # other inputs: refused either way, never bounded as the branch one input took
    with pytest.raises(OptionError, match=r"data-dependent control flow|branches on its input"):
        trace(torch.jit.script(Branchy().eval()), (4,))

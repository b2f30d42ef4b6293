"""Where a classifier's head is: its final linear layer, and a split into features → head.

Data-free backdoor detectors read the final layer (:func:`final_layer`) or run inputs through the
part of the network after a split point (:func:`split_model`). Both refuse, with the reason, a
model whose last layer is not a classifier head (:class:`NotAClassifierError`, a
:class:`~edgeproof.errors.UserError`).

Split points (an explicit registry by module type, :func:`register_split`):

* ``nn.Sequential`` (``zoo:lenet5``, ``zoo:mlp``): the *FreeEagle split* is the input of the
  trailing fully connected block (the first ``Linear`` after the last convolution/pooling layer,
  as FreeEagle's ``inspect_layer_position`` for its simple CNN and VGG: the input of the
  classifier); for a network that is fully connected from its first layer (an MLP) it is the
  output of the first hidden layer's activation instead, so the optimised input is a hidden
  representation, not the raw input.
* ``zoo:cnn1d``: after the first convolution block (ReLU + pool), as FreeEagle splits CNNs in the
  middle of the feature extractor.
* ``zoo:resnet*``: before the last residual stage (FreeEagle's default position for ResNets is an
  inner stage).
* ``zoo:cnn-lstm``: the input of the LSTM.
* anything else: the input of the final ``Linear`` (found by a forward hook).

The *probe split* (HTell-style random probing) is always the input of the final ``Linear``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeproof.errors import UserError
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.zoo import CNN1D, CNNLSTM, Normalize, ResNet, natural_key

__all__ = [
    "FinalLayer",
    "HeadSplit",
    "NotAClassifierError",
    "final_layer",
    "final_layer_of_tensors",
    "has_layer_structure",
    "register_split",
    "split_model",
]

MIN_CLASSES = 3


class NotAClassifierError(UserError):
    """The model's last layer is not a classifier head (a ``Linear`` with K ≥ 3 outputs)."""


@dataclass(frozen=True)
class FinalLayer:
    """The classifier's output layer ``logits = W·z + b``.

    Attributes:
        name: the module or tensor name (``"12"``, ``"fc"``).
        weight: ``(K, D)`` float64.
        bias: ``(K,)`` float64 (zeros when the layer has none; ``has_bias`` says which).
        has_bias: whether the layer has a bias.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    has_bias: bool

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])


def _refuse(source: str, why: str) -> NotAClassifierError:
    return NotAClassifierError(
        f"{source}: {why}; backdoor detection needs a classifier whose last layer is a "
        f"Linear head with at least {MIN_CLASSES} outputs (one per class). Pass the classifier "
        "itself, not a feature extractor or a regression model"
    )


def _as_final(source: str, name: str, w: torch.Tensor, b: torch.Tensor | None) -> FinalLayer:
    if w.dim() != 2:
        raise _refuse(source, f"the last layer {name!r} has a {w.dim()}-D weight, not a matrix")
    if not torch.is_floating_point(w):
        raise _refuse(source, f"the last layer {name!r} has {w.dtype} weights (quantized?)")
    k = int(w.shape[0])
    if k < MIN_CLASSES:
        raise _refuse(source, f"the last layer {name!r} has {k} output(s)")
    wn = w.detach().double().cpu().numpy()
    bn = np.zeros(k) if b is None else b.detach().double().cpu().numpy().reshape(-1)
    if bn.shape != (k,):
        raise _refuse(source, f"the bias of {name!r} has shape {tuple(bn.shape)}, not ({k},)")
    if not (np.all(np.isfinite(wn)) and np.all(np.isfinite(bn))):
        raise _refuse(source, f"the last layer {name!r} has NaN or infinite weights")
    return FinalLayer(name=name, weight=wn, bias=bn, has_bias=b is not None)


def final_layer_of_tensors(
    weights: Mapping[str, torch.Tensor], source: str = "model"
) -> FinalLayer:
    """The last 2-D ``*.weight`` tensor (natural order of names) and its ``*.bias``.

    For weights-only models: the order of the names is the only structure there is, so a
    state dict whose last-named matrix is not the output layer is misread (state the
    architecture to avoid it). A trailing convolution or normalisation weight is refused.
    """
    named = sorted(weights.items(), key=lambda kv: natural_key(kv[0]))
    weight_like = [
        (k, v)
        for k, v in named
        if k.endswith("weight") and torch.is_floating_point(v) and v.dim() >= 1
    ]
    if not weight_like:
        raise _refuse(source, "no weight tensor found")
    name, w = weight_like[-1]
    if w.dim() != 2:
        raise _refuse(source, f"the last weight tensor {name!r} has shape {tuple(w.shape)}")
    prefix = name[: -len("weight")]
    return _as_final(source, prefix.rstrip(".") or name, w, weights.get(prefix + "bias"))


def has_layer_structure(module: nn.Module) -> bool:
    """False for a module whose layers are not Python ``nn.Linear``/``Conv`` modules (a
    TorchScript module, a ``torch.export`` program): only its tensors and its forward pass can
    be used, not a split into features and head."""
    return any(
        isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)) for m in module.modules()
    ) and not isinstance(module, torch.jit.ScriptModule)


def _last_linear(module: nn.Module) -> tuple[str, nn.Linear] | None:
    found: tuple[str, nn.Linear] | None = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            found = (name, m)
    return found


def final_layer(model: LoadedModel) -> FinalLayer:
    """The output layer of ``model`` (module: the last ``nn.Linear``; else: the tensors).

    A layer whose output count differs from the spec's number of classes is refused. With a
    runnable module and a known input shape, the model's output is checked to be that
    layer's output (or a function of it that keeps the arg-max, such as softmax); a model whose
    output comes from somewhere else (a convolutional head, an extra block) is refused.
    """
    source = model.name
    if model.module is None:
        return final_layer_of_tensors(model.weights, source)
    if not has_layer_structure(model.module):
        # TorchScript / torch.export: the layers are compiled or inlined; read the tensors
        assert model.network is not None
        return final_layer_of_tensors(dict(model.network.named_parameters()), source)
    found = _last_linear(model.module)
    if found is None:
        raise _refuse(source, "the model has no Linear layer")
    name, lin = found
    final = _as_final(source, name, lin.weight, lin.bias)
    declared = None if model.spec is None else model.spec.num_classes
    if declared is not None and declared != final.num_classes:
        raise _refuse(
            source,
            f"the last Linear layer {name!r} has {final.num_classes} outputs but the model "
            f"declares {declared} classes (a feature extractor?)",
        )
    if model.spec is not None:
        _check_output_is_head(model.module, lin, model.spec.shape, source, name)
    return final


def _check_output_is_head(
    module: nn.Module, lin: nn.Linear, shape: tuple[int, ...], source: str, name: str
) -> None:
    captured: list[torch.Tensor] = []
    handle = lin.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            out = module(torch.rand((4, *shape), generator=gen))
    finally:
        handle.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise _refuse(source, "the model's output is not a (batch, classes) tensor")
    if not captured or captured[-1].shape != out.shape:
        raise _refuse(
            source,
            f"the model's output {tuple(out.shape)} is not produced by its last Linear "
            f"layer {name!r}",
        )
    if not torch.equal(captured[-1].argmax(1), out.argmax(1)):
        raise _refuse(source, f"the model's output is not a monotone function of {name!r}")


# --------------------------------------------------------------------------------------------
# Feature/head split


@dataclass
class HeadSplit:
    """A model cut in two: ``head(features(x)) == model(x)``.

    Attributes:
        features: the part before the split (raw input → embedding).
        head: the part after it (embedding → logits); a module in eval mode.
        embedding_shape: the embedding's shape without batch.
        nonnegative: the embedding is the output of a ReLU (or a pooling of one), so
            optimised/probed embeddings are kept ≥ 0 (FreeEagle's ``bound_on``).
        where: a human-readable name of the split point.
    """

    features: Callable[[torch.Tensor], torch.Tensor]
    head: nn.Module
    embedding_shape: tuple[int, ...]
    nonnegative: bool
    where: str


Features = Callable[[torch.Tensor], torch.Tensor]
#: what a split rule returns: (features, head, nonnegative embedding, where)
Cut = tuple[Features, nn.Module, bool, str]
SplitRule = Callable[[nn.Module, str], Cut | None]
_SPLITS: dict[type[nn.Module], SplitRule] = {}


def register_split(module_type: type[nn.Module], rule: SplitRule) -> None:
    """Register how to split modules of ``module_type`` (exact type match, then subclasses).

    ``rule(module, kind)`` with ``kind`` ``"freeeagle"`` or ``"probe"`` returns
    ``(features, head, nonnegative, where)`` or ``None`` to fall back to the final-Linear split.
    """
    _SPLITS[module_type] = rule


class _Seq(nn.Module):
    """Apply modules in order, with optional functions in between (for non-Sequential heads)."""

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.parts:
            x = p(x)
        return x


class _MeanTime(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


class _LstmHead(nn.Module):
    def __init__(self, lstm: nn.LSTM, fc: nn.Linear) -> None:
        super().__init__()
        self.lstm = lstm
        self.fc = fc

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(feats)
        result: torch.Tensor = self.fc(h[-1])
        return result


_ACT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid)
_NONNEG = (nn.ReLU, nn.ReLU6, nn.Sigmoid)
_FC_BLOCK = (nn.Linear, nn.Flatten, nn.Dropout, *_ACT)


def _sequential_rule(module: nn.Module, kind: str) -> Cut | None:
    if not isinstance(module, nn.Sequential) or kind == "probe" or len(module) == 0:
        return None
    layers = list(module)
    start = len(layers)
    while start > 0 and isinstance(layers[start - 1], _FC_BLOCK):
        start -= 1
    while start < len(layers) and not isinstance(layers[start], nn.Linear):
        start += 1  # the Flatten/activation before the first Linear stays on the features side
    prefix = [i for i in range(start) if not isinstance(layers[i], Normalize)]
    if not prefix:
        # fully connected from the input: split after the first hidden activation instead
        acts = [i for i in range(start, len(layers)) if isinstance(layers[i], _ACT)]
        if not acts or acts[0] == len(layers) - 1:
            return None
        start = acts[0] + 1
    if start >= len(layers):
        return None
    before = layers[start - 1] if start > 0 else None
    nonneg = isinstance(before, _NONNEG) or (
        isinstance(before, (nn.MaxPool2d, nn.MaxPool1d, nn.Flatten))
        and any(isinstance(m, _NONNEG) for m in layers[max(0, start - 3) : start])
    )
    feats = nn.Sequential(*layers[:start])
    head = nn.Sequential(*layers[start:])
    return feats, head, nonneg, f"input of layer {start} ({type(layers[start]).__name__})"


def _cnn1d_rule(module: nn.Module, kind: str) -> Cut | None:
    if not isinstance(module, CNN1D) or kind == "probe":
        return None
    f = module.features
    feats = nn.Sequential(module.normalize, *list(f)[:3])
    head = _Seq(*list(f)[3:], _MeanTime(), module.fc)
    return feats, head, True, "after the first convolution block (features.2)"


def _resnet_rule(module: nn.Module, kind: str) -> Cut | None:
    if not isinstance(module, ResNet) or kind == "probe":
        return None
    stages = list(module.layers)
    feats = nn.Sequential(module.normalize, module.stem, *stages[:-1])
    head = _Seq(stages[-1], module.pool, module.flatten, module.fc)
    return feats, head, True, f"before the last residual stage (layers.{len(stages) - 1})"


def _cnnlstm_rule(module: nn.Module, kind: str) -> Cut | None:
    if not isinstance(module, CNNLSTM) or kind == "probe":
        return None

    def feats(x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = module.features(module.normalize(x)).transpose(1, 2)
        return result

    return feats, _LstmHead(module.lstm, module.fc), True, "input of the LSTM"


register_split(nn.Sequential, _sequential_rule)
register_split(CNN1D, _cnn1d_rule)
register_split(ResNet, _resnet_rule)
register_split(CNNLSTM, _cnnlstm_rule)


def _rule_for(module: nn.Module) -> SplitRule | None:
    rule = _SPLITS.get(type(module))
    if rule is not None:
        return rule
    for t, r in _SPLITS.items():
        if isinstance(module, t):
            return r
    return None


def _final_linear_split(module: nn.Module, shape: tuple[int, ...], source: str) -> Cut:
    found = _last_linear(module)
    if found is None:
        raise _refuse(source, "the model has no Linear layer")
    name, lin = found

    def feats(x: torch.Tensor) -> torch.Tensor:
        got: list[torch.Tensor] = []
        h = lin.register_forward_hook(lambda _m, inp, _o: got.append(inp[0]))
        try:
            module(x)
        finally:
            h.remove()
        return got[-1]

    with torch.inference_mode():
        z = feats(torch.zeros((2, *shape)) + 0.5)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        zr = feats(torch.rand((16, *shape), generator=gen))
    nonneg = bool((z >= 0).all() and (zr >= 0).all())
    return feats, lin, nonneg, f"input of the final Linear {name!r}"


def split_model(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    kind: str = "freeeagle",
    source: str = "model",
) -> HeadSplit:
    """Cut ``module`` at its FreeEagle split (``kind="freeeagle"``) or at the input of its final
    Linear (``kind="probe"``); see the module docstring. The embedding shape is found by running
    one input of ``input_shape`` through the features."""
    module.eval()
    rule = _rule_for(module)
    got = rule(module, kind) if rule is not None else None
    if got is None:
        got = _final_linear_split(module, input_shape, source)
    feats, head, nonneg, where = got
    head.eval()
    with torch.inference_mode():
        z = feats(torch.zeros((1, *input_shape)))
        out = head(z)
    if out.dim() != 2 or out.shape[1] < MIN_CLASSES:
        raise _refuse(source, f"the head's output has shape {tuple(out.shape)}")
    return HeadSplit(feats, head, tuple(int(s) for s in z.shape[1:]), nonneg, where)

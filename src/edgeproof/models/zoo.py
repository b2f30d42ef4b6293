"""Reference architectures: small, well-known networks edgeproof can build, train and audit.

Every zoo model takes inputs in the *raw* value domain; a :class:`Normalize` layer
``(x - mean) / std`` (per channel) is always the first layer (identity when no normalisation is
given), so its buffers travel with the weights and a model rebuilt without the numbers still
normalises correctly once its state dict is loaded.

Names (``zoo:<name>`` on the command line):

* ``mlp`` — Flatten → 128 → 64 → K with ReLU. Any input shape.
* ``lenet5`` — LeCun et al. 1998, modern variant: ReLU instead of tanh, max-pooling instead of
  trainable subsampling, full C3 connectivity, and ``padding=2`` on *both* 5×5 convolutions so
  inputs as small as 4×4 (e.g. 8×8 digits) work; the first fully connected layer is sized from the
  input shape (16·⌊H/4⌋·⌊W/4⌋ → 120 → 84 → K). Image inputs ``(C, H, W)``.
* ``resnet8`` / ``resnet20`` — CIFAR ResNets of He et al. 2016 ("Deep Residual Learning",
  §4.2): 6n+2 layers (n=1, 3), 16/32/64 filters, global average pooling. Shortcuts use
  **option B** (1×1 convolution + BatchNorm projection where the shape changes, identity
  elsewhere), which keeps every layer a standard module; this adds ~2.8k parameters to the
  paper's option-A count (resnet20: 272,474 vs 269,722 at 10 classes).
* ``resnet18`` — ImageNet ResNet-18 (BasicBlock, [2, 2, 2, 2], 64–512 filters), identical to
  torchvision's layout (11,689,512 parameters at 3×224×224 and 1000 classes). For inputs smaller
  than 64×64 the stem is the common CIFAR adaptation: 3×3 stride-1 convolution, no max-pool.
* ``cnn1d`` — time series ``(C, T)``: two Conv1d(5) + ReLU + MaxPool(4) blocks (32, 64
  channels), global average pooling over time, linear head.
* ``cnn-lstm`` — time series ``(C, T)``: two convolution blocks, Conv1d(7, 32) and Conv1d(5, 32),
  each + ReLU + MaxPool(4), then a one-layer LSTM (64 hidden units) over the T/16 remaining
  steps, linear head on the last hidden state.

  Why two ×4 pools (a deliberate variant of the usual one-conv front end): with one ×2 pool the
  LSTM ran over 128 steps of ``builtin:synth-ecg`` and, reading only its last hidden state, did
  not learn in a normal training budget (0.57 test accuracy after 15 epochs at lr 1e-3, 0.91
  only after 40 epochs at 3e-3), while the rhythm classes need the whole 256-sample window (they
  differ by heart rate). Downsampling ×16 first (receptive field ≈ a QRS complex plus its
  neighbourhood per step) leaves 16 steps, and the same 15-epoch run reaches ≈ 0.96.
  The same reasoning gives ``cnn1d`` two ×4 pools (0.73 → 0.86 at 15 epochs).

:func:`arch_from_string` turns an ``--arch`` value (``zoo:NAME`` or ``package.module:callable``)
into a module; :func:`infer_build_args` reads the number of classes and input channels back from
a state dict when no sidecar metadata says them.
"""

# No `from __future__ import annotations`: TorchScript must resolve the buffer annotations.
import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgeproof.errors import ArchitectureMismatchError, OptionError, param
from edgeproof.models.catalog import ZOO_DESCRIPTIONS

__all__ = [
    "ZOO",
    "BasicBlock",
    "Normalization",
    "Normalize",
    "ZooEntry",
    "arch_from_string",
    "build_model",
    "infer_build_args",
    "natural_key",
    "zoo_names",
]

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dimension 1), as the first layer of a zoo model.

    ``mean`` and ``std`` are 1-D buffers of length C (channels, or features for tabular inputs);
    they broadcast over every trailing dimension.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise OptionError("normalization", f"{len(mean)} means but {len(std)} stds")
        if any(s <= 0 or not math.isfinite(s) for s in std):
            raise OptionError("normalization", f"std {list(std)} must be positive and finite")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}"

    def as_tuple(self) -> Normalization:
        """The buffers as ``(mean, std)`` tuples (the form :class:`InputSpec` stores)."""
        return (
            tuple(float(v) for v in self.mean.tolist()),
            tuple(float(v) for v in self.std.tolist()),
        )


def _normalize(channels: int, normalization: Normalization | None) -> Normalize:
    if normalization is None:
        return Normalize([0.0] * channels, [1.0] * channels)
    mean, std = normalization
    if len(mean) == 1 and channels > 1:
        mean, std = tuple(mean) * channels, tuple(std) * channels
    if len(mean) != channels:
        raise OptionError(
            "normalization",
            f"{len(mean)} per-channel values given for an input with {channels} channels",
            "give one mean/std per channel (dimension 1 of the input)",
        )
    return Normalize(mean, std)


# --------------------------------------------------------------------------------------------
# Architectures


class MLP(nn.Sequential):
    """Flatten → Linear(numel, 128) → ReLU → Linear(128, 64) → ReLU → Linear(64, K)."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, normalization: Normalization | None
    ) -> None:
        super().__init__(
            _normalize(input_shape[0], normalization),
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )


class LeNet5(nn.Sequential):
    """LeNet-5 (modern variant, see the module docstring), sized for the given image shape."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, normalization: Normalization | None
    ) -> None:
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise OptionError(
                "arch",
                f"zoo:lenet5 needs images of at least 4x4, got {h}x{w}",
                "use zoo:mlp for smaller inputs",
            )
        super().__init__(
            _normalize(c, normalization),
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * (h // 4) * (w // 4), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )


class BasicBlock(nn.Module):
    """The two-3×3-convolution residual block (He et al. 2016), projection shortcut (option B)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + self.shortcut(x))
        return result


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages: CIFAR-style (3 stages) or ImageNet-style (4)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        normalization: Normalization | None,
        *,
        blocks: Sequence[int],
        widths: Sequence[int],
        imagenet_stem: bool,
    ) -> None:
        super().__init__()
        c = input_shape[0]
        self.normalize = _normalize(c, normalization)
        stem: list[nn.Module]
        if imagenet_stem:
            stem = [
                nn.Conv2d(c, widths[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
        else:
            stem = [
                nn.Conv2d(c, widths[0], 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
            ]
        self.stem = nn.Sequential(*stem)
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stage: list[nn.Module] = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(BasicBlock(in_planes, width, stride))
                in_planes = width
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            # a meta-device skeleton (the loader's size check) has no values to initialise, and
            # normal_ on meta tensors goes through torch's Python refs, which import
            # torch._dynamo (~2 s on the first call)
            if isinstance(m, nn.Conv2d) and m.weight.device.type != "meta":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.normalize(x)))
        result: torch.Tensor = self.fc(self.flatten(self.pool(x)))
        return result


def _resnet_cifar(n: int) -> Callable[[tuple[int, ...], int, Normalization | None], nn.Module]:
    def build(shape: tuple[int, ...], k: int, norm: Normalization | None) -> nn.Module:
        return ResNet(shape, k, norm, blocks=(n, n, n), widths=(16, 32, 64), imagenet_stem=False)

    return build


def _resnet18(shape: tuple[int, ...], k: int, norm: Normalization | None) -> nn.Module:
    return ResNet(
        shape,
        k,
        norm,
        blocks=(2, 2, 2, 2),
        widths=(64, 128, 256, 512),
        imagenet_stem=min(shape[1], shape[2]) >= 64,
    )


def _time_pools(t: int, factors: Sequence[int]) -> list[nn.Module]:
    """One ``MaxPool1d(f)`` per factor while the remaining length allows it, else ``Identity``
    (so short series still build: a pool never shrinks the time axis below one step)."""
    pools: list[nn.Module] = []
    for f in factors:
        if t >= f:
            pools.append(nn.MaxPool1d(f))
            t //= f
        else:
            pools.append(nn.Identity())
    return pools


class CNN1D(nn.Module):
    """Conv1d(C→32, 5) → ReLU → MaxPool(4) → Conv1d(32→64, 5) → ReLU → MaxPool(4) → mean over
    time → Linear."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, normalization: Normalization | None
    ) -> None:
        super().__init__()
        c, t = input_shape
        self.normalize = _normalize(c, normalization)
        pool1, pool2 = _time_pools(t, (4, 4))
        self.features = nn.Sequential(
            nn.Conv1d(c, 32, 5, padding=2),
            nn.ReLU(),
            pool1,
            nn.Conv1d(32, 64, 5, padding=2),
            nn.ReLU(),
            pool2,
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.features(self.normalize(x)).mean(dim=2))
        return result


class CNNLSTM(nn.Module):
    """Conv1d(C→32, 7) → ReLU → MaxPool(4) → Conv1d(32→32, 5) → ReLU → MaxPool(4) →
    LSTM(32→64) → Linear on the last hidden state (see the module docstring for why ×16)."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, normalization: Normalization | None
    ) -> None:
        super().__init__()
        c, t = input_shape
        self.normalize = _normalize(c, normalization)
        pool1, pool2 = _time_pools(t, (4, 4))
        self.features = nn.Sequential(
            nn.Conv1d(c, 32, 7, padding=3),
            nn.ReLU(),
            pool1,
            nn.Conv1d(32, 32, 5, padding=2),
            nn.ReLU(),
            pool2,
        )
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(self.normalize(x)).transpose(1, 2)  # (N, T/16, 32)
        _, (h, _) = self.lstm(feats)
        result: torch.Tensor = self.fc(h[-1])
        return result


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class ZooEntry:
    """One zoo architecture.

    Attributes:
        name: the name after ``zoo:``.
        build: ``build(input_shape, num_classes, normalization) -> nn.Module``.
        input_rank: the sample rank it accepts (3 = ``(C, H, W)``, 2 = ``(C, T)``), ``None`` = any.
        description: one line for ``--help`` and reports.
    """

    name: str
    build: Callable[[tuple[int, ...], int, Normalization | None], nn.Module]
    input_rank: int | None
    description: str


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("mlp", MLP, None, ZOO_DESCRIPTIONS["mlp"]),
        ZooEntry("lenet5", LeNet5, 3, ZOO_DESCRIPTIONS["lenet5"]),
        ZooEntry("resnet8", _resnet_cifar(1), 3, ZOO_DESCRIPTIONS["resnet8"]),
        ZooEntry("resnet20", _resnet_cifar(3), 3, ZOO_DESCRIPTIONS["resnet20"]),
        ZooEntry("resnet18", _resnet18, 3, ZOO_DESCRIPTIONS["resnet18"]),
        ZooEntry("cnn1d", CNN1D, 2, ZOO_DESCRIPTIONS["cnn1d"]),
        ZooEntry("cnn-lstm", CNNLSTM, 2, ZOO_DESCRIPTIONS["cnn-lstm"]),
    )
}

_RANK_WORDS = {3: "images (C, H, W)", 2: "time series (C, T)"}


def zoo_names() -> list[str]:
    """The zoo's architecture names, in registry order."""
    return list(ZOO)


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    normalization: Normalization | None = None,
) -> nn.Module:
    """Build zoo architecture ``name`` (with or without the ``zoo:`` prefix), in eval mode.

    Args:
        name: one of :func:`zoo_names`.
        input_shape: sample shape without batch.
        num_classes: size of the output layer.
        normalization: per-channel ``(mean, std)`` for the first :class:`Normalize` layer
            (identity if ``None``).
    """
    key = name.removeprefix("zoo:")
    entry = ZOO.get(key)
    if entry is None:
        raise OptionError(
            "arch",
            f"unknown zoo architecture {name!r}",
            f"use one of {', '.join('zoo:' + n for n in ZOO)}",
        )
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise OptionError("arch", f"zoo:{key}: input shape {shape} is invalid")
    if entry.input_rank is not None and len(shape) != entry.input_rank:
        raise OptionError(
            "arch",
            f"zoo:{key} takes {_RANK_WORDS[entry.input_rank]} but the input shape is {shape}",
            "pick an architecture for this kind of input (zoo:mlp takes any shape)",
        )
    if num_classes < 1:
        raise OptionError("arch", f"zoo:{key}: num_classes must be >= 1, got {num_classes}")
    torch_module = entry.build(shape, int(num_classes), normalization)
    return torch_module.eval()


def arch_from_string(
    arch: str,
    input_shape: tuple[int, ...] | None,
    num_classes: int,
    normalization: Normalization | None = None,
) -> nn.Module:
    """Build the module an ``--arch`` value names.

    ``zoo:NAME`` builds a zoo model. ``package.module:callable`` imports the module (user code the
    user named explicitly) and calls the callable with whichever of the keyword arguments
    ``input_shape``, ``num_classes`` and ``normalization`` it accepts (all of them if it takes
    ``**kwargs``; ``input_shape`` may be ``None`` when no spec is known); it must return a
    ``torch.nn.Module``.
    """
    if arch.startswith("zoo:"):
        if input_shape is None:
            raise OptionError(
                "spec",
                f"{arch} needs the input shape",
                f"keep the sidecar .json next to the weights or pass {param('spec')} with the "
                "shape",
            )
        return build_model(arch, input_shape, num_classes, normalization)
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", arch):
        raise OptionError(
            "arch",
            f"{arch!r} is neither zoo:NAME nor package.module:callable",
            f"use e.g. zoo:resnet20 (zoo: {', '.join(ZOO)}) or mypkg.models:build",
        )
    mod_name, attr = arch.split(":", 1)
    try:
        target: object = importlib.import_module(mod_name)
    except ImportError as exc:
        raise OptionError(
            "arch",
            f"cannot import module {mod_name!r} ({exc})",
            "make sure the package is installed or on PYTHONPATH",
        ) from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise OptionError("arch", f"module {mod_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise OptionError("arch", f"{arch} is not callable")
    offered = {
        "input_shape": input_shape,
        "num_classes": num_classes,
        "normalization": normalization,
    }
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
    try:
        module = target(**kwargs)
    except Exception as exc:  # user code the user named: its failure is a bad --arch value
        raise OptionError(
            "arch",
            f"{arch} raised {type(exc).__name__} when called to build the model "
            f"({str(exc).strip().splitlines()[0][:120] if str(exc).strip() else 'no message'})",
            "name a callable that builds and returns a torch.nn.Module",
        ) from None
    if not isinstance(module, nn.Module):
        raise OptionError(
            "arch",
            f"{arch} returned {type(module).__name__}, not a torch.nn.Module",
            "the callable must build and return the model",
        )
    return module.eval()


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting ``2.weight`` before ``10.weight`` (state dicts are often stored sorted)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("."))


def infer_build_args(
    name: str, state_dict: Mapping[str, torch.Tensor]
) -> tuple[tuple[int, ...], int, Normalization | None]:
    """Read ``(input_shape, num_classes, normalization)`` for zoo model ``name`` from its weights.

    The classes come from the last linear layer, the channels from the first layer's weight or
    the :class:`Normalize` buffers. Spatial size is recovered where the architecture fixes it
    (LeNet-5's first linear layer, square images assumed; the MLP only needs the flattened
    size); ResNets and 1-D models accept any size, so a representative one is chosen (32×32,
    224×224 for an ImageNet stem, 64 time steps). The shape is for building the module only:
    it is not a claim about the data. Raises :class:`ArchitectureMismatchError` when the
    weights do not say enough.
    """
    key = name.removeprefix("zoo:")
    if key not in ZOO:
        build_model(name, (1,), 1)  # raises the unknown-architecture OptionError
    ordered = sorted(state_dict.items(), key=lambda kv: natural_key(kv[0]))
    two_d = [(k, v) for k, v in ordered if v.dim() == 2 and k.endswith("weight")]
    norm_keys = next(
        ((p + "mean", p + "std") for p in ("0.", "normalize.") if p + "mean" in state_dict), None
    )
    convs = [(k, v) for k, v in ordered if v.dim() in (3, 4) and k.endswith("weight")]

    def fail(what: str) -> ArchitectureMismatchError:
        return ArchitectureMismatchError(
            f"zoo:{key}: cannot infer {what} from the weights; keep the sidecar .json written by "
            f"`edgeproof train` next to the .safetensors, or pass {param('spec')} with the input "
            "shape"
        )

    if not two_d:
        raise fail("the number of classes (no linear layer found)")
    num_classes = int(two_d[-1][1].shape[0])
    normalization: Normalization | None = None
    if norm_keys is not None and norm_keys[1] in state_dict:
        normalization = (
            tuple(float(v) for v in state_dict[norm_keys[0]].flatten().tolist()),
            tuple(float(v) for v in state_dict[norm_keys[1]].flatten().tolist()),
        )
    if key == "mlp":  # only the flattened size matters; the Normalize buffers give C
        numel = int(two_d[0][1].shape[1])
        channels = int(state_dict[norm_keys[0]].numel()) if norm_keys is not None else 1
        if numel % channels:
            raise fail(f"the input shape ({numel} inputs do not split into {channels} channels)")
        return (channels, numel // channels), num_classes, normalization
    if not convs:
        raise fail("the input channels (no convolution found)")
    first_conv = state_dict.get("stem.0.weight", convs[0][1])
    channels = int(first_conv.shape[1])
    if key == "lenet5":
        fc_in = int(two_d[0][1].shape[1])
        side = math.isqrt(fc_in // 16)
        if side * side * 16 != fc_in:
            raise fail(f"the image size (first linear layer has {fc_in} inputs, not 16·s²)")
        return (channels, side * 4, side * 4), num_classes, normalization
    if key == "resnet18":
        size = 224 if first_conv.shape[-1] == 7 else 32
        return (channels, size, size), num_classes, normalization
    if key in ("resnet8", "resnet20"):
        return (channels, 32, 32), num_classes, normalization
    if normalization is not None and len(normalization[0]) != channels:
        normalization = None
    return (channels, 64), num_classes, normalization

"""The tracer's shared operator builders (dense, convolution, BatchNorm, clamp, pools, binary
arithmetic) and its module builders (by module class, :func:`_module_table`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeproof.certify import ops as O
from edgeproof.certify.bound_graph import (
    _EXAMPLE_BATCH,
    Builder,
    ModuleBuilder,
    Var,
    _has_var,
)


def _arg(args: list[Any], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    return t * n if len(t) == 1 and n > 1 else t


def _need_var(b: Builder, v: Any, what: str = "its input") -> Var:
    if not isinstance(v, Var):
        raise b.fail(f"{what} is not a traced tensor")
    return v


def _elementwise(b: Builder, x: Var, scale: Any = None, shift: Any = None) -> Var:
    s = None if scale is None else b.per_sample(scale, x)
    t = None if shift is None else b.per_sample(shift, x)
    return b.add(O.Elementwise(s, t), [x])


def _relu(b: Builder, x: Var, slope: float = 0.0) -> Var:
    if slope == 0.0:
        return b.add(O.ReLU(), [x])
    if not 0.0 <= slope < 1.0:
        raise b.fail(f"LeakyReLU slope {slope} is outside [0, 1)")
    return b.add(O.LeakyReLU(slope), [x])


def _clamp(b: Builder, x: Var, lo: float | None, hi: float | None) -> Var:
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        raise b.fail("clamp bounds must be numbers")
    if lo is None and hi is None:
        return x
    if lo is not None and hi is not None:
        if lo > hi:
            raise b.fail(f"clamp range [{lo}, {hi}] is empty")
        r1 = _relu(b, _elementwise(b, x, shift=-float(lo)))
        r2 = _relu(b, _elementwise(b, x, shift=-float(hi)))
        d = b.add(O.Sub(), [r1, r2])
        return _elementwise(b, d, shift=float(lo))
    if lo is not None:
        return _elementwise(b, _relu(b, _elementwise(b, x, shift=-float(lo))), shift=float(lo))
    assert hi is not None
    r = _relu(b, _elementwise(b, x, scale=-1.0, shift=float(hi)))
    return _elementwise(b, r, scale=-1.0, shift=float(hi))


def _dense(b: Builder, x: Var, weight: Tensor, bias: Tensor | None) -> Var:
    if not isinstance(weight, Tensor) or _has_var(weight) or isinstance(bias, Var):
        raise b.fail("the weights depend on the input")
    w = weight.detach()
    if w.dim() != 2:
        raise b.fail(f"a weight of shape {list(w.shape)} is not a matrix")
    return b.add(O.Dense(w, None if bias is None else bias.detach()), [x])


def _conv(
    b: Builder,
    x: Var,
    weight: Tensor,
    bias: Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
) -> Var:
    d = weight.dim() - 2
    if d not in (1, 2):
        raise b.fail(f"{d}-D convolution is not supported")
    in_shape = b.shape(x)
    k = weight.shape[2:]
    dil = _tuple(dilation, d)
    if isinstance(padding, str):
        if padding == "valid":
            pad = (0,) * d
        elif padding == "same":
            total = [dil[i] * (k[i] - 1) for i in range(d)]
            if any(t % 2 for t in total):
                raise b.fail("padding='same' with an even kernel pads asymmetrically")
            pad = tuple(t // 2 for t in total)
        else:
            raise b.fail(f"padding={padding!r} is not supported")
    else:
        pad = _tuple(padding, d)
    st = _tuple(stride, d)
    fn = F.conv2d if d == 2 else F.conv1d
    with torch.no_grad():
        ex = fn(
            b.example(x),
            weight.detach(),
            None if bias is None else bias.detach(),
            st,
            pad,
            dil,
            groups,
        )
    op = O.Conv(
        weight.detach(),
        None if bias is None else bias.detach(),
        stride=st,
        padding=pad,
        dilation=dil,
        groups=int(groups),
        in_shape=in_shape,
        out_shape=tuple(ex.shape[1:]),
    )
    return b.add(op, [x])


def _batchnorm(
    b: Builder,
    x: Var,
    mean: Tensor | None,
    var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    training: bool,
) -> Var:
    if training or mean is None or var is None:
        raise b.fail(
            "BatchNorm in training mode (batch statistics) has no per-sample bound",
            "put the model in eval mode",
        )
    shape = b.shape(x)
    c = shape[0]
    view = (1, c) + (1,) * (len(shape) - 1)
    inv = torch.rsqrt(var.detach() + eps)
    scale = inv if weight is None else weight.detach() * inv
    shift = -mean.detach() * scale
    if bias is not None:
        shift = shift + bias.detach()
    return b.add(O.Elementwise(scale.view(view), shift.view(view)), [x])


def _reshape_like(b: Builder, x: Var, fn: Callable[[Tensor], Tensor]) -> Var:
    with torch.no_grad():
        ex = fn(b.example(x))
    if ex.dim() == 0 or ex.shape[0] != _EXAMPLE_BATCH:
        raise b.fail("the reshape mixes the batch dimension")
    out_shape = tuple(ex.shape[1:])
    if out_shape == b.shape(x):
        return x
    return b.add(O.Reshape(b.shape(x), out_shape), [x])


def _linear_fn(b: Builder, x: Var, fn: Callable[[Tensor], Tensor], name: str) -> Var:
    return b.add(O.LinearFn(fn, b.shape(x), name), [x])


def _maxpool(
    b: Builder, x: Var, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
) -> Var:
    d = len(b.shape(x)) - 1
    if d not in (1, 2):
        raise b.fail(f"{d}-D max pooling is not supported")
    k = _tuple(kernel, d)
    st = _tuple(stride if stride not in (None, []) else kernel, d)
    pad = _tuple(padding, d)
    if any(v != 1 for v in _tuple(dilation, d)):
        raise b.fail("dilated max pooling is not supported")
    if ceil_mode:
        raise b.fail("max pooling with ceil_mode=True is not supported")
    fn = F.max_pool2d if d == 2 else F.max_pool1d
    with torch.no_grad():
        ex = fn(b.example(x), k, st, pad)
    return b.add(O.MaxPool(k, st, pad, b.shape(x), tuple(ex.shape[1:])), [x])


def _binary(b: Builder, kind: str, x: Any, y: Any, alpha: Any = 1) -> Any:
    """``x (+|-|*|/) y`` where at least one side is a traced tensor."""
    if alpha != 1:
        y = _elementwise(b, y, scale=float(alpha)) if isinstance(y, Var) else y * alpha
    xv, yv = isinstance(x, Var), isinstance(y, Var)
    if kind == "add":
        if xv and yv:
            return _same_shape_pair(b, O.Add(), x, y)
        v, c = (x, y) if xv else (y, x)
        return _elementwise(b, v, shift=c)
    if kind == "sub":
        if xv and yv:
            return _same_shape_pair(b, O.Sub(), x, y)
        if xv:
            return _elementwise(b, x, shift=-torch.as_tensor(y))
        return _elementwise(b, y, scale=-1.0, shift=x)
    if kind == "mul":
        if xv and yv:
            raise b.fail("a product of two input-dependent tensors is not supported")
        v, c = (x, y) if xv else (y, x)
        return _elementwise(b, v, scale=c)
    if kind == "div":
        if yv:
            raise b.fail("division by an input-dependent tensor is not supported")
        c = torch.as_tensor(y, dtype=b.example(x).dtype)
        if bool((c == 0).any()):
            raise b.fail("division by zero")
        return _elementwise(b, x, scale=1.0 / c)
    raise AssertionError(kind)


def _same_shape_pair(b: Builder, op: O.BoundOp, x: Var, y: Var) -> Var:
    sx, sy = b.shape(x), b.shape(y)
    if sx != sy:
        out = torch.broadcast_shapes((1, *sx), (1, *sy))[1:]
        if sx != tuple(out):
            x = _broadcast(b, x, tuple(out))
        if sy != tuple(out):
            y = _broadcast(b, y, tuple(out))
    return b.add(op, [x, y])


def _broadcast(b: Builder, x: Var, shape: tuple[int, ...]) -> Var:
    def expand(t: Tensor) -> Tensor:
        return t.expand(t.shape[0], *shape)

    return _linear_fn(b, x, expand, "expand")


# --- module builders


def _linear_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.Linear)
    return _dense(b, _need_var(b, args[0]), m.weight, m.bias)


def _conv_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    if m.padding_mode != "zeros":
        raise b.fail(f"padding_mode={m.padding_mode!r} is not supported (only zeros)")
    return _conv(
        b, _need_var(b, args[0]), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups
    )


def _bn_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    if not m.track_running_stats or m.running_mean is None:
        raise b.fail("BatchNorm without running statistics uses batch statistics")
    w = m.weight if m.affine else None
    bias = m.bias if m.affine else None
    return _batchnorm(
        b, _need_var(b, args[0]), m.running_mean, m.running_var, w, bias, m.eps, False
    )


def _normalize_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    from edgeproof.models.zoo import Normalize

    assert isinstance(m, Normalize)
    x = _need_var(b, args[0])
    shape = b.shape(x)
    view = (1, -1) + (1,) * (len(shape) - 1)
    std = m.std.detach().view(view)
    mean = m.mean.detach().view(view)
    return b.add(O.Elementwise(1.0 / std, -mean / std), [x])


def _relu_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return _relu(b, _need_var(b, args[0]))


def _leaky_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.LeakyReLU)
    return _relu(b, _need_var(b, args[0]), float(m.negative_slope))


def _sigmoid_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return b.add(O.SShaped("sigmoid"), [_need_var(b, args[0])])


def _tanh_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return b.add(O.SShaped("tanh"), [_need_var(b, args[0])])


def _hardtanh_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, nn.Hardtanh)
    return _clamp(b, _need_var(b, args[0]), float(m.min_val), float(m.max_val))


def _identity_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return args[0]


def _flatten_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, (nn.Flatten, nn.Unflatten))
    return _reshape_like(b, _need_var(b, args[0]), m)


def _avgpool_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    return _linear_fn(b, _need_var(b, args[0]), m, type(m).__name__)


def _maxpool_m(b: Builder, m: nn.Module, args: list[Any]) -> Any:
    assert isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))
    if m.return_indices:
        raise b.fail("max pooling returning indices is not supported")
    return _maxpool(
        b, _need_var(b, args[0]), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
    )


def _module_table() -> list[tuple[type, ModuleBuilder]]:
    """The module classes bounded (and kept whole by the tracer) and their builders."""
    from edgeproof.models.zoo import Normalize

    return [
        (nn.Linear, _linear_m),
        (nn.Conv1d, _conv_m),
        (nn.Conv2d, _conv_m),
        (nn.BatchNorm1d, _bn_m),
        (nn.BatchNorm2d, _bn_m),
        (Normalize, _normalize_m),
        (nn.ReLU, _relu_m),
        (nn.LeakyReLU, _leaky_m),
        (nn.Sigmoid, _sigmoid_m),
        (nn.Tanh, _tanh_m),
        (nn.Hardtanh, _hardtanh_m),  # ReLU6 is a Hardtanh
        (nn.Identity, _identity_m),
        (nn.Dropout, _identity_m),
        (nn.Dropout1d, _identity_m),
        (nn.Dropout2d, _identity_m),
        (nn.Flatten, _flatten_m),
        (nn.Unflatten, _flatten_m),
        (nn.AvgPool1d, _avgpool_m),
        (nn.AvgPool2d, _avgpool_m),
        (nn.AdaptiveAvgPool1d, _avgpool_m),
        (nn.AdaptiveAvgPool2d, _avgpool_m),
        (nn.MaxPool1d, _maxpool_m),
        (nn.MaxPool2d, _maxpool_m),
    ]

"""The tracer's function builders (by function, method name or ATen operator): one table per op
family, and :func:`_register_builtins`, which registers them with the module builders."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.bound_graph import (
    Builder,
    FunctionBuilder,
    Var,
    register_function,
    register_module,
)
from edgeproof.certify.builders import (
    _arg,
    _batchnorm,
    _binary,
    _clamp,
    _conv,
    _dense,
    _elementwise,
    _linear_fn,
    _maxpool,
    _module_table,
    _need_var,
    _relu,
    _reshape_like,
)

# --- function builders: arithmetic


_aten = torch.ops.aten


FunctionTable = list[tuple[Any, FunctionBuilder]]


def _arith_f(kind: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return _binary(b, kind, args[0], _arg(args, kwargs, 1, "other"), kwargs.get("alpha", 1))

    return build


def _rsub_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _binary(b, "sub", _arg(args, kwargs, 1, "other"), args[0])


def _neg_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _elementwise(b, _need_var(b, args[0]), scale=-1.0)


def _arithmetic_table() -> FunctionTable:
    """``+ − × ÷`` (operators, in place, torch and ATen spellings), ``rsub`` and negation."""
    aten = _aten
    table: FunctionTable = []
    for kind, targets in (
        ("add", (operator.add, operator.iadd, torch.add, "add", "add_", aten.add)),
        ("sub", (operator.sub, operator.isub, torch.sub, "sub", "sub_", aten.sub)),
        ("mul", (operator.mul, operator.imul, torch.mul, "mul", "mul_", aten.mul)),
        ("div", (operator.truediv, operator.itruediv, torch.div, "div", "div_", aten.div)),
    ):
        table += [(t, _arith_f(kind)) for t in targets]
    table.append((aten.rsub, _rsub_f))
    table += [(t, _neg_f) for t in (operator.neg, torch.neg, "neg", aten.neg)]
    return table


# --- function builders: activations


def _relu_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _relu(b, _need_var(b, args[0]))


def _leaky_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _relu(b, _need_var(b, args[0]), float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


def _s_shaped_f(name: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return b.add(O.SShaped(name), [_need_var(b, args[0])])

    return build


def _clamp_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _clamp(
        b, _need_var(b, args[0]), _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
    )


def _hardtanh_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    lo = _arg(args, kwargs, 1, "min_val", -1.0)
    hi = _arg(args, kwargs, 2, "max_val", 1.0)
    return _clamp(b, _need_var(b, args[0]), float(lo), float(hi))


def _relu6_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _clamp(b, _need_var(b, args[0]), 0.0, 6.0)


def _activation_table() -> FunctionTable:
    """ReLU, LeakyReLU, sigmoid, tanh and the clamps (``clamp``, ``hardtanh``, ``relu6``)."""
    aten = _aten
    table: FunctionTable = []
    table += [(t, _relu_f) for t in (F.relu, torch.relu, "relu", "relu_", aten.relu, aten.relu_)]
    table += [(t, _leaky_f) for t in (F.leaky_relu, aten.leaky_relu, aten.leaky_relu_)]
    table += [
        (t, _s_shaped_f("sigmoid")) for t in (torch.sigmoid, F.sigmoid, "sigmoid", aten.sigmoid)
    ]
    table += [(t, _s_shaped_f("tanh")) for t in (torch.tanh, F.tanh, "tanh", aten.tanh)]
    clamps = (torch.clamp, torch.clip, "clamp", "clip", aten.clamp, aten.clip)
    table += [(t, _clamp_f) for t in clamps]
    table += [(t, _hardtanh_f) for t in (F.hardtanh, aten.hardtanh)]
    table += [(t, _relu6_f) for t in (F.relu6, aten.relu6)]
    return table


# --- function builders: shape operations


def _reshape_f(method: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        rest, kw = args[1:], kwargs
        return _reshape_like(b, x, lambda t: getattr(t, method)(*rest, **kw))

    return build


def _same_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return args[0]


def _dropout_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if _arg(args, kwargs, 2, "training", False):
        raise b.fail("dropout in training mode is random")
    return args[0]


def _permute_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    dims = (
        args[1:]
        if len(args) > 2 or isinstance(_arg(args, kwargs, 1, "dims"), int)
        else _arg(args, kwargs, 1, "dims")
    )
    nd = len(b.shape(x)) + 1
    dims = [int(d) % nd for d in dims]
    if dims[0] != 0:
        raise b.fail("the permutation moves the batch dimension")
    return b.add(O.Permute([d - 1 for d in dims[1:]]), [x])


def _transpose_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    nd = len(b.shape(x)) + 1
    d0 = int(_arg(args, kwargs, 1, "dim0")) % nd
    d1 = int(_arg(args, kwargs, 2, "dim1")) % nd
    if 0 in (d0, d1):
        raise b.fail("the transpose moves the batch dimension")
    dims = list(range(nd - 1))
    dims[d0 - 1], dims[d1 - 1] = dims[d1 - 1], dims[d0 - 1]
    return b.add(O.Permute(dims), [x])


def _cat_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    parts = list(args[0])
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    like = next(p for p in parts if isinstance(p, Var))
    nd = len(b.shape(like)) + 1
    dim %= nd
    if dim == 0:
        raise b.fail("concatenation along the batch dimension")
    vars_: list[Var] = []
    for p in parts:
        if isinstance(p, Var):
            vars_.append(p)
        else:
            t = torch.as_tensor(p, dtype=b.example(like).dtype)
            if t.shape[0] != 1:
                t = t[:1]
            vars_.append(b.add(O.Constant(t.clone()), [], name=f"{b.current}_const"))
    sizes = [b.shape(v)[dim - 1] for v in vars_]
    return b.add(O.Cat(dim - 1, sizes), vars_)


def _getitem_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, idx = args[0], args[1]
    if not isinstance(x, Var):
        return operator.getitem(x, idx)
    key = idx if isinstance(idx, tuple) else (idx,)
    keeps_batch = bool(key) and (key[0] == slice(None) or (key[0] is Ellipsis and len(key) > 1))
    if not keeps_batch:
        raise b.fail("indexing that selects along the batch dimension")
    if any(isinstance(k, (Tensor, Var)) or k is None for k in key):
        raise b.fail("indexing by tensors or None is not supported")

    def select(t: Tensor) -> Tensor:
        return t[idx]

    return _linear_fn(b, x, select, "slice")


def _slice_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    if dim % (len(b.shape(x)) + 1) == 0:
        raise b.fail("slicing along the batch dimension")
    rest = args[1:]

    def sliced(t: Tensor) -> Tensor:
        out: Tensor = _aten.slice.Tensor(t, *rest)
        return out

    return _linear_fn(b, x, sliced, "slice")


def _pad_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    pad = tuple(_arg(args, kwargs, 1, "pad"))
    mode = _arg(args, kwargs, 2, "mode", "constant")
    value = _arg(args, kwargs, 3, "value", 0.0)
    if mode != "constant" or (value or 0.0) != 0.0:
        raise b.fail("only zero constant padding is supported")

    def padded(t: Tensor) -> Tensor:
        return F.pad(t, pad)

    return _linear_fn(b, x, padded, "pad")


def _shape_table() -> FunctionTable:
    """Reshapes, no-ops (``contiguous``, ``clone``, eval dropout), permutations, ``cat``,
    indexing, slicing and zero padding."""
    aten = _aten
    table: FunctionTable = []
    for name in ("view", "reshape", "flatten", "squeeze", "unsqueeze"):
        table.append((name, _reshape_f(name)))
    table.append((torch.flatten, _reshape_f("flatten")))
    table.append((torch.reshape, _reshape_f("reshape")))
    table.append((torch.squeeze, _reshape_f("squeeze")))
    table.append((torch.unsqueeze, _reshape_f("unsqueeze")))
    for t, meth in (
        (aten.view, "view"),
        (aten.reshape, "reshape"),
        (aten._unsafe_view, "reshape"),
        (aten.flatten, "flatten"),
        (aten.squeeze, "squeeze"),
        (aten.unsqueeze, "unsqueeze"),
    ):
        table.append((t, _reshape_f(meth)))
    same = ("contiguous", "clone", "detach", aten.clone, aten.contiguous, aten.alias, aten.detach)
    table += [(t, _same_f) for t in same]
    table += [(t, _dropout_f) for t in (F.dropout, aten.dropout)]
    table += [(t, _permute_f) for t in ("permute", torch.permute, aten.permute)]
    table += [(t, _transpose_f) for t in ("transpose", torch.transpose, aten.transpose)]
    table += [(t, _cat_f) for t in (torch.cat, torch.concat, aten.cat)]
    table.append((operator.getitem, _getitem_f))
    table.append((aten.slice, _slice_f))
    table += [(t, _pad_f) for t in (F.pad, aten.constant_pad_nd, aten.pad)]
    return table


# --- function builders: reductions and pools


def _reduce_f(kind: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        dim = _arg(args, kwargs, 1, "dim")
        keep = bool(_arg(args, kwargs, 2, "keepdim", False))
        nd = len(b.shape(x)) + 1
        if dim is None:
            raise b.fail(f"{kind} over every dimension mixes the batch")
        dims = [dim] if isinstance(dim, int) else list(dim)
        if any(int(d) % nd == 0 for d in dims):
            raise b.fail(f"{kind} over the batch dimension")
        dims_t = tuple(int(d) for d in dims)
        if kind == "mean":
            return _linear_fn(b, x, lambda t: t.mean(dim=dims_t, keepdim=keep), "mean")
        return _linear_fn(b, x, lambda t: t.sum(dim=dims_t, keepdim=keep), "sum")

    return build


def _fn_pool_f(fn: Callable[..., Tensor], name: str) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        rest, kw = args[1:], kwargs
        return _linear_fn(b, x, lambda t: fn(t, *rest, **kw), name)

    return build


def _maxpool_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    k = _arg(args, kwargs, 1, "kernel_size")
    st = _arg(args, kwargs, 2, "stride")
    pad = _arg(args, kwargs, 3, "padding", 0)
    dil = _arg(args, kwargs, 4, "dilation", 1)
    ceil = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    if _arg(args, kwargs, 6, "return_indices", False):
        raise b.fail("max pooling returning indices is not supported")
    return _maxpool(b, x, k, st, pad, dil, ceil)


def _maxpool_indices_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # ATen's pooling with indices (what TorchScript dispatches for MaxPool2d): the values
    # are bounded; the indices (unused by the models this sees) are not a tensor we bound
    x = _need_var(b, args[0])
    k = _arg(args, kwargs, 1, "kernel_size")
    st = _arg(args, kwargs, 2, "stride")
    pad = _arg(args, kwargs, 3, "padding", 0)
    dil = _arg(args, kwargs, 4, "dilation", 1)
    ceil = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    return (_maxpool(b, x, k, st, pad, dil, ceil), None)


def _reduction_and_pool_table() -> FunctionTable:
    """``mean``/``sum`` over non-batch dimensions, average pools (linear) and max pools."""
    aten = _aten
    table: FunctionTable = []
    table += [(t, _reduce_f("mean")) for t in ("mean", torch.mean, aten.mean)]
    table += [(t, _reduce_f("sum")) for t in ("sum", torch.sum, aten.sum)]
    for t, name in (
        (F.avg_pool1d, "avg_pool1d"),
        (F.avg_pool2d, "avg_pool2d"),
        (F.adaptive_avg_pool1d, "adaptive_avg_pool1d"),
        (F.adaptive_avg_pool2d, "adaptive_avg_pool2d"),
        (aten.avg_pool1d, "avg_pool1d"),
        (aten.avg_pool2d, "avg_pool2d"),
        (aten.adaptive_avg_pool1d, "adaptive_avg_pool1d"),
        (aten.adaptive_avg_pool2d, "adaptive_avg_pool2d"),
        (aten._adaptive_avg_pool2d, "adaptive_avg_pool2d"),
    ):
        assert callable(t)
        table.append((t, _fn_pool_f(t, name)))
    table += [
        (t, _maxpool_f) for t in (F.max_pool1d, F.max_pool2d, aten.max_pool1d, aten.max_pool2d)
    ]
    with_indices = (aten.max_pool1d_with_indices, aten.max_pool2d_with_indices)
    table += [(t, _maxpool_indices_f) for t in with_indices]
    return table


# --- function builders: linear layers


def _linear_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return _dense(
        b, _need_var(b, args[0]), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    )


def _matmul_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, w = args[0], args[1]
    if isinstance(w, Var) or not isinstance(x, Var):
        raise b.fail("a matrix product with an input-dependent right factor is not supported")
    w = torch.as_tensor(w)
    if w.dim() != 2:
        raise b.fail(f"a matrix product with a factor of shape {list(w.shape)}")
    return _dense(b, x, w.t(), None)


def _addmm_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    bias, x, w = args[0], args[1], args[2]
    if not isinstance(x, Var) or isinstance(w, Var) or isinstance(bias, Var):
        raise b.fail("addmm with input-dependent weights")
    beta = kwargs.get("beta", 1)
    alpha = kwargs.get("alpha", 1)
    return _dense(b, x, alpha * torch.as_tensor(w).t(), beta * torch.as_tensor(bias))


def _conv_f(dims: int) -> FunctionBuilder:
    def build(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = _need_var(b, args[0])
        return _conv(
            b,
            x,
            _arg(args, kwargs, 1, "weight"),
            _arg(args, kwargs, 2, "bias"),
            _arg(args, kwargs, 3, "stride", 1),
            _arg(args, kwargs, 4, "padding", 0),
            _arg(args, kwargs, 5, "dilation", 1),
            int(_arg(args, kwargs, 6, "groups", 1)),
        )

    return build


def _convolution_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, w, bias, stride, padding, dilation, transposed, _out_pad, groups = args[:9]
    if transposed:
        raise b.fail("transposed convolution is not supported")
    return _conv(b, _need_var(b, x), w, bias, stride, padding, dilation, int(groups))


def _bn_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    return _batchnorm(
        b,
        x,
        _arg(args, kwargs, 1, "running_mean"),
        _arg(args, kwargs, 2, "running_var"),
        _arg(args, kwargs, 3, "weight"),
        _arg(args, kwargs, 4, "bias"),
        float(_arg(args, kwargs, 7, "eps", 1e-5)),
        bool(_arg(args, kwargs, 5, "training", False)),
    )


def _aten_bn_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # aten.batch_norm(input, weight, bias, running_mean, running_var, training, momentum,
    # eps, cudnn_enabled)
    x = _need_var(b, args[0])
    return _batchnorm(b, x, args[3], args[4], args[1], args[2], float(args[7]), bool(args[5]))


def _aten_bn_legit_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # (input, weight, bias, running_mean, running_var, momentum, eps)
    # -> (out, save_mean, save_rstd)
    x = _need_var(b, args[0])
    out = _batchnorm(b, x, args[3], args[4], args[1], args[2], float(args[6]), False)
    return (out, None, None)


def _aten_native_bn_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    # native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum,
    # eps) -> (out, save_mean, save_invstd); what TorchScript dispatches for BatchNorm
    x = _need_var(b, args[0])
    out = _batchnorm(b, x, args[3], args[4], args[1], args[2], float(args[7]), bool(args[5]))
    return (out, None, None)


def _linear_layer_table() -> FunctionTable:
    """``linear``, matrix products, ``addmm``, convolutions and functional/ATen BatchNorm."""
    aten = _aten
    table: FunctionTable = []
    table += [(t, _linear_f) for t in (F.linear, aten.linear)]
    matmuls = (operator.matmul, torch.matmul, torch.mm, "matmul", "mm", aten.matmul, aten.mm)
    table += [(t, _matmul_f) for t in matmuls]
    table.append((aten.addmm, _addmm_f))
    table += [(t, _conv_f(1)) for t in (F.conv1d, aten.conv1d)]
    table += [(t, _conv_f(2)) for t in (F.conv2d, aten.conv2d)]
    # aten._convolution: what a traced TorchScript program records for its convolutions
    table += [(t, _convolution_f) for t in (aten.convolution, aten._convolution)]
    table.append((F.batch_norm, _bn_f))
    table.append((aten.batch_norm, _aten_bn_f))
    table.append((aten._native_batch_norm_legit_no_training, _aten_bn_legit_f))
    table.append((aten.native_batch_norm, _aten_native_bn_f))
    return table


# --- function builders: tensor queries


def _size_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = _need_var(b, args[0])
    return b.example(x).size(*args[1:])


def _dim_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return len(b.shape(_need_var(b, args[0]))) + 1


def _getattr_f(b: Builder, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, name = args[0], args[1]
    if isinstance(x, Var) and name in ("shape", "dtype", "device", "ndim"):
        return getattr(b.example(x), name)
    raise b.fail(f"attribute {name!r} of a traced tensor")


def _query_table() -> FunctionTable:
    """``size()``, ``dim()`` and the ``shape``/``dtype``/``device``/``ndim`` attributes, read
    from the example (they are constants of the traced graph)."""
    return [("size", _size_f), ("dim", _dim_f), (getattr, _getattr_f)]


_FUNCTION_TABLES: tuple[Callable[[], FunctionTable], ...] = (
    _arithmetic_table,
    _activation_table,
    _shape_table,
    _reduction_and_pool_table,
    _linear_layer_table,
    _query_table,
)


def _register_builtins() -> None:
    """Register the built-in builders: the module table, then each op family's function table
    (in this order; a later registration of the same target would win)."""
    for cls, mb in _module_table():
        register_module(cls, mb)
    for table in _FUNCTION_TABLES:
        for target, fb in table():
            register_function(target, fb)

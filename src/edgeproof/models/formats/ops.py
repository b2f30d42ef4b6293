"""The allowlist of operators a model file may call without ``trust_code``: pure tensor ops.

TorchScript archives and ``torch.export`` programs are programs: their code can call any
registered operator, and some operators touch the world outside the tensors —
``aten::from_file(path, shared=True)`` creates and writes a file, ``aten::save`` writes one,
``prim::rpc_async`` talks to the network, ``prim::Print`` writes to the terminal, a custom-op
namespace runs whatever C++ its library registered. edgeproof therefore *allowlists*: an
operator is accepted only if it is named here. The list holds the operators of the networks
edgeproof audits — arithmetic, comparisons, reductions, activations, convolutions, pooling,
normalisation, linear and recurrent layers, attention, shape and indexing ops, tensor creation
from values (no file, storage or device-memory ops),  conversion — plus the TorchScript
container, string and control-flow operators. In-place variants (``relu_``) are the same
operator. Anything else is refused with the operator named, unless the caller passes
``trust_code=True``.

Names are TorchScript's ``namespace::name`` without the overload (``aten::add``, not
``aten::add.Tensor``). :func:`is_allowed` normalises ``torch.ops.aten.add.Tensor`` (export) and
``aten::add_`` (in place).
"""

from __future__ import annotations

__all__ = [
    "ALLOWED_ATEN",
    "ALLOWED_EXPORT_CALLABLES",
    "ALLOWED_PRIM",
    "PRIM_NODE_KINDS",
    "is_allowed",
    "names_of",
    "op_name",
]

_ARITHMETIC = """
abs absolute add addcdiv addcmul addmm addmv addbmm baddbmm bmm mm mv matmul dot vdot outer ger
div divide true_divide floor_divide mul multiply sub subtract rsub neg negative reciprocal
remainder fmod pow float_power square sqrt rsqrt exp exp2 expm1 log log2 log10 log1p logaddexp
logaddexp2 sign sgn signbit ceil floor round trunc frac fix clamp clamp_min clamp_max clip
lerp hypot atan2 arctan2 sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh arcsin
arccos arctan arcsinh arccosh arctanh erf erfc erfinv lgamma digamma polygamma mvlgamma i0
sinc xlogy deg2rad rad2deg nan_to_num copysign nextafter ldexp heaviside gcd lcm conj
conj_physical real imag angle bitwise_and bitwise_or bitwise_xor bitwise_not
bitwise_left_shift bitwise_right_shift logical_and logical_or logical_xor logical_not
"""

_COMPARISON = """
eq ne lt le gt ge equal greater greater_equal less less_equal not_equal isnan isinf isfinite
isposinf isneginf isclose allclose maximum minimum fmax fmin where masked_fill masked_scatter
masked_select is_nonzero is_same_size
"""

_REDUCTION = """
sum mean nansum nanmean prod max min amax amin aminmax argmax argmin std var std_mean var_mean
norm frobenius_norm nuclear_norm linalg_norm linalg_vector_norm linalg_matrix_norm logsumexp
cumsum cumprod cummax cummin logcumsumexp all any count_nonzero median nanmedian mode kthvalue
topk sort argsort msort quantile nanquantile renorm dist cdist pdist histc bincount unique_dim
unique_consecutive _unique2 cosine_similarity pairwise_distance diff trace
"""

_ACTIVATION = """
relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh hardshrink
softshrink  softplus  sigmoid logit threshold prelu rrelu glu
softmax log_softmax _softmax _log_softmax special_softmax
"""

_LAYERS = """
conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d _convolution convolution
_convolution_mode conv_tbc linear bilinear
max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
fractional_max_pool2d max_unpool2d
batch_norm _batch_norm_impl_index native_batch_norm _native_batch_norm_legit
_native_batch_norm_legit_no_training layer_norm native_layer_norm group_norm native_group_norm
instance_norm rms_norm
dropout dropout_ feature_dropout alpha_dropout feature_alpha_dropout native_dropout
embedding embedding_bag _embedding_bag embedding_renorm
lstm gru rnn_tanh rnn_relu lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell
scaled_dot_product_attention _scaled_dot_product_attention_math
_native_multi_head_attention _transformer_encoder_layer_fwd _nested_tensor_from_mask
_nested_tensor_from_mask_left_aligned to_padded_tensor _masked_softmax
pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_linear1d upsample_bilinear2d
upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact1d _upsample_nearest_exact2d
_upsample_bilinear2d_aa _upsample_bicubic2d_aa _upsample_lanczos2d_aa _upsample_nearest_exact3d
grid_sampler grid_sampler_2d affine_grid_generator
pad constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
replication_pad2d replication_pad3d _pad_circular _pad_enum
one_hot im2col col2im
"""

_SHAPE = """
view view_as reshape reshape_as flatten unflatten squeeze unsqueeze permute transpose t
swapaxes swapdims movedim moveaxis expand expand_as broadcast_to broadcast_tensors
contiguous clone detach alias cat concat concatenate stack hstack vstack dstack column_stack
split split_with_sizes tensor_split chunk unbind narrow select slice index_select
gather scatter scatter_add scatter_reduce index index_put index_add index_copy index_fill
take take_along_dim masked_fill roll flip fliplr flipud rot90 repeat repeat_interleave tile
tril triu diag diagonal diag_embed diagflat block_diag meshgrid cartesian_prod combinations
nonzero nonzero_static argwhere unfold as_strided _reshape_alias _unsafe_view lift_fresh
lift_fresh_copy numpy_T mT mH matrix_H adjoint atleast_1d atleast_2d atleast_3d ravel
copy _to_copy to type_as _cast_Float _cast_Double _cast_Long _cast_Int _cast_Half
_cast_Byte _cast_Char _cast_Short _copy_from _copy_from_and_resize resize_as_ fill fill_
zero_ copy_
"""

_CREATION = """
zeros zeros_like ones ones_like full full_like empty empty_like empty_strided new_zeros
new_ones new_full new_empty new_empty_strided arange range linspace logspace eye tensor
scalar_tensor as_tensor rand rand_like randn randn_like randint randint_like randperm
bernoulli multinomial normal uniform exponential geometric cauchy log_normal
"""

_INTROSPECTION = """
size dim numel stride storage_offset is_contiguous is_floating_point is_complex is_signed
element_size  item _local_scalar_dense sym_size sym_numel sym_stride sym_storage_offset
_shape_as_tensor _assert_async _assert_scalar _assert_tensor_metadata _functional_assert_async
_functional_assert_scalar sym_constrain_range sym_constrain_range_for_size
 requires_grad_ result_type can_cast promote_types is_same_size
"""

_SCALAR_AND_CONTAINER = """
Int Float Bool Complex ScalarImplicit IntImplicit FloatImplicit ComplexImplicit
__and__ __or__ __xor__ __lshift__ __rshift__ __iand__ __ior__ __ixor__ __ilshift__ __irshift__
__is__ __isnot__ __not__ __contains__ __getitem__  __derive_index __range_length
__round_to_zero_floordiv __upsample __upsample_bilinear __interpolate
add_ mul_ sub_ div_ floordiv len append extend insert pop remove clear reverse count index
_set_item  keys values items get setdefault update popitem dict list copy
sorted sort str format join split strip lstrip rstrip startswith endswith find rfind replace
lower upper isdigit isalpha isalnum isspace islower isupper title capitalize center ljust
rjust zfill partition rpartition splitlines expandtabs swapcase  isidentifier
istitle isdecimal isnumeric isprintable rindex
floor ceil sqrt exp log log10 log1p expm1 fabs mathremainder gamma erf erfc factorial
isnan isinf isfinite radians degrees modf frexp ldexp hypot copysign gcd
abs neg pow remainder max min divmod bin hex oct ord chr round
device   warn _no_grad_embedding_renorm_ __interpolate
_dim_arange _size_if_not_equal _grad_sum_to_size _infer_size  is_grad_enabled
is_scripting is_autocast_enabled  _unwrap_optional
"""


def names_of(text: str) -> frozenset[str]:
    """The whitespace-separated names in ``text`` (how the lists here are written)."""
    return frozenset(text.split())


ALLOWED_ATEN: frozenset[str] = names_of(
    " ".join(
        (
            _ARITHMETIC,
            _COMPARISON,
            _REDUCTION,
            _ACTIVATION,
            _LAYERS,
            _SHAPE,
            _CREATION,
            _INTROSPECTION,
            _SCALAR_AND_CONTAINER,
        )
    )
)
"""``aten::`` operators (names without overload; an in-place ``name_`` is ``name``)."""

PRIM_NODE_KINDS: frozenset[str] = names_of(
    """
    Constant ListConstruct ListUnpack TupleConstruct DictConstruct DictIndex ListIndex GetAttr
    SetAttr If Loop CallMethod CallFunction Return Param isinstance range shape
    """
)
"""TorchScript graph node kinds that are structure, not registered operators."""

ALLOWED_PRIM: frozenset[str] = PRIM_NODE_KINDS | names_of(
    """
    TupleUnpack TupleIndex unchecked_cast
    unchecked_unwrap_optional Uninitialized RaiseException NumToTensor device dtype layout
    requires_grad is_cuda is_cpu is_meta is_quantized is_sparse is_mkldnn is_nested is_xpu
    is_mps is_xla is_vulkan is_ipu is_maia is_mtia is_sparse_csr itemsize nbytes data
    min max abs type EnumName EnumValue StringIndex rangelist tolist
    ModuleContainerIndex AutogradAdd AutogradZero AutogradAnyNonZero AutogradAllZero
    AutogradAllNonZero TypeCheck RequiresGradCheck BroadcastSizes ChunkSizes ConstantChunk
    name id grad index
    """
)
"""``prim::`` operators: TorchScript's containers, attributes, control flow and queries."""

ALLOWED_EXPORT_CALLABLES: frozenset[str] = names_of(
    """
    _operator.getitem _operator.add _operator.sub _operator.mul _operator.floordiv
    _operator.truediv _operator.mod _operator.pow _operator.neg _operator.pos _operator.abs
    _operator.eq _operator.ne _operator.lt _operator.le _operator.gt _operator.ge
    _operator.and_ _operator.or_ _operator.xor _operator.not_ _operator.invert
    math.ceil math.floor math.sqrt math.trunc
    torch.sym_int torch.sym_float torch.sym_max torch.sym_min torch.sym_not torch.sym_ite
    torch.sym_sum torch._sym_sqrt torch.sym_sqrt
    """
)
"""Non-operator call targets a ``torch.export`` graph may hold (symbolic shape arithmetic)."""


def op_name(target: str) -> str:
    """``namespace::name`` of an operator target string, without overload.

    ``torch.ops.aten.add.Tensor`` → ``aten::add``; ``aten::add_.Tensor`` → ``aten::add_``;
    ``prim::If`` → ``prim::If``. Strings of another shape are returned unchanged.
    """
    if target.startswith("torch.ops."):
        parts = target.split(".")
        if len(parts) >= 4:
            return f"{parts[2]}::{parts[3]}"
        return target
    if "::" in target:
        ns, _, rest = target.partition("::")
        return f"{ns}::{rest.split('.', 1)[0]}"
    return target


def is_allowed(target: str) -> bool:
    """True if the operator (or export call target) ``target`` is on the allowlist."""
    if target in ALLOWED_EXPORT_CALLABLES:
        return True
    name = op_name(target)
    ns, sep, op = name.partition("::")
    if not sep:
        return False
    if ns == "aten":
        return op in ALLOWED_ATEN or (op.endswith("_") and op[:-1] in ALLOWED_ATEN)
    if ns == "prim":
        return op in ALLOWED_PRIM
    return False

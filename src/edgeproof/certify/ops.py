"""Bound operators: what the engine knows about each operation of a traced model.

Every node of a :class:`~edgeproof.certify.graph.BoundGraph` holds one operator. An operator
knows its forward value, its interval (IBP) image, and how to move a linear function of its
output back onto its inputs (the backward step of CROWN / LiRPA, Zhang et al. 2018,
arXiv 1811.00866; Xu et al. 2020, arXiv 2002.12920):

* :class:`LinearOp` — affine in its inputs (Linear, convolutions, elementwise affine maps such as
  BatchNorm in eval mode and the zoo's ``Normalize``, reshapes, permutations, additions,
  concatenation, average pooling, means). The backward step is exact: a coefficient tensor
  ``A`` on the output becomes ``A·J`` on each input plus the constant ``A·b``.
* :class:`Activation` — elementwise nonlinearities (ReLU, LeakyReLU, sigmoid, tanh, a uniform
  fake quantizer). Each gives, from the bounds ``[l, u]`` of its input, two lines
  ``dl·x + bl ≤ f(x) ≤ du·x + bu`` valid on ``[l, u]`` (:class:`Relaxation`); the backward step
  picks the lower line where a coefficient is positive and the upper line where it is negative.
* :class:`MaxPool` — a window nonlinearity with the relaxation of auto_LiRPA 0.7.1
  (``BoundMaxPool``).

Conventions: per-sample shapes exclude the batch dimension. Backward coefficient tensors have
shape ``(B, R, *shape)`` (``B`` problems, ``R`` rows) for nonlinear operators and are flattened to
``(B·R, *shape)`` for linear ones (their constants do not depend on the problem). Only *lower*
bounds are propagated backward; an upper bound of a row ``a`` is ``-lower(-a)``.
"""

from __future__ import annotations

# The operators live in op_base.py (the base classes), linear_ops.py and relaxations.py; this
# module is their public home.
from edgeproof.certify.linear_ops import (
    Add,
    Cat,
    Constant,
    Conv,
    Dense,
    Elementwise,
    LinearFn,
    Permute,
    Reshape,
    Sub,
)
from edgeproof.certify.linear_ops import (
    conv_transpose2d_fast as conv_transpose2d_fast,
)
from edgeproof.certify.op_base import (
    BoundOp,
    Interval,
    LinearOp,
)
from edgeproof.certify.relaxations import (
    Activation,
    LeakyReLU,
    MaxPool,
    PoolRelaxation,
    Relaxation,
    ReLU,
    SShaped,
    UniformQuantizer,
)
from edgeproof.certify.relaxations import (
    apply_lines as apply_lines,
)
from edgeproof.certify.relaxations import (
    backward_elementwise as backward_elementwise,
)

__all__ = [
    "Activation",
    "Add",
    "BoundOp",
    "Cat",
    "Constant",
    "Conv",
    "Dense",
    "Elementwise",
    "Interval",
    "LeakyReLU",
    "LinearFn",
    "LinearOp",
    "MaxPool",
    "Permute",
    "PoolRelaxation",
    "ReLU",
    "Relaxation",
    "Reshape",
    "SShaped",
    "Sub",
    "UniformQuantizer",
]

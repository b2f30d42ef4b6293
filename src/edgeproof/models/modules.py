"""Working on a user's module without changing it, whatever form it came in.

Checks copy a model before they flip its weights or take gradients of its parameters, and put it
in eval mode; three forms need care:

* **TorchScript** (``torch.jit.ScriptModule``): ``copy.deepcopy`` returns parameters that are not
  autograd leaves (``requires_grad_`` then fails), and ``Module.requires_grad_`` is not
  supported at all. :func:`clone_module` copies it by a ``torch.jit.save``/``load`` round trip in
  memory, whose parameters are ordinary leaves.
* **torch.export programs** (the ``GraphModule`` of ``ExportedProgram.module()``): ``.eval()``
  raises ``NotImplementedError``; their mode is baked into the graph (the loader rewrites
  train-mode batch-norm/dropout calls to eval), so :func:`eval_mode` leaves them as they are.
* plain ``nn.Module``: ``copy.deepcopy`` and ``.eval()``.

Gradients with respect to the input work on all three (``x.requires_grad_(True)``; never on the
module).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import TypeVar

import torch
from torch import nn

__all__ = [
    "InputAffine",
    "clone_module",
    "eval_mode",
    "frozen_copy",
    "is_scripted",
    "set_requires_grad",
    "set_training",
]

M = TypeVar("M", bound=nn.Module)


def is_scripted(module: nn.Module) -> bool:
    """True for a TorchScript module (scripted or traced)."""
    return isinstance(module, torch.jit.ScriptModule)


def _jit_clone(module: M) -> M:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    clone: M = torch.jit.load(buf, map_location="cpu")
    return clone


def clone_module(module: M) -> M:
    """An independent copy of ``module`` (its own parameters, each an autograd leaf), including
    a Python module that holds TorchScript submodules (e.g. :class:`InputAffine`)."""
    if is_scripted(module):
        return _jit_clone(module)
    scripted: dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        if name and is_scripted(sub) and not any(name.startswith(f"{s}.") for s in scripted):
            scripted[name] = sub
    clone = copy.deepcopy(module)
    for name, sub in scripted.items():
        parent_name, _, attr = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        parent._modules[attr] = _jit_clone(sub)
    return clone


class InputAffine(nn.Module):
    """``model(x · scale + shift)``, per channel: the audit's input units turned into the ones
    the user's model takes — a normalisation the model expects outside it (``scale = 1/std``,
    ``shift = −mean/std``) and/or per-feature ranges (inputs as fractions of each feature's
    range: ``scale = hi − lo``, ``shift = lo``), composed by :meth:`InputSpec.input_affine`.

    ``scale`` and ``shift`` are per channel (dimension 1; one value = every channel alike) and
    broadcast over the trailing dimensions. The user's module is ``self.model``, unchanged; its
    parameters appear under the ``model.`` prefix.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(
        self, model: nn.Module, scale: tuple[float, ...], shift: tuple[float, ...]
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2) if x.dim() >= 2 else (-1,)
        return x * self.scale.to(x.dtype).view(shape) + self.shift.to(x.dtype).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(self.transform(x))
        return out


def set_training(module: M, mode: bool) -> M:
    """``module.train(mode)``; an exported program, whose mode is fixed in its graph (its
    GraphModule raises "Calling eval() is not supported yet"), is left as it is."""
    with contextlib.suppress(NotImplementedError):
        module.train(mode)
    return module


def eval_mode(module: M) -> M:
    """``module`` in eval mode (an exported program, whose mode is fixed in its graph, as is)."""
    return set_training(module, False)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """``requires_grad`` on every parameter (``Module.requires_grad_`` is not supported on
    TorchScript modules; the per-parameter call is)."""
    for p in module.parameters():
        p.requires_grad_(flag)


def frozen_copy(module: M) -> M:
    """An eval-mode copy of ``module`` whose parameters do not require gradients.

    Gradient attacks and input-space Fisher differentiate with respect to the input only;
    freezing the parameters keeps autograd from computing weight gradients. The caller's
    module is left untouched.
    """
    frozen = eval_mode(clone_module(module))
    set_requires_grad(frozen, False)
    return frozen

"""InputSpec and ThreatModel: the one description of the input every check shares.

No check guesses the input range: the value domain (``[lo, hi]`` that valid inputs live in), the
input shape (without batch), the kind of signal (image / time series / tabular), and whether a
normalisation is applied *inside* the model are fixed here once — inferred from model metadata and
data where possible, overridable by CLI flags — and handed to every check through the
:class:`ThreatModel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from edgeproof import limits
from edgeproof.errors import OptionError, SpecError

__all__ = ["InputKind", "InputSpec", "Norm", "ThreatModel", "parse_eps_list"]

InputKind = Literal["image", "timeseries", "tabular"]
Norm = Literal["linf", "l2"]

_KINDS: tuple[str, ...] = ("image", "timeseries", "tabular")
_NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class InputSpec:
    """Shape, value domain, kind and (model-internal) normalisation of one input sample.

    Attributes:
        shape: sample shape without the batch dimension, e.g. ``(1, 8, 8)`` or ``(1, 256)``;
            ``()`` when unknown (a weights-only model audited without data: only data-free
            checks run, and none of them needs an input).
        domain: ``(lo, hi)`` — the closed range every input value lives in. Attacks and
            corruptions clip to it; ε is measured in its units.
        kind: ``image`` (C,H,W), ``timeseries`` (C,T) or ``tabular`` (F,).
        normalization: ``(mean, std)`` per channel if the model normalises its input
            internally (edgeproof's zoo models do), else ``None``. Informational: inputs are
            always given to the model in the raw domain.
        num_classes: number of output classes, if known.
        class_names: optional class labels (length ``num_classes``).
    """

    shape: tuple[int, ...]
    domain: tuple[float, float] = (0.0, 1.0)
    kind: InputKind = "image"
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if any(int(s) <= 0 for s in self.shape):
            raise SpecError(f"input shape {self.shape!r} is invalid: every dimension must be >= 1")
        numel = math.prod(int(s) for s in self.shape) if self.shape else 0
        cap = limits.current().max_sample_elements
        if numel > cap:
            raise SpecError(
                f"input shape {self.shape!r} has {numel:,} values per sample, over the limit "
                f"max_sample_elements={cap:,}; {limits.how_to_raise('max_sample_elements')}"
            )
        if self.num_classes is not None and not 1 <= self.num_classes <= (
            limits.current().max_classes
        ):
            raise SpecError(
                f"num_classes={self.num_classes} is out of range (1 to max_classes="
                f"{limits.current().max_classes}); {limits.how_to_raise('max_classes')}"
            )
        lo, hi = self.domain
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise SpecError(
                f"input domain {self.domain!r} is invalid: need finite lo < hi (e.g. --domain 0,1)"
            )
        if self.kind not in _KINDS:
            raise SpecError(f"input kind {self.kind!r} is unknown: use one of {', '.join(_KINDS)}")
        names, k = self.class_names, self.num_classes
        if names is not None and k is not None and len(names) != k:
            raise SpecError(f"{len(names)} class names given for {k} classes")

    @property
    def range(self) -> float:
        """Width of the value domain, ``hi - lo``."""
        return self.domain[1] - self.domain[0]

    @property
    def shape_known(self) -> bool:
        return bool(self.shape)

    @property
    def numel(self) -> int:
        """Number of values in one sample (0 when the shape is unknown)."""
        return math.prod(self.shape) if self.shape else 0

    def with_(self, **changes: Any) -> InputSpec:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "domain": list(self.domain),
            "kind": self.kind,
            "normalization": (
                None
                if self.normalization is None
                else {"mean": list(self.normalization[0]), "std": list(self.normalization[1])}
            ),
            "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> InputSpec:
        """Parse :meth:`to_json` output, strictly: every field must have its JSON type.

        Raises:
            TypeError, ValueError, KeyError: a field is missing or of the wrong type/shape.
            SpecError: the values are out of range (see :meth:`__post_init__`).
        """
        if not isinstance(obj, dict):
            raise TypeError(f"spec must be an object, got {type(obj).__name__}")
        shape = obj["shape"]
        if not isinstance(shape, list) or not all(_is_int(v) for v in shape):
            raise TypeError(f"'shape' must be a list of integers, got {shape!r}")
        domain = obj.get("domain", [0.0, 1.0])
        if not isinstance(domain, list) or len(domain) != 2 or not all(_is_num(v) for v in domain):
            raise TypeError(f"'domain' must be two numbers [lo, hi], got {domain!r}")
        kind = obj.get("kind", "image")
        if not isinstance(kind, str):
            raise TypeError(f"'kind' must be a string, got {kind!r}")
        norm = obj.get("normalization")
        normalization = None
        if norm is not None:
            if not isinstance(norm, dict):
                raise TypeError(f"'normalization' must be {{mean, std}}, got {norm!r}")
            mean, std = norm["mean"], norm["std"]
            for key, vals in (("mean", mean), ("std", std)):
                if not isinstance(vals, list) or not vals or not all(_is_num(v) for v in vals):
                    raise TypeError(f"'normalization.{key}' must be a list of numbers")
            if len(mean) != len(std):
                raise ValueError("'normalization' mean and std differ in length")
            normalization = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        num_classes = obj.get("num_classes")
        if num_classes is not None and not _is_int(num_classes):
            raise TypeError(f"'num_classes' must be an integer, got {num_classes!r}")
        names = obj.get("class_names")
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise TypeError("'class_names' must be a list of strings")
        return cls(
            shape=tuple(int(s) for s in shape),
            domain=(float(domain[0]), float(domain[1])),
            kind=kind,  # type: ignore[arg-type]
            normalization=normalization,
            num_classes=None if num_classes is None else int(num_classes),
            class_names=None if names is None else tuple(names),
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class ThreatModel:
    """The attacker's budget on top of an :class:`InputSpec`.

    Attributes:
        input: the input specification (shape, domain, kind).
        norm: ``linf`` or ``l2``; ε is in the domain's units.
        eps: the perturbation budgets to evaluate, ascending.
    """

    input: InputSpec
    norm: Norm = "linf"
    eps: tuple[float, ...] = field(default=(0.01, 0.03, 0.1))

    def __post_init__(self) -> None:
        if self.norm not in _NORMS:
            raise OptionError(
                "--norm", f"unknown norm {self.norm!r}", f"use one of {', '.join(_NORMS)}"
            )
        if not self.eps:
            raise OptionError("--eps", "no budget given", "pass e.g. --eps 0.01,0.03")
        for e in self.eps:
            if not math.isfinite(e) or e <= 0:
                raise OptionError("--eps", f"ε={e} must be a positive finite number")
        # The largest perturbation that can change anything inside the box [lo, hi]^d.
        limit = self.input.range
        if self.norm == "l2":
            limit *= math.sqrt(self.input.numel) if self.input.shape_known else math.inf
        for e in self.eps:
            if e > limit:
                raise OptionError(
                    "--eps",
                    f"ε={e} exceeds the {self.norm} diameter {limit:g} of the input domain "
                    f"{list(self.input.domain)}",
                    "give ε in the units of the domain (e.g. 8/255 for images in [0,1])",
                )
        if list(self.eps) != sorted(self.eps):
            object.__setattr__(self, "eps", tuple(sorted(self.eps)))

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input.to_json(), "norm": self.norm, "eps": list(self.eps)}


def parse_eps_list(text: str | Sequence[float], option: str = "--eps") -> tuple[float, ...]:
    """Parse ``"0.01,2/255,0.1"`` into floats; fractions like ``2/255`` are allowed."""
    if not isinstance(text, str):
        return tuple(float(v) for v in text)
    out: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                out.append(float(num) / float(den))
            else:
                out.append(float(part))
        except (ValueError, ZeroDivisionError):
            raise OptionError(
                option, f"{part!r} is not a number", "use e.g. 0.03 or 8/255, comma-separated"
            ) from None
    if not out:
        raise OptionError(option, "no value given", "use e.g. 0.03 or 8/255, comma-separated")
    return tuple(out)

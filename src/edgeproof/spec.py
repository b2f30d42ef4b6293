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

import numpy as np

from edgeproof.errors import OptionError, SpecError, param

__all__ = [
    "DomainSource",
    "DomainViolation",
    "InputKind",
    "InputSpec",
    "Norm",
    "Normalization",
    "ThreatModel",
    "check_normalization",
    "parse_eps_list",
]

InputKind = Literal["image", "timeseries", "tabular"]
Norm = Literal["linf", "l2"]

Normalization = tuple[tuple[float, ...], tuple[float, ...]]
#: where the value domain came from: given by the user, the model's metadata, the data file,
#: inferred from the data's own min/max, or the [0, 1] default
DomainSource = Literal["declared", "metadata", "data", "inferred", "default"]
_KINDS: tuple[str, ...] = ("image", "timeseries", "tabular")


def check_normalization(normalization: Normalization, shape: tuple[int, ...] = ()) -> Normalization:
    """Validate a per-channel ``(mean, std)``: equal lengths, finite values, every std > 0, and
    one value per channel (``shape[0]``) or one for all channels when the shape is known."""
    mean, std = normalization
    if len(mean) != len(std) or not mean:
        raise SpecError(
            f"{param('mean')} has {len(mean)} values but {param('std')} has {len(std)}; give "
            "one mean and one std per channel (or one of each for every channel)"
        )
    if not all(math.isfinite(v) for v in (*mean, *std)) or any(s <= 0 for s in std):
        raise SpecError(
            f"{param('std')} {list(std)} / {param('mean')} {list(mean)}: every value must be "
            "finite and every std > 0 (e.g. 0.229,0.224,0.225)"
        )
    if shape and len(mean) not in (1, shape[0]):
        raise SpecError(
            f"{param('mean')}/{param('std')} give {len(mean)} values but the input has "
            f"{shape[0]} channels (shape {list(shape)}); give {shape[0]} values, or one"
        )
    return normalization


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
        domain_source: where ``domain`` came from (:data:`DomainSource`); findings that depend on
            the range say whether it was declared or inferred.
        outside_normalization: ``(mean, std)`` per channel (one value each for every channel
            alike) that the model expects to have been applied *before* it — the torchvision
            convention of most published checkpoints. edgeproof then feeds the model
            ``(x − mean) / std`` itself (:meth:`edgeproof.models.loaded.LoadedModel.
            for_spec`), so data, domain, ε, attacks, corruptions and certificates all stay in
            raw input units.
        num_classes: number of output classes, if known.
        class_names: optional class labels (length ``num_classes``).
    """

    shape: tuple[int, ...]
    domain: tuple[float, float] = (0.0, 1.0)
    kind: InputKind = "image"
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    outside_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    domain_source: DomainSource = "declared"

    def __post_init__(self) -> None:
        if any(int(s) <= 0 for s in self.shape):
            raise SpecError(f"input shape {self.shape!r} is invalid: every dimension must be >= 1")
        lo, hi = self.domain
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise SpecError(
                f"input domain {self.domain!r} is invalid: need finite lo < hi "
                f"(e.g. {param('domain')} 0,1)"
            )
        if self.kind not in _KINDS:
            raise SpecError(f"input kind {self.kind!r} is unknown: use one of {', '.join(_KINDS)}")
        names, k = self.class_names, self.num_classes
        if names is not None and k is not None and len(names) != k:
            raise SpecError(f"{len(names)} class names given for {k} classes")
        if self.outside_normalization is not None:
            check_normalization(self.outside_normalization, self.shape)

    def domain_violation(self, x: np.ndarray) -> DomainViolation | None:
        """How ``x`` leaves the value domain (``None`` when every value lies inside it)."""
        if x.size == 0:
            return None
        lo, hi = self.domain
        tol = 1e-6 * max(1.0, hi - lo)
        outside = int(np.count_nonzero((x < lo - tol) | (x > hi + tol)))
        if not outside:
            return None
        return DomainViolation(self, float(np.min(x)), float(np.max(x)), outside / x.size)

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
            "domain_source": self.domain_source,
            "outside_normalization": (
                None
                if self.outside_normalization is None
                else {
                    "mean": list(self.outside_normalization[0]),
                    "std": list(self.outside_normalization[1]),
                }
            ),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> InputSpec:
        norm = obj.get("normalization")
        outside = obj.get("outside_normalization")
        names = obj.get("class_names")
        return cls(
            shape=tuple(int(s) for s in obj["shape"]),
            domain=(float(obj["domain"][0]), float(obj["domain"][1])),
            kind=obj.get("kind", "image"),
            normalization=(
                None
                if norm is None
                else (tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"]))
            ),
            num_classes=obj.get("num_classes"),
            class_names=None if names is None else tuple(str(n) for n in names),
            domain_source=obj.get("domain_source", "declared"),
            outside_normalization=(
                None
                if outside is None
                else (
                    tuple(float(v) for v in outside["mean"]),
                    tuple(float(v) for v in outside["std"]),
                )
            ),
        )


@dataclass(frozen=True)
class DomainViolation:
    """Data whose values leave the input domain, and advice that fits where the domain came
    from: values outside the range a model was trained on mean the data must be rescaled, not the
    domain redeclared (digits in 0..16 fed to a model trained on 0..1)."""

    spec: InputSpec
    data_min: float
    data_max: float
    fraction: float

    def message(self, data_name: str) -> str:
        lo, hi = self.spec.domain
        head = (
            f"{data_name}: {self.fraction:.1%} of the input values lie outside the input domain "
            f"[{lo:g}, {hi:g}] ({_DOMAIN_FROM[self.spec.domain_source]}); the data span "
            f"[{self.data_min:g}, {self.data_max:g}]"
        )
        width = self.data_max - self.data_min
        scale = (hi - lo) / width if width > 0 else 1.0
        rescale = f"rescale the data into [{lo:g}, {hi:g}]"
        if self.data_min >= 0 and lo == 0 and scale < 1:
            rescale += f" (e.g. multiply by {scale:.4g})"
        if self.spec.domain_source in ("metadata", "default"):
            return (
                f"{head}; {rescale}, the range the model expects, or, if the model was really "
                f"trained on this range, declare it with {param('domain')} "
                f"{self.data_min:g},{self.data_max:g}"
            )
        return (
            f"{head}; {rescale}, or declare the domain the model was trained on with "
            f"{param('domain')}"
        )


_DOMAIN_FROM: dict[str, str] = {
    "declared": "as declared",
    "metadata": "from the model's metadata",
    "data": "as the data file declares it",
    "inferred": "inferred from the data",
    "default": "the default, nothing declared one",
}


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
                "norm", f"unknown norm {self.norm!r}", f"use one of {', '.join(_NORMS)}"
            )
        if not self.eps:
            raise OptionError("eps", "no budget given", f"pass e.g. {param('eps')} 0.01,0.03")
        for e in self.eps:
            if not math.isfinite(e) or e <= 0:
                raise OptionError("eps", f"ε={e} must be a positive finite number")
        # The largest perturbation that can change anything inside the box [lo, hi]^d.
        limit = self.input.range
        if self.norm == "l2":
            limit *= math.sqrt(self.input.numel) if self.input.shape_known else math.inf
        for e in self.eps:
            if e > limit:
                raise OptionError(
                    "eps",
                    f"ε={e} exceeds the {self.norm} diameter {limit:g} of the input domain "
                    f"{list(self.input.domain)}",
                    "give ε in the units of the domain (e.g. 8/255 for images in [0,1])",
                )
        if list(self.eps) != sorted(self.eps):
            object.__setattr__(self, "eps", tuple(sorted(self.eps)))

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input.to_json(), "norm": self.norm, "eps": list(self.eps)}


def parse_eps_list(text: str | Sequence[float], option: str = "eps") -> tuple[float, ...]:
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

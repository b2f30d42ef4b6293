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

from edgeproof import limits
from edgeproof.errors import OptionError, SpecError, param
from edgeproof.serialize import JsonFields

__all__ = [
    "DomainSource",
    "DomainViolation",
    "InputKind",
    "InputSpec",
    "Norm",
    "Normalization",
    "ThreatModel",
    "check_feature_bounds",
    "check_normalization",
    "inferred_feature_bounds",
    "parse_eps_list",
]

InputKind = Literal["image", "timeseries", "tabular"]
Norm = Literal["linf", "l2"]

Normalization = tuple[tuple[float, ...], tuple[float, ...]]
#: where the value domain came from: given by the user, the model's metadata, the data file,
#: inferred from the data's own min/max, or the [0, 1] default
DomainSource = Literal["declared", "metadata", "data", "inferred", "default"]
_KINDS: tuple[str, ...] = ("image", "timeseries", "tabular")


def inferred_feature_bounds(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature (axis 1: features or channels) min and max of the data ``(N, F, …)``; a
    constant feature gets ``hi = lo + 1``."""
    axes = (0, *range(2, x.ndim))
    lo = np.min(x, axis=axes).astype(np.float64)
    hi = np.max(x, axis=axes).astype(np.float64)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)


def check_feature_bounds(
    bounds: tuple[tuple[float, ...], tuple[float, ...]], shape: tuple[int, ...] = ()
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-feature ``(lo, hi)``: one pair per feature/channel (``shape[0]``), finite,
    every ``lo < hi``."""
    lo, hi = bounds
    if len(lo) != len(hi) or not lo:
        raise SpecError(
            f"{param('feature_bounds')}: {len(lo)} lower and {len(hi)} upper bounds; give one "
            "lo,hi row per feature"
        )
    bad = [i for i, (a, b) in enumerate(zip(lo, hi)) if not (math.isfinite(a) and math.isfinite(b))]
    bad += [i for i, (a, b) in enumerate(zip(lo, hi)) if math.isfinite(a) and a >= b]
    if bad:
        i = bad[0]
        raise SpecError(
            f"{param('feature_bounds')}: feature {i} has lo {lo[i]:g} and hi {hi[i]:g}; every "
            "row needs finite lo < hi"
        )
    if shape and len(lo) != shape[0]:
        raise SpecError(
            f"{param('feature_bounds')} gives {len(lo)} features but the input has {shape[0]} "
            f"(shape {list(shape)}); give one lo,hi row per feature (or channel)"
        )
    return bounds


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


def _mean_std(norm: tuple[Sequence[float], Sequence[float]]) -> dict[str, list[float]]:
    return {"mean": list(norm[0]), "std": list(norm[1])}


def _lo_hi(bounds: tuple[Sequence[float], Sequence[float]]) -> dict[str, list[float]]:
    return {"lo": list(bounds[0]), "hi": list(bounds[1])}


@dataclass(frozen=True)
class InputSpec(JsonFields):
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
        feature_bounds: ``(lo, hi)`` per feature (tabular) or channel (time series, images), in
            raw units, when the features live on different scales (a wine's alcohol 11–15 % and
            its proline 278–1680). The audit then runs in units of each feature's range: inputs
            are ``u = (x − lo) / (hi − lo)``, ``domain`` is ``[0, 1]``, and ε is a fraction of
            each feature's range (:meth:`input_affine` maps ``u`` back for the model).
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
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, metadata={"as": _mean_std}
    )
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    outside_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, metadata={"as": _mean_std}
    )
    domain_source: DomainSource = "declared"
    feature_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, metadata={"as": _lo_hi}
    )

    json_order = (..., "domain_source", "feature_bounds", "outside_normalization")

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
        if self.feature_bounds is not None:
            check_feature_bounds(self.feature_bounds, self.shape)
            if self.domain != (0.0, 1.0):
                raise SpecError(
                    "with per-feature bounds the audit runs in fractions of each feature's "
                    f"range, so the domain must be (0, 1), not {self.domain}"
                )

    def input_affine(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(scale, shift)`` per channel such that the model is fed ``x·scale + shift`` for an
        audit input ``x``: the per-feature range (``x_raw = lo + u·(hi − lo)``) composed with
        the outside normalisation (``(x_raw − mean) / std``); ``None`` when neither is set."""
        if self.feature_bounds is None and self.outside_normalization is None:
            return None
        n = max(
            len(self.feature_bounds[0]) if self.feature_bounds else 1,
            len(self.outside_normalization[0]) if self.outside_normalization else 1,
        )

        def per(values: tuple[float, ...]) -> list[float]:
            return list(values) * n if len(values) == 1 else list(values)

        scale, shift = [1.0] * n, [0.0] * n
        if self.feature_bounds is not None:
            lo, hi = per(self.feature_bounds[0]), per(self.feature_bounds[1])
            scale = [h - lo_ for lo_, h in zip(lo, hi)]
            shift = lo
        if self.outside_normalization is not None:
            mean, std = per(self.outside_normalization[0]), per(self.outside_normalization[1])
            scale = [a / s for a, s in zip(scale, std)]
            shift = [(b - m) / s for b, m, s in zip(shift, mean, std)]
        return tuple(scale), tuple(shift)

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
        normalization = _normalization_of(obj.get("normalization"), "normalization")
        outside = _normalization_of(obj.get("outside_normalization"), "outside_normalization")
        fb = obj.get("feature_bounds")
        bounds = (
            None
            if fb is None
            else _normalization_of(
                {"mean": fb["lo"], "std": fb["hi"]} if isinstance(fb, dict) else fb,
                "feature_bounds",
            )
        )
        source = obj.get("domain_source", "declared")
        if source not in ("declared", "metadata", "data", "inferred", "default"):
            raise ValueError(f"'domain_source' {source!r} is not a known source")
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
            domain_source=source,
            outside_normalization=outside,
            feature_bounds=bounds,
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _normalization_of(obj: Any, key: str) -> Normalization | None:
    """A ``{"mean": [...], "std": [...]}`` JSON object as ``(mean, std)`` (strictly typed)."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise TypeError(f"'{key}' must be {{mean, std}}, got {obj!r}")
    mean, std = obj["mean"], obj["std"]
    for part, vals in (("mean", mean), ("std", std)):
        if not isinstance(vals, list) or not vals or not all(_is_num(v) for v in vals):
            raise TypeError(f"'{key}.{part}' must be a list of numbers")
    if len(mean) != len(std):
        raise ValueError(f"'{key}' mean and std differ in length")
    return (tuple(float(v) for v in mean), tuple(float(v) for v in std))


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
        if self.spec.feature_bounds is not None:
            return (
                f"{data_name}: {self.fraction:.1%} of the input values lie outside their "
                f"feature's bounds ({_DOMAIN_FROM[self.spec.domain_source]}); rescale the data "
                f"to the range the model expects, or widen {param('feature_bounds')}"
            )
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
class ThreatModel(JsonFields):
    """The attacker's budget on top of an :class:`InputSpec`.

    Attributes:
        input: the input specification (shape, domain, kind).
        norm: ``linf`` or ``l2``; ε is in the domain's units.
        eps: the perturbation budgets to evaluate, ascending.
    """

    input: InputSpec
    norm: Norm = "linf"
    eps: tuple[float, ...] = field(default=(0.01, 0.03, 0.1))

    json_order = (..., "eps_units")

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

    @property
    def eps_units(self) -> str:
        """What one unit of ε is: the input's own units, or a fraction of each feature's range
        (with per-feature bounds, :attr:`InputSpec.feature_bounds`)."""
        if self.input.feature_bounds is not None:
            return "fraction of each feature's range"
        return "input units"


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

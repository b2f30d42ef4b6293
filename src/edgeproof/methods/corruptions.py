"""Natural corruptions at five severities, for images, time series and tabular inputs.

Every corruption is a function ``fn(x, severity, rng, ctx) -> x'`` on a batch in the raw value
domain (severity 1..5), seeded through a ``numpy.random.Generator``; the output is clipped to the
domain. Corruptions are registered by name and input kind; :func:`register_corruption` adds one.

**Images** ``(N, C, H, W)``, after CIFAR-10-C (Hendrycks & Dietterich 2019,
``make_cifar_c.py``), with values expressed as fractions of the domain width ``R = hi − lo``:

* ``gaussian_noise``: ``x + N(0, (c·R)²)``, ``c = 0.04, 0.06, 0.08, 0.09, 0.10``;
* ``gaussian_blur``: Gaussian filter over H, W with σ = ``0.4, 0.6, 0.7, 0.8, 1.0`` pixels
  (not rescaled to the image size; on 8×8 digits σ = 1 px is strong), edges ``nearest``;
* ``brightness``: ``x + c·R``, ``c = 0.1, 0.2, 0.3, 0.4, 0.5`` (CIFAR-10-C adds c to the HSV
  value channel; here to every channel, which is the same for greyscale);
* ``contrast``: ``(x − m)·c + m`` with ``m`` the image mean over all pixels and channels,
  ``c = 0.75, 0.5, 0.4, 0.3, 0.15``.

**Time series** ``(N, C, T)``, after Um et al. 2017 (wearable-sensor augmentation), with ``s_c``
the per-channel standard deviation of the whole batch:

* ``jitter``: ``x + N(0, (c·s_c)²)``, ``c = 0.05, 0.1, 0.2, 0.3, 0.5``;
* ``scaling``: each channel of each record × ``N(1, c²)``, ``c = 0.05, 0.1, 0.2, 0.3, 0.5``;
* ``baseline_wander``: ``+ c·s_c·sin(2π f t/T + φ)`` per channel, ``f ~ U(0.5, 2)`` cycles
  per window, ``φ ~ U(0, 2π)``, ``c = 0.25, 0.5, 1, 1.5, 2``;
* ``channel_dropout``: ``round(c·C)`` (at least 1) randomly chosen channels per record set to
  that channel's batch mean (a flat, disconnected electrode), ``c = 0.1, 0.2, 0.3, 0.4, 0.5``.
  Not applicable with one channel.

**Tabular** ``(N, F)``: ``gaussian_noise`` as for images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from edgeproof.errors import OptionError

__all__ = [
    "SEVERITIES",
    "Corruption",
    "CorruptionContext",
    "corruptions_for",
    "get_corruption",
    "register_corruption",
    "registered_corruptions",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class CorruptionContext:
    """What a corruption may need besides the batch: the domain and batch statistics."""

    domain: tuple[float, float]

    @property
    def width(self) -> float:
        return self.domain[1] - self.domain[0]


CorruptionFn = Callable[[np.ndarray, int, np.random.Generator, CorruptionContext], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """A named corruption for some input kinds, with the parameter at each severity."""

    name: str
    kinds: tuple[str, ...]
    levels: tuple[float, ...]
    parameter: str
    fn: CorruptionFn
    min_channels: int = 1

    def apply(
        self, x: np.ndarray, severity: int, rng: np.random.Generator, ctx: CorruptionContext
    ) -> np.ndarray:
        """Corrupt batch ``x`` at ``severity`` (1..5) and clip to the domain (float32)."""
        if severity not in SEVERITIES:
            raise OptionError("severity", f"{severity} is not one of {list(SEVERITIES)}")
        out = self.fn(np.asarray(x, dtype=np.float64), severity, rng, ctx)
        return np.clip(out, ctx.domain[0], ctx.domain[1]).astype(np.float32)

    def level(self, severity: int) -> float:
        return self.levels[severity - 1]

    def applies_to(self, kind: str, shape: tuple[int, ...]) -> bool:
        return kind in self.kinds and (len(shape) < 2 or shape[0] >= self.min_channels)


_REGISTRY: dict[str, Corruption] = {}


def register_corruption(corruption: Corruption) -> None:
    """Register ``corruption`` under its name (a later one with the same name replaces it)."""
    _REGISTRY[corruption.name] = corruption


def get_corruption(name: str) -> Corruption:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OptionError(
            "corruptions", f"unknown corruption {name!r}", f"choose from {', '.join(_REGISTRY)}"
        ) from None


def registered_corruptions() -> list[Corruption]:
    """Every registered corruption, in registration order."""
    return list(_REGISTRY.values())


def corruptions_for(kind: str, shape: tuple[int, ...]) -> list[Corruption]:
    """The registered corruptions applicable to inputs of ``kind`` and sample ``shape``."""
    return [c for c in _REGISTRY.values() if c.applies_to(kind, shape)]


def _lv(levels: tuple[float, ...], s: int) -> float:
    return levels[s - 1]


_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)
_BRIGHT = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_JITTER = (0.05, 0.1, 0.2, 0.3, 0.5)
_SCALING = (0.05, 0.1, 0.2, 0.3, 0.5)
_WANDER = (0.25, 0.5, 1.0, 1.5, 2.0)
_DROPOUT = (0.1, 0.2, 0.3, 0.4, 0.5)


def _gaussian_noise(
    x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext
) -> np.ndarray:
    return x + rng.normal(0.0, _lv(_NOISE, s) * ctx.width, size=x.shape)


def _gaussian_blur(
    x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext
) -> np.ndarray:
    sigma = [0.0] * (x.ndim - 2) + [_lv(_BLUR, s)] * 2
    return np.asarray(ndimage.gaussian_filter(x, sigma=sigma, mode="nearest"))


def _brightness(
    x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext
) -> np.ndarray:
    return x + _lv(_BRIGHT, s) * ctx.width


def _contrast(
    x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext
) -> np.ndarray:
    axes = tuple(range(1, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    result: np.ndarray = (x - m) * _lv(_CONTRAST, s) + m
    return result


def _channel_std(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=(0, 2), keepdims=True)
    return np.where(sd > 0, sd, 1.0)


def _jitter(x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext) -> np.ndarray:
    return x + rng.normal(0.0, 1.0, size=x.shape) * (_lv(_JITTER, s) * _channel_std(x))


def _scaling(x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext) -> np.ndarray:
    factor = rng.normal(1.0, _lv(_SCALING, s), size=(x.shape[0], x.shape[1], 1))
    return x * factor


def _baseline_wander(
    x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext
) -> np.ndarray:
    n, c, t = x.shape
    f = rng.uniform(0.5, 2.0, size=(n, c, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, c, 1))
    time = np.arange(t, dtype=np.float64)[None, None, :] / t
    result: np.ndarray = x + _lv(_WANDER, s) * _channel_std(x) * np.sin(
        2 * np.pi * f * time + phase
    )
    return result


def _channel_dropout(
    x: np.ndarray, s: int, rng: np.random.Generator, ctx: CorruptionContext
) -> np.ndarray:
    n, c, _ = x.shape
    k = max(1, round(_lv(_DROPOUT, s) * c))
    mean = x.mean(axis=(0, 2), keepdims=True)
    ranks = rng.random((n, c)).argsort(axis=1).argsort(axis=1)
    dropped = (ranks < k)[:, :, None]  # k channels per record, chosen uniformly
    return np.where(dropped, mean, x)


for _c in (
    Corruption("gaussian_noise", ("image", "tabular"), _NOISE, "σ / domain width", _gaussian_noise),
    Corruption("gaussian_blur", ("image",), _BLUR, "σ (pixels)", _gaussian_blur),
    Corruption("brightness", ("image",), _BRIGHT, "shift / domain width", _brightness),
    Corruption("contrast", ("image",), _CONTRAST, "contrast factor", _contrast),
    Corruption("jitter", ("timeseries",), _JITTER, "σ / channel std", _jitter),
    Corruption("scaling", ("timeseries",), _SCALING, "σ of the gain", _scaling),
    Corruption(
        "baseline_wander", ("timeseries",), _WANDER, "amplitude / channel std", _baseline_wander
    ),
    Corruption(
        "channel_dropout",
        ("timeseries",),
        _DROPOUT,
        "fraction of channels",
        _channel_dropout,
        min_channels=2,
    ),
):
    register_corruption(_c)

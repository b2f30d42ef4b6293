"""Colours: the Okabe–Ito palette for series, colour ramps, readable text on a fill.

Okabe & Ito, "Color Universal Design" (2002/2008): eight colours distinguishable under the common
colour-vision deficiencies. Series take them in the order of :data:`PALETTE` (blue, orange, bluish
green, vermillion, reddish purple, sky blue, yellow — the low-contrast yellow last); after seven
series the dash pattern changes (:func:`series_dash`).

Ramps, linearly interpolated between their published anchor colours:

* ``blues`` — ColorBrewer ``Blues`` (9 classes; single hue, safe for every deficiency; light =
  low);
* ``viridis`` — perceptually uniform, dark = low;
* ``rdbu`` — ColorBrewer ``RdBu`` (11 classes, marked colour-blind safe by ColorBrewer): dark
  red at 0, the neutral ``#f7f7f7`` exactly at 0.5, dark blue at 1; ``rdbu_r`` is it reversed
  (blue low, red high). A diverging scale is centred on a value by making ``vmin``/``vmax``
  symmetric about it (``-m, m`` centres 0 on the neutral colour);
* ``gray`` — black at 0 to white at 1 (raw image intensities).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BLACK",
    "BLUE",
    "GREEN",
    "GREY",
    "LIGHT_GREY",
    "ORANGE",
    "PALETTE",
    "PURPLE",
    "RAMPS",
    "SKY",
    "VERMILLION",
    "YELLOW",
    "ramp",
    "ramp_rgb",
    "series_color",
    "series_dash",
    "text_color_on",
]

BLUE = "#0072B2"
ORANGE = "#E69F00"
GREEN = "#009E73"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
SKY = "#56B4E9"
YELLOW = "#F0E442"
BLACK = "#000000"
GREY = "#7F7F7F"
LIGHT_GREY = "#BBBBBB"
PALETTE: tuple[str, ...] = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW)

_DASHES: tuple[str | None, ...] = (None, "6 3", "2 2", "8 3 2 3")

_RAMPS: dict[str, tuple[str, ...]] = {
    "blues": (
        "#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6",
        "#4292c6", "#2171b5", "#08519c", "#08306b",
    ),
    "viridis": (
        "#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c",
        "#28ae80", "#5ec962", "#addc30", "#fde725",
    ),
    "rdbu": (
        "#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7",
        "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061",
    ),
    "gray": ("#000000", "#ffffff"),
}  # fmt: skip
_RAMPS["rdbu_r"] = _RAMPS["rdbu"][::-1]
RAMPS: tuple[str, ...] = tuple(_RAMPS)


def series_color(i: int) -> str:
    """The colour of the ``i``-th series."""
    return PALETTE[i % len(PALETTE)]


def series_dash(i: int) -> str | None:
    """The dash pattern of the ``i``-th series (solid for the first seven)."""
    return _DASHES[(i // len(PALETTE)) % len(_DASHES)]


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def ramp_rgb(name: str, t: float) -> tuple[int, int, int]:
    """The colour at ``t`` ∈ [0, 1] (clipped; NaN → 0) of ramp ``name`` as 8-bit RGB."""
    if name not in _RAMPS:
        raise ValueError(f"unknown colour ramp {name!r}; use one of {', '.join(_RAMPS)}")
    anchors: Sequence[str] = _RAMPS[name]
    t = 0.0 if t != t else min(1.0, max(0.0, t))
    pos = t * (len(anchors) - 1)
    i = min(int(pos), len(anchors) - 2)
    f = pos - i
    a, b = _rgb(anchors[i]), _rgb(anchors[i + 1])
    r, g, bl = (round(a[k] + (b[k] - a[k]) * f) for k in range(3))
    return r, g, bl


def ramp(name: str, t: float) -> str:
    """The colour at ``t`` ∈ [0, 1] of ramp ``name`` (one of :data:`RAMPS`), as hex."""
    r, g, b = ramp_rgb(name, t)
    return f"#{r:02x}{g:02x}{b:02x}"


def _luminance(hex_color: str) -> float:
    def lin(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = _rgb(hex_color)
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def text_color_on(fill: str) -> str:
    """Black or white, whichever contrasts more with ``fill`` (WCAG relative luminance)."""
    lum = _luminance(fill)
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"

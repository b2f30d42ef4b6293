"""Text metrics: how wide a string is drawn, the box it covers, and the boxes read back from SVG.

There is no font renderer here: widths are the advance widths of **DejaVu Sans** (Book), read once
from its TrueType tables (units per em 2048; ascent 1901, descent 483) and stored below. The
charts ask for ``'DejaVu Sans', 'Bitstream Vera Sans', Verdana, Geneva, sans-serif``; Vera and
Verdana share DejaVu's wide metrics, and the generic fall-backs are narrower, so an estimate is
an upper bound of the drawn width (kerning only narrows it). Characters not in the table count
as 0.65 em.

A box spans ``[baseline - 0.928 em, baseline + 0.236 em]`` vertically (the font's ascent and
descent: what a browser's ``getBoundingClientRect`` reports for SVG text) and the advance width
horizontally, placed by ``text-anchor``; a ``rotate(±90 x y)`` transform turns it about its
anchor.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ASCENT",
    "DESCENT",
    "FONT_FAMILY",
    "Anchor",
    "TextBox",
    "baseline_for_centre",
    "svg_text_boxes",
    "text_box",
    "text_height",
    "text_width",
    "truncate",
]

Anchor = Literal["start", "middle", "end"]

FONT_FAMILY = "'DejaVu Sans', 'Bitstream Vera Sans', Verdana, Geneva, sans-serif"
ASCENT = 1901 / 2048
DESCENT = 483 / 2048
_UNITS = 2048.0
_DEFAULT = 0.65

# advance widths of DejaVu Sans Book for U+0020..U+007E, in font units (2048 per em)
_ASCII = (
    651, 821, 942, 1716, 1303, 1946, 1597, 563, 799, 799, 1024, 1716, 651, 739, 651, 690,
    1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 690, 690, 1716, 1716, 1716, 1087,
    2048, 1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 604, 604, 1343, 1141, 1767, 1532, 1612,
    1235, 1612, 1423, 1300, 1251, 1499, 1401, 2025, 1403, 1251, 1403, 799, 690, 799, 1716, 1024,
    1024, 1255, 1300, 1126, 1300, 1260, 721, 1300, 1298, 569, 569, 1186, 569, 1995, 1298, 1253,
    1300, 1300, 842, 1067, 803, 1298, 1212, 1675, 1212, 1212, 1075, 1303, 690, 1303, 1716,
)  # fmt: skip
_EXTRA = {
    "α": 1350, "β": 1307, "γ": 1212, "δ": 1253, "ε": 1107, "η": 1298, "θ": 1253, "κ": 1207,
    "λ": 1212, "μ": 1303, "ν": 1144, "π": 1233, "ρ": 1300, "σ": 1298, "τ": 1233, "φ": 1351,
    "χ": 1183, "ψ": 1351, "ω": 1715, "Δ": 1401, "Σ": 1294, "Ω": 1565, "±": 1716, "×": 1716,
    "÷": 1716, "·": 651, "–": 1024, "—": 2048, "…": 2048, "≤": 1716, "≥": 1716, "≈": 1716,
    "°": 1024, "⁰": 821, "¹": 821, "²": 821, "³": 821, "⁴": 821, "⁵": 821, "⁶": 821, "⁷": 821,
    "⁸": 821, "⁹": 821, "⁻": 1081, "⁺": 1081, "√": 1305, "∞": 1706, "→": 1716, "←": 1716,
    "′": 465, "∈": 1784, "≠": 1716, "‖": 1024,
}  # fmt: skip
_EM: dict[str, float] = {chr(32 + i): w / _UNITS for i, w in enumerate(_ASCII)}
_EM.update({k: v / _UNITS for k, v in _EXTRA.items()})


def text_width(text: str, size: float) -> float:
    """Estimated drawn width of ``text`` at font size ``size`` (px)."""
    return size * sum(_EM.get(ch, _DEFAULT) for ch in text)


def text_height(size: float) -> float:
    """Height of a line's box (ascent + descent) at font size ``size``."""
    return (ASCENT + DESCENT) * size


def baseline_for_centre(centre_y: float, size: float) -> float:
    """The baseline that centres a line's box on ``centre_y``."""
    return centre_y + (ASCENT - DESCENT) / 2 * size


def truncate(text: str, size: float, max_width: float, where: str = "middle") -> str:
    """``text`` shortened with an ellipsis to fit ``max_width`` (unchanged when it fits).

    ``where="middle"`` keeps the head and the (longer) tail — module paths differ at both ends;
    ``"end"`` keeps the head.
    """
    if text_width(text, size) <= max_width:
        return text
    ell = "…"
    if text_width(ell, size) > max_width:
        return ""
    if where == "end":
        keep = len(text)
        while keep > 0 and text_width(text[:keep] + ell, size) > max_width:
            keep -= 1
        return text[:keep] + ell
    head, tail = 0, 0
    best = ell
    # grow the tail twice as fast as the head, as long as it fits
    while head + tail < len(text):
        if tail <= 2 * head:
            cand_t = tail + 1
            cand = text[:head] + ell + text[len(text) - cand_t :]
            if text_width(cand, size) > max_width:
                break
            tail = cand_t
        else:
            cand_h = head + 1
            cand = text[:cand_h] + ell + text[len(text) - tail :] if tail else text[:cand_h] + ell
            if text_width(cand, size) > max_width:
                break
            head = cand_h
        best = cand
    return best


@dataclass(frozen=True)
class TextBox:
    """The box a piece of text covers, in the SVG's pixel coordinates (y grows downwards)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    role: str = ""

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def overlaps(self, other: TextBox, tolerance: float = 0.5) -> bool:
        """True when the boxes share more than ``tolerance`` px in both directions."""
        return (
            min(self.x1, other.x1) - max(self.x0, other.x0) > tolerance
            and min(self.y1, other.y1) - max(self.y0, other.y0) > tolerance
        )


def text_box(
    text: str,
    x: float,
    y: float,
    size: float,
    anchor: Anchor = "start",
    rotate: int = 0,
    role: str = "",
) -> TextBox:
    """The box of ``text`` drawn with its baseline anchor at ``(x, y)``; ``rotate`` is 0, -90
    (reads upwards) or 90 degrees about the anchor."""
    w = text_width(text, size)
    x0 = x if anchor == "start" else x - w / 2 if anchor == "middle" else x - w
    x1, top, bottom = x0 + w, y - ASCENT * size, y + DESCENT * size
    if rotate == 0:
        return TextBox(text, x0, top, x1, bottom, role)
    if rotate == -90:  # (px, py) -> (x + (py - y), y - (px - x))
        return TextBox(text, x + top - y, y - (x1 - x), x + bottom - y, y - (x0 - x), role)
    if rotate == 90:  # (px, py) -> (x - (py - y), y + (px - x))
        return TextBox(text, x - (bottom - y), y + x0 - x, x - (top - y), y + x1 - x, role)
    raise ValueError(f"rotate must be 0, -90 or 90, got {rotate}")


_SVG_NS = "{http://www.w3.org/2000/svg}"
_ROTATE = re.compile(r"rotate\(\s*(-?[\d.]+)[\s,]+(-?[\d.]+)[\s,]+(-?[\d.]+)\s*\)")
_TRANSLATE = re.compile(r"translate\(\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*\)")


def svg_text_boxes(svg: str) -> list[TextBox]:
    """The estimated box of every ``<text>`` element of an SVG this package wrote.

    Reads ``x``, ``y``, ``font-size``, ``text-anchor``, ``class`` (the box's role) and a
    ``rotate(a x y)`` transform from each element, ``translate(dx dy)`` from its enclosing groups,
    and the font size from the nearest ancestor that sets one. The text of a ``<title>`` child
    (a tooltip) is not drawn and not measured.
    """
    root = ET.fromstring(svg)
    out: list[TextBox] = []

    def walk(el: ET.Element, dx: float, dy: float, size: float) -> None:
        if "font-size" in el.attrib:
            size = float(el.attrib["font-size"])
        tr = el.attrib.get("transform", "")
        m = _TRANSLATE.search(tr)
        if m and el.tag != _SVG_NS + "text":
            dx, dy = dx + float(m.group(1)), dy + float(m.group(2))
        if el.tag == _SVG_NS + "text":
            rot = _ROTATE.search(tr)
            angle = round(float(rot.group(1))) if rot else 0
            content = el.text or ""
            anchor = el.attrib.get("text-anchor", "start")
            if anchor not in ("start", "middle", "end"):
                anchor = "start"
            b = text_box(
                content,
                float(el.attrib.get("x", 0)) + dx,
                float(el.attrib.get("y", 0)) + dy,
                size,
                anchor,  # type: ignore[arg-type]
                angle,
                el.attrib.get("class", ""),
            )
            out.append(b)
            return
        for child in el:
            walk(child, dx, dy, size)

    walk(root, 0.0, 0.0, float(root.attrib.get("font-size", 12)))
    return out

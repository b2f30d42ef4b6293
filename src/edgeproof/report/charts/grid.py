"""Small multiples of images: a grid of equal cells with square pixels, a caption above each
image, optional column headers and row labels, and one colour bar per colour scale.

::

    g = ImageGrid(cols=5)
    g.scale("attr", color_ramp="rdbu_r", vmin=-m, vmax=m, colorbar="mean attribution")
    for name, tile in zip(names, tiles):
        g.add(tile, scale="attr", caption=name)
    svg = g.svg()

Layout: every cell is ``cell`` px square; an image fills it along its longer side (pixels stay
square) and is centred. Columns are as wide as the widest caption or header needs (up to what
``max_width`` leaves), else at least ``cell + gap``; longer captions are shortened with the full
text as a tooltip. Rows are one caption line (when any image has a caption) plus ``cell`` plus
``gap``. The colour bars stand right of the grid, one per scale that names one, as tall as the
grid's images. Images of at most 256 pixels are SVG rectangles, larger ones one PNG each
(:func:`~.cells.raster_svg`); NaN pixels are left white. Every image has a thin grey frame, so a
map that is near zero at its edges still shows where it ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.report.charts.axes import INK, PAD, TICK_SIZE, TITLE_SIZE
from edgeproof.report.charts.cells import colorbar_svg, colorbar_ticks, colorbar_width, raster_svg
from edgeproof.report.charts.chart import wrap_svg
from edgeproof.report.charts.colors import RAMPS
from edgeproof.report.charts.geometry import Rect
from edgeproof.report.charts.marks import tooltip
from edgeproof.report.charts.svg import el, fmt, text_el
from edgeproof.report.charts.text import (
    ASCENT,
    TextBox,
    baseline_for_centre,
    svg_text_boxes,
    text_height,
    text_width,
    truncate,
)

__all__ = ["ImageGrid"]

_FRAME = "#c8c8c8"
_RECTS_MAX = 256  # pixels per image drawn as rectangles; larger images are PNGs


@dataclass(frozen=True)
class _Scale:
    ramp: str
    vmin: float
    vmax: float
    colorbar: str | None


@dataclass(frozen=True)
class _Tile:
    values: np.ndarray
    scale: str | None
    caption: str
    tooltip: str


class ImageGrid:
    """Images in rows of ``cols``, each in a ``cell`` × ``cell`` px square.

    Add colour scales with :meth:`scale`, then images in reading order with :meth:`add` (a 2-D
    array on a named scale, or ``(H, W, 3)`` RGB in [0, 1]); :meth:`labels` names the rows
    (left of each row) and the columns (above the first row).
    """

    def __init__(
        self,
        cols: int,
        *,
        cell: float = 80.0,
        gap: float = 10.0,
        title: str = "",
        max_width: float = 1000.0,
    ) -> None:
        if cols < 1:
            raise ValueError(f"an image grid needs at least one column, got {cols}")
        if cell < 16:
            raise ValueError(f"cells must be at least 16 px, got {cell}")
        self.cols = int(cols)
        self.cell = float(cell)
        self.gap = float(gap)
        self.title = title
        self.max_width = float(max_width)
        self.scales: dict[str, _Scale] = {}
        self.tiles: list[_Tile] = []
        self.row_labels: tuple[str, ...] = ()
        self.col_labels: tuple[str, ...] = ()

    def scale(
        self,
        name: str,
        *,
        color_ramp: str = "viridis",
        vmin: float = 0.0,
        vmax: float = 1.0,
        colorbar: str | None = None,
    ) -> ImageGrid:
        """A colour scale images can share; ``colorbar`` labels its colour bar (none when
        ``None``)."""
        if color_ramp not in RAMPS:
            raise ValueError(f"unknown colour ramp {color_ramp!r}; use one of {', '.join(RAMPS)}")
        if not (math.isfinite(vmin) and math.isfinite(vmax) and vmax > vmin):
            raise ValueError(f"scale {name!r} needs finite vmin < vmax, got {vmin}, {vmax}")
        self.scales[name] = _Scale(color_ramp, float(vmin), float(vmax), colorbar)
        return self

    def add(
        self,
        values: np.ndarray,
        *,
        scale: str | None = None,
        caption: str = "",
        tooltip: str = "",
    ) -> ImageGrid:
        """The next image: ``(H, W)`` values on ``scale``, or ``(H, W, 3)`` RGB in [0, 1]."""
        v = np.asarray(values, dtype=float)
        rgb = v.ndim == 3 and v.shape[2] == 3
        if not (v.ndim == 2 or rgb) or v.size == 0:
            raise ValueError(f"an image is a non-empty (H, W) or (H, W, 3) array, got {v.shape}")
        if not rgb and scale not in self.scales:
            raise ValueError(f"a 2-D image needs a scale added first, got {scale!r}")
        self.tiles.append(_Tile(v, None if rgb else scale, caption, tooltip))
        return self

    def labels(self, *, rows: Sequence[str] = (), cols: Sequence[str] = ()) -> ImageGrid:
        """Names left of each row and above each column."""
        self.row_labels = tuple(rows)
        self.col_labels = tuple(cols)
        return self

    # ------------------------------------------------------------ layout

    def _bars(self) -> list[str]:
        """The scales that draw a colour bar, in the order their images first use them."""
        used: list[str] = []
        for t in self.tiles:
            if t.scale is not None and t.scale not in used and self.scales[t.scale].colorbar:
                used.append(t.scale)
        return used

    def svg(self) -> str:
        """The grid as a self-contained SVG document."""
        if not self.tiles:
            raise ValueError("an image grid needs at least one image")
        n = len(self.tiles)
        ncols = min(self.cols, n)
        nrows = math.ceil(n / ncols)
        th = text_height(TICK_SIZE)
        cap_h = th + 3 if any(t.caption for t in self.tiles) else 0.0
        head_h = th + 4 if any(self.col_labels) else 0.0
        top = PAD + (text_height(TITLE_SIZE) + 6 if self.title else 0.0) + head_h
        rows = list(self.row_labels[:nrows])
        row_w = 0.3 * self.max_width
        rows = [truncate(s, TICK_SIZE, row_w) for s in rows]
        left = PAD + (max(text_width(s, TICK_SIZE) for s in rows) + 8 if any(rows) else 0.0)
        img_y0 = top + cap_h
        img_h = (nrows - 1) * (cap_h + self.cell + self.gap) + self.cell
        bars = [(name, colorbar_ticks(s.vmin, s.vmax, img_h)) for name in self._bars()
                for s in (self.scales[name],)]  # fmt: skip
        side = sum(colorbar_width(t) for _, t in bars)
        texts = [t.caption for t in self.tiles] + list(self.col_labels[:ncols])
        want = max([text_width(s, TICK_SIZE) + 8 for s in texts], default=0.0)
        room = (self.max_width - left - side - PAD) / ncols
        pitch = max(self.cell + self.gap, min(want, room))
        cell = min(self.cell, max(16.0, pitch - self.gap))
        grid_x1 = left + ncols * pitch
        out: list[str] = []
        if self.title:
            out.append(
                text_el(truncate(self.title, TITLE_SIZE, grid_x1 + side - PAD, "end"), x=PAD,
                        y=PAD + ASCENT * TITLE_SIZE, font_size=fmt(TITLE_SIZE), fill=INK,
                        class_="title")
            )  # fmt: skip
        for j, name in enumerate(self.col_labels[:ncols]):
            short = truncate(name, TICK_SIZE, pitch - 4)
            out.append(
                text_el(short, name if short != name else None, x=left + (j + 0.5) * pitch,
                        y=top - head_h + ASCENT * TICK_SIZE, text_anchor="middle", fill=INK,
                        class_="column-label")
            )  # fmt: skip
        for k, tile in enumerate(self.tiles):
            r, c = divmod(k, ncols)
            cx = left + (c + 0.5) * pitch
            y0 = top + r * (cap_h + self.cell + self.gap)
            if tile.caption:
                short = truncate(tile.caption, TICK_SIZE, pitch - 4)
                out.append(
                    text_el(short, tile.caption if short != tile.caption else None, x=cx,
                            y=y0 + ASCENT * TICK_SIZE, text_anchor="middle", fill=INK,
                            class_="image-caption")
                )  # fmt: skip
            out.append(self._tile_svg(tile, cx, y0 + cap_h + (self.cell - cell) / 2, cell))
        for r, name in enumerate(rows):
            cy = top + r * (cap_h + self.cell + self.gap) + cap_h + self.cell / 2
            full = self.row_labels[r]
            out.append(
                text_el(name, full if name != full else None, x=left - 8,
                        y=baseline_for_centre(cy, TICK_SIZE), text_anchor="end", fill=INK,
                        class_="row-label")
            )  # fmt: skip
        x = grid_x1
        for name, ticks in bars:
            s = self.scales[name]
            cb = Rect(x + 16, img_y0, x + 30, img_y0 + img_h)
            out.append(colorbar_svg(cb, ticks, s.ramp, s.vmin, s.vmax, s.colorbar))
            x += colorbar_width(ticks)
        width = x + PAD
        height = img_y0 + img_h + PAD
        label = self.title or next((t.caption for t in self.tiles if t.caption), "images")
        return wrap_svg("".join(out), width, height, label)

    def _tile_svg(self, tile: _Tile, cx: float, y0: float, cell: float) -> str:
        v = tile.values
        h, w = v.shape[:2]
        px = cell / max(h, w)
        r = Rect(cx - w * px / 2, y0 + (cell - h * px) / 2, cx + w * px / 2,
                 y0 + (cell + h * px) / 2)  # fmt: skip
        if tile.scale is None:
            norm, ramp_name = v, "gray"
        else:
            s = self.scales[tile.scale]
            norm, ramp_name = (v - s.vmin) / (s.vmax - s.vmin), s.ramp
        mode: Literal["rects", "png"] = "rects" if h * w <= _RECTS_MAX else "png"
        body = raster_svg(norm, ramp_name, r, mode)
        body += el("rect", x=r.x0, y=r.y0, width=r.width, height=r.height, fill="none",
                   stroke=_FRAME, stroke_width="0.8")  # fmt: skip
        tip = tooltip(tile.tooltip or tile.caption or None)
        return el("g", (tip or "") + body)

    def text_boxes(self) -> list[TextBox]:
        """The estimated box of every text element of :meth:`svg`."""
        return svg_text_boxes(self.svg())

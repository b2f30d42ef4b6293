"""A small SVG chart writer for the report: no matplotlib, milliseconds per chart.

The charts the report needs are few and simple, so edgeproof draws them itself: full control of
where text goes (nothing overlaps; :meth:`Chart.text_boxes` proves it), plain-text tick labels,
colour-blind-safe colours (Okabe–Ito), 11–13 px text, and deterministic, self-contained SVG (no
script, no id, no external reference; raster images only as ``data:image/png`` URIs).

::

    from edgeproof.report.charts import Axis, Chart

    c = Chart(560, 320, x=Axis("ε (linf)", scale="log"), y=Axis("robust accuracy", limits=(0, 1)))
    c.line(eps, acc, label="PGD", marker="circle")
    c.band(eps, low, high, label="95% CI")
    svg = c.svg()

Modules: :mod:`.chart` (the public :class:`Chart`), :mod:`.axes` (:class:`Axis`, mapping, axis
lines and labels), :mod:`.marks` and :mod:`.cells` (what is drawn), :mod:`.layout` (limits,
margins, point labels, legend), :mod:`.panels` (stacked charts sharing an x axis),
:mod:`.grid` (:class:`ImageGrid`: small multiples of images with colour bars),
:mod:`.ticks`, :mod:`.text` (metrics and text boxes), :mod:`.colors`, :mod:`.svg`,
:mod:`.geometry` (clipping, occupancy).
"""

from edgeproof.report.charts.axes import Axis, Scale
from edgeproof.report.charts.chart import Chart, LegendPosition
from edgeproof.report.charts.colors import PALETTE, RAMPS, ramp, series_color, text_color_on
from edgeproof.report.charts.grid import ImageGrid
from edgeproof.report.charts.marks import Marker
from edgeproof.report.charts.panels import Panels
from edgeproof.report.charts.text import TextBox, svg_text_boxes, text_width, truncate
from edgeproof.report.charts.ticks import Ticks, format_log, linear_ticks, log_ticks, nice_step

__all__ = [
    "PALETTE",
    "RAMPS",
    "Axis",
    "Chart",
    "ImageGrid",
    "LegendPosition",
    "Marker",
    "Panels",
    "Scale",
    "TextBox",
    "Ticks",
    "format_log",
    "linear_ticks",
    "log_ticks",
    "nice_step",
    "ramp",
    "series_color",
    "svg_text_boxes",
    "text_color_on",
    "text_width",
    "truncate",
]

"""Charts stacked vertically in one SVG, sharing the x axis."""

from __future__ import annotations

from collections.abc import Sequence

from edgeproof.report.charts import layout
from edgeproof.report.charts.axes import Options
from edgeproof.report.charts.chart import Chart, wrap_svg
from edgeproof.report.charts.svg import fmt
from edgeproof.report.charts.text import TextBox, svg_text_boxes

__all__ = ["Panels"]


class Panels:
    """``charts`` one above the other (same width), plot areas aligned left and right.

    With ``share_x`` (default) every chart gets the union of their x limits, and only the
    bottom one writes x tick labels and the x axis label. Each chart keeps its own height,
    y axis, title and legend.
    """

    def __init__(self, charts: Sequence[Chart], *, gap: float = 4.0, share_x: bool = True) -> None:
        if not charts:
            raise ValueError("Panels needs at least one chart")
        widths = {c.width for c in charts}
        if len(widths) != 1:
            raise ValueError(f"stacked charts must have one width, got {sorted(widths)}")
        scales = {c.x.scale for c in charts}
        if share_x and len(scales) != 1:
            raise ValueError(f"charts sharing an x axis need one scale, got {sorted(scales)}")
        self.charts = list(charts)
        self.gap = float(gap)
        self.share_x = share_x
        self.width = charts[0].width

    def _options(self) -> list[Options]:
        last = len(self.charts) - 1
        xlim = None
        if self.share_x:
            lims = [layout.limits(c, c.x, "x") for c in self.charts]
            xlim = (min(a for a, _ in lims), max(b for _, b in lims))
        opts = [
            Options(
                x_limits=xlim,
                x_tick_labels=i == last or not self.share_x,
                x_label=i == last or not self.share_x,
            )
            for i in range(len(self.charts))
        ]
        for _ in range(3):  # align the plot areas (a margin can grow with the others)
            frames = [layout.layout(c, o)[0] for c, o in zip(self.charts, opts)]
            left = max(f.plot.x0 for f in frames)
            right = max(f.width - f.plot.x1 for f in frames)
            if all(
                abs(f.plot.x0 - left) < 0.01 and abs(f.width - f.plot.x1 - right) < 0.01
                for f in frames
            ):
                break
            for o in opts:
                o.min_left, o.min_right = left, right
        return opts

    def svg(self) -> str:
        """One SVG with every chart, top to bottom."""
        parts: list[str] = []
        y = 0.0
        for c, o in zip(self.charts, self._options()):
            body, _, h = c.render(o)
            parts.append(f'<g transform="translate(0 {fmt(y)})">{body}</g>')
            y += h + self.gap
        label = next((c.title or c.y.label for c in self.charts if c.title or c.y.label), "chart")
        return wrap_svg("".join(parts), self.width, y - self.gap, label)

    def text_boxes(self) -> list[TextBox]:
        """The estimated box of every text element of :meth:`svg`."""
        return svg_text_boxes(self.svg())

"""Matplotlib figures rendered to self-contained inline SVG for the HTML report.

Only the compression ledger's Pareto figure still draws with matplotlib; every check's figure
uses :mod:`edgeproof.report.charts` (no matplotlib import, milliseconds per figure). Remove this
module, and the matplotlib dependency, once the Pareto figure is ported.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

__all__ = ["new_figure", "svg_of"]

plt.rcParams.update(
    {
        "svg.fonttype": "none",  # text stays text: small, searchable
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 100,
    }
)


def new_figure(width: float = 5.0, height: float = 3.2) -> tuple[MplFigure, plt.Axes]:
    """A new figure with one axes (inches)."""
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def svg_of(fig: MplFigure) -> str:
    """Render ``fig`` to an SVG string (no XML prolog, no external references) and close it."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = re.sub(r"^<\?xml[^>]*>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    return svg

"""The attribution check's figures: per-class mean maps (images, time series, tabular features,
frequency bands) and a few samples' maps beside their inputs, each drawn when first shown.

The check (:class:`~edgeproof.checks.attribution.AttributionCheck`) chooses the figures and
their data; these functions only draw."""

from __future__ import annotations

import math

import numpy as np

from edgeproof.results import Figure


def _sym(v: np.ndarray) -> float:
    m = float(np.nanmax(np.abs(v))) if v.size else 0.0
    return m if np.isfinite(m) and m > 0 else 1.0


def _cell(h: int, w: int, target: float = 72.0) -> float:
    """A cell of about ``target`` px holding whole screen pixels per image pixel (≤ 128 px)."""
    m = max(h, w)
    return float(min(128, m * max(1, math.ceil(target / m))))


def _decimals(v: float) -> int:
    """Decimals that write numbers up to ``v`` in magnitude with two significant digits."""
    return max(0, 1 - math.floor(math.log10(v))) if v > 0 and math.isfinite(v) else 2


def _image_classes_figure(name: str, title: str, means: np.ndarray, names: list[str]) -> Figure:
    """Per-class mean maps (channels summed) as small multiples on one diverging colour scale."""

    def draw() -> str:
        from edgeproof.report.charts import ImageGrid

        maps = means.reshape(means.shape[0], -1, *means.shape[-2:]).sum(axis=1)
        k, h, w = maps.shape
        vmax = _sym(maps)
        grid = ImageGrid(cols=min(k, 5 if k <= 10 else 10), cell=_cell(h, w))
        grid.scale("attr", color_ramp="rdbu_r", vmin=-vmax, vmax=vmax,
                   colorbar="mean attribution")  # fmt: skip
        for j in range(k):
            grid.add(maps[j], scale="attr", caption=names[j],
                     tooltip=f"predicted class {names[j]}")  # fmt: skip
        return grid.svg()

    return Figure(
        f"class_means_{name}",
        f"{title}: mean attribution per predicted class",
        draw,
        description="red raises the class score, blue lowers it (white: no effect); channels "
        "summed; one colour scale for all classes",
    )


def _image_samples_figure(
    xs: np.ndarray,
    maps: dict[str, np.ndarray],
    target: np.ndarray,
    class_names: tuple[str, ...] | None,
) -> Figure:
    """Inputs beside each shown method's map, every map on its own symmetric scale."""

    def draw() -> str:
        from edgeproof.report.charts import ImageGrid

        s = xs.shape[0]
        h, w = xs.shape[-2:]
        chans = xs.reshape(s, -1, h, w)
        finite = chans[np.isfinite(chans)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        rgb = chans.shape[1] == 3
        grid = ImageGrid(cols=len(maps) + 1, cell=_cell(h, w))
        grid.scale("input", color_ramp="gray", vmin=lo, vmax=hi)
        grid.scale("map", color_ramp="rdbu_r", vmin=-1.0, vmax=1.0,
                   colorbar="relative attribution")  # fmt: skip
        rows = []
        for i in range(s):
            label = class_names[target[i]] if class_names else str(target[i])
            rows.append(f"class {label}")
            if rgb:
                grid.add(np.transpose((chans[i] - lo) / (hi - lo), (1, 2, 0)),
                         tooltip=f"sample {i}, explained for class {label}")  # fmt: skip
            else:
                grid.add(chans[i].mean(axis=0), scale="input",
                         tooltip=f"sample {i}, explained for class {label}")  # fmt: skip
            for title, m in maps.items():
                mm = m[i].reshape(-1, h, w).sum(axis=0)
                peak = _sym(mm)
                grid.add(mm / peak, scale="map",
                         tooltip=f"{title}, sample {i}: max |attribution| {peak:.3g}")  # fmt: skip
        grid.labels(rows=rows, cols=("input", *maps))
        return grid.svg()

    return Figure(
        "samples",
        "Attribution maps of a few samples",
        draw,
        description="one sample per row, labelled with the class explained (the model's "
        "prediction): the input (grey, or RGB), then each method's map divided by its largest "
        "|attribution|, on one symmetric colour scale (red raises that class's score, blue "
        "lowers it)",
    )


def _series_classes_figure(
    name: str, title: str, x_means: np.ndarray, means: np.ndarray, names: list[str]
) -> Figure:
    """Per class: the mean signal (first channel) as a line over the mean attribution as shading."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart, Panels
        from edgeproof.report.charts.colors import BLACK

        k = means.shape[0]
        attr = means.reshape(k, -1, means.shape[-1]).sum(axis=1)
        sig = x_means.reshape(k, -1, x_means.shape[-1])[:, 0]
        steps = attr.shape[1]
        vmax = _sym(attr)
        charts = []
        for j in range(k):
            lo, hi = float(sig[j].min()), float(sig[j].max())
            pad = 0.05 * (hi - lo or 1.0)
            last = j == k - 1
            chart = Chart(
                680,
                130 + (36 if last else 0),
                x=Axis("time step", limits=(0.0, float(steps)), grid=False),
                y=Axis("mean input", limits=(lo - pad, hi + pad), grid=False),
                title=names[j],
            )
            chart.image(attr[j][None, :], extent=(0.0, float(steps), lo - pad, hi + pad),
                        vmin=-vmax, vmax=vmax, color_ramp="rdbu_r", mode="png", opacity=0.75,
                        colorbar="attribution" if j == 0 else None)  # fmt: skip
            chart.line(np.arange(steps) + 0.5, sig[j], color=BLACK, width=1.0)
            charts.append(chart)
        return Panels(charts, gap=2.0).svg()

    return Figure(
        f"class_means_{name}",
        f"{title}: mean signal and mean attribution per predicted class",
        draw,
        description="one panel per predicted class; line: mean input (first channel); shading: "
        "mean attribution over time, channels summed, one colour scale for all classes (red "
        "raises the class score, blue lowers it)",
    )


def _bands_figure(title: str, labels: list[str], means: np.ndarray, names: list[str]) -> Figure:
    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart

        vals = means.reshape(means.shape[0], -1, means.shape[-1]).sum(axis=1)
        v = _sym(vals)
        k, nb = vals.shape
        cell = 44.0 if max(k, nb) <= 12 else max(8.0, 520.0 / max(k, nb))
        dec = _decimals(v)
        chart = Chart(
            min(1000.0, cell * nb + 330),
            cell * k + 150,
            x=Axis("frequency band"),
            y=Axis("predicted class"),
        )
        chart.heatmap(
            vals,
            rows=names,
            cols=labels,
            vmin=-v,
            vmax=v,
            color_ramp="rdbu_r",
            annotations=[[f"{round(x, dec) + 0.0:.{dec}f}" for x in row] for row in vals],
            colorbar="score drop",
            tooltips=[
                [f"class {names[i]}, band {labels[b]}: drop {vals[i, b]:.3g}" for b in range(nb)]
                for i in range(k)
            ],
        )
        return chart.svg()

    return Figure(
        "class_means_frequency_occlusion",
        f"{title}: mean score drop per band and predicted class",
        draw,
        description="how much the class score falls when the band is removed (red: the class "
        "relies on the band; blue: removing it raises the score)",
    )


def _tabular_figure(
    name: str, title: str, means: np.ndarray, names: list[str], features: list[str]
) -> Figure:
    """Per class: horizontal bars of the mean attribution of the most important features."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart, Panels
        from edgeproof.report.charts.colors import BLUE, GREY, VERMILLION

        flat = means.reshape(means.shape[0], -1)
        top = np.argsort(-np.abs(flat).mean(axis=0), kind="stable")[: min(12, flat.shape[1])]
        labels = [features[i] if i < len(features) else str(i) for i in top]
        labels = [n if labels.count(n) == 1 else f"{n} #{i}" for n, i in zip(labels, top)]
        k = flat.shape[0]
        charts = []
        for j in range(k):
            v = flat[j, top]
            last = j == k - 1
            chart = Chart(
                640,
                40 + 20 * top.size + (36 if last else 0),
                x=Axis("mean attribution"),
                y=Axis(scale="category", categories=tuple(labels)),
                title=names[j],
            )
            chart.vline(0.0, color=GREY, width=1.0, dash=None)
            chart.barh(
                labels,
                v,
                thickness=0.66,
                color=[VERMILLION if x >= 0 else BLUE for x in v],
                tooltips=[f"class {names[j]}, {f}: {x:.3g}" for f, x in zip(labels, v)],
            )
            if j == 0:
                chart.key("raises the class score", VERMILLION)
                chart.key("lowers it", BLUE)
            charts.append(chart)
        return Panels(charts, gap=2.0).svg()

    return Figure(
        f"class_means_{name}",
        f"{title}: mean attribution of the top features per predicted class",
        draw,
        description="one panel per predicted class; features ranked by mean |attribution| over "
        "classes, most important at the top; vermillion raises the class score, blue lowers it",
    )

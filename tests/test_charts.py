"""The SVG chart writer: ticks, text boxes, layout, self-contained and deterministic output."""

from __future__ import annotations

import base64
import io
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproof.report.charts import (
    Axis,
    Chart,
    ImageGrid,
    Panels,
    TextBox,
    format_log,
    linear_ticks,
    log_ticks,
    nice_step,
    text_width,
    truncate,
)
from edgeproof.report.charts import layout as chart_layout
from edgeproof.report.charts.axes import Options
from edgeproof.report.charts.colors import text_color_on
from edgeproof.report.charts.text import text_box
from edgeproof.report.check_section import _figure
from edgeproof.results import Figure

SVG = "{http://www.w3.org/2000/svg}"


def _overlapping(boxes: list[TextBox]) -> list[tuple[str, str]]:
    return [(a.text, b.text) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


def _line_chart() -> Chart:
    eps = np.array([0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    acc = np.array([0.97, 0.95, 0.9, 0.35, 0.05, 0.0])
    c = Chart(560, 320, x=Axis("ε (linf)", scale="log"), y=Axis("robust accuracy", limits=(0, 1)))
    c.band(eps, acc - 0.05, acc + 0.05, label="95% CI")
    c.line(eps, acc, label="PGD", marker="circle")
    c.hline(0.1, label="chance", dash="dotted")
    return c


# ---------------------------------------------------------------- ticks


@pytest.mark.parametrize(
    ("raw", "step"),
    [(0.13, 0.2), (1.0, 1.0), (1.01, 2.0), (3.0, 5.0), (7.0, 10.0), (0.0007, 0.001), (420, 500)],
)
def test_nice_step_is_the_smallest_1_2_5_power_of_ten_at_least_the_raw_step(
    raw: float, step: float
) -> None:
    assert nice_step(raw) == step


def test_linear_ticks_are_multiples_of_a_nice_step_with_the_decimals_it_needs() -> None:
    t = linear_ticks(0.0, 1.0, 6)
    assert t.values == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert t.labels == ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0")
    t = linear_ticks(0.0, 0.3, 4)  # no floating-point noise (0.30000000000000004)
    assert t.labels == ("0.0", "0.1", "0.2", "0.3")
    assert linear_ticks(-0.02, 1.02, 6).values == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert linear_ticks(0.6, 10.4, 20, integer=True).values == tuple(float(i) for i in range(1, 11))
    assert linear_ticks(0, 250_000, 6).labels == ("0", "50000", "100000", "150000", "200000",
                                                  "250000")  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False),
    rel=st.floats(1e-6, 1e3, allow_nan=False),
    count=st.integers(2, 12),
)
def test_linear_ticks_lie_inside_the_limits_ascending_with_distinct_labels(
    lo: float, rel: float, count: int
) -> None:
    span = rel * max(1.0, abs(lo))
    hi = lo + span
    t = linear_ticks(lo, hi, count)
    assert len(t.values) >= 2
    assert all(lo - 1e-9 * span <= v <= hi + 1e-9 * span for v in t.values)
    assert list(t.values) == sorted(set(t.values))
    assert len(set(t.labels)) == len(t.labels)


@settings(max_examples=100, deadline=None)
@given(
    a=st.floats(-30, 30, allow_nan=False),
    span=st.floats(0.01, 40, allow_nan=False),
    count=st.integers(2, 12),
)
def test_log_ticks_lie_inside_the_limits_ascending_with_distinct_labels(
    a: float, span: float, count: int
) -> None:
    lo, hi = 10.0**a, 10.0 ** (a + span)
    t = log_ticks(lo, hi, count)
    assert len(t.values) >= 2
    assert all(lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9) for v in t.values)
    assert list(t.values) == sorted(set(t.values))
    assert len(set(t.labels)) == len(t.labels)
    assert not set(t.minor) & set(t.values)


def test_log_ticks_are_decades_plain_or_superscript() -> None:
    t = log_ticks(1e-5, 1e3, 20)
    assert t.values == tuple(10.0**k for k in range(-5, 4))
    assert t.labels == ("10⁻⁵", "10⁻⁴", "0.001", "0.01", "0.1", "1", "10", "100", "1000")
    assert 2e-5 in t.minor and 5e2 in t.minor  # unlabelled minor ticks at 2..9 × 10^k
    assert log_ticks(1e-6, 1e6, 20).minor == ()  # none beyond 8 decades


def test_log_ticks_add_2_and_5_with_fewer_than_three_decades_and_all_digits_within_one() -> None:
    assert log_ticks(0.01, 1.0, 20).values == (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    assert log_ticks(0.25, 2.5, 20).values == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0)


def test_log_ticks_thin_many_decades_and_respect_what_fits() -> None:
    t = log_ticks(1e-30, 1e30, 8)
    assert 2 <= len(t.values) <= 8
    assert all(round(math.log10(v)) % 10 == 0 for v in t.values)
    # a "fits" test that refuses the 2/5 ticks falls back to decades
    t = log_ticks(0.01, 1.0, 20, fits=lambda t: len(t.values) <= 3)
    assert t.values == (0.01, 0.1, 1.0)


@pytest.mark.parametrize(
    ("v", "text"),
    [(1e-5, "10⁻⁵"), (2e-5, "2×10⁻⁵"), (0.001, "0.001"), (0.05, "0.05"), (20, "20"),
     (1e4, "10000"), (1e5, "10⁵"), (5e7, "5×10⁷")],
)  # fmt: skip
def test_log_tick_labels_are_plain_text(v: float, text: str) -> None:
    assert format_log(v) == text


# ---------------------------------------------------------------- text


def test_text_boxes_follow_anchor_and_rotation() -> None:
    w = text_width("accuracy", 12)
    b = text_box("accuracy", 100, 50, 12, "middle")
    assert b.x0 == pytest.approx(100 - w / 2) and b.width == pytest.approx(w)
    assert b.y1 - b.y0 == pytest.approx(12 * (1901 + 483) / 2048)
    up = text_box("accuracy", 20, 200, 12, "middle", rotate=-90)  # reads upwards
    assert up.height == pytest.approx(w) and up.width == pytest.approx(b.height)
    assert up.y0 == pytest.approx(200 - w / 2) and up.x0 == pytest.approx(20 - 12 * 1901 / 2048)


def test_truncate_keeps_both_ends_of_a_module_path_and_fits() -> None:
    name = "encoder.layers.11.attention.self_attn.out_proj (linear)"
    short = truncate(name, 11, 150)
    assert "…" in short and short.startswith("enc") and short.endswith("(linear)")
    assert text_width(short, 11) <= 150
    assert truncate("conv1", 11, 150) == "conv1"


# ---------------------------------------------------------------- SVG


def test_svg_is_well_formed_self_contained_and_embedded_by_the_report() -> None:
    svg = _line_chart().svg()
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    for bad in ("<script", "url(", " id=", "href=", "xlink", "<foreignObject"):
        assert bad not in svg
    assert not re.search(r'[=" ,]-?(nan|inf)\b', svg)  # every coordinate is finite
    html = _figure(Figure("f", "F", svg))
    assert "not embedded" not in html and "<svg" in html


def test_every_text_is_at_least_11_px() -> None:
    c = _line_chart()
    c.title = "a title"
    root = ET.fromstring(Panels([c, _line_chart()]).svg())
    sizes = [float(root.attrib["font-size"])] + [
        float(e.attrib["font-size"]) for e in root.iter() if "font-size" in e.attrib
    ]
    assert min(sizes) >= 11


def test_the_same_chart_gives_the_same_svg() -> None:
    assert _line_chart().svg() == _line_chart().svg()


def test_image_as_png_data_uri_decodes_and_survives_the_sanitiser() -> None:
    from PIL import Image

    a = np.arange(40 * 50, dtype=float).reshape(40, 50)
    c = Chart(400, 300, x=Axis("x"), y=Axis("y"))
    c.image(a, mode="png")
    svg = c.svg()
    uri = re.search(r'href="(data:image/png;base64,[^"]+)"', svg)
    assert uri is not None
    png = Image.open(io.BytesIO(base64.b64decode(uri.group(1).split(",", 1)[1])))
    assert png.size == (50, 40) and png.mode == "RGB"
    assert png.getpixel((0, 0)) == (0x44, 0x01, 0x54)  # viridis at the minimum
    assert "not embedded" not in _figure(Figure("img", "Image", svg))
    small = Chart(300, 240)
    small.image(np.eye(4))
    assert "data:image" not in small.svg() and small.svg().count("<rect") > 16


def test_a_line_outside_the_limits_is_clipped_to_the_plot() -> None:
    c = Chart(400, 300, x=Axis(limits=(0, 1)), y=Axis(limits=(0, 1)))
    c.line([-1, 0.5, 2], [0.5, 2.0, 0.5])
    f = chart_layout.layout(c, Options())[0]
    root = ET.fromstring(c.svg())
    for pl in root.iter(SVG + "polyline"):
        for pair in pl.attrib["points"].split():
            x, y = map(float, pair.split(","))
            assert f.plot.x0 - 0.01 <= x <= f.plot.x1 + 0.01
            assert f.plot.y0 - 0.01 <= y <= f.plot.y1 + 0.01


def test_nan_breaks_a_line_and_non_positive_values_are_dropped_on_a_log_axis() -> None:
    c = Chart(400, 300, x=Axis(scale="log"), y=Axis())
    c.line([0.0, 0.1, 1, 10, 100], [1, 2, np.nan, 4, 5])
    svg = c.svg()
    assert svg.count("<polyline") == 1 and "nan" not in svg


# ---------------------------------------------------------------- layout


def test_no_text_overlaps_in_a_chart_with_a_title_legend_and_long_labels() -> None:
    c = _line_chart()
    c.title = "Robust accuracy of a model with a long name"
    c.x = Axis("ε, the L∞ radius of the perturbation in input units", scale="log")
    boxes = c.text_boxes()
    assert {b.role for b in boxes} >= {"tick-label", "axis-label", "legend", "title"}
    assert _overlapping(boxes) == []


def test_the_legend_goes_inside_where_it_covers_nothing_else_outside() -> None:
    free = Chart(560, 320)
    free.line([0, 1, 2, 3], [3, 2.5, 1, 0.2], label="falls")
    f, _, spot = chart_layout.layout(free, Options())
    assert f.legend == "inside" and spot is not None
    assert spot[0] > (f.plot.x0 + f.plot.x1) / 2 and spot[1] < (f.plot.y0 + f.plot.y1) / 2
    full = Chart(560, 320)
    g = np.linspace(0, 1, 25)
    xs, ys = np.meshgrid(g, g)
    full.scatter(xs.ravel(), ys.ravel(), label="everywhere")
    f, _, spot = chart_layout.layout(full, Options())
    assert f.legend in ("right", "below") and spot is None
    legend = [b for b in full.text_boxes() if b.role == "legend"]
    assert legend and all(b.x0 >= f.plot.x1 or b.y0 >= f.plot.y1 for b in legend)


def test_point_labels_do_not_overlap_points_or_each_other_and_leftovers_become_tooltips() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    names = [f"candidate-{i}" for i in range(40)]
    c = Chart(560, 360, x=Axis("size"), y=Axis("accuracy"))
    c.scatter(x, y, size=3, point_labels=names)
    f = chart_layout.layout(c, Options())[0]
    boxes = [b for b in c.text_boxes() if b.role == "point-label"]
    assert 5 <= len(boxes) < 40
    assert _overlapping(c.text_boxes()) == []
    px, py = f.x(x), f.y(y)
    for b in boxes:
        assert f.plot.x0 <= b.x0 and b.x1 <= f.plot.x1
        hit = (px + 3 > b.x0) & (px - 3 < b.x1) & (py + 3 > b.y0) & (py - 3 < b.y1)
        assert not hit.any(), b.text
    svg = c.svg()
    unplaced = set(names) - {b.text for b in boxes}
    assert all(f"<title>{n}</title>" in svg for n in unplaced)


def test_long_category_names_are_shortened_with_the_full_name_in_a_tooltip() -> None:
    names = ["conv1 (conv2d)", "encoder.layers.11.attention.self_attn.out_proj.weight (linear)"]
    c = Chart(640, 200, x=Axis("power-law α"), y=Axis(scale="category", categories=tuple(names)))
    c.barh(names, [3.1, 1.7])
    labels = [b for b in c.text_boxes() if b.role == "tick-label" and "…" in b.text]
    assert len(labels) == 1 and labels[0].width <= 0.38 * 640 + 0.01
    assert f"<title>{names[1]}</title>" in c.svg()
    assert _overlapping(c.text_boxes()) == []


def test_heatmap_writes_counts_in_contrasting_colour_and_a_colour_bar() -> None:
    m = np.array([[0.9, 0.1], [0.2, 0.8]])
    c = Chart(400, 300, x=Axis("predicted"), y=Axis("true"))
    c.heatmap(m, rows=["cat", "dog"], cols=["cat", "dog"], annotations=[["9", "1"], ["2", "8"]],
              colorbar="fraction")  # fmt: skip
    svg = c.svg()
    root = ET.fromstring(svg)
    ann = {
        e.text: e.attrib["fill"] for e in root.iter(SVG + "text") if e.get("class") == "annotation"
    }
    assert ann == {"9": "#ffffff", "1": "#000000", "2": "#000000", "8": "#ffffff"}
    assert "fraction" in svg and _overlapping(c.text_boxes()) == []
    assert text_color_on("#08306b") == "#ffffff" and text_color_on("#f7fbff") == "#000000"


def test_many_rotated_column_names_are_thinned_so_they_do_not_touch() -> None:
    names = [f"class-{i:03d}" for i in range(60)]
    c = Chart(700, 700, x=Axis("predicted"), y=Axis("true"))
    c.heatmap(np.eye(60), rows=names, cols=names)
    boxes = c.text_boxes()
    assert _overlapping(boxes) == []
    assert 10 <= sum(1 for b in boxes if b.role == "tick-label" and b.height > b.width) < 60


def test_panels_share_the_x_axis_and_align_the_plots() -> None:
    top = Chart(560, 240, x=Axis(limits=(0, 1)), y=Axis("accuracy in a long label"))
    top.bars([0.1, 0.5], [0.3, 0.9], width=0.1)
    bottom = Chart(560, 140, x=Axis("confidence", limits=(0, 1)), y=Axis("n", scale="log"))
    bottom.bars([0.1, 0.5], [3, 3000], width=0.1, bottom=None)
    p = Panels([top, bottom])
    opts = p._options()
    frames = [chart_layout.layout(c, o)[0] for c, o in zip(p.charts, opts)]
    assert frames[0].plot.x0 == frames[1].plot.x0 and frames[0].plot.x1 == frames[1].plot.x1
    boxes = p.text_boxes()
    top_h = float(re.findall(r"translate\(0 ([\d.]+)\)", p.svg())[1])
    x_ticks = [b for b in boxes if b.role == "tick-label" and b.y0 > top_h and b.height < 14]
    assert {b.text for b in x_ticks} >= {"0.0", "1.0"}
    assert not [b for b in boxes if b.role == "axis-label" and b.text == "confidence"
                and b.y0 < top_h]  # fmt: skip
    assert _overlapping(boxes) == []


# ---------------------------------------------------------------- colour scales and images


def test_diverging_ramp_is_neutral_at_its_centre_and_reversible() -> None:
    from edgeproof.report.charts import ramp

    assert ramp("rdbu", 0.5) == ramp("rdbu_r", 0.5) == "#f7f7f7"
    assert ramp("rdbu", 0.0) == ramp("rdbu_r", 1.0) == "#67001f"  # dark red
    assert ramp("rdbu", 1.0) == ramp("rdbu_r", 0.0) == "#053061"  # dark blue
    assert ramp("gray", 0.0) == "#000000" and ramp("gray", 1.0) == "#ffffff"
    with pytest.raises(ValueError, match="unknown colour ramp 'jet'"):
        ramp("jet", 0.5)


def _fills(svg: str) -> list[str]:
    return [e.attrib["fill"] for e in ET.fromstring(svg).iter(SVG + "rect") if "fill" in e.attrib]


def test_a_symmetric_image_scale_puts_zero_on_the_neutral_colour_and_leaves_nan_empty() -> None:
    a = np.array([[-2.0, 0.0], [np.nan, 2.0]])
    c = Chart(300, 240)
    c.image(a, vmin=-2, vmax=2, color_ramp="rdbu_r")
    cells = ET.fromstring(c.svg()).find(f".//{SVG}g[@stroke='none']")
    assert cells is not None
    assert [r.attrib["fill"] for r in cells] == ["#053061", "#f7f7f7", "#67001f"]  # NaN: none


def test_an_rgb_image_keeps_its_colours_and_gets_no_colour_bar() -> None:
    rgb = np.zeros((2, 2, 3))
    rgb[0, 0] = (1.0, 0.0, 0.0)
    rgb[1, 1] = (0.0, 0.0, 2.0)  # clipped to 1
    c = Chart(300, 240)
    c.image(rgb, colorbar="ignored")
    svg = c.svg()
    assert {"#ff0000", "#000000", "#0000ff"} <= set(_fills(svg)) and "ignored" not in svg
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        c.image(np.zeros((2, 2, 4)))


def test_an_image_colour_bar_has_ticks_that_fit_its_height() -> None:
    for height in (110, 400):
        c = Chart(560, height, x=Axis("time"), y=Axis("signal"))
        c.image(np.linspace(-1, 1, 50)[None, :], extent=(0, 50, -1, 1), vmin=-1, vmax=1,
                color_ramp="rdbu_r", mode="png", opacity=0.7, colorbar="attribution")  # fmt: skip
        svg = c.svg()
        f = chart_layout.layout(c, Options())[0]
        assert f.cbar is not None and f.cbar[0].x0 > f.plot.x1
        assert 'opacity="0.7"' in svg and "attribution" in svg
        ticks = [b for b in c.text_boxes() if b.role == "tick-label" and b.x0 > f.cbar[0].x1]
        assert len(ticks) >= 2 and _overlapping(c.text_boxes()) == []
        assert max(b.x1 for b in c.text_boxes()) <= f.width


def test_polyline_inside_the_plot_is_one_run_and_a_crossing_one_is_clipped() -> None:
    from edgeproof.report.charts.geometry import Rect, clip_polyline

    r = Rect(0, 0, 10, 10)
    xs, ys = np.linspace(1, 9, 500), np.linspace(2, 8, 500)
    (run,) = clip_polyline(xs, ys, r)
    assert len(run) == 500 and run[0] == (1.0, 2.0) and run[-1] == (9.0, 8.0)
    runs = clip_polyline([1, 5, 15, 5], [5, 5, 5, 5], r)
    assert runs == [[(1.0, 5.0), (5.0, 5.0), (10.0, 5.0)], [(10.0, 5.0), (5.0, 5.0)]]


# ---------------------------------------------------------------- image grid


def _grid() -> ImageGrid:
    rng = np.random.default_rng(0)
    g = ImageGrid(cols=3, cell=60, max_width=420)
    g.scale("attr", color_ramp="rdbu_r", vmin=-1, vmax=1, colorbar="mean attribution")
    g.scale("input", color_ramp="gray")
    names = ["zero", "one", "a class with a very long name indeed", "three"]
    for n in names:
        g.add(rng.uniform(-1, 1, (8, 8)), scale="attr", caption=n)
    g.add(rng.uniform(0, 1, (4, 8)), scale="input", caption="wide")
    g.add(np.ones((3, 3, 3)) * 0.5, caption="rgb")
    g.labels(rows=["first row", "second row"])
    return g


def test_image_grid_lays_out_captions_rows_and_one_colour_bar_without_overlap() -> None:
    g = _grid()
    svg = g.svg()
    boxes = g.text_boxes()
    assert _overlapping(boxes) == []
    roles = {b.role for b in boxes}
    assert {"image-caption", "row-label", "tick-label", "axis-label"} <= roles
    long = next(b for b in boxes if b.role == "image-caption" and "…" in b.text)
    assert "<title>a class with a very long name indeed</title>" in svg
    captions = sorted((b for b in boxes if b.role == "image-caption"), key=lambda b: (b.y0, b.x0))
    assert [b.text for b in captions][:2] == ["zero", "one"] and long.width < 100
    assert sum(1 for b in boxes if b.role == "axis-label") == 1  # the gray scale names no bar
    root = ET.fromstring(svg)
    assert float(root.attrib["width"]) <= 420 and "#808080" in svg  # the RGB tile's grey


def test_image_grid_pixels_are_square_and_an_image_needs_a_scale() -> None:
    g = ImageGrid(cols=1, cell=80)
    g.scale("s", vmin=0, vmax=1)
    g.add(np.zeros((4, 8)), scale="s")
    root = ET.fromstring(g.svg())
    cells = [r for r in root.iter(SVG + "rect") if r.attrib.get("fill") == "#440154"]
    assert len(cells) == 32
    w = {round(float(r.attrib["width"]), 1) for r in cells}
    h = {round(float(r.attrib["height"]), 1) for r in cells}
    assert w == h == {10.3}  # 80 px / 8 pixels, plus the 0.3 px overlap against seams
    with pytest.raises(ValueError, match="needs a scale added first"):
        g.add(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="finite vmin < vmax"):
        g.scale("flat", vmin=1, vmax=1)

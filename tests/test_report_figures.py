"""Every figure of the digits LeNet-5 report: readable, self-contained, no text on text.

One audit of the conftest model with the built-in checks whose figures are drawn with
:mod:`edgeproof.report.charts` (:data:`PORTED`; the slow ones with smaller sample counts) is
shared by the tests here. A check ported later joins :data:`PORTED` and :data:`FIGURES`.

The structural tests read each figure's SVG (well-formed, no script or external reference,
embedded by the HTML sanitiser, text ≥ 11 px, no two estimated text boxes overlapping); the
browser test renders the report page in headless Chromium,
measures every ``<text>`` with ``getBoundingClientRect`` (expanding every section first) and
fails on any two boxes of one figure that overlap, or on a drawn box much wider than the
estimate the layout used. It also leaves a screenshot (``report.png``) in its tmp folder.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from edgeproof.checks import check_class
from edgeproof.data.dataset import Dataset
from edgeproof.models.loaded import LoadedModel
from edgeproof.report import render_html
from edgeproof.report.charts import TextBox, svg_text_boxes
from edgeproof.report.check_section import _figure
from edgeproof.report.report import Report
from edgeproof.results import Figure

pytestmark = pytest.mark.slow  # one audit with every check: ~5 s on 2 cores

SVG = "{http://www.w3.org/2000/svg}"
PORTED = (
    "performance",
    "calibration",
    "footprint",
    "spectral",
    "bitflip",
    "adversarial",
    "corruption",
    "fisher",
    "smoothing",
    "backdoor",
    "attribution",
    "generalization",
)
FIGURES = {
    "confusion_matrix",
    "reliability_diagram",
    "alpha",
    "esd",
    "curve",
    "robust_accuracy",
    "corruption_accuracy",
    "lambda_max",
    "certified_accuracy",
    "per_class_anomaly",
    "class_means_integrated_gradients",
    "class_means_occlusion",
    "samples",
    "hessian_density",
    "gradient_conflict",
}
# smaller sample counts where the defaults take seconds; the others run as in the demo
_SETTINGS: dict[str, dict[str, Any]] = {
    "footprint": {"budget_s": 0.02, "warmup": 1, "min_runs": 3, "max_runs": 20},
    "bitflip": {"random_seeds": 2, "eval_samples": 96, "noise_samples": 32},
    "adversarial": {"pgd_steps": 5, "apgd_steps": 5, "square_queries": 50, "max_samples": 96},
    "smoothing": {"n0": 20, "n": 200, "max_samples": 64},
    "backdoor": {"freeeagle_steps": 50},
    # two methods without the sanity tests: which maps pass them depends on the model
    "attribution": {
        "methods": ("integrated_gradients", "occlusion"),
        "sanity": False,
        "max_samples": 24,
        "ig_steps": 8,
        "ig_max_steps": 32,
        "figure_samples": 2,
    },
    "generalization": {"max_samples": 120, "iterations": 20, "probes": 12, "tic_probes": 3},
}


@pytest.fixture(scope="module")
def report(digits_model: LoadedModel, digits_test: Dataset) -> Report:
    from edgeproof.runner import audit

    checks = [check_class(name)(**_SETTINGS.get(name, {})) for name in PORTED]
    return audit(digits_model, digits_test, checks, threads=1)


def _figures(report: Report) -> list[tuple[str, Figure]]:
    return [(c.check, f) for c in report.checks for f in c.figures]


def _overlaps(boxes: list[TextBox]) -> list[tuple[str, str]]:
    return [(a.text, b.text) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


def test_every_check_draws_its_figure(report: Report) -> None:
    assert all(c.status == "ok" for c in report.checks), [
        (c.check, c.error) for c in report.checks if c.status != "ok"
    ]
    assert {f.name for _, f in _figures(report)} == FIGURES


def test_every_figure_is_self_contained_readable_and_has_no_text_on_text(report: Report) -> None:
    for check, fig in _figures(report):
        svg = fig.svg
        root = ET.fromstring(svg)
        assert root.tag == SVG + "svg", (check, fig.name)
        for bad in ("<script", "url(", " id=", "<foreignObject", "xlink:href"):
            assert bad not in svg, (check, fig.name, bad)
        assert "not embedded" not in _figure(fig), (check, fig.name)
        sizes = [float(e.attrib["font-size"]) for e in root.iter() if "font-size" in e.attrib]
        assert min(sizes) >= 11, (check, fig.name)
        boxes = svg_text_boxes(svg)
        assert len(boxes) >= 6, (check, fig.name)  # tick labels at least: a real chart
        assert _overlaps(boxes) == [], (check, fig.name)


def test_no_figure_class_is_styled_by_the_report_page(report: Report) -> None:
    # a page rule such as `.caption { font-size: 12.5px }` would restyle the SVG's text and
    # break the layout's text metrics
    from importlib import resources

    page = resources.files("edgeproof.report").joinpath("template.html").read_text("utf-8")
    css = page[page.find("<style") : page.find("</style")]
    styled = set(re.findall(r"\.([a-zA-Z][\w-]*)", css))
    used = {
        e.attrib["class"]
        for _, f in _figures(report)
        for e in ET.fromstring(f.svg).iter()
        if "class" in e.attrib
    }
    assert "tick-label" in used and used & styled == set()


def test_no_figure_imports_matplotlib() -> None:
    code = (
        "import sys\n"
        "from edgeproof.checks import check_class\n"
        f"for name in {PORTED!r}: check_class(name)\n"
        "from edgeproof.report.charts import Chart\n"
        "c = Chart(); c.line([1, 2], [3, 4]); c.svg()\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _tick_labels(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return [e.text or "" for e in root.iter(SVG + "text") if e.get("class") == "tick-label"]


def test_layer_names_are_module_paths_and_log_axes_have_plain_labels(report: Report) -> None:
    figs = {f.name: f for _, f in _figures(report)}
    names = _tick_labels(figs["alpha"].svg)
    assert "1.weight (conv2d)" in names and "12.weight (linear)" in names
    assert figs["esd"].title.startswith("ESD of ") and "(" in figs["esd"].title
    for name in ("esd", "robust_accuracy", "lambda_max", "reliability_diagram"):
        labels = _tick_labels(figs[name].svg)
        assert all(re.fullmatch(r"[-\d.]+|(\d×)?10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+", s) for s in labels), labels


def test_the_reliability_diagram_labels_its_gaps_and_counts_on_a_log_scale(report: Report) -> None:
    svg = next(f for _, f in _figures(report) if f.name == "reliability_diagram").svg
    root = ET.fromstring(svg)
    legend = {e.text for e in root.iter(SVG + "text") if e.get("class") == "legend"}
    assert {"accuracy", "gap: over-confident", "gap: under-confident"} <= legend
    assert {"1", "10", "100"} <= set(_tick_labels(svg))  # the record counts' decades


# ---------------------------------------------------------------- in a browser

_MEASURE = """<script>
window.addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var out = [];
  document.querySelectorAll("figure[data-name]").forEach(function (fig) {
    var svg = fig.querySelector("svg");
    if (!svg) { return; }
    var o = svg.getBoundingClientRect();
    var sx = o.width / (svg.width.baseVal.value || o.width);
    var boxes = [];
    svg.querySelectorAll("text").forEach(function (t) {
      var r = t.getBoundingClientRect();
      var label = t.firstChild ? t.firstChild.nodeValue : "";
      boxes.push([label, (r.left - o.left) / sx, (r.top - o.top) / sx,
                  (r.right - o.left) / sx, (r.bottom - o.top) / sx]);
    });
    out.push({name: fig.getAttribute("data-name"), boxes: boxes});
  });
  var pre = document.createElement("pre");
  pre.id = "__boxes__";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM = next((p for p in map(shutil.which, _CANDIDATES) if p), None)


def _chromium(args: list[str], page: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI containers run as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_figures_in_chromium_have_no_overlapping_text(
    report: Report, tmp_path: Path
) -> None:
    page_html = render_html(report)
    page = tmp_path / "report.html"
    page.write_text(page_html.replace("<head>", "<head>" + _MEASURE, 1), encoding="utf-8")
    proc = _chromium(["--virtual-time-budget=5000", "--window-size=1200,2000", "--dump-dom"],
                     page, tmp_path)  # fmt: skip
    start = proc.stdout.find('<pre id="__boxes__">')
    assert start >= 0, f"no measurement (rc={proc.returncode}): {proc.stderr[-2000:]}"
    end = proc.stdout.index("</pre>", start)
    measured = json.loads(html.unescape(proc.stdout[start + len('<pre id="__boxes__">') : end]))
    assert {m["name"] for m in measured} == FIGURES
    estimated = {f.name: svg_text_boxes(f.svg) for _, f in _figures(report)}
    for m in measured:
        boxes = [TextBox(t, x0, y0, x1, y1) for t, x0, y0, x1, y1 in m["boxes"]]
        assert boxes and all(b.width > 0 and b.height > 0 for b in boxes), m["name"]
        assert _overlaps(boxes) == [], m["name"]
        # the layout's estimate is an upper bound of the drawn width (within a pixel)
        for drawn, est in zip(boxes, estimated[m["name"]]):
            assert drawn.text == est.text
            assert drawn.width <= est.width + 1.0, (m["name"], drawn, est)
    shot = tmp_path / "report.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,9000", "--hide-scrollbars"],
              page, tmp_path)  # fmt: skip
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

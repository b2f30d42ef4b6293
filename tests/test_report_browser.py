"""The HTML report in a real browser (headless chromium): no script error, no network, it renders.

A probe script is injected at the top of ``<head>`` of a copy of the page. It records every
``error`` event (uncaught exceptions and failed resource loads), unhandled promise rejections and
``console.error``/``console.warn`` calls, exercises the page's optional script (expand/collapse
all, ``beforeprint``), and writes what it saw as JSON into ``<pre id="__probe__">`` on ``load``;
``chromium --dump-dom`` returns the DOM with it. Chromium's own console log
(``--enable-logging=stderr``) is a second net for "Uncaught" errors. A control page with a
deliberate error proves the probe catches errors at all.

A second probe (``tests/browser/overlap_probe.js``) opens every ``<details>``, takes one box per
line of every HTML text node and one per character of every SVG ``<text>`` (mapped through its
transform, so rotated labels keep small boxes; clipped by any scrolling ancestor), and lists the
pairs of different texts whose boxes intersect by more than 1.5 px both ways. A control page
with overlapping words and colliding tick labels proves it sees overlaps; adjacent rotated labels
must not count as one.

Skipped when chromium is not installed (CI installs it from ``.ci/apt-packages.txt``).
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeproof.report import render_html
from edgeproof.report.charts import Axis, Chart
from edgeproof.report.report import PolicyOutcome, PolicyRuleResult, Report
from edgeproof.results import CheckResult, Figure, Finding, Interval, Metric, Table
from edgeproof.spec import InputSpec, ThreatModel

pytestmark = pytest.mark.browser

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM = next((p for p in map(shutil.which, _CANDIDATES) if p), None)
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium, see .ci/apt-packages.txt)",
)

_PROBE = """<script>
(function () {
  var seen = [];
  var push = function (kind, text) { seen.push(kind + ": " + String(text)); };
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { push("resource", t.src || t.href); }
    else { push("error", e.message); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { push("rejection", e.reason); });
  ["error", "warn"].forEach(function (level) {
    var orig = console[level];
    console[level] = function () {
      push("console." + level, Array.prototype.join.call(arguments, " "));
      return orig.apply(console, arguments);
    };
  });
  window.addEventListener("load", function () {
    var out = {errors: seen, resources: [], details: 0, expanded: null, collapsed: null,
               printed: null, js_class: document.documentElement.classList.contains("js")};
    try {
      out.resources = performance.getEntriesByType("resource").map(function (r) {
        return r.name;
      });
      var all = document.querySelectorAll("details");
      var count = function () {
        return Array.prototype.filter.call(all, function (d) { return d.open; }).length;
      };
      out.details = all.length;
      var ex = document.getElementById("expand-all");
      var co = document.getElementById("collapse-all");
      if (ex) { ex.click(); out.expanded = count(); }
      if (co) { co.click(); out.collapsed = count(); }
      window.dispatchEvent(new Event("beforeprint"));
      out.printed = count();
    } catch (e) { push("probe", e); }
    var pre = document.createElement("pre");
    pre.id = "__probe__";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>"""


def _report() -> Report:
    chart = Chart(400, 250, x=Axis("ε"), y=Axis("accuracy"))
    chart.line([0.0, 0.01, 0.03, 0.1], [0.95, 0.9, 0.7, 0.2], marker="circle")
    ok = CheckResult(
        "performance",
        "Performance",
        "ok",
        summary="accuracy 95.3% on 360 records",
        metrics=[Metric("accuracy", 0.953, "fraction", Interval(0.93, 0.97), "top-1")],
        findings=[Finding("critical", "<script>alert(1)</script>"), Finding("warning", "low")],
        tables=[Table("t", "Per class", ["class", "recall"], [["0", 1.0], ["8", 0.81]])],
        figures=[Figure("curve", "Robust accuracy", chart.svg())],
        settings={"level": 0.95},
        duration_s=0.4,
    )
    skipped = CheckResult("gradients", "Gradients", "skipped", skip_reason="needs gradients")
    error = CheckResult(
        "bitflip",
        "Bit flips",
        "error",
        error="ValueError: <b>boom</b>",
        traceback="Traceback (most recent call last):\nValueError: boom",
    )
    threat = ThreatModel(InputSpec((1, 8, 8), num_classes=10), "linf", (0.03,))
    return Report(
        model={"name": "m", "format": "safetensors", "parameters": 1000},
        data={"name": "builtin:digits", "records": 360},
        threat=threat.to_json(),
        checks=[ok, skipped, error],
        seed=0,
        created="2025-01-31T12:00:00Z",
        policy=PolicyOutcome(
            "p.toml", (PolicyRuleResult("performance.accuracy", ">=", 0.99, 0.953, False, "x"),)
        ),
    )


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
        "--host-resolver-rules=MAP * ~NOTFOUND",  # any network access fails (and is seen)
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _probe(page_html: str, tmp: Path) -> tuple[dict[str, Any], str]:
    page = tmp / "page.html"
    page.write_text(page_html.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    proc = _chromium(["--virtual-time-budget=5000", "--dump-dom"], page, tmp)
    start = proc.stdout.find('<pre id="__probe__">')
    assert start >= 0, f"no probe output (rc={proc.returncode}): {proc.stderr[-2000:]}"
    end = proc.stdout.index("</pre>", start)
    text = html.unescape(proc.stdout[start + len('<pre id="__probe__">') : end])
    return json.loads(text), proc.stderr


_OVERLAP_PROBE = (Path(__file__).parent / "browser" / "overlap_probe.js").read_text("utf-8")


def _overlaps(page_html: str, tmp: Path, width: int = 1400) -> dict[str, Any]:
    """What the overlap probe saw on ``page_html`` at ``width`` px: boxes, overlaps, height."""
    page = tmp / "overlap.html"
    script = f"<script>{_OVERLAP_PROBE}</script>"
    page.write_text(page_html.replace("<head>", "<head>" + script, 1), encoding="utf-8")
    proc = _chromium(
        [f"--window-size={width},3000", "--virtual-time-budget=5000", "--dump-dom"], page, tmp
    )
    start = proc.stdout.find('<pre id="__probe__">')
    assert start >= 0, f"no probe output (rc={proc.returncode}): {proc.stderr[-2000:]}"
    end = proc.stdout.index("</pre>", start)
    out: dict[str, Any] = json.loads(
        html.unescape(proc.stdout[start + len('<pre id="__probe__">') : end])
    )
    return out


def _uncaught(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and "Uncaught" in ln]


@requires_chromium
def test_probe_catches_script_errors_console_errors_and_failed_loads(tmp_path: Path) -> None:
    control = (
        "<!DOCTYPE html><html><head><title>c</title></head><body>"
        '<img src="missing.png"><script>console.error("bad"); notDefined();</script>'
        "</body></html>"
    )
    seen, stderr = _probe(control, tmp_path)
    kinds = [e.split(":", 1)[0] for e in seen["errors"]]
    assert "console.error" in kinds and "error" in kinds and "resource" in kinds
    assert _uncaught(stderr)


@requires_chromium
def test_report_page_has_no_script_error_and_loads_nothing(tmp_path: Path) -> None:
    seen, stderr = _probe(render_html(_report()), tmp_path)
    assert seen["errors"] == []
    assert _uncaught(stderr) == []
    assert seen["resources"] == []  # inline CSS, inline SVG, no fonts, no scripts from anywhere
    # the optional script ran: expand/collapse all and open-everything-before-printing work
    assert seen["js_class"] is True
    # three check sections, the error's traceback and the ok check's settings
    assert seen["details"] == 5
    assert seen["expanded"] == seen["details"]
    assert seen["collapsed"] == 0
    assert seen["printed"] == seen["details"]


@requires_chromium
def test_report_page_renders_to_a_screenshot_and_a_pdf(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(_report()), encoding="utf-8")
    png = tmp_path / "report.png"
    proc = _chromium(
        [f"--screenshot={png}", "--window-size=1200,2000", "--hide-scrollbars"], page, tmp_path
    )
    assert png.exists(), proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = tmp_path / "report.pdf"
    proc = _chromium([f"--print-to-pdf={pdf}", "--no-pdf-header-footer"], page, tmp_path)
    assert pdf.exists(), proc.stderr[-2000:]
    assert pdf.read_bytes()[:5] == b"%PDF-"


_CONTROL = """<!DOCTYPE html><html><head><title>c</title></head><body>
<div style="position:relative;height:40px">
<span style="position:absolute;left:0;top:0">overlapping words</span>
<span style="position:absolute;left:30px;top:2px">here too</span></div>
<svg width="300" height="60" xmlns="http://www.w3.org/2000/svg">
<text x="10" y="30" font-size="12">3×10⁻¹</text><text x="40" y="30" font-size="12">4×10⁻¹</text>
</svg>
<svg width="300" height="150" xmlns="http://www.w3.org/2000/svg">
<text x="20" y="100" font-size="11" transform="rotate(-45 20 100)">features.0.weight</text>
<text x="45" y="100" font-size="11" transform="rotate(-45 45 100)">features.3.weight</text>
</svg><p>one line</p><p>the next line</p></body></html>"""


@requires_chromium
def test_overlap_probe_sees_overlapping_words_and_colliding_ticks_only(tmp_path: Path) -> None:
    seen = _overlaps(_CONTROL, tmp_path, width=800)
    assert seen["boxes"] > 20
    pairs = sorted(seen["overlaps"])
    assert len(pairs) == 2, pairs
    assert '"overlapping words" overlaps "here too"' in pairs[1]
    assert '"3×10⁻¹" overlaps "4×10⁻¹"' in pairs[0]


@pytest.fixture(scope="module")
def real_page(digits_model: Any, digits_test: Any) -> str:
    """The HTML of an audit of the test LeNet-5 by the checks with the most figures and tables
    (quick settings)."""
    from edgeproof.checks import get_check
    from edgeproof.runner import audit

    names = ("performance", "calibration", "spectral", "bitflip", "adversarial", "corruption")
    checks = [type(c)(**type(c).quick_settings) for c in map(get_check, names)]
    report = audit(digits_model, digits_test, checks)
    assert all(c.status == "ok" for c in report.checks), [c.error for c in report.checks]
    return render_html(report)


@requires_chromium
@pytest.mark.slow  # audits a trained LeNet-5 with six real checks (~10 s) before rendering
@pytest.mark.parametrize("width", [1400, 800])
def test_report_of_real_checks_has_no_overlapping_text(
    width: int, tmp_path: Path, real_page: str
) -> None:
    seen = _overlaps(real_page, tmp_path, width=width)
    assert seen["boxes"] > 500  # every section was opened and measured
    assert seen["overlaps"] == []


@requires_chromium
def test_synthetic_report_has_no_overlapping_text(tmp_path: Path) -> None:
    seen = _overlaps(render_html(_report()), tmp_path)
    assert seen["overlaps"] == []

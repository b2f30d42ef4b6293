"""The text pieces every HTML page of edgeproof shares: escaping (:func:`_e`, for text and
attribute context alike), numbers for people (:func:`format_number`, :func:`format_estimate`),
one-line renderings of JSON-like values, key–value lists, and the glossary of the abbreviations
the checks use (:data:`GLOSSARY`), defined wherever they are shown."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from edgeproof.results import Metric

__all__ = ["GLOSSARY", "format_estimate", "format_number"]


def _e(value: object) -> str:
    """Escape any value for HTML text and attribute context."""
    return html.escape(str(value), quote=True)


def format_number(value: float | int | None) -> str:
    """A number for people: integers with thousands separators, floats to about 3 significant
    digits (``0.953``, ``12.3``, ``123.4``), ``—`` for missing or non-finite values."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    v = float(value)
    if not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    return f"{v:.3g}"


def format_estimate(metric: Metric) -> str:
    """``value [low, high]`` (e.g. ``0.953 [0.93, 0.97]``), or just the value without a CI."""
    text = format_number(metric.value)
    if metric.ci is not None:
        text += f" [{format_number(metric.ci.low)}, {format_number(metric.ci.high)}]"
    return text


#: abbreviations the checks use in metric names, columns and messages, defined wherever they are
#: shown (matched as whole tokens; ``_`` separates tokens, so ``dnl_ar_10`` shows DNL and AR)
GLOSSARY: dict[str, str] = {
    "AR": "accuracy reduction after k bit flips, (acc_clean − acc_k) / acc_clean, in %",
    "DNL": "Deep Neural Lesion: sign-bit flips chosen by weight magnitude (Galil et al. 2024)",
    "1P-DNL": "one-pass DNL: flips chosen by |weight × gradient| from one forward/backward pass",
    "ECE": "expected calibration error: mean |accuracy − confidence| over confidence bins",
    "MCE": "maximum calibration error: the largest |accuracy − confidence| of any bin",
    "NLL": "negative log-likelihood of the true class (nats)",
    "ACR": "average certified radius of randomised smoothing (L2)",
    "TIC": "Takeuchi information criterion: expected excess of new-data loss over train loss",
    "NC1": "neural collapse 1: within-class over between-class variability of the features",
    "MACs": "multiply-accumulate operations for one sample",
    "FGSM": "fast gradient sign method (one step)",
    "PGD": "projected gradient descent attack (Madry et al. 2018)",
    "APGD": "auto-PGD with the cross-entropy loss (Croce & Hein 2020)",
    "IG": "Integrated Gradients",
    "KL": "Kullback–Leibler divergence",
    "CI": "confidence interval",
    "ESD": "empirical spectral density: the eigenvalues of WᵀW",
    "MP": "Marchenko–Pastur: the spectrum of a random matrix of the same shape",
    "α": "power-law exponent of the layer's ESD tail (Martin & Mahoney); 2–6 is well trained",
    "ε": "perturbation budget of the threat model (in input units)",
}

_GLOSSARY_RE = {
    term: re.compile(
        rf"(?<![A-Za-z0-9-]){re.escape(term)}(?![A-Za-z])",
        0 if term in ("α", "ε") else re.IGNORECASE,
    )
    for term in GLOSSARY
}


def _terms_in(texts: Iterable[str]) -> list[str]:
    """The glossary terms that occur in ``texts``, in glossary order."""
    blob = "\n".join(texts)
    return [t for t, rx in _GLOSSARY_RE.items() if rx.search(blob)]


def _terms(texts: Iterable[str]) -> str:
    found = _terms_in(texts)
    if not found:
        return ""
    items = "".join(f"<dt>{_e(t)}</dt><dd>{_e(GLOSSARY[t])}</dd>" for t in found)
    return f'<dl class="terms">{items}</dl>'


def _compact(value: Any, depth: int = 0) -> str:
    """A short one-line rendering of a JSON-like value: strings as-is, numbers via
    :func:`format_number`, lists as ``[a, b]``, mappings as ``k: v; k: v``."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, Mapping):
        inner = "; ".join(f"{k}: {_compact(v, depth + 1)}" for k, v in value.items())
        return f"{{{inner}}}" if depth else inner
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact(v, depth + 1) for v in value) + "]"
    return str(value)


def _kv(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_compact(v))}</dd>" for k, v in items)
    return f'<dl class="kv">{rows}</dl>' if rows else '<p class="muted">none</p>'

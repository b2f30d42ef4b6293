"""Writing SVG: number formatting, escaping, elements, and a PNG data URI for raster images.

Everything is deterministic: numbers are written with at most two decimals, attributes in the
order given, no ids (several charts share one HTML page), no external references.
"""

from __future__ import annotations

import base64
import struct
import zlib
from html import escape

import numpy as np

__all__ = ["el", "fmt", "png_data_uri", "text_el"]


def fmt(v: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros, no ``-0``."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _attrs(attrs: dict[str, object]) -> str:
    parts = []
    for k, v in attrs.items():
        if v is None:
            continue
        name = k.rstrip("_").replace("_", "-")
        text = fmt(v) if isinstance(v, float) else str(v)
        parts.append(f' {name}="{escape(text, quote=True)}"')
    return "".join(parts)


def el(tag: str, body: str | None = None, **attrs: object) -> str:
    """One element; ``body`` is inserted as is (already SVG), ``None`` makes it self-closing.
    Attribute names: ``_`` → ``-``, a trailing ``_`` dropped (``class_``)."""
    if body is None:
        return f"<{tag}{_attrs(attrs)}/>"
    return f"<{tag}{_attrs(attrs)}>{body}</{tag}>"


def text_el(text: str, tooltip: str | None = None, **attrs: object) -> str:
    """A ``<text>`` element; ``tooltip`` adds a ``<title>`` (the full text of a shortened one)."""
    body = escape(text, quote=False)
    if tooltip:
        body += f"<title>{escape(tooltip, quote=False)}</title>"
    return el("text", body, **attrs)


def png_data_uri(rgb: np.ndarray) -> str:
    """``data:image/png;base64,…`` of an ``(H, W, 3)`` uint8 array (8-bit RGB, no filter)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"png_data_uri needs an (H, W, 3) array, got shape {a.shape}")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

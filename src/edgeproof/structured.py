"""Reading JSON and TOML documents from files edgeproof did not write, within bounds.

Every sidecar, safetensors header entry, policy, baseline report, seal, proof and protect set is
read through here, so that a hostile document fails with one line naming the file instead of a
``RecursionError`` or a ``MemoryError``:

* the size is checked before anything is read (``max_document_bytes``, or ``max_seal_bytes``
  for seals; :mod:`edgeproof.limits`);
* text must be UTF-8;
* parsing a document nested deeper than the interpreter can recurse is refused, and so is any
  document nested deeper than ``max_nesting_depth`` (measured iteratively afterwards, so the
  code that walks the document later — schema validation, our own readers — never recurses
  past it);
* JSON's ``NaN``/``Infinity`` are refused where ``allow_nan=False`` (every document edgeproof
  writes is written without them).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from edgeproof import limits
from edgeproof.errors import InputFileError

__all__ = ["check_depth", "parse_json", "parse_toml", "read_json", "read_text", "read_toml"]


def read_text(
    path: str | Path,
    *,
    error: type[InputFileError] = InputFileError,
    what: str = "file",
    limit: str = "max_document_bytes",
) -> str:
    """The UTF-8 text of ``path``, refusing files over the size limit ``limit``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise error(p, f"is a folder, not a {what}", "give the file itself")
        limits.check(error, p, limit, f"the {what}", size)
        with p.open("rb") as fh:
            raw = fh.read(getattr(limits.current(), limit) + 1)
    except FileNotFoundError:
        raise error(p, f"no such {what}", "check the path") from None
    except OSError as exc:
        raise error(p, f"cannot be read ({exc.strerror or exc})") from None
    limits.check(error, p, limit, f"the {what}", len(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            p, f"is not UTF-8 text (byte {exc.start})", f"save the {what} as UTF-8"
        ) from None


def check_depth(
    obj: Any,
    source: str | Path,
    *,
    error: type[InputFileError] = InputFileError,
    what: str = "document",
) -> None:
    """Refuse a parsed document nested deeper than ``max_nesting_depth`` (iterative walk)."""
    limit = limits.current().max_nesting_depth
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise _too_deep(error, source, what, f"more than {limit}")
        stack.extend((child, depth + 1) for child in children)


def _too_deep(
    error: type[InputFileError], source: str | Path, what: str, depth: str
) -> InputFileError:
    return error(
        source,
        f"the {what} is nested {depth} levels deep (limit max_nesting_depth="
        f"{limits.current().max_nesting_depth})",
        limits.how_to_raise("max_nesting_depth"),
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(
    text: str | bytes,
    source: str | Path,
    *,
    error: type[InputFileError] = InputFileError,
    what: str = "JSON document",
    allow_nan: bool = True,
) -> Any:
    """Parse JSON text, converting every failure into ``error(source, ...)``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(source, f"the {what} is not UTF-8 (byte {exc.start})") from None
    kwargs: dict[str, Any] = {} if allow_nan else {"parse_constant": _refuse_constant}
    try:
        obj = json.loads(text, **kwargs)
    except RecursionError:
        raise _too_deep(error, source, what, "too many") from None
    except json.JSONDecodeError as exc:
        raise error(
            source,
            f"the {what} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})",
        ) from None
    except ValueError as exc:  # NaN refused, or an integer with more digits than Python parses
        raise error(source, f"the {what} is not valid JSON ({_first_line(exc)})") from None
    check_depth(obj, source, error=error, what=what)
    return obj


def read_json(
    path: str | Path,
    *,
    error: type[InputFileError] = InputFileError,
    what: str = "JSON file",
    limit: str = "max_document_bytes",
    allow_nan: bool = True,
) -> Any:
    """Read and parse a JSON file within the limits."""
    text = read_text(path, error=error, what=what, limit=limit)
    return parse_json(text, path, error=error, what=what, allow_nan=allow_nan)


def parse_toml(
    text: str,
    source: str | Path,
    *,
    error: type[InputFileError] = InputFileError,
    what: str = "TOML document",
) -> dict[str, Any]:
    """Parse TOML text, converting every failure into ``error(source, ...)``."""
    try:
        obj = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(error, source, what, "too many") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(source, f"the {what} is not valid TOML ({_first_line(exc)})") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python parses
        raise error(source, f"the {what} is not valid TOML ({_first_line(exc)})") from None
    check_depth(obj, source, error=error, what=what)
    return obj


def read_toml(
    path: str | Path,
    *,
    error: type[InputFileError] = InputFileError,
    what: str = "TOML file",
) -> dict[str, Any]:
    """Read and parse a TOML file within the limits."""
    return parse_toml(read_text(path, error=error, what=what), path, error=error, what=what)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."

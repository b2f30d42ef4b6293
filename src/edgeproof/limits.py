"""Resource limits: how much a file may declare before edgeproof refuses to read it.

A hostile file can claim a 233 TiB array in a 200-byte header, inflate 2 MB of deflate into
2.5 GB, nest JSON ten thousand levels deep or name a class 2**40. edgeproof checks every such
declaration against these limits *before* it allocates or recurses, and refuses with one line
that names the file, the limit and how to raise it.

The defaults fit the data edgeproof is built for (CIFAR-10's 50k training images are 614 MB as
float32; a ResNet-18 is 45 MB) on a machine with a few GB of memory:

=========================  ==============  ====================================================
limit                      default         what it bounds
=========================  ==============  ====================================================
``max_document_bytes``     64 MiB          one JSON/TOML document: a sidecar, header metadata,
                                           a policy, a report, a proof, a protect set
``max_seal_bytes``         1 GiB           one seal file (~110 bytes per sealed record)
``max_nesting_depth``      64              nesting of lists/objects in any JSON/TOML document
``max_array_bytes``        1 GiB           one array as stored or decoded (an npz member, an
                                           IDX/CIFAR file, a model tensor, a dataset's inputs)
``max_model_bytes``        4 GiB           one model file, or the members of its archive together
``max_text_bytes``         256 MiB         one text data file read into memory (CSV)
``max_sample_elements``    2**26           values in one input sample (a declared shape)
``max_classes``            100 000         classes a label or a class list may imply
``max_image_pixels``       2**26           width x height of one image (8192 x 8192)
``max_archive_members``    100 000         members of one zip archive (npz, .pt, .pt2)
=========================  ==============  ====================================================

Raise a limit for a file you trust, from Python::

    import edgeproof.limits
    edgeproof.limits.configure(max_array_bytes=8 * 2**30)      # process-wide
    with edgeproof.limits.override(max_classes=1_000_000):      # for a block
        ...

or from the environment (read at import; any CLI run): ``EDGEPROOF_MAX_ARRAY_BYTES=8589934592``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import InputFileError, OptionError

__all__ = [
    "ENV_PREFIX",
    "Limits",
    "check",
    "configure",
    "current",
    "exceeded",
    "how_to_raise",
    "override",
]

ENV_PREFIX = "EDGEPROOF_"


@dataclass(frozen=True)
class Limits:
    """The resource limits (see the module docstring for what each bounds)."""

    max_document_bytes: int = 64 * 2**20
    max_seal_bytes: int = 2**30
    max_nesting_depth: int = 64
    max_array_bytes: int = 2**30
    max_model_bytes: int = 4 * 2**30
    max_text_bytes: int = 256 * 2**20
    max_sample_elements: int = 2**26
    max_classes: int = 100_000
    max_image_pixels: int = 2**26
    max_archive_members: int = 100_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(
                    f.name, f"{value!r} is not a positive integer", "give a limit >= 1"
                )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """Defaults, overridden by ``EDGEPROOF_<NAME>`` environment variables."""
        env = os.environ if environ is None else environ
        changes: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            var = ENV_PREFIX + f.name.upper()
            text = env.get(var)
            if text is None:
                continue
            try:
                changes[f.name] = int(text.strip().replace("_", ""))
            except ValueError:
                raise OptionError(
                    var, f"{text!r} is not an integer", f"set e.g. {var}=1073741824"
                ) from None
        return cls(**changes)


_current = Limits.from_env()


def current() -> Limits:
    """The limits in force."""
    return _current


def configure(**changes: int) -> Limits:
    """Change limits process-wide (e.g. ``configure(max_array_bytes=8 * 2**30)``)."""
    global _current
    _current = _with(_current, changes)
    return _current


@contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Change limits inside a ``with`` block, restoring them afterwards."""
    global _current
    saved = _current
    _current = _with(saved, changes)
    try:
        yield _current
    finally:
        _current = saved


def _with(limits: Limits, changes: dict[str, int]) -> Limits:
    names = {f.name for f in dataclasses.fields(Limits)}
    for key in changes:
        if key not in names:
            raise OptionError(key, "is not a resource limit", f"use one of {', '.join(names)}")
    return dataclasses.replace(limits, **changes)


def how_to_raise(name: str) -> str:
    """The fix text for a limit: the Python call and the environment variable."""
    return (
        f"if you trust the file, raise the limit with edgeproof.limits.configure({name}=...) "
        f"or the environment variable {ENV_PREFIX}{name.upper()}"
    )


def exceeded(
    error: type[InputFileError],
    path: str | Path,
    name: str,
    what: str,
    value: int,
) -> InputFileError:
    """The error to raise when ``what`` (``value``) is over the limit ``name``.

    Example: ``raise exceeded(DataFileError, path, "max_array_bytes", "array 'x'", nbytes)``.
    """
    limit = getattr(_current, name)
    return error(
        path,
        f"{what} needs {value:,} but the limit {name} is {limit:,}",
        how_to_raise(name),
    )


def check(
    error: type[InputFileError],
    path: str | Path,
    name: str,
    what: str,
    value: int,
) -> None:
    """Raise :func:`exceeded` if ``value`` is over the limit ``name``."""
    if value > getattr(_current, name):
        raise exceeded(error, path, name, what, value)

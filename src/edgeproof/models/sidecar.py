"""The JSON sidecar next to a model file (see :mod:`~edgeproof.models.loading`): read and
checked, and the input spec, metadata and architecture it records."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeproof.errors import (
    ModelFileError,
    UserError,
    param,
)
from edgeproof.models.zoo import ZOO
from edgeproof.spec import InputSpec
from edgeproof.structured import read_json

_SIDECAR_FORMAT = "edgeproof-model"


_SIDECAR_VERSION = 1


_ZOO_ARCH = re.compile(r"zoo:[A-Za-z0-9_\-]+")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The edgeproof metadata next to ``path`` (``<stem>.json``), or ``None`` if there is none.

    Raises :class:`ModelFileError` for a sidecar that is not valid JSON, is too large or too
    deeply nested, is from a newer edgeproof, or has a malformed field. A ``.json`` of another
    format is ignored.
    """
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    obj = read_json(side, error=ModelFileError, what="sidecar metadata")
    return _check_sidecar(side, obj)


def _check_sidecar(where: Path, obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or obj.get("format") != _SIDECAR_FORMAT:
        return None
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > _SIDECAR_VERSION:
        raise ModelFileError(
            where,
            f"sidecar metadata version {version!r} is not supported (this edgeproof "
            f"reads version {_SIDECAR_VERSION})",
            "upgrade edgeproof",
        )
    arch = obj.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise ModelFileError(where, f"sidecar 'arch' is {arch!r}, not a string", _SIDECAR_FIX)
    return obj


_SIDECAR_FIX = "fix or delete the sidecar and pass arch=/spec= explicitly"


def _spec_of(where: Path, sidecar: Mapping[str, Any] | None) -> InputSpec | None:
    if not sidecar or not sidecar.get("spec"):
        return None
    raw = sidecar["spec"]
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"it is a {type(raw).__name__}, not an object")
        return InputSpec.from_json(raw)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ModelFileError(
            where, f"sidecar 'spec' is malformed ({type(exc).__name__}: {exc})", _SIDECAR_FIX
        ) from None
    except UserError as exc:  # SpecError: shape/domain/classes out of range
        raise ModelFileError(where, f"sidecar 'spec' is invalid ({exc})", _SIDECAR_FIX) from None


def _metadata_of(sidecar: Mapping[str, Any] | None) -> dict[str, Any]:
    if not sidecar:
        return {}
    return {k: v for k, v in sidecar.items() if k not in ("format", "version", "spec", "arch")}


def _file_arch(where: Path, sidecar: Mapping[str, Any] | None) -> str | None:
    """The architecture a sidecar/header names, which may only be ``zoo:NAME``."""
    arch = (sidecar or {}).get("arch")
    if arch is None:
        return None
    if not isinstance(arch, str) or not _ZOO_ARCH.fullmatch(arch) or arch[4:] not in ZOO:
        shown = repr(arch) if len(repr(arch)) <= 80 else repr(arch)[:77] + "..."
        raise ModelFileError(
            where,
            f"names the architecture {shown}; an architecture read from a file may only name "
            f"the zoo ({', '.join('zoo:' + n for n in ZOO)}), so edgeproof does not import it",
            f"pass {param('arch')} package.module:callable yourself if you trust that code, "
            "or fix the metadata",
        )
    return arch

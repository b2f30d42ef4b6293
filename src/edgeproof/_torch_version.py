"""The torch versions edgeproof supports, checked when ``edgeproof`` is imported.

The range is the one the test suite proves (``make pytest`` on the pinned torch, ``make compat`` on
the other allowed minor version, recorded in ``docs/compatibility.md``) and the one
``pyproject.toml`` declares. The check reads the installed distribution's metadata, so it does not
import torch (``import edgeproof`` stays cheap). ``EDGEPROOF_ANY_TORCH=1`` skips it (to try a
version outside the range at your own risk).
"""

from __future__ import annotations

import os
import re
import sys
from itertools import pairwise
from pathlib import Path

__all__ = ["SUPPORTED_TORCH", "check_torch", "torch_problem"]

#: the supported range, as pyproject.toml declares it: ``>=`` the first, ``<`` the second
SUPPORTED_TORCH: tuple[tuple[int, int], tuple[int, int]] = ((2, 13), (2, 15))
_RANGE = "torch>={}.{},<{}.{}".format(*SUPPORTED_TORCH[0], *SUPPORTED_TORCH[1])


def torch_problem(version: str | None) -> str | None:
    """Why ``version`` (the installed torch's, ``None`` when torch is not installed) is not
    supported, in one line naming the supported range; ``None`` when it is supported."""
    if version is None:
        return f"edgeproof needs torch ({_RANGE}), which is not installed: pip install '{_RANGE}'"
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        return f"edgeproof cannot read the installed torch's version {version!r}; it needs {_RANGE}"
    got = (int(m.group(1)), int(m.group(2)))
    low, high = SUPPORTED_TORCH
    if low <= got < high:
        return None
    return (
        f"edgeproof supports {_RANGE}; torch {version} is installed: "
        f"pip install '{_RANGE}' (or set EDGEPROOF_ANY_TORCH=1 to try it anyway)"
    )


def _installed_torch() -> str | None:
    """The installed torch's version: the ``Version:`` line of the first ``torch-*.dist-info``
    on ``sys.path`` (the one ``importlib.metadata`` would find; reading it directly saves the
    ~0.1 s that importing ``importlib.metadata`` costs every command), else what
    ``importlib.metadata`` says (other install layouts: eggs, zip imports)."""
    for entry in sys.path:
        try:
            names = [e.name for e in os.scandir(entry or ".") if e.name.startswith("torch-")]
        except OSError:
            continue
        for name in sorted(names):
            if not name.endswith(".dist-info") or _DIST_NAME.fullmatch(name) is None:
                continue
            version = _version_line(Path(entry or ".", name, "METADATA"))
            if version is not None:
                return version
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


#: a torch distribution's metadata folder, ``torch-2.13.0+cpu.dist-info``
_DIST_NAME = re.compile(r"torch-[0-9][^-]*\.dist-info")


def _version_line(path: Path) -> str | None:
    """The ``Version:`` header of a distribution's METADATA file, ``None`` if unreadable."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():  # end of the headers
                    break
    except OSError:
        return None
    return None


def _running_the_cli() -> bool:
    """True when this process is the ``edgeproof`` command or ``python -m edgeproof``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if argv0.name == "edgeproof":
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(a == "-m" and b == "edgeproof" for a, b in pairwise(orig))


def check_torch() -> None:
    """Refuse an unsupported torch: the ``edgeproof`` command prints one line and exits with
    code 2; ``import edgeproof`` raises ``ImportError`` with the same line."""
    if os.environ.get("EDGEPROOF_ANY_TORCH") == "1":
        return
    problem = torch_problem(_installed_torch())
    if problem is None:
        return
    if _running_the_cli():
        print(f"edgeproof: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(problem)

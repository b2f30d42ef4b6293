"""Inputs are never outputs: check where a command will write before it reads anything.

:func:`check_output_paths` is called with everything a command will write (files, or folders with
the names it writes into them) and everything it reads. It refuses, with one
:class:`~edgeproof.errors.OptionError` naming the library parameter (``out`` by default):

* an output that **is** an input — the same path, the same file through a symlink (paths are
  resolved) or a hard link (same device and inode);
* an output folder that **contains** an input (writing into it could replace it), and an output
  inside an input folder (writing there changes that input, e.g. adds a record to an image
  folder);
* an output folder whose files **would replace** an input (``out/report.json`` hard-linked to
  the model, or a symlink to it);
* an output that cannot be written: a file path that is an existing folder, a folder path that
  is an existing file, a parent that is a file, or a parent folder without write permission.

Nothing is created or written by the check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeproof.errors import OptionError

__all__ = ["Output", "check_output_paths"]


@dataclass(frozen=True)
class Output:
    """Something a command will write.

    Attributes:
        path: the file, or the folder, written.
        kind: ``file`` or ``folder``.
        files: for a folder, the names written inside it (``report.json``, ``report.html``).
        option: the library parameter that named it, for the error message.
    """

    path: Path
    kind: Literal["file", "folder"] = "file"
    files: tuple[str, ...] = ()
    option: str = "out"

    @classmethod
    def folder(cls, path: str | Path, files: Iterable[str] = (), option: str = "out") -> Output:
        return cls(Path(path), "folder", tuple(files), option)

    @classmethod
    def file(cls, path: str | Path, option: str = "out") -> Output:
        return cls(Path(path), "file", (), option)


def check_output_paths(
    outputs: Sequence[Output | str | Path],
    inputs: Sequence[str | Path | None],
    *,
    option: str = "out",
) -> None:
    """Refuse any output that is, contains or would replace an input, or cannot be written.

    Args:
        outputs: what will be written; a plain path is a file output named by ``option``.
        inputs: what will be read (files or folders); ``None`` and ``builtin:<name>`` are
            skipped, as are paths that do not exist.
        option: the parameter name for plain-path outputs.

    Raises:
        OptionError: one line naming the parameter, the output, the input and why.
    """
    outs = [o if isinstance(o, Output) else Output.file(o, option) for o in outputs]
    ins = [Path(i) for i in inputs if i is not None and not str(i).startswith("builtin:")]
    ins = [i for i in ins if os.path.lexists(i)]
    for out in outs:
        _check_writable(out)
        targets = [out.path]
        if out.kind == "folder":
            targets += [out.path / name for name in out.files]
        for given in ins:
            real = given.resolve()
            for target in targets:
                if _same(target, given):
                    raise OptionError(
                        out.option,
                        f"{target} is the input {given}; writing it would destroy the input",
                        "write to another path",
                    )
            if out.kind == "folder" and _within(real, out.path.resolve()):
                raise OptionError(
                    out.option,
                    f"the output folder {out.path} contains the input {given}; writing there "
                    "could replace it",
                    "write to a folder that holds none of the inputs",
                )
            if given.is_dir() and _within(out.path.resolve(), real):
                raise OptionError(
                    out.option,
                    f"{out.path} is inside the input folder {given}; writing there would change "
                    "that input",
                    "write outside the input folders",
                )


def _same(target: Path, given: Path) -> bool:
    if target.resolve() == given.resolve():
        return True
    try:
        return os.path.samefile(target, given)  # hard links: same device and inode
    except OSError:
        return False


def _within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _check_writable(out: Output) -> None:
    p = out.path
    if out.kind == "file" and p.is_dir():
        raise OptionError(out.option, f"{p} is a folder", "give the path of a file to write")
    if out.kind == "folder" and p.exists() and not p.is_dir():
        raise OptionError(out.option, f"{p} is a file, not a folder", "give a folder path")
    if out.kind == "folder":
        for name in out.files:
            if (p / name).is_dir():
                raise OptionError(
                    out.option, f"{p / name} is a folder, but a file would be written there"
                )
    start = p if out.kind == "folder" else p.parent
    parent = _nearest_existing(start)
    if not parent.is_dir():
        raise OptionError(out.option, f"{p} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(
            out.option,
            f"{p} cannot be written: no write permission in {parent}",
            "choose a writable folder",
        )


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p

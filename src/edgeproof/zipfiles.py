"""Reading zip archives from files edgeproof did not write (``.npz``, ``.pt``, ``.pt2``).

:class:`ZipArchive` wraps :mod:`zipfile` so that a hostile archive fails with one line naming
the file, whatever is wrong with it:

* the number of members is bounded (``max_archive_members``);
* a member is read only if its *declared* decompressed size is within ``max_array_bytes`` (or
  the limit the caller names) and no more than that many bytes are ever inflated, so a deflate
  bomb costs its declared size at most; a member that inflates to a different size than it
  declares, or fails its CRC, is refused;
* encrypted members and members that need a newer zip version or an unsupported compression
  method are refused;
* every exception :mod:`zipfile`, :mod:`zlib`, :mod:`bz2` or :mod:`lzma` raises is converted to
  the caller's error class (``DataFileError``, ``ModelFileError``) with the path.
"""

from __future__ import annotations

import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from edgeproof import limits
from edgeproof.errors import InputFileError

__all__ = ["ZIP_ERRORS", "ZipArchive", "is_zip"]

ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    struct.error,
    OverflowError,
    RuntimeError,
    KeyError,
    UnicodeDecodeError,
    IndexError,
)
"""What reading a damaged zip can raise (``bz2`` raises ``OSError``/``ValueError``)."""

_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


def is_zip(path: str | Path) -> bool:
    """True if the file looks like a zip archive (``zipfile.is_zipfile``, which itself raises
    ``BadZipFile`` for some damaged archives — those count as zips, to be refused when read)."""
    try:
        return zipfile.is_zipfile(path)
    except ZIP_ERRORS:
        return True


class ZipArchive:
    """A zip archive opened for bounded reading (use as a context manager)."""

    def __init__(
        self, path: str | Path, error: type[InputFileError], *, what: str = "zip archive"
    ) -> None:
        self.path = Path(path)
        self.error = error
        self.what = what
        try:
            self._zip = zipfile.ZipFile(self.path)
        except ZIP_ERRORS as exc:
            raise error(self.path, f"is not a readable {what} ({_short(exc)})") from None
        infos = self._zip.infolist()
        try:
            limits.check(error, self.path, "max_archive_members", "the member count", len(infos))
        except InputFileError:
            self._zip.close()
            raise
        self._infos = {i.filename: i for i in infos}

    def __enter__(self) -> ZipArchive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def names(self) -> list[str]:
        """Member names in archive order."""
        return list(self._infos)

    def info(self, name: str) -> zipfile.ZipInfo:
        """The member's ZipInfo (``error`` if it is absent)."""
        info = self._infos.get(name)
        if info is None:
            raise self.error(self.path, f"has no member {name!r}")
        return info

    def size(self, name: str) -> int:
        """The declared decompressed size of a member."""
        return int(self.info(name).file_size)

    def _checked(self, name: str, limit: str) -> zipfile.ZipInfo:
        info = self.info(name)
        if info.flag_bits & 0x1:
            raise self.error(self.path, f"member {name!r} is encrypted", "give an unencrypted file")
        if info.compress_type not in _METHODS:
            raise self.error(
                self.path,
                f"member {name!r} uses zip compression method {info.compress_type}, which is "
                "not supported (stored, deflate, bzip2, lzma are)",
                "re-create the archive with standard compression",
            )
        limits.check(self.error, self.path, limit, f"member {name!r}", int(info.file_size))
        return info

    def open(self, name: str, *, limit: str = "max_array_bytes") -> IO[bytes]:
        """A stream over a member whose declared size is within ``limit``.

        :mod:`zipfile` stops inflating at the declared size and checks the CRC at the end.
        Callers that read from the stream must convert :data:`ZIP_ERRORS` themselves (or use
        :meth:`read`).
        """
        info = self._checked(name, limit)
        try:
            return self._zip.open(info)
        except ZIP_ERRORS as exc:
            raise self.error(self.path, f"member {name!r} cannot be read ({_short(exc)})") from None

    def read(self, name: str, *, limit: str = "max_array_bytes") -> bytes:
        """A member's bytes: declared size within ``limit``, inflated size equal to it, CRC ok."""
        info = self._checked(name, limit)
        try:
            with self._zip.open(info) as fh:
                data = fh.read(int(info.file_size) + 1)
        except ZIP_ERRORS as exc:
            raise self.error(self.path, f"member {name!r} cannot be read ({_short(exc)})") from None
        if len(data) != info.file_size:
            raise self.error(
                self.path,
                f"member {name!r} declares {info.file_size} bytes but holds {len(data)}",
                "the archive is corrupt; re-create it",
            )
        return data

    def read_text(self, name: str, *, limit: str = "max_document_bytes") -> str:
        """A member as UTF-8 text."""
        data = self.read(name, limit=limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(
                self.path, f"member {name!r} is not UTF-8 text (byte {exc.start})"
            ) from None

    def iter_names(self, suffix: str = "") -> Iterator[str]:
        return (n for n in self._infos if n.endswith(suffix))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."

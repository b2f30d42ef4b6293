"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The data goes to a temporary file in the target's folder (``.<name>.<random>.tmp``), is flushed
and ``fsync``\\ ed, and replaces the target with ``os.replace`` (atomic on POSIX and Windows). The
temporary file is removed on every exit path:

* an exception, ``KeyboardInterrupt`` (``SIGINT``) or ``SystemExit`` — the ``except`` clause;
* ``SIGTERM`` and ``SIGHUP`` — while a write is in flight in the main thread, a handler removes
  every temporary file of writes in flight, then hands the signal to the handler that was there
  before (re-raising it with the default action, so the exit status still says "killed by
  SIGTERM").

``SIGKILL`` cannot be caught: a ``kill -9`` during a write can leave a temporary file, but never
a half-written target (the old file stays until ``os.replace``).

A target that cannot be written (a folder, a read-only folder, a parent that is a file, a full
disk) raises :class:`~edgeproof.errors.OptionError` naming ``option`` (the library parameter that
chose the path) and the OS reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from edgeproof.errors import OptionError

__all__ = ["atomic_write_bytes", "atomic_write_text"]

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_live: set[str] = set()
_lock = threading.Lock()
_previous: dict[int, Any] = {}
_depth = 0


def atomic_write_bytes(path: str | Path, data: bytes, *, option: str = "out") -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    target = Path(path)
    if target.is_dir():
        raise OptionError(option, f"{target} is a folder", "give the path of a file to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(option, target, exc) from None
    with _cleanup_on_signals():
        with _signals_blocked():  # no signal between creating the file and registering it
            try:
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
                )
            except OSError as exc:
                raise _unwritable(option, target, exc) from None
            with _lock:
                _live.add(tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise _unwritable(option, target, exc) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            with _lock:
                _live.discard(tmp)
    return target


def atomic_write_text(path: str | Path, text: str, *, option: str = "out") -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), option=option)


def _unwritable(option: str, target: Path, exc: OSError) -> OptionError:
    return OptionError(
        option,
        f"{target} cannot be written ({exc.strerror or exc})",
        "choose a writable path with free space",
    )


@contextmanager
def _cleanup_on_signals() -> Iterator[None]:
    """Install the temp-file cleanup handlers for the duration of a write (main thread only)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        for sig in _SIGNALS:
            try:
                _previous[sig] = signal.signal(sig, _on_signal)
            except (ValueError, OSError):  # not allowed here (embedded interpreter)
                _previous.pop(sig, None)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for sig, handler in list(_previous.items()):
                signal.signal(sig, handler)
            _previous.clear()


@contextmanager
def _signals_blocked() -> Iterator[None]:
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or not _SIGNALS:
        yield
        return
    mask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        mask(signal.SIG_UNBLOCK, _SIGNALS)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    with _lock:
        pending = list(_live)
    for tmp in pending:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    previous = _previous.pop(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    os.kill(os.getpid(), signum)  # the default action, with the default handler back

"""Memory: peak resident set size of this process, or of a fresh process running a graph."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import numpy as np

__all__ = ["RssProbe", "path_bytes", "peak_rss_mib", "probe_peak_rss_mib"]


def peak_rss_mib() -> float:
    """Peak RSS of this process so far in MiB (``getrusage(RUSAGE_SELF).ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def path_bytes(path: Path) -> int | None:
    """Size on disk of a file, or of every file under a folder; ``None`` if it does not exist."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


_RSS_PROBE = """
import resource, sys
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = int(sys.argv[2])
so.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[3])
sess.run(None, {sess.get_inputs()[0].name: x})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


class RssProbe:
    """A fresh Python process that loads a graph in ONNX Runtime, runs one batch of up to 64
    records and reports its peak RSS (``ru_maxrss``; includes the Python + ORT runtime itself).

    Started on construction; :meth:`result` waits for it. Starting the probe before other work
    and collecting it after lets that work run meanwhile (the probe is another process: it
    measures its own memory, whatever this one does)."""

    def __init__(self, onnx_bytes: bytes, x: np.ndarray, *, threads: int = 1) -> None:
        import subprocess
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        model = os.path.join(self._tmp.name, "m.onnx")
        data = os.path.join(self._tmp.name, "x.npy")
        with open(model, "wb") as fh:
            fh.write(onnx_bytes)
        np.save(data, np.ascontiguousarray(x[:64], np.float32))
        self._proc: subprocess.Popen[str] | None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _RSS_PROBE, model, str(threads), data],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self._proc = None

    def result(self, timeout: float = 120.0) -> float | None:
        """Peak RSS in MiB, or ``None`` if the probe process failed."""
        import subprocess

        try:
            if self._proc is None:
                return None
            out, _ = self._proc.communicate(timeout=timeout)
            if self._proc.returncode != 0:
                return None
            return int(out.strip().splitlines()[-1]) / 1024.0
        except subprocess.TimeoutExpired:
            assert self._proc is not None
            self._proc.kill()
            self._proc.communicate()
            return None
        except (ValueError, IndexError):
            return None
        finally:
            self._tmp.cleanup()


def probe_peak_rss_mib(onnx_bytes: bytes, x: np.ndarray, *, threads: int = 1) -> float | None:
    """Peak RSS (MiB) of a fresh Python process that loads the graph in ONNX Runtime and runs
    one batch of up to 64 records (:class:`RssProbe`, waited for). ``None`` if the probe
    process fails."""
    return RssProbe(onnx_bytes, x, threads=threads).result()

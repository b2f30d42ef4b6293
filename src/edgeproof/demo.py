"""``edgeproof demo``: the main job on the built-in model and data.

Trains a zoo CNN on ``builtin:digits/train`` (deterministic; cached after the first run), audits
it on ``builtin:digits`` (the held-out test split) with every applicable check, and writes
``report.json`` + ``report.html``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from edgeproof._version import __version__
from edgeproof.data.loading import load_data
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import load_model
from edgeproof.models.train import train_and_save
from edgeproof.report.files import ReportFiles, write_report
from edgeproof.report.report import Report
from edgeproof.runner import audit
from edgeproof.runtime.threads import torch_threads

__all__ = ["DEMO_ARCH", "DemoResult", "demo_model", "run_demo"]

DEMO_ARCH = "zoo:lenet5"
DEMO_EPOCHS = 30
DEMO_SEED = 0
DEMO_LR = 3e-3


@dataclass(frozen=True)
class DemoResult:
    """The demo's report, where it was written, and whether the model came from the cache."""

    report: Report
    files: ReportFiles
    model_path: Path
    cached: bool
    train_seconds: float


def cache_dir() -> Path:
    """``$EDGEPROOF_CACHE`` or ``$XDG_CACHE_HOME/edgeproof`` or ``~/.cache/edgeproof``."""
    env = os.environ.get("EDGEPROOF_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeproof"


def demo_model(cache: Path | None = None) -> tuple[LoadedModel, bool, float]:
    """The demo model, from the cache or trained (then cached): ``(model, cached, seconds)``."""
    folder = cache or cache_dir()
    name = f"demo-{__version__}-{DEMO_ARCH.split(':')[-1]}-e{DEMO_EPOCHS}-s{DEMO_SEED}"
    path = folder / f"{name}.safetensors"
    if path.exists() and path.with_suffix(".json").exists():
        try:
            return load_model(path), True, 0.0
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    train = load_data("builtin:digits/train")
    train_and_save(DEMO_ARCH, train, path, epochs=DEMO_EPOCHS, seed=DEMO_SEED, lr=DEMO_LR)
    seconds = time.perf_counter() - t0
    return load_model(path), False, seconds


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    cache: Path | None = None,
    progress: bool = True,
    seed: int = 0,
    threads: int | None = None,
) -> DemoResult:
    """Train-or-reuse the demo model, audit it on the digits test split, write the report.

    ``threads``: the CPU threads the audit may use (default: one per check, all cores for the
    checks that gain from them); training runs on one thread unless ``threads`` is given.
    """
    with torch_threads(threads or 1):
        model, cached, seconds = demo_model(cache)
    data = load_data("builtin:digits")
    report = audit(model, data, seed=seed, out_dir=out_dir, progress=progress, threads=threads)
    files = write_report(report, out_dir)
    assert model.path is not None
    return DemoResult(report, files, model.path, cached, seconds)

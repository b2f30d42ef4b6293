"""Scan every model in a folder for a backdoor: :func:`scan_folder` → a typed :class:`ScanReport`.

Each model file of the folder (the formats :func:`edgeproof.models.loading.load_model` reads:
``.safetensors`` with or without a sidecar, TorchScript, ``.pt2``, ``.onnx``, state-dict ``.pt``)
is loaded and scanned by :func:`edgeproof.methods.backdoor.scan_model` — the data-free detectors,
and with clean samples Neural Cleanse and STRIP — in its own worker process
(``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method, ``jobs`` workers,
one torch thread each; ``jobs=1`` scans in this process). A file that cannot be read, a model
whose last layer is not a classifier head and a model the scan refuses are listed with the
reason, and the scan goes on; a worker that crashes marks its model ``crashed`` (with the
traceback) and the others go on.

Decisions are each detector's against its calibrated threshold for the model's architecture
(the shipped ``thresholds.json`` or ``thresholds``; the pooled threshold for an architecture the
calibration population did not contain), or against a threshold the caller gives per detector
(``threshold_overrides``, every architecture). Models are grouped by architecture (the thresholds
are per architecture) and ranked by their **threshold ratio**: the largest ``score / threshold``
over the detectors that have a threshold (> 1: over the threshold, i.e. flagged; a detector whose
score is NaN, or whose threshold is ≤ 0 and is exceeded, counts as ``inf``; one that does not
exceed a threshold ≤ 0 as 0). Models without a ratio (not scanned) come last.

Clean samples (``clean``) are used on the models whose input shape they fit (the others are
scanned data-free, and the report says so), at most ``max_clean_samples`` of them.

Ground truth: a folder written by ``edgeproof make-population`` holds a ``population.json`` with
each model's label; the report then also measures each detector on this folder, as
``benchmarks/bench_backdoor.py`` does on its evaluation population: TPR over the ``backdoored``
models and FPR over the ``clean`` ones at the thresholds used, each with a 95 % Wilson interval,
and the AUROC of the scores (Mann–Whitney, ties counted ½); ``attack-failed`` models count as
neither. A ``population.json`` that cannot be read is noted and ignored.
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.data.dataset import Dataset
from edgeproof.errors import InputFileError, OptionError, UserError
from edgeproof.execute import Executor, ResultCache, TaskOutcome, executor_for, file_digest
from edgeproof.methods.backdoor import (
    DATA_FREE_DETECTORS,
    BackdoorScan,
    DetectorResult,
    DetectorVerdict,
    FreeEagleConfig,
    NeuralCleanseConfig,
    NotAClassifierError,
    ReversedTrigger,
    STRIPConfig,
    StripSummary,
    StripThreshold,
    Threshold,
    Thresholds,
    scan_model,
    shipped_thresholds,
)
from edgeproof.methods.backdoor.thresholds import POOLED
from edgeproof.models.loaded import LoadedModel
from edgeproof.models.loading import SUPPORTED_SUFFIXES, load_model
from edgeproof.scan_results import (
    SCAN_FORMAT,
    ModelScan,
    ScanReport,
    ScanSettings,
    ScanStatus,
    _rank_key,
)
from edgeproof.scan_results import SCAN_SCHEMA_VERSION as SCAN_SCHEMA_VERSION

__all__ = [
    "SCAN_FORMAT",
    "ModelScan",
    "ScanReport",
    "ScanSettings",
    "ScanStatus",
    "model_files",
    "scan_folder",
    "with_overrides",
]


# --------------------------------------------------------------------------------------------
# Files and thresholds


def model_files(folder: str | Path) -> tuple[list[Path], list[str]]:
    """The model files directly inside ``folder`` (by extension, sorted) and the other files
    (sidecar ``<stem>.json`` files of a model and ``population.json`` are neither).

    Raises :class:`OptionError` (``folder``) for a path that is not a folder, and for a folder
    with no model file.
    """
    p = Path(folder)
    if not p.exists():
        raise OptionError("folder", f"{p} does not exist", "give the folder that holds the models")
    if not p.is_dir():
        raise OptionError("folder", f"{p} is not a folder", "give the folder that holds the models")
    entries = sorted(e for e in p.iterdir() if e.is_file())
    models = [e for e in entries if e.suffix.lower() in SUPPORTED_SUFFIXES]
    stems = {m.stem for m in models}
    other = [
        e.name
        for e in entries
        if e not in models
        and not (e.suffix == ".json" and (e.stem in stems or e.stem == "population"))
    ]
    if not models:
        raise OptionError(
            "folder",
            f"{p} holds no model file ({', '.join(SUPPORTED_SUFFIXES)})",
            "give the folder that holds the models",
        )
    return models, other


def _labels(root: Path) -> tuple[dict[str, str], list[str]]:
    """``{file: label}`` from ``root/population.json`` (written by make-population), and notes."""
    from edgeproof.structured import read_json

    path = root / "population.json"
    if not path.is_file():
        return {}, []
    try:
        obj = read_json(path, what="population index")
        if not isinstance(obj, dict) or obj.get("format") != "edgeproof-backdoor-population":
            raise ValueError("not an edgeproof population index")
        labels = {str(m["path"]): str(m["label"]) for m in obj["members"]}
    except (UserError, ValueError, KeyError, TypeError) as exc:
        return {}, [f"population.json ignored: {exc}"]
    return labels, [f"ground truth from population.json ({len(labels)} labelled models)"]


def with_overrides(thresholds: Thresholds, overrides: Mapping[str, float]) -> Thresholds:
    """``thresholds`` with each detector in ``overrides`` decided at that value on every
    architecture (recorded as given, not calibrated: ``n_clean`` 0)."""
    known = (*DATA_FREE_DETECTORS, "neural-cleanse")
    by = {d: dict(t) for d, t in thresholds.by_detector.items()}
    for det, value in overrides.items():
        if det not in DATA_FREE_DETECTORS:
            raise OptionError(
                "threshold_overrides",
                f"{det!r} is not a detector with a calibrated threshold",
                f"use some of {', '.join(DATA_FREE_DETECTORS)}"
                + (" (neural-cleanse decides by its anomaly index > 2)" if det in known else ""),
            )
        if not math.isfinite(float(value)):
            raise OptionError("threshold_overrides", f"{det}: {value} is not a finite number")
        by[det] = {POOLED: Threshold(float(value), 0, math.nan, POOLED)}
    return replace(thresholds, by_detector=by)


# --------------------------------------------------------------------------------------------
# One model (runs in a worker)


def _scan_file(
    path: Path, root: Path, settings: ScanSettings, clean: np.ndarray | None
) -> ModelScan:
    """Load and scan one file; every failure becomes this file's status (never raised)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    name = path.relative_to(root).as_posix()
    model = _load_or_status(path, name, settings, t0)
    if isinstance(model, ModelScan):
        return model
    spec = model.spec
    names = tuple(spec.class_names) if spec is not None and spec.class_names else ()
    base = ModelScan(name, "scanned", arch=model.arch, format=model.format)
    notes: list[str] = []
    clean_x = _usable_clean(model, clean, notes)
    scan = _scan_or_status(model, settings, clean_x, base, t0)
    if isinstance(scan, ModelScan):
        return scan
    k = scan.num_classes
    if len(names) != k:
        names = tuple(str(i) for i in range(k))
    return replace(
        base,
        classes=names,
        scan=scan,
        used_data=clean_x is not None,
        notes=tuple(notes),
        duration_s=time.perf_counter() - t0,
    )


def _load_or_status(
    path: Path, name: str, settings: ScanSettings, t0: float
) -> LoadedModel | ModelScan:
    """The loaded model, or the file's ``unreadable`` status with the reason."""
    try:
        return load_model(path, trust_code=settings.trust_code)
    except UserError as exc:
        return ModelScan(
            name, "unreadable", exc.render(settings.name_of), duration_s=time.perf_counter() - t0
        )
    except Exception as exc:  # a loader that failed on a broken file: still this file's problem
        return ModelScan(
            name,
            "unreadable",
            f"{path}: could not be read ({type(exc).__name__}: {str(exc)[:200]})",
            duration_s=time.perf_counter() - t0,
        )


def _usable_clean(
    model: LoadedModel, clean: np.ndarray | None, notes: list[str]
) -> np.ndarray | None:
    """The clean samples if this model can use them (it has a module and an input spec of
    their shape); otherwise ``None``, with the reason appended to ``notes``."""
    if clean is None:
        return None
    spec = model.spec
    if model.module is None:
        notes.append("clean samples not used: Neural Cleanse and STRIP need the module")
    elif spec is None:
        notes.append("clean samples not used: the model has no input spec (no sidecar)")
    elif tuple(clean.shape[1:]) != tuple(spec.shape):
        notes.append(
            f"clean samples not used: they have shape {list(clean.shape[1:])}, the model "
            f"takes {list(spec.shape)}"
        )
    else:
        return clean
    return None


def _scan_or_status(
    model: LoadedModel,
    settings: ScanSettings,
    clean_x: np.ndarray | None,
    base: ModelScan,
    t0: float,
) -> BackdoorScan | ModelScan:
    """The detectors' scan of the model, or its status when they cannot run
    (``not-a-classifier``, ``refused``) or crash (with the traceback)."""
    try:
        return scan_model(
            model,
            detectors=settings.detectors,
            clean_x=clean_x,
            thresholds=settings.thresholds,
            freeeagle_config=FreeEagleConfig(steps=settings.freeeagle_steps),
            neural_cleanse_config=NeuralCleanseConfig(
                epochs=settings.nc_epochs, max_seconds=settings.nc_max_seconds
            ),
            strip=STRIPConfig(num_samples=settings.strip_samples, fpr=settings.strip_fpr),
            max_clean_samples=settings.max_clean_samples,
            seed=settings.seed,
        )
    except NotAClassifierError as exc:
        return replace(
            base,
            status="not-a-classifier",
            reason=exc.render(settings.name_of),
            duration_s=time.perf_counter() - t0,
        )
    except UserError as exc:
        return replace(
            base,
            status="refused",
            reason=exc.render(settings.name_of),
            duration_s=time.perf_counter() - t0,
        )
    except Exception as exc:
        return replace(
            base,
            status="crashed",
            reason=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            duration_s=time.perf_counter() - t0,
        )


# --------------------------------------------------------------------------------------------
# The folder


def scan_folder(
    folder: str | Path,
    *,
    clean: Dataset | None = None,
    jobs: int = 1,
    executor: str | Executor = "processes",
    ray_address: str | None = None,
    cache: str | Path | None = None,
    detectors: Sequence[str] = DATA_FREE_DETECTORS,
    thresholds: Thresholds | None = None,
    threshold_overrides: Mapping[str, float] | None = None,
    freeeagle_steps: int = 1000,
    nc_epochs: int = 20,
    nc_max_seconds: float | None = 30.0,
    max_clean_samples: int = 128,
    trust_code: bool = False,
    seed: int = 0,
    progress: Callable[[ModelScan], None] | None = None,
    name_of: Callable[[str], str] | None = None,
) -> ScanReport:
    """Scan every model file directly inside ``folder`` (module docstring).

    Args:
        folder: the folder (:class:`OptionError` if it is not one or holds no model file).
        clean: clean samples (a dataset in the models' raw input units); Neural Cleanse and STRIP
            run on the models whose input shape they fit.
        jobs: workers (one torch thread each); 1 scans in this process.
        executor: one task per model on ``"processes"`` (the default), ``"inprocess"``,
            ``"ray"`` or an :class:`~edgeproof.execute.Executor`; the same numbers on each.
        ray_address: with ``"ray"``: ``None`` starts Ray here, ``"auto"``/``"HOST:PORT"`` joins.
        cache: a folder of finished results keyed by the file's and sidecar's bytes, the clean
            samples, the settings and the version (:class:`~edgeproof.execute.ResultCache`): a
            repeated scan rescans what changed, an interrupted one resumes. ``None``: none.
        detectors: data-free detectors to run.
        thresholds: calibrated thresholds (default: the shipped ones).
        threshold_overrides: ``{detector: value}`` deciding that detector at ``value`` on every
            architecture instead.
        freeeagle_steps: FreeEagle optimisation steps per class.
        nc_epochs: Neural Cleanse epochs per class (with ``clean``).
        nc_max_seconds: Neural Cleanse's time limit per model (``None``: none).
        max_clean_samples: at most this many clean samples per model (a seeded subsample).
        trust_code: let the model files run code (only for files you trust).
        seed: seeds every detector.
        progress: called with each file's outcome as it arrives.
        name_of: how the reasons name a library parameter (default: by its name; the CLI passes
            :func:`edgeproof.cli.flags.flag_of`). It travels to the worker processes, so it must
            be a module-level function.
    """
    t0 = time.perf_counter()
    _check_scan_options(jobs, detectors, freeeagle_steps, nc_epochs, max_clean_samples)
    root = Path(folder)
    files, ignored = model_files(root)
    th, overrides = _thresholds(thresholds, threshold_overrides)
    settings = ScanSettings(tuple(detectors), th, freeeagle_steps, nc_epochs, nc_max_seconds,
                            max_clean_samples=max_clean_samples, trust_code=trust_code,
                            seed=seed, name_of=name_of)  # fmt: skip
    clean_x = None if clean is None else _clean_subsample(clean, max_clean_samples, seed)
    store = None if cache is None else ResultCache(cache, _CACHED_TYPES)
    results, execution = _run_on(executor, jobs, ray_address, files, root, settings, clean_x,
                                 store, progress)  # fmt: skip
    workers = min(int(execution["workers"]), len(files))
    labels, notes = _labels(root)
    report = ScanReport(
        folder=str(root),
        models=sorted(results, key=_rank_key),
        ignored=ignored,
        settings=settings,
        thresholds=th,
        overrides=overrides,
        data=None if clean is None else clean.to_json(),
        jobs=workers,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        environment=_environment(),
        labels=labels,
        notes=notes + ([] if store is None else store.stats.notes(store.folder)),
        execution=execution,
    )
    report.duration_s = time.perf_counter() - t0
    return report


def _thresholds(
    thresholds: Thresholds | None, overrides: Mapping[str, float] | None
) -> tuple[Thresholds, dict[str, float]]:
    """The thresholds the scan decides at (the shipped ones by default, with the overrides)."""
    th = thresholds if thresholds is not None else shipped_thresholds()
    given = dict(overrides or {})
    return (with_overrides(th, given) if given else th), given


def _check_scan_options(
    jobs: int,
    detectors: Sequence[str],
    freeeagle_steps: int,
    nc_epochs: int,
    max_clean_samples: int,
) -> None:
    """The process count, the detectors and the detector budgets are valid."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise OptionError("jobs", f"{jobs!r} is not a positive number of processes", "use e.g. 4")
    unknown = [d for d in detectors if d not in DATA_FREE_DETECTORS]
    if unknown or not detectors:
        raise OptionError(
            "detectors",
            f"unknown or no detectors {unknown or list(detectors)}",
            f"use some of {', '.join(DATA_FREE_DETECTORS)}",
        )
    for name, v in (("freeeagle_steps", freeeagle_steps), ("nc_epochs", nc_epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise OptionError(name, f"{v!r} must be an integer >= 1")
    if max_clean_samples < 2:
        raise OptionError("max_clean_samples", f"must be >= 2, got {max_clean_samples}")


def _clean_subsample(clean: Dataset, max_clean_samples: int, seed: int) -> np.ndarray:
    """The validated clean samples as contiguous float32, at most ``max_clean_samples`` of them
    (a seeded subsample, the same for every model)."""
    clean.validate()
    x = np.asarray(clean.x, dtype=np.float32)
    if x.shape[0] < 2:
        raise InputFileError(clean.name, "fewer than 2 clean samples", "give at least 2")
    if x.shape[0] > max_clean_samples:  # the same subsample for every model
        rng = np.random.default_rng(seed)
        x = x[np.sort(rng.choice(x.shape[0], max_clean_samples, replace=False))]
    return np.ascontiguousarray(x)


def _environment() -> dict[str, Any]:
    from edgeproof.report.report import environment

    env = environment()
    env["torch_threads"] = 1  # every worker runs on one thread
    return env


def _run(
    files: list[Path],
    root: Path,
    settings: ScanSettings,
    clean: np.ndarray | None,
    executor: Executor,
    store: ResultCache | None,
    progress: Callable[[ModelScan], None] | None,
) -> list[ModelScan]:
    """Every file's outcome: from the cache when its inputs are unchanged, else scanned on
    ``executor`` (one task per file; each finished result cached as it arrives)."""
    out: list[ModelScan] = []

    def done(m: ModelScan) -> None:
        out.append(m)
        if progress is not None:
            progress(m)

    keys = [_cache_key(f, settings, clean) for f in files] if store is not None else []
    todo: list[int] = []
    for i in range(len(files)):
        hit = None if store is None else store.get(keys[i])
        if isinstance(hit, ModelScan):
            done(hit)
        else:
            todo.append(i)
    shared = _Shared(root.absolute(), settings, clean)  # workers may run elsewhere
    for o in executor.run(_scan_task, [files[i].absolute() for i in todo], shared):
        i = todo[o.index]
        m = _outcome_scan(o, files[i], root)
        if store is not None and m.status != "crashed":
            store.put(keys[i], m)
        done(m)
    return out


#: what a cached scan entry may hold
_CACHED_TYPES = (
    ModelScan,
    BackdoorScan,
    DetectorVerdict,
    DetectorResult,
    ReversedTrigger,
    StripSummary,
    StripThreshold,
)


@dataclass(frozen=True)
class _Shared:
    """What every scan task shares (sent to each worker once)."""

    root: Path
    settings: ScanSettings
    clean: np.ndarray | None


def _scan_task(shared: _Shared, path: Path) -> ModelScan:
    return _scan_file(path, shared.root, shared.settings, shared.clean)


def _outcome_scan(o: TaskOutcome[ModelScan], path: Path, root: Path) -> ModelScan:
    """The task's scan, or the file's ``crashed`` status when its worker failed."""
    if o.value is not None:
        return o.value
    return ModelScan(
        path.relative_to(root).as_posix(),
        "crashed",
        f"the worker scanning it failed: {o.error}",
        traceback=o.traceback,
    )


def _run_on(
    executor: str | Executor,
    jobs: int,
    ray_address: str | None,
    files: list[Path],
    root: Path,
    settings: ScanSettings,
    clean: np.ndarray | None,
    store: ResultCache | None,
    progress: Callable[[ModelScan], None] | None,
) -> tuple[list[ModelScan], dict[str, Any]]:
    """The files' outcomes on ``executor`` (made here, and closed, when given by name) and
    what ran them (with the cache's counts)."""
    ex, own = executor_for(executor, jobs, len(files), ray_address=ray_address)
    try:
        results = _run(files, root, settings, clean, ex, store, progress)
        execution = ex.describe()
    finally:
        if own:
            ex.close()
    if store is not None:
        execution["cache"] = {"folder": str(store.folder), **store.stats.__dict__}
    return results, execution


def _cache_key(path: Path, settings: ScanSettings, clean: np.ndarray | None) -> str:
    """The cache key of one file's scan: its bytes, its sidecar's, the clean samples, the
    settings and thresholds, and how reasons name parameters."""
    sidecar = path.with_suffix(".json")
    data = None
    if clean is not None:
        data = [clean.dtype.str, list(clean.shape), hashlib.sha256(clean.tobytes()).hexdigest()]
    name_of = settings.name_of
    return ResultCache.key(
        "scan",
        path.name,
        file_digest(path),
        file_digest(sidecar) if sidecar.is_file() else None,
        data,
        settings.to_json(),
        None if settings.thresholds is None else settings.thresholds.to_json(),
        None if name_of is None else f"{name_of.__module__}.{name_of.__qualname__}",
    )

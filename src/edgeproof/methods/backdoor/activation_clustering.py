"""Activation clustering: poisoned training samples from penultimate activations (Chen et al.,
SafeAI@AAAI 2019, "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering",
arXiv:1811.03728).

For every class (by its training label), the activations of its samples at the input of the
final layer are reduced to ``nb_dims`` (10) dimensions and split into two clusters by k-means; a
poisoned class splits into its genuine samples and the poison. Which cluster is poison:

* ``relative-size`` (default; the paper's size heuristic): the smaller cluster when it holds at
  most ``size_threshold`` (0.35) of the class;
* ``smaller`` (ART 1.20.1's default ``cluster_analysis``): the smaller cluster of *every* class,
  whatever its size.

Reduction: ``pca`` (default; deterministic: scikit-learn PCA, which is also ART's default
``reduce``) or ``ica`` (the paper's FastICA, ``max_iter=1000, tol=0.005`` as ART). Classes whose
activations have ``nb_dims`` or fewer dimensions are clustered unreduced (as ART). k-means:
scikit-learn ``KMeans(n_clusters=2, n_init=10, random_state=seed)`` (ART uses ``KMeans(2)`` with
its default ``n_init`` and an unseeded state). Each class also gets the silhouette score of its
split (the paper's second heuristic: high = two well-separated clusters), reported as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.errors import DataError, OptionError
from edgeproof.extras import needs_extra

__all__ = ["ActivationClusteringConfig", "ClusteringResult", "activation_clustering"]

Analysis = Literal["relative-size", "smaller"]
Reduce = Literal["pca", "ica"]


@dataclass(frozen=True)
class ActivationClusteringConfig:
    nb_dims: int = 10
    reduce: Reduce = "pca"
    analysis: Analysis = "relative-size"
    size_threshold: float = 0.35
    seed: int = 0

    def validate(self) -> None:
        if self.nb_dims < 1:
            raise OptionError("ac_nb_dims", f"must be >= 1, got {self.nb_dims}")
        if self.reduce not in ("pca", "ica"):
            raise OptionError("ac_reduce", f"unknown reduction {self.reduce!r}", "use pca or ica")
        if self.analysis not in ("relative-size", "smaller"):
            raise OptionError("ac_analysis", f"unknown analysis {self.analysis!r}")
        if not 0.0 < self.size_threshold < 0.5:
            raise OptionError("ac_size_threshold", f"{self.size_threshold} is not in (0, 0.5)")


@dataclass(frozen=True)
class ClusteringResult:
    """Per-sample poison flags and per-class evidence.

    Attributes:
        is_poison: ``(N,)`` bool, in the order of the inputs.
        clusters: ``(N,)`` the k-means cluster (0/1) of every sample within its class.
        smaller_fraction: ``(K,)`` size of each class's smaller cluster / class size (NaN for
            classes with fewer than 2 samples).
        silhouette: ``(K,)`` silhouette score of each class's split (NaN where undefined).
        suspicious_classes: classes with a cluster flagged as poison.
    """

    is_poison: np.ndarray
    clusters: np.ndarray
    smaller_fraction: np.ndarray
    silhouette: np.ndarray
    suspicious_classes: tuple[int, ...]


def _reduce(a: np.ndarray, cfg: ActivationClusteringConfig) -> np.ndarray:
    if a.shape[1] <= cfg.nb_dims or a.shape[0] <= cfg.nb_dims:
        return a
    if cfg.reduce == "pca":
        from sklearn.decomposition import PCA

        return np.asarray(PCA(n_components=cfg.nb_dims).fit_transform(a))
    from sklearn.decomposition import FastICA

    ica = FastICA(n_components=cfg.nb_dims, max_iter=1000, tol=0.005, random_state=cfg.seed)
    return np.asarray(ica.fit_transform(a))


def activation_clustering(
    activations: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: ActivationClusteringConfig | None = None,
) -> ClusteringResult:
    """Cluster each class's activations in two and flag the poison cluster (module docstring)."""
    with needs_extra("data", "by the activation-clustering backdoor detector"):
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

    cfg = config or ActivationClusteringConfig()
    cfg.validate()
    acts = np.asarray(activations, dtype=np.float64).reshape(len(activations), -1)
    y = np.asarray(labels).astype(np.int64)
    if acts.shape[0] != y.shape[0]:
        raise DataError(f"{acts.shape[0]} activations but {y.shape[0]} labels")
    is_poison = np.zeros(y.shape[0], dtype=bool)
    clusters = np.zeros(y.shape[0], dtype=np.int64)
    frac = np.full(num_classes, np.nan)
    sil = np.full(num_classes, np.nan)
    suspicious: list[int] = []
    for k in range(num_classes):
        idx = np.flatnonzero(y == k)
        if idx.size < 2:
            continue
        red = _reduce(acts[idx], cfg)
        km = KMeans(n_clusters=2, n_init=10, random_state=cfg.seed)
        assign = km.fit_predict(red)
        clusters[idx] = assign
        sizes = np.bincount(assign, minlength=2)
        small = int(np.argmin(sizes))
        frac[k] = sizes[small] / idx.size
        if len(np.unique(assign)) > 1 and idx.size > 2:
            sil[k] = float(silhouette_score(red, assign))
        poison = cfg.analysis == "smaller" or frac[k] <= cfg.size_threshold
        if poison:
            is_poison[idx[assign == small]] = True
            suspicious.append(k)
    return ClusteringResult(is_poison, clusters, frac, sil, tuple(suspicious))

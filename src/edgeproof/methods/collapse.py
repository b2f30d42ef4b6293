"""Neural collapse NC1–NC4 (Papyan, Han & Donoho 2020) on the penultimate features.

Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal phase of deep learning
training", PNAS 117(40), 2020. With ``h`` the features entering the classifier (the input of the
model's last ``nn.Linear``, taken with a forward hook), ``K`` classes, class means ``μ_c``, the
global mean ``μ_G`` (mean over all samples), ``W`` (``K×p``) and ``b`` the classifier's weight and
bias, the paper's quantities are, exactly as in its figures:

* **NC1** (Fig. 6) — within-class variability collapse: ``Tr(Σ_W Σ_B†)/K`` with
  ``Σ_W = Ave_{i,c} (h_{i,c} − μ_c)(h_{i,c} − μ_c)ᵀ`` (averaged over all samples) and
  ``Σ_B = Ave_c (μ_c − μ_G)(μ_c − μ_G)ᵀ`` (over classes); ``†`` is the Moore–Penrose pseudo-inverse,
  taken over the eigenvalues of ``Σ_B`` above ``max(p, K)·ε·λ_max`` (scipy ``pinvh``'s default
  cutoff). → 0 under collapse.
* **NC2** — convergence to a simplex equiangular tight frame:
  *equinorm* (Fig. 2): ``Std_c(‖μ_c − μ_G‖)/Avg_c(‖μ_c − μ_G‖)`` and the same of ``‖w_c‖``;
  *equiangularity* (Fig. 3): ``Std_{c≠c'}(cos(μ_c − μ_G, μ_c' − μ_G))`` and the same of
  ``cos(w_c, w_c')``; *maximal angle* (Fig. 4): ``Avg_{c≠c'} |cos + 1/(K−1)|``. Standard deviations
  are population ones (``ddof = 0``). All → 0 under collapse.
* **NC3** (Fig. 5) — self-duality: ``‖W/‖W‖_F − Ṁ/‖Ṁ‖_F‖²_F`` with ``Ṁ`` the ``K×p`` matrix of
  rows ``μ_c − μ_G``. → 0 under collapse.
* **NC4** (Fig. 7) — simplification to the nearest class centre: the fraction of samples whose model
  prediction differs from ``argmin_c ‖h − μ_c‖``. → 0 under collapse. (The paper compares with
  ``argmax_c ⟨w_c, h⟩ + b_c``; we compare with the model's own top-1 prediction, the same thing when
  the last ``Linear`` is the output layer.)

The paper's classes are balanced; with unbalanced classes ``μ_G`` is still the sample mean (as
written in the paper), so a perfectly collapsed but unbalanced set is not centred at the mean of
the class means. Classes absent from the samples are left out (``K`` counts the classes present;
``W``'s rows are restricted to them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError
from edgeproof.models.modules import set_training

__all__ = ["Collapse", "PenultimateFeatures", "last_linear", "neural_collapse", "penultimate"]


def last_linear(module: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` in ``module.named_modules()`` order (the classifier head)."""
    found = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise SpecError(
            f"{type(module).__name__}: no nn.Linear layer, so the penultimate features and the "
            "classifier are not defined; neural collapse needs a model whose head is an nn.Linear"
        )
    return found[-1]


@dataclass(frozen=True)
class PenultimateFeatures:
    """Features entering the classifier, with the classifier and the model's outputs.

    Attributes:
        features: ``(N, p)`` float64 inputs of the last ``nn.Linear``.
        logits: ``(N, K)`` float64 model outputs.
        weight: ``(K, p)`` float64 classifier weight.
        bias: ``(K,)`` float64 classifier bias (zeros if it has none).
        layer: the classifier's module name.
    """

    features: np.ndarray
    logits: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    layer: str


def penultimate(
    module: nn.Module, x: torch.Tensor, *, batch_size: int = 256
) -> PenultimateFeatures:
    """Run ``module`` on ``x`` in eval mode, recording the input of its last ``nn.Linear``."""
    if batch_size < 1:
        raise OptionError("batch_size", f"{batch_size} is too few", "use a positive integer")
    name, head = last_linear(module)
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach().reshape(inputs[0].shape[0], -1))

    handle = head.register_forward_pre_hook(hook)
    was_training = module.training
    set_training(module, False)
    feats: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    dtype = head.weight.dtype
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                captured.clear()
                xb = x[i : i + batch_size].to(head.weight.device, dtype)
                out = module(xb)
                if len(captured) != 1:
                    raise SpecError(
                        f"{type(module).__name__}: the last nn.Linear ({name}) ran "
                        f"{len(captured)} times in one forward pass; neural collapse needs a "
                        "classifier head applied once per sample"
                    )
                feats.append(captured[0].double().cpu())
                outs.append(out.detach().double().cpu())
    finally:
        handle.remove()
        set_training(module, was_training)
    weight = head.weight.detach().double().cpu().numpy()
    bias = (
        head.bias.detach().double().cpu().numpy()
        if head.bias is not None
        else np.zeros(weight.shape[0])
    )
    return PenultimateFeatures(
        features=torch.cat(feats).numpy(),
        logits=torch.cat(outs).numpy(),
        weight=weight,
        bias=bias,
        layer=name,
    )


@dataclass(frozen=True)
class Collapse:
    """NC1–NC4 (definitions in the module docstring); NaN where a quantity is undefined.

    Attributes:
        nc1: ``Tr(Σ_W Σ_B†)/K``.
        nc2_equinorm_means, nc2_equinorm_classifier: coefficient of variation of the norms.
        nc2_equiangular_means, nc2_equiangular_classifier: std of the pairwise cosines.
        nc2_maxangle_means, nc2_maxangle_classifier: mean ``|cos + 1/(K−1)|``.
        nc3: ``‖W/‖W‖_F − Ṁ/‖Ṁ‖_F‖²_F``.
        nc4_mismatch: fraction of samples where the nearest class centre and the model disagree.
        classes: the class labels present (the ``K`` used).
        samples: ``N``.
        dimension: ``p``.
    """

    nc1: float
    nc2_equinorm_means: float
    nc2_equiangular_means: float
    nc2_maxangle_means: float
    nc2_equinorm_classifier: float
    nc2_equiangular_classifier: float
    nc2_maxangle_classifier: float
    nc3: float
    nc4_mismatch: float
    classes: tuple[int, ...]
    samples: int
    dimension: int


def _norm_cv(rows: np.ndarray) -> float:
    norms = np.linalg.norm(rows, axis=1)
    mean = float(norms.mean())
    return float(norms.std() / mean) if mean > 0 else float("nan")


def _cosines(rows: np.ndarray) -> np.ndarray:
    """Cosines of every pair ``c < c'`` of rows."""
    norms = np.linalg.norm(rows, axis=1)
    unit = rows / np.where(norms > 0, norms, np.nan)[:, None]
    cos = unit @ unit.T
    iu = np.triu_indices(rows.shape[0], k=1)
    out: np.ndarray = cos[iu]
    return out


def _angles(rows: np.ndarray) -> tuple[float, float]:
    k = rows.shape[0]
    if k < 2:
        return float("nan"), float("nan")
    cos = _cosines(rows)
    return float(cos.std()), float(np.mean(np.abs(cos + 1.0 / (k - 1))))


def neural_collapse(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
) -> Collapse:
    """NC1–NC4 of ``features`` ``(N, p)`` with integer ``labels`` ``(N,)``.

    Args:
        features: penultimate features.
        labels: true classes.
        weight: the classifier weight ``(K_total, p)``, rows indexed by label (for NC2's classifier
            terms and NC3; NaN without it).
        predictions: the model's top-1 predictions (for NC4; NaN without it).
    """
    h = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if h.ndim != 2 or y.shape != (h.shape[0],):
        raise OptionError(
            "features", f"shape {h.shape} with labels {y.shape}", "give (N, p) and (N,)"
        )
    if h.shape[0] == 0:
        raise OptionError("features", "no samples", "give at least one sample per class")
    classes = np.unique(y)
    k = int(classes.size)
    n, p = h.shape
    mu_g = h.mean(axis=0)
    means = np.stack([h[y == c].mean(axis=0) for c in classes])  # (K, p)
    centred = means - mu_g  # Ṁ
    nan = float("nan")
    nc1 = _nc1(h, classes, y, means, centred)
    eq_means = _norm_cv(centred) if k >= 2 else nan
    ang_means, max_means = _angles(centred)
    eq_w = ang_w = max_w = nc3 = nan
    if weight is not None:
        eq_w, ang_w, max_w, nc3 = _classifier_terms(weight, classes, centred, p)
    nc4 = nan
    if predictions is not None:
        nc4 = _nc4(h, classes, means, predictions)
    return Collapse(
        nc1=nc1,
        nc2_equinorm_means=eq_means,
        nc2_equiangular_means=ang_means,
        nc2_maxangle_means=max_means,
        nc2_equinorm_classifier=eq_w,
        nc2_equiangular_classifier=ang_w,
        nc2_maxangle_classifier=max_w,
        nc3=nc3,
        nc4_mismatch=nc4,
        classes=tuple(int(c) for c in classes),
        samples=int(n),
        dimension=int(p),
    )


def _nc1(
    h: np.ndarray, classes: np.ndarray, y: np.ndarray, means: np.ndarray, centred: np.ndarray
) -> float:
    """NC1, ``Tr(Σ_W Σ_B†) / K`` (NaN with fewer than two classes or no between-class spread)."""
    n, p = h.shape
    k = int(classes.size)
    # Σ_W = Ave over all samples of (h − μ_c)(h − μ_c)ᵀ
    index = np.searchsorted(classes, y)
    within = h - means[index]
    sigma_w = within.T @ within / n
    # Σ_B = Ave_c (μ_c − μ_G)(μ_c − μ_G)ᵀ = Ṁᵀ Ṁ / K; its pseudo-inverse from the SVD of Ṁ/√K.
    if k < 2:
        return float("nan")
    _, s, vt = np.linalg.svd(centred / np.sqrt(k), full_matrices=False)
    lam = s**2
    cutoff = max(p, k) * np.finfo(np.float64).eps * (lam.max() if lam.size else 0.0)
    keep = lam > cutoff
    if not keep.any():
        return float("nan")
    v = vt[keep]  # rows: eigenvectors of Σ_B with non-zero eigenvalue
    # Tr(Σ_W Σ_B†) = Σ_j (v_jᵀ Σ_W v_j) / λ_j
    return float(np.sum(np.einsum("jp,pq,jq->j", v, sigma_w, v) / lam[keep]) / k)


def _classifier_terms(
    weight: np.ndarray, classes: np.ndarray, centred: np.ndarray, p: int
) -> tuple[float, float, float, float]:
    """NC2's classifier terms (equinorm, equiangularity, max-angle) and NC3 (the distance of
    the normalised classifier rows of the classes present to the normalised centred means)."""
    w_all = np.asarray(weight, dtype=np.float64)
    if w_all.ndim != 2 or w_all.shape[1] != p or w_all.shape[0] <= int(classes.max()):
        raise OptionError(
            "weight",
            f"shape {w_all.shape} does not fit {p}-dimensional features and labels up to "
            f"{int(classes.max())}",
            "give the classifier weight (K, p) with one row per class",
        )
    w = w_all[classes]
    eq_w = _norm_cv(w)
    ang_w, max_w = _angles(w)
    nc3 = float("nan")
    wn, mn = np.linalg.norm(w), np.linalg.norm(centred)
    if wn > 0 and mn > 0:
        nc3 = float(np.sum((w / wn - centred / mn) ** 2))
    return eq_w, ang_w, max_w, nc3


def _nc4(h: np.ndarray, classes: np.ndarray, means: np.ndarray, predictions: np.ndarray) -> float:
    """NC4: the fraction of samples whose nearest class mean is not the model's prediction."""
    pred = np.asarray(predictions).astype(np.int64)
    d2 = (
        np.sum(h * h, axis=1, keepdims=True)
        - 2.0 * h @ means.T
        + np.sum(means * means, axis=1)[None, :]
    )
    ncc = classes[np.argmin(d2, axis=1)]
    return float(np.mean(ncc != pred))

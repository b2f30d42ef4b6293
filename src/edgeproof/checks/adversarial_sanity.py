"""The adversarial check's sanity findings against gradient masking (Athalye et al. 2018;
Carlini et al. 2019, §5): the four rules of :mod:`edgeproof.checks.adversarial`, each a warning
when it fails, and one info when none does."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from edgeproof.checks.attack_data import AttackData
from edgeproof.methods.attacks.curve import RobustnessCurve
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import Finding

__all__ = ["gradient_free_vs_gradient", "masking_findings"]


def _g(v: float) -> str:
    return f"{v:.4g}"


def masking_findings(
    curve: RobustnessCurve,
    ad: AttackData,
    sweep: tuple[float, ...],
    *,
    level: float,
    free: set[str],
) -> list[Finding]:
    """Sanity checks 1–4 on ``curve`` over the ε of ``sweep`` (``free``: the names of the
    gradient-free attacks; a curve of only those is a forward-only model's)."""
    counts = curve.robust_count()
    forward_only = all(a in free for a in curve.attacks)
    out = _rising_accuracy(curve, sweep, counts, forward_only)
    out += _pgd_weaker_than_fgsm(curve, sweep)
    out += gradient_free_vs_gradient(curve, sweep, free, level)
    out += _above_chance(curve, ad, sweep, counts, level, forward_only)
    if not any(f.severity == "warning" for f in out):
        message = (
            "no sign of a failing attack: robust accuracy falls with ε and reaches chance "
            "at the domain's diameter"
            if forward_only
            else "no sign of gradient masking: robust accuracy falls with ε, PGD is at "
            "least as strong as FGSM, and accuracy reaches chance at the domain's diameter"
        )
        out.append(Finding("info", message, {"eps": list(sweep), "robust_count": counts.tolist()}))
    return out


def _rising_accuracy(
    curve: RobustnessCurve, sweep: tuple[float, ...], counts: np.ndarray, forward_only: bool
) -> list[Finding]:
    """Sanity check 1: robust accuracy must not increase with ε."""
    robust = curve.robust
    rises = [
        (sweep[i], sweep[i + 1], int(counts[i]), int(counts[i + 1]))
        for i in range(len(sweep) - 1)
        if counts[i + 1] > counts[i]
    ]
    flips = [int((robust[i + 1] & ~robust[i]).sum()) for i in range(len(sweep) - 1)]
    if not rises:
        return []
    a, b, ca, cb = rises[0]
    cause = (
        "the attack is not converging; raise square_queries/square_restarts before "
        "trusting these numbers"
        if forward_only
        else "the attacks are not converging, which is a sign of gradient masking; raise "
        "pgd_steps/pgd_restarts before trusting these numbers"
    )
    return [
        Finding(
            "warning",
            f"robust accuracy increases with ε ({ca}/{curve.n} robust at ε={_g(a)}, "
            f"{cb} at "
            f"ε={_g(b)}): {cause}",
            {"increases": rises, "samples_robust_only_at_larger_eps": flips},
        )
    ]


def _pgd_weaker_than_fgsm(curve: RobustnessCurve, sweep: tuple[float, ...]) -> list[Finding]:
    """Sanity check 2: PGD must not be weaker than FGSM (where both ran)."""
    if "fgsm" not in curve.attacks or "pgd" not in curve.attacks:
        return []
    f_acc = curve.robust_accuracy("fgsm")
    p_acc = curve.robust_accuracy("pgd")
    only_fgsm = curve.only_fooled_by("fgsm", "pgd")
    weaker = [i for i in range(len(sweep)) if p_acc[i] > f_acc[i]]
    evidence = {
        "eps": list(sweep),
        "fgsm_robust_accuracy": f_acc.tolist(),
        "pgd_robust_accuracy": p_acc.tolist(),
        "fooled_by_fgsm_not_pgd": only_fgsm.tolist(),
    }
    if weaker:
        i = weaker[0]
        return [
            Finding(
                "warning",
                f"PGD is weaker than FGSM at ε={_g(sweep[i])} (robust accuracy "
                f"{p_acc[i]:.1%} vs {f_acc[i]:.1%}; {int(only_fgsm[i])} samples fooled "
                "by FGSM but not PGD): a one-step attack beating an iterative one "
                "indicates gradient "
                "masking or a too-small PGD step",
                evidence,
            )
        ]
    if only_fgsm.sum() > 0:
        return [
            Finding(
                "info",
                f"PGD is at least as strong as FGSM at every ε, but {int(only_fgsm.sum())} "
                "(sample, ε) pairs were fooled by FGSM only; they count in the worst case",
                evidence,
            )
        ]
    return []


def _above_chance(
    curve: RobustnessCurve,
    ad: AttackData,
    sweep: tuple[float, ...],
    counts: np.ndarray,
    level: float,
    forward_only: bool,
) -> list[Finding]:
    """Sanity check 3: at ε = the domain's diameter, accuracy must reach chance (the Wilson
    lower bound of the robust accuracy must not exceed 1/K)."""
    if sweep[-1] != ad.diameter:
        return []
    k_big = int(counts[-1])
    iv = wilson_interval(k_big, curve.n, level)
    chance = 1.0 / ad.num_classes
    if not iv.low > chance:
        return []
    cause = (
        "the attack cannot find adversarial inputs the threat model allows: raise "
        "square_queries/square_restarts, or the model ignores its input"
        if forward_only
        else "the attacks cannot find adversarial inputs the threat model "
        "allows, a sign of gradient masking or of a model that ignores its input"
    )
    return [
        Finding(
            "warning",
            f"at ε={_g(ad.diameter)} (any input in the domain is reachable) robust "
            f"accuracy is still {k_big / curve.n:.1%} (CI low {iv.low:.1%}) > chance "
            f"1/K = {chance:.1%}: {cause}",
            {"eps": ad.diameter, "robust": k_big, "n": curve.n, "chance": chance},
        )
    ]


def gradient_free_vs_gradient(
    curve: RobustnessCurve, sweep: tuple[float, ...], free: set[str], level: float
) -> list[Finding]:
    """Sanity check 4: a gradient-free attack stronger than every gradient attack."""
    grad = [i for i, a in enumerate(curve.attacks) if a not in free]
    score = [i for i, a in enumerate(curve.attacks) if a in free]
    if not grad or not score:
        return []
    by_grad = curve.fooled[grad].any(axis=0)  # (E, N)
    by_free = curve.fooled[score].any(axis=0)
    only_free = (by_free & ~by_grad).sum(axis=1)
    only_grad = (by_grad & ~by_free).sum(axis=1)
    p = [
        float(binomtest(int(b), int(b + c), 0.5, alternative="greater").pvalue) if b > 0 else 1.0
        for b, c in zip(only_free, only_grad, strict=True)
    ]
    alpha = (1.0 - level) / len(sweep)
    names = ", ".join(curve.attacks[i] for i in score)
    grads = ", ".join(curve.attacks[i] for i in grad)
    evidence = {
        "eps": list(sweep),
        "fooled_only_by_gradient_free": only_free.tolist(),
        "fooled_only_by_gradient": only_grad.tolist(),
        "sign_test_p": p,
        "alpha_bonferroni": alpha,
    }
    worst = int(np.argmin(p))
    if p[worst] < alpha:
        return [
            Finding(
                "warning",
                f"{names} (gradient-free) fooled {int(only_free[worst])} samples at "
                f"ε={_g(sweep[worst])} that none of {grads} fooled, against "
                f"{int(only_grad[worst])} the other way (sign test p={p[worst]:.2g} < "
                f"{alpha:.2g}): the gradient attacks miss inputs a score-based attack finds, "
                "a sign of gradient masking; rely on the worst case (it includes "
                f"{names}) and raise pgd_steps/apgd_steps",
                evidence,
            )
        ]
    if only_free.sum() > 0:
        return [
            Finding(
                "info",
                f"{names} is not significantly stronger than {grads} at any ε, but "
                f"{int(only_free.sum())} (sample, ε) pairs were fooled by {names} only; "
                "they count in the worst case",
                evidence,
            )
        ]
    return []

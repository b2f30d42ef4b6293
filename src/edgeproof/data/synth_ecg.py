"""``builtin:synth-ecg`` — a deterministic synthetic ECG rhythm dataset (ECGSYN dynamical model).

Source: P. E. McSharry, G. D. Clifford, L. Tarassenko, L. A. Smith, "A dynamical model for
generating synthetic electrocardiogram signals", IEEE Trans. Biomed. Eng. 50(3):289–294, 2003
(ECGSYN). The trajectory moves round a limit cycle of unit radius in the (x, y) plane; each PQRST
event is a Gaussian in the angle θ = atan2(y, x)::

    dx/dt = α x − ω y,    dy/dt = α y + ω x,    α = 1 − √(x² + y²)
    dz/dt = −Σ_i a_i Δθ_i exp(−Δθ_i² / (2 b_i²)) − (z − z0),   Δθ_i = (θ − θ_i) mod 2π
    z0(t) = A sin(2π f2 t)   (respiratory baseline wander, f2 = 0.25 Hz; A = 0.005 in model
                              units as in the reference code, ≈ 0.15 mV after scaling)

with ω = 2π / RR. Table 1 of the paper gives (θ_i, a_i, b_i) for P, Q, R, S, T:
(−π/3, 1.2, 0.25), (−π/12, −5.0, 0.1), (0, 30, 0.1), (π/12, −7.5, 0.1), (π/2, 0.75, 0.4).
As in the reference ECGSYN code, b_i and θ_i are scaled with heart rate (``hrfact = √(hr/60)``,
b_i ← hrfact·b_i, θ_i ← [√hrfact, hrfact, 1, hrfact, 1]·θ_i) and the output is scaled to
[−0.4, 1.2] mV.

Variant (stated, deliberate):

* the RR process is sampled **per beat** (ω piecewise constant within a beat) instead of ECGSYN's
  continuous tachogram interpolated in time. Sinus-rhythm RR series follow ECGSYN's bimodal spectrum
  (Mayer wave f1 = 0.1 Hz, respiratory f2 = 0.25 Hz, c1 = c2 = 0.01 Hz, LF/HF = 0.5) evaluated
  per beat;
* rhythm classes are built by changing the model's parameters, not from clinical recordings:
  ``normal`` (HR 60–90), ``tachycardia`` (HR 110–150), ``bradycardia`` (HR 40–55),
  ``af-like`` (irregular RR drawn i.i.d., no P wave, 4–8 Hz fibrillatory waves of 0.05 mV),
  ``pvc-like`` (one premature beat, RR × 0.6 then a compensatory pause, no P wave, QRS widths
  × 2.5, R amplitude × 0.6, inverted T);
* fixed-step RK4 at 300 Hz, vectorised over records, one second of burn-in, then decimated by 3
  (block average) to 100 Hz; record length T = 256 samples (2.56 s); per-record scaling to
  [−0.4, 1.2] mV, additive white noise σ = 0.02 mV, clipped to the domain [−1, 2] mV.

Generation is seeded and deterministic (``train`` and ``test`` use different seeds), takes about a
second of CPU for 1000 records, and is cached in memory.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from edgeproof.data.dataset import Dataset

__all__ = [
    "CLASSES",
    "DOMAIN",
    "SAMPLE_RATE_HZ",
    "SynthECGConfig",
    "generate",
    "register",
    "synth_ecg",
]

CLASSES: tuple[str, ...] = ("normal", "tachycardia", "bradycardia", "af-like", "pvc-like")
DOMAIN: tuple[float, float] = (-1.0, 2.0)
SAMPLE_RATE_HZ = 100.0

# McSharry et al. 2003, Table 1: P, Q, R, S, T.
_THETA = np.array([-math.pi / 3, -math.pi / 12, 0.0, math.pi / 12, math.pi / 2])
_A = np.array([1.2, -5.0, 30.0, -7.5, 0.75])
_B = np.array([0.25, 0.1, 0.1, 0.1, 0.4])


class SynthECGConfig:
    """Settings of one generated split (kept small and explicit)."""

    def __init__(
        self,
        n_per_class: int,
        seed: int,
        length: int = 256,
        internal_hz: float = 300.0,
        noise_mv: float = 0.02,
    ) -> None:
        self.n_per_class = n_per_class
        self.seed = seed
        self.length = length
        self.internal_hz = internal_hz
        self.noise_mv = noise_mv


def _sinus_rr(rng: np.random.Generator, n: int, beats: int, hr: np.ndarray) -> np.ndarray:
    """Per-beat RR intervals (s) with ECGSYN's bimodal LF/HF spectrum (std 1 bpm-equivalent)."""
    f1, f2, c1, c2, lfhf = 0.1, 0.25, 0.01, 0.01, 0.5
    mean_rr = 60.0 / hr  # (n,)
    # Sample a continuous RR process on a 1-beat grid (time ≈ beat index × mean RR).
    nfft = 64
    freqs = np.fft.rfftfreq(nfft, d=1.0)  # cycles per beat
    out = np.empty((n, beats))
    for i in range(n):
        fhz = freqs / mean_rr[i]
        s1 = lfhf / math.sqrt(2 * math.pi * c1**2) * np.exp(-((fhz - f1) ** 2) / (2 * c1**2))
        s2 = 1.0 / math.sqrt(2 * math.pi * c2**2) * np.exp(-((fhz - f2) ** 2) / (2 * c2**2))
        amp = np.sqrt(s1 + s2)
        phase = rng.uniform(0, 2 * math.pi, size=amp.shape)
        series = np.fft.irfft(amp * np.exp(1j * phase), n=nfft)[:beats]
        sd = series.std()
        series = series / sd if sd > 0 else series
        hr_std = 1.0 + 2.0 * rng.random()  # bpm
        rr_std = mean_rr[i] * hr_std / hr[i]
        out[i] = mean_rr[i] + rr_std * series
    return np.clip(out, 0.25, 2.0)


def generate(cfg: SynthECGConfig) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``(x, y)``: ``x`` float32 ``(N, 1, T)`` in mV, ``y`` int64 class index."""
    rng = np.random.default_rng(cfg.seed)
    k = len(CLASSES)
    n = cfg.n_per_class * k
    y = np.repeat(np.arange(k), cfg.n_per_class)
    beats = 16
    hr, rr, pvc_beat = _rhythm(rng, y, beats)
    waves = _Waves.of(hr, y == 3)
    phase0 = rng.uniform(-math.pi, math.pi, n)
    resp_phase = rng.uniform(0, 2 * math.pi, n)
    fib_f = rng.uniform(4.0, 8.0, n)
    fib_phase = rng.uniform(0, 2 * math.pi, n)
    zs = _integrate(cfg, waves, rr, y == 4, pvc_beat, phase0, resp_phase)
    z = _to_millivolts(cfg, zs, y == 3, fib_f, fib_phase, rng)
    order = rng.permutation(n)
    return z[order, None, :].astype(np.float32), y[order].astype(np.int64)


def _rhythm(
    rng: np.random.Generator, y: np.ndarray, beats: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: the heart rate (bpm) of its class, the RR interval of each beat (s) and the
    beat made premature in ``pvc-like`` records (RR × 0.6, then a compensatory pause × 1.4)."""
    n = int(y.shape[0])
    hr = np.where(
        y == 1,
        rng.uniform(110, 150, n),
        np.where(y == 2, rng.uniform(40, 55, n), rng.uniform(60, 90, n)),
    )
    rr = _sinus_rr(rng, n, beats, hr)
    af = y == 3
    rr[af] = rng.uniform(0.35, 1.1, size=(int(af.sum()), beats))  # irregularly irregular
    pvc = y == 4
    # The premature beat falls inside the visible window (beat index 1..3 after burn-in).
    pvc_beat = rng.integers(1, 4, size=n) + 1
    rows = np.flatnonzero(pvc)
    rr[rows, pvc_beat[rows]] *= 0.6
    rr[rows, pvc_beat[rows] + 1] *= 1.4
    return hr, rr, pvc_beat


@dataclass(frozen=True)
class _Waves:
    """Per-record PQRST parameters ``(n, 5)``: angles θ_i, amplitudes a_i and widths b_i of
    normal beats (scaled with heart rate; no P wave in AF), and of premature (PVC) beats."""

    theta: np.ndarray
    a: np.ndarray
    b: np.ndarray
    a_pvc: np.ndarray
    b_pvc: np.ndarray

    @classmethod
    def of(cls, hr: np.ndarray, af: np.ndarray) -> _Waves:
        n = hr.shape[0]
        hrfact = np.sqrt(hr / 60.0)
        hrfact2 = np.sqrt(hrfact)
        theta_i = np.stack(
            [
                hrfact2 * _THETA[0],
                hrfact * _THETA[1],
                _THETA[2] + 0 * hrfact,
                hrfact * _THETA[3],
                _THETA[4] + 0 * hrfact,
            ],
            axis=1,
        )  # (n, 5)
        b_i = hrfact[:, None] * _B[None, :]
        a_norm = np.broadcast_to(_A, (n, 5)).copy()
        a_norm[af, 0] = 0.0  # no P wave in AF
        # Abnormal (PVC) beat parameters.
        a_pvc = a_norm.copy()
        a_pvc[:, 0] = 0.0
        a_pvc[:, 2] *= 0.6
        a_pvc[:, 4] *= -1.5
        b_pvc = b_i.copy()
        b_pvc[:, 1:4] *= 2.5
        return cls(theta_i, a_norm, b_i, a_pvc, b_pvc)


def _deriv(
    s: np.ndarray,
    t: float,
    omega: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta_i: np.ndarray,
    resp_phase: np.ndarray,
) -> np.ndarray:
    """The ECGSYN vector field at states ``s`` ``(n, 3)`` and time ``t``."""
    x, yy, z = s[:, 0], s[:, 1], s[:, 2]
    alpha = 1.0 - np.sqrt(x * x + yy * yy)
    th = np.arctan2(yy, x)
    dth = np.remainder(th[:, None] - theta_i + math.pi, 2 * math.pi) - math.pi
    z0 = 0.005 * np.sin(2 * math.pi * 0.25 * t + resp_phase)
    dz = -np.sum(a * dth * np.exp(-(dth**2) / (2 * b**2)), axis=1) - (z - z0)
    return np.stack([alpha * x - omega * yy, alpha * yy + omega * x, dz], axis=1)


def _integrate(
    cfg: SynthECGConfig,
    waves: _Waves,
    rr: np.ndarray,
    pvc: np.ndarray,
    pvc_beat: np.ndarray,
    phase0: np.ndarray,
    resp_phase: np.ndarray,
) -> np.ndarray:
    """``z`` of every record at every internal step ``(n, burn-in + T·decimation)``: fixed-step
    RK4 from the angle ``phase0`` on the limit cycle, counting beats as θ wraps."""
    n = rr.shape[0]
    beats = rr.shape[1]
    dt = 1.0 / cfg.internal_hz
    burn = int(cfg.internal_hz)  # one second
    decim = round(cfg.internal_hz / SAMPLE_RATE_HZ)
    steps = burn + cfg.length * decim
    state = np.stack([np.cos(phase0), np.sin(phase0), np.zeros(n)], axis=1)
    beat = np.zeros(n, dtype=np.int64)
    ar = np.arange(n)
    theta_i = waves.theta

    def deriv(
        s: np.ndarray, t: float, omega: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        return _deriv(s, t, omega, a, b, theta_i, resp_phase)

    zs = np.empty((n, steps))
    prev_th = np.arctan2(state[:, 1], state[:, 0])
    for step in range(steps):
        t = step * dt
        bi = np.minimum(beat, beats - 1)
        omega = 2 * math.pi / rr[ar, bi]
        is_pvc = pvc & (bi == pvc_beat)
        a = np.where(is_pvc[:, None], waves.a_pvc, waves.a)
        b = np.where(is_pvc[:, None], waves.b_pvc, waves.b)
        k1 = deriv(state, t, omega, a, b)
        k2 = deriv(state + 0.5 * dt * k1, t + 0.5 * dt, omega, a, b)
        k3 = deriv(state + 0.5 * dt * k2, t + 0.5 * dt, omega, a, b)
        k4 = deriv(state + dt * k3, t + dt, omega, a, b)
        state = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        th = np.arctan2(state[:, 1], state[:, 0])
        # A beat ends when θ wraps from +π to −π.
        beat += (prev_th > 2.0) & (th < -2.0)
        prev_th = th
        zs[:, step] = state[:, 2]
    return zs


def _to_millivolts(
    cfg: SynthECGConfig,
    zs: np.ndarray,
    af: np.ndarray,
    fib_f: np.ndarray,
    fib_phase: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The records after burn-in, decimated to 100 Hz, scaled to [−0.4, 1.2] mV, with
    fibrillatory waves (AF) and white noise added, clipped to the domain."""
    n = zs.shape[0]
    dt = 1.0 / cfg.internal_hz
    burn = int(cfg.internal_hz)
    decim = round(cfg.internal_hz / SAMPLE_RATE_HZ)
    z = zs[:, burn:].reshape(n, cfg.length, decim).mean(axis=2)
    t_out = (burn + np.arange(cfg.length) * decim) * dt
    lo = z.min(axis=1, keepdims=True)
    hi = z.max(axis=1, keepdims=True)
    z = -0.4 + 1.6 * (z - lo) / np.maximum(hi - lo, 1e-9)
    fib = 0.05 * np.sin(2 * math.pi * fib_f[:, None] * t_out[None, :] + fib_phase[:, None])
    z = z + np.where(af[:, None], fib, 0.0)
    z = z + cfg.noise_mv * rng.standard_normal(z.shape)
    result: np.ndarray = np.clip(z, DOMAIN[0], DOMAIN[1])
    return result


_SPLITS = {
    "train": SynthECGConfig(n_per_class=200, seed=20030301),
    "test": SynthECGConfig(n_per_class=100, seed=20030302),
}


@functools.lru_cache(maxsize=4)
def _cached(split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = generate(_SPLITS[split])
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def synth_ecg(split: str = "test") -> Dataset:
    """The ``builtin:synth-ecg`` dataset: ``test`` (500 records) or ``train`` (1000 records).

    Five balanced rhythm classes (:data:`CLASSES`), samples ``(1, 256)`` at 100 Hz in mV, domain
    :data:`DOMAIN`. Deterministic: the same split always yields the same arrays.
    """
    if split not in _SPLITS:
        from edgeproof.errors import OptionError

        raise OptionError(
            "data",
            f"builtin:synth-ecg has no split {split!r}",
            "use builtin:synth-ecg or builtin:synth-ecg/train",
        )
    x, y = _cached(split)
    cfg = _SPLITS[split]
    return Dataset(
        x=x.copy(),
        y=y.copy(),
        classes=list(CLASSES),
        name="builtin:synth-ecg" + ("/train" if split == "train" else ""),
        format="builtin",
        ids=[f"synth-ecg/{split}#{i}" for i in range(len(y))],
        kind="timeseries",
        domain=DOMAIN,
        metadata={
            "split": split,
            "seed": cfg.seed,
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "unit": "mV",
            "source": "ECGSYN dynamical model (McSharry et al., IEEE TBME 2003), synthetic",
        },
    )


def register() -> None:
    """Register ``synth-ecg`` and ``synth-ecg/train`` with the built-in data registry."""
    from edgeproof.data.loading import register_builtin

    register_builtin("synth-ecg", _load_test)
    register_builtin("synth-ecg/test", _load_test)
    register_builtin("synth-ecg/train", _load_train)


def _load_test() -> Dataset:
    return synth_ecg("test")


def _load_train() -> Dataset:
    return synth_ecg("train")

"""Frequency-band occlusion for time series and audio (FreqAtt-style).

Mercier, Dengel & Ahmed, "FREQuency ATTribution: benchmarking frequency-based occlusion for time
series data" (arXiv 2506.18481; Applied Intelligence 56, 2026): transform the signal to the
frequency domain, occlude frequencies, transform back, and measure how the network's score for
the class changes. Variant followed here:

* the transform is the real FFT along the **last** axis (time) of each channel,
  ``X = rfft(x)``, ``T//2 + 1`` bins, bin ``k`` at ``k/T`` cycles per sample (``k·fs/T`` Hz with
  a sample rate ``fs``);
* a band is occluded by setting its bins to zero (in every channel at once, or in one channel at
  a time with ``per_channel=True``) and inverting, ``x' = irfft(X·(1 − 1_band), n=T)``, computed
  as ``x − irfft(X·1_band)`` (the same by linearity, one inverse transform per band);
* the attribution of a band is the drop of the target score, ``f(x) − f(x')`` (logit by
  default, or probability): positive where removing the band hurts the class;
* bands: ``bands=n`` splits ``[0, ½]`` cycles per sample into ``n`` equal-width bands (the last
  includes the Nyquist bin; the DC bin 0 is in the first band, so occluding it removes the
  signal's mean), or explicit ``(low, high)`` pairs — in Hz when ``sample_rate`` is given,
  otherwise in cycles per sample; a band covers the bins with ``low ≤ f < high`` (``f ≤ high``
  when ``high`` is the Nyquist frequency);
* the occluded signal is not clipped to the input domain (FreqAtt does not clip).

Values have shape ``(N, n_bands)`` (``(N, C, n_bands)`` per channel); ``Attribution.bands``
names the bands. The model is any callable ``Tensor -> logits``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attribution.base import (
    Attribution,
    AttributionMethod,
    Band,
    BaselineKind,
    BaselineLike,
    Forward,
    Output,
    TargetLike,
    as_batch,
    check_internal_batch_size,
    check_output,
    check_positive_int,
    eval_mode,
    refuse_baseline,
    resolve_target,
    scores,
)

__all__ = ["FrequencyOcclusion", "make_bands"]


def _label(lo: float, hi: float, rate: float | None) -> str:
    if rate is None:
        return f"{lo:.3g}–{hi:.3g} cyc/sample"
    return f"{lo * rate:.3g}–{hi * rate:.3g} Hz"


def make_bands(
    length: int,
    bands: int | Sequence[tuple[float, float]],
    sample_rate: float | None = None,
) -> tuple[Band, ...]:
    """The bands (edges in cycles per sample, rFFT bins) for signals of ``length`` samples."""
    if length < 2:
        raise SpecError(f"a signal of {length} sample(s) has no frequency content; need T >= 2")
    freqs = np.arange(length // 2 + 1) / length
    nyq = 0.5
    if isinstance(bands, (int, np.integer)):
        count = check_positive_int("bands", int(bands), 1, "use e.g. 8")
        edges = np.linspace(0.0, nyq, count + 1)
        pairs = [(float(edges[j]), float(edges[j + 1])) for j in range(count)]
    else:
        if sample_rate is not None and not (math.isfinite(sample_rate) and sample_rate > 0):
            raise OptionError("sample_rate", f"{sample_rate!r} must be > 0 Hz", "e.g. 360")
        scale = 1.0 / sample_rate if sample_rate is not None else 1.0
        pairs = []
        for lo, hi in bands:
            a, b = float(lo) * scale, float(hi) * scale
            if not (0.0 <= a < b <= nyq + 1e-12):
                unit = "Hz" if sample_rate is not None else "cycles per sample"
                top = nyq * sample_rate if sample_rate is not None else nyq
                raise OptionError(
                    "bands",
                    f"band ({lo}, {hi}) is not within 0..{top:g} {unit} (the Nyquist frequency)",
                    "give (low, high) pairs with 0 <= low < high <= Nyquist",
                )
            pairs.append((a, b))
        if not pairs:
            raise OptionError("bands", "no band given", "give e.g. 8 or [(0, 0.1), (0.1, 0.5)]")
    out: list[Band] = []
    for lo, hi in pairs:
        below: np.ndarray = freqs <= hi if hi >= nyq - 1e-12 else freqs < hi
        bins = tuple(int(k) for k in np.flatnonzero((freqs >= lo) & below))
        if not bins:
            raise OptionError(
                "bands",
                f"band {_label(lo, hi, sample_rate)} holds no frequency bin of a {length}-sample "
                f"signal (bin spacing {1 / length:.3g} cycles per sample)",
                "use fewer or wider bands",
            )
        out.append(Band(lo, hi, bins, _label(lo, hi, sample_rate)))
    return tuple(out)


class FrequencyOcclusion(AttributionMethod):
    """Frequency-band occlusion: the score drop when a band is removed from the signal.

    Args:
        bands: number of equal-width bands over ``[0, Nyquist]`` (default 8), or explicit
            ``(low, high)`` pairs (Hz with ``sample_rate``, else cycles per sample).
        sample_rate: samples per second, to give and label bands in Hz (optional).
        per_channel: occlude a band in one channel at a time (values ``(N, C, n_bands)``)
            instead of in all channels together (default False).
        internal_batch_size: rows per forward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "frequency_occlusion"
    needs_gradients: ClassVar[bool] = False
    baseline_kind: ClassVar[BaselineKind] = "none"

    def __init__(
        self,
        *,
        bands: int | Sequence[tuple[float, float]] = 8,
        sample_rate: float | None = None,
        per_channel: bool = False,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        self.bands: int | tuple[tuple[float, float], ...] = (
            bands if isinstance(bands, int) else tuple((float(b[0]), float(b[1])) for b in bands)
        )
        self.sample_rate = None if sample_rate is None else float(sample_rate)
        self.per_channel = bool(per_channel)
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "bands": self.bands,
            "sample_rate": self.sample_rate,
            "per_channel": self.per_channel,
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def attribute(
        self,
        model: Forward,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
    ) -> Attribution:
        """Band drops for signals ``x`` of shape ``(N, C, T)`` (or ``(N, T)``), time last.

        No baseline: a removed band is set to zero in the spectrum.
        """
        refuse_baseline(self.name, baseline)
        xb = as_batch(x)
        shape = tuple(xb.shape[1:])
        length = shape[-1]
        bands = make_bands(length, self.bands, self.sample_rate)
        nbins = length // 2 + 1
        masks = torch.zeros((len(bands), nbins), dtype=torch.float32)
        for j, band in enumerate(bands):
            masks[j, list(band.bins)] = 1.0
        n = xb.shape[0]
        chans = math.prod(shape[:-1]) if len(shape) > 1 else 1
        ibs = self.internal_batch_size
        per = len(bands) * (chans if self.per_channel else 1)
        sb = max(1, ibs // per)
        drops = torch.zeros((n, per), dtype=torch.float64)
        with eval_mode(model):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            for i0 in range(0, n, sb):
                idx = torch.arange(i0, min(n, i0 + sb))
                sig = xb[idx].reshape(len(idx), chans, length)
                spec = torch.fft.rfft(sig, dim=-1)  # (b, C, F)
                comp = torch.fft.irfft(spec.unsqueeze(1) * masks.view(1, -1, 1, nbins), n=length)
                # comp: (b, n_bands, C, T), the part of the signal in each band
                if self.per_channel:
                    eye = torch.eye(chans).view(1, 1, chans, chans, 1)
                    part = comp.unsqueeze(3) * eye  # (b, n_bands, C_masked, C, T)
                    rows = sig.view(len(idx), 1, 1, chans, length) - part
                    rows = rows.transpose(1, 2)  # (b, C_masked, n_bands, C, T)
                else:
                    rows = sig.unsqueeze(1) - comp
                rows = rows.reshape(-1, *shape).contiguous()
                owner = idx.repeat_interleave(per)
                f_occ = scores(model, rows, t[owner], self.output, ibs)
                drops[idx] = f_x[idx].unsqueeze(1) - f_occ.view(len(idx), per)
        values = drops.view(n, chans, len(bands)) if self.per_channel else drops
        return Attribution(
            method=self.name,
            values=values,
            target=t,
            output=self.output,
            score=f_x,
            evaluations=n * (per + 1),
            bands=bands,
            settings=self.settings | {"bins": nbins},
        )

"""Light audio analysis for the results view: a tempo estimate by onset-strength autocorrelation
over presto_core.spectrogram's log-mel (numpy only, so nothing here pays for numba/librosa start-up;
mono float32 (N,) audio in, plain Python values out)."""

from __future__ import annotations

import math

import numpy as np

from presto_core.spectrogram import log_mel


def estimate_tempo(audio: np.ndarray, sr: int, lo: float = 40.0, hi: float = 240.0) -> float | None:
    """Tempo in BPM from the autocorrelation of the spectral-flux onset envelope, weighted by a
    log-normal prior around 120 BPM (one octave wide, as librosa's ``beat_track``). None when the
    clip is shorter than 1.5 s or has no rhythmic energy."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size < 1.5 * sr or not np.isfinite(x).all() or float(np.abs(x).max()) < 1e-4:
        return None
    db, fps = log_mel(x, sr, n_mels=64)
    onset = np.maximum(np.diff(db, axis=1), 0.0).mean(axis=0)
    onset = onset - onset.mean()
    if not np.any(onset) or onset.std() < 1e-6:
        return None
    n = onset.size
    spec = np.fft.rfft(onset, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    ac /= max(ac[0], 1e-12)
    lag_lo, lag_hi = int(math.floor(60.0 * fps / hi)), int(math.ceil(60.0 * fps / lo))
    lag_hi = min(lag_hi, n - 2)
    if lag_hi <= max(lag_lo, 1):
        return None
    lags = np.arange(max(lag_lo, 1), lag_hi + 1)
    bpm = 60.0 * fps / lags
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0) / 1.0) ** 2)
    score = np.clip(ac[lags], 0.0, None) * prior
    if score.max() <= 0:
        return None
    k = int(np.argmax(score))
    lag = float(lags[k])
    if 0 < k < lags.size - 1:  # parabolic refinement of the peak
        a, b, c = score[k - 1], score[k], score[k + 1]
        den = a - 2 * b + c
        if den < 0:
            lag -= 0.5 * (c - a) / den
    return float(np.clip(60.0 * fps / lag, lo, hi))

"""Tempo of audio as a beat tracker hears it, and how it matches a BPM label."""

from __future__ import annotations

import librosa
import numpy as np


def measure_tempo(wav: np.ndarray, sample_rate: int, start_bpm: float = 120.0) -> float:
    """Global tempo estimate (BPM) of a mono waveform from its onset-strength envelope."""
    env = librosa.onset.onset_strength(y=wav, sr=sample_rate, aggregate=np.median)
    return float(librosa.feature.tempo(onset_envelope=env, sr=sample_rate, start_bpm=start_bpm)[0])


def tempo_match(measured: float, label: float, tol: float = 0.04) -> str:
    """"ok" within `tol`, "octave" at 1/2x or 2x (within tol), else "MISMATCH"."""
    if abs(measured / label - 1) <= tol:
        return "ok"
    if any(abs(measured / (label * k) - 1) <= tol for k in (0.5, 2.0)):
        return "octave"
    return "MISMATCH"


def strict_match(measured: float, label: float, tol: float = 0.04) -> bool:
    """Whether ``measured`` is within ``tol`` of ``label`` itself: double or half time counts as wrong
    (a slow request heard at twice its tempo is a miss)."""
    return abs(measured / label - 1) <= tol


# BPM bands of the fidelity table: slow requests (the ones heard double), mid, fast.
BANDS = ((40.0, 95.0), (95.0, 130.0), (130.0, 240.0))


def band_name(bpm: float) -> str:
    """The label of the BANDS entry holding ``bpm`` (low inclusive), e.g. "60-95"; ``bpm`` outside
    every band raises ValueError."""
    for lo, hi in BANDS:
        if lo <= bpm < hi or (hi == BANDS[-1][1] and bpm == hi):
            return f"{lo:g}-{hi:g}"
    raise ValueError(f"bpm {bpm} is outside the bands {BANDS}")


def beat_salience(wav: np.ndarray, sample_rate: int, bpm_range: tuple[float, float] = (40.0, 240.0)) -> float:
    """How clearly the audio pulses: the normalised autocorrelation of its onset-strength envelope
    (mean removed) at its strongest beat period inside ``bpm_range``. 1: onsets repeat exactly at
    one period; about 0.1-0.2 for noise. (N,) mono audio -> a value in [-1, 1]."""
    hop = 512
    env = librosa.onset.onset_strength(y=np.asarray(wav, dtype=np.float32), sr=sample_rate, hop_length=hop)
    env = env - env.mean()
    if not np.any(np.abs(env) > 1e-9):
        raise ValueError("the clip has no onsets (silent or constant)")
    ac = librosa.autocorrelate(env)
    lags = np.arange(1, len(ac))
    bpm = 60.0 * sample_rate / hop / lags
    band = lags[(bpm >= bpm_range[0]) & (bpm <= bpm_range[1])]
    if len(band) < 2:
        raise ValueError("the clip is too short for the beat periods asked")
    return float(ac[band].max() / ac[0])

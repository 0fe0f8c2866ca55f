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

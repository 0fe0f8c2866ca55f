"""Pitch metrics on waveforms: does audio carry notes, and the same notes as a reference?

Tempo and CLAP metrics cannot tell rhythmic filtered noise from music with melody and chords;
these two can (they separated our first VAE, whose output had no notes, from real audio):

- :func:`chroma_correlation` of a reconstruction with its input: mean over frames of the Pearson
  correlation of their 12 pitch-class energies. 1 = same notes; about 0 = unrelated, which is
  also what two different pieces score (the report prints that chance row).
- :func:`tonal_clarity` of any clip: mean over frames of the largest pitch-class share,
  max(chroma) / sum(chroma). 1/12 = 0.083 for a flat spectrum (noise); a single note, or a chord
  whose root dominates, scores well above it. Generated clips are compared with real pieces.

Waveforms are mono float numpy arrays at ``sample_rate`` Hz. Chroma: librosa's STFT chroma,
n_fft 4096 (10.8 Hz bins at 44.1 kHz, finer than a semitone above ~200 Hz), hop 1024, no
per-frame normalisation; frames quieter than 60 dB below the loudest are skipped.
"""

from __future__ import annotations

import librosa
import numpy as np

N_FFT, HOP, FLOOR_DB = 4096, 1024, 60.0


def chroma(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,) audio -> (12, frames) pitch-class energies (non-negative, unnormalised)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if len(wav) < N_FFT:
        raise ValueError(f"pitch metrics need at least {N_FFT} samples, got {len(wav)}")
    power = np.abs(librosa.stft(wav, n_fft=N_FFT, hop_length=HOP)) ** 2
    return librosa.feature.chroma_stft(S=power, sr=sample_rate, norm=None, tuning=0.0)


def _loud(c: np.ndarray) -> np.ndarray:
    total = c.sum(0)
    return total > total.max() * 10 ** (-FLOOR_DB / 10) if total.max() > 0 else np.zeros_like(total, bool)


def chroma_correlation(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Mean per-frame Pearson correlation of the two clips' chroma, over the reference's loud frames."""
    a, b = chroma(estimate, sample_rate), chroma(reference, sample_rate)
    t = min(a.shape[1], b.shape[1])
    a, b = a[:, :t], b[:, :t]
    keep = _loud(b)
    if not keep.any():
        raise ValueError("the reference clip is silent")
    a, b = a[:, keep] - a[:, keep].mean(0), b[:, keep] - b[:, keep].mean(0)
    den = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    return float(np.mean(np.where(den > 0, (a * b).sum(0) / np.maximum(den, 1e-30), 0.0)))


def tonal_clarity(wav: np.ndarray, sample_rate: int) -> float:
    """Mean over loud frames of max(chroma) / sum(chroma): 1/12 for noise, up to 1 for one pitch class."""
    c = chroma(wav, sample_rate)
    keep = _loud(c)
    if not keep.any():
        raise ValueError("the clip is silent")
    c = c[:, keep]
    return float(np.mean(c.max(0) / c.sum(0)))

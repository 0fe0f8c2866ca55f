"""How audible a join is, and whether the beat stays on its grid: measures for extended pieces,
replaced bars and loops.

- :func:`jumps`: at each time, the spectral flux (half-wave rectified change of the log-mel
  spectrum between the frames either side) and the loudness jump (|dB| difference of the RMS in
  the 200 ms before and after, floored at -60 dBFS). A join is as smooth as the music when these are the size they are
  at ordinary bar lines of the same audio, which also change there (downbeats, chord changes).
- :func:`beat_phase_drift`: the phase of the beat grid at the asked BPM in successive segments,
  from the onset envelope folded on the beat period; its change from the first segment is the
  drift (ms). Beat times that stay on the grid keep it near zero whatever the window joins.
"""

from __future__ import annotations

import librosa
import numpy as np

HOP = 256
_LOUD_S = 0.2
# Below -60 dBFS is silence for the loudness jump: choppy grooves have silent 100 ms gaps, and
# the dB ratio of two silences is noise, not a seam.
_FLOOR = 1e-3


def _logmel(wav: np.ndarray, sr: int) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=np.asarray(wav, dtype=np.float32), sr=sr, n_fft=2048, hop_length=HOP,
                                         n_mels=64)
    return np.log(mel + 1e-6)


def jumps(wav: np.ndarray, sr: int, times_s) -> dict[str, np.ndarray]:
    """Spectral flux and loudness jump (dB) at each of ``times_s`` in mono ``wav`` (N,).
    Returns {"flux": (K,), "loudness_db": (K,)}; times too close to either end are dropped."""
    wav = np.asarray(wav, dtype=np.float32)
    spec = _logmel(wav, sr)
    w = int(_LOUD_S * sr)
    flux, loud = [], []
    for t in times_s:
        k, n = int(round(t * sr / HOP)), int(round(t * sr))
        if k < 2 or k + 2 >= spec.shape[1] or n - w < 0 or n + w > wav.size:
            continue
        # Frames two hops apart straddle the time: the change across it, not inside one frame.
        flux.append(float(np.maximum(spec[:, k + 1] - spec[:, k - 2], 0.0).mean()))
        before = max(np.sqrt(np.mean(wav[n - w:n] ** 2)), _FLOOR)
        after = max(np.sqrt(np.mean(wav[n:n + w] ** 2)), _FLOOR)
        loud.append(float(abs(20 * np.log10(after / before))))
    return {"flux": np.array(flux), "loudness_db": np.array(loud)}


def seam_jumps(wav: np.ndarray, sr: int, seams_s, bar_lines_s) -> dict[str, list[float]]:
    """:func:`jumps` at ``seams_s`` and at the ordinary ``bar_lines_s`` of the same audio (the
    seams left out): {"flux_seam", "flux_bars", "loudness_db_seam", "loudness_db_bars"} lists."""
    seams = sorted(set(round(float(t), 4) for t in seams_s))
    ordinary = [t for t in bar_lines_s if all(abs(t - s) > 0.05 for s in seams)]
    a, b = jumps(wav, sr, seams), jumps(wav, sr, ordinary)
    return {f"{k}_{where}": v[k].tolist() for k in ("flux", "loudness_db") for where, v in (("seam", a), ("bars", b))}


def pooled_ratio(parts: list[dict], boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Pool :func:`seam_jumps` of several clips: mean at seams over mean at bar lines for flux and
    loudness jump (1 = a seam is like any bar line), with the counts; a 90 % bootstrap interval of
    each ratio (clips resampled: a few loud new sections dominate these heavy-tailed means); and
    the share of seams above the bar lines' 90th percentile (0.1 when seams are like bar lines)."""
    out = {}
    rng = np.random.default_rng(seed)
    for k in ("flux", "loudness_db"):
        seam = [v for p in parts for v in p[f"{k}_seam"]]
        bars = [v for p in parts for v in p[f"{k}_bars"]]
        out[f"{k}_seam"] = float(np.mean(seam)) if seam else float("nan")
        out[f"{k}_bars"] = float(np.mean(bars)) if bars else float("nan")
        out[f"{k}_ratio"] = out[f"{k}_seam"] / max(out[f"{k}_bars"], 1e-9)
        out["seams"], out["bar_lines"] = len(seam), len(bars)
        out[f"{k}_above_p90"] = float(np.mean(np.array(seam) > np.quantile(bars, 0.9))) if seam and bars else float("nan")
        ratios = []
        for _ in range(boot if len(parts) > 1 else 0):
            pick = [parts[i] for i in rng.integers(0, len(parts), len(parts))]
            a = [v for p in pick for v in p[f"{k}_seam"]]
            b = [v for p in pick for v in p[f"{k}_bars"]]
            if a and b:
                ratios.append(np.mean(a) / max(np.mean(b), 1e-9))
        lo, hi = (np.quantile(ratios, [0.05, 0.95]) if ratios else (float("nan"), float("nan")))
        out[f"{k}_ratio_lo"], out[f"{k}_ratio_hi"] = float(lo), float(hi)
    return out


def bar_pattern(env: np.ndarray, frame_s: float, start_s: float, end_s: float, bar_s: float,
                bin_s: float = 0.005, smooth_s: float | None = None) -> np.ndarray:
    """The onset envelope between ``start_s`` and ``end_s`` folded on the bar period: mean onset
    strength per ``bin_s`` of the bar's phase, mean removed. (round(bar_s / bin_s),).

    Sums and counts are smoothed on the circle by a Gaussian of ``smooth_s`` (default: one envelope
    frame) before dividing: a few bars give each 5 ms bin only a frame or none (frames are 11.6 ms
    at 22.05 kHz), and the raw pattern was then spiky enough to align two segments half a beat
    apart on a steady click track."""
    t = np.arange(env.size) * frame_s
    sel = (t >= start_s) & (t < end_s)
    bins = int(round(bar_s / bin_s))
    idx = np.floor((t[sel] % bar_s) / bar_s * bins).astype(int) % bins
    sums = np.bincount(idx, weights=env[sel], minlength=bins).astype(np.float64)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    sigma = (frame_s if smooth_s is None else smooth_s) / bin_s
    if sigma > 0:
        lag = np.minimum(np.arange(bins), bins - np.arange(bins))  # circular distance in bins
        kernel = np.fft.rfft(np.exp(-0.5 * (lag / sigma) ** 2))
        sums = np.fft.irfft(np.fft.rfft(sums) * kernel, n=bins)
        counts = np.fft.irfft(np.fft.rfft(counts) * kernel, n=bins)
    pat = sums / np.maximum(counts, 1e-9)
    return pat - pat.mean()


def onset_envelope(wav: np.ndarray, sr: int) -> np.ndarray:
    """librosa's onset strength of mono ``wav`` at hop :data:`HOP` (frames of HOP / sr seconds)."""
    return librosa.onset.onset_strength(y=np.asarray(wav, dtype=np.float32), sr=sr, hop_length=HOP)


def segment_starts(env: np.ndarray, sr: int, segment_s: float) -> np.ndarray:
    """Start times (s) of the whole ``segment_s`` segments of an :func:`onset_envelope` of audio at
    ``sr``: the segments every per-segment beat measure reads, so their lists line up."""
    return np.arange(0.0, env.size * HOP / sr - segment_s + 1e-9, segment_s)


def beat_phase_drift(wav: np.ndarray, sr: int, bpm: float, beats_per_bar: float = 4.0,
                     segment_s: float = 20.0, bin_s: float = 0.005, env: np.ndarray | None = None) -> dict:
    """How far the beat grid moves against an exact grid at ``bpm`` over mono ``wav``.

    Each ``segment_s`` segment's onset envelope is folded on the bar period at ``bpm``
    (:func:`bar_pattern`); its shift is the circular lag, within half a beat, that best aligns it
    with the first segment's pattern. Matching the whole bar pattern, not one pulse, keeps an
    off-beat accent from reading as half a beat of drift. Music at exactly ``bpm`` scores 0 ms;
    a tempo off by 0.1 % drifts 20 ms per 20 s. Returns {"drift_ms" (per segment), "max_drift_ms",
    "end_drift_ms"}. ``env``: :func:`onset_envelope` of ``wav`` when the caller already has it."""
    env = onset_envelope(wav, sr) if env is None else env
    frame_s = HOP / sr
    beat_s = 60.0 / bpm
    bar_s = beat_s * beats_per_bar
    dur = env.size * frame_s
    starts = segment_starts(env, sr, segment_s)
    pats = [bar_pattern(env, frame_s, s0, s0 + segment_s, bar_s, bin_s) for s0 in starts]
    if len(pats) < 2:
        raise ValueError(f"beat drift needs at least two {segment_s:g} s segments, the audio lasts {dur:.1f} s")
    max_lag = int(round(0.5 * beat_s / bin_s))
    lags = np.arange(-max_lag, max_lag + 1)
    drift = [0.0]
    for pat in pats[1:]:
        score = [float(np.dot(pats[0], np.roll(pat, -lag))) for lag in lags]
        drift.append(float(lags[int(np.argmax(score))] * bin_s * 1000))
    drift = np.array(drift)
    return {"drift_ms": drift.round(1).tolist(), "max_drift_ms": float(np.abs(drift).max()),
            "end_drift_ms": float(abs(drift[-1]))}

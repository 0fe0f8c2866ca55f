"""Note content of audio, with librosa's onset detector and constant-Q chroma: how many notes start
per second, and how many pitch classes the music uses. Generated clips with smeared, sustained haze
score fewer onsets and fewer clear pitch classes than the corpus."""

from __future__ import annotations

import librosa
import numpy as np

HOP = 512
MIN_SHARE = 0.06  # a pitch class counts when it holds this share of the clip's tonal chroma energy (1/12 = 0.083)


def onsets_per_second(wav: np.ndarray, sample_rate: int) -> float:
    """Note onsets librosa's detector finds (peaks of the onset-strength envelope at least 50 ms
    apart, so one attack is not counted twice), per second of audio. (N,) mono -> onsets / s."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if len(wav) < sample_rate // 4:
        raise ValueError(f"onsets need at least 0.25 s of audio, got {len(wav) / sample_rate:.3f} s")
    wait = max(1, round(0.05 * sample_rate / HOP))
    onsets = librosa.onset.onset_detect(y=wav, sr=sample_rate, hop_length=HOP, units="frames", wait=wait)
    return float(len(onsets) / (len(wav) / sample_rate))


def pitch_class_count(wav: np.ndarray, sample_rate: int, floor_db: float = 40.0) -> int:
    """Pitch classes (0-12) that sound clearly in the clip. Constant-Q chroma per frame, less its
    median (the broadband floor of drums and noise), over the frames within ``floor_db`` of the
    loudest whose largest class stands above twice the median; a class counts when it holds at
    least MIN_SHARE of that tonal energy on average. Noise has no such frames and scores 0."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    c = np.abs(librosa.feature.chroma_cqt(y=wav, sr=sample_rate, hop_length=HOP, norm=None))
    rms = librosa.feature.rms(y=wav, hop_length=HOP)[0][: c.shape[1]]
    if rms.max() <= 0:
        raise ValueError("the clip is silent")
    c = c[:, : len(rms)][:, rms > rms.max() * 10 ** (-floor_db / 20)]
    med = np.median(c, axis=0, keepdims=True)
    tonal = c[:, c.max(0) > 2.0 * med[0]] - med[:, c.max(0) > 2.0 * med[0]]
    if tonal.shape[1] == 0:
        return 0
    share = (np.maximum(tonal, 0.0) / np.maximum(np.maximum(tonal, 0.0).sum(0, keepdims=True), 1e-12)).mean(1)
    return int((share >= MIN_SHARE).sum())

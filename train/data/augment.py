"""Waveform augmentation and normalisation shared by the audio dataset and the latent cache.

The paper trains on licensed music "augmented with pitch-shifting and time-stretching"
without giving ranges; the defaults here (+-2 semitones, rates 0.9-1.1, each with p = 0.5)
are our choice. Labels follow the audio: time-stretching by rate r (r > 1 = faster)
multiplies the BPM by r; pitch-shifting by n semitones moves the key by n. Captions that
quote "NN BPM" or "<key> major|minor" are rewritten to match (`rewrite_caption`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import librosa
import numpy as np

from train.data.corpus.music_theory import transpose_key

_BPM_RE = re.compile(r"\b(\d+(?:\.\d+)?)(\s*-?\s*)(bpm)\b", re.IGNORECASE)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the two augmentations.

    pitch_prob: chance of a pitch shift; pitch_semitones: shift drawn uniformly from the
    non-zero integers in [-pitch_semitones, pitch_semitones]. stretch_prob: chance of a
    time-stretch; stretch_range: (low, high) of the uniformly drawn rate.
    """

    pitch_prob: float = 0.5
    pitch_semitones: int = 2
    stretch_prob: float = 0.5
    stretch_range: tuple[float, float] = (0.9, 1.1)

    def sample(self, rng: np.random.Generator) -> tuple[float, int]:
        """Draw (stretch rate, semitones); (1.0, 0) means "leave as is"."""
        rate, semis = 1.0, 0
        if rng.random() < self.stretch_prob:
            rate = float(rng.uniform(*self.stretch_range))
        if rng.random() < self.pitch_prob and self.pitch_semitones > 0:
            choices = [s for s in range(-self.pitch_semitones, self.pitch_semitones + 1) if s != 0]
            semis = int(choices[int(rng.integers(len(choices)))])
        return rate, semis


def rms_normalize(wav: np.ndarray, target_db: float = -20.0, peak_limit: float = 0.99,
                  floor_db: float = -60.0) -> np.ndarray:
    """Scale `wav` to an RMS of `target_db` dBFS, never past `peak_limit` (so very peaky
    clips end a little quieter than the target). Near-silent input (RMS below `floor_db`)
    is returned unscaled rather than amplifying noise."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    if rms < 10 ** (floor_db / 20):
        return wav.astype(np.float32, copy=False)
    gain = 10 ** (target_db / 20) / rms
    peak = float(np.abs(wav).max())
    gain = min(gain, peak_limit / peak)
    return (wav * gain).astype(np.float32)


def time_stretch(wav: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch; output length ~= len(wav) / rate (rate > 1 = faster)."""
    if rate == 1.0:
        return wav
    return librosa.effects.time_stretch(wav, rate=rate).astype(np.float32)


def pitch_shift(wav: np.ndarray, sample_rate: int, semitones: int) -> np.ndarray:
    """Pitch shift by `semitones` keeping the duration (librosa, soxr resampling)."""
    if semitones == 0:
        return wav
    return librosa.effects.pitch_shift(wav, sr=sample_rate, n_steps=semitones,
                                       res_type="soxr_hq").astype(np.float32)


def apply(wav: np.ndarray, sample_rate: int, rate: float, semitones: int) -> np.ndarray:
    """Time-stretch then pitch-shift a mono waveform (N,)."""
    return pitch_shift(time_stretch(wav, rate), sample_rate, semitones)


def rewrite_caption(caption: str, bpm: float | None = None, key: str | None = None,
                    new_key: str | None = None) -> str:
    """Replace "NN BPM" numbers by round(`bpm`) and "`key` major|minor" by `new_key`."""
    if bpm is not None:
        caption = _BPM_RE.sub(lambda m: f"{round(bpm)}{m.group(2)}{m.group(3)}", caption)
    if key and new_key and key != new_key:
        caption = re.sub(rf"(?<![\w#]){re.escape(key)}(?=\s+(?:major|minor)\b)", new_key, caption)
    return caption


def augment_labels(item: dict, rate: float, semitones: int) -> dict:
    """Labels of `item` (bpm, key, captions) after stretching by `rate` and shifting by
    `semitones`. Returns a new dict; other fields are copied."""
    out = dict(item)
    out["bpm"] = float(item["bpm"]) * rate
    key, mode = item.get("key"), item.get("mode") or "major"
    new_key = transpose_key(key, semitones, mode) if key and semitones else key
    out["key"] = new_key
    caps = item.get("captions") or [item["caption"]]
    out["captions"] = [rewrite_caption(c, out["bpm"] if rate != 1.0 else None, key, new_key) for c in caps]
    out["caption"] = out["captions"][0]
    out["stretch"], out["semitones"] = rate, semitones
    return out

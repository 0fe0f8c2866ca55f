"""Audio dataset format and the waveform-crop dataset used to train the VAE (and, without a
latent cache, the diffusion model).

Dataset folder convention
-------------------------
    DIR/metadata.jsonl   one JSON object per line, paths relative to DIR:
        path      (str, required)  audio file readable by soundfile (wav, flac, ogg ...)
        caption   (str) and/or captions (list[str], several phrasings)  -- at least one
        bpm       (float > 0, required)  quarter notes per minute
        split     "train" | "heldout"  (optional; missing means "train")
        key, mode, genre, instruments, duration ... (optional, passed through)
    DIR/heldout_prompts.json  (optional) example prompts of the held-out split

One file holds both splits; `read_metadata(DIR, split)` filters by the `split` field.
Any sample rate / channel count is accepted: crops are resampled and mixed down to mono, or kept
as two channels for the mono-to-stereo stage (``channels=2``, which needs stereo files).

Randomness: every random choice of item `i` comes from numpy's generator seeded with
(seed, epoch, i), so results do not depend on worker count or order; call `set_epoch`
each epoch (like DistributedSampler) to get fresh crops.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from train.data.augment import AugmentConfig, apply, augment_labels, rms_normalize
from train.infra.config import DataError

_MARGIN_S = 0.1  # extra audio read on both sides so STFT edges fall outside the crop


def read_metadata(root: str | os.PathLike, split: str | None = "train") -> list[dict]:
    """Validated records of DIR/metadata.jsonl (optionally of one split).

    Each record gains `abs_path` and `captions` (a list, built from `caption` if needed).
    Raises DataError (a ValueError) naming the line for malformed records.
    """
    root = Path(root)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found (a dataset folder needs metadata.jsonl)")
    out = []
    with open(meta) as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{meta}:{ln}: not JSON ({exc})") from exc
            caps = rec.get("captions") or ([rec["caption"]] if rec.get("caption") else [])
            if "path" not in rec or not caps or not all(isinstance(c, str) and c for c in caps):
                raise DataError(f"{meta}:{ln}: needs 'path' and a non-empty 'caption' or 'captions'")
            try:
                bpm = float(rec["bpm"])
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{meta}:{ln}: needs a numeric 'bpm'") from exc
            if not 0 < bpm < 1000:
                raise DataError(f"{meta}:{ln}: bpm {bpm} outside (0, 1000)")
            rec.setdefault("split", "train")
            if split is not None and rec["split"] != split:
                continue
            rec.update(captions=list(caps), bpm=bpm, abs_path=str(root / rec["path"]))
            out.append(rec)
    return out


def check_audio(records: list[dict], min_seconds: float = 0.1, channels: int | None = None) -> None:
    """Read each record's audio header once: a file that cannot be opened, is shorter than
    ``min_seconds``, has another rate than its ``sample_rate`` field or (when given) another
    channel count than ``channels`` raises DataError (a ValueError) naming it."""
    for rec in records:
        path = rec["abs_path"]
        try:
            info = sf.info(path)
        except (OSError, RuntimeError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
            raise DataError(f"{path}: unreadable audio ({' '.join(str(e).split())})") from None
        if info.frames < min_seconds * info.samplerate:
            raise DataError(f"{path}: only {info.frames / info.samplerate:.3f} s of audio")
        if channels is not None and info.channels != channels:
            raise DataError(f"{path}: {info.channels} channel(s), but {channels} are needed"
                             + (" (a stereo corpus: build_corpus --version 2)" if channels == 2 else ""))
        want = rec.get("sample_rate")
        if want is not None and int(want) != info.samplerate:
            raise DataError(f"{path}: the file is {info.samplerate} Hz but metadata.jsonl says {int(want)} Hz")


def load_audio(path: str, sample_rate: int, start_s: float = 0.0, seconds: float | None = None,
               channels: int = 1) -> np.ndarray:
    """Read [start_s, start_s + seconds) of a file (zero-padded past the end) and resample it to
    `sample_rate`: mixed down to mono, float32 (N,), for ``channels=1``; left and right, float32
    (2, N), for ``channels=2``, where a file without exactly two channels raises DataError naming it."""
    info = sf.info(path)
    if channels == 2 and info.channels != 2:
        raise DataError(f"{path}: {info.channels} channel(s), but the stereo stage needs 2-channel audio "
                         "(a corpus built with --version 2)")
    start = max(int(round(start_s * info.samplerate)), 0)
    frames = -1 if seconds is None else int(math.ceil(seconds * info.samplerate))
    wav, sr = sf.read(path, start=min(start, info.frames), frames=frames, dtype="float32", always_2d=True)
    wav = wav.mean(axis=1) if channels == 1 else np.ascontiguousarray(wav.T)
    if frames > 0 and wav.shape[-1] < frames:
        wav = np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, frames - wav.shape[-1])])
    if sr != sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq", axis=-1)
    return wav.astype(np.float32, copy=False)


def load_mono(path: str, sample_rate: int, start_s: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """:func:`load_audio` mixed down to mono: float32 (N,)."""
    return load_audio(path, sample_rate, start_s, seconds, channels=1)


class AudioDataset(Dataset):
    """Random crops of `seconds` at `sample_rate` with optional pitch/tempo augmentation (mono only).

    Item: dict(wav=(channels, N) float32 tensor (mono, or left and right for ``channels=2``), caption=str (one random phrasing, rewritten to
    the augmented BPM/key), bpm=float, key, mode, genre, path, start_s, stretch, semitones).
    Loudness: RMS normalised to `target_db` dBFS (peak-limited, see augment.rms_normalize).
    """

    def __init__(self, root: str | os.PathLike, seconds: float, sample_rate: int = 44100,
                 split: str | None = "train", augment: AugmentConfig | None = None,
                 target_db: float | None = -20.0, seed: int = 0, channels: int = 1):
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 (mono) or 2 (stereo), got {channels!r}")
        if channels == 2 and augment is not None:
            raise ValueError("pitch/tempo augmentation is for mono crops only")
        self.items = read_metadata(root, split)
        if not self.items:
            raise DataError(f"no items with split={split!r} in {root}")
        check_audio(self.items, channels=2 if channels == 2 else None)  # mono crops mix any count down
        self.channels = channels
        self.seconds, self.sample_rate = float(seconds), int(sample_rate)
        self.n = int(round(self.seconds * self.sample_rate))
        self.augment, self.target_db, self.seed, self.epoch = augment, target_db, int(seed), 0
        self._durations: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the crops/augmentations drawn for every item (deterministically)."""
        self.epoch = int(epoch)

    def _duration(self, i: int) -> float:
        if i not in self._durations:
            self._durations[i] = sf.info(self.items[i]["abs_path"]).duration
        return self._durations[i]

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        item = self.items[i]
        rate, semis = self.augment.sample(rng) if self.augment else (1.0, 0)
        need = self.seconds * rate  # source seconds that become `seconds` after stretching
        start = float(rng.uniform(0.0, max(self._duration(i) - need, 0.0)))
        margin = min(_MARGIN_S, start)
        wav = load_audio(item["abs_path"], self.sample_rate, start - margin, need + margin + _MARGIN_S,
                         channels=self.channels)
        if self.channels == 1:
            wav = apply(wav, self.sample_rate, rate, semis)
        off = int(round(margin * self.sample_rate / rate))
        wav = wav[..., off: off + self.n]
        if wav.shape[-1] < self.n:
            wav = np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, self.n - wav.shape[-1])])
        if self.target_db is not None:
            wav = rms_normalize(wav, self.target_db)  # one gain for both channels: the balance stays
        labels = augment_labels(item, rate, semis)
        caption = labels["captions"][int(rng.integers(len(labels["captions"])))]
        wav = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        return {"wav": wav[None] if wav.dim() == 1 else wav,
                "caption": caption, "bpm": labels["bpm"], "key": labels.get("key"),
                "mode": item.get("mode"), "genre": item.get("genre"), "path": item["path"],
                "start_s": start, "stretch": rate, "semitones": semis}


def collate(batch: list[dict]) -> dict:
    """Stack a list of items: tensors -> (B, ...) tensor, numbers -> float32/int64 (B,)
    tensors, everything else -> list. Works for AudioDataset and LatentDataset items."""
    out = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif all(isinstance(v, bool) for v in vals):
            out[k] = vals
        elif all(isinstance(v, int) for v in vals):
            out[k] = torch.tensor(vals, dtype=torch.int64)
        elif all(isinstance(v, (int, float)) for v in vals):
            out[k] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[k] = vals
    return out

"""Evaluation clips: the held-out prompts of a corpus, crops of their audio, one generation per
prompt, and their CLAP embeddings (train.eval, train.report, train.edit_report)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from presto_core.errors import PrestoError
from presto_core.request import LIMITS
from train.data.augment import rms_normalize
from train.data.dataset import load_mono, read_metadata

TARGET_DB = -20.0  # training loudness of every crop (train.data.dataset, train.vae)
CROP_START_S = 4.0  # skips count-ins and fade-ins


def clamp_bpm(bpm: float) -> float:
    """A BPM label clamped into the range a generation request accepts (presto_core.request.LIMITS)."""
    lo, hi = LIMITS["bpm"]
    return float(min(max(bpm, lo), hi))


def load_crop(path: str, sample_rate: int, seconds: float, start_s: float = CROP_START_S) -> np.ndarray:
    """Mono float32 crop, shape (round(seconds * sample_rate),), from ``start_s`` into the file (earlier
    if the file ends sooner; zero-padded if shorter than ``seconds``), RMS-normalised to -20 dBFS."""
    start = min(start_s, max(sf.info(path).duration - seconds, 0.0))
    n = int(round(seconds * sample_rate))
    wav = load_mono(path, sample_rate, start, seconds)[:n]
    return rms_normalize(np.pad(wav, (0, n - len(wav))), TARGET_DB)


def embed_audio(scorer, clips: list[np.ndarray], sr: int, batch: int = 8) -> np.ndarray:
    """Equal-length mono clips at ``sr`` -> (N, D) CLAP embeddings."""
    out = []
    for i in range(0, len(clips), batch):
        wav = torch.from_numpy(np.stack(clips[i:i + batch]).astype(np.float32))
        out.append(scorer.embed_audio(wav, sr).float().cpu().numpy())
    return np.concatenate(out)


def embed_text(scorer, prompts: list[str], batch: int = 32) -> np.ndarray:
    return np.concatenate([scorer.embed_text(prompts[i:i + batch]).float().cpu().numpy()
                           for i in range(0, len(prompts), batch)])


def generate_set(pipe, variant: str, items: list[dict], num: int, duration: float, seed: int,
                 reject_ratio: float = 0.0, steps: int | None = None,
                 stereo: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """One clip per prompt for ``num`` prompts (cycling through ``items``): mono (N,) arrays, the
    form every embedding and measure takes, or (2, N) with ``stereo`` (the model needs m2s)."""
    clips, prompts = [], []
    for i in range(num):
        it = items[i % len(items)]
        res = pipe.generate(prompt=it["prompt"], bpm=clamp_bpm(it["bpm"]), duration=duration, num_clips=1,
                            variant=variant, seed=seed + i, reject_ratio=reject_ratio, steps=steps, stereo=stereo)
        clips.append(res.clips[0].audio)
        prompts.append(it["prompt"])
    return clips, prompts


def split_records(corpus: str, split: str = "heldout") -> list[dict]:
    """{prompt (first caption), captions, bpm, path} of each piece of one split of
    CORPUS/metadata.jsonl. Raises PrestoError if the file is missing or malformed or the split is empty."""
    try:
        recs = read_metadata(corpus, split)
    except (OSError, ValueError) as e:
        raise PrestoError(f"--corpus: {e}") from None
    if not recs:
        raise PrestoError(f"--corpus: {corpus}/metadata.jsonl has no items with split {split!r}")
    return [{"prompt": r["captions"][0], "captions": r["captions"], "bpm": r["bpm"], "path": r["abs_path"],
             "genre": r.get("genre") or r["captions"][0]} for r in recs]


def heldout_records(corpus: str) -> list[dict]:
    """:func:`split_records` of the held-out split."""
    return split_records(corpus, "heldout")


def real_crops(items: list[dict], sr: int, seconds: float, per_file: int = 3) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``per_file`` consecutive crops of ``seconds`` per file (``path``), loudness-normalised
    mono at ``sr``, and each crop's caption (its file's ``prompt``)."""
    out, captions = [], []
    for it in items:
        total = sf.info(it["path"]).duration
        for k in range(per_file):
            if (k + 1) * seconds > total + 1e-6:
                break
            out.append(rms_normalize(load_mono(it["path"], sr, k * seconds, seconds)))
            captions.append(it["prompt"])
    return out, captions

"""Helpers shared by the training tests: the repository's config folder, a synthetic corpus in the
train/data dataset format, and a run's logged values for comparing two runs exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from train.infra.checkpointing import read_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "train" / "configs"


def logged_values(run_dir) -> list[dict]:
    """A run's metrics.jsonl without the wall-clock rate, for comparing two runs exactly."""
    return [{k: v for k, v in m.items() if k != "steps_per_s"} for m in read_metrics(run_dir)]


def make_corpus(root: Path, n_train: int = 6, n_heldout: int = 2, seconds: float = 1.5, sr: int = 16000,
                stereo: bool = False) -> Path:
    """A few synthetic tone clips + metadata.jsonl in the train/data dataset format; ``stereo``
    writes two channels: the tone panned to one side plus noise of its own on each channel."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    names = ["piano", "bass", "pad", "lead", "bell", "organ", "pluck", "choir"]
    with open(root / "metadata.jsonl", "w") as f:
        for i in range(n_train + n_heldout):
            freq = 110.0 * 2 ** (i / 3)
            bpm = 80.0 + 10 * i
            beat = (np.sin(2 * np.pi * bpm / 60 * t) > 0.9).astype(np.float32)
            wav = 0.3 * np.sin(2 * np.pi * freq * t) * (0.5 + 0.5 * beat) + 0.01 * rng.standard_normal(t.size)
            if stereo:
                pan = 0.4 * (-1) ** i
                wav = np.stack([wav * (1 + pan) + 0.02 * rng.standard_normal(t.size),
                                wav * (1 - pan) + 0.02 * rng.standard_normal(t.size)], axis=1)
            sf.write(root / "audio" / f"{i:02d}.wav", wav.astype(np.float32), sr)
            name = names[i % len(names)]
            rec = {"path": f"audio/{i:02d}.wav", "captions": [f"{name} tone at {bpm:.0f} BPM", f"a {name} melody"],
                   "bpm": bpm, "split": "heldout" if i >= n_train else "train", "genre": name}
            f.write(json.dumps(rec) + "\n")
    return root

"""Write a copy of a dataset folder with every file mixed down to mono WAV at one sample rate.

    python -m train.data.resample --src data/corpus --out data/corpus-16k --rate 16000 [--jobs 2]

Why: a stage whose model runs at another rate than the corpus (the embedded CLAP runs at 16 kHz, the
corpus is 44.1 kHz FLAC) otherwise decodes and resamples every crop on every step, which made CLAP
training data-bound (0.1-0.18 s per 10 s crop on 2 cores). A WAV mirror at the model's rate is
read with a seek and no resampling. The copy keeps the dataset format (train/data/dataset.py):
metadata.jsonl with `path` pointing at the new files and `sample_rate` updated, and the folder's
other JSON files (held-out prompts, corpus record). Files already converted are skipped, so an
interrupted run continues; each file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from train.data.dataset import load_mono, read_metadata


def _convert(args: tuple[str, str, int]) -> str:
    src, dst, rate = args
    if not os.path.exists(dst):
        wav = load_mono(src, rate)
        peak = float(np.abs(wav).max()) if len(wav) else 0.0
        if peak > 1.0:  # resampling can overshoot full scale; float WAV keeps it, PCM would clip
            wav = wav / peak
        tmp = dst + ".tmp.wav"
        sf.write(tmp, wav, rate, subtype="FLOAT")
        os.replace(tmp, dst)
    return dst


def resample_dataset(src: str | os.PathLike, out: str | os.PathLike, rate: int, jobs: int = 1) -> Path:
    """Mirror dataset folder `src` into `out` as mono float WAV at `rate` Hz. Returns `out`."""
    if rate <= 0:
        raise ValueError(f"rate must be a positive number of Hz, got {rate}")
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ValueError("--out must differ from --src")
    records = read_metadata(src, split=None)
    tasks, lines = [], []
    for rec in records:
        rel = Path(rec["path"]).with_suffix(".wav")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        tasks.append((rec.pop("abs_path"), str(out / rel), rate))
        rec.update(path=str(rel), sample_rate=rate)
        lines.append(json.dumps(rec))
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_convert, tasks, chunksize=4))
    else:
        for t in tasks:
            _convert(t)
    for extra in src.glob("*.json"):
        shutil.copy2(extra, out / extra.name)
    tmp = out / "metadata.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "metadata.jsonl")  # written last: its presence means the mirror is complete
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.data.resample", description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, help="dataset folder with metadata.jsonl")
    ap.add_argument("--out", required=True, help="new dataset folder")
    ap.add_argument("--rate", type=int, required=True, help="sample rate of the copy, Hz")
    ap.add_argument("--jobs", type=int, default=1, help="parallel processes")
    args = ap.parse_args(argv)
    try:
        resample_dataset(args.src, args.out, args.rate, args.jobs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the procedural, captioned, BPM-labelled training corpus entirely offline.

    python -m train.data.build_corpus --out DIR --hours H --seed S [--heldout-fraction 0.05]
        [--soundfont PATH] [--clip-seconds 32] [--jobs 1] [--format flac|wav] [--genres a,b]
        [--no-render] [--overwrite]

Writes, under DIR (the dataset format of train/data/dataset.py):
    audio/NNNNN_<genre>.flac   mono 44.1 kHz, 16-bit, exactly --clip-seconds long
    midi/NNNNN_<genre>.mid     the arrangement FluidSynth rendered
    metadata.jsonl             one JSON per piece: path, captions, bpm, key, mode, genre, split ...
    heldout_prompts.json       captions + bpm of the held-out pieces (example prompts for the app)
    corpus.json                build settings, soundfont, FluidSynth version, render timings

Everything but the audio is a pure function of (seed, number of pieces, clip length, genres):
same seed -> identical metadata.jsonl and identical MIDI; audio is identical given the same
FluidSynth build and soundfont. Rendering needs the packages in train/data/APT_PACKAGES.txt.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from train.data.corpus.arrange import arrange
from train.data.corpus.captions import make_captions
from train.data.corpus.genres import GENRES, get_genre
from train.data.corpus.render import (
    RenderError, find_fluidsynth, find_soundfont, finish_clip, fluidsynth_version, render_midi,
)

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class PiecePlan:
    """Which genre and split piece `index` gets; its generator is seeded by (seed, index)."""

    index: int
    genre: str
    split: str
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.index:05d}_{self.genre}"


def plan_corpus(n_pieces: int, seed: int, heldout_fraction: float = 0.05,
                genres: list[str] | None = None) -> list[PiecePlan]:
    """Balanced genre assignment (shuffled rounds over all genres) and a held-out subset.

    At least one piece is held out when heldout_fraction > 0 and n_pieces >= 2.
    """
    names = sorted(genres or GENRES)
    for g in names:
        get_genre(g)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    order: list[str] = []
    while len(order) < n_pieces:
        order += [names[i] for i in rng.permutation(len(names))]
    n_held = 0
    if heldout_fraction > 0 and n_pieces >= 2:
        n_held = min(n_pieces - 1, max(1, round(n_pieces * heldout_fraction)))
    held = set(rng.permutation(n_pieces)[:n_held].tolist())
    return [PiecePlan(i, order[i], "heldout" if i in held else "train", seed) for i in range(n_pieces)]


def make_piece(plan: PiecePlan, clip_seconds: float, audio_format: str = "flac"):
    """Arrange and caption one planned piece. Returns (pretty_midi object, metadata dict)."""
    genre = get_genre(plan.genre)
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, plan.index]))
    pm, info = arrange(genre, rng, clip_seconds)
    captions = make_captions(info, genre, rng)
    instruments = [p["name"] for p in info.parts]
    record = {
        "path": f"audio/{plan.stem}.{audio_format}", "midi": f"midi/{plan.stem}.mid", "split": plan.split,
        "caption": captions[0], "captions": captions, "bpm": info.bpm, "key": info.key,
        "mode": info.mode, "genre": plan.genre, "genre_label": genre.labels[0],
        "instruments": instruments, "programs": info.programs, "drum_kit": info.drum_kit,
        "duration": float(clip_seconds), "sample_rate": SAMPLE_RATE, "scale": info.scale,
        "swing": info.swing, "progressions": info.progressions,
        "sections": [{"name": s.name, "start_bar": s.start_bar, "n_bars": s.n_bars, "chords": s.chords}
                     for s in info.sections],
        "seed": [plan.seed, plan.index],
    }
    return pm, record


def render_piece(job: tuple[str, str, float, str | None]) -> dict:
    """Worker: render one MIDI file to a finished clip (atomic write). Returns stats."""
    midi_path, audio_path, seconds, soundfont = job
    t0 = time.perf_counter()
    audio = finish_clip(render_midi(midi_path, SAMPLE_RATE, soundfont), SAMPLE_RATE, seconds)
    tmp = audio_path + ".part"
    fmt = "FLAC" if audio_path.endswith(".flac") else "WAV"
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format=fmt)
    os.replace(tmp, audio_path)
    return {"path": audio_path, "render_s": time.perf_counter() - t0, "audio_s": seconds,
            "rms": float(np.sqrt(np.mean(audio ** 2))), "peak": float(np.abs(audio).max())}


def build_corpus(out: str | os.PathLike, hours: float | None = None, n_pieces: int | None = None,
                 seed: int = 0, heldout_fraction: float = 0.05, soundfont: str | None = None,
                 clip_seconds: float = 32.0, jobs: int = 1, audio_format: str = "flac",
                 genres: list[str] | None = None, render: bool = True, overwrite: bool = False,
                 progress: bool = False) -> list[dict]:
    """Build a corpus under `out` (see module doc); give `hours` or `n_pieces`.

    Returns the metadata records (also written to metadata.jsonl).
    """
    if (hours is None) == (n_pieces is None):
        raise ValueError("give exactly one of hours or n_pieces")
    if n_pieces is None:
        n_pieces = max(1, math.ceil(hours * 3600.0 / clip_seconds))
    if audio_format not in ("flac", "wav"):
        raise ValueError(f"audio_format must be 'flac' or 'wav', got {audio_format!r}")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "midi").mkdir(parents=True, exist_ok=True)
    sf_path = None
    if render:
        find_fluidsynth()
        sf_path = str(find_soundfont(soundfont))

    records, jobs_todo = [], []
    for plan in plan_corpus(n_pieces, seed, heldout_fraction, genres):
        pm, rec = make_piece(plan, clip_seconds, audio_format)
        buf = io.BytesIO()
        pm.write(buf)
        midi_path, audio_path = out / rec["midi"], out / rec["path"]
        same_midi = midi_path.is_file() and midi_path.read_bytes() == buf.getvalue()
        midi_path.write_bytes(buf.getvalue())
        records.append(rec)
        # existing audio is reused only when it was rendered from this very MIDI file
        if render and (overwrite or not same_midi or not audio_path.is_file()):
            jobs_todo.append((str(out / rec["midi"]), str(audio_path), clip_seconds, sf_path))

    with open(out / "metadata.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    held = [{"caption": r["caption"], "captions": r["captions"], "bpm": r["bpm"], "genre": r["genre"],
             "key": r["key"], "mode": r["mode"], "duration": r["duration"], "path": r["path"]}
            for r in records if r["split"] == "heldout"]
    with open(out / "heldout_prompts.json", "w") as f:
        json.dump(held, f, indent=1)

    stats = _render_all(jobs_todo, jobs, progress)
    info = {"seed": seed, "n_pieces": n_pieces, "clip_seconds": clip_seconds, "hours": n_pieces * clip_seconds / 3600,
            "heldout_fraction": heldout_fraction, "genres": sorted(genres or GENRES),
            "sample_rate": SAMPLE_RATE, "format": audio_format, "soundfont": sf_path}
    if render:
        total_render = sum(s["render_s"] for s in stats)
        info.update(fluidsynth=fluidsynth_version(), rendered=len(stats), render_cpu_s=round(total_render, 2),
                    x_realtime_per_process=round(sum(s["audio_s"] for s in stats) / total_render, 2) if stats else None)
    with open(out / "corpus.json", "w") as f:
        json.dump(info, f, indent=1)
    return records


def _render_all(jobs_todo: list, jobs: int, progress: bool) -> list[dict]:
    bar = None
    if progress and jobs_todo:
        bar = tqdm(total=len(jobs_todo), desc="render", unit="piece", file=sys.stderr)
    stats = []
    if jobs <= 1:
        for job in jobs_todo:
            stats.append(render_piece(job))
            if bar is not None:
                bar.update(1)
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            for s in pool.imap_unordered(render_piece, jobs_todo):
                stats.append(s)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    size = ap.add_mutually_exclusive_group(required=True)
    size.add_argument("--hours", type=float, help="total audio hours (pieces = ceil(hours*3600/clip))")
    size.add_argument("--pieces", type=int, help="number of pieces instead of --hours")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-fraction", type=float, default=0.05)
    ap.add_argument("--soundfont", default=None, help="SF2/SF3 path (default: auto-detect)")
    ap.add_argument("--clip-seconds", type=float, default=32.0)
    ap.add_argument("--jobs", type=int, default=1, help="parallel FluidSynth processes")
    ap.add_argument("--format", choices=("flac", "wav"), default="flac")
    ap.add_argument("--genres", default=None, help=f"comma list from: {','.join(sorted(GENRES))}")
    ap.add_argument("--no-render", action="store_true", help="write MIDI + metadata only")
    ap.add_argument("--overwrite", action="store_true",
                    help="re-render all audio (by default audio whose MIDI is unchanged is kept)")
    a = ap.parse_args(argv)
    try:
        recs = build_corpus(a.out, hours=a.hours, n_pieces=a.pieces, seed=a.seed,
                            heldout_fraction=a.heldout_fraction, soundfont=a.soundfont,
                            clip_seconds=a.clip_seconds, jobs=a.jobs, audio_format=a.format,
                            genres=a.genres.split(",") if a.genres else None, render=not a.no_render,
                            overwrite=a.overwrite, progress=True)
    except (RenderError, ValueError) as exc:
        sys.exit(f"build_corpus: error: {exc}")
    n_held = sum(r["split"] == "heldout" for r in recs)
    print(f"wrote {len(recs)} pieces ({n_held} held out) to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

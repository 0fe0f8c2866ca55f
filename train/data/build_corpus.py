"""Build the procedural, captioned, BPM-labelled training corpus entirely offline.

    python -m train.data.build_corpus --out DIR --hours H --seed S [--version 1|2]
        [--heldout-fraction 0.05] [--soundfont PATH] [--clip-seconds 32] [--jobs 1] [--format flac|wav]
        [--genres a,b] [--slow-share 0.35] [--no-render] [--overwrite]

Version 1 (the default, what the shipped model was trained on) renders mono. Version 2 renders
stereo: each part has its own pan, reverb and chorus send (train/data/corpus/mix.py), velocities
are humanised, and ``--slow-share`` of the pieces (default 0.35) are drawn at 60-95 BPM from the
genres whose range reaches that band, so slow tempos have many clear examples.

Writes, under DIR (the dataset format of train/data/dataset.py):
    audio/NNNNN_<genre>.flac   44.1 kHz, 16-bit, mono (v1) or stereo (v2), exactly --clip-seconds long
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
from train.data.corpus.genres import GENRES, GenreSpec, get_genre
from train.data.corpus.mix import apply_mix
from train.data.corpus.render import (
    RenderError, find_fluidsynth, find_soundfont, finish_clip, fluidsynth_version, render_midi,
)

SAMPLE_RATE = 44100
VERSIONS = (1, 2)
SLOW_BAND = (60, 95)  # BPM band the v2 corpus gives --slow-share of its pieces (the slow requests)


@dataclass(frozen=True)
class PiecePlan:
    """Which genre and split piece `index` gets; its generator is seeded by (seed, index).
    ``bpm_range``: the tempo band it is drawn from (None: the genre's own range); ``version``: the
    corpus version (2 adds the stereo mix)."""

    index: int
    genre: str
    split: str
    seed: int
    bpm_range: tuple[int, int] | None = None
    version: int = 1

    @property
    def stem(self) -> str:
        return f"{self.index:05d}_{self.genre}"


def slow_range(genre: GenreSpec) -> tuple[int, int] | None:
    """The part of the genre's tempo range inside SLOW_BAND, if it spans at least 8 BPM."""
    lo, hi = max(genre.bpm[0], SLOW_BAND[0]), min(genre.bpm[1], SLOW_BAND[1])
    return (lo, hi) if hi - lo >= 8 else None


def plan_corpus(n_pieces: int, seed: int, heldout_fraction: float = 0.05,
                genres: list[str] | None = None, version: int = 1, slow_share: float = 0.35) -> list[PiecePlan]:
    """Balanced genre assignment (shuffled rounds over all genres) and a held-out subset.

    At least one piece is held out when heldout_fraction > 0 and n_pieces >= 2. Version 2 also
    draws ``slow_share`` of all pieces at 60-95 BPM: every piece of a genre whose range lies in
    that band, and enough pieces of the genres that reach into it.
    """
    if version not in VERSIONS:
        raise ValueError(f"corpus version must be one of {VERSIONS}, got {version!r}")
    if not 0.0 <= slow_share < 1.0:
        raise ValueError(f"slow_share must be in [0, 1), got {slow_share}")
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
    bands: list[tuple[int, int] | None] = [None] * n_pieces
    if version >= 2:
        slow = [slow_range(get_genre(order[i])) for i in range(n_pieces)]
        # Pieces whose genre can be slow, in a seeded order; already-slow genres count as slow.
        natural = sum(1 for i, r in enumerate(slow) if r is not None and get_genre(order[i]).bpm[1] <= SLOW_BAND[1])
        extra = max(0, round(slow_share * n_pieces) - natural)
        candidates = [i for i in np.random.default_rng([seed, 0x510]).permutation(n_pieces).tolist()
                      if slow[i] is not None and get_genre(order[i]).bpm[1] > SLOW_BAND[1]]
        for i in candidates[:extra]:
            bands[i] = slow[i]
    return [PiecePlan(i, order[i], "heldout" if i in held else "train", seed, bands[i], version)
            for i in range(n_pieces)]


def make_piece(plan: PiecePlan, clip_seconds: float, audio_format: str = "flac"):
    """Arrange and caption one planned piece. Returns (pretty_midi object, metadata dict)."""
    genre = get_genre(plan.genre)
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, plan.index]))
    pm, info = arrange(genre, rng, clip_seconds, bpm_range=plan.bpm_range)
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
    if plan.version >= 2:
        # Its own generator: the arrangement above is the same piece as in version 1.
        mix_rng = np.random.default_rng(np.random.SeedSequence([plan.seed, plan.index, 2]))
        record.update(channels=2, mix=apply_mix(pm, genre.reverb, mix_rng, bpm=info.bpm), version=plan.version)
    return pm, record


def render_piece(job: tuple[str, str, float, str | None, bool]) -> dict:
    """Worker: render one MIDI file to a finished clip (atomic write). Returns stats."""
    midi_path, audio_path, seconds, soundfont, stereo = job
    t0 = time.perf_counter()
    audio = finish_clip(render_midi(midi_path, SAMPLE_RATE, soundfont, stereo=stereo), SAMPLE_RATE, seconds,
                        name=midi_path)
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
                 progress: bool = False, version: int = 1, slow_share: float = 0.35) -> list[dict]:
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
    for plan in plan_corpus(n_pieces, seed, heldout_fraction, genres, version, slow_share):
        pm, rec = make_piece(plan, clip_seconds, audio_format)
        buf = io.BytesIO()
        pm.write(buf)
        midi_path, audio_path = out / rec["midi"], out / rec["path"]
        same_midi = midi_path.is_file() and midi_path.read_bytes() == buf.getvalue()
        midi_path.write_bytes(buf.getvalue())
        records.append(rec)
        # existing audio is reused only when it was rendered from this very MIDI file
        if render and (overwrite or not same_midi or not audio_path.is_file()):
            jobs_todo.append((str(out / rec["midi"]), str(audio_path), clip_seconds, sf_path, version >= 2))

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
            "sample_rate": SAMPLE_RATE, "format": audio_format, "soundfont": sf_path, "version": version,
            "channels": 2 if version >= 2 else 1}
    if version >= 2:
        info["slow_share"] = slow_share
        info["slow_pieces"] = sum(SLOW_BAND[0] <= r["bpm"] <= SLOW_BAND[1] for r in records)
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
    ap.add_argument("--version", type=int, choices=VERSIONS, default=1,
                    help="1: mono (the shipped model's corpus); 2: stereo mix, humanised velocities, more slow pieces")
    ap.add_argument("--slow-share", type=float, default=0.35, help="version 2: share of pieces at 60-95 BPM")
    ap.add_argument("--no-render", action="store_true", help="write MIDI + metadata only")
    ap.add_argument("--overwrite", action="store_true",
                    help="re-render all audio (by default audio whose MIDI is unchanged is kept)")
    a = ap.parse_args(argv)
    try:
        recs = build_corpus(a.out, hours=a.hours, n_pieces=a.pieces, seed=a.seed,
                            heldout_fraction=a.heldout_fraction, soundfont=a.soundfont,
                            clip_seconds=a.clip_seconds, jobs=a.jobs, audio_format=a.format,
                            genres=a.genres.split(",") if a.genres else None, render=not a.no_render,
                            overwrite=a.overwrite, progress=True, version=a.version, slow_share=a.slow_share)
    except (RenderError, ValueError) as exc:
        sys.exit(f"build_corpus: error: {exc}")
    n_held = sum(r["split"] == "heldout" for r in recs)
    print(f"wrote {len(recs)} pieces ({n_held} held out) to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

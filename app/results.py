"""Turning a GenerationResult into files and words: one folder per run with each clip's WAV
(settings in its metadata; two channels for a stereo clip), a bar-line loop WAV, a spectrogram
PNG of the mono mid, and the report/markdown the
page and the API show. Old run folders are pruned so a long-running server's disk use stays flat.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import torch

from presto_core.audio import write_wav
from presto_core.spectrogram import spectrogram_png
from presto_core.stereo import stereo_width

from app.analysis import estimate_tempo
from presto_core.music import loop_on_bars

LOOP_CROSSFADE_MS = 10.0
STAGES = ("text", "generation", "decoding", "clap", "stereo")


class RunStore:
    """Folders for run outputs under ``root``, keeping only the newest ``keep``."""

    def __init__(self, root: str | Path, keep: int = 48):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._runs: list[Path] = []

    def new_run(self, kind: str) -> Path:
        with self._lock:
            run = self.root / f"{kind}-{next(self._count):06d}-{uuid.uuid4().hex[:8]}"
            run.mkdir(parents=True)
            self._runs.append(run)
            stale, self._runs = self._runs[:-self.keep], self._runs[-self.keep:]
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
        return run


def tempo_note(measured: float | None, requested: float) -> str:
    """How a measured tempo relates to the requested one: 'on tempo', 'half-time', ..."""
    if measured is None:
        return "no clear beat"
    for ratio, word in ((1.0, "on tempo"), (0.5, "half-time"), (2.0, "double-time"),
                        (2 / 3, "two-thirds time"), (1.5, "one-and-a-half time")):
        if abs(measured / (requested * ratio) - 1.0) <= 0.04:
            return word
    return f"{100.0 * (measured / requested - 1.0):+.0f}% off"


def clip_width(audio) -> float | None:
    """Stereo width (side over mid energy) of a (2, N) clip, rounded; None for a mono (N,) one."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return None
    return round(float(stereo_width(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))), 4)


def write_clip(run: Path, name: str, audio, sr: int, settings: dict, time_signature: str,
               loop: bool = True) -> dict:
    """Write ``name``.wav / ``name``.png (and ``name``_loop.wav) for one mono (N,) or stereo (2, N)
    clip; returns its entry: paths, CLAP score, measured tempo, stereo width (None for mono), loop
    length and the settings stored in the WAV."""
    bpm = float(settings["bpm"])
    audio = np.asarray(audio, dtype=np.float32)
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    wav = run / f"{name}.wav"
    write_wav(wav, audio, sr, settings)
    png = spectrogram_png(mono, sr, run / f"{name}.png")
    tempo = estimate_tempo(mono, sr)
    entry = {"name": name, "wav": str(wav), "png": str(png), "settings": settings,
             "clap_score": settings.get("clap_score"), "tempo_bpm": None if tempo is None else round(tempo, 1),
             "requested_bpm": bpm, "tempo_note": tempo_note(tempo, bpm), "loop": None, "loop_bars": 0,
             "stereo": audio.ndim == 2, "width": clip_width(audio)}
    if loop:
        try:
            looped, bars = loop_on_bars(audio, sr, bpm, time_signature, None, LOOP_CROSSFADE_MS)
        except ValueError:  # shorter than one bar: no loop for this clip
            return entry
        path = run / f"{name}_loop.wav"
        write_wav(path, looped, sr, {**settings, "loop_bars": bars, "loop_crossfade_ms": LOOP_CROSSFADE_MS})
        entry.update(loop=str(path), loop_bars=bars)
    return entry


def write_result(run: Path, result, time_signature: str, prefix: str = "clip", extra: dict | None = None) -> list[dict]:
    """Write every clip of a GenerationResult; settings gain the clip's candidate index, CLAP
    score and the time signature (plus ``extra``)."""
    entries = []
    for i, clip in enumerate(result.clips, 1):
        settings = {**result.settings, **(extra or {}), "candidate": clip.candidate,
                    "clap_score": None if clip.clap_score is None else round(float(clip.clap_score), 4),
                    "time_signature": time_signature}
        entries.append(write_clip(run, f"{prefix}_{i}", clip.audio, result.sample_rate, settings, time_signature))
    return entries


def timings_dict(result) -> dict:
    t = {k: round(float(result.timings.get(k, 0.0)), 4) for k in (*STAGES, "total")}
    t["rtf"] = round(float(result.rtf), 2)
    return t


def clip_markdown(entry: dict, title: str = "") -> str:
    """One line under a clip: CLAP score, measured vs requested tempo, candidate, loop length."""
    score = entry.get("clap_score")
    s = "n/a" if score is None else f"{score:.3f}"
    tempo = entry.get("tempo_bpm")
    t = "—" if tempo is None else f"{tempo:.0f}"
    parts = [f"CLAP **{s}**", f"tempo **{t}** BPM (asked {entry['requested_bpm']:g}; {entry['tempo_note']})",
             f"stereo, width **{entry['width']:.2f}**" if entry.get("stereo") else "mono",
             f"candidate {entry['settings'].get('candidate', '?')}"]
    if entry.get("loop_bars"):
        n = entry["loop_bars"]
        parts.append(f"loop {n} bar{'s' if n > 1 else ''} of {entry['settings'].get('time_signature', '4/4')}")
    head = f"**{title}** · " if title else ""
    return head + " · ".join(parts)


def latency_markdown(result, expected: float | None = None, label: str = "") -> str:
    """Per-stage latency, total (with the pre-run estimate) and real-time factor."""
    t = result.timings
    stages = " · ".join(f"{k} {t.get(k, 0.0):.2f} s" for k in STAGES)
    exp = "" if expected is None else f" (expected ≈ {expected:.2f} s)"
    s = result.settings
    head = f"**{label}** — " if label else ""
    return (f"{head}**total {t.get('total', 0.0):.2f} s**{exp} · {stages} · **RTF {result.rtf:.1f}×** "
            f"(seconds of audio per second, {s['candidates']} candidate(s)) · seed {s['seed']} · "
            f"{s['variant']} · {s['steps']} steps · ρ {s['rho']:g}")


def short_latency(result) -> str:
    """Total and generation seconds and the real-time factor, for side-by-side views."""
    t = result.timings
    return (f"total {t.get('total', 0.0):.2f} s (generation {t.get('generation', 0.0):.2f} s) · "
            f"RTF {result.rtf:.1f}× · {result.settings['steps']} steps")


def report(entries: list[dict], result, expected: float | None = None, **extra) -> dict:
    """The JSON the API returns: clips (file names, score, tempo, loop), timings, RTF, settings."""
    clips = [{"clip": i, "file": Path(e["wav"]).name, "clap_score": e["clap_score"], "tempo_bpm": e["tempo_bpm"],
              "requested_bpm": e["requested_bpm"], "tempo_note": e["tempo_note"],
              "candidate": e["settings"].get("candidate"), "loop_file": e["loop"] and Path(e["loop"]).name,
              "loop_bars": e["loop_bars"], "spectrogram": Path(e["png"]).name, "stereo": e["stereo"],
              "width": e["width"]}
             for i, e in enumerate(entries, 1)]
    return {"clips": clips, "timings": timings_dict(result),
            "expected_s": None if expected is None else round(expected, 3),
            "settings": result.settings, **extra}

"""A folder of "someone's own music" in a style the corpus lacks, for measuring fine-tuning
(train.finetune) end to end: steel-drum calypso, written as MIDI here and rendered with another
soundfont (TimGM6mb, not the corpus's MuseScore General) into the mess a person's folder is.

    python -m train.data.style_folder --out DIR [--minutes 20] [--seed 0] [--soundfont SF2]

Pieces: steel drums on a syncopated major-key melody, marimba off-beat chords, a root-fifth
bass, congas, shaker, claves and a kick on one and three, 100-125 BPM, with a swing of the
off-beats and velocity humanisation. The folder mixes formats (WAV 48 kHz, FLAC 44.1 kHz, OGG
32 kHz, MP3 44.1 kHz with genre/title tags), mono and stereo files and nested folders; half the
files have their caption and BPM in DIR/metadata.csv, the rest only their names or tags, like a
real collection. It contains no corpus audio; nothing here is used by the corpus builder.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from train.data.corpus.render import finish_clip, render_midi

SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"  # Debian timgm6mb-soundfont
STEEL_DRUMS, MARIMBA, BASS = 114, 12, 33
KICK, CONGA_HI, CONGA_LO, CONGA_MUTE, MARACAS, CLAVES = 36, 63, 64, 62, 70, 75
MAJOR = (0, 2, 4, 5, 7, 9, 11)
PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3), (0, 3, 0, 4))  # scale degrees of the bar chords
MOODS = ("sunny", "breezy", "festive", "laid-back", "bright", "carefree")
KEYS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _note(inst, pitch, start, dur, vel, g):
    vel = int(np.clip(vel + g.normal(0, 6), 30, 127))
    inst.notes.append(pretty_midi.Note(velocity=vel, pitch=int(pitch), start=float(start), end=float(start + dur)))


def compose(bpm: float, key: int, seconds: float, g: np.random.Generator) -> pretty_midi.PrettyMIDI:
    """One calypso piece of about ``seconds`` at ``bpm`` in major ``key`` (0 = C)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    steel = pretty_midi.Instrument(STEEL_DRUMS, name="steel drums")
    marimba = pretty_midi.Instrument(MARIMBA, name="marimba")
    bass = pretty_midi.Instrument(BASS, name="bass")
    drums = pretty_midi.Instrument(0, is_drum=True, name="percussion")
    beat = 60.0 / bpm
    swing = g.uniform(0.0, 0.12) * beat  # late off-beats
    prog = PROGRESSIONS[g.integers(len(PROGRESSIONS))]
    bars = int(np.ceil(seconds / (4 * beat)))
    motif = g.integers(0, 7, size=8)
    for bar in range(bars):
        t0 = bar * 4 * beat
        deg = prog[bar % len(prog)]
        root = 48 + key + MAJOR[deg]
        chord = [root + 12 + (MAJOR[(deg + i) % 7] - MAJOR[deg]) % 12 for i in (0, 2, 4)]
        for b in range(4):  # bass: root on one and three, the fifth on the "and" of two and four
            _note(bass, root - 12 + (7 if b % 2 else 0), t0 + b * beat + (0.5 * beat if b % 2 else 0), 0.45 * beat, 96, g)
        for b in range(4):  # marimba: off-beat chord stabs
            for p in chord:
                _note(marimba, p, t0 + b * beat + 0.5 * beat + swing, 0.3 * beat, 72, g)
        phrase = (motif + (bar % 4 == 3) * g.integers(-2, 3, size=8)) % 7
        for i, d in enumerate(phrase):  # steel drums: syncopated eighth-note melody with rests
            if g.random() < 0.22:
                continue
            t = t0 + i * 0.5 * beat + (swing if i % 2 else 0)
            _note(steel, 72 + key + MAJOR[int(d)], t, 0.45 * beat, 100, g)
        for b in range(4):
            t = t0 + b * beat
            if b in (0, 2):
                _note(drums, KICK, t, 0.1, 100, g)
            _note(drums, CONGA_LO if b == 3 else CONGA_MUTE, t, 0.1, 80, g)
            _note(drums, CONGA_HI, t + 0.5 * beat + swing, 0.1, 85, g)
            for s in range(4):
                _note(drums, MARACAS, t + s * 0.25 * beat + (swing / 2 if s % 2 else 0), 0.05, 60 + 15 * (s == 0), g)
        for c in (0, 1.5, 3):  # the claves' 3-2 figure over the first half
            _note(drums, CLAVES, t0 + c * beat, 0.05, 90, g)
    pm.instruments += [steel, marimba, bass, drums]
    return pm


def caption(bpm: float, key: int, g: np.random.Generator) -> str:
    mood = MOODS[g.integers(len(MOODS))]
    forms = (f"{mood} steel drum calypso with marimba and a bouncing bass, {KEYS[key]} major",
             f"caribbean calypso, steel pan melody over marimba chords and congas, {mood}",
             f"{mood} island groove: steel drums, marimba, shaker and hand percussion")
    return forms[g.integers(len(forms))]


FORMATS = (("wav", 48000, 2), ("flac", 44100, 2), ("ogg", 32000, 1), ("mp3", 44100, 2))


def build(out: str | Path, minutes: float = 20.0, seed: int = 0, soundfont: str = SOUNDFONT,
          piece_seconds: float = 30.0, log=print) -> list[dict]:
    """Write the folder; returns one dict per file (path, caption, bpm, in_sidecar)."""
    out = Path(out)
    g = np.random.default_rng(seed)
    n = max(2, int(round(minutes * 60 / piece_seconds)))
    rows = []
    for i in range(n):
        bpm = float(g.integers(100, 126))
        key = int(g.integers(12))
        cap = caption(bpm, key, g)
        fmt, sr, ch = FORMATS[i % len(FORMATS)]
        sub = ("sessions", "sessions/2025", "demos", "")[i % 4]
        name = f"{sub}/calypso take {i + 1:02d}.{fmt}".lstrip("/")
        audio = render_midi(compose(bpm, key, piece_seconds + 2, g), sample_rate=sr, soundfont=soundfont, stereo=True)
        audio = finish_clip(audio, sr, piece_seconds, name=name)
        audio = audio.mean(axis=1) if ch == 1 else audio
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, sr, format=fmt.upper() if fmt != "wav" else "WAV")
        if fmt == "mp3":
            from mutagen.easyid3 import EasyID3

            tags = EasyID3()
            tags["genre"], tags["title"] = "Calypso", f"steel drum groove {i + 1}"
            tags.save(path)
        rows.append({"path": name, "caption": cap, "bpm": bpm, "in_sidecar": i % 2 == 0})
        log(f"[{i + 1}/{n}] {name}: {bpm:g} BPM")
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "bpm"])
        for r in rows:
            if r["in_sidecar"]:
                w.writerow([r["path"], r["caption"], r["bpm"]])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.data.style_folder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--soundfont", default=SOUNDFONT)
    a = ap.parse_args(argv)
    build(a.out, a.minutes, a.seed, a.soundfont)
    return 0


if __name__ == "__main__":
    sys.exit(main())

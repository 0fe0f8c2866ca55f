"""Procedural arrangement: a genre spec + a seeded generator -> a multi-track MIDI piece.

`arrange(genre, rng, seconds)` picks tempo, key, mode, progressions, instruments and a song
form (intro / verse / chorus / breakdown / outro), generates every part per section with
parts.py and melody.py, applies swing and humanisation, and returns the `pretty_midi`
object together with an `Arrangement` record (the piece's labels). 4/4 throughout; drums
on GM channel 10 (pretty_midi `is_drum=True`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pretty_midi

from train.data.corpus.genres import GenreSpec, PartSpec
from train.data.corpus.melody import lead_section
from train.data.corpus.music_theory import SCALES, Chord, key_name, progression
from train.data.corpus.parts import (arp_section, bass_section, comp_section, drum_section,
                              piano_lh_section)
from train.data.corpus.patterns import ARP

SECTION_NEXT = {"intro": (("verse", 1.0),), "verse": (("chorus", 0.8), ("verse", 0.2)),
                "chorus": (("verse", 0.55), ("breakdown", 0.3), ("chorus", 0.15)),
                "breakdown": (("chorus", 1.0),)}
SECTION_GAIN = {"intro": -10, "verse": 0, "chorus": 6, "breakdown": -8}
MIN_NOTE_S = 0.03


@dataclass
class Section:
    """A song section: `name`, first bar, number of bars and its chord symbols (one per bar)."""

    name: str
    start_bar: int
    n_bars: int
    chords: list[str] = field(default_factory=list)


@dataclass
class Arrangement:
    """Labels of one arranged piece (all JSON-serialisable through `to_dict`).

    bpm in quarter notes per minute; key is the tonic's name, mode "major" | "minor";
    parts: list of dicts with role, style, program (GM) and the GM instrument name;
    drum_kit: GM drum-bank preset or None; seconds: length of the note content.
    """

    genre: str
    bpm: float
    key: str
    mode: str
    scale: str
    swing: float
    drum_kit: int | None
    parts: list[dict]
    sections: list[Section]
    progressions: dict[str, list[str]]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def programs(self) -> list[int]:
        return [p["program"] for p in self.parts]


def _choice(rng: np.random.Generator, items, weights=None):
    idx = int(rng.choice(len(items), p=None if weights is None else np.asarray(weights) / sum(weights)))
    return items[idx]


def swing_warp(step: float, swing: float, unit: int) -> float:
    """Map a straight sixteenth-step position to a swung one (also in sixteenth steps).

    `swing` is the share of a pair taken by its first note (0.5 straight, 2/3 triplet feel);
    `unit` 16 swings pairs of sixteenths, 8 swings pairs of eighths.
    """
    pair = 2.0 if unit == 16 else 4.0
    base = math.floor(step / pair) * pair
    frac = (step - base) / pair  # 0..1 within the pair
    warped = frac / 0.5 * swing if frac < 0.5 else swing + (frac - 0.5) / 0.5 * (1.0 - swing)
    return base + warped * pair


def plan_sections(rng: np.random.Generator, n_bars: int, cycle: dict[str, int],
                  start: str | None = None) -> list[Section]:
    """Song form covering at least `n_bars` bars; `cycle[name]` = bars of that section."""
    name = start or _choice(rng, ["intro", "verse", "chorus"], [0.45, 0.35, 0.2])
    sections, bar = [], 0
    while bar < n_bars:
        sections.append(Section(name, bar, cycle[name]))
        bar += cycle[name]
        names, weights = zip(*SECTION_NEXT[name])
        name = _choice(rng, list(names), list(weights))
    return sections


def _section_lengths(n_chords: dict[str, int], chord_bars: int) -> dict[str, int]:
    verse = n_chords["verse"] * chord_bars
    chorus = n_chords["chorus"] * chord_bars
    def full(c: int) -> int:  # verse/chorus: whole cycles, at least 8 bars
        return c * max(1, math.ceil(8 / c))

    def short(c: int) -> int:  # intro/breakdown: one cycle of 4-8 bars
        return c if 4 <= c <= 8 else 4 if c > 8 else c * math.ceil(4 / c)

    return {"intro": short(verse), "verse": full(verse), "chorus": full(chorus),
            "breakdown": short(chorus)}


def arrange(genre: GenreSpec, rng: np.random.Generator, seconds: float,
            start_section: str | None = None, bpm_range: tuple[int, int] | None = None
            ) -> tuple[pretty_midi.PrettyMIDI, Arrangement]:
    """Arrange one piece of `genre` lasting at least `seconds`; deterministic given `rng`.

    start_section: force the first section ("intro", "verse", "chorus"); random when None.
    bpm_range: draw the tempo from this (low, high) instead of the genre's range.
    Returns (midi, labels).
    """
    lo, hi = bpm_range or genre.bpm
    bpm = float(rng.integers(lo, hi + 1))
    modes, weights = zip(*genre.modes)
    mode = _choice(rng, list(modes), list(weights))
    tonic = int(rng.integers(12))
    scale = genre.scales.get(mode, mode)
    swing = round(float(rng.uniform(*genre.swing)), 3)
    kit = int(_choice(rng, list(genre.kits))) if genre.drums else None
    progs = genre.progressions[mode]
    iv = int(rng.integers(len(progs)))
    ic = int(rng.integers(len(progs))) if len(progs) > 1 else iv
    prog_names = {"verse": list(progs[iv]), "chorus": list(progs[ic])}
    prog_chords = {k: progression(v, tonic) for k, v in prog_names.items()}
    chord_bars = int(_choice(rng, list(genre.chord_bars)))
    parts: list[tuple[PartSpec, int]] = []
    for spec in genre.parts:
        if rng.random() < spec.prob:
            parts.append((spec, int(_choice(rng, list(spec.programs)))))
    part_opts = [(_choice(rng, list(ARP[s.style][1])) if s.style in ARP else
                  _choice(rng, ["alberti", "broken", "block"]) if s.style == "piano_lh" else None)
                 for s, _ in parts]

    bar_s = 240.0 / bpm
    n_bars = math.ceil(seconds / bar_s) + 1
    lengths = _section_lengths({k: len(v) for k, v in prog_chords.items()}, chord_bars)
    lengths["outro"] = lengths["intro"]
    sections = plan_sections(rng, n_bars, lengths, start_section)

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    pm.key_signature_changes.append(pretty_midi.KeySignature(tonic + (12 if mode == "minor" else 0), 0.0))
    reverb = int(np.clip(genre.reverb + rng.integers(-10, 11), 0, 127))
    tracks = []
    for spec, program in parts:
        inst = pretty_midi.Instrument(program=program, name=spec.role)
        inst.control_changes += [pretty_midi.ControlChange(7, spec.volume, 0.0),
                                 pretty_midi.ControlChange(91, reverb, 0.0)]
        tracks.append(inst)
    drums = None
    if genre.drums:
        drums = pretty_midi.Instrument(program=kit, is_drum=True, name="drums")
        drums.control_changes += [pretty_midi.ControlChange(7, 100, 0.0),
                                  pretty_midi.ControlChange(91, max(reverb - 20, 0), 0.0)]

    step_s = bar_s / 16.0

    def add(inst: pretty_midi.Instrument, events, start_bar: int, gain: int, jitter: float) -> None:
        for step, length, pitch, vel in events:
            s = start_bar * 16 + step
            t0 = swing_warp(s, swing, genre.swing_unit) * step_s + rng.normal(0.0, jitter)
            t1 = swing_warp(s + length, swing, genre.swing_unit) * step_s
            t0 = max(t0, 0.0)
            inst.notes.append(pretty_midi.Note(int(np.clip(vel + gain, 1, 127)), int(pitch), t0,
                                               max(t1, t0 + MIN_NOTE_S)))

    scale_pcs = {(tonic + s) % 12 for s in SCALES[scale]}
    voicings: dict[int, list[int] | None] = {}
    for si, sec in enumerate(sections):
        kind = "verse" if sec.name in ("intro", "verse", "outro") else "chorus"
        cyc = [c for c in prog_chords[kind] for _ in range(chord_bars)]
        chords: list[Chord] = [cyc[b % len(cyc)] for b in range(sec.n_bars)]
        sec.chords = [c.symbol for c in chords]
        nxt_sec = sections[si + 1] if si + 1 < len(sections) else None
        next_chord = prog_chords["chorus" if nxt_sec and nxt_sec.name in ("chorus", "breakdown")
                                 else "verse"][0]
        gain = SECTION_GAIN.get(sec.name, -10)
        quiet = sec.name in ("intro", "outro", "breakdown")
        variant = "alt" if sec.name == "chorus" else "main"
        if drums is not None:
            if quiet:
                dv = "sparse" if rng.random() < 0.6 else None
            else:
                dv = variant
            fill = nxt_sec is not None and dv in ("main", "alt") and rng.random() < 0.6
            evs = drum_section(genre.drums, [dv] * sec.n_bars, rng, fill, sec.name == "chorus")
            add(drums, evs, sec.start_bar, gain, genre.humanize / 2)
        for k, ((spec, _), inst) in enumerate(zip(parts, tracks)):
            if spec.role == "bass":
                if quiet and rng.random() < 0.6:
                    continue
                evs = bass_section(spec.style, variant, chords, next_chord, spec.center, rng)
            elif spec.role in ("chords", "pad"):
                if spec.style == "piano_lh":
                    evs = piano_lh_section(chords, spec.center, part_opts[k], rng)
                else:
                    evs = comp_section(spec.style, variant, chords, spec.center, rng, voicings.get(k))
                    voicings[k] = sorted({e[2] for e in evs[-4:]}) if evs else voicings.get(k)
            elif spec.role == "arp":
                if sec.name == "breakdown" and rng.random() < 0.5:
                    continue
                evs = arp_section(spec.style, chords, spec.center, part_opts[k], rng)
            elif spec.role == "lead":
                active = sec.name == "chorus" or (sec.name in ("verse", "breakdown") and rng.random() < 0.6) \
                    or spec.style == "piano_rh"
                center = spec.center + (3 if sec.name == "chorus" and spec.style != "piano_rh" else 0)
                evs = lead_section(spec.style, chords, scale_pcs, center, rng, active)
            else:
                raise ValueError(f"unknown role {spec.role!r}")
            add(inst, evs, sec.start_bar, gain, genre.humanize)

    # Keep only parts that are actually heard within the clip, so labels never name a silent part.
    audible = [any(n.start < seconds * 0.9 for n in t.notes) for t in tracks]
    parts = [p for p, keep in zip(parts, audible) if keep]
    pm.instruments.extend(t for t, keep in zip(tracks, audible) if keep)
    if drums is not None and any(n.start < seconds * 0.9 for n in drums.notes):
        pm.instruments.append(drums)
    else:
        kit = None
    info = Arrangement(
        genre=genre.name, bpm=bpm, key=key_name(tonic, mode), mode=mode, scale=scale, swing=swing,
        drum_kit=kit,
        parts=[{"role": s.role, "style": s.style, "program": p,
                "name": pretty_midi.program_to_instrument_name(p)} for s, p in parts],
        sections=sections, progressions=prog_names,
        seconds=sum(s.n_bars for s in sections) * bar_s)
    return pm, info

"""Motif-based lead melodies: a two-bar rhythmic/contour motif, repeated and varied over the
chords (phrase form A A' A B), strong beats snapped to chord tones, cadence at the end.

Events are `(step, length, pitch, velocity)` in sixteenth steps from the section start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.data.corpus.music_theory import Chord, chord_tone_near
from train.data.corpus.patterns import LEAD

Event = tuple[float, float, int, int]
UNIT = 32  # steps per motif (two bars)


def strength(step: int) -> int:
    """Metrical strength of a sixteenth step in a bar: 4 downbeat, 3 half, 2 beat, 1 eighth, 0."""
    s = step % 16
    return 4 if s == 0 else 3 if s == 8 else 2 if s % 4 == 0 else 1 if s % 2 == 0 else 0


@dataclass
class Motif:
    """Onset steps (0..31) and scale-degree moves between consecutive notes."""

    steps: list[int]
    moves: list[int]


def make_motif(style: str, rng: np.random.Generator, one_bar: bool = False) -> Motif:
    """Random motif for a lead style (see patterns.LEAD); `one_bar` repeats a 1-bar cell."""
    probs = LEAD[style]["probs"]
    length = 16 if one_bar else UNIT
    steps = [s for s in range(length) if rng.random() < probs[strength(s)]]
    if not steps or steps[0] != 0 and rng.random() < 0.6:
        steps = [0] + steps
    if one_bar:
        steps = steps + [s + 16 for s in steps]
    moves = [0]
    for _ in steps[1:]:
        moves.append(int(rng.choice([-3, -2, -1, 0, 1, 2, 3], p=[0.05, 0.17, 0.27, 0.08, 0.27, 0.11, 0.05])))
    if one_bar:
        half = len(moves) // 2
        moves[half:] = moves[:half]
    return Motif(steps, moves)


def vary(motif: Motif, style: str, rng: np.random.Generator) -> Motif:
    """Keep the first bar of a motif, regenerate the second."""
    fresh = make_motif(style, rng)
    keep = [i for i, s in enumerate(motif.steps) if s < 16]
    new = [i for i, s in enumerate(fresh.steps) if s >= 16]
    return Motif([motif.steps[i] for i in keep] + [fresh.steps[i] for i in new],
                 [motif.moves[i] for i in keep] + [fresh.moves[i] for i in new])


def lead_section(style: str, chords: list[Chord], scale_pcs: set[int], center: int,
                 rng: np.random.Generator, active: bool = True) -> list[Event]:
    """Lead line over `chords` (one per bar) in the register around `center`."""
    if not active:
        return []
    spec = LEAD[style]
    register = [p for p in range(center - 9, center + 13) if p % 12 in scale_pcs]
    motif_a = make_motif(style, rng, one_bar=style == "riff")
    forms = {"A": motif_a, "A2": vary(motif_a, style, rng) if style != "riff" else motif_a,
             "B": make_motif(style, rng, one_bar=style == "riff")}
    order = ["A", "A2", "A", "B"]
    n_units = (len(chords) + 1) // 2
    events: list[Event] = []
    idx = int(np.argmin([abs(p - chord_tone_near(chords[0], center)) for p in register]))
    for u in range(n_units):
        if u > 0 and rng.random() < spec["rest_unit"]:
            continue
        motif = forms[order[u % len(order)]]
        unit_events = []
        for k, (s, move) in enumerate(zip(motif.steps, motif.moves)):
            bar = u * 2 + s // 16
            if bar >= len(chords):
                break
            idx += move
            if idx < 0 or idx >= len(register):  # reflect at the register edges
                idx = int(np.clip(idx - 2 * move, 0, len(register) - 1))
            # gentle pull back towards the centre
            if register[idx] > center + 7 and move >= 0 and rng.random() < 0.5:
                idx = max(idx - 2, 0)
            elif register[idx] < center - 5 and move <= 0 and rng.random() < 0.5:
                idx = min(idx + 2, len(register) - 1)
            pitch = register[idx]
            if strength(s) >= 2:
                pitch = chord_tone_near(chords[bar], pitch)
                idx = int(np.argmin([abs(p - pitch) for p in register]))
            nxt = motif.steps[k + 1] if k + 1 < len(motif.steps) else UNIT
            length = min(nxt - s, spec["max_len"]) * spec["gate"]
            vel = 96 if strength(s) >= 3 else 86 if strength(s) == 2 else 76
            unit_events.append((u * UNIT + s, float(length), int(pitch), int(np.clip(vel + rng.normal(0, 6), 1, 127))))
        events.extend(unit_events)
    if events:  # cadence: last note becomes a chord tone held to the section end
        s, _, p, v = events[-1]
        last_chord = chords[min(int(s) // 16, len(chords) - 1)]
        p = chord_tone_near(last_chord, p, degrees=(0, last_chord.intervals[1]))
        events[-1] = (s, float(np.clip(len(chords) * 16 - s - 0.5, 1.0, 16.0)), p, v)
    return events

"""Note generators for one section of one part (drums, bass, comping, arpeggios, piano).

Every generator returns events `(step, length, pitch, velocity)` with `step` and `length` in
sixteenth-note steps relative to the start of the section (floats allowed), before swing and
humanisation (applied in arrange.py). All randomness comes from the `rng` argument.
"""

from __future__ import annotations

import numpy as np

from train.data.corpus.music_theory import Chord, chord_tone_near, nearest_pitch, voice_chord
from train.data.corpus.patterns import ARP, BASS, COMP, DRUM_VELOCITY, DRUMS, FILLS, HATS, CRASH

Event = tuple[float, float, int, int]
BASS_RANGE = (28, 55)


def _vel(base: float, rng: np.random.Generator, spread: float = 6.0) -> int:
    return int(np.clip(round(base + rng.normal(0.0, spread)), 1, 127))


def _segments(pattern: str) -> list[tuple[int, str, int]]:
    """(onset step, symbol, length in steps) for each onset of a pattern with '-' holds."""
    out = []
    for i, ch in enumerate(pattern):
        if ch in ".-":
            continue
        n = 1
        while i + n < len(pattern) and pattern[i + n] == "-":
            n += 1
        out.append((i, ch, n))
    return out


def drum_section(style: str, variants: list[str | None], rng: np.random.Generator,
                 fill_last: bool, crash_first: bool) -> list[Event]:
    """Drum hits for a section; `variants[b]` is "sparse" | "main" | "alt" | None (tacet)."""
    events: list[Event] = []
    table = DRUMS[style]
    fill = FILLS[int(rng.integers(len(FILLS)))] if fill_last else None
    ghost_prob = 0.12 if style in ("jazz", "funk", "boom_bap", "lofi") else 0.0
    for b, variant in enumerate(variants):
        if variant is None:
            continue
        pattern = dict(table[variant])
        fill_from = 16
        if fill is not None and b == len(variants) - 1:
            fill_from = 16 - max(len(p) for p in fill.values())
        for note, pat in pattern.items():
            for s, ch in enumerate(pat):
                if ch == "." or s >= fill_from and note not in HATS:
                    continue
                vel = DRUM_VELOCITY[ch] * (1.0 if note not in HATS else rng.uniform(0.7, 0.9))
                events.append((b * 16 + s, 1.0, note, _vel(vel, rng, 4.0)))
        if ghost_prob and variant != "sparse":
            for s in range(1, 16, 2):
                if rng.random() < ghost_prob and s < fill_from:
                    events.append((b * 16 + s, 1.0, 38, _vel(32, rng, 5.0)))
        if fill_from < 16:
            for note, pat in fill.items():
                for s, ch in enumerate(pat):
                    if ch != ".":
                        ramp = 0.75 + 0.35 * s / len(pat)
                        events.append((b * 16 + fill_from + s, 1.0, note,
                                       _vel(DRUM_VELOCITY[ch] * ramp, rng, 4.0)))
    if crash_first and variants and variants[0] is not None:
        events.append((0.0, 4.0, CRASH, _vel(105, rng, 5.0)))
    return events


def _bass_pitch(sym: str, chord: Chord, next_chord: Chord, root: int) -> int:
    if sym == "R":
        return root
    if sym == "O":
        return root + 12 if root + 12 <= BASS_RANGE[1] + 7 else root
    if sym == "F":
        return root + ((chord.fifth - chord.root) % 12)
    if sym == "T":
        third = 3 if 3 in chord.intervals else 4
        return root + third
    if sym == "S":
        return root + (11 if 11 in chord.intervals else 10)
    if sym == "6":
        return root + 9
    if sym == "A":
        target = nearest_pitch(next_chord.root, root)
        return target - 1 if target > root else target + 1
    raise ValueError(f"bad bass symbol {sym!r}")


def bass_section(style: str, variant: str, chords: list[Chord], next_chord: Chord, center: int,
                 rng: np.random.Generator) -> list[Event]:
    """Bass line over `chords` (one per bar), pattern style from patterns.BASS."""
    if style == "walking":
        return walking_section(chords, next_chord, center, rng)
    table, gate = BASS[style]
    events: list[Event] = []
    patterns = table[variant if variant in table else "main"]
    for b, chord in enumerate(chords):
        nxt = chords[b + 1] if b + 1 < len(chords) else next_chord
        pattern = patterns[int(rng.integers(len(patterns)))]
        root = int(np.clip(nearest_pitch(chord.root, center), *BASS_RANGE))
        for s, sym, n in _segments(pattern):
            acc = 100 if s % 4 == 0 else 88
            events.append((b * 16 + s, n * gate, _bass_pitch(sym, chord, nxt, root), _vel(acc, rng)))
    return events


def walking_section(chords: list[Chord], next_chord: Chord, center: int,
                    rng: np.random.Generator) -> list[Event]:
    """Jazz walking bass: root on beat 1, chord tones/steps, chromatic approach on beat 4."""
    events: list[Event] = []
    prev = nearest_pitch(chords[0].root, center)
    for b, chord in enumerate(chords):
        nxt = chords[b + 1] if b + 1 < len(chords) else next_chord
        root = int(np.clip(nearest_pitch(chord.root, prev), *BASS_RANGE))
        target = int(np.clip(nearest_pitch(nxt.root, root + rng.integers(-3, 4)), *BASS_RANGE))
        line = [root]
        for _ in range(2):
            cand = [chord_tone_near(chord, line[-1] + d) for d in (-5, -3, 3, 5)]
            cand = [c for c in cand if c != line[-1]] or cand
            # prefer tones that head towards the next root
            cand.sort(key=lambda c: abs(c - target) + rng.uniform(0, 4))
            line.append(int(np.clip(cand[0], *BASS_RANGE)))
        if rng.random() < 0.7:  # chromatic approach from a semitone above or below
            line.append(target + (1 if rng.random() < 0.5 else -1))
        else:  # dominant approach: the fifth of the target
            line.append(target + 7 if target + 7 <= BASS_RANGE[1] else target - 5)
        for k, p in enumerate(line):
            events.append((b * 16 + 4 * k, 3.6, int(p), _vel(96 if k in (0, 2) else 86, rng)))
        prev = line[-1]
    return events


def chord_voicing(style: str, chord: Chord, center: int, previous: list[int] | None) -> list[int]:
    """Voicing for a comping style: power chords, jazz shells, or voice-led close voicings."""
    if style == "power8":
        root = nearest_pitch(chord.root, center)
        return [root, root + 7, root + 12]
    if style in ("jazz_comp", "bossa_comp"):
        shell = Chord(chord.root, tuple(i for i in chord.intervals if i % 12 != 0), chord.symbol)
        return voice_chord(shell, center, previous, n_voices=3)
    return voice_chord(chord, center, previous, n_voices=4 if style in ("pad", "block") else 3)


def comp_section(style: str, variant: str, chords: list[Chord], center: int,
                 rng: np.random.Generator, previous: list[int] | None = None) -> list[Event]:
    """Chord comping over `chords`; "pad" ties repeated chords into one long note."""
    table, gate = COMP[style]
    patterns = table[variant if variant in table else "main"]
    events: list[Event] = []
    voicing = previous
    held: list[int] = []  # indices into events of a held pad chord
    for b, chord in enumerate(chords):
        same = b > 0 and chord == chords[b - 1]
        voicing = voicing if same and voicing else chord_voicing(style, chord, center, voicing)
        if style == "pad" and same and held:
            for i in held:
                s, ln, p, v = events[i]
                events[i] = (s, ln + 16 * gate, p, v)
            continue
        held = []
        pattern = patterns[int(rng.integers(len(patterns)))]
        for s, sym, n in _segments(pattern):
            base = 92 if sym == "X" or s % 8 == 0 else 80
            for p in voicing:
                held.append(len(events))
                events.append((b * 16 + s, n * gate, p, _vel(base, rng, 5.0)))
    return events


def arp_section(style: str, chords: list[Chord], center: int, direction: str,
                rng: np.random.Generator) -> list[Event]:
    """Arpeggiated chord tones over two octaves above `center - 5`."""
    step, _ = ARP[style]
    events: list[Event] = []
    for b, chord in enumerate(chords):
        tones = sorted({nearest_pitch(pc, center - 5 + o) for pc in chord.pitch_classes for o in (0, 12)})
        seq = tones if direction != "updown" else tones + tones[-2:0:-1]
        for k, s in enumerate(range(0, 16, step)):
            p = seq[int(rng.integers(len(seq)))] if direction == "random" else seq[k % len(seq)]
            vel = 86 if s % 4 == 0 else 70
            events.append((b * 16 + s, step * (2.5 if style == "arp_slow" else 0.8), p, _vel(vel, rng, 5.0)))
    return events


def piano_lh_section(chords: list[Chord], center: int, figure: str,
                     rng: np.random.Generator) -> list[Event]:
    """Classical left hand: "alberti" (1-5-3-5), "broken" (1-5-8-10-8-5...) or "block" figures."""
    events: list[Event] = []
    for b, chord in enumerate(chords):
        root = nearest_pitch(chord.root, center - 5)
        third = root + (3 if 3 in chord.intervals else 4)
        fifth = root + ((chord.fifth - chord.root) % 12)
        if figure == "alberti":
            seq, step = [root, fifth, third + 12 if third < fifth else third, fifth] * 2, 2
        elif figure == "broken":
            seq, step = [root, fifth, root + 12, third + 12, fifth + 12, third + 12, root + 12, fifth], 2
        else:
            seq, step = [], 8
            for s in (0, 8):
                events.append((b * 16 + s, 7.5, root - 12, _vel(80, rng)))
                for p in (root, third, fifth):
                    events.append((b * 16 + s + 4, 3.5, p + 12, _vel(62, rng)))
            continue
        for k, p in enumerate(seq):
            events.append((b * 16 + k * step, step * 1.4, int(p), _vel(78 if k % 4 == 0 else 62, rng)))
    return events

"""Small music-theory toolkit for the procedural corpus: keys, scales, chords, voicings.

Pitches are MIDI note numbers (60 = middle C); pitch classes are ints in [0, 12).
Chord progressions are written as Roman numerals relative to the tonic of a *major* scale,
with explicit accidentals for borrowed/minor degrees, e.g. minor "i bVI bIII bVII".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
# Conventional spelling of a key's tonic: flats for F, Bb, Eb, Ab, Db (and their minors).
_FLAT_MAJOR = {1, 3, 5, 8, 10}
_FLAT_MINOR = {0, 2, 3, 5, 7, 10}  # C, D, Eb, F, G, Bb minor are written with flats
_NAME_TO_PC = {n: i for i, n in enumerate(SHARP_NAMES)} | {n: i for i, n in enumerate(FLAT_NAMES)}
_NAME_TO_PC.update({"Cb": 11, "Fb": 4, "E#": 5, "B#": 0})

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "major_pentatonic": (0, 2, 4, 7, 9),
    "minor_pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}

CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9),
    "6": (0, 4, 7, 9),
    "m6": (0, 3, 7, 9),
    "9": (0, 4, 7, 10, 14),
    "maj9": (0, 4, 7, 11, 14),
    "m9": (0, 3, 7, 10, 14),
    "add9": (0, 4, 7, 14),
    "5": (0, 7, 12),
}

_ROMAN = {"I": 0, "II": 2, "III": 4, "IV": 5, "V": 7, "VI": 9, "VII": 11}
_ROMAN_RE = re.compile(r"^(b|#)?(VII|VI|V|IV|III|II|I|vii|vi|v|iv|iii|ii|i)(.*)$")


def pitch_class(name: str) -> int:
    """Pitch class of a note name such as "C#", "Eb" or "A"."""
    try:
        return _NAME_TO_PC[name]
    except KeyError as exc:
        raise ValueError(f"unknown note name {name!r}") from exc


def key_name(pc: int, mode: str = "major") -> str:
    """Conventional spelling of the tonic pitch class `pc` for a key in `mode`."""
    pc %= 12
    flats = _FLAT_MINOR if mode in ("minor", "dorian", "harmonic_minor") else _FLAT_MAJOR
    return FLAT_NAMES[pc] if pc in flats else SHARP_NAMES[pc]


def transpose_key(key: str, semitones: int, mode: str = "major") -> str:
    """Key name `key` moved by `semitones` (e.g. transpose_key("A", 2, "minor") == "B")."""
    return key_name(pitch_class(key) + int(semitones), mode)


@dataclass(frozen=True)
class Chord:
    """A chord: `root` pitch class, `intervals` in semitones above the root, and its symbol."""

    root: int
    intervals: tuple[int, ...]
    symbol: str

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        return tuple((self.root + i) % 12 for i in self.intervals)

    @property
    def fifth(self) -> int:
        """Pitch class of the fifth (or the nearest stand-in for dim/aug chords)."""
        for iv in (7, 6, 8):
            if iv in self.intervals:
                return (self.root + iv) % 12
        return (self.root + 7) % 12


def parse_roman(numeral: str, tonic_pc: int) -> Chord:
    """Chord for a Roman numeral in the key whose tonic is `tonic_pc`.

    Upper case = major triad, lower case = minor; a suffix picks the quality:
    "7" (dominant on upper case, minor-seventh on lower case), "maj7", "m7b5", "dim", "sus4",
    "9", "6", "add9", "5"... Example: parse_roman("bVI", 9) is F major in A minor.
    """
    m = _ROMAN_RE.match(numeral)
    if m is None:
        raise ValueError(f"bad roman numeral {numeral!r}")
    acc, rom, suffix = m.groups()
    degree = _ROMAN[rom.upper()] + {"b": -1, "#": 1, None: 0}[acc]
    upper = rom.isupper()
    if suffix == "":
        quality = "maj" if upper else "min"
    elif suffix in ("7", "9", "6") and not upper:
        quality = {"7": "m7", "9": "m9", "6": "m6"}[suffix]
    elif suffix in ("°", "o"):
        quality = "dim"
    else:
        quality = suffix
    if quality not in CHORD_QUALITIES:
        raise ValueError(f"unknown chord quality {suffix!r} in {numeral!r}")
    root = (tonic_pc + degree) % 12
    return Chord(root, CHORD_QUALITIES[quality], f"{SHARP_NAMES[root]}{quality}")


def progression(numerals: list[str] | tuple[str, ...], tonic_pc: int) -> list[Chord]:
    """Chords of a progression given as Roman numerals."""
    return [parse_roman(n, tonic_pc) for n in numerals]


def scale_pitches(tonic_pc: int, scale: str, low: int, high: int) -> list[int]:
    """All MIDI pitches in [low, high] that belong to `scale` on `tonic_pc`."""
    pcs = {(tonic_pc + s) % 12 for s in SCALES[scale]}
    return [p for p in range(low, high + 1) if p % 12 in pcs]


def nearest_pitch(pc: int, target: int) -> int:
    """The MIDI pitch of pitch class `pc` closest to `target`."""
    base = target - ((target - pc) % 12)
    return base if target - base <= 6 else base + 12


def voice_chord(chord: Chord, center: int, previous: list[int] | None = None,
                n_voices: int | None = None) -> list[int]:
    """Close voicing of `chord` near `center`, choosing the inversion that moves least from
    `previous` (smooth voice leading). Returns sorted MIDI pitches."""
    ivs = sorted({i % 12 for i in chord.intervals})
    if n_voices is not None:
        # keep root, third/sus, seventh/extension first, then the fifth
        priority = sorted(ivs, key=lambda i: (i == 7, i))
        ivs = sorted(priority[:n_voices])
    candidates = []
    for inv in range(len(ivs)):
        rot = ivs[inv:] + [i + 12 for i in ivs[:inv]]
        for octave in (-24, -12, 0, 12):
            bottom = nearest_pitch((chord.root + rot[0]) % 12, center - 6) + octave
            voicing = [bottom + (r - rot[0]) for r in rot]
            candidates.append(voicing)

    def cost(v: list[int]) -> float:
        c = abs(sum(v) / len(v) - center) * 0.5
        if previous:
            c += sum(min(abs(p - q) for q in previous) for p in v) / len(v)
        return c

    return sorted(min(candidates, key=cost))


def chord_tone_near(chord: Chord, target: int, degrees: tuple[int, ...] | None = None) -> int:
    """Chord tone (optionally restricted to `degrees` = intervals) nearest to `target`."""
    ivs = degrees if degrees is not None else chord.intervals
    return min((nearest_pitch((chord.root + i) % 12, target) for i in ivs),
               key=lambda p: abs(p - target))

"""Genre specifications for the procedural corpus: tempo range, groove, instruments, harmony.

Each `GenreSpec` is pure data; `arrange.py` turns it into MIDI and `captions.py` into text.
Programs are General MIDI program numbers (0-127); drum kits are GM drum-bank presets
(0 Standard, 8 Room, 16 Power, 24 Electronic, 25 TR-808, 32 Jazz, 40 Brush).
Part/drum style names refer to the pattern tables in `patterns.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartSpec:
    """One pitched part of an arrangement.

    role: "bass" | "chords" | "pad" | "arp" | "lead"; style: a pattern name in patterns.py;
    programs: candidate GM programs; center: MIDI pitch the part sits around;
    volume: MIDI CC7; prob: probability the part is present in a given piece.
    """

    role: str
    style: str
    programs: tuple[int, ...]
    center: int
    volume: int = 100
    prob: float = 1.0


@dataclass(frozen=True)
class GenreSpec:
    """A genre: everything needed to arrange and caption a piece of it.

    bpm: (low, high) tempo range in quarter notes per minute (4/4 throughout).
    swing: (low, high) swing ratio of the first unit of a pair (0.5 straight, 0.67 triplet),
    applied to pairs of `swing_unit` notes (8: eighths, 16: sixteenths).
    progressions: mode -> list of Roman-numeral progressions (see music_theory.parse_roman).
    scales: mode -> melody scale name. chord_bars: choices of bars per chord.
    humanize: std of timing jitter in seconds for pitched parts (drums get half).
    """

    name: str
    labels: tuple[str, ...]
    bpm: tuple[int, int]
    modes: tuple[tuple[str, float], ...]
    progressions: dict[str, tuple[tuple[str, ...], ...]]
    parts: tuple[PartSpec, ...]
    drums: str | None = None
    kits: tuple[int, ...] = (0,)
    swing: tuple[float, float] = (0.5, 0.5)
    swing_unit: int = 16
    scales: dict[str, str] = field(default_factory=lambda: {"major": "major", "minor": "minor"})
    chord_bars: tuple[int, ...] = (1,)
    humanize: float = 0.006
    reverb: int = 40
    adjectives: tuple[str, ...] = ()
    textures: tuple[str, ...] = ()
    track_words: tuple[str, ...] = ("track", "instrumental", "piece")


MAJ_POP = (("I", "V", "vi", "IV"), ("vi", "IV", "I", "V"), ("I", "IV", "vi", "V"), ("I", "vi", "IV", "V"))
MIN_POP = (("i", "bVI", "bIII", "bVII"), ("i", "bVII", "bVI", "bVII"), ("i", "iv", "bVI", "v"),
           ("i", "bVI", "iv", "bVII"))
MAJ_JAZZ = (("ii7", "V7", "Imaj7", "Imaj7"), ("Imaj7", "vi7", "ii7", "V7"), ("iii7", "VI7", "ii7", "V7"),
            ("Imaj7", "IVmaj7", "iii7", "vi7"))
MIN_JAZZ = (("iim7b5", "V7", "i7", "i7"), ("i7", "iv7", "bVII7", "bIIImaj7"), ("i7", "bVImaj7", "iim7b5", "V7"))

GENRES: dict[str, GenreSpec] = {}


def _add(spec: GenreSpec) -> None:
    GENRES[spec.name] = spec


_add(GenreSpec(
    "lofi_hip_hop", ("lo-fi hip hop", "lofi hip hop", "chillhop"), (70, 92),
    (("major", 0.5), ("minor", 0.5)),
    {"major": (("IVmaj7", "iii7", "ii7", "Imaj7"), ("Imaj7", "vi7", "ii7", "V7"), ("ii9", "V7", "Imaj7", "vi7")),
     "minor": (("i7", "iv7", "bVIImaj7", "bIIImaj7"), ("i9", "bVImaj7", "iv7", "v7"),
               ("iim7b5", "V7", "i7", "bVImaj7"))},
    (PartSpec("bass", "lofi", (33, 32, 34), 40, 100),
     PartSpec("chords", "lofi", (4, 0, 5, 11), 62, 85),
     PartSpec("lead", "sparse", (73, 11, 26, 65, 10), 74, 80, 0.6)),
    drums="lofi", kits=(0, 8, 25), swing=(0.55, 0.62), swing_unit=16, humanize=0.012, reverb=50,
    adjectives=("laid-back", "chill", "relaxed", "mellow", "nostalgic", "cozy"),
    textures=("dusty", "warm", "hazy", "soft", "tape-saturated"), track_words=("beat", "track", "loop")))

_add(GenreSpec(
    "boom_bap", ("boom bap hip hop", "boom bap", "old-school hip hop"), (84, 98),
    (("minor", 0.8), ("major", 0.2)),
    {"minor": (("i7", "i7", "iv7", "iv7"), ("i", "bVI", "bVII", "i"), ("i7", "bVImaj7", "bVII", "iv7")),
     "major": (("Imaj7", "IVmaj7", "Imaj7", "V7"), ("ii7", "V7", "Imaj7", "vi7"))},
    (PartSpec("bass", "boom_bap", (33, 38, 34), 38, 105),
     PartSpec("chords", "block", (0, 4, 48, 11), 60, 80),
     PartSpec("lead", "riff", (61, 56, 0, 11), 70, 75, 0.5)),
    drums="boom_bap", kits=(0, 8), swing=(0.54, 0.6), humanize=0.008, reverb=35,
    adjectives=("gritty", "head-nodding", "hard-hitting", "soulful", "classic"),
    textures=("punchy", "crunchy", "sampled", "vinyl-warm"), track_words=("beat", "instrumental")))

_add(GenreSpec(
    "house", ("house", "deep house", "classic house"), (118, 128),
    (("minor", 0.6), ("major", 0.4)),
    {"minor": (("i7", "iv7", "bVII7", "bIIImaj7"), ("i7", "bVImaj7", "bVII", "i7"), ("i9", "iv9")),
     "major": (("Imaj7", "vi7", "ii7", "V7"), ("IVmaj7", "V7", "iii7", "vi7"), ("Imaj9", "IVmaj9"))},
    (PartSpec("bass", "offbeat", (38, 39, 33), 38, 100),
     PartSpec("chords", "stabs", (0, 4, 16, 90), 62, 80),
     PartSpec("pad", "pad", (89, 50, 94), 64, 60, 0.5),
     PartSpec("lead", "riff", (81, 80, 11, 0), 72, 70, 0.4)),
    drums="house", kits=(24, 25, 0), swing=(0.5, 0.54), humanize=0.002, reverb=45,
    adjectives=("groovy", "uplifting", "driving", "soulful", "club-ready", "energetic"),
    textures=("punchy", "bouncy", "warm", "shimmering"), track_words=("track", "groove", "cut")))

_add(GenreSpec(
    "techno", ("techno", "minimal techno", "driving techno"), (125, 140),
    (("minor", 0.9), ("major", 0.1)),
    {"minor": (("i", "i", "bVI", "bVII"), ("i", "bVII"), ("i", "iv"), ("i",)),
     "major": (("I", "bVII"), ("I",))},
    (PartSpec("bass", "rolling16", (38, 39), 36, 105),
     PartSpec("arp", "arp16", (81, 80, 87, 90), 64, 65, 0.8),
     PartSpec("chords", "stabs_sparse", (62, 90, 81, 95), 60, 70, 0.6),
     PartSpec("pad", "pad", (95, 91, 99), 60, 55, 0.4)),
    drums="techno", kits=(24, 25), chord_bars=(2, 4), humanize=0.0, reverb=55,
    adjectives=("hypnotic", "relentless", "dark", "pounding", "minimal", "driving"),
    textures=("metallic", "throbbing", "cold", "pulsing"), track_words=("track", "groove", "cut")))

_add(GenreSpec(
    "rock", ("rock", "alternative rock", "indie rock", "hard rock"), (100, 150),
    (("major", 0.5), ("minor", 0.5)),
    {"major": MAJ_POP + (("I", "bVII", "IV", "I"), ("I", "IV", "V", "IV")), "minor": MIN_POP},
    (PartSpec("bass", "root8", (34, 33), 40, 100),
     PartSpec("chords", "power8", (30, 29), 52, 90),
     PartSpec("pad", "pad", (18, 16), 60, 55, 0.3),
     PartSpec("lead", "melody", (29, 30, 27, 18), 67, 90, 0.6)),
    drums="rock", kits=(16, 0, 8), humanize=0.006, reverb=35,
    adjectives=("energetic", "gritty", "anthemic", "driving", "raw", "powerful"),
    textures=("distorted", "crunchy", "heavy", "loud"), track_words=("song", "track", "instrumental")))

_add(GenreSpec(
    "jazz", ("jazz", "swing jazz", "straight-ahead jazz", "bebop"), (100, 180),
    (("major", 0.65), ("minor", 0.35)),
    {"major": MAJ_JAZZ, "minor": MIN_JAZZ},
    (PartSpec("bass", "walking", (32,), 40, 105),
     PartSpec("chords", "jazz_comp", (0, 26, 4), 60, 75),
     PartSpec("lead", "bebop", (65, 66, 56, 11, 26), 70, 95, 0.85)),
    drums="jazz", kits=(32, 40), swing=(0.6, 0.67), swing_unit=8,
    scales={"major": "major", "minor": "dorian"}, humanize=0.01, reverb=45,
    adjectives=("swinging", "sophisticated", "lively", "smoky", "classic", "elegant"),
    textures=("warm", "brushed", "mellow", "smooth"), track_words=("tune", "combo piece", "instrumental")))

_add(GenreSpec(
    "bossa_nova", ("bossa nova", "Brazilian bossa nova", "latin jazz"), (110, 140),
    (("major", 0.6), ("minor", 0.4)),
    {"major": (("Imaj7", "ii7", "V7", "Imaj7"), ("Imaj7", "VI7", "ii7", "V7"), ("IVmaj7", "iv6", "iii7", "VI7")),
     "minor": (("i7", "iv7", "V7", "i7"), ("i6", "iim7b5", "V7", "i6"))},
    (PartSpec("bass", "bossa", (32, 33), 40, 95),
     PartSpec("chords", "bossa_comp", (24,), 58, 85),
     PartSpec("lead", "melody", (73, 65, 11, 22, 66), 74, 85, 0.8)),
    drums="bossa", kits=(40, 0, 32), humanize=0.008, reverb=45,
    adjectives=("breezy", "gentle", "relaxed", "sunny", "romantic", "smooth"),
    textures=("soft", "delicate", "warm", "intimate"), track_words=("song", "tune", "instrumental")))

_add(GenreSpec(
    "ambient", ("ambient", "ambient electronic", "atmospheric ambient", "drone"), (60, 80),
    (("major", 0.5), ("minor", 0.5)),
    {"major": (("Imaj7", "IVmaj7"), ("vi", "IV", "I", "V"), ("Iadd9", "iii7", "IVmaj7", "IVmaj7")),
     "minor": (("i", "bVI", "iv", "i"), ("i9", "bVImaj7"), ("i", "bVII", "bVI", "bVII"))},
    (PartSpec("pad", "pad", (89, 94, 95, 99, 92, 91, 49), 60, 90),
     PartSpec("arp", "arp_slow", (8, 10, 46, 108, 98, 11), 72, 65, 0.7),
     PartSpec("bass", "sustain", (38, 35, 89), 40, 70, 0.5),
     PartSpec("lead", "sparse", (75, 73, 92, 79), 72, 60, 0.4)),
    drums=None, chord_bars=(2, 4), humanize=0.01, reverb=110,
    adjectives=("ethereal", "calm", "meditative", "dreamy", "spacious", "serene"),
    textures=("shimmering", "glassy", "evolving", "lush", "airy"), track_words=("soundscape", "piece", "drone")))

_add(GenreSpec(
    "funk", ("funk", "classic funk", "funky soul"), (95, 115),
    (("minor", 0.7), ("major", 0.3)),
    {"minor": (("i7", "IV7"), ("i7", "i7", "IV7", "i7"), ("i9", "bVII9")),
     "major": (("I7", "IV7", "I7", "V7"), ("I9", "IV9"))},
    (PartSpec("bass", "funk", (36, 33, 37), 40, 105),
     PartSpec("chords", "funk_chops", (28, 27, 7), 62, 80),
     PartSpec("pad", "brass_stabs", (61, 62), 66, 75, 0.5),
     PartSpec("lead", "riff", (65, 66, 7, 62), 70, 85, 0.6)),
    drums="funk", kits=(0, 8), swing=(0.52, 0.58), humanize=0.006, reverb=30,
    scales={"major": "mixolydian", "minor": "dorian"},
    adjectives=("funky", "groovy", "tight", "bouncy", "infectious", "syncopated"),
    textures=("snappy", "punchy", "crisp", "slinky"), track_words=("groove", "jam", "track")))

_add(GenreSpec(
    "reggae", ("reggae", "roots reggae", "dub reggae"), (68, 88),
    (("major", 0.5), ("minor", 0.5)),
    {"major": (("I", "IV"), ("I", "V", "IV", "IV"), ("I", "vi", "IV", "V")),
     "minor": (("i", "iv"), ("i", "bVII"), ("i", "bVI", "bVII", "i"))},
    (PartSpec("bass", "reggae", (33, 32, 38), 38, 110),
     PartSpec("chords", "skank", (27, 0, 25), 62, 80),
     PartSpec("pad", "bubble", (16, 17), 58, 60, 0.7),
     PartSpec("lead", "melody", (56, 22, 65, 11), 70, 75, 0.4)),
    drums="reggae", kits=(0, 8), swing=(0.52, 0.58), humanize=0.008, reverb=60,
    adjectives=("laid-back", "sunny", "relaxed", "hypnotic", "soulful", "easygoing"),
    textures=("deep", "bouncy", "echoing", "warm"), track_words=("riddim", "groove", "track")))

_add(GenreSpec(
    "drum_and_bass", ("drum and bass", "liquid drum and bass", "jungle"), (160, 178),
    (("minor", 0.85), ("major", 0.15)),
    {"minor": (("i7", "bVImaj7", "iv7", "v7"), ("i9", "bVII"), ("i", "bVI", "bIII", "bVII")),
     "major": (("Imaj7", "vi7", "IVmaj7", "V"), ("IVmaj7", "Imaj7"))},
    (PartSpec("bass", "sub_long", (38, 39, 87), 36, 105),
     PartSpec("pad", "pad", (89, 50, 95, 49), 62, 70),
     PartSpec("chords", "block", (4, 0, 11), 64, 65, 0.5),
     PartSpec("lead", "sparse", (81, 80, 73, 88), 76, 70, 0.5)),
    drums="dnb", kits=(0, 24, 8), chord_bars=(2,), humanize=0.002, reverb=60,
    adjectives=("energetic", "fast-paced", "rolling", "atmospheric", "intense", "liquid"),
    textures=("deep", "lush", "rumbling", "crisp"), track_words=("track", "tune", "roller")))

_add(GenreSpec(
    "classical_piano", ("classical piano", "solo piano", "romantic-era piano", "piano etude"), (60, 120),
    (("major", 0.55), ("minor", 0.45)),
    {"major": (("I", "IV", "V", "I"), ("I", "vi", "ii", "V"), ("I", "V", "vi", "iii", "IV", "I", "IV", "V")),
     "minor": (("i", "iv", "V", "i"), ("i", "bVI", "iv", "V"), ("i", "iv", "bVII", "bIII", "bVI", "iim7b5", "V", "i"))},
    (PartSpec("chords", "piano_lh", (0,), 50, 85),
     PartSpec("lead", "piano_rh", (0,), 72, 95)),
    drums=None, scales={"major": "major", "minor": "harmonic_minor"}, humanize=0.012, reverb=55,
    adjectives=("elegant", "expressive", "delicate", "lyrical", "romantic", "graceful"),
    textures=("soft", "flowing", "gentle", "intimate"), track_words=("piece", "miniature", "composition")))

_add(GenreSpec(
    "synthwave", ("synthwave", "retrowave", "80s synth pop"), (80, 118),
    (("minor", 0.7), ("major", 0.3)),
    {"minor": MIN_POP, "major": MAJ_POP},
    (PartSpec("bass", "pump8", (38, 39), 38, 100),
     PartSpec("chords", "pad", (90, 50, 89, 62), 60, 75),
     PartSpec("arp", "arp16", (81, 80, 98), 72, 60, 0.6),
     PartSpec("lead", "melody", (81, 80, 62, 86), 74, 85, 0.8)),
    drums="synthwave", kits=(24, 25), humanize=0.0, reverb=70,
    adjectives=("nostalgic", "retro", "neon-soaked", "cinematic", "driving", "dreamy"),
    textures=("lush", "shimmering", "analog", "glossy"), track_words=("track", "instrumental", "anthem")))

_add(GenreSpec(
    "disco", ("disco", "nu-disco", "funky disco"), (110, 126),
    (("major", 0.5), ("minor", 0.5)),
    {"major": (("Imaj7", "ii7", "iii7", "ii7"), ("IVmaj7", "iii7", "ii7", "Imaj7"), ("I", "vi", "ii", "V")),
     "minor": (("i7", "iv7"), ("i7", "bVII", "bVI", "v7"), ("i", "bIII", "bVII", "iv"))},
    (PartSpec("bass", "octave8", (33, 38, 34), 40, 100),
     PartSpec("chords", "funk_chops", (27, 28, 0), 62, 75),
     PartSpec("pad", "pad", (48, 49, 50), 64, 70, 0.6),
     PartSpec("lead", "riff", (61, 48, 62, 56), 72, 80, 0.6)),
    drums="disco", kits=(0, 8, 24), humanize=0.004, reverb=45,
    adjectives=("groovy", "upbeat", "glittering", "danceable", "joyful", "funky"),
    textures=("lush", "sparkling", "bright", "bouncy"), track_words=("track", "groove", "floor-filler")))

_add(GenreSpec(
    "blues", ("blues", "shuffle blues", "Chicago blues"), (70, 120),
    (("major", 1.0),),
    {"major": (("I7", "I7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"),
               ("I7", "IV7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"))},
    (PartSpec("bass", "shuffle_walk", (33, 32), 40, 100),
     PartSpec("chords", "shuffle_comp", (0, 16, 26, 27), 58, 75),
     PartSpec("lead", "blues", (22, 29, 65, 66, 26), 70, 90, 0.85)),
    drums="shuffle", kits=(0, 8), swing=(0.62, 0.67), swing_unit=8, humanize=0.01, reverb=40,
    scales={"major": "blues"},
    adjectives=("soulful", "gritty", "swaggering", "bluesy", "smoky", "lazy"),
    textures=("raw", "warm", "gritty", "smoky"), track_words=("tune", "jam", "instrumental")))

_add(GenreSpec(
    "pop", ("pop", "indie pop", "upbeat pop", "acoustic pop"), (92, 128),
    (("major", 0.7), ("minor", 0.3)),
    {"major": MAJ_POP, "minor": MIN_POP},
    (PartSpec("bass", "root8", (33, 34, 38), 40, 95),
     PartSpec("chords", "strum", (25, 0, 24, 4), 60, 80),
     PartSpec("pad", "pad", (48, 49, 89), 64, 60, 0.4),
     PartSpec("lead", "melody", (80, 73, 11, 65, 0, 56), 74, 90, 0.85)),
    drums="pop", kits=(0, 8, 24), humanize=0.005, reverb=45,
    adjectives=("catchy", "upbeat", "bright", "feel-good", "cheerful", "bittersweet"),
    textures=("polished", "sparkling", "clean", "airy"), track_words=("song", "track", "instrumental")))


def get_genre(name: str) -> GenreSpec:
    """The spec of genre `name`; raises ValueError listing the known genres."""
    if name not in GENRES:
        raise ValueError(f"unknown genre {name!r}; known: {', '.join(sorted(GENRES))}")
    return GENRES[name]

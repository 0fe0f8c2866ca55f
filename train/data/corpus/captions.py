"""Caption writer: several natural phrasings for one arranged piece.

Captions name the genre, mood, tempo feel and the actual GM instruments of the piece;
some phrasings mention the BPM ("84 BPM") and/or the key ("in F# minor"), others do not,
so the text encoder does not become the only source of the tempo. These two patterns are
exactly what `train.data.augment.rewrite_caption` updates after time-stretch/pitch-shift.
"""

from __future__ import annotations

import re

import numpy as np

from train.data.corpus.arrange import Arrangement
from train.data.corpus.genres import GenreSpec

INSTRUMENT_WORDS: dict[int, tuple[str, ...]] = {
    0: ("piano", "grand piano", "acoustic piano"), 4: ("Rhodes", "electric piano", "Rhodes piano"),
    5: ("FM electric piano", "electric piano"), 7: ("clavinet", "clav"), 8: ("celesta",),
    10: ("music box",), 11: ("vibraphone", "vibes"), 16: ("organ", "Hammond organ", "drawbar organ"),
    17: ("percussive organ", "organ"), 18: ("rock organ", "organ"), 22: ("harmonica", "blues harp"),
    24: ("nylon-string guitar", "classical guitar", "acoustic guitar"),
    25: ("acoustic guitar", "steel-string guitar"), 26: ("jazz guitar", "hollow-body guitar"),
    27: ("clean electric guitar", "clean guitar"), 28: ("muted guitar", "palm-muted guitar"),
    29: ("overdriven guitar", "crunchy electric guitar"), 30: ("distorted guitar", "heavy guitar"),
    32: ("upright bass", "double bass", "acoustic bass"), 33: ("electric bass", "bass guitar"),
    34: ("picked bass", "electric bass"), 35: ("fretless bass",), 36: ("slap bass",),
    37: ("slap bass", "popping bass"), 38: ("synth bass", "analog synth bass"),
    39: ("synth bass", "rubbery synth bass"), 46: ("harp",), 48: ("strings", "string section"),
    49: ("slow strings", "lush strings"), 50: ("synth strings",), 56: ("trumpet",),
    61: ("brass section", "horns"), 62: ("synth brass",), 65: ("alto sax", "alto saxophone"),
    66: ("tenor sax", "tenor saxophone"), 73: ("flute",), 75: ("pan flute",), 79: ("ocarina",),
    80: ("square-wave lead", "synth lead"), 81: ("sawtooth lead", "saw synth lead"),
    86: ("fifths synth lead", "synth lead"), 87: ("reese-style synth", "gritty synth"),
    88: ("new-age pad", "synth pad"), 89: ("warm pad", "synth pad"), 90: ("polysynth", "synth chords"),
    91: ("choir pad", "airy choir"), 92: ("bowed glass pad", "glassy pad"), 94: ("halo pad", "shimmering pad"),
    95: ("sweeping pad", "synth pad"), 98: ("crystal synth", "glassy synth bells"),
    99: ("atmospheric pad",), 108: ("kalimba",),
}
KIT_WORDS = {0: ("drums", "acoustic drums", "a tight drum kit"), 8: ("roomy drums", "live drums"),
             16: ("powerful drums", "hard-hitting drums"), 24: ("electronic drums", "a drum machine"),
             25: ("808 drums", "a TR-808 drum machine"), 32: ("jazz drums", "a jazz kit"),
             40: ("brushed drums", "brushes on the snare")}
GROOVE_WORDS = {
    "lofi": ("lazy swung drums", "dusty boom-bap drums"),
    "boom_bap": ("hard-hitting boom-bap drums",),
    "house": ("a four-on-the-floor kick", "steady house drums"),
    "techno": ("a pounding kick", "driving techno drums"),
    "rock": ("driving rock drums", "a steady backbeat"),
    "jazz": ("a swinging ride cymbal", "swinging drums"),
    "bossa": ("soft bossa nova percussion", "rimshot bossa groove"),
    "funk": ("syncopated funk drums", "tight ghost-note drums"),
    "reggae": ("one-drop drums", "a one-drop rhythm"),
    "dnb": ("fast breakbeats", "rolling breakbeat drums"),
    "synthwave": ("gated 80s drums", "retro drum machine"),
    "disco": ("a four-on-the-floor disco beat", "disco drums with open hi-hats"),
    "shuffle": ("a shuffle beat", "shuffling drums"),
    "pop": ("a steady pop beat", "punchy pop drums"),
}
ROLE_FORMS = {
    "bass": ("{adj} {name}", "{name}", "a {adj} {name} line"),
    "chords": ("{adj} {name} chords", "{name} chords", "{name} harmonies"),
    "pad": ("{adj} {name}", "{name} pads", "sustained {name}"),
    "arp": ("arpeggiated {name}", "a rippling {name} arpeggio", "{name} arpeggios"),
    "lead": ("a {name} melody", "a {adj} {name} lead", "{name} phrases"),
}
STYLE_FORMS = {
    "walking": ("walking {name}",), "funk": ("slapping {name}", "funky {name}"), "offbeat": ("offbeat {name}",),
    "sub_long": ("deep sub {name}",), "pump8": ("pulsing {name}",), "octave8": ("octave-jumping {name}",),
    "power8": ("{name} power chords", "chugging {name}"), "strum": ("strummed {name}",),
    "skank": ("offbeat {name} skanks", "{name} skanking on the offbeat"), "stabs": ("{name} stabs",),
    "stabs_sparse": ("sparse {name} stabs",), "jazz_comp": ("{name} comping",),
    "bossa_comp": ("syncopated {name} chords",), "funk_chops": ("choppy {name}", "scratchy {name} rhythm"),
    "bubble": ("bubbling {name}",), "brass_stabs": ("punchy {name} stabs",),
    "bebop": ("a bebop {name} solo", "an improvised {name} line"), "riff": ("a catchy {name} riff",),
    "blues": ("a bluesy {name} solo",), "sparse": ("sparse {name} phrases", "a gentle {name} melody"),
    "piano_rh": ("a lyrical melody", "a singing right-hand melody"),
    "piano_lh": ("flowing left-hand arpeggios", "a rolling accompaniment"),
    "pad": ("lush {name} chords", "sustained {name}"),
}
# Tidy-ups for doubled nouns ("synth pad pads") produced by the templates above.
_FIXES = (
    (re.compile(r"\b(pad|strings|organ) pads\b"), r"\1"),
    (re.compile(r"\bchords (chords|harmonies)\b"), r"\1"),
    (re.compile(r"\bchords stabs\b"), "chord stabs"),
    (re.compile(r"\b([\w-]+) \1\b"), r"\1"),  # "upbeat upbeat pop" -> "upbeat pop"
    (re.compile(r"\b(pad|strings) chords\b"), r"\1"),
    (re.compile(r"\blead lead\b"), "lead"),
    (re.compile(r"\b([Aa]) (?!one)([aeiouAEIOU])"), r"\1n \2"),  # a/an
)
BRIGHT = {"bright", "uplifting", "happy", "cheerful", "joyful", "feel-good", "sunny", "optimistic"}
DARK = {"dark", "moody", "melancholic", "brooding", "bittersweet", "wistful"}
BASS_ADJ = ("deep", "warm", "round", "punchy", "groovy")
MOODS = {"major": ("bright", "uplifting", "happy", "warm", "optimistic"),
         "minor": ("moody", "melancholic", "dark", "wistful", "brooding")}


def tempo_words(bpm: float) -> tuple[str, ...]:
    if bpm < 80:
        return ("slow", "unhurried")
    if bpm < 105:
        return ("mid-tempo", "medium-tempo")
    if bpm < 130:
        return ("upbeat", "lively")
    return ("fast", "high-energy", "up-tempo")


def _tidy(s: str) -> str:
    for pattern, repl in _FIXES:
        s = pattern.sub(repl, s)
    return s


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _an(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def instrument_phrases(info: Arrangement, genre: GenreSpec, rng: np.random.Generator) -> list[str]:
    """One phrase per part (lead first, then chords/pads/arps, bass, drums)."""
    order = {"lead": 0, "chords": 1, "pad": 2, "arp": 3, "bass": 4}
    out = []
    for part in sorted(info.parts, key=lambda p: order[p["role"]]):
        name = _pick(rng, INSTRUMENT_WORDS.get(part["program"], (part["name"].lower(),)))
        forms = STYLE_FORMS.get(part["style"]) if rng.random() < 0.6 else None
        forms = forms or ROLE_FORMS[part["role"]]
        adjs = [a for a in (BASS_ADJ if part["role"] == "bass" else genre.textures) if a not in name]
        adj = _pick(rng, adjs)
        phrase = _tidy(_pick(rng, forms).format(name=name, adj=adj))
        if phrase not in out:
            out.append(phrase)
    if info.drum_kit is not None:
        kit = KIT_WORDS.get(info.drum_kit, ("drums",))
        out.append(_pick(rng, GROOVE_WORDS.get(genre.drums, kit) if rng.random() < 0.5 else kit))
    return out


def make_captions(info: Arrangement, genre: GenreSpec, rng: np.random.Generator, n: int = 4) -> list[str]:
    """`n` distinct phrasings (n <= 6); at least one mentions the BPM and one does not."""
    flags = [True, False] + [bool(rng.random() < 0.5) for _ in range(max(n - 2, 0))]
    flags = [flags[i] for i in rng.permutation(len(flags))][:n]
    templates = [TEMPLATES[i] for i in rng.permutation(len(TEMPLATES))[:n]]
    return [_tidy(t(info, genre, rng, with_bpm)) for t, with_bpm in zip(templates, flags)]


def _ctx(info: Arrangement, genre: GenreSpec, rng: np.random.Generator) -> dict:
    insts = instrument_phrases(info, genre, rng)
    label, mood, tempo = _pick(rng, genre.labels), _pick(rng, MOODS[info.mode]), _pick(rng, tempo_words(info.bpm))
    clash = (DARK if info.mode == "major" else BRIGHT) | {mood, tempo}
    adjectives = [a for a in genre.adjectives if a not in clash and a not in label] or [mood]
    return {"genre": label, "adj": _pick(rng, adjectives), "mood": mood, "tempo": tempo,
            "track": _pick(rng, genre.track_words), "insts": insts, "bpm": f"{info.bpm:g} BPM",
            "key": f"{info.key} {info.mode}", "with_key": bool(rng.random() < 0.4)}


def _t_with(info, genre, rng, with_bpm):
    c = _ctx(info, genre, rng)
    s = f"{c['adj']} {c['genre']} {c['track']} with {_join(c['insts'][:3])}"
    return s + (f", {c['bpm']}" if with_bpm else "")


def _t_featuring(info, genre, rng, with_bpm):
    c = _ctx(info, genre, rng)
    s = f"{_an(c['mood'] + ' ' + c['tempo'])} {c['genre']} {c['track']} featuring {_join(c['insts'])}"
    s += f" in {c['key']}" if c["with_key"] else ""
    return _cap(s + (f" at {c['bpm']}" if with_bpm else "")) + "."


def _t_over(info, genre, rng, with_bpm):
    c = _ctx(info, genre, rng)
    first, rest = c["insts"][0], c["insts"][1:] or ["a quiet backdrop"]
    s = f"{_cap(first)} over {_join(rest)}. {_cap(c['mood'])}, {c['adj']} {c['genre']}"
    return s + (f" at {c['bpm']}." if with_bpm else ".")


def _t_tags(info, genre, rng, with_bpm):
    c = _ctx(info, genre, rng)
    tags = [c["genre"], c["adj"], c["mood"]] + [i.removeprefix("a ").removeprefix("an ") for i in c["insts"]]
    tags += [c["bpm"]] if with_bpm else []
    tags += [c["key"]] if c["with_key"] else []
    return ", ".join(tags)


def _t_instrumental(info, genre, rng, with_bpm):
    c = _ctx(info, genre, rng)
    s = f"Instrumental {c['genre']}: {_join(c['insts'])}"
    s += f", {c['bpm']}" if with_bpm else ""
    return s + f". Feels {c['mood']} and {c['adj']}."


def _t_groove(info, genre, rng, with_bpm):
    c = _ctx(info, genre, rng)
    head = f"{c['tempo']} {c['bpm']} {c['genre']}" if with_bpm else f"{c['tempo']} {c['mood']} {c['genre']}"
    s = f"{head} {c['track']} built on {_join(c['insts'][-2:])}"
    if len(c["insts"]) > 2:
        s += f", with {_join(c['insts'][:-2])} on top"
    return _cap(s) + (f", in {c['key']}" if c["with_key"] else "")


TEMPLATES = (_t_with, _t_featuring, _t_over, _t_tags, _t_instrumental, _t_groove)

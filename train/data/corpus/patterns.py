"""Rhythm tables for the procedural corpus: drum grooves, bass lines and comping patterns.

All patterns are strings over a 16-step grid per 4/4 bar (one character per sixteenth).
Drums: "X" accent, "x" normal, "o" soft, "g" ghost, "." rest.
Bass: "R" root, "F" fifth, "O" octave, "T" third, "S" seventh (b7 when the chord has none),
"6" major sixth, "A" chromatic approach to the next chord's root, "-" holds the previous
note, "." rest. Comping: "x"/"X" chord hit, "-" hold, "." rest.
Each style maps a variant ("sparse", "main", "alt") to its pattern(s); `gate` scales
note lengths (1.0 legato, 0.5 detached).
"""

from __future__ import annotations

# General MIDI percussion key map (channel 10).
KICK, RIM, SNARE, CLAP, SNARE2 = 36, 37, 38, 39, 40
CHH, PHH, OHH, CRASH, RIDE, BELL = 42, 44, 46, 49, 51, 53
TAMB, COWBELL, CONGA_HI, CONGA_LO, SHAKER = 54, 56, 63, 64, 70
TOM_HI, TOM_MID, TOM_LOW, TOM_FLOOR = 50, 47, 45, 41

DRUM_VELOCITY = {"X": 118, "x": 96, "o": 70, "g": 38}
HATS = (CHH, PHH, OHH, RIDE, BELL, SHAKER, TAMB)

DRUMS: dict[str, dict[str, dict[int, str]]] = {
    "lofi": {
        "sparse": {CHH: "x.o.x.o.x.o.x.o.", RIM: "....o.......o..."},
        "main": {KICK: "x......x..x.....", SNARE: "....x.......x...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x......x..x..x..", SNARE: "....x.......x..g", CHH: "x.o.x.o.x.o.x.oo",
                OHH: "..............o."},
    },
    "boom_bap": {
        "sparse": {CHH: "x.o.x.o.x.o.x.o.", KICK: "x.........x....."},
        "main": {KICK: "x......x..x.....", SNARE: "....X.......X...", CHH: "X.o.x.o.X.o.x.o."},
        "alt": {KICK: "x......xx.x...x.", SNARE: "....X.......X...", CHH: "X.o.x.o.X.o.x.oo",
                OHH: "..............o."},
    },
    "house": {
        "sparse": {KICK: "x...x...x...x...", CHH: "..x...x...x...x."},
        "main": {KICK: "x...x...x...x...", CLAP: "....x.......x...", CHH: "..x...x...x...x.",
                 SHAKER: "o.o.o.o.o.o.o.o."},
        "alt": {KICK: "x...x...x...x...", CLAP: "....x.......x...", OHH: "..x...x...x...x.",
                CHH: "o.o.o.o.o.o.o.o.", SHAKER: "oooooooooooooooo"},
    },
    "techno": {
        "sparse": {KICK: "x...x...x...x...", CHH: "gogogogogogogogo"},
        "main": {KICK: "X...x...X...x...", OHH: "..x...x...x...x.", CHH: "g.o.g.o.g.o.g.o."},
        "alt": {KICK: "X...x...X...x...", CLAP: "....x.......x...", OHH: "..x...x...x...x.",
                CHH: "gogogogogogogogo", RIDE: "..o...o...o...o."},
    },
    "rock": {
        "sparse": {KICK: "x.......x.......", CHH: "x.o.x.o.x.o.x.o."},
        "main": {KICK: "x.......x.x.....", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x.x.....x.x.....", SNARE: "....X.......X...", RIDE: "x.o.x.o.x.o.x.o."},
    },
    "jazz": {
        "sparse": {RIDE: "x...x.o.x...x.o.", PHH: "....o.......o..."},
        "main": {RIDE: "X...x.o.X...x.o.", PHH: "....x.......x...", KICK: "g...g...g...g..."},
        "alt": {RIDE: "X...x.o.X...x.o.", PHH: "....x.......x...", KICK: "g...g...g...g...",
                SNARE: "......g.......g."},
    },
    "bossa": {
        "sparse": {RIM: "o..o..o...o..o..", SHAKER: "x.o.x.o.x.o.x.o."},
        "main": {RIM: "o..o..o...o..o..", KICK: "x...o...x...o...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {RIM: "o..o..o...o..o..", KICK: "x.....o.x.....o.", RIDE: "x.o.x.o.x.o.x.o.",
                SHAKER: "xgogxgogxgogxgog"},
    },
    "funk": {
        "sparse": {CHH: "xoxoxoxoxoxoxoxo", KICK: "x.........x....."},
        "main": {KICK: "x.x.......x..x..", SNARE: "....X..g.g..X..g", CHH: "xoxoxoxoxoxoxoxo"},
        "alt": {KICK: "x..x..x...x..x..", SNARE: "....X..g.g..X.g.", CHH: "xoxoxoxoxoxoxo.o",
                OHH: "..............x."},
    },
    "reggae": {
        "sparse": {RIM: "........x.......", CHH: "x.o.x.o.x.o.x.o."},
        "main": {KICK: "........X.......", RIM: "........x.......", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x...x...x...x...", SNARE: "........x.......", CHH: "xoxoxoxoxoxoxoxo"},
    },
    "dnb": {
        "sparse": {CHH: "x.x.x.x.x.x.x.x.", RIDE: "..o...o...o...o."},
        "main": {KICK: "x.........x.....", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x.........xx....", SNARE: "....X..g....X...", CHH: "xoxoxoxoxoxoxoxo",
                RIDE: "..o...o...o...o."},
    },
    "synthwave": {
        "sparse": {KICK: "x.......x.......", CHH: "x.o.x.o.x.o.x.o."},
        "main": {KICK: "x.......x.......", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x...x...x...x...", SNARE: "....X.......X...", CHH: "xoxoxoxoxoxoxoxo",
                OHH: "..x...x...x...x."},
    },
    "disco": {
        "sparse": {KICK: "x...x...x...x...", OHH: "..x...x...x...x."},
        "main": {KICK: "x...x...x...x...", SNARE: "....x.......x...", OHH: "..x...x...x...x.",
                 CHH: "o...o...o...o..."},
        "alt": {KICK: "x...x...x...x...", SNARE: "....x.......x...", OHH: "..x...x...x...x.",
                CHH: "o.o.o.o.o.o.o.o.", TAMB: "....x.......x..."},
    },
    "shuffle": {
        "sparse": {RIDE: "x.o.x.o.x.o.x.o.", PHH: "....o.......o..."},
        "main": {KICK: "x.......x.......", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x.....o.x.......", SNARE: "....X.......X...", RIDE: "x.o.x.o.x.o.x.o."},
    },
    "pop": {
        "sparse": {KICK: "x.......x.......", CHH: "x.o.x.o.x.o.x.o."},
        "main": {KICK: "x.....x.x.......", SNARE: "....x.......x...", CHH: "x.o.x.o.x.o.x.o."},
        "alt": {KICK: "x.....x.x.x.....", SNARE: "....x.......x...", CHH: "xoxoxoxoxoxoxoxo",
                TAMB: "....x.......x..."},
    },
}

# Fills replace the last `len(pattern)` steps of a section's final bar.
FILLS: tuple[dict[int, str], ...] = (
    {SNARE: "gogoxoxX"},
    {SNARE: "x.x.", TOM_HI: "....x.x.", TOM_LOW: "........x.x.", TOM_FLOOR: "............x.x."},
    {SNARE: "xxxx", TOM_MID: "....xx..", TOM_FLOOR: "......xx"},
)

# (pattern for each variant, gate)
BASS: dict[str, tuple[dict[str, tuple[str, ...]], float]] = {
    "root8": ({"main": ("R-R-R-R-R-R-R-R-",), "alt": ("R-R-R-R-R-R-O-R-", "R-R-R-R-F-F-R-R-")}, 0.85),
    "offbeat": ({"main": ("..R-..R-..R-..R-",), "alt": ("..R-..R-..R-.OR-", "..R-..O-..R-..F-")}, 0.8),
    "rolling16": ({"main": (".RRR.RRR.RRR.RRR",), "alt": (".RRR.RRR.ROR.RRR",)}, 0.6),
    "funk": ({"main": ("R--O..R.F..RO.R.",), "alt": ("R..R..O.R.RF..O.", "R-.O.RR..F.R.O.A")}, 0.7),
    "reggae": ({"main": ("..R-R-..F---..T-",), "alt": ("R---..R-F---T-R-",)}, 0.85),
    "bossa": ({"main": ("R-----F-R-----F-",), "alt": ("R-----F-F-----A-",)}, 0.9),
    "sub_long": ({"main": ("R---------------", "R-----------R---"), "alt": ("R-------R---O---",)}, 0.95),
    "pump8": ({"main": ("R-R-R-R-R-R-R-R-",), "alt": ("RRR-RRR-RRR-RRO-",)}, 0.5),
    "octave8": ({"main": ("R-O-R-O-R-O-R-O-",), "alt": ("R-O-R-O-F-O-R-A-",)}, 0.5),
    "boom_bap": ({"main": ("R-----R-..R-----",), "alt": ("R-----R-..R---F-",)}, 0.9),
    "lofi": ({"main": ("R-------..R-F---",), "alt": ("R-----R-..R-F-A-",)}, 0.9),
    "sustain": ({"main": ("R---------------",), "alt": ("R-------F-------",)}, 1.0),
    "shuffle_walk": ({"main": ("R-T-F-6-S-6-F-T-",), "alt": ("R-T-F-6-O-6-F-A-",)}, 0.9),
}

COMP: dict[str, tuple[dict[str, tuple[str, ...]], float]] = {
    "block": ({"main": ("x---------------",), "alt": ("x-------x-------",)}, 0.95),
    "lofi": ({"main": ("x-----x---------",), "alt": ("x-----x-----x---", "x---------x-----")}, 0.95),
    "stabs": ({"main": ("..x-..x-..x-..x-",), "alt": ("x-.x-.x-..x-.x-.", "..x-..x-..x-.x-.")}, 0.6),
    "stabs_sparse": ({"main": ("......x.........",), "alt": ("...x......x.....", "x.....x.....x...")}, 0.5),
    "power8": ({"main": ("x-x-x-x-x-x-x-x-",), "alt": ("x-------x-x-x-x-", "x-x-x-x-x-x-x-x-")}, 0.8),
    "strum": ({"main": ("x---x-x-x-x-x-x-",), "alt": ("x--x--x-x--x--x-",)}, 0.9),
    "skank": ({"main": ("..x...x...x...x.",), "alt": ("....x.......x...", "..x...x...x...x.")}, 1.0),
    "bubble": ({"main": (".xx..xx..xx..xx.",), "alt": (".xx..xx..xx..xx.",)}, 0.5),
    "bossa_comp": ({"main": ("x..x..x...x..x..",), "alt": ("..x..x..x..x.x..",)}, 0.8),
    "jazz_comp": ({"main": ("x-----x---------", "..x-......x-....", "x-......x-......",
                            "...x-.....x-...."), "alt": ("x-----x---x-----", "..x-..x-....x-..")}, 0.9),
    "funk_chops": ({"main": ("..x.x..x..x.x..x",), "alt": ("x.x..x.x.x..x.x.",)}, 0.4),
    "brass_stabs": ({"main": ("......x-..x-....",), "alt": ("x-......x-..x-..",)}, 0.6),
    "pad": ({"main": ("x---------------",), "alt": ("x---------------",)}, 1.0),
    "shuffle_comp": ({"main": ("x-..x-..x-..x-..",), "alt": ("..x-..x-..x-..x-",)}, 0.7),
}

# Arpeggio and piano styles: (steps per note, direction choices)
ARP: dict[str, tuple[int, tuple[str, ...]]] = {
    "arp16": (1, ("up", "updown", "random")),
    "arp8": (2, ("up", "updown")),
    "arp_slow": (2, ("up", "updown", "random")),
}

# Lead rhythm densities: onset probability by metrical strength 0 (weakest) .. 4 (downbeat).
LEAD: dict[str, dict] = {
    "sparse": {"probs": (0.0, 0.05, 0.25, 0.4, 0.9), "gate": 1.0, "max_len": 12, "rest_unit": 0.4},
    "melody": {"probs": (0.05, 0.3, 0.6, 0.7, 0.95), "gate": 0.9, "max_len": 8, "rest_unit": 0.15},
    "bebop": {"probs": (0.0, 0.85, 0.9, 0.9, 0.95), "gate": 0.85, "max_len": 4, "rest_unit": 0.2},
    "riff": {"probs": (0.25, 0.5, 0.7, 0.6, 0.95), "gate": 0.6, "max_len": 4, "rest_unit": 0.0},
    "piano_rh": {"probs": (0.0, 0.55, 0.8, 0.85, 1.0), "gate": 0.95, "max_len": 8, "rest_unit": 0.0},
    "blues": {"probs": (0.0, 0.5, 0.6, 0.6, 0.9), "gate": 0.85, "max_len": 6, "rest_unit": 0.35},
}

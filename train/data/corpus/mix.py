"""The stereo mix of corpus v2: where each part sits (MIDI pan, CC10), how much reverb (CC91) and
chorus (CC93) it sends, and humanised velocities. FluidSynth renders the sends and pans in stereo.

Applied after arrangement with its own generator, so version-1 pieces (no mix) stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi

from train.data.corpus.patterns import CLAP, HATS, KICK, SNARE, SNARE2

# role -> (pan spread around the centre in MIDI units, reverb offset, chorus send). Bass and drums
# stay near the centre as in a real mix; comping, pads and arpeggios go wide; the lead is near the
# middle but not on it.
ROLE_MIX = {
    "bass": (6, -25, 0),
    "drums": (0, -15, 0),
    "chords": (40, 0, 25),
    "pad": (30, 10, 30),
    "arp": (40, 5, 20),
    "lead": (18, 5, 10),
}


@dataclass(frozen=True)
class MixSpec:
    """How a piece is mixed. ``velocity_jitter``: std of the per-note velocity change (MIDI units);
    ``width`` scales every pan. Below ``slow_bpm`` the drums are mixed so that the beat is the
    kick and snare: hats, rides and shakers at ``slow_hat_gain`` of their velocity, kick and snare
    ``slow_beat_boost`` louder (busy sixteenth hats otherwise make a 75 BPM groove read as 150)."""

    velocity_jitter: float = 6.0
    width: float = 1.0
    slow_bpm: float = 95.0
    slow_hat_gain: float = 0.55
    slow_beat_boost: int = 12


def pan_for(role: str, side: int, rng: np.random.Generator, width: float = 1.0) -> int:
    """MIDI pan (0 left .. 64 centre .. 127 right) of a part: the role's spread on ``side`` (-1 or
    +1) with a random share of it."""
    spread = ROLE_MIX.get(role, (20, 0, 0))[0] * width
    return int(np.clip(round(64 + side * spread * rng.uniform(0.6, 1.0)), 0, 127))


def apply_mix(pm: pretty_midi.PrettyMIDI, reverb: int, rng: np.random.Generator,
              spec: MixSpec = MixSpec(), bpm: float | None = None) -> list[dict]:
    """Set pan, reverb and chorus controllers at t=0 on every instrument of ``pm`` (named by role,
    as arrange() names them) and jitter note velocities; ``reverb`` is the genre's base send (CC91),
    each role offset from it. Parts of the same stereo role alternate sides, starting on a random
    one; a piece at ``bpm`` < ``spec.slow_bpm`` gets the slow drum balance. Returns one {"role",
    "pan", "reverb", "chorus"} per instrument."""
    side = 1 if rng.random() < 0.5 else -1
    out = []
    for inst in pm.instruments:
        role = "drums" if inst.is_drum else inst.name
        spread, rev_off, chorus = ROLE_MIX.get(role, (20, 0, 0))
        pan = pan_for(role, side, rng, spec.width)
        if spread:
            side = -side
        rev = int(np.clip(reverb + rev_off + rng.integers(-5, 6), 0, 127))
        cho = int(np.clip(chorus + rng.integers(-5, 6), 0, 127)) if chorus else 0
        # Replace the arrangement's own send so each part has exactly one value per controller.
        inst.control_changes = [c for c in inst.control_changes if c.number not in (10, 91, 93)]
        inst.control_changes += [pretty_midi.ControlChange(10, pan, 0.0), pretty_midi.ControlChange(91, rev, 0.0),
                                 pretty_midi.ControlChange(93, cho, 0.0)]
        slow = inst.is_drum and bpm is not None and bpm < spec.slow_bpm
        for note in inst.notes:
            v = note.velocity + rng.normal(0.0, spec.velocity_jitter)
            if slow and note.pitch in HATS:
                v *= spec.slow_hat_gain
            elif slow and note.pitch in (KICK, SNARE, SNARE2, CLAP):
                v += spec.slow_beat_boost
            note.velocity = int(np.clip(round(v), 1, 127))
        out.append({"role": role, "pan": pan, "reverb": rev, "chorus": cho})
    return out

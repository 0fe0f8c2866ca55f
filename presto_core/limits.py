"""The ranges a person may ask for: the one table that request validation, CLAP rejection and the
app's controls all check against (and that error messages quote)."""

from __future__ import annotations

LIMITS = {
    "bpm": (40.0, 240.0),
    "duration": (1.0, 32.0),
    "steps": (1, 100),
    "rho": (1.0, 1000.0),
    "reject_ratio": (0.0, 0.9),
    "num_clips": (1, 8),
    "seed": (0, 2**31 - 1),
    "strength": (0.01, 1.0),
    "prompt_chars": (1, 500),
    "candidates": (1, 32),
    "piece_seconds": (1.0, 180.0),  # an extended or edited piece (windows of "duration" at most)
    "context_seconds": (1.0, 24.0),  # known audio an extension window starts from
}

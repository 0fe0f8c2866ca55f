"""What a generation or an edit returns: clips, their sample rate, settings and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Clip:
    """One generated clip: float32 audio at the pipeline's sample rate, mono (N,) or stereo (2, N)
    with left then right, where (left + right) / 2 is the mono clip of the same seed."""

    audio: np.ndarray
    clap_score: Optional[float]
    candidate: int

    @property
    def stereo(self) -> bool:
        return self.audio.ndim == 2

    @property
    def mono(self) -> np.ndarray:
        """The mono clip (N,): the clip itself, or the mid (L + R) / 2 of a stereo one."""
        return self.audio.mean(axis=0) if self.stereo else self.audio


@dataclass
class GenerationResult:
    """Clips best-first, the sample rate (Hz), the exact settings that reproduce them (JSON-able),
    per-stage latency in seconds and the real-time factor (seconds of audio per second); an edit
    (extend, inpaint, loop) also lists its windows (start, join and end in s, and the new audio's
    CLAP score) and the (start, end) seconds of the output it regenerated, fades included."""

    clips: list[Clip]
    sample_rate: int
    settings: dict
    timings: dict = field(default_factory=dict)
    windows: list = field(default_factory=list)
    changed: list = field(default_factory=list)

    @property
    def rtf(self) -> float:
        audio_s = self.settings["duration"] * self.settings["candidates"]
        return audio_s / max(self.timings.get("total", 0.0), 1e-9)

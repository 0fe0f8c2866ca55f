"""Musical time: bars <-> seconds at a tempo and time signature, and loops cut on
the bar line with a short equal-power crossfade at the seam.

Tempo (BPM) counts quarter notes per minute in every signature, so a bar lasts
``numerator * 4 / denominator`` beats: 4/4 is 4 beats, 3/4 is 3, 6/8 is 3 (six eighths).
Waveforms are float32 arrays, mono (N,) or stereo (2, N); a loop keeps its clip's channels.
"""

from __future__ import annotations

import math

import numpy as np

from presto_core.errors import PrestoError, check_choice, check_number
from presto_core.limits import LIMITS

TIME_SIGNATURES = ("4/4", "3/4", "6/8", "2/4", "5/4", "7/8", "12/8")
MAX_BARS = 64
CROSSFADE_MS = (0.0, 500.0)


def parse_time_signature(ts: str) -> tuple[int, int]:
    """'6/8' -> (6, 8). Only :data:`TIME_SIGNATURES` are allowed."""
    ts = check_choice("time signature", ts.strip() if isinstance(ts, str) else ts, TIME_SIGNATURES)
    num, den = ts.split("/")
    return int(num), int(den)


def beats_per_bar(ts: str) -> float:
    """Quarter-note beats in one bar of ``ts``: 4/4 -> 4, 3/4 -> 3, 6/8 -> 3, 7/8 -> 3.5."""
    num, den = parse_time_signature(ts)
    return num * 4.0 / den


def bar_seconds(bpm: float, ts: str) -> float:
    """Length of one bar in seconds at ``bpm`` quarter notes per minute."""
    bpm = check_number("bpm", bpm, *LIMITS["bpm"])
    return beats_per_bar(ts) * 60.0 / bpm


def bars_to_seconds(bars, bpm: float, ts: str, max_duration: float) -> float:
    """Duration of ``bars`` whole bars, checked against the model's ``max_duration`` (seconds).

    Raises PrestoError naming the largest bar count that fits at this tempo."""
    bars = check_number("bars", bars, 1, MAX_BARS, integer=True)
    one = bar_seconds(bpm, ts)
    seconds = bars * one
    lo = LIMITS["duration"][0]
    if seconds > max_duration + 1e-6:
        fit = int(math.floor(max_duration / one + 1e-9))
        raise PrestoError(f"{bars} bars of {ts} at {bpm:g} BPM last {seconds:.1f} s, over the model's "
                          f"maximum of {max_duration:g} s; use at most {fit} bars at this tempo")
    if seconds < lo - 1e-6:
        raise PrestoError(f"{bars} bars of {ts} at {bpm:g} BPM last {seconds:.2f} s, under the minimum "
                          f"of {lo:g} s; use more bars or a slower tempo")
    return round(seconds, 4)


def loop_bars(duration: float, bpm: float, ts: str) -> int:
    """Whole bars a loop of ``duration`` seconds holds; PrestoError when not even one."""
    one = bar_seconds(bpm, ts)
    # A duration a hair short of whole bars (seconds rounded for display) still holds them.
    bars = int(math.floor(duration / one + 1e-3))
    if bars < 1:
        raise PrestoError(f"a loop needs at least one bar: one bar of {ts} at {bpm:g} BPM lasts {one:.2f} s, "
                          f"longer than the {duration:g} s asked for")
    return bars


def max_bars(bpm: float, ts: str, max_duration: float) -> int:
    """Most whole bars that fit in ``max_duration`` seconds (at least 1, at most MAX_BARS)."""
    return int(min(MAX_BARS, max(1, math.floor(max_duration / bar_seconds(bpm, ts) + 1e-9))))


def loop_on_bars(audio: np.ndarray, sr: int, bpm: float, ts: str, bars: int | None = None,
                 crossfade_ms: float = 10.0) -> tuple[np.ndarray, int]:
    """Cut ``audio`` to a whole number of bars from its start and smooth the seam.

    ``bars`` None (or 0) takes as many whole bars as the clip holds. Where audio continues
    past the cut, its first ``crossfade_ms`` after the bar line are crossfaded (equal power) into
    the loop's start, so playing the loop end-to-start continues the music seamlessly; when
    the cut is the very end of the clip the two ends get a short fade instead.
    Returns (loop (M,) or (2, M) float32, bars used). Raises PrestoError if not even one bar fits.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1 and not (x.ndim == 2 and x.shape[0] == 2):
        raise PrestoError(f"loop export takes mono (N,) or stereo (2, N) audio, got shape {x.shape}")
    if x.size == 0 or not np.isfinite(x).all():
        raise PrestoError("loop export needs a non-empty, finite audio clip")
    length = x.shape[-1]
    xf_ms = check_number("crossfade (ms)", crossfade_ms, *CROSSFADE_MS)
    bar = bar_seconds(bpm, ts) * sr  # samples per bar, fractional
    fit = int(math.floor((length + 0.5) / bar + 1e-9))  # N bars rounded to whole samples still hold N bars
    if fit < 1:
        raise PrestoError(f"the clip ({length / sr:.2f} s) is shorter than one bar of {ts} at {bpm:g} BPM "
                          f"({bar / sr:.2f} s); lower the bar length or export a longer clip")
    if bars in (None, 0):
        bars = fit
    bars = check_number("loop bars", bars, 1, fit, integer=True)
    n = int(round(bars * bar))
    n = min(n, length)
    out = x[..., :n].copy()
    xf = min(int(round(xf_ms * sr / 1000.0)), n // 2)
    if xf > 0:
        t = (np.arange(xf, dtype=np.float32) + 0.5) / xf
        fade_in, fade_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
        tail = x[..., n:n + xf]
        if tail.shape[-1] == xf:
            out[..., :xf] = out[..., :xf] * fade_in + tail * fade_out
        else:  # no audio after the cut: fade both ends so the seam does not click
            out[..., :xf] *= fade_in
            out[..., -xf:] *= fade_out
    return out.astype(np.float32), int(bars)

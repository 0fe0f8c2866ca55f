"""Does a clip keep the asked beat grid over a whole window, and is it on the grid's phase?

- drift: :func:`train.evaluation.seams.beat_phase_drift` over four segments of one clip (the bar
  pattern of each quarter against the first's): a grid that wanders inside one window reads
  hundreds of ms, music on a steady grid reads near 0 whatever its phase.
- offset: where the beats fall against an exact grid at the asked BPM that starts on the clip's
  first sample (the onset envelope folded on the beat period; the peak's phase, wrapped to half a
  beat either side). Corpus pieces start on a downbeat, so theirs is near 0; a beat-grid model's
  clips should be too, and a model without the grid falls anywhere.
"""

from __future__ import annotations

import numpy as np

from train.evaluation.clips import clamp_bpm, generate_set, load_crop
from train.evaluation.seams import HOP, bar_pattern, beat_phase_drift, onset_envelope, segment_starts

ON_GRID_MS = 50.0  # |offset| below this counts as on the asked grid


def grid_offset_ms(wav: np.ndarray, sr: int, bpm: float, bin_s: float = 0.005, env: np.ndarray | None = None,
                   start_s: float = 0.0, end_s: float | None = None) -> float:
    """Phase (ms, in [-beat / 2, beat / 2)) of the strongest onset in the beat-folded onset envelope
    of mono ``wav`` between ``start_s`` and ``end_s`` (default: all of it), against beats at 0,
    60 / bpm, 120 / bpm ... seconds from the first sample (``env``: its :func:`onset_envelope`, when
    already computed)."""
    env = onset_envelope(wav, sr) if env is None else env
    beat_s = 60.0 / bpm
    end_s = env.size * HOP / sr if end_s is None else end_s
    pat = bar_pattern(env, HOP / sr, start_s, end_s, beat_s, bin_s)
    phase = (int(np.argmax(pat)) + 0.5) * bin_s
    return float(((phase + beat_s / 2) % beat_s - beat_s / 2) * 1000.0)


def segment_offsets_ms(wav: np.ndarray, sr: int, bpm: float, segment_s: float,
                       env: np.ndarray | None = None) -> list[float]:
    """:func:`grid_offset_ms` of each whole ``segment_s`` segment of mono ``wav``, every one against
    the same grid from the first sample: a long piece whose beats stay on the asked grid reads the
    same offset throughout, one whose grid moves reads it moving."""
    env = onset_envelope(wav, sr) if env is None else env
    return [grid_offset_ms(wav, sr, bpm, env=env, start_s=float(s0), end_s=float(s0 + segment_s))
            for s0 in segment_starts(env, sr, segment_s)]


def clip_grid(wav: np.ndarray, sr: int, bpm: float) -> dict:
    """{"max_drift_ms", "end_drift_ms", "offset_ms"} of one clip (four drift segments)."""
    seconds = wav.shape[-1] / sr
    env = onset_envelope(wav, sr)  # both measures read the same envelope
    drift = beat_phase_drift(wav, sr, bpm, segment_s=seconds / 4, env=env)
    return {"max_drift_ms": drift["max_drift_ms"], "end_drift_ms": drift["end_drift_ms"],
            "offset_ms": grid_offset_ms(wav, sr, bpm, env=env)}


def summary(name: str, rows: list[dict]) -> dict:
    """Medians over clips, and the share of clips on the grid's phase."""
    off = np.abs([r["offset_ms"] for r in rows])
    return {"name": name, "n": len(rows), "max_drift_ms": float(np.median([r["max_drift_ms"] for r in rows])),
            "end_drift_ms": float(np.median([r["end_drift_ms"] for r in rows])),
            "abs_offset_ms": float(np.median(off)), "on_grid": float(np.mean(off < ON_GRID_MS))}


def grid_section(pipe, variant: str, items: list[dict], num: int, seconds: float, seed: int,
                 steps: int | None = None) -> dict:
    """Drift and offset of ``num`` generated clips of ``seconds`` (one per held-out prompt, seeds
    seed, seed + 1 ...) and of the held-out pieces' first ``seconds``."""
    sr = pipe.sample_rate
    clips, _ = generate_set(pipe, variant, items, num, seconds, seed, steps=steps)
    gen = [clip_grid(c, sr, clamp_bpm(items[i % len(items)]["bpm"])) for i, c in enumerate(clips)]
    real = [clip_grid(load_crop(it["path"], sr, seconds, 0.0), sr, it["bpm"]) for it in items[:num]]
    return {"seconds": seconds, "rows": [summary("generated clips", gen), summary("real held-out pieces", real)],
            "clips": gen}

"""Seam and beat-drift measures (train/evaluation/seams.py) on audio whose answer is known: a
click track at an exact tempo has no drift, the same resampled 0.5 % faster drifts by the amount
its tempo error predicts, and a cut into silence is a larger seam than any bar line."""

import numpy as np
import pytest
import soxr

from train.evaluation.seams import bar_pattern, beat_phase_drift, jumps, pooled_ratio, seam_jumps

SR = 22050


def clicks(bpm: float, seconds: float, accent_every: int = 4) -> np.ndarray:
    """Clicks on every beat, louder on each bar's first, plus soft off-beat ticks (a groove whose
    off-beats must not read as half a beat of drift)."""
    x = np.zeros(int(seconds * SR), np.float32)
    beat = 60.0 / bpm
    t = np.arange(int(0.01 * SR)) / SR
    click = (np.sin(2 * np.pi * 1500 * t) * np.exp(-t * 400)).astype(np.float32)
    for k in range(int(seconds / beat * 2)):
        n = int(round(k * beat / 2 * SR))
        if n + click.size >= x.size:
            break
        gain = 0.25 if k % 2 else (1.0 if (k // 2) % accent_every == 0 else 0.6)
        x[n:n + click.size] += gain * click
    return x


def test_exact_tempo_has_no_drift_and_a_tempo_error_drifts_as_predicted():
    x = clicks(120, 62)
    assert beat_phase_drift(x, SR, 120)["max_drift_ms"] <= 6  # one bin of the bar pattern
    fast = soxr.resample(x, SR, int(SR * 0.995))  # 0.5 % faster: 20 s segments drift 100 ms each
    d = beat_phase_drift(fast, SR, 120)["drift_ms"]
    assert d[0] == 0 and d[1] == pytest.approx(-100, abs=12) and d[2] == pytest.approx(-200, abs=15)
    with pytest.raises(ValueError, match="two 20 s segments"):
        beat_phase_drift(x[:SR * 30], SR, 120)


@pytest.mark.parametrize("bpm", [87, 100, 120])
def test_short_segments_of_a_steady_grid_do_not_jump_half_a_beat(bpm):
    # 6 s segments hold 2-3 bars: unsmoothed, their folded patterns aligned half a beat apart
    # (300 ms at 100 BPM, 345 ms at 87) on this steady click track.
    x = clicks(bpm, 24)
    assert beat_phase_drift(x, SR, bpm, segment_s=6.0)["max_drift_ms"] <= 6


def test_bar_pattern_peaks_on_the_downbeat():
    x = clicks(100, 24)
    from librosa.onset import onset_strength

    env = onset_strength(y=x, sr=SR, hop_length=256)
    pat = bar_pattern(env, 256 / SR, 0.0, 24.0, 2.4)
    assert pat.shape == (480,) and abs(pat.mean()) < 1e-9
    peak = int(np.argmax(pat)) * 0.005
    assert min(abs(peak - 0.6 * k) for k in range(5)) < 0.03  # on a beat of the 2.4 s bar


def test_a_cut_into_silence_is_a_bigger_seam_than_bar_lines():
    t = np.arange(16 * SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.8 + 0.2 * np.cos(2 * np.pi * 2 * t))).astype(np.float32)
    bars = [2.0 * k for k in range(1, 8)]
    cut = x.copy()
    cut[int(9.1 * SR):] = 0.0
    j = jumps(cut, SR, [9.1])
    assert j["loudness_db"][0] > 10
    same = pooled_ratio([seam_jumps(x, SR, [8.0], bars)])  # a seam on an ordinary bar line: ratio ~1
    assert same["seams"] == 1 and same["bar_lines"] == 6 and 0.5 < same["flux_ratio"] < 2
    worse = pooled_ratio([seam_jumps(cut, SR, [9.1], [b for b in bars if b < 9])])
    assert worse["loudness_db_ratio"] > 3
    assert jumps(x, SR, [0.01, 15.99])["flux"].size == 0  # too close to the ends

"""Beat grid over one window (train/evaluation/grid.py) on click tracks whose answer is known: on
the grid from the first sample, shifted by a known offset, and a tempo that wanders."""

import numpy as np
import pytest

from tests.train.evaluation.test_seams import SR, clicks
from train.evaluation.grid import clip_grid, grid_offset_ms, segment_offsets_ms, summary


def test_a_click_track_on_the_grid_has_no_offset_and_no_drift():
    x = clicks(120, 32)
    g = clip_grid(x, SR, 120)
    assert abs(g["offset_ms"]) <= 15 and g["max_drift_ms"] <= 6 and g["end_drift_ms"] <= 6


@pytest.mark.parametrize("shift_ms", [100.0, -150.0])
def test_a_shifted_grid_reads_its_shift(shift_ms):
    x = clicks(100, 24)
    n = int(round(abs(shift_ms) / 1000 * SR))
    y = np.concatenate([np.zeros(n, np.float32), x])[:x.size] if shift_ms > 0 else x[n:]
    assert grid_offset_ms(y, SR, 100) == pytest.approx(shift_ms, abs=15)
    assert clip_grid(y, SR, 100)["max_drift_ms"] <= 6  # steady, only late or early


def test_a_wandering_grid_drifts():
    # the second half of the clip moves 120 ms late: the last quarters read it
    x = clicks(120, 32)
    half = x.size // 2
    late = np.concatenate([x[:half], np.zeros(int(0.12 * SR), np.float32), x[half:]])[:x.size]
    g = clip_grid(late, SR, 120)
    assert g["end_drift_ms"] == pytest.approx(120, abs=15)


def test_segment_offsets_follow_a_grid_that_moves():
    # 60 s at 120 BPM, 150 ms late from 30 s on: the first segments read 0, the last 150 ms
    x = clicks(120, 60)
    half = x.size // 2
    late = np.concatenate([x[:half], np.zeros(int(0.15 * SR), np.float32), x[half:]])[:x.size]
    steady = segment_offsets_ms(x, SR, 120, 20.0)
    moved = segment_offsets_ms(late, SR, 120, 20.0)
    assert len(steady) == len(moved) == 3 and max(abs(o) for o in steady) <= 15
    assert abs(moved[0]) <= 15 and moved[2] == pytest.approx(150, abs=15)


def test_summary_medians_and_share_on_the_grid():
    rows = [{"max_drift_ms": d, "end_drift_ms": d / 2, "offset_ms": o} for d, o in ((10, 5), (30, -80), (20, 40))]
    s = summary("x", rows)
    assert (s["n"], s["max_drift_ms"], s["end_drift_ms"], s["abs_offset_ms"]) == (3, 20.0, 10.0, 40.0)
    assert s["on_grid"] == pytest.approx(2 / 3)

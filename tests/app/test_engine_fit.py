"""The latency model's fits: exact on noise-free points, never negative on noisy ones."""

import pytest

from app.engine import Fit, GenFit


def test_generation_fit_recovers_per_call_and_per_flop_exactly():
    pts = [({"gen_calls": c, "gen_gflop": g}, 0.05 * c + 0.002 * g) for c, g in ((1, 10), (2, 80), (1, 640))]
    f = GenFit.from_points(pts)
    assert f.per_call == pytest.approx(0.05) and f.per_gflop == pytest.approx(0.002)
    assert f({"gen_calls": 4, "gen_gflop": 2560}) == pytest.approx(0.2 + 5.12)


def test_fits_stay_non_negative_on_noisy_points():
    # more work took less time: the two-term solution would have a negative coefficient
    f = GenFit.from_points([({"gen_calls": 1, "gen_gflop": 10}, 1.0), ({"gen_calls": 2, "gen_gflop": 80}, 0.5),
                            ({"gen_calls": 1, "gen_gflop": 640}, 2.0)])
    assert f.per_call >= 0 and f.per_gflop >= 0 and f({"gen_calls": 1, "gen_gflop": 640}) > 0
    d = Fit.from_points([(100, 0.3), (800, 0.2), (6400, 1.6)])
    assert d.a >= 0 and d.b >= 0
    assert Fit.from_points([(100, 0.11), (800, 0.18), (6400, 0.74)]).b == pytest.approx(1e-4, rel=1e-6)

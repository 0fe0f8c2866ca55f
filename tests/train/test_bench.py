"""train.bench: every row is timed and the derived rates follow from the median; bad flags exit 2."""

import pytest

from train import bench


def test_rows_and_rates():
    rows = bench.run(size="tiny", batch=1, seconds=0.5, repeats=1, precisions=("fp32",))
    assert [r["name"] for r in rows] == ["base DSM step", "Presto-S fake-score turn", "Presto-S generator turn",
                                         "Presto-S iteration (5:1 mix)"]
    for r in rows:
        assert r["seconds"] > 0 and r["samples_per_s"] == pytest.approx(1 / r["seconds"])
        assert r["audio_s_per_s"] == pytest.approx(0.5 / r["seconds"])
    fake, gen, mix = (r["seconds"] for r in rows[1:])
    assert mix == pytest.approx((5 * fake + gen) / 6)


def test_bad_flags(capsys):
    assert bench.main(["--precision", "fp8"]) == 2
    assert "--precision" in capsys.readouterr().err

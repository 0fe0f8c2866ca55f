"""presto_core.bench: every row is measured (forward, dropped forward, decoder, the whole Presto-LS
path) in both precisions; bad sizes fail clearly. Timings themselves are never asserted."""

import pytest

from presto_core import bench


def test_rows_cover_every_case_and_precision():
    rows = bench.run(repeats=1, seconds=0.5, size="tiny")
    names = sorted({r["name"] for r in rows})
    assert names == sorted(["DiT tiny forward (12 blocks)", "DiT tiny forward (6 dropped)", "VAE decoder",
                            "M2S tiny (0.5 s)", "Presto-LS 4 steps + decode", "Presto-LS 4 steps stereo"])
    assert [r["precision"] for r in rows] == ["fp32", "bf16"] * 6
    share = bench.m2s_share(rows)
    assert set(share) == {"fp32", "bf16"} and all(0 < v for v in share.values())
    assert all(r["seconds"] > 0 and r["frames"] == 23 for r in rows)
    assert all(r["vs_fp32"] == 1.0 for r in rows if r["precision"] == "fp32")


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="size must be 'tiny' or 'paper'"):
        bench.run(repeats=1, seconds=0.5, size="huge")


def test_cli_prints_the_table(capsys):
    assert bench.main(["--repeats", "1", "--seconds", "0.25", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "size tiny" in out and "Presto-LS 2 steps + decode" in out and "median ms" in out
    assert "Presto-LS 2 steps stereo" in out and "M2S share of the Presto-LS stereo path, bf16" in out

"""train.evaluation.metrics against closed forms and properties; train.eval end to end on a micro model
(random weights: the table's numbers are meaningless, only the plumbing is checked)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from train.evaluation import metrics


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Frechet distance


def _analytic_fd(m1, s1, m2, s2):
    from scipy.linalg import sqrtm

    cross = sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross))


def test_frechet_matches_analytic_gaussians():
    rng = _rng(0)
    d = 4
    a = rng.normal(size=(d, d))
    b = rng.normal(size=(d, d))
    s1, s2 = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    m1, m2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 0.25])
    n = 200_000
    x = rng.multivariate_normal(m1, s1, size=n)
    y = rng.multivariate_normal(m2, s2, size=n)
    want = _analytic_fd(m1, s1, m2, s2)
    got = metrics.frechet_distance(x, y, ridge=0.0)
    assert got == pytest.approx(want, rel=0.02, abs=0.01)


def test_frechet_isotropic_closed_form_and_symmetry():
    # N(0, I) vs N(mu, 4I) in D dims: |mu|^2 + D (1 + 4 - 2 * 2) = |mu|^2 + D.
    rng = _rng(1)
    d, n = 3, 100_000
    mu = np.array([1.0, 2.0, 0.0])
    x = rng.normal(size=(n, d))
    y = mu + 2.0 * rng.normal(size=(n, d))
    fd = metrics.frechet_distance(x, y, ridge=0.0)
    assert fd == pytest.approx(5.0 + d, rel=0.02)
    assert metrics.frechet_distance(y, x, ridge=0.0) == pytest.approx(fd, rel=1e-9)


def test_frechet_self_zero_and_small_n_finite():
    rng = _rng(2)
    x = rng.normal(size=(50, 8))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # N << D (rank-deficient covariances): finite, non-negative, and torch input works.
    a, b = rng.normal(size=(3, 256)), rng.normal(size=(2, 256)) + 0.5
    fd = metrics.frechet_distance(torch.from_numpy(a).float(), b)
    assert math.isfinite(fd) and fd > 0
    with pytest.raises(ValueError):
        metrics.frechet_distance(a[:1], b)


# ---------------------------------------------------------------------------------------------
# MMD


def test_mmd_self_zero_grows_with_shift_and_symmetric():
    rng = _rng(3)
    x = rng.normal(size=(300, 6))
    y = rng.normal(size=(300, 6))
    same = metrics.mmd(x, x)
    assert abs(same) < 1000 * 2 / 300 + 1e-9  # exactly 2 (mean_offdiag - 1) / N * 1000, <= 0
    assert same <= 0
    null = metrics.mmd(x, y)
    vals = [metrics.mmd(x, y + s, bandwidth=3.0) for s in (0.0, 0.5, 1.0, 2.0)]
    assert abs(null) < 5 and abs(vals[0]) < 5
    assert vals[0] < vals[1] < vals[2] < vals[3]
    assert metrics.mmd(x, y + 1.0) == pytest.approx(metrics.mmd(y + 1.0, x), rel=1e-9)


def test_mmd_closed_form_two_points():
    # x = {0, 0}, y = {d, d} in 1-D: kxx = kyy = 1 (off-diagonal), kxy = exp(-d^2 / (2 s^2)).
    x, y = np.zeros((2, 1)), np.full((2, 1), 2.0)
    want = 1000 * (2 - 2 * math.exp(-4 / (2 * 1.5 ** 2)))
    assert metrics.mmd(x, y, bandwidth=1.5) == pytest.approx(want, rel=1e-12)
    assert metrics.mmd(x, y, bandwidth=1.5, scale=1.0) == pytest.approx(want / 1000, rel=1e-12)
    with pytest.raises(ValueError):
        metrics.mmd(x, y, kernel="laplace")


# ---------------------------------------------------------------------------------------------
# Density / coverage / precision / recall


def test_density_coverage_identical_distributions():
    rng = _rng(4)
    real, fake = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    dc = metrics.density_coverage(real, fake, k=5)
    assert dc["density"] == pytest.approx(1.0, abs=0.1)
    assert dc["coverage"] > 0.95  # expected 1 - 2^-k ~ 0.97 for k = 5
    pr = metrics.precision_recall(real, fake, k=5)
    assert pr["precision"] > 0.95 and pr["recall"] > 0.95


def test_coverage_drops_when_fake_covers_half_the_support():
    rng = _rng(5)
    real = rng.uniform(-1, 1, size=(2000, 2))
    fake = rng.uniform(-1, 1, size=(2000, 2))
    fake[:, 0] = np.abs(fake[:, 0])  # only the right half
    dc = metrics.density_coverage(real, fake, k=5)
    assert 0.4 < dc["coverage"] < 0.6
    pr = metrics.precision_recall(real, fake, k=5)
    assert pr["precision"] > 0.95  # all fakes are realistic ...
    assert 0.4 < pr["recall"] < 0.65  # ... but only half the real support is reached
    assert dc["density"] == pytest.approx(1.0, abs=0.15)  # fake density x2 on half the support


def test_precision_recall_shifted_and_asymmetric():
    rng = _rng(6)
    real = rng.normal(size=(1000, 2))
    far = rng.normal(size=(1000, 2)) + 10.0
    pr = metrics.precision_recall(real, far, k=5)
    dc = metrics.density_coverage(real, far, k=5)
    assert pr == {"precision": 0.0, "recall": 0.0} and dc == {"density": 0.0, "coverage": 0.0}
    # Narrow fake set inside the real support: high precision, low recall; swapping the roles swaps them.
    narrow = 0.1 * rng.normal(size=(1000, 2))
    a = metrics.precision_recall(real, narrow, k=5)
    b = metrics.precision_recall(narrow, real, k=5)
    assert a["precision"] > 0.9 and a["recall"] < 0.3
    assert b["recall"] > 0.9 and b["precision"] < 0.3
    with pytest.raises(ValueError):
        metrics.density_coverage(real[:5], far, k=5)


def test_clap_score_mean_cosine():
    t = np.array([[1.0, 0.0], [0.0, 2.0]])
    a = np.array([[3.0, 0.0], [1.0, 1.0]])
    assert metrics.clap_score(t, a) == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2)
    assert metrics.clap_score(torch.tensor(t), torch.tensor(-t)) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        metrics.clap_score(t, a[:1])


def test_batch_kwargs_hits_exact_candidate_counts():
    from presto_core.clap import num_candidates
    from train.eval import batch_kwargs

    for b in range(1, 33):
        kw = batch_kwargs(b, has_clap=True)
        assert num_candidates(kw["num_clips"], kw["reject_ratio"]) == b
    with pytest.raises(ValueError):
        batch_kwargs(9, has_clap=False)


def test_cli_parsers():
    from train.eval import build_parser

    args = build_parser().parse_args(["--model", "m", "--batch-sizes", "1,4,max", "--steps", "base=80,presto-ls=2"])
    assert args.batch_sizes == [1, 4, "max"] and args.steps == {"base": 80, "presto-ls": 2}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m", "--steps", "base=x"])


# ---------------------------------------------------------------------------------------------
# The command end to end (plumbing only)


def _heldout(folder, n=3, sr=16000):
    (folder / "audio").mkdir(parents=True)
    rng = _rng(7)
    lines = []
    for i in range(n):
        t = np.arange(int(1.5 * sr)) / sr
        wav = 0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * t) + 0.01 * rng.normal(size=t.shape)
        sf.write(folder / "audio" / f"h{i}.wav", wav.astype(np.float32), sr)
        lines.append({"path": f"audio/h{i}.wav", "caption": f"test tone number {i}", "bpm": 90 + 10 * i,
                      "split": "heldout"})
    lines.append({"path": "audio/h0.wav", "caption": "a training item", "bpm": 100})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return folder


def test_paper_steps_are_table_2_budgets():
    from types import SimpleNamespace

    from train.eval import paper_steps

    base = SimpleNamespace(name="base", sampler="dpmpp_2s", steps=16)
    gen = SimpleNamespace(name="presto-ls", sampler="pingpong", steps=8)
    other = SimpleNamespace(name="x", sampler="heun", steps=12)
    assert (paper_steps(base), paper_steps(gen), paper_steps(other)) == (40, 4, 12)  # 40 2S steps = 80 NFE
    assert paper_steps(base, {"base": 16}) == 16 and paper_steps(gen, {"base": 16}) == 4


def test_eval_command_end_to_end(tmp_path):
    from tests.factory import make_model_folder
    from train.eval import main

    model = make_model_folder(tmp_path / "model", variants=("base", "presto-ls"), with_m2s=True)
    corpus = _heldout(tmp_path / "corpus")
    out = tmp_path / "res" / "results.md"
    rc = main(["--model", str(model), "--heldout", str(corpus), "--num", "2", "--duration", "1",
               "--batch-sizes", "1,max", "--max-batch", "2", "--repeats", "1", "--device", "cpu",
               "--precision", "fp32", "--random-weights", "--steps", "base=3", "--out", str(out)])
    assert rc == 0
    md = out.read_text()
    rep = json.loads(out.with_suffix(".json").read_text())
    assert "meaningless" in md and "python -m train.eval --model" in md and "torch" in md
    for header in ("FAD", "MMD", "CLAP", "Density", "Recall", "Coverage", "Generation ms", "Decoding ms",
                   "Mono latency ms", "RTF", "Speed-up vs base", "M2S ms", "Stereo latency ms", "RTF stereo"):
        assert header in md
    q = rep["quality"]
    assert [(r["variant"], r["reject_ratio"]) for r in q] == [("base", 0.0), ("presto-ls", 0.0), ("presto-ls", 0.5)]
    assert [r["steps"] for r in q] == [3, 4, 4]  # base from --steps; ping-pong at the paper's 4
    assert rep["n_real"] == 3
    for r in q:
        for c in ("fad", "mmd", "clap", "density", "recall", "coverage"):
            assert math.isfinite(r[c]), (r["variant"], c)
    assert rep["rejection"]["variant"] == "presto-ls"
    speed = rep["speed"]
    assert [(r["variant"], r["batch"]) for r in speed] == [("base", 1), ("base", 2), ("presto-ls", 1),
                                                           ("presto-ls", 2)]
    for r in speed:
        for c in ("generation_ms", "decoding_ms", "mono_latency_ms", "rtf", "total_ms", "rtf_e2e", "speedup",
                  "speedup_e2e"):
            assert math.isfinite(r[c]) and r[c] > 0, (r["variant"], c)
        assert r["rtf"] == pytest.approx(r["batch"] * 1.0 / (r["mono_latency_ms"] / 1e3))
        assert 0 < r["m2s_ms"] and r["stereo_latency_ms"] > r["mono_latency_ms"]
        assert r["rtf_stereo"] == pytest.approx(r["batch"] * 1.0 / (r["stereo_latency_ms"] / 1e3))
    assert speed[0]["speedup"] == pytest.approx(1.0) and speed[0]["speedup_e2e"] == pytest.approx(1.0)
    assert speed[2]["speedup_e2e"] == pytest.approx(speed[0]["total_ms"] / speed[2]["total_ms"])
    assert "| n/a" not in md  # every cell measured

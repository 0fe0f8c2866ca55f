"""train/m2s.py on a micro MonoToStereo and a synthetic stereo corpus: training with held-out stereo
metrics, exact resume, the exported component in a pipeline, and a clear error for a mono corpus."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from presto_core import checkpoint as ckpt
from presto_core.stereo import MonoToStereo
from tests.fixtures import CONFIGS, REPO, make_corpus
from train import m2s
from train.evaluation.stereo import stereo_scores
from train.infra.checkpointing import CheckpointManager, read_metrics

CONFIG = CONFIGS / "test.json"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("m2s") / "corpus", stereo=True)


@pytest.fixture(scope="module")
def argv(corpus):
    return ["--config", str(CONFIG), "--set", f"data.root={corpus}"]


@pytest.fixture(scope="module")
def reference(argv, tmp_path_factory):
    out = tmp_path_factory.mktemp("m2s_ref") / "run"
    assert m2s.main(argv + ["--out", str(out)]) == 0
    return out


def test_trains_evaluates_and_exports(reference):
    metrics = read_metrics(reference)
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "heldout/side_mrstft" in m]
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert all(math.isfinite(m[k]) for m in train for k in ("loss", "grad_norm", "side_stft", "lr_stft", "side_energy",
                                                          "width"))
    assert [m["step"] for m in evals] == [2, 4]
    for m in evals:
        assert m["heldout/mid_error"] <= 1e-6  # (L + R) / 2 is the mid
        assert m["heldout/real_width_median"] > 0 and 0 <= m["heldout/pred_width_q1"] <= m["heldout/pred_width_q3"]
    model, meta = ckpt.load_component(reference / "export" / "m2s")
    assert isinstance(model, MonoToStereo) and meta["step"] == 4
    raw = load_file(str(CheckpointManager(reference / "checkpoints").final_dir(4) / "model.safetensors"))
    torch.manual_seed(0)
    init = MonoToStereo(model.cfg).state_dict()
    assert sum(not torch.equal(init[k], raw[k]) for k in init) > len(init) // 2


def test_resume_is_exact(argv, reference, tmp_path):
    out = tmp_path / "run"
    assert m2s.main(argv + ["--out", str(out), "--max-steps", "2"]) == 0
    assert m2s.main(argv + ["--out", str(out), "--resume", "latest"]) == 0
    ma, mb = read_metrics(reference), read_metrics(out)
    assert [m.get("loss") for m in ma] == [m.get("loss") for m in mb]
    assert [m.get("heldout/side_mrstft") for m in ma] == [m.get("heldout/side_mrstft") for m in mb]
    a = CheckpointManager(reference / "checkpoints").final_dir(4)
    b = CheckpointManager(out / "checkpoints").final_dir(4)
    for name in ("model.safetensors", "ema_model.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_mono_corpus_is_refused_naming_the_file(tmp_path, capsys):
    mono = make_corpus(tmp_path / "mono")
    status = m2s.main(["--config", str(CONFIG), "--set", f"data.root={mono}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "00.wav: 1 channel(s), but 2 are needed" in err and "Traceback" not in err


def test_stereo_scores_of_a_perfect_and_a_mono_prediction():
    g = torch.Generator().manual_seed(0)
    real = 0.1 * torch.randn(3, 2, 16000, generator=g)

    class Mono(torch.nn.Module):
        def forward(self, mid):
            return torch.stack([mid, mid], 1)

    s = stereo_scores(Mono(), real)
    assert s["pred_width_median"] == 0 and s["pred_correlation_median"] == pytest.approx(1.0)
    assert s["real_width_median"] == pytest.approx(1.0, abs=0.1) and s["width_ratio"] == 0
    assert s["mid_error"] <= 1e-7


@pytest.mark.slow
def test_python_m_and_presto_train(argv, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "train", "m2s", *argv, "--out", str(out), "--max-steps", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "export" / "m2s" / "model.safetensors").is_file()

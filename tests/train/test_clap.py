"""train/clap.py on a micro EmbeddedClap and a synthetic corpus: training with held-out retrieval
metrics, exact resume, the NaN guard, `python -m`, and the exported component."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from presto_core import checkpoint as ckpt
from presto_core.clap import EmbeddedClap
from tests.fixtures import CONFIGS, REPO, make_corpus
from train import clap
from train.evaluation import retrieval
from train.infra.checkpointing import CheckpointManager, read_metrics
from train.infra.run import EXIT_NONFINITE

CONFIG = CONFIGS / "test.json"


@pytest.fixture(scope="module")
def argv(tmp_path_factory):
    corpus = make_corpus(tmp_path_factory.mktemp("clap") / "corpus")
    return ["--config", str(CONFIG), "--set", f"data.root={corpus}"]


@pytest.fixture(scope="module")
def reference(argv, tmp_path_factory):
    out = tmp_path_factory.mktemp("clap_ref") / "run"
    assert clap.main(argv + ["--out", str(out)]) == 0
    return out


def test_retrieval_accuracy():
    a = torch.eye(4)
    t = torch.eye(4)[[0, 1, 3, 2]]
    assert retrieval.retrieval_accuracy(t, a, ks=(1, 2)) == {"top1": 0.5, "top2": 0.5}
    assert retrieval.retrieval_accuracy(a, a, ks=(1,)) == {"top1": 1.0}


def test_trains_evaluates_and_exports(reference):
    metrics = read_metrics(reference)
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "heldout/top1" in m]
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in train)
    assert [m["step"] for m in evals] == [2, 4]
    assert all(0 <= m["heldout/top1"] <= m["heldout/top5"] == 1.0 for m in evals)  # 2 held-out pieces

    model, meta = ckpt.load_component(reference / "export" / "clap")
    assert isinstance(model, EmbeddedClap) and meta["step"] == 4
    assert meta["text_encoder"]["kind"] == "minilm"
    torch.manual_seed(0)
    init = EmbeddedClap(model.cfg).state_dict()
    raw = load_file(str(CheckpointManager(reference / "checkpoints").final_dir(4) / "model.safetensors"))
    assert sum(not torch.equal(init[k], raw[k]) for k in init) > len(init) // 2


def test_resume_is_exact(argv, reference, tmp_path):
    out = tmp_path / "run"
    assert clap.main(argv + ["--out", str(out), "--max-steps", "2"]) == 0
    assert clap.main(argv + ["--out", str(out), "--resume", "latest"]) == 0
    ma, mb = read_metrics(reference), read_metrics(out)
    assert [m.get("loss") for m in ma] == [m.get("loss") for m in mb]
    assert [m.get("heldout/top1") for m in ma] == [m.get("heldout/top1") for m in mb]
    a = CheckpointManager(reference / "checkpoints").final_dir(4)
    b = CheckpointManager(out / "checkpoints").final_dir(4)
    for name in ("model.safetensors", "ema_model.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.mark.slow
def test_nan_guard_and_python_m(argv, tmp_path):
    out = tmp_path / "nan"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "train.clap", *argv, "--out", str(out), "--set", "clap.loop.debug_nan_at_step=2"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert done.returncode == EXIT_NONFINITE, done.stderr.decode()[-3000:]
    assert "non-finite loss at step 3" in done.stderr.decode()
    assert [s for s, _ in CheckpointManager(out / "checkpoints").complete()] == [2]
    assert not (out / "export").exists()


def test_data_root_reads_a_resampled_mirror(argv, reference, tmp_path):
    """clap.data_root replaces data.root: training on a 16 kHz mirror (train.data.resample) of the
    corpus runs with data.root pointing nowhere, and logs the same held-out set size."""
    from train.data.resample import resample_dataset

    corpus = argv[argv.index("--set") + 1].split("=", 1)[1]
    mirror = resample_dataset(corpus, tmp_path / "mirror", 16000)
    out = tmp_path / "run"
    assert clap.main(["--config", str(CONFIG), "--set", f"data.root={tmp_path / 'missing'}",
                      "--set", f"clap.data_root={mirror}", "--out", str(out), "--max-steps", "1"]) == 0
    assert (out / "checkpoints").is_dir()

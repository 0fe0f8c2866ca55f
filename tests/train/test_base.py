"""train/base.py and train/export.py end to end on a micro DiT, a random micro VAE and a synthetic
corpus: training, exact resume, SIGKILL + resume, the NaN guard, and the exported model folder."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from presto_core import checkpoint as ckpt
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.clap import ClapConfig, EmbeddedClap
from presto_core.dit import DiT, DiTConfig
from tests.fixtures import CONFIGS, REPO, logged_values, make_corpus
from train import base, export
from train.infra.checkpointing import CheckpointManager, read_metrics
from train.infra.run import EXIT_NONFINITE

CONFIG = CONFIGS / "test.json"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Corpus, a random micro VAE component, a shared latent-cache folder, and the common argv."""
    root = tmp_path_factory.mktemp("base")
    corpus = make_corpus(root / "corpus")
    torch.manual_seed(0)
    vcfg = VAEConfig(**json.loads(CONFIG.read_text())["vae"]["model"])
    ckpt.save_component(root / "vae", AudioVAE(vcfg), vcfg)
    ccfg = ClapConfig(**json.loads(CONFIG.read_text())["clap"]["model"])
    ckpt.save_component(root / "clap", EmbeddedClap(ccfg), ccfg)
    argv = ["--config", str(CONFIG), "--set", f"data.root={corpus}", "--set", f"base.vae={root / 'vae'}",
            "--set", f"base.latent_cache={root / 'cache'}"]
    return root, argv


@pytest.fixture(scope="module")
def reference(setup):
    """An uninterrupted 6-step run (the test config's max_steps), exporting with a CLAP component."""
    root, argv = setup
    assert base.main(argv + ["--out", str(root / "ref"), "--set", f"base.clap={root / 'clap'}"]) == 0
    return root / "ref"


def _weights(run_dir: Path, step: int) -> tuple[dict, dict]:
    d = CheckpointManager(run_dir / "checkpoints").final_dir(step)
    return load_file(str(d / "model.safetensors")), load_file(str(d / "ema_model.safetensors"))


def test_trains_and_exports_a_loadable_model_folder(reference):
    metrics = [m for m in read_metrics(reference) if "loss" in m]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in metrics)
    evals = [m for m in read_metrics(reference) if "heldout_loss" in m]
    assert [m["step"] for m in evals] == [3, 6] and all(math.isfinite(m["heldout_loss"]) for m in evals)
    assert (reference / "tb").is_dir() and any((reference / "tb").rglob("events.*"))

    folder = reference / "model"
    index = ckpt.read_index(folder)
    assert set(index["components"]) == {"vae", "base", "clap"}
    assert index["text_encoder"] == {"kind": "minilm", "max_tokens": 64}
    assert index["variants"] == {"base": {"component": "base", "sampler": "dpmpp_2s", "steps": 4,
                                          "guidance": {"kind": "cfg_pp", "scale": 0.8}}}
    assert index["default_variant"] == "base" and index["sample_rate"] == 16000
    prompts = json.loads((folder / index["prompts"]).read_text())
    assert len(prompts) == 2 and {"prompt", "bpm"} <= set(prompts[0])
    comps = {n: ckpt.load_component(folder / e["path"], e["sha256"]) for n, e in index["components"].items()}
    dit, meta = comps["base"]
    assert isinstance(dit, DiT) and meta["edm"]["p_mean"] == -0.4 and meta["step"] == 6

    torch.manual_seed(0)  # the trainer's seed: the same initial weights
    init = DiT(dit.cfg).state_dict()
    raw, ema = _weights(reference, 6)
    changed = [k for k, v in init.items() if not torch.equal(v, raw["backbone." + k])]
    assert len(changed) > len(init) // 2  # AdaLN-Zero gates and the output layer move off zero
    assert all(torch.equal(dit.state_dict()[k], ema["backbone." + k]) for k in init)

    from presto_core.pipeline import PrestoPipeline

    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    result = pipe.generate(prompt=prompts[0]["prompt"], bpm=prompts[0]["bpm"], duration=1.0, steps=2, seed=0,
                           num_clips=1)
    assert result.clips[0].audio.shape == (16000,) and result.clips[0].clap_score is not None


def test_resume_reproduces_the_uninterrupted_run(setup, reference):
    root, argv = setup
    out = root / "resumed"
    assert base.main(argv + ["--out", str(out), "--max-steps", "3"]) == 0
    assert base.main(argv + ["--out", str(out), "--resume", "latest"]) == 0
    assert logged_values(out) == logged_values(reference)
    for a, b in zip(_weights(out, 6), _weights(reference, 6)):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_from_an_exported_base(setup, reference):
    root, argv = setup
    out = root / "init"
    # lr 0: the run must end exactly where it started, i.e. at the reference's exported weights.
    assert base.main(argv + ["--out", str(out), "--max-steps", "2", "--set", f"base.init={reference / 'export' / 'base'}",
                             "--set", "base.loop.lr=0.0"]) == 0
    start, _ = ckpt.load_component(reference / "export" / "base")
    end, _ = ckpt.load_component(out / "export" / "base")
    a, b = start.state_dict(), end.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert base.main(argv + ["--out", str(root / "init_bad"), "--set", f"base.init={reference / 'export' / 'base'}",
                             "--set", "base.model.depth=3"]) == 2
    assert base.main(argv + ["--out", str(root / "init_bad2"), "--set", f"base.init={root / 'vae'}"]) == 2


def test_beat_grid_added_to_an_exported_base(setup, reference):
    """A grid base warm-started from a plain one: it starts as the plain one (the new projection is
    zero), learns the projection, and exports a beat-grid DiT that a pipeline serves."""
    root, argv = setup
    out = root / "grid"
    init = reference / "export" / "base"
    assert base.main(argv + ["--out", str(out), "--max-steps", "3", "--set", f"base.init={init}",
                             "--set", "base.model.beat_grid=true", "--set", "base.grid_dropout=0.5"]) == 0
    plain, _ = ckpt.load_component(init)
    grid, _ = ckpt.load_component(out / "export" / "base")
    assert grid.cfg.beat_grid and not plain.cfg.beat_grid
    assert set(grid.state_dict()) - set(plain.state_dict()) == {"grid_proj.weight"}
    raw = load_file(str(CheckpointManager(out / "checkpoints").final_dir(3) / "model.safetensors"))
    assert raw["backbone.grid_proj.weight"].abs().sum() > 0  # it trained off zero
    assert all(math.isfinite(m["loss"]) for m in read_metrics(out) if "loss" in m)
    # at lr 0 the grid base is exactly the plain one: same weights, projection still zero
    still = root / "grid0"
    assert base.main(argv + ["--out", str(still), "--max-steps", "1", "--set", f"base.init={init}",
                             "--set", "base.model.beat_grid=true", "--set", "base.loop.lr=0.0"]) == 0
    same, _ = ckpt.load_component(still / "export" / "base")
    assert torch.equal(same.grid_proj.weight, torch.zeros_like(same.grid_proj.weight))
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in plain.state_dict().items())
    # the grid cannot go the other way, and other differences are still refused
    assert base.main(argv + ["--out", str(root / "grid_bad"), "--set", f"base.init={out / 'export' / 'base'}"]) == 2
    assert base.main(argv + ["--out", str(root / "grid_bad2"), "--set", f"base.init={init}",
                             "--set", "base.model.beat_grid=true", "--set", "base.model.depth=3"]) == 2
    assert base.main(argv + ["--out", str(root / "grid_bad3"), "--set", "base.grid_dropout=1.5"]) == 2


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(setup):
    root, argv = setup
    out = root / "nan"
    assert base.main(argv + ["--out", str(out), "--set", "base.loop.debug_nan_at_step=3"]) == EXIT_NONFINITE
    assert [s for s, _ in CheckpointManager(out / "checkpoints").complete()] == [2]
    assert not (out / "model").exists() and not (out / "export").exists()
    raw, _ = _weights(out, 2)
    assert all(torch.isfinite(v).all() for v in raw.values())


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(setup, reference, capsys):
    """`python -m train.base`, killed after its second checkpoint, loses no checkpoint and resumes."""
    root, argv = setup
    out = root / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "train.base", *argv, "--out", str(out), "--max-steps", "1000",
           "--set", "base.loop.keep_checkpoints=3"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    mgr = CheckpointManager(out / "checkpoints")
    deadline = time.time() + 120
    while len(mgr.complete()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    latest = mgr.latest()
    assert latest is not None and len(mgr.complete()) >= 2
    k = int(latest.name.split("-")[1])

    capsys.readouterr()
    assert base.main(argv + ["--out", str(out), "--resume", "latest", "--max-steps", str(k + 2)]) == 0
    assert f"resumed at step {k}" in capsys.readouterr().err
    steps = [m["step"] for m in read_metrics(out) if "loss" in m]
    assert steps == list(range(1, k + 3))
    ref = {m["step"]: m["loss"] for m in read_metrics(reference) if "loss" in m}
    got = {m["step"]: m["loss"] for m in read_metrics(out) if "loss" in m}
    assert all(got[s] == ref[s] for s in ref if s in got)  # same trajectory as the uninterrupted run
    assert ckpt.read_index(out / "model")["components"]["base"]["path"] == "base"


def test_export_cli_from_a_checkpoint(setup, reference, tmp_path):
    root, argv = setup
    out = tmp_path / "model"
    rc = export.main(argv + ["--run", str(reference), "--checkpoint", "4", "--out", str(out), "--fp16"])
    assert rc == 0
    index = ckpt.read_index(out)
    dit, meta = ckpt.load_component(out / "base", index["components"]["base"]["sha256"])
    assert meta["step"] == 4 and isinstance(dit.cfg, DiTConfig)
    stored = load_file(str(out / "base" / ckpt.WEIGHTS))
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    _, ema4 = _weights(reference, 4)
    for k, v in dit.state_dict().items():
        assert torch.equal(v, ema4["backbone." + k].half().float())


def test_export_python_m(setup, reference, tmp_path):
    _, argv = setup
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "train.export", *argv, "--run", str(reference), "--out", str(tmp_path / "m")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    index = ckpt.read_index(tmp_path / "m")
    _, meta = ckpt.load_component(tmp_path / "m" / "base", index["components"]["base"]["sha256"])
    assert meta["step"] == 6 and set(index["components"]) == {"vae", "base"}

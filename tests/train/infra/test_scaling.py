"""Training on several processes: DDP and FSDP (gloo, CPU) for base and presto_s, gradient
accumulation, stops that agree across ranks, the run-folder lock, launcher settings."""

from __future__ import annotations

import json
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
from presto_core.dit import DiT, DiTConfig
from tests.fixtures import CONFIGS, REPO, make_corpus
from train import base
from train.infra.checkpointing import CheckpointManager, read_metrics
from train.infra.config import ConfigError
from train.infra.lock import RunLock, RunLockedError
from train.infra.run import resolve_mixed_precision

CONFIG = CONFIGS / "test.json"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling")
    corpus = make_corpus(root / "corpus", n_train=8)
    raw = json.loads(CONFIG.read_text())
    torch.manual_seed(0)
    vcfg = VAEConfig(**raw["vae"]["model"])
    ckpt.save_component(root / "vae", AudioVAE(vcfg), vcfg)
    dcfg = DiTConfig(**raw["base"]["model"])
    ckpt.save_component(root / "base", DiT(dcfg), dcfg, meta={"edm": {"sigma_data": 0.5}, "step": 1})
    common = ["--config", str(CONFIG), "--set", f"data.root={corpus}", "--set", f"base.vae={root / 'vae'}",
              "--set", f"base.latent_cache={root / 'cache'}"]
    assert base.main(common + ["--out", str(root / "prep"), "--prepare-only"]) == 0
    s_argv = ["--config", str(CONFIG), "--set", f"data.root={corpus}", "--set", f"presto_s.vae={root / 'vae'}",
              "--set", f"presto_s.base_model={root / 'base'}", "--set", f"presto_s.latent_cache={root / 'cache'}"]
    return root, common, s_argv


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpts = CheckpointManager(run_dir / "checkpoints")
    d = ckpts.complete()[-1][1]
    f = d / "sharded_model_0.safetensors"
    return load_file(str(f if f.is_file() else d / "model.safetensors"))


def _close(a: dict, b: dict, tol: float = 1e-5) -> None:
    assert set(a) == set(b)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < tol, worst


def launch(stage: str, argv: list[str], out: Path, nproc: int = 2, timeout: float = 240, on_start=None):
    """torchrun with ``nproc`` CPU processes of ``stage`` (through this module's __main__, which
    records each rank's pid and final parameters). Returns (exit status, stderr)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "tests.train.infra.test_scaling", stage, *argv, "--out", str(out), "--cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if on_start is not None:
            on_start(proc)
        _, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, err.decode()


def _rank_params(out: Path, nproc: int = 2) -> list[dict]:
    return [torch.load(out / f"params_rank{r}.pt") for r in range(nproc)]


@pytest.mark.slow
def test_base_ddp_and_fsdp_equal_one_process_at_the_same_global_batch(setup):
    root, common, _ = setup
    steps = ["--max-steps", "3", "--set", "base.loop.checkpoint_every=3"]
    assert base.main(common + steps + ["--out", str(root / "one"), "--set", "base.loop.batch_size=4"]) == 0
    one = _final_weights(root / "one")
    for mode in ("no", "full"):
        out = root / f"two-{mode}"
        rc, err = launch("base", common + steps + ["--set", "base.loop.batch_size=2", "--set", f"base.loop.fsdp={mode}"],
                         out)
        assert rc == 0, err[-3000:]
        _close(one, _final_weights(out))
        r0, r1 = _rank_params(out)
        assert all(torch.equal(r0[k], r1[k]) for k in r0)  # every rank holds the same model
        assert json.loads((out / "config.json").read_text())["global_batch"] == 4
    # accumulation: one process, two micro-batches of 2
    acc = root / "accum"
    assert base.main(common + steps + ["--out", str(acc), "--set", "base.loop.batch_size=2",
                                       "--set", "base.loop.grad_accum_steps=2"]) == 0
    _close(one, _final_weights(acc))
    # a checkpoint of another layout is refused with the reason
    rc = base.main(common + ["--out", str(root / "one"), "--resume", "latest", "--set", "base.loop.batch_size=2"])
    assert rc == 2


def _train_then_resume(stage: str, argv: list[str], out: Path, steps: int) -> dict:
    """``steps`` steps on 2 processes (both ranks must end with the same weights), then one more
    after ``--resume latest``. Returns rank 0's weights after ``steps`` (DDP's prefix removed)."""
    rc, err = launch(stage, argv + ["--max-steps", str(steps)], out)
    assert rc == 0, err[-3000:]
    r0, r1 = _rank_params(out)
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    assert all(torch.isfinite(v).all() for v in r0.values())
    rc, err = launch(stage, argv + ["--resume", "latest", "--max-steps", str(steps + 1)], out)
    assert rc == 0, err[-3000:]
    assert CheckpointManager(out / "checkpoints").complete()[-1][0] == steps + 1
    return {k.replace("module.", ""): v for k, v in r0.items()}


@pytest.mark.slow
def test_presto_s_trains_under_ddp_and_fsdp_and_resumes(setup):
    root, _, s_argv = setup
    for mode in ("no", "full"):
        out = root / f"s-{mode}"
        argv = s_argv + ["--set", f"presto_s.loop.fsdp={mode}", "--set", "presto_s.loop.checkpoint_every=3"]
        _train_then_resume("presto_s", argv, out, 6)
        logged = [m for m in read_metrics(out) if "dmd" in m or "gen_loss" in m or "fake_loss" in m]
        assert logged  # the stage's own meters were averaged over the ranks and written


@pytest.mark.slow
def test_presto_l_trains_under_fsdp_like_ddp_and_resumes(setup):
    """Presto-L (budget-conditioned DiT with its self-teacher) under full sharding: the same weights
    on both ranks, within 1e-5 of DDP at the same global batch, and an exact resume."""
    root, _, s_argv = setup
    l_argv = [a.replace("presto_s.", "presto_l.") for a in s_argv]
    finals = {}
    for mode in ("no", "full"):
        out = root / f"l-{mode}"
        argv = l_argv + ["--set", f"presto_l.loop.fsdp={mode}", "--set", "presto_l.loop.checkpoint_every=2"]
        finals[mode] = _train_then_resume("presto_l", argv, out, 3)
    _close(finals["no"], finals["full"])


@pytest.mark.slow
def test_presto_ls_layer_dropped_generator_trains_under_fsdp(setup):
    """Presto-LS's generator drops a different number of blocks for each sample's sigma; under
    full sharding every process runs the blocks of the smallest count of all (run_at_drop), so the
    collectives line up: no hang, the same weights on both ranks, and a resume."""
    import dataclasses

    from tests.factory import perturb

    root, _, s_argv = setup
    b, _ = ckpt.load_component(root / "base")
    lcfg = dataclasses.replace(b.cfg, budget_conditioning=True, drop_mode="shifted")
    pl = DiT(lcfg)
    pl.load_state_dict(b.state_dict(), strict=False)
    perturb(pl.budget_embed, 3, 0.05), perturb(pl.budget_ada, 4, 0.05)
    ckpt.save_component(root / "presto_l", pl, lcfg, meta={"edm": {"sigma_data": 0.5}})
    argv = [a.replace("presto_s.", "presto_ls.") for a in s_argv] + [
        "--set", f"presto_ls.generator_model={root / 'presto_l'}", "--set", "presto_ls.loop.fsdp=full",
        "--set", "presto_ls.loop.checkpoint_every=3"]
    out = root / "ls-full"
    _train_then_resume("presto_ls", argv, out, 6)
    assert any(m.get("gen_loss") is not None or "dmd" in m for m in read_metrics(out))  # generator turns ran


@pytest.mark.slow
def test_vae_with_its_gan_trains_under_fsdp_like_ddp(setup):
    """The VAE stage (VAE + discriminator, two optimizers, GAN from step 1) fully sharded: the same
    weights on both ranks, within 1e-5 of DDP, evaluation and export from gathered weights, and
    a resume."""
    root, _, s_argv = setup
    corpus = s_argv[s_argv.index("--set") + 1].split("=", 1)[1]
    finals = {}
    for mode in ("no", "full"):
        out = root / f"vae-{mode}"
        argv = ["--config", str(CONFIG), "--set", f"data.root={corpus}", "--set", f"vae.loop.fsdp={mode}"]
        finals[mode] = _train_then_resume("vae", argv, out, 3)
        assert (out / "export" / "vae" / "model.safetensors").is_file()
    _close(finals["no"], finals["full"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["no", "full"])
def test_sigterm_to_one_rank_checkpoints_and_stops_both(setup, mode):
    root, common, _ = setup
    out = root / f"stop-{mode}"

    def kill_rank_1(proc):
        pid_file = out / "pid_rank1"
        deadline = time.time() + 120
        while time.time() < deadline and not (pid_file.is_file() and read_metrics(out)):
            time.sleep(0.2)  # until rank 1 trains
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        kill_rank_1.sent = time.time()

    argv = common + ["--max-steps", "100000", "--set", "base.loop.batch_size=2", "--set", f"base.loop.fsdp={mode}",
                     "--set", "base.loop.checkpoint_every=100000"]
    rc, err = launch("base", argv, out, on_start=kill_rank_1)
    assert time.time() - kill_rank_1.sent < 30
    assert rc != 0 and err.count("exitcode  : 4") + err.count("exitcode: 4") >= 1, err[-3000:]
    assert "stopped by" in err and "--resume latest" in err
    ckpts = CheckpointManager(out / "checkpoints").complete()
    assert len(ckpts) == 1  # one complete checkpoint, of the step both ranks stopped after
    assert ckpts[0][0] == read_metrics(out)[-1]["step"]


def test_a_second_run_into_a_live_folder_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from train.infra.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(60)"), str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(RunLockedError, match=rf"process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # the holder is gone: its lock went with it
    lock.release()


def test_launcher_mixed_precision_is_honoured_or_refused():
    assert resolve_mixed_precision("auto", True, "bf16") == "bf16"
    assert resolve_mixed_precision("bf16", True, "no") == "bf16"  # accelerate's default says nothing
    assert resolve_mixed_precision("no", True, None) == "no"
    with pytest.raises(ConfigError, match="--mixed_precision fp16 but loop.mixed_precision is 'bf16'"):
        resolve_mixed_precision("bf16", True, "fp16")


def _main():  # under torchrun: python -m tests.train.infra.test_scaling <stage> argv...
    import importlib

    from train.infra import run as run_mod
    from train.infra import sharding

    stage, argv = sys.argv[1], sys.argv[2:]
    out = Path(argv[argv.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"pid_rank{rank}").write_text(str(os.getpid()))
    finish = run_mod.Run.finish

    def recording_finish(self, export=None):
        params = {}
        for i, m in enumerate(self._models):
            for name, p in m.named_parameters():
                params[f"{i}.{name}"] = sharding.full(p.detach()).clone()
        torch.save(params, out / f"params_rank{rank}.pt")
        return finish(self, export)

    run_mod.Run.finish = recording_finish
    sys.exit(importlib.import_module(f"train.{stage}").main(argv))


if __name__ == "__main__":
    _main()

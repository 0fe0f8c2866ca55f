"""Shared training infrastructure (train/infra/run.py, train/infra/checkpointing.py) on a toy stage: typed
configs, exact resume, atomic checkpoints, the NaN guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from presto_core.dit import DiTConfig
from tests.fixtures import CONFIGS, REPO
from train.diffusion.configs import BaseStageConfig
from train.clap import ClapStageConfig
from train.infra.checkpointing import EMA, CheckpointManager, read_metrics
from train.infra.config import ConfigError, DataConfig, LoopConfig, from_dict, load_config, parse_args, read_config_file
from train.infra.run import EXIT_NONFINITE, EXIT_STOPPED, NonFiniteError, Run, run_main

# ---------------------------------------------------------------------------------------------
# Configs


def test_configs_parse_and_reject_unknown_keys(tmp_path):
    for scale in ("test", "tiny", "paper"):
        path = CONFIGS / f"{scale}.json"
        _, base, name = load_config(path, "base", BaseStageConfig)
        _, clap, _ = load_config(path, "clap", ClapStageConfig)
        assert name == scale and base.model.text_dim == clap.model.text_dim
        assert set(read_config_file(path)) >= {"name", "data", "vae", "base", "clap"}
    _, paper, _ = load_config(CONFIGS / "paper.json", "base", BaseStageConfig)
    assert paper.model == DiTConfig.paper() and paper.loop.batch_size == 14 and paper.loop.lr == 1e-4
    assert (paper.edm.p_mean, paper.edm.p_std, paper.cond_dropout) == (-0.4, 1.0, 0.1)

    _, over, _ = load_config(CONFIGS / "test.json", "base", BaseStageConfig,
                             ["base.loop.lr=0.5", "base.loop.betas=[0.8, 0.9]", "data.root=/x"])
    assert over.loop.lr == 0.5 and over.loop.betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match="unknown keys.*'lrr'"):
        load_config(CONFIGS / "test.json", "base", BaseStageConfig, ["base.loop.lrr=1"])
    with pytest.raises(ConfigError, match="base.loop.batch_size: expected an integer"):
        load_config(CONFIGS / "test.json", "base", BaseStageConfig, ["base.loop.batch_size=2.5"])
    with pytest.raises(ConfigError, match="DiTConfig.dim"):
        load_config(CONFIGS / "test.json", "base", BaseStageConfig, ["base.model.dim=65"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bsae": {}}))
    with pytest.raises(ConfigError, match="unknown sections"):
        read_config_file(bad)
    assert from_dict(DataConfig, {"root": "r"}).heldout_split == "heldout"


# ---------------------------------------------------------------------------------------------
# Checkpoint folders and EMA


def test_checkpoint_manager_ignores_partial_and_lagging_pointer(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    assert m.latest() is None and m.resolve("latest") is None
    for step in (2, 4, 6):
        tmp = m.tmp_dir(step)
        tmp.mkdir(parents=True)
        (tmp / "w.bin").write_bytes(b"x")
        m.finalize(tmp, step, {"step": step})
    assert [s for s, _ in m.complete()] == [4, 6] and m.latest().name == "step-00000006"
    m.tmp_dir(8).mkdir()  # a run killed while writing step 8
    assert m.latest().name == "step-00000006"
    (tmp_path / "latest").write_text("step-00000004\n")  # killed between rename and pointer update
    assert m.latest().name == "step-00000006"
    m.clean_partial()
    assert not m.tmp_dir(8).exists()
    with pytest.raises(FileNotFoundError):
        m.resolve("8")


def test_ema_tracks_and_round_trips(tmp_path):
    lin = torch.nn.Linear(3, 2)
    ema = EMA(lin, decay=0.5, warmup=False)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    assert torch.allclose(ema.shadow["weight"], before["weight"] + 0.5)
    ema.save(tmp_path / "e.safetensors")
    other = EMA(torch.nn.Linear(3, 2), decay=0.5)
    other.load(tmp_path / "e.safetensors")
    assert other.updates == 1 and torch.equal(other.shadow["weight"], ema.shadow["weight"])


# ---------------------------------------------------------------------------------------------
# A toy stage on the real Run


@dataclass
class ToyConfig:
    loop: LoopConfig = field(default_factory=LoopConfig)


class ToyData(torch.utils.data.Dataset):
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return torch.full((4,), float(i) + 0.1 * self.epoch)


def toy_train(argv=None):
    args = parse_args("base", argv)
    _, cfg, name = load_config(args.config, "base", ToyConfig, args.overrides)
    run = Run("base", cfg.loop, args, config_name=name)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = run.adam(model.parameters())
    sched = run.lr_schedule(opt)
    model, opt = run.prepare(model, opt)
    ema = run.ema("model", model)
    run.restore()
    for x in run.batches(ToyData()):
        noise = torch.randn(x.shape[0], generator=run.generator())
        loss = ((model(x).squeeze(-1) - x.mean(-1) - noise) ** 2).mean()
        if run.step == 2 and os.environ.get("TOY_NAN_RANK") == str(run.accelerator.process_index):
            loss = loss * float("nan")  # only one process sees it: all must stop together
        if str(run.step) == os.environ.get("TOY_SIGTERM_AT_STEP"):
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. a scheduler or `kill` stopping the run mid-step
        run.end_step(loss=loss, grad_norm=run.backward(loss, model, opt, sched))
        if os.environ.get("TOY_LOG_AFTER"):
            run.log(after_step=run.step)  # like a stage's held-out loss, logged after end_step
        if str(run.step) == os.environ.get("TOY_SIGTERM_AFTER_STEP"):
            os.kill(os.getpid(), signal.SIGTERM)  # arrives after the step's checkpoint decision
    run.finish()
    return run.unwrap(model).state_dict(), ema.shadow


@pytest.fixture
def toy_config(tmp_path):
    path = tmp_path / "toy.json"
    loop = {"max_steps": 7, "batch_size": 3, "lr": 0.01, "warmup_steps": 3, "checkpoint_every": 2,
            "keep_checkpoints": 2, "log_every": 1, "mixed_precision": "no", "ema_decay": 0.9}
    path.write_text(json.dumps({"name": "toy", "base": {"loop": loop}}))
    return path


def test_resume_is_exact(toy_config, tmp_path):
    ref_w, ref_ema = toy_train(["--config", str(toy_config), "--out", str(tmp_path / "a")])
    toy_train(["--config", str(toy_config), "--out", str(tmp_path / "b"), "--max-steps", "3"])
    assert read_metrics(tmp_path / "b")[-1]["step"] == 3
    w, e = toy_train(["--config", str(toy_config), "--out", str(tmp_path / "b"), "--resume", "latest"])
    for k in ref_w:
        assert torch.equal(ref_w[k], w[k]), k
        assert torch.equal(ref_ema[k], e[k]), k
    la, lb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [m["step"] for m in lb] == list(range(1, 8))
    assert [m["loss"] for m in la] == [m["loss"] for m in lb]
    assert la[0]["lr/0"] < la[3]["lr/0"] == 0.01  # warm-up
    with pytest.raises(FileExistsError, match="--resume latest"):
        toy_train(["--config", str(toy_config), "--out", str(tmp_path / "b")])


def test_sigterm_checkpoints_the_current_step_and_resumes_exactly(toy_config, tmp_path, monkeypatch):
    ref_w, ref_ema = toy_train(["--config", str(toy_config), "--out", str(tmp_path / "a")])
    before = signal.getsignal(signal.SIGTERM)
    argv = ["--config", str(toy_config), "--out", str(tmp_path / "b")]
    monkeypatch.setenv("TOY_SIGTERM_AT_STEP", "2")
    assert run_main(toy_train, argv) == EXIT_STOPPED
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are only ours while training
    # step 3 is not a checkpoint_every (2) multiple: it was written because of the signal
    assert [s for s, _ in CheckpointManager(tmp_path / "b" / "checkpoints").complete()] == [2, 3]
    assert read_metrics(tmp_path / "b")[-1]["step"] == 3
    monkeypatch.delenv("TOY_SIGTERM_AT_STEP")
    w, e = toy_train(argv + ["--resume", "latest"])
    for k in ref_w:
        assert torch.equal(ref_w[k], w[k]) and torch.equal(ref_ema[k], e[k]), k


def test_stopping_keeps_what_the_stage_logs_after_end_step(toy_config, tmp_path, monkeypatch):
    ref_w, _ = toy_train(["--config", str(toy_config), "--out", str(tmp_path / "a")])
    argv = ["--config", str(toy_config), "--out", str(tmp_path / "b")]
    monkeypatch.setenv("TOY_LOG_AFTER", "1")
    monkeypatch.setenv("TOY_SIGTERM_AT_STEP", "2")
    assert run_main(toy_train, argv) == EXIT_STOPPED
    assert {"step": 3, "after_step": 3.0} in read_metrics(tmp_path / "b")
    monkeypatch.delenv("TOY_SIGTERM_AT_STEP")
    # a signal during the stage's own post-step code: the step has no periodic checkpoint (5 is odd),
    # so one is written before stopping
    monkeypatch.setenv("TOY_SIGTERM_AFTER_STEP", "5")
    assert run_main(toy_train, argv + ["--resume", "latest"]) == EXIT_STOPPED
    assert CheckpointManager(tmp_path / "b" / "checkpoints").complete()[-1][0] == 5
    assert {"step": 5, "after_step": 5.0} in read_metrics(tmp_path / "b")
    monkeypatch.delenv("TOY_SIGTERM_AFTER_STEP")
    w, _ = toy_train(argv + ["--resume", "latest"])
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    assert [m["step"] for m in read_metrics(tmp_path / "b") if "after_step" in m] == list(range(1, 8))


def _flip_byte(path: Path, at: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(toy_config, tmp_path, capsys, damage):
    ref_w, ref_ema = toy_train(["--config", str(toy_config), "--out", str(tmp_path / "a")])
    argv = ["--config", str(toy_config), "--out", str(tmp_path / "b")]
    toy_train(argv + ["--max-steps", "5"])
    ckpts = CheckpointManager(tmp_path / "b" / "checkpoints")
    assert [s for s, _ in ckpts.complete()] == [4, 5]
    bad = ckpts.final_dir(5) / "model.safetensors"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:100])
    elif damage == "flip":
        _flip_byte(bad)
    else:
        bad.unlink()
    capsys.readouterr()
    # naming the damaged checkpoint explicitly stops with exit 2 and the file's name
    assert run_main(toy_train, argv + ["--resume", "5"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint error" in err and "model.safetensors" in err and "Traceback" not in err
    w, e = toy_train(argv + ["--resume", "latest"])
    err = capsys.readouterr().err
    assert "step-00000005 is damaged" in err and str(bad) in err and "resumed at step 4" in err
    for k in ref_w:  # resumed exactly from step 4
        assert torch.equal(ref_w[k], w[k]) and torch.equal(ref_ema[k], e[k]), k


def test_every_checkpoint_damaged_is_exit_2(toy_config, tmp_path, capsys):
    argv = ["--config", str(toy_config), "--out", str(tmp_path / "b")]
    toy_train(argv + ["--max-steps", "4"])
    for _, path in CheckpointManager(tmp_path / "b" / "checkpoints").complete():
        _flip_byte(path / "optimizer.bin", at=40)
    assert run_main(toy_train, argv + ["--resume", "latest"]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and "optimizer.bin" in err


def test_disk_full_while_checkpointing_is_one_clear_line_and_keeps_the_previous(toy_config, tmp_path, capsys,
                                                                                monkeypatch):
    import accelerate

    real = accelerate.Accelerator.save_state

    def full_at_step_4(self, output_dir=None, **kw):
        if "00000004" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            # what torch's serializer raises on a short write
            raise RuntimeError("[enforce fail at inline_container.cc:659] . unexpected pos 4864 vs 4752")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", full_at_step_4)
    argv = ["--config", str(toy_config), "--out", str(tmp_path / "b")]
    assert run_main(toy_train, argv) == 2
    err = capsys.readouterr().err
    root = tmp_path / "b" / "checkpoints"
    assert "the disk is full" in err and str(root) in err and "step-00000002 is intact" in err
    assert "Traceback" not in err
    ckpts = CheckpointManager(root)
    assert [s for s, _ in ckpts.complete()] == [2] and not list(root.glob(".tmp-*"))
    monkeypatch.setattr(accelerate.Accelerator, "save_state", real)
    toy_train(argv + ["--resume", "latest"])
    assert [s for s, _ in ckpts.complete()] == [6, 7]


def test_nan_guard_stops_without_saving(toy_config, tmp_path):
    out = tmp_path / "n"
    argv = ["--config", str(toy_config), "--out", str(out), "--set", "base.loop.debug_nan_at_step=3"]
    with pytest.raises(NonFiniteError, match="non-finite loss at step 4"):
        toy_train(argv)
    ckpts = CheckpointManager(out / "checkpoints")
    assert [s for s, _ in ckpts.complete()] == [2]
    assert run_main(toy_train, argv[:4] + ["--resume", "latest", "--set", "base.loop.debug_nan_at_step=5"]) \
        == EXIT_NONFINITE
    assert [s for s, _ in ckpts.complete()] == [2, 4]
    w, _ = toy_train(argv[:4] + ["--resume", "latest"])
    assert all(torch.isfinite(v).all() for v in w.values())


@pytest.mark.slow
def test_two_processes_ddp_resume_and_nan_guard(toy_config, tmp_path):
    """The same code under torchrun with 2 CPU processes (gloo DDP): exact resume, and a NaN seen
    by one process only stops both with the NaN exit status instead of hanging."""
    repo = REPO

    def launch(out, *extra, env=None):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tests.train.infra.test_run", "--config", str(toy_config), "--out", str(out), "--cpu", *extra]
        # A new session, so that a hang can be cleaned up with the worker processes too.
        proc = subprocess.Popen(cmd, cwd=repo, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        return proc.returncode, err.decode()

    for out, extra in (("a", ()), ("b", ("--max-steps", "3")), ("b", ("--resume", "latest"))):
        rc, err = launch(tmp_path / out, *extra)
        assert rc == 0, err[-3000:]
    from safetensors.torch import load_file

    for name in ("model.safetensors", "ema_model.safetensors"):
        wa = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000007" / name))
        wb = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000007" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "checkpoints" / "step-00000007" / "random_states_1.pkl").is_file()
    rc, err = launch(tmp_path / "n", env={"TOY_NAN_RANK": "1"})
    assert rc != 0 and "non-finite loss at step 3" in err
    assert [s for s, _ in CheckpointManager(tmp_path / "n" / "checkpoints").complete()] == [2]


if __name__ == "__main__":  # the toy stage, for the torchrun test above
    sys.exit(run_main(toy_train))


def test_shared_section_fills_each_stage_and_the_stage_wins(tmp_path):
    from train.diffusion.configs import PrestoSStageConfig
    from train.vae import VAEStageConfig

    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "shared": {"edm": {"rho": 5.0, "sigma_max": 40.0}, "vae": "V", "crop_seconds": 3.0},
        "base": {"edm": {"rho": 9.0}}, "presto_s": {"crop_seconds": 2.0}, "vae": {}, "clap": {}}))
    _, base, _ = load_config(path, "base", BaseStageConfig)
    assert (base.edm.rho, base.edm.sigma_max, base.vae, base.crop_seconds) == (9.0, 40.0, "V", 3.0)
    _, ps, _ = load_config(path, "presto_s", PrestoSStageConfig)
    assert (ps.edm.rho, ps.crop_seconds, ps.vae) == (5.0, 2.0, "V")
    _, vae, _ = load_config(path, "vae", VAEStageConfig)  # no field named vae or edm: only crop_seconds applies
    assert vae.crop_seconds == 3.0
    _, over, _ = load_config(path, "base", BaseStageConfig, ["shared.vae=W", "base.edm.p_std=2"])
    assert over.vae == "W" and (over.edm.rho, over.edm.p_std) == (9.0, 2.0)
    path.write_text(json.dumps({"shared": [1], "base": {}}))
    with pytest.raises(ConfigError, match="'shared' section must be an object"):
        load_config(path, "base", BaseStageConfig)


def test_every_shared_value_of_the_shipped_configs_is_used():
    from dataclasses import fields

    from train.diffusion.configs import PrestoLSStageConfig, PrestoLStageConfig, PrestoSStageConfig
    from train.vae import VAEStageConfig

    classes = (VAEStageConfig, BaseStageConfig, ClapStageConfig, PrestoLStageConfig, PrestoSStageConfig,
               PrestoLSStageConfig)
    known = {f.name for cls in classes for f in fields(cls)}
    for scale in ("test", "tiny", "paper"):
        shared = read_config_file(CONFIGS / f"{scale}.json").get("shared", {})
        assert shared and set(shared) <= known, (scale, set(shared) - known)

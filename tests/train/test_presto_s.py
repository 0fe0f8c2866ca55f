"""train/presto_s.py (Algorithm 1) on a micro DiT, a random micro VAE and a synthetic corpus: the turn
ratio and which networks each turn updates (by parameter snapshots), the noise-distribution
switches, the DMD term and its DMD-GAN ablation, exact resume, and the exported ping-pong variant."""

from __future__ import annotations

import json
import math

import pytest
import torch

from presto_core import checkpoint as ckpt
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import EDMConfig, Precond, inference_quantile, karras_sigmas, sample_sigmas
from tests.factory import perturb
from tests.fixtures import CONFIGS, REPO, logged_values, make_corpus
from train import presto_s
from train.diffusion import configs, distill, losses
from train.infra.checkpointing import CheckpointManager, read_metrics
from train.infra.config import from_dict, read_config_file
from train.diffusion.gan_head import GanHead, GanHeadConfig
from train.infra.run import Run

CONFIG = CONFIGS / "test.json"
STEPS = 12  # the test config's max_steps; 5 fake turns per generator turn -> generator turns at 5 and 11


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Corpus, a random VAE and a random (perturbed, so not zero-output) 'trained' base DiT."""
    root = tmp_path_factory.mktemp("presto_s")
    corpus = make_corpus(root / "corpus")
    raw = json.loads(CONFIG.read_text())
    torch.manual_seed(0)
    vcfg = VAEConfig(**raw["vae"]["model"])
    ckpt.save_component(root / "vae", AudioVAE(vcfg), vcfg)
    dcfg = DiTConfig(**raw["base"]["model"])
    ckpt.save_component(root / "base", perturb(DiT(dcfg), 1, 0.05), dcfg, meta={"edm": {"sigma_data": 0.5}, "step": 1})
    argv = ["--config", str(CONFIG), "--set", f"data.root={corpus}", "--set", f"presto_s.vae={root / 'vae'}",
            "--set", f"presto_s.base_model={root / 'base'}", "--set", f"presto_s.latent_cache={root / 'cache'}"]
    return root, argv


def _cfg(**over) -> configs.PrestoSStageConfig:
    raw = read_config_file(CONFIG)["presto_s"]
    return from_dict(configs.PrestoSStageConfig, {**raw, **over}, "presto_s")


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


@pytest.fixture(scope="module")
def reference(setup):
    """An uninterrupted 12-iteration run; parameters of every network snapshotted after each step."""
    root, argv = setup
    nets, snaps = {}, []
    build, end_step = distill.build_networks, Run.end_step

    def spy_build(cfg, generator_init=None, stage="presto_s"):
        gen, psi, real, gcfg = build(cfg, generator_init, stage)
        nets.update(gen=gen, fake=psi.score, head=psi.head, real=real)
        snaps.append({k: _flat(v) for k, v in nets.items()})
        return gen, psi, real, gcfg

    def spy_end_step(self, **metrics):
        out = end_step(self, **metrics)
        snaps.append({k: _flat(v) for k, v in nets.items()})
        snaps[-1]["ema_updates"] = self._emas["generator"][0].updates
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(distill, "build_networks", spy_build)
    mp.setattr(Run, "end_step", spy_end_step)
    try:
        assert presto_s.main(argv + ["--out", str(root / "ref")]) == 0
    finally:
        mp.undo()
    return root / "ref", snaps


def test_turn_ratio_and_which_networks_change(reference):
    _, snaps = reference
    assert len(snaps) == STEPS + 1
    gen_turns, fake_turns = [], []
    for i in range(STEPS):
        before, after = snaps[i], snaps[i + 1]
        changed = {k for k in ("gen", "fake", "head", "real") if not torch.equal(before[k], after[k])}
        assert "real" not in changed  # the real score model never changes
        if changed == {"gen"}:
            gen_turns.append(i)
        else:
            assert changed == {"fake", "head"}, (i, changed)
            fake_turns.append(i)
    assert gen_turns == [5, 11] and len(fake_turns) == 10  # 5 fake/discriminator updates per generator update
    # The generator's EMA averages once per generator update, not once per iteration.
    assert [snaps[i + 1]["ema_updates"] for i in range(STEPS)] == [0] * 5 + [1] * 6 + [2]
    assert all(distill.is_generator_turn(i, 5) == (i in gen_turns) for i in range(STEPS))
    assert torch.equal(snaps[0]["real"], snaps[-1]["real"])


def test_logs_the_appendix_a4_curves(reference):
    run_dir, _ = reference
    metrics = read_metrics(run_dir)
    turns = [m for m in metrics if "generator_turn" in m]
    assert [m["generator_turn"] for m in turns] == [float(distill.is_generator_turn(i, 5)) for i in range(STEPS)]
    merged = {}
    for m in metrics:
        merged.update({k: v for k, v in m.items() if k != "step"})
    for key in ("gen_loss", "disc_loss", "dmd_grad_norm", "dmd_loss", "disc_real_acc", "fake_dsm_loss",
                "gen_grad_norm", "fake_grad_norm"):
        vals = [m[key] for m in metrics if key in m]
        assert vals and all(math.isfinite(v) for v in vals), key
    assert all(0.0 <= m["disc_real_acc"] <= 1.0 for m in metrics if "disc_real_acc" in m)
    assert [m["step"] for m in metrics if "gen_loss" in m] == [6, 12]


def test_noise_distributions_follow_the_config():
    for kind in ("train", "inference"):
        cfg = _cfg(**{f"p_{r}": kind for r in configs.NOISE_ROLES})
        for role in configs.NOISE_ROLES:
            got = distill.draw_sigmas(cfg, role, 4000, torch.Generator().manual_seed(3))
            want = sample_sigmas(kind, 4000, EDMConfig(), torch.Generator().manual_seed(3))
            assert torch.equal(got, want), (kind, role)
    cfg = _cfg()  # defaults: p_gen inference, the others train
    s = distill.draw_sigmas(cfg, "gen", 4000, torch.Generator().manual_seed(0))
    t = distill.draw_sigmas(cfg, "dmd", 4000, torch.Generator().manual_seed(0))
    assert (s > 10).float().mean() > 0.1 and (t > 10).float().mean() < 0.02  # the ramp has a heavy high end
    assert abs(s.median() / inference_quantile(0.5) - 1) < 0.1
    assert abs(t.log().mean() + 0.4) < 0.1 and abs(t.log().std() - 1.0) < 0.1
    d = distill.draw_sigmas(_cfg(discrete_generator=True), "gen", 400, torch.Generator().manual_seed(0))
    levels = karras_sigmas(4)[:-1].float()
    assert set(d.tolist()) == set(levels.tolist())
    with pytest.raises(ValueError):
        _cfg(p_dsm="uniform")


def _nets(setup, **over):
    root, _ = setup
    cfg = _cfg(base_model=str(root / "base"), **over)
    torch.manual_seed(0)
    gen, psi, real, _ = distill.build_networks(cfg)
    return cfg, gen, psi, real


def _batch(b=2, t=12):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(b, 8, t, generator=g) * 0.5
    cond = dict(text=torch.randn(b, 3, 384, generator=g), text_mask=torch.ones(b, 3, dtype=torch.bool),
                bpm=torch.tensor([90.0, 120.0][:b]), uncond=False)
    return x, cond


def test_dmd_term_and_the_dmd_gan_ablation(setup):
    cfg, gen, psi, real = _nets(setup)
    x, cond = _batch()
    psi.requires_grad_(False)
    loss, m = distill.generator_turn(cfg, gen, psi, real, x, cond, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and {"dmd_loss", "dmd_grad_norm", "gen_loss"} <= set(m)
    assert torch.allclose(loss, m["dmd_loss"] + cfg.nu_gen * m["gen_loss"])
    loss.backward()
    assert all(p.grad is None for p in list(psi.parameters()) + list(real.parameters()))
    assert all(p.grad is not None for p in gen.parameters() if p.requires_grad and p is not gen.backbone.null_bpm
               and p is not gen.backbone.null_text)

    # the surrogate's gradient w.r.t. x_gen is the normalised DMD gradient (/ numel)
    xg = torch.randn(2, 8, 12, requires_grad=True)
    mu_f, mu_r = torch.randn(2, 8, 12), torch.randn(2, 8, 12)
    grad = losses.dmd_gradient(xg, mu_f, mu_r)
    scale = (xg.detach() - mu_r).abs().mean((1, 2), keepdim=True)
    assert torch.allclose(grad, (mu_f - mu_r) / scale)
    losses.dmd_surrogate(xg, grad).backward()
    assert torch.allclose(xg.grad, grad / grad.numel())

    class NoTeacher(torch.nn.Module):
        def forward(self, *a, **k):
            raise AssertionError("dmd_gan must not query the real score model")

    cfg2, gen2, psi2, _ = _nets(setup, dmd_gan=True)
    psi2.requires_grad_(False)
    loss2, m2 = distill.generator_turn(cfg2, gen2, psi2, NoTeacher(), x, cond, torch.Generator().manual_seed(1))
    assert "dmd_loss" not in m2 and torch.allclose(loss2, cfg2.nu_gen * m2["gen_loss"])


def test_fake_turn_and_head_shapes(setup):
    cfg, gen, psi, _ = _nets(setup)
    x, cond = _batch(t=13)
    loss, m = distill.fake_turn(cfg, gen, psi, x, cond, torch.Generator().manual_seed(2))
    assert torch.isfinite(loss) and {"fake_dsm_loss", "disc_loss", "disc_real_acc"} <= set(m)
    loss.backward()
    assert all(p.grad is None for p in gen.parameters())
    assert all(p.grad is not None for p in psi.head.parameters())
    head = GanHead(64, 2, 16, 2)
    assert head([torch.randn(3, 16, 64), torch.randn(3, 16, 64)]).shape == (3, 1, 4)
    assert GanHeadConfig().resolve_blocks(4) == (2,)


def test_padded_frames_do_not_count(setup):
    from train.diffusion.gan_head import logit_mask

    cfg, gen, psi, real = _nets(setup)
    x, cond = _batch(t=12)
    full, short = torch.tensor([12, 12]), torch.tensor([12, 7])
    mu_f, mu_r = torch.randn(2, 8, 12), torch.randn(2, 8, 12)
    grad = losses.dmd_gradient(x, mu_f, mu_r, losses.frame_mask(short, 12))
    assert grad[1, :, 7:].abs().sum() == 0 and grad[1, :, :7].abs().sum() > 0
    assert torch.allclose(losses.dmd_gradient(x, mu_f, mu_r, losses.frame_mask(full, 12)),
                          losses.dmd_gradient(x, mu_f, mu_r))
    assert logit_mask(short, 12, 2).tolist() == [[[1.0, 1.0, 1.0]], [[1.0, 1.0, 0.0]]]
    for turn in (distill.fake_turn, lambda *a, **k: distill.generator_turn(a[0], a[1], a[2], real, *a[3:], **k)):
        a, ma = turn(cfg, gen, psi, x, cond, torch.Generator().manual_seed(1))
        b, mb = turn(cfg, gen, psi, x, cond, torch.Generator().manual_seed(1), length=full)
        c, _ = turn(cfg, gen, psi, x, cond, torch.Generator().manual_seed(1), length=short)
        assert torch.allclose(a, b) and not torch.allclose(a, c) and torch.isfinite(c)


def test_resume_reproduces_the_uninterrupted_run(setup, reference):
    root, argv = setup
    ref_dir, _ = reference
    out = root / "resumed"
    assert presto_s.main(argv + ["--out", str(out), "--max-steps", "6"]) == 0
    assert presto_s.main(argv + ["--out", str(out), "--resume", "latest"]) == 0


    assert logged_values(out) == logged_values(ref_dir)
    a = CheckpointManager(out / "checkpoints").final_dir(STEPS)
    b = CheckpointManager(ref_dir / "checkpoints").final_dir(STEPS)
    from safetensors.torch import load_file

    files = sorted(p.name for p in b.glob("*.safetensors"))
    assert "ema_generator.safetensors" in files and len(files) >= 3
    for name in files:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_export_loads_and_generates_with_pingpong(reference):
    run_dir, _ = reference
    folder = run_dir / "model"
    index = ckpt.read_index(folder)
    assert index["variants"]["presto-s"] == {"component": "presto_s", "sampler": "pingpong", "steps": 4,
                                             "guidance": {"kind": "none"}}
    assert {"vae", "base", "presto_s"} <= set(index["components"])
    dit, meta = ckpt.load_component(folder / "presto_s", index["components"]["presto_s"]["sha256"])
    assert isinstance(dit, DiT) and meta["step"] == STEPS

    from presto_core.pipeline import PrestoPipeline

    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32", variants=["presto-s"])
    prompts = json.loads((folder / index["prompts"]).read_text())
    result = pipe.generate(prompt=prompts[0]["prompt"], bpm=prompts[0]["bpm"], duration=1.0, seed=0,
                           num_clips=1, variant="presto-s")
    audio = result.clips[0].audio
    assert audio.shape == (16000,) and bool(torch.isfinite(torch.as_tensor(audio)).all())


def test_generator_model_continues_an_earlier_export(setup, reference):
    """presto_s.generator_model starts phi from an earlier Presto-S export (real and fake scores
    still from the base); a DiT of another architecture is refused before training."""
    root, argv = setup
    run_dir, _ = reference
    earlier = run_dir / "export" / "presto_s"
    seen = {}
    build = distill.build_networks

    def spy_build(cfg, generator_init=None, stage="presto_s"):
        nets = build(cfg, generator_init, stage)
        seen.update(gen=_flat(nets[0]), fake=_flat(nets[1].score), real=_flat(nets[2]))
        return nets

    mp = pytest.MonkeyPatch()
    mp.setattr(distill, "build_networks", spy_build)
    try:
        assert presto_s.main(argv + ["--out", str(root / "cont"), "--max-steps", "7",
                                     "--set", f"presto_s.generator_model={earlier}",
                                     "--set", "presto_s.fake_warmup_steps=2"]) == 0
    finally:
        mp.undo()
    start = ckpt.load_component(earlier)[0]
    assert torch.equal(seen["gen"], _flat(Precond(start, 0.5)))
    assert torch.equal(seen["fake"], seen["real"]) and not torch.equal(seen["gen"], seen["real"])
    # 2 fake-only warm-up iterations, then 5 fake turns: no generator turn in 7 iterations, so the
    # exported generator is still exactly the one it continued from.
    turns = [m["generator_turn"] for m in read_metrics(root / "cont") if "generator_turn" in m]
    assert turns == [0.0] * 7
    assert torch.equal(_flat(ckpt.load_component(root / "cont" / "export" / "presto_s")[0]), _flat(start))
    assert [distill.is_generator_turn(i, 5, 2) for i in range(14)] == [i == 7 or i == 13 for i in range(14)]
    raw = json.loads(CONFIG.read_text())
    other = DiTConfig(**{**raw["base"]["model"], "depth": raw["base"]["model"]["depth"] + 1})
    ckpt.save_component(root / "deeper", DiT(other), other)
    assert presto_s.main(argv + ["--out", str(root / "cont2"), "--max-steps", "1",
                                 "--set", f"presto_s.generator_model={root / 'deeper'}"]) == 2
    assert not (root / "cont2" / "checkpoints").exists()


def test_a_beat_grid_base_distils_a_beat_grid_generator(setup, tmp_path, monkeypatch):
    """From a grid base, every network is a grid DiT and each gets the crop's beat positions."""
    root, argv = setup
    raw = json.loads(CONFIG.read_text())
    dcfg = DiTConfig(**{**raw["base"]["model"], "beat_grid": True})
    grid = tmp_path / "grid_base"
    ckpt.save_component(grid, perturb(DiT(dcfg), 2, 0.05), dcfg, meta={"edm": {"sigma_data": 0.5}, "step": 1})
    seen = []
    real_turn = distill.fake_turn

    def spy(cfg, gen, psi, x_real, cond, *a, **k):
        seen.append(cond.get("beats"))
        return real_turn(cfg, gen, psi, x_real, cond, *a, **k)

    monkeypatch.setattr(distill, "fake_turn", spy)
    out = tmp_path / "run"
    assert presto_s.main(argv + ["--out", str(out), "--max-steps", "2", "--set", f"presto_s.base_model={grid}"]) == 0
    assert len(seen) == 2 and all(b is not None and b.ndim == 2 for b in seen)
    step = seen[0][0, 1] - seen[0][0, 0]  # beats per latent frame at the crop's BPM
    assert torch.allclose(seen[0][0, 1:] - seen[0][0, :-1], step.expand(seen[0].shape[1] - 1), atol=1e-4)
    gen, _ = ckpt.load_component(out / "export" / "presto_s")
    assert gen.cfg.beat_grid


def test_config_sections_parse():
    for name in ("tiny", "paper", "test"):
        raw = read_config_file(CONFIGS / f"{name}.json")
        cfg = from_dict(configs.PrestoSStageConfig, raw["presto_s"], "presto_s")
        # The paper's teacher guidance; the tiny model's teacher is better at w = 2 (train/README.md).
        assert cfg.fake_updates_per_gen == 5 and cfg.guidance == (2.0 if name == "tiny" else 4.5)
        assert cfg.p_gen == "inference" and cfg.p_dmd == cfg.p_dsm == cfg.p_gan == "train"
    for name in ("tiny", "paper", "test"):
        from train.presto_ls import PrestoLSStageConfig

        raw = read_config_file(CONFIGS / f"{name}.json")
        assert from_dict(PrestoLSStageConfig, raw["presto_ls"], "presto_ls").schedule == (12, 8, 8, 0, 0)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(setup):
    from train.infra.run import EXIT_NONFINITE

    root, argv = setup
    out = root / "nan"
    assert presto_s.main(argv + ["--out", str(out), "--set", "presto_s.loop.debug_nan_at_step=5"]) == EXIT_NONFINITE
    assert [s for s, _ in CheckpointManager(out / "checkpoints").complete()][-1] == 4
    assert not (out / "model").exists()


def test_missing_or_wrong_component_folders_are_config_errors(setup, capsys):
    """One loader for every stage's DiT paths: a missing folder or a non-DiT component exits 2 with
    one line naming the config key, before any training."""
    from train import presto_l, presto_ls

    root, argv = setup
    missing = root / "no-such-model"
    assert presto_s.main(argv + ["--out", str(root / "e1"), "--set", f"presto_s.base_model={missing}"]) == 2
    assert f"presto_s.base_model={missing} is not a component folder" in capsys.readouterr().err
    assert presto_s.main(argv + ["--out", str(root / "e2"), "--set", f"presto_s.base_model={root / 'vae'}"]) == 2
    assert "is not a DiT component" in capsys.readouterr().err
    l_argv = [a.replace("presto_s.", "presto_l.") for a in argv]
    assert presto_l.main(l_argv + ["--out", str(root / "e3"), "--set", f"presto_l.base_model={missing}"]) == 2
    assert "presto_l.base_model=" in capsys.readouterr().err
    ls_argv = [a.replace("presto_s.", "presto_ls.") for a in argv]
    assert presto_ls.main(ls_argv + ["--out", str(root / "e4"), "--set", f"presto_ls.generator_model={missing}"]) == 2
    assert "presto_ls.generator_model=" in capsys.readouterr().err
    assert not any((root / f"e{i}" / "checkpoints").exists() for i in range(1, 5))


# ---------------------------------------------------------------------------------------------
# Presto-LS


def test_presto_ls_generator_drops_layers_and_scores_stay_base(setup):
    import dataclasses

    from presto_core.budget import PRESTO_LS, DropSchedule
    from train import presto_ls

    root, argv = setup
    base, _ = ckpt.load_component(root / "base")
    lcfg = dataclasses.replace(base.cfg, budget_conditioning=True, drop_mode="shifted")
    torch.manual_seed(2)
    pl = DiT(lcfg)
    pl.load_state_dict(base.state_dict(), strict=False)
    perturb(pl.budget_embed, 3, 0.05), perturb(pl.budget_ada, 4, 0.05)  # a "trained" Presto-L model
    ckpt.save_component(root / "presto_l", pl, lcfg, meta={"edm": {"sigma_data": 0.5}})
    ls_argv = [a.replace("presto_s.", "presto_ls.") for a in argv] + [
        "--set", f"presto_ls.generator_model={root / 'presto_l'}"]

    seen, drops = {}, []
    build, kwargs = distill.build_networks, presto_ls.generator_kwargs

    def spy_build(cfg, generator_init=None, stage="presto_s"):
        nets = build(cfg, generator_init, stage)
        seen.update(gen=nets[0], fake=nets[1].score, real=nets[2])
        return nets

    def spy_kwargs(cfg, gen_cfg):
        fn = kwargs(cfg, gen_cfg)
        return lambda sigma: drops.append((sigma.clone(), fn(sigma)["layers_dropped"])) or fn(sigma)

    mp = pytest.MonkeyPatch()
    mp.setattr(distill, "build_networks", spy_build)
    mp.setattr(presto_ls, "generator_kwargs", spy_kwargs)
    try:
        assert presto_ls.main(ls_argv + ["--out", str(root / "ls"), "--max-steps", "6"]) == 0
    finally:
        mp.undo()
    assert seen["gen"].backbone.cfg.budget_conditioning
    assert not seen["fake"].backbone.cfg.budget_conditioning and not seen["real"].backbone.cfg.budget_conditioning
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in seen["real"].backbone.state_dict().items())
    sched = DropSchedule.scaled(PRESTO_LS, lcfg.depth)
    assert len(drops) == 6 and all(torch.equal(k, sched(s)) for s, k in drops)
    assert any(int(k.max()) > 0 for _, k in drops)  # some high-noise samples really drop blocks

    folder = root / "ls" / "model"
    index = ckpt.read_index(folder)
    assert index["variants"]["presto-ls"] == {"component": "presto_ls", "sampler": "pingpong", "steps": 4,
                                              "guidance": {"kind": "none"}, "drop_schedule": [12, 8, 8, 0, 0]}
    from presto_core.pipeline import PrestoPipeline

    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32", variants=["presto-ls"])
    result = pipe.generate(prompt="a test", bpm=100.0, duration=1.0, seed=0, num_clips=1, variant="presto-ls")
    assert result.clips[0].audio.shape == (16000,)


@pytest.mark.slow
def test_python_m_cli(setup, tmp_path):
    import os
    import subprocess
    import sys

    _, argv = setup
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "train.presto_s", *argv, "--out", str(tmp_path / "cli"), "--max-steps", "2"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert "presto-s" in ckpt.read_index(tmp_path / "cli" / "model")["variants"]
    bad = subprocess.run(cmd[:-2] + ["--set", "presto_s.p_gan=uniform"], cwd=REPO, env=env,
                         capture_output=True, timeout=300)
    assert bad.returncode == 2 and b"p_gan" in bad.stderr

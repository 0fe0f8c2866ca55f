"""Presto-S step distillation, Algorithm 1 of the paper (A.3), shared by the ``presto_s`` and
``presto_ls`` commands: the config, the generator and fake-score turns (pure functions of the
networks and a torch.Generator), the networks' set-up and the training loop. The maths and the
noise distributions are described in train/presto_s.py's module docstring."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from presto_core.dit import DiT
from presto_core.edm import Precond, karras_sigmas, sample_sigmas, weighted_dsm
from train.data.dataset import collate
from train.diffusion.common import crop_beats, dit_config, load_dit, prepare_latent_data
from train.diffusion.configs import NOISE_ROLES, PrestoSStageConfig
from train.diffusion.gan_head import (
    FakeScoreWithHead, GanHead, logit_mask, ls_disc_loss, ls_gen_loss, masked_mean,
)
from train.diffusion.losses import dmd_gradient, dmd_surrogate, frame_mask, guided_real, repeat_cond
from train.diffusion.model_folder import export_stage
from train.infra.run import start_stage
from train.infra.sharding import agreed_drop_floor

# ---------------------------------------------------------------------------------------------
# Pieces of Algorithm 1 (pure functions of the networks and a generator: reused by Presto-LS)


def is_generator_turn(step: int, fake_updates_per_gen: int, fake_warmup_steps: int = 0) -> bool:
    """Iteration ``step`` (0-based) is a generator turn after every ``fake_updates_per_gen`` fake turns,
    counted from the end of the ``fake_warmup_steps`` fake-only iterations."""
    k = step - fake_warmup_steps
    return k >= 0 and (k + 1) % (fake_updates_per_gen + 1) == 0


def draw_sigmas(cfg: PrestoSStageConfig, role: str, n: int, generator=None, device=None) -> torch.Tensor:
    """n sigmas (n,) from p_<role> (role in gen | dmd | dsm | gan) as configured."""
    if role not in NOISE_ROLES:
        raise ValueError(f"role must be one of {NOISE_ROLES}, got {role!r}")
    if role == "gen" and cfg.discrete_generator:
        e = cfg.edm
        levels = karras_sigmas(cfg.discrete_steps, e.sigma_min, e.sigma_max, e.rho)[:-1].float().to(device or "cpu")
        idx = torch.randint(len(levels), (n,), generator=generator, device=device or "cpu")
        return levels[idx]
    return sample_sigmas(getattr(cfg, f"p_{role}"), n, cfg.edm, generator=generator, device=device)


def generate(gen, x_real, sigma, eps, cond, gen_kwargs: Callable | None = None):
    """x_gen = G(x_real + sigma eps, sigma) (extra generator kwargs, e.g. layers_dropped, from
    ``gen_kwargs(sigma)``)."""
    extra = gen_kwargs(sigma) if gen_kwargs else {}
    return gen(x_real + sigma.view(-1, 1, 1) * eps, sigma, **cond, **extra)


def generator_turn(cfg, gen, psi, real, x_real, cond, g, gen_kwargs=None, length=None) -> tuple[torch.Tensor, dict]:
    """Lines 1-10 of Algorithm 1 -> (loss for phi, metrics). psi's parameters must not require grad
    (the caller freezes them), so only the generator gets gradients. ``length`` (B,): valid frames
    of each crop (None: all); padded frames get no DMD gradient and no GAN loss."""
    b, dev = x_real.shape[0], x_real.device
    valid = frame_mask(length, x_real.shape[-1])
    sigma = draw_sigmas(cfg, "gen", b, g, dev)
    eps = torch.randn(x_real.shape, generator=g, device=dev)
    x_gen = generate(gen, x_real, sigma, eps, cond, gen_kwargs)
    s_dmd = draw_sigmas(cfg, "dmd", b, g, dev)
    e_dmd = torch.randn(x_real.shape, generator=g, device=dev)
    s_gan = draw_sigmas(cfg, "gan", b, g, dev)
    e_gan = torch.randn(x_real.shape, generator=g, device=dev)
    x_dmd = x_gen.detach() + s_dmd.view(-1, 1, 1) * e_dmd
    x_gan = x_gen + s_gan.view(-1, 1, 1) * e_gan
    metrics = {}
    if cfg.dmd_gan:
        _, logits = psi(x_gan, s_gan, b, **cond)
        loss = torch.zeros((), device=dev)
    else:
        den, logits = psi(torch.cat([x_dmd, x_gan]), torch.cat([s_dmd, s_gan]), b, **repeat_cond(cond, 2))
        with torch.no_grad():
            mu_real = guided_real(real, x_dmd, s_dmd, cond, cfg.guidance)
            grad = dmd_gradient(x_gen, den[:b].detach(), mu_real, valid)
        loss = dmd_surrogate(x_gen, grad)
        metrics["dmd_loss"] = loss.detach()
        metrics["dmd_grad_norm"] = grad.flatten(1).norm(dim=1).mean()
    gan = ls_gen_loss(logits, logit_mask(length, x_real.shape[-1], cfg.head.downsample))
    metrics["gen_loss"] = gan.detach()
    return loss + cfg.nu_gen * gan, metrics


def fake_turn(cfg, gen, psi, x_real, cond, g, gen_kwargs=None, length=None) -> tuple[torch.Tensor, dict]:
    """Lines 1-3 and 13-18 of Algorithm 1 -> (loss for psi, metrics); x_gen carries no graph.
    ``length`` (B,): valid frames of each crop (None: all); padded frames do not count."""
    b, dev = x_real.shape[0], x_real.device
    sigma = draw_sigmas(cfg, "gen", b, g, dev)
    eps = torch.randn(x_real.shape, generator=g, device=dev)
    with torch.no_grad():
        x_gen = generate(gen, x_real, sigma, eps, cond, gen_kwargs).detach().float()
    s_dsm = draw_sigmas(cfg, "dsm", b, g, dev)
    e_dsm = torch.randn(x_real.shape, generator=g, device=dev)
    s_real = draw_sigmas(cfg, "gan", b, g, dev)
    s_fake = draw_sigmas(cfg, "gan", b, g, dev)
    e_real = torch.randn(x_real.shape, generator=g, device=dev)
    e_fake = torch.randn(x_real.shape, generator=g, device=dev)
    x_in = torch.cat([x_gen + s_dsm.view(-1, 1, 1) * e_dsm, x_gen + s_fake.view(-1, 1, 1) * e_fake,
                      x_real.float() + s_real.view(-1, 1, 1) * e_real])
    den, logits = psi(x_in.to(x_real.dtype), torch.cat([s_dsm, s_fake, s_real]), 2 * b, **repeat_cond(cond, 3))
    # psi learns to denoise the generator's samples: DSM with x_gen as the clean target.
    dsm = weighted_dsm(den[:b], x_gen, s_dsm, cfg.edm.sigma_data, frame_mask(length, x_real.shape[-1]))
    fake_logits, real_logits = logits.chunk(2)
    lmask = logit_mask(length, x_real.shape[-1], cfg.head.downsample)
    disc = ls_disc_loss(fake_logits, real_logits, lmask)
    metrics = {"fake_dsm_loss": dsm.detach(), "disc_loss": disc.detach(),
               "disc_real_acc": masked_mean((real_logits.detach().float() > 0.5).float(), lmask)}
    return dsm + cfg.nu_disc * disc, metrics


class TurnMeter:
    """Averages of turn-specific metrics over a logging interval (each over the steps that had it)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, **metrics):
        for k, v in metrics.items():
            v = float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return out


# ---------------------------------------------------------------------------------------------
# The stage


def build_networks(cfg: PrestoSStageConfig, generator_init: str | None = None, stage: str = "presto_s"):
    """-> (generator Precond, psi FakeScoreWithHead, real Precond frozen, generator DiTConfig).
    The generator starts from ``generator_init`` (default: the base model); real and fake from the base.
    ``stage`` is the config section, named in errors."""
    sd = cfg.edm.sigma_data
    base, _ = load_dit(cfg.base_model, f"{stage}.base_model", sigma_data=sd)
    gen_dit = load_dit(generator_init, f"{stage}.generator_model")[0] if generator_init else DiT(base.cfg)
    if not generator_init:
        gen_dit.load_state_dict(base.state_dict())
    fake = DiT(base.cfg)
    fake.load_state_dict(base.state_dict())
    blocks = cfg.head.resolve_blocks(base.cfg.depth)
    head = GanHead(base.cfg.dim, len(blocks), cfg.head.channels, cfg.head.downsample)
    real = Precond(base, sd).eval().requires_grad_(False)
    return Precond(gen_dit, sd), FakeScoreWithHead(Precond(fake, sd), head, blocks), real, gen_dit.cfg


def _agreeing(gen_kwargs: Callable) -> Callable:
    """``gen_kwargs`` plus the DiT's ``run_at_drop`` agreed over all processes, so that a sharded
    generator runs the same blocks everywhere (see :func:`train.infra.sharding.agreed_drop_floor`)."""
    def kwargs(sigma):
        extra = gen_kwargs(sigma)
        if "layers_dropped" in extra:
            extra = {**extra, "run_at_drop": agreed_drop_floor(torch.as_tensor(extra["layers_dropped"]))}
        return extra
    return kwargs


def train_stage(argv, stage: str, cfg_cls, *, variant: Callable, generator_init: Callable | None = None,
                gen_kwargs: Callable | None = None) -> Path:
    """The Presto-S loop for ``stage`` (presto_s or presto_ls). ``variant(cfg)`` -> the exported
    variant's model_index.json entry; ``generator_init(cfg)`` -> component folder of the generator's
    start (default: the base model); ``gen_kwargs(cfg, gen_cfg)`` -> a function sigma -> extra
    generator kwargs."""
    _, data, cfg, run = start_stage(stage, cfg_cls, argv, find_unused_parameters=True)
    lat = prepare_latent_data(run, data, cfg, dit_config(cfg.base_model, f"{stage}.base_model")["text_dim"])

    torch.manual_seed(cfg.loop.seed)
    gen, psi, real, gen_cfg = build_networks(cfg, generator_init(cfg) if generator_init else None, stage)
    real = real.to(run.device)
    gkw = gen_kwargs(cfg, gen_cfg) if gen_kwargs else None
    if gkw is not None and run.fsdp != "no":
        gkw = _agreeing(gkw)
    run.print(f"{stage}: DiT {gen.backbone.num_parameters() / 1e6:.1f}M params x3, head "
              f"{sum(p.numel() for p in psi.head.parameters()) / 1e6:.2f}M on blocks {psi.blocks}, "
              f"{len(lat.dataset)} cached items, crops of {lat.frames} frames, {run.mixed_precision}")
    opt_g = run.adam(gen.parameters())
    opt_f = run.adam(psi.parameters(), lr=cfg.fake_lr or None)
    sched_g, sched_f = run.lr_schedule(opt_g), run.lr_schedule(opt_f)
    gen_p, psi_p, opt_g, opt_f = run.prepare(gen, psi, opt_g, opt_f)
    gen_raw, psi_raw = run.unwrap(gen_p), run.unwrap(psi_p)
    ema = run.ema("generator", gen_p)
    meter = TurnMeter()
    run.restore()

    for batch in run.batches(lat.dataset, collate):
        x_real, length = batch["latents"], batch["length"]
        g = run.generator()
        emb, mask = lat.text.batch(batch["caption"], run.device)
        cond = dict(text=emb, text_mask=mask, bpm=batch["bpm"], uncond=False)
        if gen_cfg.beat_grid:  # the generator (and a grid teacher) place beats on the crop's own grid
            cond["beats"] = crop_beats(batch["start_s"].to(run.device), batch["bpm"].to(run.device), x_real.shape[-1],
                                       lat.dataset.frame_rate)
        gen_turn = is_generator_turn(run.step, cfg.fake_updates_per_gen, cfg.fake_warmup_steps)
        with run.autocast():
            if gen_turn:
                # psi is frozen (and called outside DDP) so that only phi gets gradients.
                psi_raw.requires_grad_(False)
                try:
                    loss, metrics = generator_turn(cfg, gen_p, psi_raw, real, x_real, cond, g, gkw, length)
                    gn = run.backward(loss, gen_p, opt_g, sched_g, name="generator loss")
                finally:
                    psi_raw.requires_grad_(True)
                opt_f.zero_grad(set_to_none=True)
                metrics["gen_grad_norm"] = gn
            else:
                loss, metrics = fake_turn(cfg, gen_raw, psi_p, x_real, cond, g, gkw, length)
                gn = run.backward(loss, psi_p, opt_f, sched_f, name="fake score / discriminator loss")
                opt_g.zero_grad(set_to_none=True)
                metrics["fake_grad_norm"] = gn
        meter.add(**metrics)
        # The generator only changes on its own turns; averaging it on fake turns too would make
        # the EMA decay per generator update decay ** (fake_updates_per_gen + 1).
        run.end_step(update_ema=gen_turn, generator_turn=float(gen_turn))
        if run.stepped and (run.step % cfg.loop.log_every == 0 or run.done):
            run.log_mean(**meter.pop())  # every process's meters, averaged

    return run.finish(export=lambda: export_stage(
        run, data, cfg, ema, gen_cfg, stage, base=cfg.base_model, steps=cfg.base_sampler_steps,
        guidance=cfg.base_guidance_scale, variant=variant(cfg)))

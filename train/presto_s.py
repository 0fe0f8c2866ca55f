"""Presto-S step distillation (paper 3.2, Algorithm 1 of A.3): distil the base score model into a
few-step generator with distribution matching (DMD2-style) plus a least-squares GAN in latent space.

    [accelerate launch -m | python -m] train.presto_s --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set presto_s.loop.lr=5e-7] [--cpu]

Networks: the generator G_phi = Precond(DiT) initialised from the base component
(``presto_s.base_model``; ``presto_s.generator_model`` continues from an earlier Presto-S export); the frozen real score model mu_real (the base model, guided with CFG
w = ``guidance``, 4.5); psi = the fake score model mu_psi (initialised from the base model) plus the
discriminator head D_psi (train/gan_head.py) on mu_psi's middle-block activations. Two Adam
optimizers: g1 for phi (``loop.lr``), g2 for psi (``fake_lr``, default ``loop.lr``).

Every iteration draws a batch of real latents x_real, sigma ~ p_gen and x_gen = G(x_real + sigma eps,
sigma). Iterations alternate as ``fake_updates_per_gen`` fake turns then one generator turn
(DESIGN: 5 fake-score/discriminator updates per generator update; step k, 0-based, is a generator
turn when (k + 1) % (fake_updates_per_gen + 1) == 0; ``fake_warmup_steps`` fake-only iterations
first, for a generator continued from an earlier export). A generator turn:
L = L_DMD + nu_gen * ||1 - D(x_gen + sigma eps)||^2 with sigma ~ p_DMD / p_GAN; L_DMD is the DMD2
surrogate 0.5 ||x_gen - sg(x_gen - grad)||^2, grad = (mu_fake - mu_real^w)(x_gen + sigma eps) divided
per sample by mean |x_gen - mu_real^w|; only phi is updated. Every other iteration is a fake turn:
L = lambda(sigma) ||x_gen - mu_psi(x_gen + sigma eps)||^2 + nu_disc (||D(x_gen + s_f eps)||^2
+ ||1 - D(x_real + s_r eps)||^2), x_gen detached; only psi is updated. The four noise distributions
(``p_gen``, ``p_dmd``, ``p_dsm``, ``p_gan``) are each "train" or "inference"; ``dmd_gan`` drops the DMD
term (GAN-only ablation); ``discrete_generator`` draws the generator's sigma from the
``discrete_steps``-step Karras schedule instead of a continuous distribution.

Logged (appendix A.4): gen_loss (GAN part of the generator loss), dmd_loss, dmd_grad_norm (mean per-
sample L2 norm of the normalised DMD gradient), disc_loss, disc_real_acc (fraction of the real logit
map > 0.5), fake_dsm_loss, plus each turn's grad norm. The generator's EMA is exported as the
``presto_s`` component and a model folder (RUN_DIR/model) with the base variant and the variant
"presto-s" = {"component": "presto_s", "sampler": "pingpong", "steps": 4, "guidance": {"kind": "none"}}.
All conditioning is on (text + BPM); the teacher's unconditional pass uses the learned null condition.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from presto_core import checkpoint as ckpt
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import EDMConfig, Precond, karras_sigmas, loss_weight, sample_sigmas
from train.gan_head import (
    FakeScoreWithHead, GanHead, GanHeadConfig, logit_mask, ls_disc_loss, ls_gen_loss, masked_mean,
)
from train.loop import ConfigError, LoopConfig, Run, load_config, parse_args, run_main, to_dict

NOISE_KINDS = ("train", "inference")
NOISE_ROLES = ("gen", "dmd", "dsm", "gan")


@dataclass
class PrestoSStageConfig:
    """The ``presto_s`` section of a config file."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    base_model: str = "runs/tiny/base/export/base"  # trained base DiT component (real + fake score init)
    generator_model: str = ""  # generator's start: "" = the base model; or an earlier Presto-S export
    edm: EDMConfig = field(default_factory=EDMConfig)
    head: GanHeadConfig = field(default_factory=GanHeadConfig)
    fake_lr: float = 0.0  # lr of g2 (fake score + head); 0 -> loop.lr
    fake_updates_per_gen: int = 5  # fake-score/discriminator turns per generator turn (Alg. 1 alternates)
    # Fake-only iterations before the first generator turn. 0 when the generator starts from the base
    # model (the fake score = the base is then exact); when it continues from a distilled generator
    # (generator_model), the fake score must first learn that generator's distribution, or the first
    # DMD gradients point the wrong way.
    fake_warmup_steps: int = 0
    guidance: float = 4.5  # CFG weight w of the real score model (the DMD teacher)
    nu_gen: float = 0.01  # nu_1: GAN weight in the generator loss
    nu_disc: float = 0.005  # nu_2: GAN weight in the fake-score/discriminator loss
    p_gen: str = "inference"  # noise distributions: "train" (log-normal) | "inference" (Karras ramp)
    p_dmd: str = "train"
    p_dsm: str = "train"
    p_gan: str = "train"
    dmd_gan: bool = False  # DMD-GAN ablation: no DMD term, the generator learns from the GAN only
    discrete_generator: bool = False  # generator sigma from the discrete_steps-level Karras schedule
    discrete_steps: int = 4
    vae: str = "runs/tiny/vae/export/vae"
    clap: str = ""
    text_encoder: dict = field(default_factory=lambda: {"kind": "minilm", "max_tokens": 64})
    crop_seconds: float = 10.0
    latent_cache: str = ""  # folder for the latent caches (default: RUN_DIR); share the base run's
    augment_copies: int = 0
    text_cache_size: int = 100_000
    export_fp16: bool = False
    sampler_steps: int = 4  # the exported variant's default steps (ping-pong)
    base_sampler_steps: int = 16  # the base variant's defaults in the exported folder
    base_guidance_scale: float = 0.8
    max_duration: float = 32.0
    num_prompts: int = 32

    def __post_init__(self):
        for role in NOISE_ROLES:
            if getattr(self, f"p_{role}") not in NOISE_KINDS:
                raise ConfigError(f"presto_s.p_{role} must be one of {NOISE_KINDS}, got {getattr(self, f'p_{role}')!r}")
        if self.fake_updates_per_gen < 1:
            raise ConfigError(f"presto_s.fake_updates_per_gen must be >= 1, got {self.fake_updates_per_gen}")
        if self.fake_warmup_steps < 0:
            raise ConfigError(f"presto_s.fake_warmup_steps must be >= 0, got {self.fake_warmup_steps}")
        if self.discrete_steps < 1 or self.sampler_steps < 1 or not self.crop_seconds > 0:
            raise ConfigError("presto_s: discrete_steps and sampler_steps must be >= 1 and crop_seconds > 0")
        if min(self.nu_gen, self.nu_disc, self.guidance, self.fake_lr) < 0:
            raise ConfigError("presto_s: nu_gen, nu_disc, guidance and fake_lr must be >= 0")


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


def repeat_cond(cond: dict, times: int) -> dict:
    """Conditioning kwargs (text, text_mask, bpm, uncond tensors of batch B) tiled to times * B."""
    out = {}
    for k, v in cond.items():
        out[k] = torch.cat([v] * times) if isinstance(v, torch.Tensor) and v.ndim > 0 else v
    return out


def guided_real(real, x: torch.Tensor, sigma: torch.Tensor, cond: dict, w: float) -> torch.Tensor:
    """mu_real^w(x, sigma) = D_u + w (D_c - D_u), one batched pass of the frozen real score model."""
    b = x.shape[0]
    c2 = repeat_cond(cond, 2)
    c2["uncond"] = torch.cat([torch.zeros(b, dtype=torch.bool, device=x.device),
                              torch.ones(b, dtype=torch.bool, device=x.device)])
    d_c, d_u = real(torch.cat([x, x]), torch.cat([sigma, sigma]), **c2).float().chunk(2)
    return d_u + w * (d_c - d_u)


def frame_mask(length: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    """(B, 1, T) float mask of the first ``length`` (B,) frames (the rest is crop padding)."""
    if length is None:
        return None
    return (torch.arange(frames, device=length.device)[None] < length[:, None]).float()[:, None]


def dmd_gradient(x_gen: torch.Tensor, mu_fake: torch.Tensor, mu_real: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """DMD2's normalised distribution-matching gradient (mu_fake - mu_real) / mean|x_gen - mu_real|
    (per sample, over the valid frames), zero on padded frames (``valid`` (B, 1, T)) and where not
    finite. All (B, C, T); no graph."""
    x = x_gen.detach().float()
    diff = (x - mu_real).abs()
    if valid is None:
        scale = diff.flatten(1).mean(1)
    else:
        scale = (diff * valid).flatten(1).sum(1) / (valid.flatten(1).sum(1) * x.shape[1]).clamp_min(1.0)
    grad = (mu_fake.float() - mu_real) / scale.clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    return torch.nan_to_num(grad if valid is None else grad * valid)


def dmd_surrogate(x_gen: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 ||x_gen - sg(x_gen - grad)||^2 (mean): d/dx_gen = grad / numel."""
    x = x_gen.float()
    return 0.5 * (x - (x - grad).detach()).square().mean()


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
    err = (den[:b].float() - x_gen).square()
    valid = frame_mask(length, x_real.shape[-1])
    if valid is None:
        per = err.flatten(1).mean(1)
    else:
        per = (err * valid).flatten(1).sum(1) / (valid.flatten(1).sum(1) * err.shape[1]).clamp_min(1.0)
    dsm = (loss_weight(s_dsm.float(), cfg.edm.sigma_data) * per).mean()
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
    from train.base import load_dit

    base, meta = load_dit(cfg.base_model, f"{stage}.base_model")
    sd = cfg.edm.sigma_data
    if "edm" in meta and abs(float(meta["edm"].get("sigma_data", sd)) - sd) > 1e-9:
        raise ConfigError(f"edm.sigma_data={sd} differs from the base model's {meta['edm']['sigma_data']}")
    gen_dit = load_dit(generator_init, f"{stage}.generator_model")[0] if generator_init else DiT(base.cfg)
    if not generator_init:
        gen_dit.load_state_dict(base.state_dict())
    fake = DiT(base.cfg)
    fake.load_state_dict(base.state_dict())
    blocks = cfg.head.resolve_blocks(base.cfg.depth)
    head = GanHead(base.cfg.dim, len(blocks), cfg.head.channels, cfg.head.downsample)
    real = Precond(base, sd).eval().requires_grad_(False)
    return Precond(gen_dit, sd), FakeScoreWithHead(Precond(fake, sd), head, blocks), real, gen_dit.cfg


def presto_s_variant(cfg: PrestoSStageConfig) -> dict:
    return {"component": "presto_s", "sampler": "pingpong", "steps": int(cfg.sampler_steps),
            "guidance": {"kind": "none"}}


def export_run(run: Run, data, cfg, ema, gen_cfg: DiTConfig, component: str = "presto_s",
               variant: dict | None = None, out: Path | None = None) -> Path:
    """Write the generator's EMA as the ``component`` DiT and a model folder with that variant."""
    from train.export import build_model_folder, heldout_prompts

    dit = ema.copy_to(Precond(DiT(gen_cfg), cfg.edm.sigma_data)).backbone
    comp = run.out_dir / "export" / component
    ckpt.save_component(comp, dit, gen_cfg, meta={"edm": to_dict(cfg.edm), "step": run.step, "stage": run.stage})
    clap = cfg.clap if cfg.clap and (Path(cfg.clap) / ckpt.CONFIG).is_file() else None
    return build_model_folder(
        out or run.out_dir / "model", vae=cfg.vae, base=cfg.base_model, clap=clap, text_encoder=cfg.text_encoder,
        prompts=heldout_prompts(data, cfg.num_prompts), fp16=cfg.export_fp16, steps=cfg.base_sampler_steps,
        guidance=cfg.base_guidance_scale, max_duration=cfg.max_duration,
        extra_variants={component.replace("_", "-"): (variant or presto_s_variant(cfg), comp)},
    )


def train_stage(argv, stage: str, cfg_cls, *, generator_init: Callable | None = None,
                gen_kwargs: Callable | None = None, variant: Callable | None = None) -> Path:
    """The Presto-S loop for ``stage`` (presto_s or presto_ls). ``generator_init(cfg)`` -> component
    folder of the generator's start (default: the base model); ``gen_kwargs(cfg, gen_cfg)`` -> a
    function sigma -> extra generator kwargs; ``variant(cfg)`` -> the exported variant spec."""
    from presto_core.text import load_text_encoder
    from train.base import TextCache, latent_caches
    from train.data.dataset import collate
    from train.data.latents import LatentDataset

    args = parse_args(stage, argv)
    data, cfg, name = load_config(args.config, stage, cfg_cls, args.overrides)
    run = Run(stage, cfg.loop, args, config_name=name, find_unused_parameters=True,
              config_record={"config": to_dict(cfg), "data": to_dict(data), "config_file": str(args.config)})
    caches = latent_caches(run, data, cfg)
    encoder = load_text_encoder(cfg.text_encoder, device=run.device)
    text = TextCache(encoder, cfg.text_cache_size)
    probe = LatentDataset(caches[data.train_split], frames=1)
    frames = max(1, round(cfg.crop_seconds * probe.frame_rate))
    dataset = LatentDataset(caches[data.train_split], frames=frames, seed=cfg.loop.seed)

    torch.manual_seed(cfg.loop.seed)
    gen, psi, real, gen_cfg = build_networks(cfg, generator_init(cfg) if generator_init else None, stage)
    if encoder.dim != gen_cfg.text_dim:
        raise ConfigError(f"the DiT expects {gen_cfg.text_dim}-d text tokens but the text encoder gives {encoder.dim}")
    real = real.to(run.device)
    gkw = gen_kwargs(cfg, gen_cfg) if gen_kwargs else None
    run.print(f"{stage}: DiT {gen.backbone.num_parameters() / 1e6:.1f}M params x3, head "
              f"{sum(p.numel() for p in psi.head.parameters()) / 1e6:.2f}M on blocks {psi.blocks}, "
              f"{len(dataset)} cached items, crops of {frames} frames, {run.mixed_precision}")
    opt_g = run.adam(gen.parameters())
    opt_f = run.adam(psi.parameters(), lr=cfg.fake_lr or None)
    sched_g, sched_f = run.lr_schedule(opt_g), run.lr_schedule(opt_f)
    gen_p, psi_p, opt_g, opt_f = run.prepare(gen, psi, opt_g, opt_f)
    gen_raw, psi_raw = run.unwrap(gen_p), run.unwrap(psi_p)
    ema = run.ema("generator", gen_p)
    meter = TurnMeter()
    if run.restore():
        run.print(f"resumed at step {run.step}")

    for batch in run.batches(dataset, collate):
        x_real, length = batch["latents"], batch["length"]
        g = run.generator()
        emb, mask = text.batch(batch["caption"], run.device)
        cond = dict(text=emb, text_mask=mask, bpm=batch["bpm"], uncond=False)
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
        if run.step % cfg.loop.log_every == 0 or run.done:
            run.log(**meter.pop())

    run.finish()
    if run.is_main:
        out = export_run(run, data, cfg, ema, gen_cfg, component=stage,
                         variant=variant(cfg) if variant else presto_s_variant(cfg))
        run.print(f"exported {out}")
    return run.out_dir


def generator_init(cfg: PrestoSStageConfig) -> str | None:
    """``generator_model`` (continuing an earlier distillation) if set, checked to have the base
    model's architecture; None starts the generator from the base model (Algorithm 1)."""
    if not cfg.generator_model:
        return None
    from train.base import dit_config

    gen = dit_config(cfg.generator_model, "presto_s.generator_model")
    base = dit_config(cfg.base_model, "presto_s.base_model")
    if gen != base:
        diff = sorted(k for k in set(gen) | set(base) if gen.get(k) != base.get(k))
        raise ConfigError(f"presto_s.generator_model {cfg.generator_model} differs from the base model in {diff}")
    return cfg.generator_model


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    return train_stage(argv, "presto_s", PrestoSStageConfig, generator_init=generator_init)


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

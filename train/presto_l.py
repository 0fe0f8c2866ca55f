"""Presto-L layer distillation (paper 3.3, A.7), and the ASE baseline: fine-tune the base score model
to run with fewer DiT blocks at high noise.

    [accelerate launch -m | python -m] train.presto_l --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set presto_l.loop.lr=1e-5] [--cpu]

Start: the trained base DiT component (``presto_l.base_model``) copied into a DiT with the same
weights plus the zero-initialised budget modules (so the starting model is exactly the base model)
and ``drop_mode='shifted'`` (the final block always runs). ``method: "ase"`` instead keeps the base
architecture with ``drop_mode='ase'`` (drop from the last block backwards, no budget conditioning,
no self-teacher).

Per step (same data, text cache, 10% condition dropout, EMA and checkpoints as train/base.py):
sigma ~ exp(N(P_mean, P_std^2)); each sample drops ``schedule(sigma)`` blocks (``schedule``: five
counts per descending-noise quintile at the 28-block reference, default D3, rescaled to the model's
depth); loss = lambda(sigma) ||D_L(x) - x0||^2 + nu ||h_L(x) - sg(h_full(x))||^2, where h are the
normalised final-block outputs of the same model with and without dropping. The EMA weights are
exported as the ``presto_l`` (or ``ase``) component and a model folder (RUN_DIR/model) holding the
base variant and the layer-dropped variant with its drop schedule.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt
from presto_core.budget import D3, DropSchedule, check_schedule
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import EDMConfig, Precond, loss_weight, sample_sigmas
from train.base import HeldoutLoss, TextCache, latent_caches, load_dit
from train.loop import LoopConfig, Run, load_config, parse_args, run_main, to_dict

METHODS = ("presto_l", "ase")


@dataclass
class PrestoLStageConfig:
    """The ``presto_l`` section of a config file."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    method: str = "presto_l"  # presto_l (shifted dropping + budget conditioning + self-teacher) | ase
    base_model: str = "runs/tiny/base/export/base"  # trained base DiT component folder (train.base's export)
    schedule: tuple[int, ...] = D3  # blocks dropped per descending-noise quintile, 28-block reference
    nu: float = 0.1  # self-teacher weight (Presto-L only; ASE has none)
    edm: EDMConfig = field(default_factory=EDMConfig)  # sigma_data must match the base model's
    vae: str = "runs/tiny/vae/export/vae"  # the VAE the base model was trained on (latents + export)
    clap: str = ""  # optional CLAP component folder copied into the exported model
    text_encoder: dict = field(default_factory=lambda: {"kind": "minilm", "max_tokens": 64})
    crop_seconds: float = 10.0
    cond_dropout: float = 0.1
    latent_cache: str = ""  # folder for the latent caches (default: RUN_DIR); share the base run's
    augment_copies: int = 0
    text_cache_size: int = 100_000
    export_fp16: bool = False
    sampler_steps: int = 16  # the exported variants' defaults (DPM-Solver++(2S), CFG++ w)
    guidance_scale: float = 0.8
    max_duration: float = 32.0
    num_prompts: int = 32
    eval_every: int = 1000  # held-out DSM loss of the layer-dropped EMA weights (0: only at the end)
    eval_items: int = 64

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"presto_l.method must be one of {METHODS}, got {self.method!r}")
        self.schedule = check_schedule(self.schedule)
        if not 0.0 <= self.cond_dropout < 1.0 or not self.crop_seconds > 0 or self.eval_items < 1 or self.nu < 0:
            raise ValueError(f"presto_l: need 0 <= cond_dropout < 1, crop_seconds > 0, eval_items >= 1, nu >= 0; "
                             f"got {self.cond_dropout}, {self.crop_seconds}, {self.eval_items}, {self.nu}")

    @property
    def name(self) -> str:
        """Component name of the export: 'presto_l' or 'ase' (the variant is named with a hyphen)."""
        return self.method

    @property
    def self_teacher_weight(self) -> float:
        return self.nu if self.method == "presto_l" else 0.0


# ---------------------------------------------------------------------------------------------
# Model and loss


def layer_drop_config(base_cfg: DiTConfig, method: str = "presto_l") -> DiTConfig:
    """The base architecture with Presto-L's budget conditioning and shifted dropping, or ASE's
    plain back-to-front dropping (no new modules)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ase":
        return dataclasses.replace(base_cfg, budget_conditioning=False, drop_mode="ase")
    return dataclasses.replace(base_cfg, budget_conditioning=True, drop_mode="shifted")


def init_from_base(base: DiT, method: str = "presto_l") -> DiT:
    """A new DiT for ``method`` holding ``base``'s weights; only the (zero-initialised) budget
    modules are new, so it computes exactly what ``base`` computes (at any drop count, for the
    same drop mode). Draws from the global torch RNG (the budget hidden layer's init)."""
    model = DiT(layer_drop_config(base.cfg, method))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("budget_") for k in missing):
        raise ValueError(f"base weights do not fit the {method} model: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def presto_l_loss(model, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, *, schedule,
                  nu: float = 0.1, sigma_data: float = 0.5, length: torch.Tensor | None = None, **cond):
    """Presto-L objective for one batch: weighted DSM of the layer-dropped denoiser + nu * self-teacher.

    model: Precond(DiT) (possibly wrapped by accelerate); x0, noise: (B, C, T); sigma: (B,);
    schedule: callable sigma (B,) -> blocks dropped (B,) long (a :class:`DropSchedule` at the model's
    depth); length: (B,) valid frames per sample (None: all); cond: text, text_mask, bpm, uncond.
    The self-teacher term is the mean over valid tokens and channels of (h_L - sg(h_full))^2 with h
    the normalised final-block outputs (B, T, dim); the full-depth pass runs under no_grad and is
    skipped when ``nu == 0`` (ASE). Returns (loss, metrics) with metrics {"dsm", "self_teacher",
    "layers_dropped"} as detached scalars.
    """
    b, _, t = x0.shape
    k = schedule(sigma.detach())
    x = x0 + sigma.view(-1, 1, 1) * noise
    den, hidden = model(x, sigma, layers_dropped=k, return_hidden=True, **cond)
    if length is None:
        valid = torch.ones(b, t, device=x0.device)
    else:
        valid = (torch.arange(t, device=x0.device)[None] < length[:, None]).float()
    frames = valid.sum(1).clamp_min(1)
    per = (((den.float() - x0.float()) ** 2) * valid[:, None]).sum((1, 2)) / (frames * x0.shape[1])
    dsm = (loss_weight(sigma.float(), sigma_data) * per).mean()
    st = dsm.new_zeros(())
    if nu > 0:
        with torch.no_grad():
            _, full = model(x, sigma, layers_dropped=0, return_hidden=True, **cond)
        sq = ((hidden.float() - full.detach().float()) ** 2).mean(-1)  # (B, T)
        st = ((sq * valid).sum(1) / frames).mean()
    loss = dsm + nu * st
    return loss, {"dsm": dsm.detach(), "self_teacher": st.detach(), "layers_dropped": k.float().mean()}


def dropping_denoiser(model, schedule):
    """D(x, sigma, **cond) of ``model`` with the schedule's layer budget for each sample's sigma."""
    def denoise(x, sigma, **cond):
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        return model(x, s, layers_dropped=schedule(s), **cond)
    return denoise


# ---------------------------------------------------------------------------------------------
# Export


def variant_spec(cfg: PrestoLStageConfig) -> dict:
    """The model_index.json variant of the layer-dropped model (reference-depth schedule)."""
    return {"component": cfg.name, "sampler": "dpmpp_2s", "steps": int(cfg.sampler_steps),
            "guidance": {"kind": "cfg_pp", "scale": float(cfg.guidance_scale)},
            "drop_schedule": list(cfg.schedule)}


def export_run(run: Run, data, cfg: PrestoLStageConfig, ema, model_cfg: DiTConfig, out: Path | None = None) -> Path:
    """Write the EMA weights as the ``presto_l``/``ase`` component and a model folder with the base
    variant (default) and the layer-dropped variant (main process)."""
    from train.export import build_model_folder, heldout_prompts

    dit = ema.copy_to(Precond(DiT(model_cfg), cfg.edm.sigma_data)).backbone
    comp = run.out_dir / "export" / cfg.name
    ckpt.save_component(comp, dit, model_cfg, meta={
        "edm": to_dict(cfg.edm), "step": run.step, "method": cfg.method, "drop_schedule": list(cfg.schedule),
        "base_model": str(cfg.base_model)})
    clap = cfg.clap if cfg.clap and (Path(cfg.clap) / ckpt.CONFIG).is_file() else None
    if cfg.clap and clap is None:
        run.print(f"note: no CLAP component at {cfg.clap}; exporting without CLAP rejection")
    return build_model_folder(
        out or run.out_dir / "model", vae=cfg.vae, base=cfg.base_model, clap=clap, text_encoder=cfg.text_encoder,
        prompts=heldout_prompts(data, cfg.num_prompts), fp16=cfg.export_fp16, steps=cfg.sampler_steps,
        guidance=cfg.guidance_scale, max_duration=cfg.max_duration,
        extra_variants={cfg.name.replace("_", "-"): (variant_spec(cfg), comp)},
    )


# ---------------------------------------------------------------------------------------------
# Training


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    args = parse_args("presto_l", argv)
    data, cfg, name = load_config(args.config, "presto_l", PrestoLStageConfig, args.overrides)
    # Dropped blocks (and the null condition in steps without dropout) get no gradient.
    run = Run("presto_l", cfg.loop, args, config_name=name, find_unused_parameters=True,
              config_record={"config": to_dict(cfg), "data": to_dict(data), "config_file": str(args.config)})
    base, meta = load_dit(cfg.base_model, "presto_l.base_model")
    base_sd = meta.get("edm", {}).get("sigma_data", cfg.edm.sigma_data)
    if base_sd != cfg.edm.sigma_data:
        raise ValueError(f"presto_l.edm.sigma_data={cfg.edm.sigma_data} but the base model was trained with {base_sd}")
    caches = latent_caches(run, data, cfg)

    from presto_core.text import load_text_encoder
    from train.data.dataset import collate
    from train.data.latents import LatentDataset

    encoder = load_text_encoder(cfg.text_encoder, device=run.device)
    if encoder.dim != base.cfg.text_dim:
        raise ValueError(f"the base model takes {base.cfg.text_dim}-d text tokens, "
                         f"the text encoder gives {encoder.dim}")
    text = TextCache(encoder, cfg.text_cache_size)
    probe = LatentDataset(caches[data.train_split], frames=1)
    frames = max(1, round(cfg.crop_seconds * probe.frame_rate))
    dataset = LatentDataset(caches[data.train_split], frames=frames, seed=cfg.loop.seed)

    torch.manual_seed(cfg.loop.seed)
    dit = init_from_base(base, cfg.method)
    model_cfg = dit.cfg
    schedule = DropSchedule.scaled(cfg.schedule, model_cfg.depth, cfg.edm)
    nu = cfg.self_teacher_weight
    model = Precond(dit, sigma_data=cfg.edm.sigma_data)
    run.print(f"{cfg.name}: DiT {dit.num_parameters() / 1e6:.1f}M params, depth {model_cfg.depth}, drop schedule "
              f"{schedule.counts} ({model_cfg.drop_mode}), nu={nu}, {len(dataset)} cached items, crops of {frames} "
              f"frames, {run.accelerator.num_processes} process(es), {run.mixed_precision}")
    opt = run.adam(model.parameters())
    sched = run.lr_schedule(opt)
    model, opt = run.prepare(model, opt)
    ema = run.ema("model", model)
    heldout = None
    if run.is_main and data.heldout_split in caches:
        heldout = HeldoutLoss(caches[data.heldout_split], frames, cfg, text, run)
        eval_model = Precond(DiT(model_cfg), cfg.edm.sigma_data).to(run.device).eval()  # before restore(): RNG
    if run.restore():
        run.print(f"resumed at step {run.step}")

    for batch in run.batches(dataset, collate):
        x0 = batch["latents"]
        b = x0.shape[0]
        g = run.generator()
        sigma = sample_sigmas("train", b, cfg.edm, generator=g, device=run.device)
        noise = torch.randn(x0.shape, generator=g, device=run.device)
        uncond = torch.rand(b, generator=g, device=run.device) < cfg.cond_dropout
        emb, mask = text.batch(batch["caption"], run.device)
        loss, metrics = presto_l_loss(model, x0, sigma, noise, schedule=schedule, nu=nu,
                                      sigma_data=cfg.edm.sigma_data, length=batch["length"],
                                      text=emb, text_mask=mask, bpm=batch["bpm"], uncond=uncond)
        grad_norm = run.backward(loss, model, opt, sched)
        run.end_step(loss=loss, grad_norm=grad_norm, **metrics)
        if heldout is not None and ((cfg.eval_every and run.step % cfg.eval_every == 0) or run.done):
            run.log(heldout_loss=heldout(dropping_denoiser(ema.copy_to(eval_model), schedule)))

    run.finish()
    if run.is_main:
        run.print(f"exported {export_run(run, data, cfg, ema, model_cfg)}")
    return run.out_dir


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

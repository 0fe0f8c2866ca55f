"""Train the base score model: EDM denoising score matching on VAE latents (paper 3, A.1).

    [accelerate launch -m | python -m] train.base --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set base.loop.lr=3e-4] [--cpu]
        [--prepare-only]

Per step: latent crops x0 from the cache (built from the corpus with the trained VAE on first use),
sigma ~ exp(N(P_mean, P_std^2)), D = Precond(DiT) on x0 + sigma * n, loss lambda(sigma) ||D - x0||^2
over valid frames; 10% of samples get uncond=True (CFG); text tokens from the frozen MiniLM (cached
per caption phrasing); BPM from the metadata. EMA weights are exported at the end as a Presto model
folder (RUN_DIR/model) that presto_core.pipeline loads.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from presto_core.dit import DiT, DiTConfig
from presto_core.edm import Precond
from train.data.dataset import collate
from train.diffusion.common import check_same_architecture, grown_dit, latent_caches, load_dit, prepare_latent_data
from train.diffusion.configs import BaseStageConfig
from train.diffusion.losses import masked_dsm_loss
from train.diffusion.model_folder import BASE, export_stage
from train.infra.config import ConfigError
from train.infra.run import run_main, start_stage


def load_init(path: str, model_cfg: DiTConfig) -> DiT:
    """The DiT component at ``path`` (``base.init``), checked against the configured architecture.
    A configured ``beat_grid`` may be new: the init's weights then go into a grid model whose
    (zero-initialised) grid projection is the only new part, so it starts computing what the init does."""
    dit, _ = load_dit(path, "base.init")
    if model_cfg.beat_grid and not dit.cfg.beat_grid:
        check_same_architecture(dataclasses.replace(dit.cfg, beat_grid=True), model_cfg, f"base.init={path}")
        try:
            return grown_dit(dit, model_cfg, ("grid_proj.",))
        except ValueError as e:
            raise ConfigError(f"base.init={path} does not fit a beat-grid DiT: {e}") from None
    check_same_architecture(dit.cfg, model_cfg, f"base.init={path}")
    return dit


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    # The null text/BPM parameters only get gradients in steps that drop some sample's condition.
    args, data, cfg, run = start_stage("base", BaseStageConfig, argv, find_unused_parameters=True,
                                       extra=lambda ap: ap.add_argument("--prepare-only", action="store_true",
                                                                        help="build the latent caches, then exit"))
    caches = latent_caches(run, data, cfg)
    if args.prepare_only:
        return run.out_dir
    lat = prepare_latent_data(run, data, cfg, cfg.model.text_dim, caches)

    torch.manual_seed(cfg.loop.seed)
    model = Precond(DiT(cfg.model), sigma_data=cfg.edm.sigma_data)
    if cfg.init:
        model.backbone.load_state_dict(load_init(cfg.init, cfg.model).state_dict())
    run.print(f"base: DiT {model.backbone.num_parameters() / 1e6:.1f}M params, {len(lat.dataset)} cached items, "
              f"crops of {lat.frames} frames, {run.accelerator.num_processes} process(es), {run.mixed_precision}")
    model, opt, sched, ema = run.train_one(model)
    heldout = lat.heldout_loss(run, data, cfg)
    eval_model = None
    if heldout is not None:
        eval_model = Precond(DiT(cfg.model), cfg.edm.sigma_data).to(run.device).eval()  # before restore(): RNG
    run.restore()

    for batch in run.batches(lat.dataset, collate):
        x0, sigma, noise, cond = lat.dsm_inputs(run, batch, cfg, grid=cfg.model.beat_grid)
        loss = masked_dsm_loss(model, x0, sigma, noise, batch["length"], cfg.edm.sigma_data, **cond)
        grad_norm = run.backward(loss, model, opt, sched)
        run.end_step(loss=loss, grad_norm=grad_norm)
        if run.stepped and ((cfg.eval_every and run.step % cfg.eval_every == 0) or run.done):
            averaged = ema.copy_to(eval_model)  # on every process: under FSDP the average is gathered
            if heldout is not None:
                run.log(heldout_loss=heldout(averaged))

    return run.finish(export=lambda: export_stage(run, data, cfg, ema, cfg.model, BASE, base=None,
                                                  steps=cfg.sampler_steps, guidance=cfg.guidance_scale))


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

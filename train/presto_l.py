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
from pathlib import Path

import torch

from presto_core.budget import DropSchedule
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import Precond
from train.data.dataset import collate
from train.diffusion.common import grown_dit, load_dit, prepare_latent_data
from train.diffusion.configs import METHODS, PrestoLStageConfig
from train.diffusion.losses import presto_l_loss
from train.diffusion.model_folder import export_stage, variant_dict
from train.infra.run import run_main, start_stage
from train.infra.sharding import agreed_drop_floor

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
    cfg = layer_drop_config(base.cfg, method)
    try:
        return grown_dit(base, cfg, ("budget_",))
    except ValueError as e:
        raise ValueError(f"base weights do not fit the {method} model: {e}") from None


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
    return variant_dict(cfg.name, "dpmpp_2s", cfg.sampler_steps, cfg.guidance_scale, cfg.schedule)


# ---------------------------------------------------------------------------------------------
# Training


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    # Dropped blocks (and the null condition in steps without dropout) get no gradient.
    _, data, cfg, run = start_stage("presto_l", PrestoLStageConfig, argv, find_unused_parameters=True)
    base, _ = load_dit(cfg.base_model, "presto_l.base_model", sigma_data=cfg.edm.sigma_data)
    lat = prepare_latent_data(run, data, cfg, base.cfg.text_dim)

    torch.manual_seed(cfg.loop.seed)
    dit = init_from_base(base, cfg.method)
    model_cfg = dit.cfg
    schedule = DropSchedule.scaled(cfg.schedule, model_cfg.depth, cfg.edm)
    nu = cfg.self_teacher_weight
    model = Precond(dit, sigma_data=cfg.edm.sigma_data)
    run.print(f"{cfg.name}: DiT {dit.num_parameters() / 1e6:.1f}M params, depth {model_cfg.depth}, drop schedule "
              f"{schedule.counts} ({model_cfg.drop_mode}), nu={nu}, {len(lat.dataset)} cached items, crops of "
              f"{lat.frames} frames, {run.accelerator.num_processes} process(es), {run.mixed_precision}")
    model, opt, sched, ema = run.train_one(model)
    heldout = lat.heldout_loss(run, data, cfg)
    eval_model = None
    if heldout is not None:
        eval_model = Precond(DiT(model_cfg), cfg.edm.sigma_data).to(run.device).eval()  # before restore(): RNG
    run.restore()

    drop_floor = agreed_drop_floor if run.fsdp != "no" else None  # sharded: every process runs the same blocks
    for batch in run.batches(lat.dataset, collate):
        x0, sigma, noise, cond = lat.dsm_inputs(run, batch, cfg, grid=model_cfg.beat_grid)
        loss, metrics = presto_l_loss(model, x0, sigma, noise, schedule=schedule, nu=nu, drop_floor=drop_floor,
                                      sigma_data=cfg.edm.sigma_data, length=batch["length"], **cond)
        grad_norm = run.backward(loss, model, opt, sched)
        run.end_step(loss=loss, grad_norm=grad_norm, **metrics)
        if run.stepped and ((cfg.eval_every and run.step % cfg.eval_every == 0) or run.done):
            averaged = ema.copy_to(eval_model)  # on every process: under FSDP the average is gathered
            if heldout is not None:
                run.log(heldout_loss=heldout(dropping_denoiser(averaged, schedule)))

    return run.finish(export=lambda: export_stage(
        run, data, cfg, ema, model_cfg, cfg.name, base=cfg.base_model, steps=cfg.sampler_steps,
        guidance=cfg.guidance_scale, variant=variant_spec(cfg),
        meta={"method": cfg.method, "drop_schedule": list(cfg.schedule), "base_model": str(cfg.base_model)}))


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

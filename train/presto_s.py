"""Presto-S step distillation (paper 3.2, Algorithm 1 of A.3): distil the base score model into a
few-step generator with distribution matching (DMD2-style) plus a least-squares GAN in latent space.

    [accelerate launch -m | python -m] train.presto_s --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set presto_s.loop.lr=5e-7] [--cpu]

Networks: the generator G_phi = Precond(DiT) initialised from the base component
(``presto_s.base_model``; ``presto_s.generator_model`` continues from an earlier Presto-S export); the frozen real score model mu_real (the base model, guided with CFG
w = ``guidance``, 4.5); psi = the fake score model mu_psi (initialised from the base model) plus the
discriminator head D_psi (train/diffusion/gan_head.py) on mu_psi's middle-block activations. Two Adam
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
from pathlib import Path

from train.diffusion.common import check_same_architecture, dit_config
from train.diffusion.configs import PrestoSStageConfig
from train.diffusion.distill import train_stage
from train.diffusion.model_folder import variant_dict
from train.infra.run import run_main

__all__ = ["PrestoSStageConfig", "generator_init", "presto_s_variant", "train", "main"]


def presto_s_variant(cfg: PrestoSStageConfig) -> dict:
    """The exported "presto-s" variant: unguided ping-pong sampling with ``sampler_steps`` steps."""
    return variant_dict("presto_s", "pingpong", cfg.sampler_steps)


def generator_init(cfg: PrestoSStageConfig) -> str | None:
    """``generator_model`` (continuing an earlier distillation) if set, checked to have the base
    model's architecture; None starts the generator from the base model (Algorithm 1)."""
    if not cfg.generator_model:
        return None
    gen = dit_config(cfg.generator_model, "presto_s.generator_model")
    base = dit_config(cfg.base_model, "presto_s.base_model")
    check_same_architecture(gen, base, f"presto_s.generator_model {cfg.generator_model}")
    return cfg.generator_model


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    return train_stage(argv, "presto_s", PrestoSStageConfig, generator_init=generator_init, variant=presto_s_variant)


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

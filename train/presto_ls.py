"""Presto-LS: Presto-S step distillation of a Presto-L layer-distilled model (paper 3.4, 4.6, A.4).

    [accelerate launch -m | python -m] train.presto_ls --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set presto_ls.loop.lr=5e-7] [--cpu]

The loop is train/presto_s.py's Algorithm 1 with two differences: the generator starts from the
Presto-L component (``generator_model``: budget-conditioned DiT with shifted dropping) and runs, for
each sample, with the layer budget that the reduced schedule ``schedule`` (default PRESTO_LS =
[12, 8, 8, 0, 0] at the 28-block reference, rescaled to the model depth) gives at that sample's sigma;
the real and fake score models are still the ORIGINAL base model (``base_model``) at full depth (the
only combination that avoids generator collapse, A.4). Export: the generator's EMA as the
``presto_ls`` component and the "presto-ls" variant {"component": "presto_ls", "sampler": "pingpong",
"steps": 4, "guidance": {"kind": "none"}, "drop_schedule": [12, 8, 8, 0, 0]}.
"""

from __future__ import annotations

import sys

from presto_core.budget import DropSchedule
from presto_core.dit import DiTConfig
from train.diffusion.common import dit_config
from train.diffusion.configs import PrestoLSStageConfig
from train.diffusion.distill import train_stage
from train.diffusion.model_folder import variant_dict
from train.infra.config import ConfigError
from train.infra.run import run_main


def generator_init(cfg: PrestoLSStageConfig) -> str:
    """Check that ``generator_model`` is a budget-conditioned DiT shaped like the base; return it."""
    gen = dit_config(cfg.generator_model, "presto_ls.generator_model")
    base = dit_config(cfg.base_model, "presto_ls.base_model")
    if not gen.get("budget_conditioning") or gen.get("drop_mode", "shifted") != "shifted":
        raise ConfigError(f"presto_ls.generator_model {cfg.generator_model} is not a Presto-L model "
                          f"(budget_conditioning={gen.get('budget_conditioning')}, drop_mode={gen.get('drop_mode')})")
    for k in ("latent_channels", "dim", "depth", "heads", "text_dim"):
        if gen.get(k) != base.get(k):
            raise ConfigError(f"presto_ls: generator_model and base_model differ in {k}")
    return cfg.generator_model


def generator_kwargs(cfg: PrestoLSStageConfig, gen_cfg: DiTConfig):
    """sigma (B,) -> {"layers_dropped": per-sample counts (B,) of the rescaled schedule}."""
    sched = DropSchedule.scaled(cfg.schedule, gen_cfg.depth, cfg.edm)
    return lambda sigma: {"layers_dropped": sched(sigma)}


def variant(cfg: PrestoLSStageConfig) -> dict:
    """The exported "presto-ls" variant: unguided ping-pong sampling with the reduced drop schedule."""
    return variant_dict("presto_ls", "pingpong", cfg.sampler_steps, drop_schedule=cfg.schedule)


def train(argv: list[str] | None = None):
    return train_stage(argv, "presto_ls", PrestoLSStageConfig, generator_init=generator_init,
                       gen_kwargs=generator_kwargs, variant=variant)


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

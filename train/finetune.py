"""Fine-tune a model folder on a person's own audio: LoRA adapters on the base score model, trained by
EDM denoising score matching on the latents of an ingested dataset (python -m train.data.ingest).

    python -m train.finetune --data DATA --out ADAPTER [--model assets/presto-default] [--run RUN_DIR]
        [--config train/configs/tiny.json] [--resume latest] [--max-steps N]
        [--set finetune.rank=16] [--set finetune.loop.lr=5e-4] [--cpu]

DATA's audio is encoded once with the model folder's own VAE (cached in RUN_DIR); the base DiT is
frozen and only rank-r factors in its block projections learn (train/diffusion/lora.py, peft). The
run folder (default runs/finetune/<ADAPTER name>) holds checkpoints, logs and the lock like every
stage, so ``--resume latest`` continues exactly and SIGTERM stops cleanly (exit 4). At the end the
factors are written to ADAPTER as an adapter folder (presto_core/adapters.py) recording the hash of
the base weights it was trained on, the data and the held-out DSM loss before and after; serve it
with ``python -m presto_core.generate --adapter ADAPTER[:WEIGHT]`` or
``PrestoPipeline.from_pretrained(model, adapters=[(ADAPTER, 1.0)])``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from presto_core import checkpoint as ckpt
from presto_core.adapters import save_adapter
from presto_core.edm import Precond
from presto_core.errors import PrestoError
from train.data.dataset import collate
from train.diffusion.common import latent_caches, load_dit, prepare_latent_data
from train.diffusion.configs import FinetuneStageConfig
from train.diffusion.lora import add_lora, lora_factors, trainable
from train.diffusion.losses import masked_dsm_loss
from train.infra.config import ConfigError
from train.infra.run import run_main, start_stage

DEFAULT_CONFIG = "train/configs/tiny.json"


def _front_args(argv: list[str] | None):
    """This command's own flags (--data, --out as the ADAPTER folder, --model, --run, --config);
    the rest go to the stage parser."""
    ap = argparse.ArgumentParser(prog="python -m train.finetune", add_help=False)
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--model", default=None)
    ap.add_argument("--run", default=None)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("-h", "--help", action="store_true")
    a, rest = ap.parse_known_args(argv)
    if a.help:
        print(__doc__)
        raise SystemExit(0)
    if not a.data or not a.out:
        raise ConfigError("train.finetune needs --data DATA (python -m train.data.ingest's output) and --out ADAPTER")
    return a, rest


def model_overrides(model: str) -> tuple[list[str], dict]:
    """--set overrides that point the stage at a model folder's VAE and text encoder, and the
    folder's index. One ConfigError if ``model`` is not a model folder with a base component."""
    try:
        index = ckpt.read_index(model)
    except PrestoError as e:
        raise ConfigError(f"--model {model}: {e}") from None
    comps = index["components"]
    for name in ("vae", "base"):
        if name not in comps:
            raise ConfigError(f"--model {model} has no {name!r} component to fine-tune with")
    return [f"finetune.model={model}", f"finetune.vae={Path(model) / comps['vae']['path']}",
            f"finetune.text_encoder={json.dumps(index.get('text_encoder', {'kind': 'minilm'}))}"], index


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    front, rest = _front_args(argv)
    model = front.model or _config_model(front.config, rest)
    sets, index = model_overrides(model)
    run_dir = front.run or str(Path("runs") / "finetune" / Path(front.out).name)
    stage_argv = ["--config", front.config, "--out", run_dir, "--set", f"data.root={front.data}"]
    stage_argv += [x for s in sets for x in ("--set", s)] + rest
    _, data, cfg, run = start_stage("finetune", FinetuneStageConfig, stage_argv, find_unused_parameters=True)

    base_entry = index["components"]["base"]
    dit, _ = load_dit(str(Path(model) / base_entry["path"]), "finetune.model", sigma_data=cfg.edm.sigma_data)
    caches = latent_caches(run, data, cfg)
    lat = prepare_latent_data(run, data, cfg, dit.cfg.text_dim, caches)
    names = add_lora(dit, cfg.rank, cfg.alpha, cfg.targets, seed=cfg.loop.seed)
    model_p = Precond(dit, sigma_data=cfg.edm.sigma_data)
    n_train = sum(p.numel() for p in trainable(model_p))
    run.print(f"finetune: LoRA rank {cfg.rank} on {len(names)} layers of {model}'s base ({n_train / 1e3:.0f}k "
              f"trained of {dit.num_parameters() / 1e6:.1f}M), {len(lat.dataset)} clips, crops of {lat.frames} "
              f"frames, {run.mixed_precision}")
    opt = run.adam(trainable(model_p))
    sched = run.lr_schedule(opt)
    model_p, opt = run.prepare(model_p, opt)
    heldout = lat.heldout_loss(run, data, cfg)
    losses = {}
    if heldout is not None:
        losses["plain"] = heldout(run.unwrap(model_p))  # the factors B start at zero: the plain model
        run.print(f"held-out DSM loss of the plain model: {losses['plain']:.4f}")
    run.restore()

    for batch in run.batches(lat.dataset, collate):
        x0, sigma, noise, cond = lat.dsm_inputs(run, batch, cfg)
        loss = masked_dsm_loss(model_p, x0, sigma, noise, batch["length"], cfg.edm.sigma_data, **cond)
        grad_norm = run.backward(loss, model_p, opt, sched)
        run.end_step(loss=loss, grad_norm=grad_norm)
        if heldout is not None and run.stepped and ((cfg.eval_every and run.step % cfg.eval_every == 0) or run.done):
            losses["adapted"] = heldout(run.unwrap(model_p))
            run.log(heldout_loss=losses["adapted"])

    def export() -> Path:
        factors = lora_factors(run.unwrap(model_p).backbone)
        ingest_summary = Path(data.root) / "ingest.json"
        save_adapter(front.out, {"base": factors}, cfg.rank, cfg.alpha, {"base": base_entry["sha256"]},
                     fp16=cfg.adapter_fp16, name=Path(front.out).name, made_from=str(model),
                     data={"root": str(data.root), "clips": len(lat.dataset),
                           **({"ingest": json.loads(ingest_summary.read_text())} if ingest_summary.is_file() else {})},
                     training={"steps": run.step, "run": str(run.out_dir), "lr": cfg.loop.lr,
                               "batch_size": cfg.loop.batch_size, "targets": list(cfg.targets),
                               "heldout_dsm_loss": losses})
        return Path(front.out)

    return run.finish(export=export)


def _config_model(config: str, rest: list[str]) -> str:
    """finetune.model from --set or the config file (the default model folder otherwise)."""
    for i, tok in enumerate(rest):
        if tok == "--set" and i + 1 < len(rest) and rest[i + 1].startswith("finetune.model="):
            return rest[i + 1].split("=", 1)[1]
    try:
        return json.loads(Path(config).read_text()).get("finetune", {}).get("model") or FinetuneStageConfig.model
    except (OSError, json.JSONDecodeError):
        return FinetuneStageConfig.model


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tune a model folder on a person's own audio: LoRA adapters on the base score model, trained by
EDM denoising score matching on the latents of an ingested dataset (python -m train.data.ingest).

    python -m train.finetune --data DATA --out ADAPTER [--model assets/presto-default] [--run RUN_DIR]
        [--config train/configs/tiny.json] [--resume latest] [--max-steps N]
        [--set finetune.rank=16] [--set finetune.loop.lr=5e-4] [--cpu]

DATA's audio is encoded once with the model folder's own VAE (cached in RUN_DIR); the base DiT is
frozen and only rank-r factors in its block projections learn (train/diffusion/lora.py, peft). With
``finetune.base_steps`` and a distilled generator in the model, the later steps adapt the generator
by distribution matching against the adapted base, its factors (and the fake score's) starting from
the base's (``finetune.transfer_factors``). At the end, LoRA factors on the model's CLAP text tower
learn what their captions sound like (``finetune.clap_captions``), so the report and CLAP
rejection judge their style with a CLAP that knows it. The
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
from dataclasses import replace
from pathlib import Path

import torch


from presto_core import checkpoint as ckpt
from presto_core.adapters import save_adapter
from presto_core.budget import DropSchedule
from presto_core.edm import Precond
from presto_core.errors import PrestoError
from train.data.dataset import collate
from train.diffusion.clap_captions import adapt_clap
from train.diffusion.common import latent_caches, load_dit, prepare_latent_data
from train.diffusion.configs import FinetuneStageConfig
from train.diffusion.distill import TurnMeter, fake_turn, generator_turn, is_generator_turn
from train.diffusion.gan_head import FakeScoreWithHead, GanHead
from train.diffusion.lora import add_lora, copy_lora, lora_factors, trainable
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


class GeneratorPhase:
    """The networks of the generator phase: the distilled generator and a fake score (a plain copy
    of the base with a GAN head), each with LoRA factors; the adapted base is the real score."""

    def __init__(self, cfg: FinetuneStageConfig, model: str, index: dict, base_path: Path):
        comps, sd = index["components"], cfg.edm.sigma_data
        entry = comps[cfg.generator]
        gen_dit, _ = load_dit(str(Path(model) / entry["path"]), f"finetune.generator={cfg.generator}", sigma_data=sd)
        fake_dit, _ = load_dit(str(base_path), "finetune.model", sigma_data=sd)
        self.sha256 = entry["sha256"]
        add_lora(gen_dit, cfg.rank, cfg.alpha, cfg.targets, seed=cfg.loop.seed + 1)
        add_lora(fake_dit, cfg.rank, cfg.alpha, cfg.targets, seed=cfg.loop.seed + 2)
        dcfg = cfg.distill
        blocks = dcfg.head.resolve_blocks(fake_dit.cfg.depth)
        head = GanHead(fake_dit.cfg.dim, len(blocks), dcfg.head.channels, dcfg.head.downsample)
        self.gen = Precond(gen_dit, sd)
        self.psi = FakeScoreWithHead(Precond(fake_dit, sd), head, blocks)
        # The generator runs with the layer budget its variant is served with (Presto-LS).
        counts = next((v.get("drop_schedule") for v in index["variants"].values() if v["component"] == cfg.generator), None)
        sched = DropSchedule.scaled(counts, gen_dit.cfg.depth, cfg.edm) if counts else None
        self.gen_kwargs = (lambda sigma: {"layers_dropped": sched(sigma)}) if sched else None


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
    base_path = Path(model) / base_entry["path"]
    dit, _ = load_dit(str(base_path), "finetune.model", sigma_data=cfg.edm.sigma_data)
    caches = latent_caches(run, data, cfg)
    lat = prepare_latent_data(run, data, cfg, dit.cfg.text_dim, caches)
    torch.manual_seed(cfg.loop.seed)  # the GAN head's init
    names = add_lora(dit, cfg.rank, cfg.alpha, cfg.targets, seed=cfg.loop.seed)
    model_p = Precond(dit, sigma_data=cfg.edm.sigma_data)
    two_phase = cfg.base_steps > 0 and cfg.generator in index["components"]
    if cfg.base_steps > 0 and not two_phase:
        run.print(f"finetune: {model} has no {cfg.generator!r} component; every step adapts the base")
    base_steps = cfg.base_steps if two_phase else run.max_steps
    n_train = sum(p.numel() for p in trainable(model_p))
    run.print(f"finetune: LoRA rank {cfg.rank} on {len(names)} layers of {model}'s base ({n_train / 1e3:.0f}k "
              f"trained of {dit.num_parameters() / 1e6:.1f}M) for {base_steps} steps"
              + (f", then {cfg.generator} for {run.max_steps - base_steps}" if two_phase else "")
              + f"; {len(lat.dataset)} clips, crops of {lat.frames} frames, {run.mixed_precision}")
    opt = run.adam(trainable(model_p))
    sched = run.lr_schedule(opt)
    if two_phase:
        ph = GeneratorPhase(cfg, model, index, base_path)
        opt_g = run.adam(trainable(ph.gen), lr=cfg.distill_lr)
        opt_f = run.adam(trainable(ph.psi), lr=cfg.distill_lr)
        sched_g, sched_f = run.lr_schedule(opt_g), run.lr_schedule(opt_f)
        model_p, gen_p, psi_p, opt, opt_g, opt_f = run.prepare(model_p, ph.gen, ph.psi, opt, opt_g, opt_f)
        meter = TurnMeter()
    else:
        model_p, opt = run.prepare(model_p, opt)
    heldout = lat.heldout_loss(run, data, cfg)
    losses = {}
    if heldout is not None:
        losses["plain"] = heldout(run.unwrap(model_p))  # the factors B start at zero: the plain model
        run.print(f"held-out DSM loss of the plain model: {losses['plain']:.4f}")
    run.restore()

    for batch in run.batches(lat.dataset, collate):
        if run.step < base_steps:
            # No beat grid: a person's files need not start on a downbeat, so a grid base adapts as
            # it does for its grid_dropout share, and keeps its grid projection for generation.
            x0, sigma, noise, cond = lat.dsm_inputs(run, batch, cfg)
            loss = masked_dsm_loss(model_p, x0, sigma, noise, batch["length"], cfg.edm.sigma_data, **cond)
            grad_norm = run.backward(loss, model_p, opt, sched)
            run.end_step(loss=loss, grad_norm=grad_norm)
        else:
            if run.step == base_steps and cfg.transfer_factors:  # once: a later resume restores them
                for net in (run.unwrap(gen_p).backbone, run.unwrap(psi_p).score.backbone):
                    copy_lora(run.unwrap(model_p).backbone, net)
            gen_turn = generator_phase_step(run, cfg, batch, lat, run.unwrap(model_p), gen_p, psi_p, ph,
                                            (opt_g, sched_g), (opt_f, sched_f), meter, run.step - base_steps)
            run.end_step(generator_turn=float(gen_turn))
            if run.stepped and (run.step % cfg.loop.log_every == 0 or run.done):
                run.log_mean(**meter.pop())
        if heldout is not None and run.stepped and run.step <= base_steps and (
                (cfg.eval_every and run.step % cfg.eval_every == 0) or run.step == base_steps):
            losses["adapted"] = heldout(run.unwrap(model_p))
            run.log(heldout_loss=losses["adapted"])

    def export() -> Path:
        if heldout is not None:  # the final base factors (a resumed run may not have evaluated them)
            losses["adapted"] = heldout(run.unwrap(model_p))
        factors = {"base": lora_factors(run.unwrap(model_p).backbone)}
        shas = {"base": base_entry["sha256"]}
        if two_phase and run.step > base_steps:
            factors[cfg.generator] = lora_factors(run.unwrap(gen_p).backbone)
            shas[cfg.generator] = ph.sha256
        clap = adapt_clap(model, index, str(data.root), cfg.clap_captions, cfg.rank, cfg.alpha, cfg.loop.seed)
        if clap is not None:
            factors["clap"], shas["clap"], clap_metrics = clap
            run.print(f"CLAP on their audio and captions, x100: {clap_metrics['their_audio_clap_before']:.1f} -> "
                      f"{clap_metrics['their_audio_clap_after']:.1f} (other prompts moved by "
                      f"{clap_metrics['anchor_drift']:.4f})")
        ingest_summary = Path(data.root) / "ingest.json"
        save_adapter(front.out, factors, cfg.rank, cfg.alpha, shas,
                     fp16=cfg.adapter_fp16, name=Path(front.out).name, made_from=str(model),
                     data={"root": str(data.root), "clips": len(lat.dataset),
                           **({"ingest": json.loads(ingest_summary.read_text())} if ingest_summary.is_file() else {})},
                     training={"steps": run.step, "base_steps": base_steps, "run": str(run.out_dir),
                               "lr": cfg.loop.lr, "distill_lr": cfg.distill_lr, "batch_size": cfg.loop.batch_size,
                               "targets": list(cfg.targets), "heldout_dsm_loss": losses,
                               **({"clap_captions": clap[2]} if clap is not None else {})})
        return Path(front.out)

    return run.finish(export=export)


def generator_phase_step(run, cfg: FinetuneStageConfig, batch: dict, lat, real, gen_p, psi_p, ph: GeneratorPhase,
                         gen_opt, fake_opt, meter: TurnMeter, k: int) -> bool:
    """Iteration ``k`` of the generator phase (Algorithm 1 with the adapted base as the real score):
    a generator turn after every ``fake_updates_per_gen`` fake-score turns. Returns whether it was
    the generator's turn."""
    dcfg = replace(cfg.distill, edm=cfg.edm)
    real.requires_grad_(False)  # the adapted base is the teacher now
    g = run.generator()
    emb, mask = lat.text.batch(batch["caption"], run.device)
    cond = dict(text=emb, text_mask=mask, bpm=batch["bpm"], uncond=False)
    x_real, length = batch["latents"], batch["length"]
    psi_raw = run.unwrap(psi_p)
    gen_turn = is_generator_turn(k, dcfg.fake_updates_per_gen)
    with run.autocast():
        if gen_turn:
            lora_psi = trainable(psi_raw)
            for p in lora_psi:
                p.requires_grad_(False)
            try:
                loss, metrics = generator_turn(dcfg, gen_p, psi_raw, real, x_real, cond, g, ph.gen_kwargs, length)
                metrics["gen_grad_norm"] = run.backward(loss, gen_p, *gen_opt, name="generator loss")
            finally:
                for p in lora_psi:
                    p.requires_grad_(True)
            fake_opt[0].zero_grad(set_to_none=True)
        else:
            loss, metrics = fake_turn(dcfg, run.unwrap(gen_p), psi_p, x_real, cond, g, ph.gen_kwargs, length)
            metrics["fake_grad_norm"] = run.backward(loss, psi_p, *fake_opt, name="fake score / discriminator loss")
            gen_opt[0].zero_grad(set_to_none=True)
    meter.add(**metrics)
    return gen_turn


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

"""Assemble a Presto model folder (presto_core.checkpoint layout) from trained components.

    python -m train.export --config train/configs/<scale>.json --out MODEL_DIR
        [--run RUN_DIR] [--checkpoint latest|STEP|DIR] [--vae DIR] [--clap DIR] [--fp16] [--int8] [--set ...]

Takes the base run's EMA weights from a checkpoint (default: the latest of RUN_DIR, default
runs/<config name>/base), the VAE and CLAP component folders named in the config (or given here),
and the held-out prompts of the corpus, and writes::

    MODEL_DIR/model_index.json  components (path + sha256), text_encoder, variants, default_variant,
                                prompts, sample_rate, max_duration
    MODEL_DIR/{vae,base,clap}/  config.json + model.safetensors
    MODEL_DIR/prompts.json      [{"prompt": caption, "bpm": bpm}, ...]

The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt


def base_variant(steps: int = 16, guidance: float = 0.8) -> dict:
    """The base score model's sampling defaults (paper A.1: DPM-Solver++(2S) with CFG++ w=0.8)."""
    return {"component": "base", "sampler": "dpmpp_2s", "steps": int(steps),
            "guidance": {"kind": "cfg_pp", "scale": float(guidance)}}


def heldout_prompts(data, limit: int = 32) -> list[dict]:
    """Up to ``limit`` example prompts [{"prompt", "bpm"}] from the corpus's held-out pieces
    (heldout_prompts.json, else the held-out records of metadata.jsonl, else the training ones)."""
    from train.data.dataset import read_metadata

    root = Path(data.root)
    records = []
    if (root / "heldout_prompts.json").is_file():
        records = json.loads((root / "heldout_prompts.json").read_text())
    if not records:
        records = read_metadata(root, data.heldout_split) or read_metadata(root, data.train_split)
    out = [{"prompt": r["caption"] if r.get("caption") else r["captions"][0], "bpm": float(r["bpm"])} for r in records]
    return out[: max(int(limit), 0)]


def _copy_component(src: Path, dst: Path, fp16: bool, quantize: str | None = None) -> str:
    """Copy (or, for fp16 or ``quantize``, re-save via :func:`ckpt.save_component`) one component;
    returns its sha256."""
    if fp16 or quantize:
        module, meta = ckpt.load_component(src)
        return ckpt.save_component(dst, module, module.cfg, meta=meta,
                                   dtype=torch.float16 if fp16 else None, quantize=quantize)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (ckpt.CONFIG, ckpt.WEIGHTS):
        if not (src / name).is_file():
            raise FileNotFoundError(f"component folder {src} has no {name}")
        shutil.copyfile(src / name, dst / name)
    return ckpt.sha256_file(dst / ckpt.WEIGHTS)


def build_model_folder(out: str | os.PathLike, *, vae, base, clap=None, text_encoder: dict | None = None,
                       prompts: list | None = None, fp16: bool = False, steps: int = 16,
                       guidance: float = 0.8, max_duration: float = 32.0, extra_variants: dict | None = None,
                       quantize: str | None = None) -> Path:
    """Write a complete model folder at ``out`` from component folders ``vae``, ``base`` (kind dit,
    meta holding "edm") and optionally ``clap``. ``extra_variants`` maps variant name -> (spec dict,
    component folder) for later stages (Presto-L/S/LS). ``quantize="int8"`` stores the diffusion
    components (base and extra variants; not the VAE or CLAP) int8-quantized, see
    :func:`ckpt.save_component`. Returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        sources = {"vae": Path(vae), "base": Path(base)}
        if clap:
            sources["clap"] = Path(clap)
        variants = {"base": base_variant(steps, guidance)}
        for name, (spec, folder) in (extra_variants or {}).items():
            sources[spec["component"]] = Path(folder)
            variants[name] = spec
        diffusion = {spec["component"] for spec in variants.values()}
        comps = {name: {"path": name, "sha256": _copy_component(src, tmp / name, fp16,
                                                                quantize if name in diffusion else None)}
                 for name, src in sources.items()}
        vae_cfg = ckpt.read_component_config(tmp / "vae")["config"]
        (tmp / "prompts.json").write_text(json.dumps(prompts or [], indent=1) + "\n")
        ckpt.write_index(tmp, {
            "components": comps, "text_encoder": text_encoder or {"kind": "minilm", "max_tokens": 64},
            "variants": variants, "default_variant": "base", "prompts": "prompts.json",
            "sample_rate": int(vae_cfg["sample_rate"]), "max_duration": float(max_duration),
        })
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_base_checkpoint(ckpt_dir: Path, cfg, dst: Path) -> Path:
    """Save the EMA weights of a base-run checkpoint as a ``base`` component folder at ``dst``."""
    from presto_core.dit import DiT
    from train.checkpointing import load_ema_weights, read_run_state
    from train.loop import to_dict

    state = load_ema_weights(ckpt_dir / "ema_model.safetensors")
    dit = DiT(cfg.model)
    prefix = "backbone."  # the EMA tracks Precond(DiT)
    dit.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    step = read_run_state(ckpt_dir)["step"]
    ckpt.save_component(dst, dit, cfg.model, meta={"edm": to_dict(cfg.edm), "step": step})
    return dst


def main(argv: list[str] | None = None) -> int:
    import argparse

    from train.base import BaseStageConfig
    from train.checkpointing import CheckpointManager
    from train.loop import ConfigError, default_run_dir, load_config

    ap = argparse.ArgumentParser(prog="python -m train.export", description="Assemble a Presto model folder")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--run", default=None, help="base run folder (default runs/<config name>/base)")
    ap.add_argument("--checkpoint", default="latest", help="'latest', a step number or a checkpoint folder")
    ap.add_argument("--vae", default=None, help="VAE component folder (default: base.vae of the config)")
    ap.add_argument("--clap", default=None, help="CLAP component folder (default: base.clap of the config)")
    ap.add_argument("--fp16", action="store_true", help="store weights in float16 (smaller embedded assets)")
    ap.add_argument("--int8", action="store_true",
                    help="store the diffusion transformer's large weight matrices as int8 with per-channel scales "
                         "(other floats float16); dequantized to float32 at load")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    try:
        data, cfg, name = load_config(a.config, "base", BaseStageConfig, a.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(a.run) if a.run else default_run_dir(name, "base")
    ck = CheckpointManager(run_dir / "checkpoints").resolve(a.checkpoint)
    if ck is None:
        print(f"error: {run_dir} has no checkpoint to export", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        comp = export_base_checkpoint(ck, cfg, Path(tmp) / "base")
        out = build_model_folder(
            a.out, vae=a.vae or cfg.vae, base=comp, clap=a.clap or cfg.clap or None, text_encoder=cfg.text_encoder,
            prompts=heldout_prompts(data, cfg.num_prompts), fp16=a.fp16 or cfg.export_fp16,
            steps=cfg.sampler_steps, guidance=cfg.guidance_scale, max_duration=cfg.max_duration,
            quantize="int8" if a.int8 else None,
        )
    print(f"exported {ck} -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

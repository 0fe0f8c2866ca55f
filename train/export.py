"""Assemble a Presto model folder (presto_core.checkpoint layout) from trained components.

    python -m train.export --config train/configs/<scale>.json --out MODEL_DIR
        [--run RUN_DIR] [--checkpoint latest|STEP|DIR] [--base DIR] [--vae DIR] [--clap DIR] [--m2s DIR] [--fp16]
        [--int8] [--add-variants MODEL_DIR[:NAME,...] ...] [--default-variant NAME] [--results JSON] [--set ...]

Takes the base run's EMA weights from a checkpoint (default: the latest of RUN_DIR, default
runs/<config name>/base; or an already exported base component, ``--base DIR``), the VAE and CLAP component folders named in the config (or given here),
and the held-out prompts of the corpus, and writes::

    MODEL_DIR/model_index.json  components (path + sha256), text_encoder, variants, default_variant,
                                prompts, sample_rate, max_duration
    MODEL_DIR/{vae,base,clap,m2s}/  config.json + model.safetensors (m2s: with ``--m2s``, which
                                makes the folder's clips stereo by default)
    MODEL_DIR/prompts.json      [{"prompt": caption, "bpm": bpm}, ...]
    MODEL_DIR/README.md         the model card: components, variants, training data, measured numbers
                                (``--results``: a train.eval report), limits

``--into MODEL_DIR --m2s DIR`` instead adds the mono-to-stereo component to an existing model folder
(no other file changes; the model card is not rewritten), e.g. the shipped default.

``--add-variants`` adds the distilled variants (and their DiT components) of other model folders,
e.g. the RUN_DIR/model folders of the Presto-L, Presto-S and Presto-LS runs (``DIR:a,b``: only
variants a and b); their base variants are left out, since this export supplies the base model. ``--fp16``/``--int8`` apply to the added
components too. ``--default-variant`` (default "base") picks the variant loaded by default.
Bad input prints one line and exits with status 2.

The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from presto_core import checkpoint as ckpt
from presto_core.dit import DiT
from train.diffusion.common import dit_config
from train.diffusion.configs import BaseStageConfig
from train.diffusion.model_card import corpus_summary
from train.diffusion.model_folder import (
    add_component, build_model_folder, check_default_variant, heldout_prompts, variants_from_model_folders,
)
from train.infra.checkpointing import CheckpointManager, load_ema_weights, read_run_state
from train.infra.config import ConfigError, default_run_dir, load_config, to_dict


def export_base_checkpoint(ckpt_dir: Path, cfg, dst: Path) -> Path:
    """Save the EMA weights of a base-run checkpoint as a ``base`` component folder at ``dst``."""
    state = load_ema_weights(ckpt_dir / "ema_model.safetensors")
    dit = DiT(cfg.model)
    prefix = "backbone."  # the EMA tracks Precond(DiT)
    dit.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    step = read_run_state(ckpt_dir)["step"]
    ckpt.save_component(dst, dit, cfg.model, meta={"edm": to_dict(cfg.edm), "step": step})
    return dst


def read_results(path: str) -> dict:
    """A ``train.eval`` report (its JSON) for the model card; ValueError naming the file if unreadable."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--results {path}: not a readable train.eval JSON report ({e})") from None
    if not isinstance(results, dict) or not isinstance(results.get("quality", []), list):
        raise ValueError(f"--results {path}: not a train.eval report (no 'quality' list)")
    return results


def _export(a) -> tuple[Path, Path]:
    """The export :func:`main` describes: (checkpoint, model folder). Bad input raises ConfigError,
    ValueError or OSError."""
    data, cfg, name = load_config(a.config, "base", BaseStageConfig, a.overrides)
    # Checked before the base export so a typo costs no time.
    extra = variants_from_model_folders(a.add_variants)
    check_default_variant(a.default_variant, ["base", *extra])
    results = read_results(a.results) if a.results else None
    with tempfile.TemporaryDirectory() as tmp:
        if a.base:
            dit_config(a.base, "--base")  # a DiT component, checked (config only) before anything is written
            ck = comp = Path(a.base)
        else:
            run_dir = Path(a.run) if a.run else default_run_dir(name, "base")
            ck = CheckpointManager(run_dir / "checkpoints").resolve(a.checkpoint)
            if ck is None:
                raise FileNotFoundError(f"{run_dir} has no checkpoint to export")
            comp = export_base_checkpoint(ck, cfg, Path(tmp) / "base")
        return ck, build_model_folder(
            a.out, vae=a.vae or cfg.vae, base=comp, clap=a.clap or cfg.clap or None, text_encoder=cfg.text_encoder,
            prompts=heldout_prompts(data, cfg.num_prompts), fp16=a.fp16 or cfg.export_fp16,
            steps=cfg.sampler_steps, guidance=cfg.guidance_scale, max_duration=cfg.max_duration,
            quantize="int8" if a.int8 else None, extra_variants=extra, default_variant=a.default_variant,
            corpus=corpus_summary(data.root), results=results, m2s=a.m2s,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.export", description="Assemble a Presto model folder")
    ap.add_argument("--config", default=None, help="train/configs/<scale>.json (needed unless --into)")
    ap.add_argument("--out", default=None, help="model folder to write (needed unless --into)")
    ap.add_argument("--into", default=None, metavar="MODEL_DIR",
                    help="add the --m2s component to this existing model folder and change nothing else")
    ap.add_argument("--run", default=None, help="base run folder (default runs/<config name>/base)")
    ap.add_argument("--checkpoint", default="latest", help="'latest', a step number or a checkpoint folder")
    ap.add_argument("--base", default=None, metavar="DIR",
                    help="an exported base DiT component folder to use instead of a base run's checkpoint "
                         "(e.g. another model folder's base/)")
    ap.add_argument("--vae", default=None, help="VAE component folder (default: base.vae of the config)")
    ap.add_argument("--clap", default=None, help="CLAP component folder (default: base.clap of the config)")
    ap.add_argument("--m2s", default=None, metavar="DIR",
                    help="a mono-to-stereo component folder (train.m2s's RUN_DIR/export/m2s): clips become stereo")
    ap.add_argument("--fp16", action="store_true", help="store weights in float16 (smaller embedded assets)")
    ap.add_argument("--int8", action="store_true",
                    help="store the diffusion transformers' large weight matrices as int8 with per-channel scales "
                         "(other floats float16); dequantized to float32 at load")
    ap.add_argument("--add-variants", nargs="+", default=[], metavar="MODEL_DIR[:NAME,...]",
                    help="model folders (e.g. runs/<name>/presto_l/model) whose non-base variants are added; "
                         "DIR:a,b adds only variants a and b of DIR")
    ap.add_argument("--default-variant", default="base", metavar="NAME", help="variant loaded by default")
    ap.add_argument("--results", default=None, metavar="JSON",
                    help="a train.eval report of these weights (e.g. train/results-tiny.json): its FAD, CLAP and "
                         "latency rows go into the model card")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    if a.into:
        if not a.m2s:
            ap.error("--into needs --m2s DIR (the component to add)")
        try:
            sha = add_component(a.into, "m2s", a.m2s, "m2s", fp16=a.fp16)
        except (ValueError, OSError) as e:
            print(f"error: {' '.join(str(e).splitlines())}", file=sys.stderr)
            return 2
        print(f"added {a.m2s} -> {a.into}/m2s (sha256 {sha[:12]})", file=sys.stderr)
        return 0
    if not a.config or not a.out:
        ap.error("--config and --out are required (or --into MODEL_DIR --m2s DIR)")
    try:
        ck, out = _export(a)
    except (ValueError, OSError) as e:  # ConfigError and PrestoError are ValueErrors
        what = "config error" if isinstance(e, ConfigError) else "error"
        print(f"{what}: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 2
    print(f"exported {ck} -> {out} (variants {', '.join(ckpt.read_index(out)['variants'])})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

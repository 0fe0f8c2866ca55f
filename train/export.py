"""Assemble a Presto model folder (presto_core.checkpoint layout) from trained components.

    python -m train.export --config train/configs/<scale>.json --out MODEL_DIR
        [--run RUN_DIR] [--checkpoint latest|STEP|DIR] [--base DIR] [--vae DIR] [--clap DIR] [--fp16]
        [--int8] [--add-variants MODEL_DIR[:NAME,...] ...] [--default-variant NAME] [--set ...]

Takes the base run's EMA weights from a checkpoint (default: the latest of RUN_DIR, default
runs/<config name>/base; or an already exported base component, ``--base DIR``), the VAE and CLAP component folders named in the config (or given here),
and the held-out prompts of the corpus, and writes::

    MODEL_DIR/model_index.json  components (path + sha256), text_encoder, variants, default_variant,
                                prompts, sample_rate, max_duration
    MODEL_DIR/{vae,base,clap}/  config.json + model.safetensors
    MODEL_DIR/prompts.json      [{"prompt": caption, "bpm": bpm}, ...]

``--add-variants`` adds the distilled variants (and their DiT components) of other model folders,
e.g. the RUN_DIR/model folders of the Presto-L, Presto-S and Presto-LS runs (``DIR:a,b``: only
variants a and b); their base variants are left out, since this export supplies the base model. ``--fp16``/``--int8`` apply to the added
components too. ``--default-variant`` (default "base") picks the variant loaded by default.
Bad input prints one line and exits with status 2.

The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from presto_core import checkpoint as ckpt
from presto_core.errors import PrestoError
from presto_core.request import VariantSpec

# Component of the base variant; the model folder being written always supplies it.
BASE = "base"


def base_variant(steps: int = 16, guidance: float = 0.8) -> dict:
    """The base score model's sampling defaults (paper A.1: DPM-Solver++(2S) with CFG++ w=0.8)."""
    return {"component": BASE, "sampler": "dpmpp_2s", "steps": int(steps),
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


def _same_component(a: Path, b: Path) -> bool:
    """Whether component folders ``a`` and ``b`` hold identical config and weights files."""
    if a.resolve() == b.resolve():
        return True
    return all((a / n).is_file() and (b / n).is_file() and ckpt.sha256_file(a / n) == ckpt.sha256_file(b / n)
               for n in (ckpt.CONFIG, ckpt.WEIGHTS))


def check_default_variant(default: str, names: Iterable[str]) -> None:
    """Raise ValueError unless ``default`` is one of the variant ``names`` being written."""
    names = list(names)
    if default not in names:
        raise ValueError(f"default variant {default!r} is not one of the variants written: {sorted(names)}")


def split_variant_source(arg: str) -> tuple[str, list[str] | None]:
    """``"DIR"`` -> (DIR, None); ``"DIR:a,b"`` -> (DIR, ["a", "b"]) (only those variants of DIR)."""
    head, sep, tail = arg.rpartition(":")
    if sep and head and tail and "/" not in tail:
        return head, [n for n in tail.split(",") if n]
    return arg, None


def variants_from_model_folder(folder: str | os.PathLike, names: Iterable[str] | None = None
                               ) -> dict[str, tuple[dict, Path]]:
    """The variants of model folder ``folder`` that do not sample its base model (only ``names``,
    if given), as :func:`build_model_folder`'s ``extra_variants``: name -> (spec, component folder).

    Each component is loaded once with the index's SHA-256 (as the pipeline does), so a corrupt
    or incomplete run export fails here rather than being copied; PrestoError otherwise."""
    folder = Path(folder)
    index = ckpt.read_index(folder)
    if names is not None:
        names = list(names)
        unknown = sorted(set(names) - set(index["variants"]))
        if unknown:
            raise PrestoError(f"{folder} has no variant {', '.join(map(repr, unknown))}; "
                              f"it has {sorted(index['variants'])}")
    out = {}
    for name, spec in index["variants"].items():
        component = VariantSpec.from_dict(name, spec).component
        if component == BASE or (names is not None and name not in names):
            continue
        entry = index["components"].get(component)
        if not isinstance(entry, dict) or "path" not in entry:
            raise PrestoError(f"{folder / ckpt.INDEX}: variant {name!r} names no component {component!r}")
        path = folder / entry["path"]
        module, _ = ckpt.load_component(path, entry.get("sha256"))
        if ckpt.kind_of(module) != "dit":
            raise PrestoError(f"{path}: variant {name!r} needs a dit component, not {ckpt.kind_of(module)!r}")
        out[name] = (dict(spec), path)
    return out


def variants_from_model_folders(folders: Iterable[str | os.PathLike]) -> dict[str, tuple[dict, Path]]:
    """:func:`variants_from_model_folder` of each folder (``"DIR:a,b"`` takes only variants a and b
    of DIR), merged; a variant name found in two folders raises PrestoError (which one is meant is
    ambiguous)."""
    merged: dict[str, tuple[dict, Path]] = {}
    origin: dict[str, Path] = {}
    for arg in folders:
        src, names = split_variant_source(str(arg))
        folder = Path(src)
        for name, entry in variants_from_model_folder(folder, names).items():
            if name in merged:
                raise PrestoError(f"variant {name!r} is in both {origin[name]} and {folder}; "
                                  "add it from one folder only")
            merged[name], origin[name] = entry, folder
    return merged


def build_model_folder(out: str | os.PathLike, *, vae, base, clap=None, text_encoder: dict | None = None,
                       prompts: list | None = None, fp16: bool = False, steps: int = 16,
                       guidance: float = 0.8, max_duration: float = 32.0, extra_variants: dict | None = None,
                       quantize: str | None = None, default_variant: str = "base") -> Path:
    """Write a complete model folder at ``out`` from component folders ``vae``, ``base`` (kind dit,
    meta holding "edm") and optionally ``clap``. ``extra_variants`` maps variant name -> (spec dict,
    component folder) for later stages (Presto-L/S/LS); variants may share a component only if its
    files are identical. ``quantize="int8"`` stores the diffusion components (base and extra
    variants; not the VAE or CLAP) int8-quantized, see :func:`ckpt.save_component`.
    ``default_variant`` must name a written variant. Bad variants raise ValueError before anything
    is written. Returns ``out``."""
    sources = {"vae": Path(vae), BASE: Path(base)}
    if clap:
        sources["clap"] = Path(clap)
    variants = {"base": base_variant(steps, guidance)}
    for name, (spec, folder) in (extra_variants or {}).items():
        if name in variants:
            raise ValueError(f"variant name {name!r} is reserved for the base model")
        component, folder = spec["component"], Path(folder)
        if component in ("", ".", "..") or Path(component).name != component:  # it names a folder in ``out``
            raise ValueError(f"variant {name!r}: component name {component!r} is not a plain folder name")
        if component in sources and not _same_component(sources[component], folder):
            raise ValueError(f"variant {name!r}: component {component!r} at {folder} differs from the "
                             f"{component!r} already in the model ({sources[component]})")
        sources[component] = folder
        variants[name] = spec
    check_default_variant(default_variant, variants)
    diffusion = {spec["component"] for spec in variants.values()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        comps = {name: {"path": name, "sha256": _copy_component(src, tmp / name, fp16,
                                                                quantize if name in diffusion else None)}
                 for name, src in sources.items()}
        vae_cfg = ckpt.read_component_config(tmp / "vae")["config"]
        (tmp / "prompts.json").write_text(json.dumps(prompts or [], indent=1) + "\n")
        ckpt.write_index(tmp, {
            "components": comps, "text_encoder": text_encoder or {"kind": "minilm", "max_tokens": 64},
            "variants": variants, "default_variant": default_variant, "prompts": "prompts.json",
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


def _export(a) -> tuple[Path, Path]:
    """The export :func:`main` describes: (checkpoint, model folder). Bad input raises ConfigError,
    ValueError or OSError."""
    from train.base import BaseStageConfig
    from train.checkpointing import CheckpointManager
    from train.loop import default_run_dir, load_config

    data, cfg, name = load_config(a.config, "base", BaseStageConfig, a.overrides)
    # Checked before the base export so a typo costs no time.
    extra = variants_from_model_folders(a.add_variants)
    check_default_variant(a.default_variant, ["base", *extra])
    with tempfile.TemporaryDirectory() as tmp:
        if a.base:
            from train.base import dit_config

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
        )


def main(argv: list[str] | None = None) -> int:
    import argparse

    from train.loop import ConfigError

    ap = argparse.ArgumentParser(prog="python -m train.export", description="Assemble a Presto model folder")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--run", default=None, help="base run folder (default runs/<config name>/base)")
    ap.add_argument("--checkpoint", default="latest", help="'latest', a step number or a checkpoint folder")
    ap.add_argument("--base", default=None, metavar="DIR",
                    help="an exported base DiT component folder to use instead of a base run's checkpoint "
                         "(e.g. another model folder's base/)")
    ap.add_argument("--vae", default=None, help="VAE component folder (default: base.vae of the config)")
    ap.add_argument("--clap", default=None, help="CLAP component folder (default: base.clap of the config)")
    ap.add_argument("--fp16", action="store_true", help="store weights in float16 (smaller embedded assets)")
    ap.add_argument("--int8", action="store_true",
                    help="store the diffusion transformers' large weight matrices as int8 with per-channel scales "
                         "(other floats float16); dequantized to float32 at load")
    ap.add_argument("--add-variants", nargs="+", default=[], metavar="MODEL_DIR[:NAME,...]",
                    help="model folders (e.g. runs/<name>/presto_l/model) whose non-base variants are added; "
                         "DIR:a,b adds only variants a and b of DIR")
    ap.add_argument("--default-variant", default="base", metavar="NAME", help="variant loaded by default")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
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

"""Writing Presto model folders (presto_core.checkpoint layout) from trained components: the
model index with its variants, the held-out prompts, the model card, and the one export every
latent-diffusion stage ends with."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from presto_core import checkpoint as ckpt
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import Precond
from presto_core.errors import PrestoError
from presto_core.request import VariantSpec
from train.data.dataset import read_metadata
from train.diffusion.model_card import corpus_summary, write_model_card
from train.infra.config import DataConfig, to_dict

# Component of the base variant; the model folder being written always supplies it.
BASE = "base"


def variant_dict(component: str, sampler: str, steps: int, guidance: float | None = None,
                 drop_schedule: Iterable[int] | None = None) -> dict:
    """One model_index.json variant: CFG++ with weight ``guidance`` (None: unguided, as the distilled
    generators sample) and an optional drop schedule (five counts at the 28-block reference)."""
    spec = VariantSpec(name=component, component=component, sampler=sampler, steps=int(steps),
                       guidance_kind="none" if guidance is None else "cfg_pp",
                       guidance_scale=0.0 if guidance is None else float(guidance),
                       drop_schedule=tuple(drop_schedule) if drop_schedule else None)
    return spec.to_dict()


def base_variant(steps: int = 16, guidance: float = 0.8) -> dict:
    """The base score model's sampling defaults (paper A.1: DPM-Solver++(2S) with CFG++ w=0.8)."""
    return variant_dict(BASE, "dpmpp_2s", steps, guidance)


def heldout_prompts(data, limit: int = 32) -> list[dict]:
    """Up to ``limit`` example prompts [{"prompt", "bpm"}] from the corpus's held-out pieces
    (heldout_prompts.json, else the held-out records of metadata.jsonl, else the training ones)."""
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
                       quantize: str | None = None, default_variant: str = "base",
                       corpus: dict | None = None, results: dict | None = None, m2s=None) -> Path:
    """Write a complete model folder at ``out`` from component folders ``vae``, ``base`` (kind dit,
    meta holding "edm") and optionally ``clap`` and ``m2s`` (mono-to-stereo, same sample rate as
    the VAE). ``extra_variants`` maps variant name -> (spec dict,
    component folder) for later stages (Presto-L/S/LS); variants may share a component only if its
    files are identical. ``quantize="int8"`` stores the diffusion components (base and extra
    variants; not the VAE or CLAP) int8-quantized, see :func:`ckpt.save_component`.
    ``default_variant`` must name a written variant. The model card (README.md) records ``corpus``
    (:func:`train.diffusion.model_card.corpus_summary`) and ``results`` (a ``train.eval`` report) when
    given. Bad variants raise ValueError before anything is written. Returns ``out``."""
    sources = {"vae": Path(vae), BASE: Path(base)}
    if clap:
        sources["clap"] = Path(clap)
    if m2s:
        sources["m2s"] = Path(m2s)
        kind = ckpt.read_component_config(m2s)
        vae_rate = ckpt.read_component_config(vae)["config"].get("sample_rate")
        if kind["kind"] != "m2s":
            raise ValueError(f"{m2s} holds a {kind['kind']!r} component, not a mono-to-stereo one ('m2s')")
        if kind["config"].get("sample_rate", 44100) != vae_rate:
            raise ValueError(f"{m2s} runs at {kind['config'].get('sample_rate', 44100)} Hz but the VAE at {vae_rate} Hz")
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
        write_model_card(tmp, corpus, results)
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


def add_component(folder: str | os.PathLike, name: str, src: str | os.PathLike, kind: str,
                  fp16: bool = False) -> str:
    """Add (or replace) component ``name`` of ``kind`` (e.g. 'm2s') in an existing model folder from
    the component folder ``src``, leaving every other file as it is; its sample rate must match the
    VAE's. The component is written beside the folder's files first and the index is replaced
    atomically, so a failure leaves the folder as it was. Returns the component's sha256."""
    folder, src = Path(folder), Path(src)
    index = ckpt.read_index(folder)
    found = ckpt.read_component_config(src)
    if found["kind"] != kind:
        raise ValueError(f"{src} holds a {found['kind']!r} component, not {kind!r}")
    vae_rate = ckpt.read_component_config(folder / index["components"]["vae"]["path"])["config"].get("sample_rate")
    if found["config"].get("sample_rate", vae_rate) != vae_rate:
        raise ValueError(f"{src} runs at {found['config']['sample_rate']} Hz but the model's VAE at {vae_rate} Hz")
    if any(spec["component"] == name for spec in index["variants"].values()):
        raise ValueError(f"component name {name!r} is a variant's DiT in {folder}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    try:
        sha = _copy_component(src, tmp / name, fp16)
        old = folder / name
        if old.exists():
            shutil.rmtree(old)
        os.replace(tmp / name, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    index["components"][name] = {"path": name, "sha256": sha}
    index.pop("format", None)
    index.pop("version", None)
    ckpt.write_index(folder, index)
    return sha


def optional_clap(path: str, log: Callable[[str], None]) -> str | None:
    """The CLAP component folder ``path`` if it holds one; else None (with a note when one was named)."""
    if path and (Path(path) / ckpt.CONFIG).is_file():
        return path
    if path:
        log(f"note: no CLAP component at {path}; exporting without CLAP rejection")
    return None


def export_stage(run, data: DataConfig, cfg, ema, model_cfg: DiTConfig, component: str, *, base: str | Path | None,
                 steps: int, guidance: float, variant: dict | None = None, meta: dict | None = None) -> Path:
    """The end of every latent-diffusion stage (main process): the EMA weights become the DiT
    ``component`` (RUN_DIR/export/<component>) and a complete model folder RUN_DIR/model holds the
    base model ``base`` (sampled with ``steps`` and CFG++ ``guidance``; None when the component is
    the base itself) and otherwise also ``variant`` (its model_index.json entry) named after the
    component. ``cfg`` is the stage's :class:`train.diffusion.configs.LatentStageConfig`. Returns
    RUN_DIR/model."""
    dit = ema.copy_to(Precond(DiT(model_cfg), cfg.edm.sigma_data)).backbone
    comp = run.out_dir / "export" / component
    ckpt.save_component(comp, dit, model_cfg, meta={"edm": to_dict(cfg.edm), "step": run.step, "stage": run.stage,
                                                    **(meta or {})})
    extra = {} if component == BASE else {component.replace("_", "-"): (variant, comp)}
    return build_model_folder(
        run.out_dir / "model", vae=cfg.vae, base=comp if component == BASE else base,
        clap=optional_clap(cfg.clap, run.print), text_encoder=cfg.text_encoder,
        prompts=heldout_prompts(data, cfg.num_prompts), fp16=cfg.export_fp16, steps=steps, guidance=guidance,
        max_duration=cfg.max_duration, extra_variants=extra, corpus=corpus_summary(data.root),
    )

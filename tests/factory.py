"""Build tiny, randomly initialised Presto model folders for tests of the loading and
generation plumbing (never for claims about trained behaviour)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import EDMConfig
from presto_core.stereo import MonoToStereo, StereoConfig

MICRO_VAE = dict(sample_rate=16000, hop=320, latent_channels=8, enc_channels=(8, 16, 16, 32, 32),
                 enc_strides=(2, 4, 5, 8), dec_dim=32, dec_blocks=1, dec_upsample=4, dec_up_dim=16,
                 dec_up_blocks=1)
MICRO_DIT = dict(latent_channels=8, dim=64, depth=4, heads=2, text_dim=384, freq_dim=64)
MICRO_M2S = dict(sample_rate=16000, n_fft=256, hop=64, bands=8, channels=8, dilations=(1, 2))

VARIANTS = {
    "base": {"component": "base", "sampler": "dpmpp_2s", "steps": 4, "guidance": {"kind": "cfg_pp", "scale": 0.8}},
    "presto-l": {"component": "presto_l", "sampler": "dpmpp_2s", "steps": 4,
                 "guidance": {"kind": "cfg_pp", "scale": 0.8}, "drop_schedule": [14, 12, 8, 4, 0]},
    "presto-s": {"component": "presto_s", "sampler": "pingpong", "steps": 2, "guidance": {"kind": "none"}},
    "presto-ls": {"component": "presto_ls", "sampler": "pingpong", "steps": 2, "guidance": {"kind": "none"},
                  "drop_schedule": [12, 8, 8, 0, 0]},
}


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Add seeded noise to every parameter, so zero-initialised output layers make outputs
    depend on inputs. Returns the module."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def make_model_folder(folder: str | Path, variants=("base", "presto-ls"), with_clap: bool = True,
                      default_variant: str | None = None, seed: int = 0, with_m2s: bool = False,
                      max_duration: float = 32.0, beat_grid: bool = False) -> Path:
    """Write a complete micro model folder (VAE, DiT per variant, optional CLAP and mono-to-stereo
    components, prompts); ``beat_grid``: DiTs with the beat-grid condition."""
    folder = Path(folder)
    torch.manual_seed(seed)
    comps = {}
    vae_cfg = VAEConfig(**MICRO_VAE)
    comps["vae"] = {"path": "vae", "sha256": ckpt.save_component(folder / "vae", AudioVAE(vae_cfg), vae_cfg)}
    for i, name in enumerate(variants):
        spec = VARIANTS[name]
        cfg = DiTConfig(**MICRO_DIT, budget_conditioning=bool(spec.get("drop_schedule")), beat_grid=beat_grid)
        dit = DiT(cfg)
        perturb(dit, seed + i)
        comps[spec["component"]] = {
            "path": spec["component"],
            "sha256": ckpt.save_component(folder / spec["component"], dit, cfg,
                                          meta={"edm": ckpt.config_to_dict(EDMConfig())}),
        }
    if with_clap:
        from presto_core.clap import ClapConfig, EmbeddedClap

        ccfg = ClapConfig()
        comps["clap"] = {"path": "clap", "sha256": ckpt.save_component(folder / "clap", EmbeddedClap(ccfg), ccfg)}
    if with_m2s:
        mcfg = StereoConfig(**MICRO_M2S)
        m2s = perturb(MonoToStereo(mcfg), seed + 99, scale=0.2)
        comps["m2s"] = {"path": "m2s", "sha256": ckpt.save_component(folder / "m2s", m2s, mcfg)}
    (folder / "prompts.json").write_text(json.dumps([{"prompt": "dreamy ambient pad, 70 BPM", "bpm": 70}]))
    ckpt.write_index(folder, {
        "components": comps,
        "text_encoder": {"kind": "minilm", "max_tokens": 64},
        "variants": {v: VARIANTS[v] for v in variants},
        "default_variant": default_variant or variants[0],
        "prompts": "prompts.json",
        "sample_rate": vae_cfg.sample_rate,
        "max_duration": max_duration,
    })
    return folder


LORA_MODULES = ("blocks.0.attn.qkv", "blocks.1.mlp.w2", "blocks.3.attn.out")  # Linear layers of the micro DiT


def random_lora_factors(pipe, comp: str, rank: int, seed: int, modules=LORA_MODULES, scale: float = 0.3) -> dict:
    """{module: (A (rank, in), B (out, rank))} of seeded random factors for ``comp``'s backbone in a
    loaded pipeline (large enough that an adapted clip differs audibly from the plain one)."""
    g = torch.Generator().manual_seed(seed)
    backbone = next(p.backbone for s, p in pipe.variants.values() if s.component == comp)
    mods = dict(backbone.named_modules())
    return {name: (torch.randn(rank, mods[name].in_features, generator=g) * scale,
                   torch.randn(mods[name].out_features, rank, generator=g) * scale) for name in modules}


def make_adapter(model_dir: str | Path, out: str | Path, components=("base", "presto_ls"), rank: int = 4,
                 seed: int = 1, name: str | None = None) -> Path:
    """Write a random-factor adapter folder for the model folder ``model_dir`` (its components'
    hashes recorded, as train.finetune does); returns ``out``."""
    from presto_core.adapters import save_adapter
    from presto_core.pipeline import PrestoPipeline

    pipe = PrestoPipeline.from_pretrained(model_dir, device="cpu", precision="fp32")
    factors = {c: random_lora_factors(pipe, c, rank, seed + k) for k, c in enumerate(components)}
    save_adapter(out, factors, rank=rank, alpha=2.0 * rank, base_sha256=pipe.component_sha256, name=name)
    return Path(out)

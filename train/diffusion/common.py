"""What every latent-diffusion stage (base, Presto-L, Presto-S, Presto-LS) shares at run time: the
latent caches of the corpus, the set-up of text and data, the held-out DSM loss, and loading the
VAE and DiT components a stage starts from (the configs are in configs.py)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt
from presto_core.dit import DiT, DiTConfig, beat_positions
from presto_core.edm import sample_sigmas
from presto_core.text import load_text_encoder
from train.data.dataset import collate
from train.data.latents import LatentDataset, encode_latents
from train.data.text_cache import TextCache
from train.diffusion.configs import DSMStageConfig, LatentStageConfig
from train.diffusion.losses import masked_dsm_loss
from train.infra.config import ConfigError, DataConfig
from train.infra.run import Run


def crop_beats(start_s: torch.Tensor, bpm: torch.Tensor, frames: int, frame_rate: float) -> torch.Tensor:
    """(B, frames) beat position of every frame of latent crops starting ``start_s`` (B,) seconds
    into their pieces at ``bpm`` (B,): corpus pieces start on a downbeat, so beat 0 is the file's
    first sample. What a ``beat_grid`` DiT takes as ``beats``; other DiTs ignore it."""
    return beat_positions(start_s.float() * bpm.float() / 60.0, bpm, frames, frame_rate, device=bpm.device)


class HeldoutLoss:
    """Weighted DSM loss of a denoiser on fixed held-out crops, noise and sigmas (the 8 quantiles
    1/16 ... 15/16 of the training distribution per crop), all conditional: a comparable number
    from step to step and from run to run."""

    def __init__(self, cache: Path, frames: int, cfg: DSMStageConfig, text: TextCache, run: Run):
        ds = LatentDataset(cache, frames=frames, seed=cfg.loop.seed + 1)
        self.frame_rate = ds.frame_rate
        self.batch = collate([ds[i] for i in range(min(len(ds), cfg.eval_items))])
        q = torch.arange(1, 16, 2, dtype=torch.float64) / 16
        self.sigmas = (cfg.edm.p_mean + cfg.edm.p_std * math.sqrt(2) * torch.erfinv(2 * q - 1)).exp().tolist()
        self.cfg, self.text, self.run = cfg, text, run

    @torch.no_grad()
    def __call__(self, denoiser) -> float:
        dev, n, chunk = self.run.device, len(self.batch["caption"]), self.cfg.loop.batch_size
        total = 0.0
        for i, sigma in enumerate(self.sigmas):
            noise = torch.randn(self.batch["latents"].shape, generator=torch.Generator().manual_seed(i))
            for j in range(0, n, chunk):
                x0, length, bpm, start = (self.batch[k][j: j + chunk].to(dev)
                                          for k in ("latents", "length", "bpm", "start_s"))
                emb, mask = self.text.batch(self.batch["caption"][j: j + chunk], dev)
                beats = crop_beats(start, bpm, x0.shape[-1], self.frame_rate)
                with self.run.autocast():
                    loss = masked_dsm_loss(denoiser, x0, torch.full((x0.shape[0],), sigma, device=dev),
                                           noise[j: j + chunk].to(dev), length, self.cfg.edm.sigma_data,
                                           text=emb, text_mask=mask, bpm=bpm, beats=beats, uncond=False)
                total += float(loss) * x0.shape[0]
        return total / (n * len(self.sigmas))


def load_vae(path: str, device="cpu"):
    """The trained VAE component and the SHA-256 of its weights (names its latent cache)."""
    folder = Path(path)
    if not (folder / ckpt.CONFIG).is_file():
        raise FileNotFoundError(f"no VAE component at {folder}: train it first (python -m train.vae ...) "
                                f"or set base.vae to a component folder")
    vae, _ = ckpt.load_component(folder, device=device)
    return vae, ckpt.sha256_file(folder / ckpt.WEIGHTS)


def _component_folder(path: str, key: str) -> Path:
    """``path`` as a component folder; one ConfigError naming the config ``key`` if it is not one."""
    folder = Path(path)
    if not (folder / ckpt.CONFIG).is_file():
        raise ConfigError(f"{key}={path} is not a component folder (no {ckpt.CONFIG}): train and export "
                          f"that stage first or set {key} to a DiT component folder")
    return folder


def load_dit(path: str, key: str, device="cpu", sigma_data: float | None = None) -> tuple[DiT, dict]:
    """The DiT component at ``path`` and its meta (EDM config, step, stage); ``key`` names the config
    field that gave the path, so a missing or wrong folder is one ConfigError (exit 2) naming it.
    With ``sigma_data``, a component trained with another EDM sigma_data is a ConfigError too."""
    dit, meta = ckpt.load_component(_component_folder(path, key), device=device)
    if not isinstance(dit, DiT):
        raise ConfigError(f"{key}={path} is not a DiT component")
    trained = meta.get("edm", {}).get("sigma_data")
    if sigma_data is not None and trained is not None and abs(float(trained) - sigma_data) > 1e-9:
        raise ConfigError(f"edm.sigma_data={sigma_data} differs from {key}={path}, trained with {trained}")
    return dit, meta


def dit_config(path: str, key: str) -> dict:
    """The DiT config dict of the component at ``path`` without loading its weights (errors as
    :func:`load_dit`)."""
    data = ckpt.read_component_config(_component_folder(path, key))
    if data["kind"] != "dit":
        raise ConfigError(f"{key}={path} is not a DiT component (it is a {data['kind']!r} component)")
    return data["config"]


def grown_dit(source: DiT, cfg: DiTConfig, new: tuple[str, ...]) -> DiT:
    """A DiT of ``cfg`` holding ``source``'s weights, where only modules whose names start with one
    of ``new`` may be absent from ``source`` (they keep their initialisation, zero where it makes
    the new model compute what ``source`` computes). Draws from the global torch RNG (their init).
    Raises ValueError naming the missing and unexpected weights otherwise."""
    model = DiT(cfg)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    if unexpected or any(not k.startswith(new) for k in missing):
        raise ValueError(f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def check_same_architecture(found: DiTConfig | dict, expected: DiTConfig | dict, what: str) -> None:
    """ConfigError naming the differing fields unless two DiT configs are equal; ``what`` names the
    component that was checked (e.g. ``base.init=DIR``)."""
    a = found if isinstance(found, dict) else found.__dict__
    b = expected if isinstance(expected, dict) else expected.__dict__
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise ConfigError(f"{what} differs from the base model in {diff}")


def latent_caches(run: Run, data: DataConfig, cfg: LatentStageConfig) -> dict[str, Path]:
    """Build (main process, once) or find the train/held-out latent caches of this VAE + corpus."""
    vae, sha = load_vae(cfg.vae, run.device)
    root = Path(cfg.latent_cache) if cfg.latent_cache else run.out_dir
    tag = hashlib.sha256(f"{sha}|{Path(data.root).resolve()}|{cfg.augment_copies}".encode()).hexdigest()[:12]
    paths = {s: root / f"latents-{tag}-{s}.safetensors" for s in (data.train_split, data.heldout_split)}
    if run.is_main:
        for split, path in paths.items():
            if not path.is_file():
                run.print(f"encoding {split} latents of {data.root} -> {path}")
                copies = cfg.augment_copies if split == data.train_split else 0
                try:
                    encode_latents(data.root, vae, path, split=split, copies=copies, seed=cfg.loop.seed,
                                   device=run.device, progress=True)
                except ValueError:  # a corpus without held-out pieces: no held-out cache
                    if split == data.train_split:
                        raise
    run.accelerator.wait_for_everyone()
    return {s: p for s, p in paths.items() if p.is_file()}


@dataclass
class LatentData:
    """The text and data of a latent stage, as :func:`prepare_latent_data` builds them."""

    caches: dict[str, Path]  # split -> latent cache file
    text: TextCache
    frames: int  # latent frames per training crop
    dataset: LatentDataset  # training crops

    def dsm_inputs(self, run: Run, batch: dict, cfg: DSMStageConfig, grid: bool = False):
        """One DSM step's draws from the step's generator: -> x0 (B, C, T), sigma (B,) from the
        training distribution, noise (B, C, T), and the conditioning kwargs (text tokens, mask, BPM,
        ``uncond`` for the ``cond_dropout`` share of samples; with ``grid``, a beat_grid model's
        ``beats`` with NaN rows for the ``grid_dropout`` share)."""
        x0 = batch["latents"]
        # One generator per sample, keyed by its place in the global batch: the same draws whatever
        # the number of processes or micro-batches (train/infra/run.py, sample_generators).
        dev, gens = run.device, run.sample_generators(x0.shape[0])
        sigma = torch.cat([sample_sigmas("train", 1, cfg.edm, generator=g, device=dev) for g in gens])
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g, device=dev) for g in gens])
        uncond = torch.cat([torch.rand(1, generator=g, device=dev) for g in gens]) < cfg.cond_dropout
        emb, mask = self.text.batch(batch["caption"], run.device)
        cond = dict(text=emb, text_mask=mask, bpm=batch["bpm"], uncond=uncond)
        if grid:  # drawn last, so a model without the grid trains on exactly the draws it always had
            beats = crop_beats(batch["start_s"].to(dev), batch["bpm"].to(dev), x0.shape[-1], self.dataset.frame_rate)
            no_grid = torch.cat([torch.rand(1, generator=g, device=dev) for g in gens]) < cfg.grid_dropout
            cond["beats"] = torch.where(no_grid[:, None], torch.full_like(beats, float("nan")), beats)
        return x0, sigma, noise, cond

    def heldout_loss(self, run: Run, data: DataConfig, cfg: DSMStageConfig) -> HeldoutLoss | None:
        """The held-out DSM loss on the main process when the corpus has held-out pieces, else None."""
        if not run.is_main or data.heldout_split not in self.caches:
            return None
        return HeldoutLoss(self.caches[data.heldout_split], self.frames, cfg, self.text, run)


def prepare_latent_data(run: Run, data: DataConfig, cfg: LatentStageConfig, text_dim: int,
                        caches: dict[str, Path] | None = None) -> LatentData:
    """Latent caches (built on first use), the frozen text encoder checked against the DiT's
    ``text_dim``, its token cache, and the training crops of ``cfg.crop_seconds``."""
    caches = caches if caches is not None else latent_caches(run, data, cfg)
    encoder = load_text_encoder(cfg.text_encoder, device=run.device)
    if encoder.dim != text_dim:
        raise ConfigError(f"the DiT takes {text_dim}-d text tokens but the text encoder "
                          f"{cfg.text_encoder} gives {encoder.dim}")
    probe = LatentDataset(caches[data.train_split], frames=1)
    frames = max(1, round(cfg.crop_seconds * probe.frame_rate))
    dataset = LatentDataset(caches[data.train_split], frames=frames, seed=cfg.loop.seed)
    return LatentData(caches, TextCache(encoder, cfg.text_cache_size), frames, dataset)

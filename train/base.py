"""Train the base score model: EDM denoising score matching on VAE latents (paper 3, A.1).

    [accelerate launch -m | python -m] train.base --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set base.loop.lr=3e-4] [--cpu]
        [--prepare-only]

Per step: latent crops x0 from the cache (built from the corpus with the trained VAE on first use),
sigma ~ exp(N(P_mean, P_std^2)), D = Precond(DiT) on x0 + sigma * n, loss lambda(sigma) ||D - x0||^2
over valid frames; 10% of samples get uncond=True (CFG); text tokens from the frozen MiniLM (cached
per caption phrasing); BPM from the metadata. EMA weights are exported at the end as a Presto model
folder (RUN_DIR/model) that presto_core.pipeline loads.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import EDMConfig, Precond, loss_weight, sample_sigmas
from train.loop import ConfigError, LoopConfig, Run, load_config, parse_args, run_main, to_dict


@dataclass
class BaseStageConfig:
    """The ``base`` section of a config file."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    model: DiTConfig = field(default_factory=DiTConfig.tiny)
    edm: EDMConfig = field(default_factory=EDMConfig)
    vae: str = "runs/tiny/vae/export/vae"  # trained VAE component folder (train.vae's export)
    clap: str = ""  # optional CLAP component folder copied into the exported model
    text_encoder: dict = field(default_factory=lambda: {"kind": "minilm", "max_tokens": 64})
    crop_seconds: float = 10.0
    cond_dropout: float = 0.1
    latent_cache: str = ""  # folder for the latent caches (default: RUN_DIR)
    # Start from this DiT component's weights (e.g. an earlier base export) instead of a fresh init;
    # its architecture must equal `model`. A resumed run restores its own checkpoint instead.
    init: str = ""
    augment_copies: int = 0  # extra pitch/tempo-augmented copies per file in the cache
    text_cache_size: int = 100_000  # caption phrasings whose tokens stay in memory
    export_fp16: bool = False
    sampler_steps: int = 16  # the exported "base" variant's defaults
    guidance_scale: float = 0.8
    max_duration: float = 32.0
    num_prompts: int = 32  # held-out prompts written to prompts.json
    eval_every: int = 1000  # held-out DSM loss of the EMA weights (0: only at the end)
    eval_items: int = 64

    def __post_init__(self):
        if not 0.0 <= self.cond_dropout < 1.0 or not self.crop_seconds > 0 or self.eval_items < 1:
            raise ValueError(f"base: need 0 <= cond_dropout < 1, crop_seconds > 0, eval_items >= 1; got "
                             f"{self.cond_dropout}, {self.crop_seconds}, {self.eval_items}")


class TextCache:
    """Frozen text-encoder tokens per caption, memoised (LRU, on the CPU).

    Each caption is encoded alone, so its tokens do not depend on which other captions happened to
    share a batch (keeps resumed runs bit-identical). ``batch(captions)`` pads to the longest.
    """

    def __init__(self, encoder, max_entries: int = 100_000):
        self.encoder, self.max_entries = encoder, max(int(max_entries), 1)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def tokens(self, caption: str) -> torch.Tensor:
        """(L, D) float32 tokens of one caption (padding removed)."""
        hit = self._cache.get(caption)
        if hit is not None:
            self._cache.move_to_end(caption)
            return hit
        emb, mask = self.encoder.encode([caption], device="cpu")
        tok = emb[0, mask[0]].contiguous()
        self._cache[caption] = tok
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return tok

    def batch(self, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> emb (B, L, D) float32, mask (B, L) bool on ``device``."""
        toks = [self.tokens(c) for c in captions]
        length = max(t.shape[0] for t in toks)
        emb = torch.zeros(len(toks), length, toks[0].shape[1])
        mask = torch.zeros(len(toks), length, dtype=torch.bool)
        for i, t in enumerate(toks):
            emb[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        return emb.to(device), mask.to(device)


def masked_dsm_loss(denoiser, x0, sigma, noise, length, sigma_data: float, **cond) -> torch.Tensor:
    """presto_core.edm.dsm_loss restricted to the first ``length`` (B,) frames of each sample (crops
    shorter than the training length are zero-padded by the dataset and must not count)."""
    den = denoiser(x0 + sigma.view(-1, 1, 1) * noise, sigma, **cond)
    valid = (torch.arange(x0.shape[-1], device=x0.device)[None] < length[:, None]).float()[:, None]
    per = (((den.float() - x0.float()) ** 2) * valid).sum((1, 2)) / (valid.sum((1, 2)) * x0.shape[1]).clamp_min(1)
    return (loss_weight(sigma.float(), sigma_data) * per).mean()


class HeldoutLoss:
    """Weighted DSM loss of a denoiser on fixed held-out crops, noise and sigmas (the 8 quantiles
    1/16 ... 15/16 of the training distribution per crop), all conditional: a comparable number
    from step to step and from run to run."""

    def __init__(self, cache: Path, frames: int, cfg: BaseStageConfig, text: TextCache, run: Run):
        from train.data.dataset import collate
        from train.data.latents import LatentDataset

        ds = LatentDataset(cache, frames=frames, seed=cfg.loop.seed + 1)
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
                x0, length, bpm = (self.batch[k][j: j + chunk].to(dev) for k in ("latents", "length", "bpm"))
                emb, mask = self.text.batch(self.batch["caption"][j: j + chunk], dev)
                with self.run.autocast():
                    loss = masked_dsm_loss(denoiser, x0, torch.full((x0.shape[0],), sigma, device=dev),
                                           noise[j: j + chunk].to(dev), length, self.cfg.edm.sigma_data,
                                           text=emb, text_mask=mask, bpm=bpm, uncond=False)
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


def load_dit(path: str, key: str, device="cpu") -> tuple[DiT, dict]:
    """The DiT component at ``path`` and its meta (EDM config, step, stage); ``key`` names the config
    field that gave the path, so a missing or wrong folder is one ConfigError (exit 2) naming it."""
    dit, meta = ckpt.load_component(_component_folder(path, key), device=device)
    if not isinstance(dit, DiT):
        raise ConfigError(f"{key}={path} is not a DiT component")
    return dit, meta


def dit_config(path: str, key: str) -> dict:
    """The DiT config dict of the component at ``path`` without loading its weights (errors as
    :func:`load_dit`)."""
    data = ckpt.read_component_config(_component_folder(path, key))
    if data["kind"] != "dit":
        raise ConfigError(f"{key}={path} is not a DiT component (it is a {data['kind']!r} component)")
    return data["config"]


def load_init(path: str, model_cfg: DiTConfig) -> DiT:
    """The DiT component at ``path`` (``base.init``), checked against the configured architecture."""
    dit, _ = load_dit(path, "base.init")
    if dit.cfg != model_cfg:
        diff = sorted(k for k, v in dit.cfg.__dict__.items() if getattr(model_cfg, k) != v)
        raise ConfigError(f"base.init={path} differs from base.model in {diff}")
    return dit


def latent_caches(run: Run, data, cfg: BaseStageConfig) -> dict[str, Path]:
    """Build (main process, once) or find the train/held-out latent caches of this VAE + corpus."""
    from train.data.latents import encode_latents

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


def export_run(run: Run, data, cfg: BaseStageConfig, ema, out: Path | None = None) -> Path:
    """Write the EMA weights as the ``base`` component and a complete model folder (main process)."""
    from train.export import build_model_folder, heldout_prompts

    dit = ema.copy_to(Precond(DiT(cfg.model), cfg.edm.sigma_data)).backbone
    comp = run.out_dir / "export" / "base"
    ckpt.save_component(comp, dit, cfg.model, meta={"edm": to_dict(cfg.edm), "step": run.step})
    clap = cfg.clap if cfg.clap and (Path(cfg.clap) / ckpt.CONFIG).is_file() else None
    if cfg.clap and clap is None:
        run.print(f"note: no CLAP component at {cfg.clap}; exporting without CLAP rejection")
    return build_model_folder(
        out or run.out_dir / "model", vae=cfg.vae, base=comp, clap=clap,
        text_encoder=cfg.text_encoder, prompts=heldout_prompts(data, cfg.num_prompts), fp16=cfg.export_fp16,
        steps=cfg.sampler_steps, guidance=cfg.guidance_scale, max_duration=cfg.max_duration,
    )


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    args = parse_args("base", argv, extra=lambda ap: ap.add_argument(
        "--prepare-only", action="store_true", help="build the latent caches, then exit"))
    data, cfg, name = load_config(args.config, "base", BaseStageConfig, args.overrides)
    # The null text/BPM parameters only get gradients in steps that drop some sample's condition.
    run = Run("base", cfg.loop, args, config_name=name, find_unused_parameters=True,
              config_record={"config": to_dict(cfg), "data": to_dict(data), "config_file": str(args.config)})
    caches = latent_caches(run, data, cfg)
    if args.prepare_only:
        return run.out_dir

    from presto_core.text import load_text_encoder
    from train.data.dataset import collate
    from train.data.latents import LatentDataset

    encoder = load_text_encoder(cfg.text_encoder, device=run.device)
    if encoder.dim != cfg.model.text_dim:
        raise ValueError(f"base.model.text_dim={cfg.model.text_dim} but the text encoder gives {encoder.dim}-d tokens")
    text = TextCache(encoder, cfg.text_cache_size)
    probe = LatentDataset(caches[data.train_split], frames=1)
    frames = max(1, round(cfg.crop_seconds * probe.frame_rate))
    dataset = LatentDataset(caches[data.train_split], frames=frames, seed=cfg.loop.seed)

    torch.manual_seed(cfg.loop.seed)
    model = Precond(DiT(cfg.model), sigma_data=cfg.edm.sigma_data)
    if cfg.init:
        model.backbone.load_state_dict(load_init(cfg.init, cfg.model).state_dict())
    run.print(f"base: DiT {model.backbone.num_parameters() / 1e6:.1f}M params, {len(dataset)} cached items, "
              f"crops of {frames} frames, {run.accelerator.num_processes} process(es), {run.mixed_precision}")
    opt = run.adam(model.parameters())
    sched = run.lr_schedule(opt)
    model, opt = run.prepare(model, opt)
    ema = run.ema("model", model)
    heldout = None
    if run.is_main and data.heldout_split in caches:
        heldout = HeldoutLoss(caches[data.heldout_split], frames, cfg, text, run)
        eval_model = Precond(DiT(cfg.model), cfg.edm.sigma_data).to(run.device).eval()  # before restore(): RNG
    if run.restore():
        run.print(f"resumed at step {run.step}")

    for batch in run.batches(dataset, collate):
        x0 = batch["latents"]
        b = x0.shape[0]
        g = run.generator()
        sigma = sample_sigmas("train", b, cfg.edm, generator=g, device=run.device)
        noise = torch.randn(x0.shape, generator=g, device=run.device)
        uncond = torch.rand(b, generator=g, device=run.device) < cfg.cond_dropout
        emb, mask = text.batch(batch["caption"], run.device)
        loss = masked_dsm_loss(model, x0, sigma, noise, batch["length"], cfg.edm.sigma_data,
                               text=emb, text_mask=mask, bpm=batch["bpm"], uncond=uncond)
        grad_norm = run.backward(loss, model, opt, sched)
        run.end_step(loss=loss, grad_norm=grad_norm)
        if heldout is not None and ((cfg.eval_every and run.step % cfg.eval_every == 0) or run.done):
            run.log(heldout_loss=heldout(ema.copy_to(eval_model)))

    run.finish()
    if run.is_main:
        run.print(f"exported {export_run(run, data, cfg, ema)}")
    return run.out_dir


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

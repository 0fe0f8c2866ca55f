"""Train the audio VAE: Improved RVQGAN (DAC) recipe with a KL bottleneck (paper A.1).

    [accelerate launch -m | python -m] train.vae --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set vae.kl_weight=1e-3] [--cpu]

With ``pca_init`` the VAE's fixed spectral path (VAEConfig.spectral_skip) is first fitted as a
whitened PCA of training crops (train/autoencoder/pca.py). Then per step, on random mono crops of the
corpus (train/data/dataset.py, loudness-normalised):

1. recon, mean, logvar = VAE(wav) with a reparameterised posterior draw (noise from the run's
   per-step generator, so resumed runs repeat uninterrupted ones);
2. from ``gan_start_step`` on, one discriminator update (multi-period + multi-band STFT
   discriminators, train/autoencoder/discriminators.py) with the least-squares GAN loss on real vs detached
   reconstructions (AdamW, its own grad clip ``disc_grad_clip``);
3. one VAE update on mel_weight * multi-scale log-mel L1 + kl_weight * KL (element mean)
   [+ stft_weight * multi-resolution STFT] [+ pitch_weight * semitone-band log spectra of long
   windows (train/autoencoder/losses.py PitchBandLoss: bass notes a semitone apart)] [+ spec_weight * latent spectrum read-out L1
   (train/autoencoder/losses.py LatentSpectrumLoss: the latents must carry pitch)] + adv_weight * LSGAN + fm_weight * L1 feature
   matching (DAC: 15 / - / 1 / 2), global grad clip ``loop.grad_clip``.

Every ``eval_every`` steps and at the end, :func:`evaluate` reconstructs held-out clips with the
posterior mean and logs the multi-resolution STFT distance, SI-SDR and mel distance
(TensorBoard + RUN_DIR/eval.jsonl). At the end the std of the posterior-mean latents of some
training crops is measured, ``latent_scale = target_latent_std / std`` is stored in the config,
and the weights are exported in fp32 to RUN_DIR/export/vae (presto_core.checkpoint layout), the
folder that train.base reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt
from presto_core.audio import mrstft_distance, si_sdr
from presto_core.autoencoder import AudioVAE, VAEConfig
from train.autoencoder.discriminators import Discriminator, DiscriminatorConfig
from train.autoencoder.losses import (
    LatentSpectrumLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    PitchBandLoss,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from train.autoencoder.pca import fit_spectral_pca
from train.data.augment import AugmentConfig
from train.data.dataset import AudioDataset, collate
from train.evaluation.pitch import chroma_correlation, tonal_clarity
from train.infra.config import ConfigError, LoopConfig
from train.infra.run import Run, run_main, start_stage
from train.infra import sharding

EVAL_LOG = "eval.jsonl"


@dataclass
class VAEStageConfig:
    """The ``vae`` section of a config file (``loop`` as in train/infra/run.py; DAC uses lr 1e-4,
    betas (0.8, 0.99), AdamW weight decay 0.01, generator grad clip 1000)."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    model: VAEConfig = field(default_factory=VAEConfig.tiny)
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig.tiny)
    crop_seconds: float = 0.5  # training excerpt length (DAC: 0.38 s); rounded down to whole frames
    augment: bool = False  # pitch-shift / time-stretch crops (train/data/augment.py defaults)
    target_db: float = -20.0  # RMS loudness of every crop (dBFS)
    # loss weights
    mel_weight: float = 15.0
    kl_weight: float = 1e-2  # on the element-mean KL (AudioVAE.kl)
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    stft_weight: float = 0.0
    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    mel_bins: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    stft_fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    # PitchBandLoss: semitone bands (MIDI pitch_midi[0]..pitch_midi[1]) of pitch_fft_sizes windows,
    # summed over sizes like the mel loss; the mel loss's 2048 window is coarser than a semitone
    # below ~360 Hz, so without it nothing tells neighbouring bass notes apart.
    pitch_weight: float = 0.0
    pitch_fft_sizes: tuple[int, ...] = (16384, 8192)
    pitch_midi: tuple[int, int] = (28, 108)
    # LatentSpectrumLoss: a linear read-out of the posterior means must match the input's fine log
    # spectrum (n_fft spec_fft, bins up to spec_max_hz). Ignored with freeze_encoder.
    spec_weight: float = 0.0
    spec_fft: int = 4096
    spec_max_hz: float = 5000.0
    # adversarial schedule and optimisation
    gan_start_step: int = 0  # steps before this train reconstruction (mel + KL) only
    disc_lr: float = 0.0  # 0: loop.lr
    disc_grad_clip: float = 10.0
    lr_decay: float = 1.0  # per-step multiplicative lr decay after warm-up (DAC: 0.999996)
    # evaluation and export
    eval_every: int = 500  # 0 disables periodic evaluation (the final one always runs)
    eval_items: int = 8
    eval_seconds: float = 2.0
    scale_items: int = 32  # training crops used to measure the latent std
    scale_seconds: float = 2.0
    target_latent_std: float = 0.5  # EDM sigma_data
    # Fixed spectral path (model.spectral_skip): fit it as a whitened PCA of pca_items training
    # crops of pca_seconds before step 1 (train/autoencoder/pca.py); frequencies above pca_split_hz weigh
    # pca_high_weight in the fit. Not with init (that VAE's path is kept).
    pca_init: bool = False
    pca_items: int = 64
    pca_seconds: float = 4.0
    pca_split_hz: float = 2500.0
    pca_high_weight: float = 0.2
    # Decoder fine-tuning: start from a VAE component folder (e.g. RUN/export/vae) and, with
    # freeze_encoder, train only the decoder. The latents (and latent_scale) stay those of `init`,
    # so a latent cache and a diffusion model built on `init` remain valid while the decoder
    # improves (the same split as Stable Diffusion's ft-MSE decoder).
    init: str = ""
    freeze_encoder: bool = False
    # With freeze_encoder: keep only init's encoder and train a new decoder built from vae.model
    # (its decoder fields may differ from init's, e.g. a wider decoder for the same latents).
    reinit_decoder: bool = False

    def __post_init__(self):
        if len(self.mel_windows) != len(self.mel_bins) or not self.mel_windows:
            raise ConfigError(f"vae.mel_windows {self.mel_windows} and vae.mel_bins {self.mel_bins} "
                              "must be non-empty lists of equal length")
        for name in ("crop_seconds", "eval_seconds", "scale_seconds", "target_latent_std"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"vae.{name} must be > 0, got {getattr(self, name)}")
        if self.spec_fft < 2 or self.spec_max_hz <= 0:
            raise ConfigError(f"vae.spec_fft must be >= 2 and vae.spec_max_hz > 0, got {self.spec_fft}, {self.spec_max_hz}")
        if len(self.pitch_midi) != 2 or not 0 < self.pitch_midi[0] <= self.pitch_midi[1] <= 127 \
                or not self.pitch_fft_sizes or min(self.pitch_fft_sizes) < 2:
            raise ConfigError(f"vae.pitch_midi must be [lo, hi] with 0 < lo <= hi <= 127 and vae.pitch_fft_sizes "
                              f"non-empty sizes >= 2, got {self.pitch_midi}, {self.pitch_fft_sizes}")
        for name in ("mel_weight", "kl_weight", "adv_weight", "fm_weight", "stft_weight", "pitch_weight",
                     "spec_weight", "disc_lr",
                     "disc_grad_clip", "gan_start_step", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"vae.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"vae.lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.eval_items < 1 or self.scale_items < 1:
            raise ConfigError("vae.eval_items and vae.scale_items must be >= 1")
        if self.freeze_encoder and not self.init:
            raise ConfigError("vae.freeze_encoder needs vae.init (the VAE whose encoder is kept)")
        if self.pca_init and not self.model.spectral_skip:
            raise ConfigError("vae.pca_init needs vae.model.spectral_skip=true")
        if self.pca_init and self.init:
            raise ConfigError("vae.pca_init and vae.init exclude each other (init brings its own spectral path)")
        if self.pca_init and not (self.pca_items >= 1 and self.pca_seconds > 0 and self.pca_split_hz > 0
                                  and 0 < self.pca_high_weight <= 1):
            raise ConfigError("vae.pca_items >= 1, pca_seconds > 0, pca_split_hz > 0 and 0 < pca_high_weight <= 1 "
                              f"needed, got {self.pca_items}, {self.pca_seconds}, {self.pca_split_hz}, "
                              f"{self.pca_high_weight}")
        if self.reinit_decoder and not self.freeze_encoder:
            raise ConfigError("vae.reinit_decoder needs vae.freeze_encoder (a new decoder for fixed latents)")

    @property
    def uses_gan(self) -> bool:
        return self.adv_weight > 0 or self.fm_weight > 0


class WarmupDecay:
    """Picklable LR multiplier: linear warm-up over ``warmup`` steps, then ``gamma ** (step - warmup)``."""

    def __init__(self, warmup: int, gamma: float = 1.0):
        self.warmup, self.gamma = int(warmup), float(gamma)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return self.gamma ** (step - self.warmup)


# ---------------------------------------------------------------------------------------------
# Evaluation and latent scale


def load_clips(root, split: str, seconds: float, sample_rate: int, hop: int, count: int,
               target_db: float | None = -20.0, seed: int = 0) -> torch.Tensor:
    """Deterministic crops of the first ``count`` items of ``split``: (K, 1, N) float32 with N a
    multiple of ``hop`` (no augmentation; same loudness normalisation as training)."""
    ds = AudioDataset(root, seconds=seconds, sample_rate=sample_rate, split=split, augment=None,
                      target_db=target_db, seed=seed)
    wav = torch.stack([ds[i]["wav"] for i in range(min(count, len(ds)))])
    n = wav.shape[-1] // hop * hop
    if n < hop:
        raise ConfigError(f"clips of {seconds} s are shorter than one latent frame ({hop} samples)")
    return wav[..., :n]


@torch.no_grad()
def evaluate(vae: AudioVAE, clips: torch.Tensor, mel_loss: MultiScaleMelLoss | None = None,
             batch_size: int = 4) -> dict[str, float]:
    """Reconstruct (K, 1, N) clips through the posterior mean; mean per-clip metrics.

    Returns {"mrstft": multi-resolution STFT distance (lower is better), "si_sdr": dB (higher is
    better), "mel": multi-scale log-mel L1 (if ``mel_loss``), "chroma": chroma correlation with the
    input (train/evaluation/pitch.py; 1 = same notes, ~0 = none; over non-silent clips, absent if all are
    silent), "tonal_ratio": mean tonal clarity of the reconstructions / of the inputs (same clips),
    "latent_std": std of the posterior means (raw, before latent_scale)}.
    """
    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    sums = {"mrstft": 0.0, "si_sdr": 0.0, "mel": 0.0}
    means, chromas, tonal = [], [], []
    n = clips.shape[-1]
    for s in range(0, clips.shape[0], batch_size):
        x = clips[s: s + batch_size].to(device)
        mean, _ = vae.encode(x)
        recon = vae.decode(mean)[..., :n].float()
        means.append(mean.float().cpu())
        for i in range(x.shape[0]):
            sums["mrstft"] += float(mrstft_distance(recon[i], x[i]))
            sums["si_sdr"] += float(si_sdr(recon[i, 0], x[i, 0]))
            if mel_loss is not None:
                sums["mel"] += float(mel_loss(recon[i: i + 1], x[i: i + 1]))
            est, ref = recon[i, 0].cpu().numpy(), x[i, 0].cpu().numpy()
            try:
                chromas.append(chroma_correlation(est, ref, vae.cfg.sample_rate))
                tonal.append((tonal_clarity(est, vae.cfg.sample_rate), tonal_clarity(ref, vae.cfg.sample_rate)))
            except ValueError:  # silent or shorter than the chroma window
                pass
    vae.train(was_training)
    out = {k: v / clips.shape[0] for k, v in sums.items() if k != "mel" or mel_loss is not None}
    if chromas:
        out["chroma"] = sum(chromas) / len(chromas)
    if tonal:  # reconstruction / input: how much of the input's tonal clarity survives
        out["tonal_ratio"] = sum(t for t, _ in tonal) / sum(r for _, r in tonal)
    out["latent_std"] = float(torch.cat(means).std())
    return out


@torch.no_grad()
def measure_latent_stats(vae: AudioVAE, clips: torch.Tensor, batch_size: int = 4) -> dict[str, float]:
    """Std, mean and RMS over every element of the posterior-mean latents (what the latent cache
    stores, before latent_scale) of (K, 1, N) clips."""
    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    z = torch.cat([vae.encode(clips[s: s + batch_size].to(device))[0].float().cpu()
                   for s in range(0, clips.shape[0], batch_size)])
    vae.train(was_training)
    return {"std": float(z.std()), "mean": float(z.mean()), "rms": float(z.pow(2).mean().sqrt())}


def scaled_config(model_cfg: VAEConfig, std: float, target: float = 0.5) -> VAEConfig:
    """``model_cfg`` with latent_scale = target / std (so diffusion latents have std ``target``)."""
    if not (math.isfinite(std) and std > 1e-8):
        raise RuntimeError(f"latent std {std!r} is degenerate; cannot set latent_scale (did training diverge?)")
    return dataclasses.replace(model_cfg, latent_scale=float(target / std))


# ---------------------------------------------------------------------------------------------
# Training


def load_init(folder: str, model_cfg: VAEConfig, freeze_encoder: bool, reinit_decoder: bool = False) -> AudioVAE:
    """The VAE stored in component folder ``folder`` (trainable, fp32). Its architecture must match
    ``model_cfg`` (latent_scale aside; with ``reinit_decoder`` only the encoder's fields, and the
    decoder is new, built from ``model_cfg``); with ``freeze_encoder`` the encoder gets no gradients."""
    init, _ = ckpt.load_component(folder)
    if not isinstance(init, AudioVAE):
        raise ConfigError(f"vae.init={folder} is not a VAE component")
    cfg = dataclasses.replace(model_cfg, latent_scale=init.cfg.latent_scale)
    decoder_fields = {f.name for f in dataclasses.fields(VAEConfig) if f.name.startswith(("dec_", "istft_"))}
    ignore = decoder_fields if reinit_decoder else set()
    differs = [f.name for f in dataclasses.fields(VAEConfig)
               if f.name not in ignore and getattr(cfg, f.name) != getattr(init.cfg, f.name)]
    if differs:
        raise ConfigError(f"vae.init={folder} differs from vae.model in {differs}")
    if reinit_decoder:
        vae = AudioVAE(cfg)
        vae.encoder.load_state_dict(init.encoder.state_dict())
    else:
        vae = init
    vae.train()
    for q in vae.encoder.parameters():
        q.requires_grad_(not freeze_encoder)
    return vae


def _split(outs, b: int):
    """Discriminator outputs on cat([real, fake]) -> (real outputs, fake outputs)."""
    return [[f[:b] for f in feats] for feats in outs], [[f[b:] for f in feats] for feats in outs]


@contextmanager
def _frozen(module: torch.nn.Module):
    """Parameters without grad for the generator's pass through the discriminator (gradients
    still reach the input); restored afterwards."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def _log_eval(run: Run, metrics: dict[str, float]) -> None:
    logs = {f"eval/{k}": v for k, v in metrics.items()}
    run.accelerator.log(logs, step=run.step)
    with open(run.out_dir / EVAL_LOG, "a") as f:
        f.write(json.dumps({"step": run.step, **logs}) + "\n")
    run.print(f"eval @ {run.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))


def _truncate_eval(path: Path, step: int, inclusive: bool = True) -> None:
    """Drop eval lines a resumed run will write again (past ``step``; at it too if not inclusive)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln)["step"] < step + int(inclusive)]
        path.write_text("".join(ln + "\n" for ln in keep))


def read_eval(run_dir) -> list[dict]:
    """The eval.jsonl lines of a VAE run folder."""
    path = Path(run_dir) / EVAL_LOG
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def whole_vae(run: Run, vae) -> AudioVAE | None:
    """The trained VAE, whole, on the main process (None elsewhere) for evaluation and export. Call
    on every process: under FSDP its shards are gathered (a collective) into an unsharded copy."""
    inner = run.unwrap(vae)
    if run.fsdp == "no":
        return inner if run.is_main else None
    state = sharding.full_model_state(inner)
    if not run.is_main:
        return None
    whole = AudioVAE(inner.cfg).to(run.device)
    whole.load_state_dict(state)
    return whole.eval()


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder; the VAE is in RUN_DIR/export/vae."""
    args, data, cfg, run = start_stage("vae", VAEStageConfig, argv)
    mc, hop = cfg.model, cfg.model.hop
    dataset = AudioDataset(data.root, seconds=cfg.crop_seconds, sample_rate=mc.sample_rate, split=data.train_split,
                           augment=AugmentConfig() if cfg.augment else None, target_db=cfg.target_db,
                           seed=cfg.loop.seed)
    if dataset.n < hop:
        raise ConfigError(f"vae.crop_seconds={cfg.crop_seconds} is shorter than one latent frame ({hop} samples)")

    torch.manual_seed(cfg.loop.seed)
    vae = load_init(cfg.init, mc, cfg.freeze_encoder, cfg.reinit_decoder) if cfg.init else AudioVAE(mc)
    if cfg.pca_init:  # every process fits the same PCA; a resumed run then restores its checkpoint's
        pca_clips = load_clips(data.root, data.train_split, cfg.pca_seconds, mc.sample_rate, hop, cfg.pca_items,
                               cfg.target_db, cfg.loop.seed + 2)
        fit = fit_spectral_pca(vae, pca_clips, cfg.pca_split_hz, cfg.pca_high_weight)
        run.print(f"spectral PCA fitted on {fit['frames']} frames: {fit['explained']:.1%} of the weighted variance")
    disc = Discriminator(cfg.disc)
    mel_loss = MultiScaleMelLoss(mc.sample_rate, cfg.mel_windows, cfg.mel_bins).to(run.device)
    stft_loss = MultiResolutionSTFTLoss(cfg.stft_fft_sizes).to(run.device) if cfg.stft_weight else None
    pitch_loss = None
    if cfg.pitch_weight:
        if min(cfg.pitch_fft_sizes) > dataset.n:
            raise ConfigError(f"vae.pitch_fft_sizes {cfg.pitch_fft_sizes} are all longer than a crop "
                              f"({dataset.n} samples, vae.crop_seconds={cfg.crop_seconds})")
        try:
            pitch_loss = PitchBandLoss(mc.sample_rate, cfg.pitch_fft_sizes, *cfg.pitch_midi).to(run.device)
        except ValueError as e:
            raise ConfigError(f"vae.pitch_midi {cfg.pitch_midi}: {e}") from None
    spec_loss = None
    if cfg.spec_weight and not cfg.freeze_encoder:
        if cfg.spec_max_hz > mc.sample_rate / 2:
            raise ConfigError(f"vae.spec_max_hz={cfg.spec_max_hz} must be <= half the sample rate ({mc.sample_rate / 2})")
        spec_loss = LatentSpectrumLoss(mc.latent_channels, mc.sample_rate, hop, cfg.spec_fft, cfg.spec_max_hz,
                                       gain=mc.enc_input_gain)
    p = vae.num_params()
    run.print(f"vae: VAE {p['total'] / 1e6:.2f}M params (enc {p['encoder'] / 1e6:.2f}M, "
              f"dec {p['decoder'] / 1e6:.2f}M), discriminator {disc.num_params() / 1e6:.2f}M, "
              f"{len(dataset)} files, crops of {dataset.n // hop * hop} samples, "
              f"{run.accelerator.num_processes} process(es), {run.mixed_precision}")

    trainable = [q for q in vae.parameters() if q.requires_grad]
    opt_g = run.adam(trainable + (list(spec_loss.parameters()) if spec_loss is not None else []))
    opt_d = run.adam(disc.parameters(), lr=cfg.disc_lr or None)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, WarmupDecay(cfg.loop.warmup_steps, cfg.lr_decay))
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, WarmupDecay(cfg.loop.warmup_steps, cfg.lr_decay))
    run.register(sched_g)
    run.register(sched_d)
    if spec_loss is not None:  # prepared, so its read-out is checkpointed (model_2) and resumes
        vae, disc, spec_loss, opt_g, opt_d = run.prepare(vae, disc, spec_loss, opt_g, opt_d)
    else:
        vae, disc, opt_g, opt_d = run.prepare(vae, disc, opt_g, opt_d)
    run.restore()
    clips = None
    if run.is_main:
        _truncate_eval(run.out_dir / EVAL_LOG, run.step, inclusive=not run.done)  # final eval reruns
        try:
            clips = load_clips(data.root, data.heldout_split, cfg.eval_seconds, mc.sample_rate, hop,
                               cfg.eval_items, cfg.target_db, cfg.loop.seed)
        except ValueError:  # no held-out pieces in this corpus
            run.print(f"note: no {data.heldout_split!r} items in {data.root}; evaluating on training audio")
            clips = load_clips(data.root, data.train_split, cfg.eval_seconds, mc.sample_rate, hop,
                               cfg.eval_items, cfg.target_db, cfg.loop.seed)

    for batch in run.batches(dataset, collate):
        wav = batch["wav"]
        n = wav.shape[-1] // hop * hop
        wav = wav[..., :n]
        b = wav.shape[0]
        recon, mean, logvar = vae(wav, generator=run.generator())
        recon = recon[..., :n].float()
        gan_on = cfg.uses_gan and run.step >= cfg.gan_start_step
        metrics = {}

        if gan_on:  # discriminator update on real vs detached reconstructions
            opt_d.zero_grad(set_to_none=True)  # drops grads left by the generator pass below
            real, fake = _split(disc(torch.cat([wav, recon.detach()])), b)
            d_loss = lsgan_discriminator_loss(real, fake)
            metrics["grad_norm_d"] = run.backward(d_loss, disc, opt_d, sched_d, clip=cfg.disc_grad_clip,
                                                  name="discriminator loss")
            metrics.update(disc_loss=d_loss, d_real=sum(r[-1].float().mean() for r in real) / len(real),
                           d_fake=sum(f[-1].float().mean() for f in fake) / len(fake))

        mel = mel_loss(recon, wav)
        kl = AudioVAE.kl(mean, logvar)
        loss = cfg.mel_weight * mel + (0.0 if cfg.freeze_encoder else cfg.kl_weight) * kl
        metrics.update(mel=mel, kl=kl)
        if stft_loss is not None:
            metrics["stft"] = stft_loss(recon, wav)
            loss = loss + cfg.stft_weight * metrics["stft"]
        if pitch_loss is not None:
            metrics["pitch"] = pitch_loss(recon, wav)
            loss = loss + cfg.pitch_weight * metrics["pitch"]
        if spec_loss is not None:
            metrics["spec"] = spec_loss(mean, wav)
            loss = loss + cfg.spec_weight * metrics["spec"]
        if gan_on:
            inner = run.unwrap(disc)  # no DDP gradient sync: these discriminator grads are discarded
            with run.autocast():
                with torch.no_grad():
                    real = inner(wav)
                with _frozen(inner):
                    fake = inner(recon)
            adv, fm = lsgan_generator_loss(fake), feature_matching_loss(real, fake)
            loss = loss + cfg.adv_weight * adv + cfg.fm_weight * fm
            metrics.update(adv=adv, fm=fm)
        elif cfg.uses_gan:  # keep the logged averages comparable across the GAN warm-up
            metrics.update(adv=0.0, fm=0.0, disc_loss=0.0, d_real=0.0, d_fake=0.0, grad_norm_d=0.0)
        grad_norm = run.backward(loss, vae, opt_g, sched_g, name="VAE loss")
        with torch.no_grad():
            metrics.update(post_std=(0.5 * logvar.detach()).exp().mean(), mean_std=mean.detach().float().std())
        run.end_step(loss=loss, grad_norm=grad_norm, **metrics)

        if cfg.eval_every and run.step % cfg.eval_every == 0 and not run.done:
            whole = whole_vae(run, vae)
            if run.is_main:
                _log_eval(run, evaluate(whole, clips, mel_loss))
            run.accelerator.wait_for_everyone()

    inner = whole_vae(run, vae)
    if run.is_main:
        final = evaluate(inner, clips, mel_loss)
        _log_eval(run, final)
        scale_clips = load_clips(data.root, data.train_split, cfg.scale_seconds, mc.sample_rate, hop,
                                 cfg.scale_items, cfg.target_db, cfg.loop.seed + 1)
        stats = measure_latent_stats(inner, scale_clips)
        # A frozen encoder keeps init's latent_scale: latents cached with it must still decode.
        out_cfg = inner.cfg if cfg.freeze_encoder else scaled_config(inner.cfg, stats["std"], cfg.target_latent_std)
        folder = run.out_dir / "export" / "vae"
        ckpt.save_component(folder, inner.float(), out_cfg, meta={
            "step": run.step, "eval": final, "latent_stats": stats, "config_file": str(args.config),
            "stage": "vae"})
        run.print(f"latent std {stats['std']:.4g} (mean {stats['mean']:.3g}) -> latent_scale "
                  f"{out_cfg.latent_scale:.4g}; exported {folder}")
        run.print("final eval: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()))
    run.accelerator.wait_for_everyone()
    run.finish()
    return run.out_dir


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

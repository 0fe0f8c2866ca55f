"""Train the mono-to-stereo model (presto_core.stereo.MonoToStereo) on a stereo corpus.

    [accelerate launch -m | python -m] train.m2s --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set m2s.loop.lr=1e-3] [--cpu]

Per step: random stereo crops of the training pieces (``m2s.data_root``, a corpus built with
``build_corpus --version 2``), each with its channels swapped at random (which side a part sits on
is drawn per piece, so it cannot be told from the mid, and the model should not guess it); the
model predicts the side's spectrum from their mids ``(L + R) / 2`` and the loss is a spectral
distance (spectral convergence + log-magnitude L1, at the model's own STFT) to the real side
``(L - R) / 2`` (``side_weight``) plus one for the left and right channels ``mid +- side``
(``lr_weight``), plus an L1 distance of the side's log energy per band over blocks of
``energy_frames`` STFT frames (``energy_weight``): the log-magnitude term alone is met by the
median magnitude, which for the noise-like side of reverb is below its energy, so without it
the predicted width came out at about half the real one; and an L1 distance of the log side energy
of each whole crop (``width_weight``), the width itself, which the per-band term still left at
two thirds of the real one. Measured in the model's STFT domain, the loss needs no STFT of the prediction,
which made a step several times cheaper on the CPU than multi-resolution losses on the audio.
Every ``eval_every`` steps the EMA weights are scored on one fixed crop per held-out piece (side and
L/R MR-STFT, inter-channel correlation error, width quartiles against the real ones,
train/evaluation/stereo.py). The EMA weights are exported as the ``m2s`` component at
RUN_DIR/export/m2s, for ``train.export --m2s``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from presto_core import checkpoint as ckpt
from presto_core.stereo import MonoToStereo, StereoConfig, hat_bands, mid_side
from train.autoencoder.losses import spectral_distance
from train.data.dataset import AudioDataset, collate
from train.evaluation.stereo import stereo_scores
from train.infra.config import ConfigError, LoopConfig
from train.infra.run import run_main, start_stage


@dataclass
class M2SStageConfig:
    """The ``m2s`` section of a config file."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    model: StereoConfig = field(default_factory=StereoConfig)
    data_root: str = ""  # a stereo corpus; empty: data.root
    crop_seconds: float = 2.0
    side_weight: float = 1.0
    lr_weight: float = 1.0
    energy_weight: float = 0.0
    energy_frames: int = 8
    width_weight: float = 0.0
    swap_channels: bool = True
    eval_every: int = 250
    eval_seconds: float = 4.0

    def __post_init__(self):
        if self.crop_seconds * self.model.sample_rate < self.model.n_fft:
            raise ConfigError(f"m2s.crop_seconds={self.crop_seconds} is shorter than the model's FFT "
                              f"({self.model.n_fft} samples)")
        weights = (self.side_weight, self.lr_weight, self.energy_weight, self.width_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ConfigError("m2s.side_weight, lr_weight, energy_weight and width_weight must be >= 0, "
                              "and not all 0")
        if self.energy_frames < 1:
            raise ConfigError(f"m2s.energy_frames must be >= 1, got {self.energy_frames}")


def reference_spectra(audio: torch.Tensor, cfg: StereoConfig, window: torch.Tensor) -> torch.Tensor:
    """|STFT| of (B, K, N) audio at the model's resolution: (B, K, n_fft / 2 + 1, frames)."""
    b, k, n = audio.shape
    spec = torch.stft(audio.float().reshape(b * k, n), cfg.n_fft, cfg.hop, window=window, center=True,
                      return_complex=True)
    return spec.abs().reshape(b, k, *spec.shape[1:])


def band_log_energy(magnitude: torch.Tensor, bands: torch.Tensor, frames: int, eps: float = 1e-6) -> torch.Tensor:
    """log of the energy of a magnitude spectrogram (B, F, T) per band (bands: (K, F) weights) and
    block of ``frames`` frames: (B, K, ceil(T / frames))."""
    energy = torch.einsum("kf,bft->bkt", bands, magnitude.pow(2))
    return (F.avg_pool1d(energy, frames, frames, ceil_mode=True) + eps).log()


def heldout_clips(data, cfg: M2SStageConfig) -> torch.Tensor | None:
    """One fixed stereo crop of ``eval_seconds`` per held-out piece, (P, 2, N); None without any."""
    try:
        ds = AudioDataset(data.root, cfg.eval_seconds, cfg.model.sample_rate, split=data.heldout_split,
                          seed=cfg.loop.seed + 1, channels=2)
    except ValueError as e:
        if "no items" in str(e):
            return None
        raise
    return torch.stack([ds[i]["wav"] for i in range(len(ds))])


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    _, data, cfg, run = start_stage("m2s", M2SStageConfig, argv, adjust_data=lambda data, cfg: (
        dataclasses.replace(data, root=cfg.data_root) if cfg.data_root else data))
    dataset = AudioDataset(data.root, cfg.crop_seconds, cfg.model.sample_rate, split=data.train_split,
                           seed=cfg.loop.seed, channels=2)
    heldout = heldout_clips(data, cfg) if run.is_main else None

    window = torch.hann_window(cfg.model.n_fft, device=run.device)
    bands = hat_bands(cfg.model.n_fft // 2 + 1, cfg.model.bands, cfg.model.sample_rate).to(run.device)
    torch.manual_seed(cfg.loop.seed)
    model = MonoToStereo(cfg.model)
    run.print(f"m2s: {model.num_parameters() / 1e6:.2f}M params, {len(dataset)} training pieces, "
              f"{0 if heldout is None else len(heldout)} held out, {run.mixed_precision}")
    model, opt, sched, ema = run.train_one(model)
    eval_model = MonoToStereo(cfg.model).to(run.device).eval() if run.is_main else None  # before restore(): RNG
    run.restore()

    def evaluate():
        averaged = ema.copy_to(eval_model)  # on every process: under FSDP the average is gathered
        if run.is_main and heldout is not None:
            scores = stereo_scores(averaged, heldout.to(run.device))
            run.log(**{f"heldout/{k}": v for k, v in scores.items()})
        run.accelerator.wait_for_everyone()

    for batch in run.batches(dataset, collate):
        real = batch["wav"].to(run.device)  # (B, 2, N)
        if cfg.swap_channels:
            # Seeded by (seed, step, process): a resumed run draws the same swaps.
            gen = torch.Generator().manual_seed(hash((cfg.loop.seed, run.step, run.accelerator.process_index)) % 2**62)
            swap = torch.rand(real.shape[0], generator=gen) < 0.5
            real = torch.where(swap.to(run.device)[:, None, None], real.flip(1), real)
        mid, side = mid_side(real)
        spec_mid, spec_side = model(mid, spectra=True)
        with torch.no_grad():
            ref = reference_spectra(torch.stack([side, real[:, 0], real[:, 1]], 1), cfg.model, window)
        side_loss = spectral_distance(spec_side.abs(), ref[:, 0])
        lr_loss = spectral_distance(torch.stack([(spec_mid + spec_side).abs(), (spec_mid - spec_side).abs()], 1),
                                    ref[:, 1:])
        loss = cfg.side_weight * side_loss + cfg.lr_weight * lr_loss
        logs = {}
        if cfg.energy_weight:
            energy_loss = (band_log_energy(spec_side.abs(), bands, cfg.energy_frames)
                           - band_log_energy(ref[:, 0], bands, cfg.energy_frames)).abs().mean()
            loss = loss + cfg.energy_weight * energy_loss
            logs["side_energy"] = energy_loss
        if cfg.width_weight:
            width_loss = ((spec_side.abs().pow(2).sum((1, 2)) + 1e-6).log()
                          - (ref[:, 0].pow(2).sum((1, 2)) + 1e-6).log()).abs().mean()
            loss = loss + cfg.width_weight * width_loss
            logs["width"] = width_loss
        grad_norm = run.backward(loss, model, opt, sched)
        run.end_step(loss=loss, grad_norm=grad_norm, side_stft=side_loss, lr_stft=lr_loss, **logs)
        if run.stepped and (run.step % cfg.eval_every == 0 or run.done):
            evaluate()

    def export() -> Path:
        dst = run.out_dir / "export" / "m2s"
        ckpt.save_component(dst, ema.copy_to(MonoToStereo(cfg.model)), cfg.model, meta={"step": run.step})
        return dst

    return run.finish(export=export)


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Waveform discriminators for VAE training (paper A.1: "multi-period and multi-band
discriminators", as in Improved RVQGAN / DAC).

* :class:`PeriodDiscriminator` - the waveform (B, 1, N) is padded to a multiple of the period
  p and folded to (B, 1, N / p, p); 2-D convs with (k, 1) kernels stride along the folded time
  axis only, so each column sees every p-th sample (HiFi-GAN's MPD).
* :class:`BandSTFTDiscriminator` - complex STFT at one window size as a 2-channel
  (real, imag) image (B, 2, frames, bins), split into frequency bands; each band has its own
  conv stack (striding along frequency), the band outputs are concatenated along frequency and
  one shared conv gives the logit map (DAC's multi-band "MRD").
* :class:`Discriminator` - all of them; ``forward(wav)`` returns one feature list per
  sub-discriminator whose LAST entry is the logit map (the format of :mod:`train.autoencoder.losses`).

Sizes come from :class:`DiscriminatorConfig`; its defaults are the CPU-sized tiny variant,
``DiscriminatorConfig.paper()`` the DAC sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


@dataclass
class DiscriminatorConfig:
    """Sizes of :class:`Discriminator`; defaults are the CPU-trainable tiny variant.

    periods: one period discriminator each (empty disables them). mpd_channels: widths of the
    period discriminator's convs; all but the last stride mpd_stride along time.
    fft_sizes: one band-STFT discriminator per window size (hop = hop_factor * size; empty
    disables them). bands: frequency bands as fractions of the bins [0, 1]. mrd_channels: width
    of each band's conv stack. normalize_input: remove DC and peak-normalise every clip to 0.8
    before judging it (DAC), so the discriminators do not key on level.
    """

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    mpd_kernel: int = 5
    mpd_stride: int = 3
    fft_sizes: tuple[int, ...] = (1024, 512, 256)
    hop_factor: float = 0.25
    bands: tuple[tuple[float, float], ...] = DAC_BANDS
    mrd_channels: int = 16
    weight_norm: bool = True
    normalize_input: bool = True
    leaky_slope: float = 0.1

    def __post_init__(self):
        self.periods = tuple(int(p) for p in self.periods)
        self.mpd_channels = tuple(int(c) for c in self.mpd_channels)
        self.fft_sizes = tuple(int(n) for n in self.fft_sizes)
        self.bands = tuple((float(lo), float(hi)) for lo, hi in self.bands)
        if not self.periods and not self.fft_sizes:
            raise ValueError("DiscriminatorConfig needs at least one period or FFT size")
        if any(p < 1 for p in self.periods) or any(n < 4 for n in self.fft_sizes):
            raise ValueError(f"periods must be >= 1 and fft_sizes >= 4, got {self.periods}, {self.fft_sizes}")
        if self.periods and (not self.mpd_channels or min(self.mpd_channels) < 1):
            raise ValueError(f"mpd_channels must be non-empty positive integers, got {self.mpd_channels}")
        if self.fft_sizes:
            if not self.bands or any(not 0.0 <= lo < hi <= 1.0 for lo, hi in self.bands):
                raise ValueError(f"bands must be non-empty (lo, hi) fractions with 0 <= lo < hi <= 1, got {self.bands}")
            if min(self.fft_sizes) * min(hi - lo for lo, hi in self.bands) < 1:
                raise ValueError(f"a band of {self.bands} is empty at FFT size {min(self.fft_sizes)}")
        if not 0.0 < self.hop_factor <= 1.0 or self.mrd_channels < 1 or self.mpd_kernel < 1 or self.mpd_stride < 1:
            raise ValueError("hop_factor must be in (0, 1]; mrd_channels, mpd_kernel, mpd_stride >= 1")

    @classmethod
    def tiny(cls, **overrides) -> "DiscriminatorConfig":
        """CPU-sized: narrow convs, FFT sizes 1024/512/256."""
        return cls(**overrides)

    @classmethod
    def paper(cls, **overrides) -> "DiscriminatorConfig":
        """DAC's sizes: MPD widths 32-128-512-1024-1024, MRD width 32 at FFT sizes 2048/1024/512."""
        base = dict(mpd_channels=(32, 128, 512, 1024, 1024), fft_sizes=(2048, 1024, 512), mrd_channels=32)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["bands"] = [list(b) for b in self.bands]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DiscriminatorConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming the allowed ones."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown DiscriminatorConfig keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**d)


def _conv2d(c_in: int, c_out: int, kernel, stride, padding, weight_norm: bool) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding)
    return nn.utils.parametrizations.weight_norm(conv) if weight_norm else conv


class PeriodDiscriminator(nn.Module):
    """(B, 1, N) -> feature maps [(B, C_i, ~N / (p * stride^i), p) ..., logits (B, 1, L, p)]."""

    def __init__(self, period: int, cfg: DiscriminatorConfig):
        super().__init__()
        self.period, self.slope = period, cfg.leaky_slope
        k, pad = cfg.mpd_kernel, cfg.mpd_kernel // 2
        chans = (1, *cfg.mpd_channels)
        self.convs = nn.ModuleList(
            _conv2d(chans[i], chans[i + 1], (k, 1), (cfg.mpd_stride if i < len(chans) - 2 else 1, 1),
                    (pad, 0), cfg.weight_norm)
            for i in range(len(chans) - 1)
        )
        self.post = _conv2d(chans[-1], 1, (3, 1), 1, (1, 0), cfg.weight_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = x.shape[-1]
        pad = (-n) % self.period
        if pad:
            x = F.pad(x, (0, pad), mode="reflect" if n > pad else "constant")
        x = x.reshape(x.shape[0], 1, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            feats.append(x)
        feats.append(self.post(x))
        return feats


class BandSTFTDiscriminator(nn.Module):
    """(B, 1, N) -> per band 5 feature maps (B, C, frames, bins_b / 8), then logits
    (B, 1, frames, sum_b bins_b / 8); frames = 1 + N // hop."""

    def __init__(self, n_fft: int, cfg: DiscriminatorConfig):
        super().__init__()
        self.n_fft, self.hop, self.slope = n_fft, max(1, int(n_fft * cfg.hop_factor)), cfg.leaky_slope
        n_bins = n_fft // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in cfg.bands]
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        ch, wn = cfg.mrd_channels, cfg.weight_norm

        def stack() -> nn.ModuleList:  # time on H, frequency on W; stride along frequency
            return nn.ModuleList([
                _conv2d(2, ch, (3, 9), 1, (1, 4), wn),
                _conv2d(ch, ch, (3, 9), (1, 2), (1, 4), wn),
                _conv2d(ch, ch, (3, 9), (1, 2), (1, 4), wn),
                _conv2d(ch, ch, (3, 9), (1, 2), (1, 4), wn),
                _conv2d(ch, ch, (3, 3), 1, (1, 1), wn),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.post = _conv2d(ch, 1, (3, 3), 1, (1, 1), wn)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) -> (B, 2, frames, n_fft // 2 + 1): real and imaginary parts."""
        x = x.reshape(x.shape[0], x.shape[-1]).float()
        mode = "reflect" if x.shape[-1] > self.n_fft // 2 else "constant"
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, pad_mode=mode,
                          return_complex=True)
        return torch.view_as_real(spec).permute(0, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        spec = self.spectrogram(x)
        feats, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            h = spec[..., lo:hi]
            for conv in convs:
                h = F.leaky_relu(conv(h), self.slope)
                feats.append(h)
            outs.append(h)
        feats.append(self.post(torch.cat(outs, dim=-1)))
        return feats


class Discriminator(nn.Module):
    """Multi-period + multi-band multi-scale STFT discriminators.

    forward: (B, 1, N) audio -> list (one per sub-discriminator: periods first, then FFT
    sizes) of feature-map lists whose last entry is the logit map.
    """

    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = cfg or DiscriminatorConfig()
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p, self.config) for p in self.config.periods]
            + [BandSTFTDiscriminator(n, self.config) for n in self.config.fft_sizes]
        )
        self.names = [f"mpd{p}" for p in self.config.periods] + [f"mrd{n}" for n in self.config.fft_sizes]

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """Remove DC and peak-normalise each clip to 0.8: (B, 1, N) -> (B, 1, N)."""
        x = x - x.mean(dim=-1, keepdim=True)
        return 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if x.dim() == 2:
            x = x[:, None]
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"Discriminator expects mono audio (B, 1, N), got {tuple(x.shape)}")
        x = x.float()
        if self.config.normalize_input:
            x = self.preprocess(x)
        return [d(x) for d in self.discriminators]

    def num_params(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

"""Mono-to-stereo (M2S): predict the side signal from the generated mono clip (the mid).

MusicHiFi's idea (paper 3.5): keep the mono clip as the mid ``m`` and predict a side ``s``, then
``L = m + s`` and ``R = m - s``, so that ``(L + R) / 2`` is the mono clip exactly. Unlike
MusicHiFi's GAN vocoder at the audio rate, this model works on one STFT of the mid and costs a
few tens of milliseconds for 32 s on a CPU:

    X = STFT(m)                      (B, F, T) complex, hann window n_fft, hop
    feat = log band power of X       (B, bands, T), mel-spaced triangular bands, clip mean removed
    h = dilated residual conv net    over T (about 1.5 s of context either side)
    d, r = tanh(.), sigmoid(.)       per band and frame: direct and diffuse side gains
    S = X * (d + r * exp(i phi_f))   gains spread to bins by the same bands
    s = ISTFT(S)

``d`` pans what is in the mid (a source panned by ``p`` in [-1, 1] has side/mid = p in its bins);
``r`` adds a decorrelated copy, the share of reverb and chorus that is not in the mid. The
decorrelator ``exp(i phi_f)`` is a fixed all-pass of quadratic phase (a chirp) whose group delay
grows linearly with frequency up to n_fft / 4 samples, the classic way to decorrelate without a
comb-filter colouring. The side is limited sample by sample to ``|s| <= 1 - |m|``, so neither
channel clips and the mid identity holds exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from presto_core.errors import PrestoError


@dataclass
class StereoConfig:
    """M2S network: STFT size and hop (samples at ``sample_rate``), analysis/gain bands, width
    and depth of the dilated conv net over STFT frames (dilations ``dilations`` in that order)."""

    sample_rate: int = 44100
    n_fft: int = 2048
    hop: int = 512
    bands: int = 64
    channels: int = 128
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 1, 2)
    diffuse_init: float = -2.0  # sigmoid(-2) = 0.12: a little diffuse width before training

    @classmethod
    def tiny(cls) -> "StereoConfig":
        """The embedded default's size (about 0.6 M parameters)."""
        return cls()

    @classmethod
    def paper(cls) -> "StereoConfig":
        """The paper-scale config's size (train/configs/paper.json): 256 wide, two dilation cycles."""
        return cls(channels=256, dilations=(1, 2, 4, 8, 16, 32) * 2)

    def __post_init__(self):
        self.dilations = tuple(int(d) for d in self.dilations)
        if self.n_fft < 64 or self.n_fft % 2 or not 0 < self.hop <= self.n_fft // 2:
            raise PrestoError(f"StereoConfig: n_fft must be even and >= 64 and hop in (0, n_fft/2], "
                              f"got n_fft={self.n_fft}, hop={self.hop}")
        if not 2 <= self.bands <= self.n_fft // 2 + 1:
            raise PrestoError(f"StereoConfig: bands must be in [2, {self.n_fft // 2 + 1}], got {self.bands}")
        if self.kernel % 2 == 0 or not self.dilations or min(self.dilations) < 1:
            raise PrestoError("StereoConfig: kernel must be odd and dilations positive integers")


def _mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def hat_bands(n_bins: int, bands: int, sample_rate: int) -> torch.Tensor:
    """(bands, n_bins) triangular ("hat") weights with centres evenly spaced in mel from 0 Hz to
    Nyquist; every bin's weights sum to 1, so the transpose spreads band values to bins exactly."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_bins, dtype=torch.float64)
    centres = torch.linspace(0.0, float(_mel(torch.tensor(sample_rate / 2.0))), bands, dtype=torch.float64)
    m = _mel(freqs)
    step = centres[1] - centres[0]
    w = (1.0 - (m[None, :] - centres[:, None]).abs() / step).clamp_min(0.0)
    return (w / w.sum(0, keepdim=True)).float()


class _Residual(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel // 2))
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(F.gelu(self.conv(F.gelu(x))))


class MonoToStereo(nn.Module):
    """Side-from-mid model. ``side(mid)``: (B, N) -> (B, N); ``forward(mid)``: (B, N) -> (B, 2, N)
    with channel 0 left and channel 1 right, float32, ``(L + R) / 2 == mid``."""

    def __init__(self, cfg: StereoConfig):
        super().__init__()
        self.cfg = cfg
        n_bins = cfg.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer("bands", hat_bands(n_bins, cfg.bands, cfg.sample_rate), persistent=False)
        k = torch.arange(n_bins, dtype=torch.float64)
        # Group delay d(phi)/d(omega) = k * n_fft / (4 (n_bins - 1)) samples: 0 at DC, n_fft / 4 at Nyquist.
        phi = math.pi * k.pow(2) / (4.0 * (n_bins - 1))
        self.register_buffer("decor", torch.polar(torch.ones_like(phi), phi).to(torch.complex64), persistent=False)
        self.inp = nn.Conv1d(cfg.bands, cfg.channels, cfg.kernel, padding=cfg.kernel // 2)
        self.blocks = nn.ModuleList(_Residual(cfg.channels, cfg.kernel, d) for d in cfg.dilations)
        self.out = nn.Conv1d(cfg.channels, 2 * cfg.bands, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias[: cfg.bands].zero_()
            self.out.bias[cfg.bands:].fill_(cfg.diffuse_init)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, mid: torch.Tensor) -> None:
        if mid.dim() != 2 or mid.shape[-1] < 1:
            raise PrestoError(f"M2S takes mono audio of shape (batch, samples), got {tuple(mid.shape)}")

    def gains(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Direct and diffuse side gains per band and frame, (B, bands, T) each, from the mid's
        STFT (B, F, T). The features drop the clip's mean log power, so the gains do not depend
        on loudness."""
        power = torch.einsum("kf,bft->bkt", self.bands, spec.real.pow(2) + spec.imag.pow(2))
        feat = (power + 1e-8).log()
        feat = feat - feat.mean(dim=(1, 2), keepdim=True)
        h = self.inp(feat)
        for block in self.blocks:
            h = block(h)
        d, r = self.out(F.gelu(h)).float().chunk(2, dim=1)
        return torch.tanh(d), torch.sigmoid(r)

    def spectra(self, mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mid's STFT X and the predicted side's S, complex (B, F, T) each (F = n_fft / 2 + 1,
        centred frames of ``hop`` samples), before the side is turned back into audio."""
        self._check(mid)
        cfg = self.cfg
        # All in float32 whatever autocast says: bf16 phases would hiss, and on a CPU bf16 made this
        # small conv net slower (142 ms against 88 ms for 32 s in presto_core.bench).
        with torch.autocast(mid.device.type, enabled=False):
            spec = torch.stft(mid.float(), cfg.n_fft, cfg.hop, window=self.window, center=True, return_complex=True)
            d, r = self.gains(spec)
            bins = self.bands.t()  # (F, bands)
            gain = torch.einsum("fk,bkt->bft", bins, d) + torch.einsum("fk,bkt->bft", bins, r) * self.decor[:, None]
        return spec, spec * gain

    def side(self, mid: torch.Tensor) -> torch.Tensor:
        """The predicted side (B, N) for the mid (B, N), limited to ``|side| <= 1 - |mid|``."""
        _, spec = self.spectra(mid)
        mid = mid.float()
        cfg = self.cfg
        with torch.autocast(mid.device.type, enabled=False):
            side = torch.istft(spec, cfg.n_fft, cfg.hop, window=self.window, center=True, length=mid.shape[-1])
        limit = (1.0 - mid.abs()).clamp_min(0.0)
        return torch.maximum(torch.minimum(side, limit), -limit)

    def forward(self, mid: torch.Tensor, spectra: bool = False):
        """Left and right (B, 2, N) for the mid (B, N); ``spectra=True`` returns :meth:`spectra`
        instead (training goes through forward so that data-parallel wrappers see the call)."""
        if spectra:
            return self.spectra(mid)
        s = self.side(mid)
        mid = mid.float()
        return torch.stack([mid + s, mid - s], dim=1)


def mid_side(stereo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2, N) left/right -> mid (L + R) / 2 and side (L - R) / 2, (..., N) each."""
    if stereo.shape[-2] != 2:
        raise PrestoError(f"mid_side needs 2 channels on dim -2, got shape {tuple(stereo.shape)}")
    left, right = stereo[..., 0, :], stereo[..., 1, :]
    return (left + right) / 2, (left - right) / 2


def stereo_width(stereo: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Width of (..., 2, N) audio: side energy over mid energy, (...,). 0 for mono; 1 when the
    channels are uncorrelated and equally loud."""
    mid, side = mid_side(stereo.float())
    return side.pow(2).sum(-1) / (mid.pow(2).sum(-1) + eps)


def channel_correlation(stereo: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation of the left and right channels of (..., 2, N) audio, (...,); 1 for mono."""
    x = stereo.float() - stereo.float().mean(-1, keepdim=True)
    left, right = x[..., 0, :], x[..., 1, :]
    return (left * right).sum(-1) / ((left.pow(2).sum(-1) * right.pow(2).sum(-1)).sqrt() + eps)

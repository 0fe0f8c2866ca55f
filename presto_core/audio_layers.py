"""Building blocks of the audio VAE (:mod:`presto_core.autoencoder`).

Encoder side: Snake activations and dilated residual units around strided convolutions
(Improved RVQGAN / DAC style). Decoder side: ConvNeXt-1D blocks on channels-last tensors, a
sub-pixel upsampler and an inverse-STFT head (Vocos style), so that almost all decoder work
runs at a small multiple of the latent frame rate instead of the audio sample rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _maybe_wn(conv: nn.Module, weight_norm: bool) -> nn.Module:
    return nn.utils.parametrizations.weight_norm(conv) if weight_norm else conv


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned per-channel alpha. (B, C, N) -> (B, C, N).

    Periodic inductive bias for audio (BigVGAN / DAC); alpha starts at 1.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return x + (a * x).sin().pow(2) / (a + 1e-9)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv(k=7) -> Snake -> conv(k=1), plus skip. Length preserving."""

    def __init__(self, channels: int, dilation: int, weight_norm: bool = False):
        super().__init__()
        self.net = nn.Sequential(
            Snake(channels),
            _maybe_wn(nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation), weight_norm),
            Snake(channels),
            _maybe_wn(nn.Conv1d(channels, channels, 1), weight_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class EncoderBlock(nn.Module):
    """Residual units at the input rate, then a stride-``s`` conv: (B, c_in, L) -> (B, c_out, L / s).

    ``L`` must be a multiple of ``s``; the kernel is 2s with s samples of total padding so the
    output length is exactly ``L / s`` for even and odd strides alike.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, n_res: int, weight_norm: bool = False):
        super().__init__()
        self.res = nn.Sequential(*[ResidualUnit(c_in, 3**i, weight_norm) for i in range(n_res)])
        self.act = Snake(c_in)
        self.down = _maybe_wn(nn.Conv1d(c_in, c_out, 2 * stride, stride=stride), weight_norm)
        self.pad = ((stride + 1) // 2, stride // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.pad(self.act(self.res(x)), self.pad))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-1D block on channels-last input: (B, T, C) -> (B, T, C).

    Depthwise conv(k=7) -> LayerNorm -> Linear(C, r*C) -> GELU -> Linear(r*C, C), scaled by a
    small learned per-channel gain so a deep stack starts close to the identity.
    """

    def __init__(self, dim: int, mult: int = 3, layer_scale: float = 1e-2):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, mult * dim)
        self.pw2 = nn.Linear(mult * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x.transpose(1, 2)).transpose(1, 2)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + self.gamma * y


class SubPixelUpsample(nn.Module):
    """(B, T, C_in) -> (B, T * factor, C_out): one Linear to factor*C_out, then a reshape.

    Cheaper than a transposed conv and exact in length; the following depthwise convs smooth
    the seams between sub-frames.
    """

    def __init__(self, c_in: int, c_out: int, factor: int):
        super().__init__()
        self.factor, self.c_out = factor, c_out
        self.proj = nn.Linear(c_in, factor * c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return self.proj(x).reshape(b, t * self.factor, self.c_out)


def overlap_add_istft(spec: torch.Tensor, hop: int, overlap: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse STFT with "same" padding: (B, T', n_fft // 2 + 1) complex -> (B, T' * hop) float.

    ``n_fft = overlap * hop``. Frame t covers samples ``[t*hop - pad, t*hop - pad + n_fft)`` with
    ``pad = (n_fft - hop) // 2``, so T' frames give exactly T' * hop samples (torch.istft with
    center=True would give (T' - 1) * hop and pad zeros). Overlap-add uses ``overlap`` shifted
    adds instead of F.fold, and divides by the squared-window envelope as torch.istft does.
    """
    n_fft = overlap * hop
    b, t, _ = spec.shape
    frames = torch.fft.irfft(spec, n=n_fft, dim=-1) * window  # (B, T', n_fft)
    frames = frames.reshape(b, t, overlap, hop)
    out = frames.new_zeros(b, t + overlap - 1, hop)
    for k in range(overlap):
        out[:, k : k + t] += frames[:, :, k]
    env = _window_envelope(window, hop, overlap, t)
    out = out.reshape(b, -1) / env
    pad = (n_fft - hop) // 2
    return out[:, pad : pad + t * hop]


def _window_envelope(window: torch.Tensor, hop: int, overlap: int, t: int) -> torch.Tensor:
    w2 = window.pow(2).reshape(overlap, hop)
    env = w2.new_zeros(t + overlap - 1, hop)
    for k in range(overlap):
        env[k : k + t] += w2[k]
    # Guard the outermost samples (trimmed anyway) where a hann window is exactly 0.
    return env.reshape(-1).clamp_min(1e-8)


class ISTFTHead(nn.Module):
    """Channels-last features (B, T', C) -> waveform (B, T' * hop) via predicted magnitude/phase.

    A Linear layer predicts log-magnitude and phase per bin; magnitude = exp(log-mag) clamped to
    100 (keeps early training finite); phase enters as (cos, sin). Runs in fp32 even under
    autocast because complex bf16 FFTs are not supported.

    ``phase_advance``: the predicted phase is an offset (zero at init) on top of each bin's
    centre-frequency advance, 2 pi k t / overlap at frame t, i.e. the phase of a steady sinusoid
    at the bin's centre. Frames then add up coherently from the first step, and pitch only needs
    the right magnitudes. With freely predicted phase, pitch hangs on a phase the network learns
    slowly: resynthesising real music from its TRUE magnitudes (n_fft 960, hop 240, 44.1 kHz)
    with random phase keeps a chroma correlation of 0.36 with the original, with the centre
    advance 0.47, and at n_fft 1920 0.63 and 0.88 (train/evaluation/pitch.py).
    """

    def __init__(self, dim: int, hop: int, overlap: int = 4, phase_advance: bool = False):
        super().__init__()
        self.hop, self.overlap, self.phase_advance = hop, overlap, phase_advance
        self.n_fft = overlap * hop
        self.n_bins = self.n_fft // 2 + 1
        self.proj = nn.Linear(dim, 2 * self.n_bins)
        if phase_advance:
            with torch.no_grad():
                self.proj.weight[self.n_bins:].zero_()
                self.proj.bias[self.n_bins:].zero_()
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    def advance(self, frames: int, device=None) -> torch.Tensor:
        """(frames, n_bins) centre-frequency phases 2 pi ((k t) mod overlap) / overlap, exact in int64."""
        t = torch.arange(frames, device=device, dtype=torch.int64)[:, None]
        k = torch.arange(self.n_bins, device=device, dtype=torch.int64)[None]
        return (t * k % self.overlap).float() * (2 * math.pi / self.overlap)

    def forward(self, x: torch.Tensor, logmag_offset: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T', dim); ``logmag_offset`` (B, T', n_bins) is added to the predicted log-magnitudes."""
        h = self.proj(x).float()
        logmag, phase = h.chunk(2, dim=-1)
        if logmag_offset is not None:
            logmag = logmag + logmag_offset
        if self.phase_advance:
            phase = phase + self.advance(phase.shape[-2], phase.device)
        mag = logmag.exp().clamp(max=1e2)
        spec = torch.complex(mag * phase.cos(), mag * phase.sin())
        return overlap_add_istft(spec, self.hop, self.overlap, self.window.float())


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for positive ints."""
    return -(-a // b)

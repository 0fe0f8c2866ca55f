"""Audio VAE with a KL bottleneck: mono waveform <-> latent frames (paper A.1).

Units and shapes: audio is mono float32 at ``config.sample_rate`` Hz, shaped (B, 1, N), roughly
in [-1, 1]. Latents are (B, latent_channels, T) with T = ceil(N / hop) frames, i.e.
sample_rate / hop frames per second (45.9 Hz for 44.1 kHz and hop 960).

The encoder is a DAC-style strided conv stack. The decoder is Vocos-style: ConvNeXt blocks at
the latent frame rate, a sub-pixel upsampler to ``dec_upsample`` x that rate, more ConvNeXt
blocks, and an inverse-STFT head with hop ``hop / dec_upsample``. Decoding dominates few-step
latency (paper A.6), and this design does almost no work at the audio sample rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from presto_core.audio_layers import (
    ConvNeXtBlock,
    EncoderBlock,
    ISTFTHead,
    Snake,
    SubPixelUpsample,
    ceil_div,
    count_params,
)
from presto_core.errors import PrestoError

LOGVAR_RANGE = (-30.0, 20.0)


@dataclass
class VAEConfig:
    """Architecture of :class:`AudioVAE`; the defaults are the CPU-trainable tiny model.

    enc_channels has one more entry than enc_strides: the width entering each downsampling
    block, then the width after the last one. prod(enc_strides) must equal hop, and hop must be
    divisible by dec_upsample (the decoder's iSTFT hop is hop // dec_upsample, its FFT size
    istft_overlap times that). latent_scale multiplies latents in encode_latents so their std is
    about 0.5 (EDM sigma_data); training measures it and stores it here.
    """

    sample_rate: int = 44100
    hop: int = 960
    latent_channels: int = 32
    enc_channels: tuple[int, ...] = (16, 32, 64, 128, 256, 256)
    enc_strides: tuple[int, ...] = (2, 4, 4, 6, 5)
    enc_res_units: int = 1
    dec_dim: int = 256
    dec_blocks: int = 4
    dec_upsample: int = 4
    dec_up_dim: int = 128
    dec_up_blocks: int = 2
    dec_mlp_mult: int = 3
    istft_overlap: int = 4
    # "free": the iSTFT head predicts phase outright (Vocos). "advance": it predicts an offset on
    # each bin's steady centre-frequency phase (audio_layers.ISTFTHead), so notes come out coherent
    # from the start of training; use with istft_overlap >= 8 (finer bins) for pitched music.
    dec_phase: str = "free"
    # A fixed linear spectral path beside the learned ones (stft encoder only; needs the encoder's
    # STFT frames to be the decoder's: enc_stft_fft == istft_overlap * hop / dec_upsample and
    # enc_stft_down == dec_upsample). Encoder: mean += A (log spectrum pooled per latent frame) + a;
    # decoder: log-magnitude += B z + b. A, a, B, b are buffers stored with the weights; zero (no
    # effect) until training sets them to a whitened PCA of the corpus' log spectra
    # (train/autoencoder/pca.py), so latents carry pitch from the first step and the decoder renders it.
    spectral_skip: bool = False
    weight_norm: bool = False
    # Fixed gain on the encoder input. Training crops are at -20 dBFS (RMS 0.1) and the default
    # conv init shrinks activations further (encoder output ~linear in the input at init), so every
    # Snake ran in its near-linear regime (x + sin^2(x) ~ x). Trained on fresh crops, the VAE then
    # never learned loudness: the decoder emitted one stationary spectrum whatever the input
    # (envelope correlation ~0 after 1000 steps), while overfitting a single fixed clip still
    # worked. Scaling the input to RMS ~1 engages the nonlinearities and the envelope is learned
    # within ~100 steps (tests/test_train_vae.py::test_reconstruction_follows_envelope).
    # VAE exports saved before this field existed were trained with 1.0 (set it when loading them).
    enc_input_gain: float = 10.0
    # "wave": strided Snake convolutions on the waveform (DAC). "stft": log-magnitude STFT frames at
    # enc_stft_down x the latent rate -> ConvNeXt blocks -> one strided conv: pitch is explicit in
    # the input, so on a 2-core CPU the latents carry tonal content within hundreds of steps, where
    # the waveform encoder still encoded mostly rhythm and loudness after 2500 (the mirror image of
    # the Vocos-style decoder). enc_channels/enc_strides/enc_res_units only apply to "wave".
    enc_frontend: str = "wave"
    enc_stft_fft: int = 1024
    enc_stft_down: int = 4
    enc_dim: int = 256
    enc_blocks: int = 2
    enc_mlp_mult: int = 3  # the stft encoder's ConvNeXt width factor (kept apart from the decoder's)
    latent_scale: float = 1.0

    def __post_init__(self):
        self.enc_channels = tuple(int(c) for c in self.enc_channels)
        self.enc_strides = tuple(int(s) for s in self.enc_strides)
        positive = {
            "sample_rate": self.sample_rate, "hop": self.hop, "latent_channels": self.latent_channels,
            "dec_dim": self.dec_dim, "dec_upsample": self.dec_upsample, "dec_up_dim": self.dec_up_dim,
            "dec_mlp_mult": self.dec_mlp_mult, "istft_overlap": self.istft_overlap, "enc_mlp_mult": self.enc_mlp_mult,
        }
        for name, v in positive.items():
            if not isinstance(v, int) or v < 1:
                raise PrestoError(f"VAEConfig.{name} must be a positive integer, got {v!r}")
        if min(self.dec_blocks, self.dec_up_blocks, self.enc_res_units) < 0:
            raise PrestoError("VAEConfig block counts must be >= 0")
        if not self.enc_strides or min(self.enc_strides) < 1 or min(self.enc_channels, default=0) < 1:
            raise PrestoError("VAEConfig.enc_strides / enc_channels must be non-empty positive integers")
        if math.prod(self.enc_strides) != self.hop:
            raise PrestoError(
                f"VAEConfig: product of enc_strides {self.enc_strides} is "
                f"{math.prod(self.enc_strides)}, must equal hop={self.hop}"
            )
        if len(self.enc_channels) != len(self.enc_strides) + 1:
            raise PrestoError(
                f"VAEConfig.enc_channels needs len(enc_strides) + 1 = {len(self.enc_strides) + 1} "
                f"entries, got {len(self.enc_channels)}"
            )
        if self.enc_frontend not in ("wave", "stft"):
            raise PrestoError(f"VAEConfig.enc_frontend must be 'wave' or 'stft', got {self.enc_frontend!r}")
        if self.enc_frontend == "stft" and (self.hop % self.enc_stft_down or self.enc_stft_fft < 2
                                            or min(self.enc_dim, self.enc_stft_down) < 1 or self.enc_blocks < 0):
            raise PrestoError(f"VAEConfig: the stft encoder needs hop={self.hop} divisible by enc_stft_down="
                              f"{self.enc_stft_down}, enc_stft_fft >= 2, enc_dim >= 1 and enc_blocks >= 0")
        if self.dec_phase not in ("free", "advance"):
            raise PrestoError(f"VAEConfig.dec_phase must be 'free' or 'advance', got {self.dec_phase!r}")
        if self.spectral_skip and (self.enc_frontend != "stft" or self.enc_stft_down != self.dec_upsample
                                   or self.enc_stft_fft != self.istft_overlap * self.hop // self.dec_upsample):
            raise PrestoError("VAEConfig.spectral_skip needs enc_frontend='stft', enc_stft_down == dec_upsample "
                              f"and enc_stft_fft == istft_overlap * hop / dec_upsample "
                              f"(= {self.istft_overlap * self.hop // max(self.dec_upsample, 1)}), got "
                              f"{self.enc_frontend!r}, {self.enc_stft_down}, {self.enc_stft_fft}")
        if self.hop % self.dec_upsample:
            raise PrestoError(f"VAEConfig.hop={self.hop} must be divisible by dec_upsample={self.dec_upsample}")
        if not (isinstance(self.enc_input_gain, (int, float)) and math.isfinite(self.enc_input_gain)
                and self.enc_input_gain > 0):
            raise PrestoError(f"VAEConfig.enc_input_gain must be a positive finite number, got {self.enc_input_gain!r}")
        if not (isinstance(self.latent_scale, (int, float)) and math.isfinite(self.latent_scale)
                and self.latent_scale > 0):
            raise PrestoError(f"VAEConfig.latent_scale must be a positive finite number, got {self.latent_scale!r}")

    @classmethod
    def tiny(cls, **overrides) -> "VAEConfig":
        """CPU-trainable model (5.8M params: 3.6M STFT encoder, 2.2M decoder) at 44.1 kHz, hop 960,
        32 channels, with the fixed PCA spectral path and a phase-advance decoder head on shared
        1920-point STFT frames: the embedded default's VAE."""
        base = dict(enc_frontend="stft", enc_stft_fft=1920, dec_phase="advance", istft_overlap=8, spectral_skip=True)
        return cls(**{**base, **overrides})

    @classmethod
    def paper(cls, **overrides) -> "VAEConfig":
        """Paper-scale model (89M params: 52M encoder, 37M decoder) at 44.1 kHz, hop 960, 32 channels."""
        base = dict(
            enc_channels=(64, 128, 256, 512, 1024, 1024), enc_res_units=3, dec_dim=768,
            dec_blocks=8, dec_up_dim=512, dec_up_blocks=4, weight_norm=True,
        )
        return cls(**{**base, **overrides})

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists); inverse of :meth:`from_dict`."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        """Build from a (JSON) dict; unknown keys raise PrestoError naming the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise PrestoError(f"unknown VAEConfig keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**d)


class Encoder(nn.Module):
    """(B, 1, T*hop) -> (B, 2 * latent_channels, T)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, wn = cfg.enc_channels, cfg.weight_norm
        conv_in = nn.Conv1d(1, ch[0], 7, padding=3)
        conv_out = nn.Conv1d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)
        if wn:
            conv_in = nn.utils.parametrizations.weight_norm(conv_in)
            conv_out = nn.utils.parametrizations.weight_norm(conv_out)
        blocks = [EncoderBlock(ch[i], ch[i + 1], s, cfg.enc_res_units, wn) for i, s in enumerate(cfg.enc_strides)]
        self.net = nn.Sequential(conv_in, *blocks, Snake(ch[-1]), conv_out)
        self.input_gain = float(cfg.enc_input_gain)  # see VAEConfig.enc_input_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.input_gain)


class STFTEncoder(nn.Module):
    """(B, 1, T*hop) -> (B, 2 * latent_channels, T) from log-magnitude STFT frames.

    Frames every hop / enc_stft_down samples (Hann window enc_stft_fft, centred) -> Conv1d(k=7)
    -> enc_blocks ConvNeXt blocks -> Conv1d(kernel = stride = enc_stft_down) -> enc_blocks ConvNeXt
    blocks -> Linear to mean and logvar.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.n_fft, self.hop = cfg.enc_stft_fft, cfg.hop // cfg.enc_stft_down
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        d = cfg.enc_dim
        self.conv_in = nn.Conv1d(self.n_fft // 2 + 1, d, 7, padding=3)
        self.norm_in = nn.LayerNorm(d, eps=1e-6)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(d, cfg.enc_mlp_mult) for _ in range(cfg.enc_blocks)])
        self.down = nn.Conv1d(d, d, cfg.enc_stft_down, stride=cfg.enc_stft_down)
        self.norm_down = nn.LayerNorm(d, eps=1e-6)
        self.low_blocks = nn.Sequential(*[ConvNeXtBlock(d, cfg.enc_mlp_mult) for _ in range(cfg.enc_blocks)])
        self.norm_out = nn.LayerNorm(d, eps=1e-6)
        self.out = nn.Linear(d, 2 * cfg.latent_channels)
        self.input_gain = float(cfg.enc_input_gain)
        self.down_factor = cfg.enc_stft_down
        self.spectral_skip = cfg.spectral_skip
        if cfg.spectral_skip:  # fixed analysis (see VAEConfig.spectral_skip): mean += pca_w @ pooled + pca_b
            self.register_buffer("pca_w", torch.zeros(cfg.latent_channels, self.n_fft // 2 + 1))
            self.register_buffer("pca_b", torch.zeros(cfg.latent_channels))

    def log_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) audio -> (B, n_fft // 2 + 1, N // hop) log |STFT(input_gain * x)|, float32."""
        n_frames = x.shape[-1] // self.hop
        spec = torch.stft(x[:, 0].float() * self.input_gain, self.n_fft, self.hop, window=self.window,
                          center=True, return_complex=True)
        # log compresses the ~100 dB range so quiet harmonics weigh as much as loud drums
        return spec.abs()[..., :n_frames].clamp_min(1e-4).log()

    def pooled(self, logspec: torch.Tensor) -> torch.Tensor:
        """(B, F, T * down) -> (B, F, T): mean log spectrum of each latent frame's sub-frames."""
        b, f, t = logspec.shape
        return logspec[..., : t // self.down_factor * self.down_factor].reshape(b, f, -1, self.down_factor).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logspec = self.log_spectrum(x)
        feats = logspec.to(self.conv_in.weight.dtype)
        h = self.blocks(self.norm_in(self.conv_in(feats).transpose(1, 2)))
        h = self.norm_down(self.down(h.transpose(1, 2)).transpose(1, 2))
        out = self.out(self.norm_out(self.low_blocks(h))).transpose(1, 2)
        if self.spectral_skip:
            lin = torch.einsum("cf,bft->bct", self.pca_w.float(), self.pooled(logspec)) + self.pca_b.float()[:, None]
            out = out.float() + torch.cat([lin, torch.zeros_like(lin)], dim=1)  # the mean half only
        return out


class Decoder(nn.Module):
    """(B, latent_channels, T) -> (B, T*hop): work at 1x and dec_upsample x the frame rate."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.conv_in = nn.Conv1d(cfg.latent_channels, cfg.dec_dim, 7, padding=3)
        self.norm_in = nn.LayerNorm(cfg.dec_dim, eps=1e-6)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(cfg.dec_dim, cfg.dec_mlp_mult) for _ in range(cfg.dec_blocks)])
        if cfg.dec_upsample > 1:
            self.up = SubPixelUpsample(cfg.dec_dim, cfg.dec_up_dim, cfg.dec_upsample)
            dim = cfg.dec_up_dim
        else:
            self.up, dim = nn.Identity(), cfg.dec_dim
        self.up_blocks = nn.Sequential(*[ConvNeXtBlock(dim, cfg.dec_mlp_mult) for _ in range(cfg.dec_up_blocks)])
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)
        self.head = ISTFTHead(dim, cfg.hop // cfg.dec_upsample, cfg.istft_overlap, cfg.dec_phase == "advance")
        self.upsample = cfg.dec_upsample
        self.spectral_skip = cfg.spectral_skip
        if cfg.spectral_skip:  # fixed synthesis (see VAEConfig.spectral_skip): log-mag += skip_w @ z + skip_b
            self.register_buffer("skip_w", torch.zeros(self.head.n_bins, cfg.latent_channels))
            self.register_buffer("skip_b", torch.zeros(self.head.n_bins))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(self.conv_in(z).transpose(1, 2))  # channels-last from here on
        x = self.up_blocks(self.up(self.blocks(x)))
        extra = None
        if self.spectral_skip:
            extra = (torch.einsum("fc,bct->btf", self.skip_w.float(), z.float()) + self.skip_b.float())
            extra = extra.repeat_interleave(self.upsample, dim=1)  # (B, T * upsample, bins)
        return self.head(self.norm_out(x), extra)


class AudioVAE(nn.Module):
    """KL-bottleneck VAE. See the module docstring for units; all outputs are float32."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.cfg = config or VAEConfig()
        self.encoder = STFTEncoder(self.cfg) if self.cfg.enc_frontend == "stft" else Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)

    # -- shapes -------------------------------------------------------------------------------
    def num_frames(self, n_samples: int) -> int:
        """Latent frames for ``n_samples`` audio samples: ceil(n_samples / hop)."""
        return ceil_div(int(n_samples), self.cfg.hop)

    def _check_wav(self, wav: torch.Tensor) -> None:
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[1] != 1 or wav.shape[-1] < 1:
            shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
            raise PrestoError(f"AudioVAE expects mono audio shaped (B, 1, N) with N >= 1, got {shape}")

    def _check_latents(self, z: torch.Tensor) -> None:
        c = self.cfg.latent_channels
        if not isinstance(z, torch.Tensor) or z.dim() != 3 or z.shape[1] != c or z.shape[-1] < 1:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise PrestoError(f"AudioVAE expects latents shaped (B, {c}, T) with T >= 1, got {shape}")

    # -- core ---------------------------------------------------------------------------------
    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, N) audio -> (mean, logvar), each (B, C, ceil(N / hop)) float32.

        The input is zero-padded at the end to a whole number of frames; logvar is clamped to
        [-30, 20] so exp() stays finite.
        """
        self._check_wav(wav)
        n = wav.shape[-1]
        pad = self.num_frames(n) * self.cfg.hop - n
        if pad:
            wav = nn.functional.pad(wav, (0, pad))
        mean, logvar = self.encoder(wav).float().chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, T) raw (unscaled) latents -> (B, 1, T * hop) audio, float32."""
        self._check_latents(z)
        return self.decoder(z).unsqueeze(1)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw mean + exp(logvar / 2) * eps, eps from ``generator``."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * eps

    def forward(
        self, wav: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (B, 1, N) -> (recon (B, 1, T*hop), mean, logvar (B, C, T))."""
        mean, logvar = self.encode(wav)
        return self.decode(self.sample(mean, logvar, generator)), mean, logvar

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over every element. Scalar."""
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()

    # -- diffusion-facing (scaled) latents ----------------------------------------------------
    def encode_latents(
        self, wav: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """(B, 1, N) audio -> (B, C, T) latents times ``latent_scale`` (the diffusion space).

        Returns the posterior mean, or a posterior draw when ``sample`` is True.
        """
        mean, logvar = self.encode(wav)
        z = self.sample(mean, logvar, generator) if sample else mean
        return z * self.cfg.latent_scale

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, T) diffusion-space latents -> (B, 1, T * hop) audio (divides by latent_scale)."""
        return self.decode(z / self.cfg.latent_scale)

    def num_params(self) -> dict[str, int]:
        """Trainable parameter counts: {"encoder", "decoder", "total"}."""
        e, d = count_params(self.encoder), count_params(self.decoder)
        return {"encoder": e, "decoder": d, "total": e + d}

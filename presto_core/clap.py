"""CLAP scoring behind one interface, the embedded CLAP model, and CLAP rejection sampling.

Rejection sampling (paper section 4.7 "Extensions", appendix A.10): generate ``num_candidates(n, r)`` clips,
score each against the prompt with CLAP, and keep the ``n`` best (``select_best``); this trades
diversity for text relevance and quality.

Two scorers implement :class:`ClapScorer`:

- :class:`EmbeddedClapScorer`: the small :class:`EmbeddedClap` (log-mel conv + transformer audio
  tower, frozen MiniLM tokens -> MLP text tower) that ships with the embedded default and needs
  no network.
- ``LaionClapScorer`` (in :mod:`presto_core.clap_laion`; import it from there): published
  laion-clap checkpoints, the paper's metric backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from presto_core.audio import resample
from presto_core.errors import PrestoError, check_number
from presto_core.limits import LIMITS
from presto_core.text import check_prompts


# ---------------------------------------------------------------------------------------------
# Scoring interface


@runtime_checkable
class ClapScorer(Protocol):
    """Text-audio similarity in a shared, L2-normalised embedding space of size D."""

    sample_rate: int

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` (B strings) -> (B, D) unit vectors."""

    def embed_audio(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(B, N) (or (B, C, N), averaged to mono) waveform at ``sr`` Hz -> (B, D) unit vectors."""

    def score(self, prompts: list[str], wav: torch.Tensor, sr: int) -> torch.Tensor:
        """Cosine similarity of prompt i with clip i -> (B,) in [-1, 1]."""


def prepare_audio(wav, sr: int, target_sr: int, device=None) -> torch.Tensor:
    """Validate and convert audio for a scorer: (B, N) or (B, C, N) tensor/array at ``sr`` Hz ->
    (B, M) float32 mono at ``target_sr`` on ``device``. Resampling uses soxr (band-limited)."""
    if not torch.is_tensor(wav):
        wav = torch.as_tensor(np.asarray(wav))
    if not wav.is_floating_point():
        raise PrestoError(f"audio must be a floating-point waveform in [-1, 1], got dtype {wav.dtype}")
    if wav.ndim == 3:
        wav = wav.mean(dim=1)  # stereo candidates are scored on their mono mix
    if wav.ndim != 2 or wav.shape[0] == 0 or wav.shape[1] == 0:
        raise PrestoError(f"audio must be shaped (B, N) or (B, C, N) with B, N >= 1, got {tuple(wav.shape)}")
    if not bool(torch.isfinite(wav).all()):
        raise PrestoError("audio contains NaN or inf samples")
    sr = check_number("sr", sr, 1, 1_000_000, integer=True)
    device = wav.device if device is None else torch.device(device)
    if sr != target_sr:
        wav = torch.from_numpy(resample(wav.detach().float().cpu().numpy(), sr, int(target_sr)))
    return wav.to(device=device, dtype=torch.float32)


class ScorerBase:
    """Shared :meth:`score`: subclasses provide ``embed_text`` and ``embed_audio``."""

    sample_rate: int

    def score(self, prompts: list[str], wav: torch.Tensor, sr: int) -> torch.Tensor:
        """Cosine similarity of each prompt with its own clip: B prompts (or one prompt for all
        clips) and (B, N) audio at ``sr`` Hz -> (B,) float32 in [-1, 1]."""
        prompts = check_prompts(prompts)
        n_clips = int(wav.shape[0]) if getattr(wav, "ndim", 0) >= 2 else -1
        if len(prompts) not in (1, n_clips):
            raise PrestoError(f"score needs one prompt or one per clip: got {len(prompts)} prompts "
                              f"for audio shaped {tuple(getattr(wav, 'shape', ()))}")
        a = self.embed_audio(wav, sr)
        t = self.embed_text(prompts).to(a.device)
        return (a * t).sum(-1).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Rejection sampling


def num_candidates(n: int, reject_ratio: float) -> int:
    """Candidates to generate so that rejecting a ``reject_ratio`` fraction leaves ``n``:
    ceil(n / (1 - reject_ratio)), computed exactly on the ratio as written (0.1 is 1/10).

    The ratio and the candidate count are held to the user-facing ``LIMITS`` (reject_ratio in
    [0, 0.9], at most 32 candidates); PrestoError names the range otherwise."""
    max_cand = LIMITS["candidates"][1]
    n = check_number("number of clips", n, 1, max_cand, integer=True)
    r = check_number("reject_ratio", reject_ratio, *LIMITS["reject_ratio"])
    # Fraction(str(r)) reads 0.1 as 1/10, not 0.1000000000000000055..., so 9 / 0.9 -> 10, not 11.
    total = math.ceil(Fraction(n) / (1 - Fraction(str(float(r)))))
    if total > max_cand:
        raise PrestoError(f"num_clips / (1 - reject_ratio) must be at most {max_cand} candidates, got {total} "
                          f"({n} clips at reject_ratio {r:g}); lower the number of clips or the reject ratio")
    return total


def select_best(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (n,) int64 of the ``n`` highest of ``scores`` (B',), best first; ties keep the
    lower index first and NaN scores rank last."""
    scores = torch.as_tensor(scores).detach()
    if scores.ndim != 1 or scores.numel() == 0:
        raise PrestoError(f"scores must be a non-empty 1-D tensor, got shape {tuple(scores.shape)}")
    n = check_number("n", n, 1, scores.numel(), integer=True)
    s = scores.double().cpu()
    s = torch.where(torch.isnan(s), torch.full_like(s, -math.inf), s)
    order = torch.sort(s, descending=True, stable=True).indices
    return order[:n].to(torch.long)


# ---------------------------------------------------------------------------------------------
# Embedded CLAP model


@dataclass
class ClapConfig:
    """Architecture of :class:`EmbeddedClap` (defaults: 2.69M params, 16 kHz, 64 mels, D = 256).

    Audio: log-mel (n_fft, hop_length, n_mels, f_min..f_max) -> one conv block per entry of
    ``channels`` (two 3x3 convs, GroupNorm, GELU, 2x2 average pool) -> mean over frequency ->
    ``time_layers`` transformer layers over time -> mean over time -> MLP -> D.
    Text: frozen token embeddings of width ``text_dim`` -> masked mean -> MLP(text_hidden) -> D.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float = 8000.0
    channels: tuple[int, ...] = (32, 64, 128, 256)
    time_layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    text_dim: int = 384
    text_hidden: int = 512
    embed_dim: int = 256

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "heads", "text_dim", "text_hidden", "embed_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PrestoError(f"ClapConfig.{name} must be a positive integer, got {v!r}")
        if not self.channels or min(self.channels) < 1:
            raise PrestoError(f"ClapConfig.channels must be non-empty positive integers, got {self.channels}")
        if not isinstance(self.time_layers, int) or self.time_layers < 0:
            raise PrestoError(f"ClapConfig.time_layers must be an integer >= 0, got {self.time_layers!r}")
        if self.channels[-1] % self.heads:
            raise PrestoError(f"ClapConfig.channels[-1]={self.channels[-1]} must be divisible by heads={self.heads}")
        check_number("ClapConfig.f_max", self.f_max, 1.0, self.sample_rate / 2)
        check_number("ClapConfig.f_min", self.f_min, 0.0, self.f_max)
        check_number("ClapConfig.dropout", self.dropout, 0.0, 0.9)


class _ConvBlock(nn.Module):
    """(B, C_in, F, T) -> (B, C_out, ceil(F/2), ceil(T/2))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        groups = math.gcd(8, c_out)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.GELU(),
            # ceil_mode keeps clips shorter than 2**len(channels) frames alive.
            nn.AvgPool2d(2, ceil_mode=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EmbeddedClap(nn.Module):
    """Small CLIP-style audio/text dual encoder trained from scratch on the synthetic corpus.

    The text encoder is not part of this module (nor of its state_dict): callers pass its token
    embeddings (B, L, text_dim) and mask (B, L) to :meth:`text_embed_from_tokens`.
    """

    def __init__(self, cfg: ClapConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else ClapConfig()
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                 fmin=cfg.f_min, fmax=cfg.f_max)
        # Derived from the config, so kept out of the state_dict (weights files stay minimal).
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

        chans = (1,) + cfg.channels
        self.convs = nn.Sequential(*[_ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        width = cfg.channels[-1]
        layer = nn.TransformerEncoderLayer(width, cfg.heads, 2 * width, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.time = (nn.TransformerEncoder(layer, cfg.time_layers, enable_nested_tensor=False)
                     if cfg.time_layers else None)
        self.audio_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.embed_dim), nn.GELU(),
                                        nn.Linear(cfg.embed_dim, cfg.embed_dim))
        self.text_proj = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.text_hidden),
                                       nn.GELU(), nn.Linear(cfg.text_hidden, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform at cfg.sample_rate -> (B, n_mels, frames) natural-log mel power."""
        wav = wav.float()
        if wav.shape[-1] < self.cfg.n_fft:  # reflect padding in stft needs N > n_fft / 2
            wav = F.pad(wav, (0, self.cfg.n_fft - wav.shape[-1]))
        spec = torch.stft(wav, self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                          center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        return torch.log(torch.matmul(self.mel_fb, power).clamp_min(1e-5))

    def audio_embed(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform at cfg.sample_rate -> (B, embed_dim) unit vectors."""
        if wav.ndim != 2:
            raise PrestoError(f"EmbeddedClap.audio_embed expects (B, N) audio, got {tuple(wav.shape)}")
        x = self.convs(self.log_mel(wav).unsqueeze(1))  # (B, C, F', T')
        x = x.mean(dim=2).transpose(1, 2)  # (B, T', C)
        if self.time is not None:
            x = self.time(x)
        return F.normalize(self.audio_proj(x.mean(dim=1)), dim=-1)

    def text_embed_from_tokens(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, text_dim) + mask (B, L) bool (True = token) -> (B, embed_dim) unit vectors."""
        if emb.ndim != 3 or emb.shape[-1] != self.cfg.text_dim or mask.shape != emb.shape[:2]:
            raise PrestoError(f"text tokens must be (B, L, {self.cfg.text_dim}) with a (B, L) mask, "
                              f"got {tuple(emb.shape)} and {tuple(mask.shape)}")
        m = mask.to(emb.dtype).unsqueeze(-1)
        pooled = (emb * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return F.normalize(self.text_proj(pooled.float()), dim=-1)

    def forward(self, wav: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) audio, (B, L, text_dim) tokens, (B, L) mask -> (audio_emb, text_emb), each (B, D)."""
        return self.audio_embed(wav), self.text_embed_from_tokens(emb, mask)

    def contrastive_loss(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over a batch of matching pairs (B, D), (B, D) -> scalar.

        Pair i is the positive for row/column i; identical captions elsewhere in the batch act
        as (false) negatives, so batches should hold distinct captions where possible.
        """
        # CLIP clamps the temperature at 100 so the logits cannot blow up early in training.
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * audio_emb @ text_emb.t()
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class EmbeddedClapScorer(ScorerBase):
    """:class:`ClapScorer` over an :class:`EmbeddedClap` and the text encoder it was trained with
    (anything with ``dim`` and ``encode(prompts) -> (emb (B, L, dim), mask (B, L))``)."""

    def __init__(self, model: EmbeddedClap, text_encoder):
        if getattr(text_encoder, "dim", None) != model.cfg.text_dim:
            raise PrestoError(f"CLAP model expects {model.cfg.text_dim}-d text tokens but the text encoder "
                              f"gives {getattr(text_encoder, 'dim', None)}-d ones")
        self.model = model
        self.text_encoder = text_encoder
        self.sample_rate = model.cfg.sample_rate

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def _run(self, fn, *args):
        # Scores must not depend on dropout or on whether a trainer left the model in train mode.
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return fn(*args)
        finally:
            self.model.train(was_training)

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, D) unit vectors on the model's device."""
        prompts = check_prompts(prompts)
        emb, mask = self.text_encoder.encode(prompts)
        return self._run(self.model.text_embed_from_tokens, emb.to(self.device), mask.to(self.device))

    def embed_audio(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(B, N) or (B, C, N) audio at ``sr`` Hz -> (B, D) unit vectors (resampled to sample_rate)."""
        x = prepare_audio(wav, sr, self.sample_rate, self.device)
        return self._run(self.model.audio_embed, x)


"""The score network F of appendix A.1: a 1-D latent DiT with AdaLN-Zero and Presto-L layer dropping.

Latents (B, C, T) become T tokens of width ``dim``. Each block is Llama-style (one self-attention,
one SwiGLU feed-forward) with AdaLN-Zero modulation from a conditioning vector built from the EDM
noise input ``c_noise`` and the BPM (plus, for Presto-L, the layer budget). Projected text tokens
join the keys and values of every attention layer, so audio queries attend over [audio; text].
Rotary embeddings on the audio queries/keys give position without a fixed maximum length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from presto_core.attention import BACKENDS, apply_rope, attention, rope_tables
from presto_core.errors import PrestoError

DROP_MODES = ("shifted", "ase")
# Inputs to the sinusoidal embeddings are rescaled into DiT's familiar "timestep" range (~0..1000)
# so the geometric frequency bank (periods 2*pi .. 2*pi*1e4) resolves them usefully.
NOISE_SCALE = 100.0  # c_noise = ln(sigma)/4 lies in about [-1.6, 1.1] for sigma in [0.002, 80]
BUDGET_SCALE = 1000.0  # applied to the dropped fraction k / depth
NULL_TEXT_TOKENS = 4  # learned tokens standing in for the prompt when unconditional
GRID_HARMONICS = (1, 2)  # cycles per beat and per bar in the beat-grid features
GRID_FEATURES = 4 * len(GRID_HARMONICS)


@dataclass
class DiTConfig:
    """Architecture of :class:`DiT`; saved as JSON beside the weights."""

    latent_channels: int = 32
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = 384
    freq_dim: int = 256
    bpm_max: float = 300.0
    budget_conditioning: bool = False
    # Beat-grid conditioning: each latent frame gets a zero-initialised projection of sin/cos of its
    # beat and bar phase (:func:`beat_grid_features`), so the model knows where the asked tempo's
    # beats fall instead of inferring a grid that wanders (the BPM embedding alone says how fast,
    # not where).
    beat_grid: bool = False
    drop_mode: str = "shifted"
    attention: str = "auto"
    qk_norm: bool = True

    def __post_init__(self):
        for name in ("latent_channels", "dim", "depth", "heads", "text_dim", "freq_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PrestoError(f"DiTConfig.{name} must be a positive integer, got {v!r}")
        if self.dim % self.heads:
            raise PrestoError(f"DiTConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if (self.dim // self.heads) % 2:
            raise PrestoError(f"DiTConfig head_dim = dim/heads = {self.dim // self.heads} must be even (rotary)")
        if self.freq_dim % 2:
            raise PrestoError(f"DiTConfig.freq_dim must be even, got {self.freq_dim}")
        if not self.mlp_ratio > 0 or not self.bpm_max > 0:
            raise PrestoError(f"DiTConfig.mlp_ratio and bpm_max must be > 0, got {self.mlp_ratio}, {self.bpm_max}")
        if self.drop_mode not in DROP_MODES:
            raise PrestoError(f"DiTConfig.drop_mode must be one of {DROP_MODES}, got {self.drop_mode!r}")
        if self.attention not in BACKENDS:
            raise PrestoError(f"DiTConfig.attention must be one of {BACKENDS}, got {self.attention!r}")

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU width: 2/3 of mlp_ratio*dim (same parameters as a GELU MLP), rounded up to 64."""
        return 64 * math.ceil(self.mlp_ratio * self.dim * 2 / 3 / 64)

    @classmethod
    def tiny(cls, **overrides) -> "DiTConfig":
        """CPU-sized model (14.9M parameters with 32 latent channels), the embedded default's size:
        256 wide, 12 blocks, 4 heads, for the MiniLM text encoder (384-d tokens)."""
        return cls(**{**dict(dim=256, depth=12, heads=4, text_dim=384), **overrides})

    @classmethod
    def paper(cls, **overrides) -> "DiTConfig":
        """DiT-XL as in the paper: 1152 wide, 28 blocks, 16 heads, T5-large text tokens (1024-d)."""
        return cls(**{**dict(dim=1152, depth=28, heads=16, text_dim=1024), **overrides})


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DiT/ADM sinusoidal embedding of scalars x: (B,) -> (B, dim) in fp32, [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def beat_grid_features(beats: torch.Tensor, beats_per_bar: float = 4.0) -> torch.Tensor:
    """Beat positions (B, T) -> (B, T, GRID_FEATURES) fp32: [cos, sin] of 2 pi h x for h in
    GRID_HARMONICS, with x the position in beats, then in bars (beats / beats_per_bar). A row of NaN
    (no grid for that sample) gives zeros."""
    x = beats.float()
    known = ~torch.isnan(x)
    x = torch.where(known, x, torch.zeros_like(x))
    h = torch.tensor(GRID_HARMONICS, dtype=torch.float32, device=x.device)
    args = 2 * math.pi * torch.cat([x[..., None] * h, (x / float(beats_per_bar))[..., None] * h], dim=-1)
    feats = torch.cat([args.cos(), args.sin()], dim=-1)
    return feats * known[..., None]


def beat_positions(start: torch.Tensor | float, bpm: torch.Tensor | float, frames: int, frame_rate: float,
                   device=None) -> torch.Tensor:
    """(B,) or scalar start (beats at frame 0) and BPM -> (B, frames) beat position of every latent
    frame (frame_rate frames per second), float32."""
    start = torch.as_tensor(start, dtype=torch.float32, device=device).reshape(-1, 1)
    bpm = torch.as_tensor(bpm, dtype=torch.float32, device=device).reshape(-1, 1)
    t = torch.arange(frames, dtype=torch.float32, device=start.device)[None] / float(frame_rate)
    return start + t * bpm / 60.0


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (B, T, D); shift, scale: (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


def _mlp(n_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, dim), nn.SiLU(), nn.Linear(dim, dim))


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, computed in fp32 (bf16 activations meet fp32 weights under autocast)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)


class SelfAttention(nn.Module):
    """Audio queries over [audio; text] keys/values; text shares the K/V projections."""

    def __init__(self, dim: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x, text, key_mask, rope, backend):
        """x: (B, T, dim); text: (B, L, dim); key_mask: (B, T+L) bool or None -> (B, T, dim)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).unbind(2)
        kt, vt = F.linear(text, self.qkv.weight[d:]).view(b, -1, 2, self.heads, self.head_dim).unbind(2)
        q, k, kt = self.q_norm(q), self.k_norm(k), self.k_norm(kt)
        # Text carries its own (encoder) positions, so only the audio tokens are rotated.
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        dt = v.dtype  # under autocast the norms/rope may have produced fp32
        k = torch.cat([k.to(dt), kt.to(dt)], dim=1)
        v = torch.cat([v, vt.to(dt)], dim=1)
        o = attention(q.to(dt), k, v, key_mask, backend)
        return self.out(o.reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        a, g = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * g)


class DiTBlock(nn.Module):
    """Pre-norm attention + SwiGLU, each with AdaLN-Zero (shift, scale, gate) from the conditioning."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(cfg.dim, cfg.heads, cfg.qk_norm)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_hidden)
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)

    def forward(self, x, c_act, text, key_mask, rope, backend):
        """x: (B, T, dim); c_act: SiLU(conditioning) (B, dim) -> (B, T, dim)."""
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c_act).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1), text, key_mask, rope, backend)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class DiT(nn.Module):
    """Raw backbone F(x_in, c_noise, text, bpm) for :class:`presto_core.edm.Precond`.

    A fresh model outputs exactly zero (AdaLN-Zero gates and a zero final projection), so the
    preconditioned denoiser starts as the skip path ``c_skip * x``.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.x_proj = nn.Linear(cfg.latent_channels, d)
        self.noise_embed = _mlp(cfg.freq_dim, d)
        self.bpm_embed = _mlp(cfg.freq_dim, d)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.null_text = nn.Parameter(torch.randn(NULL_TEXT_TOKENS, cfg.text_dim) * cfg.text_dim**-0.5)
        self.null_bpm = nn.Parameter(torch.randn(d) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        if cfg.beat_grid:
            self.grid_proj = nn.Linear(GRID_FEATURES, d, bias=False)  # no bias: no grid adds exactly 0
        if cfg.budget_conditioning:
            # Shared hidden layer; two zero-initialised heads: an embedding added to the noise
            # embedding, and (shift, scale) of the budget-only AdaLN on the block outputs.
            self.budget_hidden = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU())
            self.budget_embed = nn.Linear(d, d)
            self.budget_ada = nn.Linear(d, 2 * d)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_proj = nn.Linear(d, cfg.latent_channels)
        self.reset_parameters()

    def reset_parameters(self):
        """DiT initialisation: xavier linears, N(0, 0.02) embedders, zeros where AdaLN-Zero needs them."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for mlp in (self.noise_embed, self.bpm_embed):
            for m in mlp:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        zero = [blk.ada for blk in self.blocks] + [self.final_ada, self.final_proj]
        if self.cfg.beat_grid:  # zero: a model warm-started from one without the grid starts unchanged
            nn.init.zeros_(self.grid_proj.weight)
        if self.cfg.budget_conditioning:
            nn.init.normal_(self.budget_hidden[0].weight, std=0.02)
            zero += [self.budget_embed, self.budget_ada]
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- layer dropping -------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        hi = self.cfg.depth - 1
        if not 0 <= k <= hi:
            raise PrestoError(f"layers_dropped must be in [0, {hi}] for a {self.cfg.depth}-block DiT, got {k}")
        return k

    def active_blocks(self, k: int) -> list[int]:
        """Indices of the blocks that run with ``k`` layers dropped.

        "ase": blocks 0..depth-k-1. "shifted" (Presto-L): blocks 0..depth-k-2, then block depth-1,
        so the final block (whose output variance differs most) always runs.
        """
        k, depth = self._check_k(int(k)), self.cfg.depth
        if self.cfg.drop_mode == "ase":
            return list(range(depth - k))
        return list(range(depth - k - 1)) + [depth - 1]

    def _runs(self, i: int, k: torch.Tensor) -> torch.Tensor:
        """(B,) bool: which samples, with per-sample drop counts k (B,), run block i."""
        depth = self.cfg.depth
        if self.cfg.drop_mode == "ase":
            return i < depth - k
        return (i < depth - 1 - k) | (i == depth - 1)

    def _parse_drops(self, layers_dropped, b: int, device) -> tuple[int | None, torch.Tensor]:
        """-> (k for the whole batch or None if it varies, per-sample k (B,) long)."""
        if isinstance(layers_dropped, torch.Tensor) and layers_dropped.ndim > 0:
            bad_dtype = layers_dropped.is_floating_point() or layers_dropped.dtype == torch.bool
            if layers_dropped.shape != (b,) or bad_dtype:
                raise PrestoError(
                    f"layers_dropped must be an int or an integer tensor of shape ({b},), "
                    f"got {layers_dropped.dtype} {tuple(layers_dropped.shape)}"
                )
            k = layers_dropped.to(device=device, dtype=torch.long)
            lo, hi = (int(v) for v in torch.stack([k.min(), k.max()]).tolist())
            self._check_k(lo), self._check_k(hi)
            return (lo if lo == hi else None), k
        if isinstance(layers_dropped, bool) or (
            isinstance(layers_dropped, float) and not float(layers_dropped).is_integer()
        ):
            hi = self.cfg.depth - 1
            raise PrestoError(f"layers_dropped must be an integer in [0, {hi}], got {layers_dropped!r}")
        k = self._check_k(int(layers_dropped))
        return k, torch.full((b,), k, dtype=torch.long, device=device)

    # ---- forward --------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor | float,
        *,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        bpm: torch.Tensor | float | None = None,
        uncond: torch.Tensor | bool | None = None,
        layers_dropped: int | torch.Tensor = 0,
        beats: torch.Tensor | None = None,
        beats_per_bar: float = 4.0,
        return_hidden: bool = False,
        return_features: tuple[int, ...] = (),
        run_at_drop: int | None = None,
    ):
        """F(x_in, c_noise).

        x: (B, C, T) preconditioned latents; c_noise: scalar or (B,) = ln(sigma)/4; text:
        (B, L, text_dim) encoder tokens with text_mask (B, L) bool (True = real token; None = all
        real); bpm: scalar or (B,) beats per minute; uncond: bool or (B,) bool, True replaces that
        sample's text and BPM with the learned null condition (text/bpm may be None if all are
        unconditional); layers_dropped: int for the whole batch (blocks really skipped) or (B,)
        long per sample; beats: (B, T) beat position of every frame (:func:`beat_positions`; a NaN
        row = no grid for that sample), used by a ``beat_grid`` model for its conditional samples and
        ignored otherwise; beats_per_bar: the bar the grid's bar phase counts; run_at_drop: also run the blocks active at this drop count, using their
        output only where a sample's own count asks (results are unchanged): sharded training
        passes the smallest count of every process so all processes run the same blocks.

        Returns ``out`` (B, C, T) when nothing extra is asked for, else the tuple
        ``(out, *extras)`` with the extras in this fixed order, each present only if asked for:
        ``hidden`` (B, T, dim) with return_hidden, the final norm of the last block's output (the
        self-teacher target); ``feats``, a list of the block outputs (B, T, dim) named in
        return_features, in the order given (Presto-S's discriminator reads the fake score
        model's middle blocks this way). So: out | (out, hidden) | (out, feats) |
        (out, hidden, feats). :class:`presto_core.edm.Precond` keeps the same form, with the
        denoised estimate in place of ``out``. A requested block must run for every sample.
        """
        cfg = self.cfg
        if x.ndim != 3 or x.shape[1] != cfg.latent_channels:
            raise PrestoError(f"x must be (batch, {cfg.latent_channels}, frames), got {tuple(x.shape)}")
        b, _, t = x.shape
        dev = x.device
        k_all, k_vec = self._parse_drops(layers_dropped, b, dev)
        floor = None if run_at_drop is None else self._check_k(int(run_at_drop))
        if floor is not None and k_all is not None and floor < k_all:
            k_all = None  # blocks beyond the batch's own: the per-sample path runs and masks them
        u = self._uncond(uncond, b, dev)
        all_u, any_u = bool(u.all()), bool(u.any())

        wdt = self.x_proj.weight.dtype  # fp32 normally (autocast decides); bf16/fp16 for a cast model

        def emb(v):
            return sinusoidal(v, cfg.freq_dim).to(wdt)

        c = self.noise_embed(emb(self._per_sample(c_noise, b, dev, "c_noise") * NOISE_SCALE))
        if all_u:
            c = c + self.null_bpm.expand(b, -1)
        else:
            if bpm is None:
                raise PrestoError("bpm is required for conditional samples (uncond False)")
            bpm_v = self._per_sample(bpm, b, dev, "bpm") / cfg.bpm_max * 1000.0
            c = c + torch.where(u[:, None], self.null_bpm.to(c.dtype), self.bpm_embed(emb(bpm_v)))
        if cfg.budget_conditioning:
            bh = self.budget_hidden(emb(k_vec.float() / cfg.depth * BUDGET_SCALE))
            c = c + self.budget_embed(bh)
        c_act = F.silu(c)

        if text is not None:
            text = text.to(wdt)
        tokens, key_mask = self._text_tokens(text, text_mask, u, all_u, any_u, b, t)
        h = self.x_proj(x.transpose(1, 2).to(wdt))
        if cfg.beat_grid and beats is not None and not all_u:
            if beats.shape != (b, t):
                raise PrestoError(f"beats must be (batch={b}, frames={t}), got {tuple(beats.shape)}")
            grid = self.grid_proj(beat_grid_features(beats.to(dev), beats_per_bar).to(wdt))
            h = h + grid * (~u).to(grid.dtype)[:, None, None]  # the null condition has no tempo, so no grid
        rope = rope_tables(t, cfg.dim // cfg.heads, device=dev)
        args = (c_act, tokens, key_mask, rope, cfg.attention)
        want = self._check_features(return_features)
        feats: dict[int, torch.Tensor] = {}
        if k_all is not None:
            for i in self.active_blocks(k_all):
                h = self.blocks[i](h, *args)
                if i in want:
                    feats[i] = h
        else:
            # Per-sample budgets (training): run each block any sample needs, keep it where needed.
            ks = sorted(set(k_vec.tolist()) | ({floor} if floor is not None else set()))
            needed = sorted(set().union(*(self.active_blocks(k) for k in ks)))
            for i in needed:
                h = torch.where(self._runs(i, k_vec)[:, None, None], self.blocks[i](h, *args), h)
                if i in want:
                    feats[i] = h
        if want:
            skipped = [i for i in want if i not in feats or not bool(self._runs(i, k_vec).all())]
            if skipped:
                raise PrestoError(f"return_features: blocks {skipped} are dropped for some samples")
        if cfg.budget_conditioning:
            shift, scale = self.budget_ada(bh).chunk(2, dim=-1)
            h = modulate(h, shift, scale)

        hidden = self.final_norm(h)
        shift, scale = self.final_ada(c_act).chunk(2, dim=-1)
        out = self.final_proj(modulate(hidden, shift, scale)).transpose(1, 2)
        extras = ([hidden] if return_hidden else []) + ([[feats[i] for i in return_features]] if want else [])
        return (out, *extras) if extras else out

    def _check_features(self, idx) -> set[int]:
        try:
            idx = tuple(idx)
        except TypeError:
            raise PrestoError(f"return_features must be a tuple of block indices, got {idx!r}") from None
        for i in idx:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.cfg.depth:
                raise PrestoError(f"return_features entries must be block indices in [0, {self.cfg.depth - 1}], "
                                  f"got {idx!r}")
        return set(idx)

    @staticmethod
    def _per_sample(v, b: int, dev, name: str) -> torch.Tensor:
        v = torch.as_tensor(v, dtype=torch.float32, device=dev)
        if v.ndim == 0:
            return v.expand(b)
        if v.shape != (b,):
            raise PrestoError(f"{name} must be a scalar or shape ({b},), got {tuple(v.shape)}")
        return v.float()

    @staticmethod
    def _uncond(uncond, b: int, dev) -> torch.Tensor:
        if uncond is None or isinstance(uncond, bool):
            return torch.full((b,), bool(uncond), dtype=torch.bool, device=dev)
        u = torch.as_tensor(uncond, device=dev)
        if u.shape != (b,):
            raise PrestoError(f"uncond must be a bool or a bool tensor of shape ({b},), got {tuple(u.shape)}")
        return u.bool()

    def _text_tokens(self, text, text_mask, u, all_u, any_u, b, t):
        """-> projected tokens (B, L', dim) and the key mask over [audio; text] (B, T+L') or None."""
        null = self.null_text[None].expand(b, -1, -1)
        if all_u:  # CFG's unconditional pass: the prompt is never looked at
            return self.text_proj(null), None
        if text is None:
            raise PrestoError("text is required for conditional samples (uncond False)")
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != self.cfg.text_dim:
            raise PrestoError(f"text must be (batch={b}, tokens, {self.cfg.text_dim}), got {tuple(text.shape)}")
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        elif text_mask.shape != text.shape[:2]:
            raise PrestoError(f"text_mask must be {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
        text_mask = text_mask.bool()
        if any_u:  # mixed batch (training dropout): hide the prompt, reveal the null tokens
            text = torch.cat([text, null.to(text.dtype)], dim=1)
            text_mask = torch.cat([text_mask & ~u[:, None], u[:, None].expand(-1, NULL_TEXT_TOKENS)], dim=1)
        if bool(text_mask.all()):
            return self.text_proj(text), None
        audio = torch.ones(b, t, dtype=torch.bool, device=text_mask.device)
        return self.text_proj(text), torch.cat([audio, text_mask], dim=1)

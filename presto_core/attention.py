"""Attention over audio queries and [audio; text] keys, plus rotary position embeddings.

One entry point, :func:`attention`, takes tensors in the (batch, sequence, heads, head_dim)
layout that FlashAttention-2 uses natively and returns the same layout. PyTorch's
``scaled_dot_product_attention`` (with a boolean key mask) is the reference path and runs
everywhere; the ``flash-attn`` package is used only when it is installed, the tensors are on
CUDA in fp16/bf16, and the caller allows it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from presto_core.errors import PrestoError

try:  # optional: FlashAttention-2 (the paper's kernel); absent on CPU-only machines
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    HAS_FLASH_ATTN = True
except Exception:  # ImportError, or a broken CUDA build that fails at import time
    flash_attn_func = flash_attn_varlen_func = None
    HAS_FLASH_ATTN = False

BACKENDS = ("auto", "sdpa", "flash")


def flash_eligible(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True if FlashAttention-2 can run on these tensors (package present, CUDA, fp16/bf16, head_dim <= 256)."""
    return (
        HAS_FLASH_ATTN
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and k.dtype == q.dtype
        and v.dtype == q.dtype
        and q.shape[-1] <= 256
        and q.shape[-1] % 8 == 0
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Non-causal multi-head attention.

    q: (B, Tq, H, D); k, v: (B, Tk, H, D); key_mask: (B, Tk) bool, True = attend, or None for
    all keys valid. Every query row must keep at least one valid key (the DiT always has its
    audio keys). Returns (B, Tq, H, D) in v's dtype.

    backend: "sdpa" always uses PyTorch SDPA; "auto" uses flash-attn when :func:`flash_eligible`;
    "flash" requires it and raises PrestoError when it cannot run.
    """
    if backend not in BACKENDS:
        raise PrestoError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "sdpa" and flash_eligible(q, k, v):
        return _flash_attention(q, k, v, key_mask)
    if backend == "flash":
        why = "the flash-attn package is not installed" if not HAS_FLASH_ATTN else (
            f"flash-attn needs CUDA fp16/bf16 tensors with head_dim <= 256, got {q.device} {q.dtype} "
            f"head_dim {q.shape[-1]}"
        )
        raise PrestoError(f"attention='flash' cannot run: {why}; use attention='auto' or 'sdpa'")
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _flash_attention(q, k, v, key_mask):
    """FlashAttention-2; padded keys are removed with the varlen kernel rather than masked."""
    if key_mask is None:
        return flash_attn_func(q, k, v)
    b, tq, h, d = q.shape
    tk = k.shape[1]
    lens = key_mask.sum(1, dtype=torch.int32)
    cu_k = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
    cu_q = torch.arange(0, (b + 1) * tq, tq, dtype=torch.int32, device=q.device)
    # Valid keys need not be contiguous (audio, then padded text, then null tokens): attention is
    # order-free over keys, so gathering them in order per sample is enough.
    keep = key_mask.reshape(-1).nonzero(as_tuple=True)[0]
    k_flat = k.reshape(b * tk, h, d).index_select(0, keep)
    v_flat = v.reshape(b * tk, h, d).index_select(0, keep)
    # tk is a valid upper bound for max_seqlen_k and avoids one more host sync.
    out = flash_attn_varlen_func(q.reshape(b * tq, h, d), k_flat, v_flat, cu_q, cu_k, tq, tk)
    return out.view(b, tq, h, d)


def rope_tables(length: int, head_dim: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for positions 0..length-1: (cos, sin), each (length, head_dim) in fp32."""
    half = head_dim // 2
    inv = base ** (-torch.arange(half, dtype=torch.float32, device=device) / half)
    ang = torch.arange(length, dtype=torch.float32, device=device)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x: (B, T, H, D) by tables (T, D) (rotate-half convention); math in fp32, returns x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    out = xf * cos[None, :, None, :] + rotated * sin[None, :, None, :]
    return out.to(x.dtype)

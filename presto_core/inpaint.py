"""Inpainting in latent space and splicing in audio: the two halves of every edit.

Latents: :func:`masked_denoiser` fixes the kept frames of a window to known latents at every
denoiser call, ``D'(x, sigma) = keep * z_known + (1 - keep) * D(x, sigma)``. Every sampler steps
from the data estimate, so the kept frames of the state stay the known latents plus noise at the
current sigma: the few-step ping-pong sampler re-noises them with fresh noise each step
(RePaint-style), the deterministic solvers carry the initial noise down. The frames to regenerate
see the known ones, at the current noise level, through the DiT's attention.

Audio: :func:`splice` joins the decoded window into the original with short fades that sum to
one, placed where the decoded audio is a reconstruction of the original (before the first edited
sample, after the last), so everything outside the edit and its fades is the original, sample for
sample.
"""

from __future__ import annotations

import numpy as np
import torch

from presto_core.samplers import Denoised, Denoiser


def masked_denoiser(denoiser: Denoiser, z_known: torch.Tensor, keep: torch.Tensor) -> Denoiser:
    """Wrap ``denoiser`` so that frames where ``keep`` is True return ``z_known``.

    z_known: (1 | B, C, T) latents; keep: (T,) bool. A :class:`Denoised` pair (CFG++) has both
    of its estimates fixed, so the re-noising direction of the kept frames is the known latents too.
    """
    m = keep.to(device=z_known.device, dtype=torch.bool).view(1, 1, -1)

    def fix(x0: torch.Tensor) -> torch.Tensor:
        return torch.where(m, z_known.to(x0.dtype), x0)

    def masked(x: torch.Tensor, sigma: torch.Tensor):
        out = denoiser(x, sigma)
        if isinstance(out, Denoised):
            return Denoised(fix(out.x0), fix(out.x0_renoise))
        return fix(out)

    return masked


def fade_curve(n: int) -> np.ndarray:
    """(n,) float32 fade-in sin^2 from 0 to 1; ``1 - fade_curve(n)`` is its fade-out, and the two
    sum to one, so a fade between two near-identical signals leaves them unchanged."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    return (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)


def splice(original: np.ndarray, new: np.ndarray, start: int, end: int, fade: int) -> np.ndarray:
    """``original`` with samples [start, end) taken from ``new``, faded in over [start - fade, start)
    and out over [end, end + fade). Both (..., N) with the same shape; returns a copy.

    Samples before ``start - fade`` and from ``end + fade`` on are ``original``'s exactly; fades
    are cut short at the ends of the audio."""
    out = np.array(original, dtype=np.float32, copy=True)
    n = out.shape[-1]
    out[..., start:end] = new[..., start:end]
    a = max(0, start - fade)
    if start > a:
        f = fade_curve(fade)[fade - (start - a):]
        out[..., a:start] = original[..., a:start] * (1 - f) + new[..., a:start] * f
    b = min(n, end + fade)
    if b > end:
        f = fade_curve(fade)[::-1][: b - end]
        out[..., end:b] = original[..., end:b] * (1 - f) + new[..., end:b] * f
    return out

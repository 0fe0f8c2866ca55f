"""Inpainting in latent space and splicing in audio: the two halves of every edit.

Latents: :func:`masked_denoiser` fixes the kept frames of a window to known latents at every
denoiser call, ``D'(x, sigma) = keep * z_known + (1 - keep) * D(x, sigma)``. ``keep`` may be soft
(:func:`soft_keep`): a short ramp inside the regenerated span blends the known latents into the new
ones, so a boundary is a latent crossfade rather than a step from one frame to the next. Every sampler steps
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


def soft_keep(frames: int, lo: int, hi: int, ramp: int, left: bool = True, right: bool = True) -> torch.Tensor:
    """(frames,) float32 keep weights: 1 outside [lo, hi), 0 inside, except for ``ramp`` frames
    just inside each boundary (``left`` at lo, ``right`` at hi) that fall from 1 towards 0 along
    :func:`fade_curve`. The ramps are shortened to fit a third of the span each, so the middle
    of a short span is still fully regenerated; frames outside [lo, hi) are exactly 1."""
    keep = torch.ones(frames, dtype=torch.float32)
    keep[lo:hi] = 0.0
    r = max(0, min(ramp, (hi - lo) // 3))
    if r:
        down = torch.from_numpy(1.0 - fade_curve(r + 1)[1:])  # strictly below 1: every ramp frame changes
        if left:
            keep[lo:lo + r] = down
        if right:
            keep[hi - r:hi] = down.flip(0)
    return keep


def masked_denoiser(denoiser: Denoiser, z_known: torch.Tensor, keep: torch.Tensor) -> Denoiser:
    """Wrap ``denoiser`` so that each frame returns ``keep * z_known + (1 - keep) * D``.

    z_known: (1 | B, C, T) latents; keep: (T,) bool or float weights in [0, 1] (:func:`soft_keep`);
    frames with weight 1 return ``z_known`` exactly, with weight 0 the model's estimate exactly. A :class:`Denoised` pair (CFG++) has both of
    its estimates blended, so the re-noising direction of the kept frames is the known latents too.
    """
    w = keep.to(device=z_known.device, dtype=torch.float32).view(1, 1, -1)
    kept, free = w == 1.0, w == 0.0

    def fix(x0: torch.Tensor) -> torch.Tensor:
        zk = z_known.to(x0.dtype)
        wd = w.to(x0.dtype)
        return torch.where(kept, zk, torch.where(free, x0, wd * zk + (1 - wd) * x0))

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

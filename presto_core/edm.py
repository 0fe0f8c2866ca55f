"""EDM maths (Karras et al. 2022/2024): preconditioning, noise distributions, loss weighting.

Everything here is a pure function of tensors; the preconditioning wrapper that turns a raw
backbone ``F`` into a denoiser ``D`` lives in :class:`Precond` and owns no weights of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class EDMConfig:
    """Noise-process constants (the paper's values are the defaults)."""

    sigma_data: float = 0.5
    p_mean: float = -0.4
    p_std: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0


def precondition(sigma: torch.Tensor, sigma_data: float = 0.5):
    """EDM coefficients for noise levels ``sigma`` (any shape, > 0).

    Returns ``(c_skip, c_out, c_in, c_noise)`` with the shape of ``sigma`` such that
    ``D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise)``; ``c_noise = log(sigma) / 4``.
    """
    sd2 = sigma_data**2
    s2 = sigma**2
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / (s2 + sd2).sqrt()
    c_in = 1.0 / (s2 + sd2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2, so that
    ``lambda * ||D - x0||^2`` equals the unit-variance loss on the raw backbone output."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_training_sigmas(
    n: int,
    p_mean: float = -0.4,
    p_std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` noise levels from the training distribution: ln(sigma) ~ N(p_mean, p_std^2). Shape (n,)."""
    z = torch.randn(n, generator=generator, device=device or "cpu")
    return (p_mean + p_std * z).exp()


def karras_ramp(u: torch.Tensor, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Map u in [0, 1] to sigma along the Karras(rho) ramp: u=0 -> sigma_max, u=1 -> sigma_min."""
    hi = sigma_max ** (1.0 / rho)
    lo = sigma_min ** (1.0 / rho)
    return (hi + u * (lo - hi)) ** rho


def karras_sigmas(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Inference schedule of eq. (9): ``n`` levels from sigma_max down to sigma_min, then 0.

    Shape (n + 1,), float64 so that large rho (up to 1000) stays accurate; cast as needed.
    ``n == 1`` gives ``[sigma_max, 0]`` (a one-step generator starts at pure noise).
    """
    if n < 1:
        raise ValueError(f"karras_sigmas needs n >= 1, got {n}")
    if n == 1:
        ramp = torch.zeros(1, dtype=torch.float64)
    else:
        ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    sigmas = karras_ramp(ramp, sigma_min, sigma_max, rho)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device or "cpu")


def sample_inference_sigmas(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` noise levels from the continuous inference distribution: the Karras(rho)
    ramp evaluated at u ~ U(0, 1) (the limit of the schedule as the step count grows). Shape (n,)."""
    u = torch.rand(n, generator=generator, device=device or "cpu", dtype=torch.float64)
    return karras_ramp(u, sigma_min, sigma_max, rho).float()


def inference_quantile(q: float, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> float:
    """Sigma below which a fraction ``1 - q`` of the inference distribution lies (descending in q):
    q = 0 gives sigma_max, q = 1 gives sigma_min."""
    return float(karras_ramp(torch.tensor(q, dtype=torch.float64), sigma_min, sigma_max, rho))


def sample_sigmas(
    kind: str,
    n: int,
    cfg: EDMConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` sigmas from the ``"train"`` or ``"inference"`` distribution of ``cfg``. Shape (n,)."""
    if kind == "train":
        return sample_training_sigmas(n, cfg.p_mean, cfg.p_std, generator, device)
    if kind == "inference":
        return sample_inference_sigmas(n, cfg.sigma_min, cfg.sigma_max, cfg.rho, generator, device)
    raise ValueError(f"noise distribution must be 'train' or 'inference', got {kind!r}")


class Precond(nn.Module):
    """Wrap a raw backbone ``F(x_in, c_noise, **cond)`` into the EDM denoiser ``D(x, sigma, **cond)``.

    ``x``: (B, C, T) noisy latents; ``sigma``: scalar or (B,). The backbone sees ``c_in * x`` and
    ``c_noise``; the output is ``c_skip * x + c_out * F``. Extra keyword arguments (text, bpm,
    budget, ``return_hidden``, ``return_features``, ...) go to the backbone untouched.

    Returns the denoised estimate (B, C, T) when the backbone returns a tensor. When it returns a
    tuple ``(out, *extras)`` (the DiT with return_hidden and/or return_features), only ``out`` is
    preconditioned and the extras pass through unchanged and in order: ``den``,
    ``(den, hidden)``, ``(den, feats)`` or ``(den, hidden, feats)``.
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = precondition(sigma.float(), self.sigma_data)
        shape = (-1,) + (1,) * (x.ndim - 1)
        x32 = x.float()
        out = self.backbone((c_in.view(shape) * x32).to(x.dtype), c_noise, **cond)
        out, *extras = out if isinstance(out, tuple) else (out,)
        den = (c_skip.view(shape) * x32 + c_out.view(shape) * out.float()).to(x.dtype)
        return (den, *extras) if extras else den


def per_sample_mean(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of x (B, C, T) per sample (B,), over the frames where ``valid`` (B, 1, T) is 1 (crop
    padding excluded); every element when ``valid`` is None."""
    if valid is None:
        return x.flatten(1).mean(1)
    return (x * valid).flatten(1).sum(1) / (valid.flatten(1).sum(1) * x.shape[1]).clamp_min(1.0)


def weighted_dsm(den: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 0.5,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """The EDM training objective for given denoiser outputs: mean over the batch of
    ``lambda(sigma) * mean((den - x0)^2)``, each sample's mean over its ``valid`` (B, 1, T) frames
    (all when None). den, x0: (B, C, T); sigma: (B,)."""
    per = per_sample_mean((den.float() - x0.float()) ** 2, valid)
    return (loss_weight(sigma.float(), sigma_data) * per).mean()


def dsm_loss(
    denoiser: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    sigma_data: float = 0.5,
    valid: torch.Tensor | None = None,
    **cond,
) -> torch.Tensor:
    """Weighted denoising score matching: mean over the batch of
    ``lambda(sigma) * mean((D(x0 + sigma * noise, sigma) - x0)^2)``. x0, noise: (B, C, T); sigma: (B,);
    valid: optional (B, 1, T) mask of the frames that count (zero-padded crops)."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    den = denoiser(x0 + sigma.view(shape) * noise, sigma, **cond)
    return weighted_dsm(den, x0, sigma, sigma_data, valid)

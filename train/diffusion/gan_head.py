"""Presto-S discriminator: a small head on the fake score model's intermediate activations (paper 3.2).

The fake score model mu_psi (a Precond(DiT)) is run with ``return_features=blocks``; each chosen
block's output (B, T, dim) is layer-normalised, the blocks are concatenated along channels, and a
few strided 1-D convolutions reduce time only partially: the head outputs least-squares logits of
shape (B, 1, ceil(T / 2**downsample)), a per-frame realness map whose mean is the GAN loss.
:class:`FakeScoreWithHead` bundles the two into the single module psi that Algorithm 1 trains with
one optimizer, so that one forward call (DDP-friendly) gives both the denoised output and the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train.diffusion.losses import frame_mask


@dataclass
class GanHeadConfig:
    """The ``presto_s.head`` sub-section. ``blocks``: DiT block indices read (empty: the middle
    block, depth // 2); ``channels``: conv width; ``downsample``: number of stride-2 convolutions
    (time is reduced 2**downsample times, e.g. 2 -> T/4)."""

    blocks: tuple[int, ...] = ()
    channels: int = 256
    downsample: int = 2

    def __post_init__(self):
        if self.channels < 1 or self.downsample < 0:
            raise ValueError(f"head: need channels >= 1 and downsample >= 0, got {self.channels}, {self.downsample}")

    def resolve_blocks(self, depth: int) -> tuple[int, ...]:
        blocks = tuple(self.blocks) or (depth // 2,)
        if any(not 0 <= b < depth for b in blocks):
            raise ValueError(f"head.blocks must be DiT block indices in [0, {depth - 1}], got {blocks}")
        return blocks


class GanHead(nn.Module):
    """Features [(B, T, dim)] * n -> logits (B, 1, T') with T' = T halved ``downsample`` times."""

    def __init__(self, dim: int, n_features: int, channels: int = 256, downsample: int = 2):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_features))
        layers: list[nn.Module] = [nn.Conv1d(n_features * dim, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(downsample):
            layers += [nn.Conv1d(channels, channels, 4, stride=2, padding=1), nn.GroupNorm(1, channels),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv1d(channels, 1, 1))
        self.net = nn.Sequential(*layers)
        self.downsample = downsample

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([n(f.float()) for n, f in zip(self.norms, feats)], dim=-1).transpose(1, 2)
        t = x.shape[-1]
        pad = (-t) % (2**self.downsample)  # odd lengths: pad so every stride-2 conv halves exactly
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")
        return self.net(x.to(self.net[0].weight.dtype))


class FakeScoreWithHead(nn.Module):
    """psi of Algorithm 1: the fake score model ``score`` (Precond(DiT)) plus the discriminator head.

    ``forward(x, sigma, n_disc, **cond)`` denoises the whole batch x (B, C, T) and, for the last
    ``n_disc`` samples, also returns the head's logits: -> (denoised (B, C, T), logits (n_disc, 1, T'))
    (logits None when n_disc == 0).
    """

    def __init__(self, score: nn.Module, head: GanHead, blocks: tuple[int, ...]):
        super().__init__()
        self.score, self.head = score, head
        self.blocks = tuple(blocks)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, n_disc: int = 0, **cond):
        if n_disc <= 0:
            return self.score(x, sigma, **cond), None
        den, feats = self.score(x, sigma, return_features=self.blocks, **cond)
        return den, self.head([f[-n_disc:] for f in feats])


def logit_mask(length: torch.Tensor | None, frames: int, downsample: int) -> torch.Tensor | None:
    """(B, 1, T') float mask of the logit positions whose window starts inside the first ``length``
    (B,) latent frames (crops shorter than the training length are zero-padded); None -> None."""
    if length is None:
        return None
    f = 2**downsample
    return frame_mask(-(-length // f), -(-frames // f))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of x (B, 1, T') over the positions where mask (B, 1, T') is 1 (all when None)."""
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def ls_gen_loss(fake_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares generator loss ||1 - D(fake)||^2 averaged over the (valid part of the) logit map."""
    return masked_mean((1.0 - fake_logits.float()).square(), mask)


def ls_disc_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares discriminator loss ||D(fake)||^2 + ||1 - D(real)||^2 (real = 1, fake = 0, Alg. 1)."""
    return masked_mean(fake_logits.float().square(), mask) + masked_mean((1.0 - real_logits.float()).square(), mask)

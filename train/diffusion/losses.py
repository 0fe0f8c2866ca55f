"""The losses of the latent-diffusion stages, each over the valid frames of zero-padded crops:
denoising score matching (through presto_core.edm), Presto-L's self-teacher term, and the pieces of
DMD2's distribution-matching gradient that Presto-S uses."""

from __future__ import annotations

import torch

from presto_core.edm import dsm_loss, per_sample_mean, weighted_dsm


def frame_mask(length: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    """(B, 1, T) float mask of the first ``length`` (B,) frames of each sample (the rest is crop
    padding); None -> None (every frame counts)."""
    if length is None:
        return None
    return (torch.arange(frames, device=length.device)[None] < length[:, None]).float()[:, None]


def masked_dsm_loss(denoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                    length: torch.Tensor | None, sigma_data: float, **cond) -> torch.Tensor:
    """:func:`presto_core.edm.dsm_loss` over the first ``length`` (B,) frames of each sample: crops
    shorter than the training length are zero-padded by the dataset and must not count.
    x0, noise: (B, C, T); sigma: (B,)."""
    return dsm_loss(denoiser, x0, sigma, noise, sigma_data, valid=frame_mask(length, x0.shape[-1]), **cond)


def presto_l_loss(model, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, *, schedule,
                  nu: float = 0.1, sigma_data: float = 0.5, length: torch.Tensor | None = None,
                  drop_floor=None, **cond):
    """Presto-L objective for one batch: weighted DSM of the layer-dropped denoiser + nu * self-teacher.

    model: Precond(DiT) (possibly wrapped by accelerate); x0, noise: (B, C, T); sigma: (B,);
    schedule: callable sigma (B,) -> blocks dropped (B,) long (a :class:`DropSchedule` at the model's
    depth); length: (B,) valid frames per sample (None: all); drop_floor: callable k (B,) -> the
    DiT's ``run_at_drop`` (under FSDP, :func:`train.infra.sharding.agreed_drop_floor`); cond: text,
    text_mask, bpm, uncond.
    The self-teacher term is the mean over valid tokens and channels of (h_L - sg(h_full))^2 with h
    the normalised final-block outputs (B, T, dim); the full-depth pass runs under no_grad and is
    skipped when ``nu == 0`` (ASE). Returns (loss, metrics) with metrics {"dsm", "self_teacher",
    "layers_dropped"} as detached scalars.
    """
    k = schedule(sigma.detach())
    x = x0 + sigma.view(-1, 1, 1) * noise
    floor = {} if drop_floor is None else {"run_at_drop": drop_floor(k)}
    den, hidden = model(x, sigma, layers_dropped=k, return_hidden=True, **floor, **cond)
    valid = frame_mask(length, x0.shape[-1])
    dsm = weighted_dsm(den, x0, sigma, sigma_data, valid)
    st = dsm.new_zeros(())
    if nu > 0:
        with torch.no_grad():
            _, full = model(x, sigma, layers_dropped=0, return_hidden=True, **cond)
        sq = ((hidden.float() - full.detach().float()) ** 2).mean(-1)  # (B, T)
        tokens = torch.ones_like(sq) if valid is None else valid[:, 0]
        st = ((sq * tokens).sum(1) / tokens.sum(1).clamp_min(1)).mean()
    loss = dsm + nu * st
    return loss, {"dsm": dsm.detach(), "self_teacher": st.detach(), "layers_dropped": k.float().mean()}


def repeat_cond(cond: dict, times: int) -> dict:
    """Conditioning kwargs (text, text_mask, bpm, uncond tensors of batch B) tiled to times * B."""
    return {k: torch.cat([v] * times) if isinstance(v, torch.Tensor) and v.ndim > 0 else v
            for k, v in cond.items()}


def guided_real(real, x: torch.Tensor, sigma: torch.Tensor, cond: dict, w: float) -> torch.Tensor:
    """mu_real^w(x, sigma) = D_u + w (D_c - D_u), one batched pass of the frozen real score model."""
    b = x.shape[0]
    c2 = repeat_cond(cond, 2)
    c2["uncond"] = torch.cat([torch.zeros(b, dtype=torch.bool, device=x.device),
                              torch.ones(b, dtype=torch.bool, device=x.device)])
    d_c, d_u = real(torch.cat([x, x]), torch.cat([sigma, sigma]), **c2).float().chunk(2)
    return d_u + w * (d_c - d_u)


def dmd_gradient(x_gen: torch.Tensor, mu_fake: torch.Tensor, mu_real: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """DMD2's normalised distribution-matching gradient (mu_fake - mu_real) / mean|x_gen - mu_real|
    (per sample, over the valid frames), zero on padded frames (``valid`` (B, 1, T)) and where not
    finite. All (B, C, T); no graph."""
    x = x_gen.detach().float()
    scale = per_sample_mean((x - mu_real).abs(), valid)
    grad = (mu_fake.float() - mu_real) / scale.clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    return torch.nan_to_num(grad if valid is None else grad * valid)


def dmd_surrogate(x_gen: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 ||x_gen - sg(x_gen - grad)||^2 (mean): d/dx_gen = grad / numel."""
    x = x_gen.float()
    return 0.5 * (x - (x - grad).detach()).square().mean()

"""Samplers: pure functions over a denoiser callable ``D(x, sigma) -> x0``.

Shapes: ``x`` is (B, C, T); ``sigma`` handed to the denoiser is a 0-dim tensor; the denoiser returns
a (B, C, T) data estimate, either a plain tensor or a :class:`Denoised` pair (guided estimate,
estimate used for re-noising) as produced by :func:`cfg_pp`.

Every sampler has the signature ``(denoiser, x, sigmas, generator=None, callback=None) -> x0`` where
``x`` is the initial noise already scaled by ``sigmas[0]`` and ``sigmas`` is a 1-D decreasing
schedule, normally ending in 0 (``edm.karras_sigmas``). The result is the sample at ``sigmas[-1]``
(the data estimate when that is 0), in ``x``'s dtype.

CFG++ in one rule: at every evaluation the noise direction is ``d = (x - x0_renoise) / sigma`` and
the data estimate is the guided ``x0``; each solver is written in terms of ``(x0, d)`` only, so that
its first-order step is the CFG++ DDIM step ``x0 + sigma_next * d`` and, for a plain tensor
(``x0_renoise == x0``), ``x0 + sigma * d == x`` and every solver is its textbook form.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Union

import torch

from presto_core.errors import PrestoError, check_number

Tensor = torch.Tensor


class Denoised(NamedTuple):
    """A guided data estimate ``x0`` and the estimate ``x0_renoise`` whose noise direction the
    sampler follows (CFG++: the unconditional one). Both (B, C, T)."""

    x0: Tensor
    x0_renoise: Tensor


Denoiser = Callable[[Tensor, Tensor], Union[Tensor, Denoised]]
Callback = Callable[[int, int, Tensor], None]


# --------------------------------------------------------------------------------------------
# Guidance


def _mix(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    return uncond + scale * (cond - uncond)


def cfg(cond_denoiser: Denoiser, uncond_denoiser: Denoiser, w: float) -> Denoiser:
    """Classic classifier-free guidance: ``D(x, s) = D_u + w * (D_c - D_u)``. (B, C, T) -> (B, C, T).

    ``w = 1`` is the conditional model; the Presto-S teacher uses ``w = 4.5``.
    """
    w = check_number("CFG weight", w, 0.0, 100.0)

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        return _mix(cond_denoiser(x, sigma), uncond_denoiser(x, sigma), w)

    return guided


def cfg_pp(cond_denoiser: Denoiser, uncond_denoiser: Denoiser, lam: float) -> Denoiser:
    """CFG++ (Chung et al. 2024): returns ``Denoised(D_u + lam * (D_c - D_u), D_u)``.

    The sampler steps to the guided estimate but re-noises along the unconditional noise, which
    keeps the trajectory on the data manifold; ``lam`` in [0, 1] (the base model uses 0.8).
    """
    lam = check_number("CFG++ weight", lam, 0.0, 1.0)

    def guided(x: Tensor, sigma: Tensor) -> Denoised:
        uncond = uncond_denoiser(x, sigma)
        return Denoised(_mix(cond_denoiser(x, sigma), uncond, lam), uncond)

    return guided


def batched_guidance(model_fn: Callable[[Tensor, Tensor], Tensor], scale: float, plus_plus: bool = False) -> Denoiser:
    """Guidance with one forward pass: ``model_fn(x2, sigma)`` takes ``x2 = cat([x, x])`` (2B, C, T)
    and returns (2B, C, T) whose first half is conditional and second half unconditional (the caller
    batches the conditions the same way). ``plus_plus`` selects CFG++ (``scale`` = lam) over CFG."""
    if plus_plus:
        scale = check_number("CFG++ weight", scale, 0.0, 1.0)
    else:
        scale = check_number("CFG weight", scale, 0.0, 100.0)

    def guided(x: Tensor, sigma: Tensor):
        cond, uncond = model_fn(torch.cat([x, x]), sigma).chunk(2)
        x0 = _mix(cond, uncond, scale)
        return Denoised(x0, uncond) if plus_plus else x0

    return guided


# --------------------------------------------------------------------------------------------
# Shared machinery


class _Step:
    """What one solver step needs: evaluations of the denoiser in the working dtype, and noise."""

    def __init__(self, denoiser: Denoiser, x: Tensor, generator: Optional[torch.Generator]):
        self.denoiser = denoiser
        self.in_dtype = x.dtype
        # Coefficients are Python floats (float64); the state is at least float32 so that bf16 models
        # do not accumulate rounding error across steps, and float64 stays float64 for tests.
        self.work = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.device = x.device
        self.generator = generator

    def __call__(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """Evaluate at ``(x, sigma)``; return ``(x0, d)`` with ``d = (x - x0_renoise) / sigma``."""
        s = torch.tensor(sigma, dtype=self.work, device=self.device)
        out = self.denoiser(x.to(self.in_dtype), s)
        if isinstance(out, Denoised):
            x0, x0_renoise = out.x0.to(self.work), out.x0_renoise.to(self.work)
        else:
            x0 = x0_renoise = out.to(self.work)
        return x0, (x - x0_renoise) / sigma

    def noise(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, device=self.device, dtype=self.work)


def _check_sigmas(sigmas: Tensor) -> list[float]:
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise PrestoError("sigmas must be a 1-D tensor of at least 2 noise levels (e.g. edm.karras_sigmas)")
    values = [float(v) for v in sigmas.detach().double().cpu().tolist()]
    if not all(math.isfinite(v) for v in values) or min(values[:-1]) <= 0 or values[-1] < 0:
        raise PrestoError(f"sigmas must be finite, positive and may end in 0, got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise PrestoError(f"sigmas must be strictly decreasing, got {values}")
    return values


StepFn = Callable[[_Step, Tensor, float, float], Tensor]


def _integrate(step_fn: StepFn, denoiser: Denoiser, x: Tensor, sigmas: Tensor,
               generator: Optional[torch.Generator], callback: Optional[Callback]) -> Tensor:
    """Run ``step_fn(step, x, sigma, sigma_next)`` over consecutive pairs of ``sigmas``."""
    values = _check_sigmas(sigmas)
    step = _Step(denoiser, x, generator)
    state = x.to(step.work)
    n = len(values) - 1
    for i in range(n):
        state = step_fn(step, state, values[i], values[i + 1])
        if callback is not None:
            callback(i, n, state)
    return state.to(x.dtype)


# --------------------------------------------------------------------------------------------
# Solvers (one step each)


def _euler_step(step: _Step, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    x0, d = step(x, sigma)
    return x0 + sigma_next * d


def _heun_step(step: _Step, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    x0, d = step(x, sigma)
    x_euler = x0 + sigma_next * d
    if sigma_next == 0:
        # The trapezoid would need D at sigma = 0; EDM takes the Euler step there.
        return x_euler
    _, d_next = step(x_euler, sigma_next)
    # x0 + sigma * d is x itself for a plain denoiser; for CFG++ it re-centres x on the guided x0.
    return x0 + sigma * d + (sigma_next - sigma) * 0.5 * (d + d_next)


def _dpmpp_2s_step(step: _Step, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    x0, d = step(x, sigma)
    if sigma_next == 0:
        return x0
    # Midpoint in t = -log(sigma) with r = 1/2 is the geometric mean of the two sigmas.
    sigma_mid = math.sqrt(sigma * sigma_next)
    x0_mid, _ = step(x0 + sigma_mid * d, sigma_mid)
    # Data-prediction update (sigma_next/sigma) * x - expm1(-h) * x0_mid, with x = x0 + sigma * d.
    ratio = sigma_next / sigma
    return x0_mid + ratio * (x0 - x0_mid) + sigma_next * d


def _pingpong_step(step: _Step, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    x0, _ = step(x, sigma)
    if sigma_next == 0:
        return x0
    return x0 + sigma_next * step.noise(x0)


# --------------------------------------------------------------------------------------------
# Public samplers


def sample_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, generator: Optional[torch.Generator] = None,
                 callback: Optional[Callback] = None) -> Tensor:
    """First-order (DDIM) probability-flow solver: one denoiser call per step.

    x: (B, C, T) noise at ``sigmas[0]``; sigmas: (N + 1,); returns (B, C, T) in x's dtype.
    ``generator`` is unused (deterministic) and accepted for a uniform signature.
    """
    return _integrate(_euler_step, denoiser, x, sigmas, generator, callback)


def sample_heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, generator: Optional[torch.Generator] = None,
                callback: Optional[Callback] = None) -> Tensor:
    """EDM Heun (2nd order, deterministic): two calls per step, one on the final step to 0.

    x: (B, C, T) noise at ``sigmas[0]``; sigmas: (N + 1,); returns (B, C, T) in x's dtype.
    """
    return _integrate(_heun_step, denoiser, x, sigmas, generator, callback)


def sample_dpmpp_2s(denoiser: Denoiser, x: Tensor, sigmas: Tensor, generator: Optional[torch.Generator] = None,
                    callback: Optional[Callback] = None) -> Tensor:
    """Deterministic DPM-Solver++(2S) in data prediction (the Presto base sampler, with CFG++).

    Two calls per step (midpoint in log-sigma), one on the final step to 0, which returns the
    denoised estimate. x: (B, C, T) noise at ``sigmas[0]``; sigmas: (N + 1,); returns (B, C, T).
    """
    return _integrate(_dpmpp_2s_step, denoiser, x, sigmas, generator, callback)


def sample_pingpong(denoiser: Denoiser, x: Tensor, sigmas: Tensor, generator: Optional[torch.Generator] = None,
                    callback: Optional[Callback] = None) -> Tensor:
    """Few-step generator sampling (consistency-model style): denoise to ``x0 = G(x, sigma_i)``, then
    re-noise to ``x0 + sigma_{i+1} * eps`` with fresh ``eps`` drawn from ``generator``.

    x: (B, C, T) noise at ``sigmas[0]``; sigmas: (N + 1,) for N generator calls; returns (B, C, T).
    The generator must live on x's device.
    """
    return _integrate(_pingpong_step, denoiser, x, sigmas, generator, callback)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2s": sample_dpmpp_2s,
    "pingpong": sample_pingpong,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """Return the sampler called ``name`` (one of ``SAMPLERS``), else raise PrestoError."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise PrestoError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}") from None


def call_sigmas(name: str, sigmas: Tensor) -> list[float]:
    """The noise levels at which sampler ``name`` calls its denoiser over ``sigmas`` (N + 1,), in
    call order: one entry per denoiser call (e.g. DPM-Solver++(2S) adds each step's midpoint
    except on the last step to 0), as a float32 state hands them over (the pipeline's). Found by
    running the sampler on a (1, 1, 1) probe, so it is exact for every sampler by construction;
    costs well under a millisecond per call."""
    seen: list[float] = []

    def probe(x: Tensor, sigma: Tensor) -> Tensor:
        seen.append(float(sigma))
        return torch.zeros_like(x)

    x = torch.zeros(1, 1, 1)
    get_sampler(name)(probe, x, sigmas.detach().cpu(), generator=torch.Generator().manual_seed(0))
    return seen

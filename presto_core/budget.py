"""Layer-dropping schedules (Presto-L / Presto-LS): noise level sigma -> number of DiT blocks dropped.

A schedule is five counts, one per quintile of the inference noise distribution (the Karras(rho)
ramp with u ~ U(0, 1)), highest-noise quintile first: ASE's "D3" drops 14 of the 28 blocks at the
noisiest fifth of the trajectory and none at the cleanest. Counts are defined for the paper's 28-block
DiT-XL and rescaled for other depths with :func:`scale_schedule`. Which blocks go (from the
second-to-last backwards, so the final block always runs) is the DiT's business, not this module's.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence, Union

import torch

from presto_core.edm import EDMConfig, inference_quantile
from presto_core.errors import PrestoError

REFERENCE_DEPTH = 28
D3 = (14, 12, 8, 4, 0)  # ASE's D3, the Presto-L schedule
PRESTO_LS = (12, 8, 8, 0, 0)  # reduced budget kept for layer-step distillation
NUM_BINS = 5
_QUANTILES = (0.2, 0.4, 0.6, 0.8)
# A sigma this close (relatively) to a quintile boundary counts as on it, so that float32 and float64
# versions of the same schedule (e.g. 6 Karras steps land exactly on u = 0.2) get the same budget.
_REL_TOL = 1e-6

Sigma = Union[float, int, torch.Tensor]


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise PrestoError(f"model depth must be an integer >= 1, got {depth!r}")
    return depth


def check_schedule(schedule: Sequence[int], depth: int | None = REFERENCE_DEPTH) -> tuple[int, ...]:
    """Return ``schedule`` as a tuple of 5 ints in [0, depth - 1] (only >= 0 when ``depth`` is None),
    else raise PrestoError."""
    hi = math.inf if depth is None else _check_depth(depth) - 1
    try:
        counts = tuple(schedule)
    except TypeError:
        raise PrestoError(f"drop schedule must be a sequence of {NUM_BINS} integers, got {schedule!r}") from None
    if len(counts) != NUM_BINS:
        raise PrestoError(f"drop schedule must have {NUM_BINS} entries (one per noise quintile), got {counts!r}")
    out = []
    for c in counts:
        if isinstance(c, torch.Tensor) and c.numel() == 1:
            c = c.item()
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not float(c).is_integer():
            raise PrestoError(f"drop schedule entries must be integers, got {counts!r}")
        if not 0 <= c <= hi:
            allowed = ">= 0" if depth is None else f"in [0, {depth - 1}] for depth {depth}"
            raise PrestoError(f"drop schedule entries must be {allowed}, got {counts!r}")
        out.append(int(c))
    return tuple(out)


def scale_schedule(schedule: Sequence[int], depth: int, ref_depth: int = REFERENCE_DEPTH) -> tuple[int, ...]:
    """Rescale a schedule defined for ``ref_depth`` blocks to a model of ``depth`` blocks.

    Each count becomes ``round(count * depth / ref_depth)`` (halves round up), clamped to
    [0, depth - 1] so that at least the final block runs. ``D3`` at depth 8 is (4, 3, 2, 1, 0).
    """
    counts = check_schedule(schedule, ref_depth)
    _check_depth(depth)
    return tuple(min(max(int(math.floor(c * depth / ref_depth + 0.5)), 0), depth - 1) for c in counts)


@functools.lru_cache(maxsize=64)
def _bounds(sigma_min: float, sigma_max: float, rho: float) -> tuple[float, float, float, float]:
    return tuple(inference_quantile(q, sigma_min, sigma_max, rho) for q in _QUANTILES)


def quintile_bounds(edm_cfg: EDMConfig | None = None) -> tuple[float, float, float, float]:
    """The four sigmas separating the quintiles of the inference distribution, descending
    (u = 0.2, 0.4, 0.6, 0.8 along the Karras(rho) ramp from sigma_max to sigma_min).
    ``edm_cfg`` defaults to the paper's ``EDMConfig()``."""
    cfg = edm_cfg or EDMConfig()
    return _bounds(float(cfg.sigma_min), float(cfg.sigma_max), float(cfg.rho))


def quintile_index(sigma: Sigma, edm_cfg: EDMConfig | None = None):
    """Quintile of ``sigma``: 0 for the noisiest fifth, 4 for the cleanest. A sigma on a boundary
    goes to the lower-noise side; sigmas outside [sigma_min, sigma_max] go to the end quintiles.
    Float -> int; tensor (any shape) -> long tensor of the same shape."""
    bounds = quintile_bounds(edm_cfg)
    if isinstance(sigma, torch.Tensor):
        b = torch.tensor(bounds, dtype=torch.float64, device=sigma.device)
        s = sigma.detach().double().unsqueeze(-1)
        return (s <= b * (1 + _REL_TOL)).sum(-1)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma):
        raise PrestoError(f"sigma must be a finite number or a tensor, got {sigma!r}")
    return sum(1 for b in bounds if sigma <= b * (1 + _REL_TOL))


def layers_dropped(sigma: Sigma, schedule: Sequence[int] = D3, edm_cfg: EDMConfig | None = None):
    """Number of blocks to drop at noise level ``sigma`` under ``schedule`` (5 counts, noisiest first).

    Float -> int; tensor (B,) (or any shape) -> long tensor of the same shape on sigma's device.
    ``edm_cfg`` sets the quintile bounds (default: the paper's ``EDMConfig()``).
    """
    counts = check_schedule(schedule, depth=None)
    idx = quintile_index(sigma, edm_cfg)
    if isinstance(idx, torch.Tensor):
        return torch.tensor(counts, dtype=torch.long, device=idx.device)[idx]
    return counts[idx]


@dataclass(frozen=True)
class DropSchedule:
    """A validated schedule bound to a model depth and noise process: ``DropSchedule(D3, 28)(sigma)``.

    counts: 5 ints in [0, depth - 1], noisiest quintile first; depth: number of DiT blocks.
    """

    counts: tuple[int, ...]
    depth: int = REFERENCE_DEPTH
    edm: EDMConfig = field(default_factory=EDMConfig, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "counts", check_schedule(self.counts, self.depth))

    @classmethod
    def scaled(cls, schedule: Sequence[int], depth: int, edm: EDMConfig | None = None,
               ref_depth: int = REFERENCE_DEPTH) -> "DropSchedule":
        """A reference-depth schedule (e.g. ``D3``) rescaled to ``depth`` blocks."""
        return cls(scale_schedule(schedule, depth, ref_depth), depth, edm or EDMConfig())

    def __call__(self, sigma: Sigma):
        """Blocks to drop at ``sigma``: float -> int, tensor (B,) -> long tensor (B,)."""
        return layers_dropped(sigma, self.counts, self.edm)

    def kept(self, sigma: Sigma):
        """Blocks that run at ``sigma`` (depth minus dropped)."""
        return self.depth - self(sigma)

"""How a mono-to-stereo model's output compares with real stereo: side spectra, inter-channel
correlation and the width distribution (side over mid energy, presto_core.stereo.stereo_width)."""

from __future__ import annotations

import numpy as np
import torch

from presto_core.audio import mrstft_distance
from presto_core.stereo import channel_correlation, mid_side, stereo_width


def _quartiles(x: torch.Tensor) -> tuple[float, float, float]:
    q = torch.quantile(x.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(q[0]), float(q[1]), float(q[2])


def width_summary(stereo: torch.Tensor, prefix: str) -> dict[str, float]:
    """Quartiles of the width and the median channel correlation of (B, 2, N) clips, keyed
    ``{prefix}width_q1 / _median / _q3`` and ``{prefix}correlation_median``."""
    q1, med, q3 = _quartiles(stereo_width(stereo))
    return {f"{prefix}width_q1": q1, f"{prefix}width_median": med, f"{prefix}width_q3": q3,
            f"{prefix}correlation_median": float(channel_correlation(stereo).median())}


@torch.no_grad()
def stereo_scores(model, real: torch.Tensor, batch: int = 8) -> dict[str, float]:
    """Score ``model`` (a MonoToStereo) on real stereo clips (B, 2, N): it widens their mids and
    the result is compared with them.

    side_mrstft: MR-STFT distance of the predicted side to the real side (lower is better);
    lr_mrstft: the same over the left and right channels; correlation_error: mean |predicted -
    real| inter-channel correlation per clip; mid_error: max |(L + R) / 2 - mid| (0 up to
    rounding); then width quartiles and median correlation of the predictions (``pred_``) and of
    the real clips (``real_``), and width_ratio = predicted median width / real median width."""
    outs = []
    for i in range(0, real.shape[0], batch):
        mid, _ = mid_side(real[i: i + batch])
        outs.append(model(mid).float())
    pred = torch.cat(outs)
    real = real.float()
    mid_r, side_r = mid_side(real)
    mid_p, side_p = mid_side(pred)
    scores = {
        "side_mrstft": float(mrstft_distance(side_p, side_r)),
        "lr_mrstft": float(mrstft_distance(pred, real)),
        "correlation_error": float((channel_correlation(pred) - channel_correlation(real)).abs().mean()),
        "mid_error": float((mid_p - mid_r).abs().max()),
    }
    scores.update(width_summary(pred, "pred_"))
    scores.update(width_summary(real, "real_"))
    scores["width_ratio"] = scores["pred_width_median"] / max(scores["real_width_median"], 1e-12)
    return scores


def clip_widths(clips: list[np.ndarray]) -> np.ndarray:
    """Width of each (2, N) float array in ``clips``; (len(clips),) float64."""
    return np.array([float(stereo_width(torch.from_numpy(np.asarray(c, dtype=np.float32)))) for c in clips])

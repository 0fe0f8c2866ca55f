"""Distribution and text-relevance metrics on embedding matrices (paper section 4.1).

Every function takes embeddings as numpy arrays or torch tensors, rows = items, and returns a
Python float (or a dict of floats). All maths runs in float64 numpy.

- :func:`frechet_distance`  FAD (Kilgour et al., 2018) on CLAP embeddings.
- :func:`mmd`               unbiased kernel MMD^2 with a Gaussian RBF kernel, scaled by 1000 as in
                            CMMD (Jayasumana et al., 2024).
- :func:`precision_recall`, :func:`density_coverage`
                            k-NN manifold metrics exactly as in Naeem et al. (2020) / the ``prdc``
                            reference code (Euclidean distances, strict ``<``).
- :func:`clap_score`        mean cosine similarity of paired text and audio embeddings.
"""

from __future__ import annotations

import numpy as np

CMMD_SCALE = 1000.0  # Jayasumana et al. (2024) report MMD^2 * 1000
CMMD_SIGMA = 10.0  # their fixed RBF bandwidth (pass bandwidth=CMMD_SIGMA to reproduce CMMD)


def _as_2d(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _pair(x, y, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same width D, got {x.shape[1]} and {y.shape[1]}")
    if min(len(x), len(y)) < min_rows:
        raise ValueError(f"need at least {min_rows} rows in each set, got {len(x)} and {len(y)}")
    return x, y


def sq_distances(x, y) -> np.ndarray:
    """Squared Euclidean distances (N, D), (M, D) -> (N, M), clipped at 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(x, y, ridge: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to x (N, D) and y (M, D), N, M >= 2:
    ||mu_x - mu_y||^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)), unbiased covariances (ddof=1).

    The trace of the matrix square root is computed as tr((S_x^(1/2) S_y S_x^(1/2))^(1/2)) from
    symmetric eigen-decompositions (eigenvalues clipped at 0), which stays real and finite for the
    rank-deficient covariances of small sets (N <= D). ``ridge`` (default 1e-6, in squared
    embedding units; CLAP embeddings are unit vectors, so per-dimension variances are about 1/D)
    is added to both diagonals to regularise such covariances; it leaves FD(x, x) = 0 exactly
    and shifts other values by O(D * ridge)."""
    x, y = _pair(x, y, min_rows=2)
    mu = x.mean(0) - y.mean(0)
    eye = ridge * np.eye(x.shape[1])
    sx = np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1]) + eye
    sy = np.cov(y, rowvar=False, ddof=1).reshape(y.shape[1], y.shape[1]) + eye
    r = _psd_sqrt(sx)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((r @ sy @ r + (r @ sy @ r).T) / 2), 0.0, None)).sum()
    return float(max(mu @ mu + np.trace(sx) + np.trace(sy) - 2.0 * cross, 0.0))


def median_bandwidth(x, y) -> float:
    """Median heuristic: the median Euclidean distance between distinct rows of x and y pooled."""
    z = np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)])
    d = np.sqrt(sq_distances(z, z)[np.triu_indices(len(z), k=1)])
    med = float(np.median(d)) if d.size else 0.0
    return med if med > 0 else 1.0


def mmd(x, y, kernel: str = "rbf", bandwidth: float | None = None, scale: float = CMMD_SCALE) -> float:
    """Unbiased MMD^2 between x (N, D) and y (M, D), N, M >= 2, times ``scale``.

    Kernel k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) (Gaussian RBF, the CMMD kernel). sigma =
    ``bandwidth``, or, when None, the median heuristic (:func:`median_bandwidth` of the pooled
    sets). CMMD itself uses sigma = 10 (:data:`CMMD_SIGMA`) and the biased estimator; here the
    within-set means exclude the diagonal (unbiased U-statistic), so MMD(x, x) = 2 (mean_offdiag
    - 1) / N, which is ~0 (slightly negative) and values can be < 0 for equal distributions.
    ``scale`` = 1000 as reported by CMMD and the paper."""
    if kernel != "rbf":
        raise ValueError(f"kernel must be 'rbf', got {kernel!r}")
    x, y = _pair(x, y, min_rows=2)
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    g = 1.0 / (2.0 * sigma * sigma)
    kxx, kyy, kxy = (np.exp(-g * sq_distances(a, b)) for a, b in ((x, x), (y, y), (x, y)))
    n, m = len(x), len(y)
    exx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    eyy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(scale * (exx + eyy - 2.0 * kxy.mean()))


def _kth_nn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of x to its k-th nearest other row (self excluded). (N,)"""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for a set of {len(x)} rows, got {k}")
    d = np.sqrt(sq_distances(x, x))
    return np.partition(d, k, axis=1)[:, k]  # index 0 is the row itself (distance 0)


def precision_recall(real, fake, k: int = 5) -> dict:
    """Improved precision and recall (Kynkäänniemi et al., 2019) as computed by Naeem et al. (2020).

    real (N, D), fake (M, D), k < N and k < M. Precision: fraction of fake samples inside some
    real k-NN ball (radius = distance of that real sample to its k-th nearest real neighbour).
    Recall: fraction of real samples inside some fake k-NN ball (radii from the fake set).
    Returns {"precision", "recall"} in [0, 1]."""
    real, fake = _pair(real, fake)
    r_real, r_fake = _kth_nn_radii(real, k), _kth_nn_radii(fake, k)
    d = np.sqrt(sq_distances(real, fake))  # (N, M)
    return {"precision": float((d < r_real[:, None]).any(axis=0).mean()),
            "recall": float((d < r_fake[None, :]).any(axis=1).mean())}


def density_coverage(real, fake, k: int = 5) -> dict:
    """Density and coverage (Naeem et al., 2020), k-NN radii on the real set only.

    real (N, D), fake (M, D), k < N. Density = (1 / (k M)) sum_j sum_i 1[fake_j in B(real_i)]
    (expected 1 for identical distributions; unbounded above). Coverage = fraction of real
    samples whose ball contains at least one fake sample (in [0, 1]).
    Returns {"density", "coverage"}."""
    real, fake = _pair(real, fake)
    r_real = _kth_nn_radii(real, k)
    inside = np.sqrt(sq_distances(real, fake)) < r_real[:, None]  # (N, M)
    return {"density": float(inside.sum(axis=0).mean() / k),
            "coverage": float(inside.any(axis=1).mean())}


def clap_score(text_emb, audio_emb) -> float:
    """Mean cosine similarity of paired rows: text_emb (B, D), audio_emb (B, D) -> float in
    [-1, 1] (the paper reports it times 100). Rows are L2-normalised here."""
    t, a = _pair(text_emb, audio_emb)
    if len(t) != len(a):
        raise ValueError(f"need one text embedding per clip, got {len(t)} and {len(a)}")
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return float((t * a).sum(1).mean())

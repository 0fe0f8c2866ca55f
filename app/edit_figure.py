"""The picture under an edited clip: what changed, on one time axis.

Rows: the source's waveform (grey), the edit's waveform (the changed spans tinted), and the edit's
log-mel spectrogram with the changed spans tinted and bounded by lines. PIL only, like the
result cards' spectrograms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from presto_core.spectrogram import spectrogram_image

WIDTH, WAVE_H, SPEC_H = 640, 44, 150
_TINT = (80, 200, 255)


def _envelope(mono: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min and max of ``mono`` over ``columns`` equal slices (zeros past its end)."""
    n = max(1, mono.size)
    edges = np.linspace(0, n, columns + 1).astype(int)
    lo, hi = np.zeros(columns, np.float32), np.zeros(columns, np.float32)
    for c in range(columns):
        seg = mono[edges[c]:max(edges[c + 1], edges[c] + 1)]
        if seg.size:
            lo[c], hi[c] = seg.min(), seg.max()
    return lo, hi


def _wave_row(mono: np.ndarray, columns: int, total: int, colour, spans_px=()) -> Image.Image:
    img = Image.new("RGB", (WIDTH, WAVE_H), (250, 250, 250))
    d = ImageDraw.Draw(img, "RGBA")
    for a, b in spans_px:
        d.rectangle([a, 0, b, WAVE_H], fill=(*_TINT, 70))
    lo, hi = _envelope(mono, columns)
    peak = max(float(np.abs(mono).max()) if mono.size else 0.0, 1e-4)
    mid = WAVE_H / 2
    for c in range(columns):
        d.line([(c, mid - hi[c] / peak * (mid - 2)), (c, mid - lo[c] / peak * (mid - 2))], fill=colour)
    return img


def edit_figure(source, edited, sr: int, spans_s: list[tuple[float, float]], path: str | Path) -> Path:
    """Write the PNG comparing ``source`` and ``edited`` (mono (N,) or stereo (2, N)) at ``sr`` Hz,
    with ``spans_s`` the (start, end) seconds that were regenerated. Returns the path."""
    src = np.asarray(source, dtype=np.float32)
    out = np.asarray(edited, dtype=np.float32)
    src = src.mean(axis=0) if src.ndim == 2 else src
    out = out.mean(axis=0) if out.ndim == 2 else out
    total = max(out.size, src.size, 1)
    px = [(int(a * sr / total * WIDTH), int(np.ceil(b * sr / total * WIDTH))) for a, b in spans_s]
    src_cols = max(1, int(round(src.size / total * WIDTH)))
    canvas = Image.new("RGB", (WIDTH, 2 * WAVE_H + SPEC_H + 4), (255, 255, 255))
    canvas.paste(_wave_row(src, src_cols, total, (150, 150, 150)), (0, 0))
    canvas.paste(_wave_row(out, WIDTH, total, (40, 40, 120), px), (0, WAVE_H + 2))
    spec = spectrogram_image(out, sr, WIDTH, SPEC_H)
    d = ImageDraw.Draw(spec, "RGBA")
    for a, b in px:
        d.rectangle([a, 0, b, SPEC_H], fill=(*_TINT, 45))
        d.line([(a, 0), (a, SPEC_H)], fill=(*_TINT, 255), width=2)
        d.line([(b, 0), (b, SPEC_H)], fill=(*_TINT, 255), width=2)
    canvas.paste(spec, (0, 2 * WAVE_H + 4))
    path = Path(path)
    canvas.save(path, format="PNG")
    return path

"""The README picture of train.report: for each genre, the spectrogram of a real held-out piece
beside the spectrogram of the clip generated for its caption, so smeared notes or a soft beat show
at a glance. PIL only (PIL's built-in font for the labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from presto_core.spectrogram import spectrogram_image

LABEL_W, PAD, HEAD = 150, 6, 22


def comparison_figure(rows: list[tuple[str, np.ndarray, np.ndarray]], sample_rate: int, path: str | Path,
                      width: int = 520, height: int = 110, titles: tuple[str, str] = ("corpus", "generated")) -> Path:
    """Write a PNG grid: one row per (label, real (N,), generated (N,)) with the two log-mel
    spectrograms side by side under ``titles``. Returns the path."""
    if not rows:
        raise ValueError("comparison_figure needs at least one row")
    w = LABEL_W + 2 * width + 3 * PAD
    h = HEAD + len(rows) * (height + PAD) + PAD
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, title in enumerate(titles):
        draw.text((LABEL_W + PAD + k * (width + PAD) + 4, 5), title, fill=(0, 0, 0))
    for i, (label, real, generated) in enumerate(rows):
        y = HEAD + i * (height + PAD)
        draw.text((6, y + height // 2 - 6), label[:24], fill=(0, 0, 0))
        for k, audio in enumerate((real, generated)):
            img.paste(spectrogram_image(audio, sample_rate, width, height), (LABEL_W + PAD + k * (width + PAD), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the picture small enough to commit (the colour map has few hues).
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    return path

"""Log-mel spectrograms of mono audio, as arrays and as images (the app's result cards, the
evaluation figures). numpy + PIL only: nothing here pays for numba/librosa start-up."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

# Anchor colours of a magma-like map, dark (quiet) to light (loud).
_MAGMA = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                   [245, 125, 21], [250, 193, 39], [252, 253, 191]], dtype=np.float32)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular HTK-mel filters (n_mels, n_fft // 2 + 1) from 20 Hz to sr / 2."""
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(20.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0.0, None).astype(np.float32)


def frame_params(sr: int) -> tuple[int, int]:
    """(n_fft, hop) giving ~11.6 ms hops (512 at 44.1 kHz) and a 4-hop power-of-two window."""
    hop = max(32, int(round(sr * 512 / 44100)))
    return 1 << int(math.ceil(math.log2(4 * hop))), hop


def log_mel(audio: np.ndarray, sr: int, n_mels: int = 64) -> tuple[np.ndarray, float]:
    """Log-mel power in dB (n_mels, frames), floored 80 dB under the peak, and frames per second."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_fft, hop = frame_params(sr)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    x = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    mel = mel_filterbank(sr, n_fft, n_mels) @ spec.T.astype(np.float32)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - 80.0), sr / hop


def spectrogram_image(audio: np.ndarray, sr: int, width: int = 640, height: int = 160) -> Image.Image:
    """A log-mel spectrogram (96 bands, low frequencies at the bottom, magma-like colours, each clip
    scaled to its own range) as a ``width`` x ``height`` RGB image. audio: mono (N,) at ``sr`` Hz."""
    db, _ = log_mel(audio, sr, n_mels=96)
    v = (db - db.min()) / max(float(db.max() - db.min()), 1e-6)  # 0..1
    pos = v[::-1] * (len(_MAGMA) - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, len(_MAGMA) - 2)
    frac = (pos - i0)[..., None]
    rgb = _MAGMA[i0] * (1 - frac) + _MAGMA[i0 + 1] * frac
    return Image.fromarray(rgb.astype(np.uint8), "RGB").resize((width, height), Image.BILINEAR)


def spectrogram_png(audio: np.ndarray, sr: int, path: str | Path, width: int = 640, height: int = 160) -> Path:
    """Render :func:`spectrogram_image` to a PNG file; returns the path."""
    path = Path(path)
    spectrogram_image(audio, sr, width, height).save(path, format="PNG", optimize=False)
    return path

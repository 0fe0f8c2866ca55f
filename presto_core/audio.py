"""Small, pure audio utilities: channel and rate conversion, reconstruction distances, and WAV
files that carry their generation settings.

Waveforms are float arrays in [-1, 1]. numpy helpers take (N,) mono or (C, N)
channels-first audio; torch distances take (..., N) tensors.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr
import torch

from presto_core.errors import PrestoError
from presto_core.wav_chunks import append_chunk, read_chunk

_COMMENT_BYTES = 2000  # libsndfile drops a longer WAV comment (2,045 bytes) without a word


def to_mono(wav: np.ndarray, channels_first: bool = True) -> np.ndarray:
    """Average channels: (C, N) -> (N,) (or (N, C) with channels_first=False); (N,) passes through."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise PrestoError(f"to_mono expects (N,) or 2-D audio, got shape {wav.shape}")
    return wav.mean(axis=0 if channels_first else 1).astype(np.float32)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis with soxr ("HQ"; librosa's default backend,
    called directly to skip librosa's numba start-up). (..., N) -> (..., M), float32, where
    M = round(N * new_sr / orig_sr). Identical rates return a float32 copy.
    """
    wav = np.asarray(wav, dtype=np.float32)
    for name, sr in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 1:
            raise PrestoError(f"{name} must be a positive integer sample rate, got {sr!r}")
    if orig_sr == new_sr:
        return wav.copy()
    lead, n = wav.shape[:-1], wav.shape[-1]
    cols = np.ascontiguousarray(wav.reshape(-1, n).T)  # soxr wants (frames, channels)
    out = soxr.resample(cols, int(orig_sr), int(new_sr), quality="HQ")
    return np.ascontiguousarray(out.T).reshape(*lead, -1).astype(np.float32)


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
    # eps inside the sqrt keeps the gradient finite at exact zeros.
    return (spec.real.pow(2) + spec.imag.pow(2) + 1e-10).sqrt()


def mrstft_distance(
    a: torch.Tensor, b: torch.Tensor, fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128)
) -> torch.Tensor:
    """Multi-resolution STFT distance between (..., N) waveforms; scalar, differentiable.

    Per resolution (hann window, hop n_fft / 4): spectral convergence ||B - A||_F / ||B||_F plus
    mean |log A - log B|, averaged over resolutions. Zero iff the magnitudes match.
    """
    if a.shape != b.shape:
        raise PrestoError(f"mrstft_distance needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[-1]
    a = a.float().reshape(-1, n)
    b = b.float().reshape(-1, n)
    total, used = a.new_zeros(()), 0
    for n_fft in fft_sizes:
        if n_fft > n:  # a window longer than the clip says nothing extra
            continue
        w = torch.hann_window(n_fft, device=a.device)
        ma, mb = _stft_mag(a, n_fft, n_fft // 4, w), _stft_mag(b, n_fft, n_fft // 4, w)
        sc = (mb - ma).norm() / mb.norm().clamp_min(1e-7)
        total = total + sc + (ma.log() - mb.log()).abs().mean()
        used += 1
    if used == 0:
        raise PrestoError(f"mrstft_distance: clip of {n} samples is shorter than every FFT size {tuple(fft_sizes)}")
    return total / used


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB of (..., N) ``estimate`` against ``reference``; shape (...).

    Both are made zero-mean; the reference is rescaled by the optimal projection, so any
    non-zero gain on a perfect estimate scores very high (over 100 dB).
    """
    if estimate.shape != reference.shape:
        raise PrestoError(f"si_sdr needs equal shapes, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
    est = estimate.double() - estimate.double().mean(-1, keepdim=True)
    ref = reference.double() - reference.double().mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    ratio = target.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps)
    return (10.0 * torch.log10(ratio + eps)).to(estimate.dtype if estimate.is_floating_point() else torch.float32)


def write_wav(path, audio: np.ndarray, sample_rate: int, settings: dict | None = None) -> None:
    """Write float audio, mono (N,) or stereo (2, N) with left first, as 16-bit PCM WAV with
    ``settings`` as UTF-8 JSON in a ``prst`` chunk (presto_core.wav_chunks), and also in the comment
    (RIFF INFO ICMT) when it fits there, so a downloaded clip remembers how it was made."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 2:
        frames = audio.T  # soundfile writes (frames, channels)
    elif audio.ndim == 1:
        frames = audio
    else:
        raise PrestoError(f"write_wav takes mono (N,) or stereo (2, N) audio, got shape {audio.shape}")
    channels = 1 if frames.ndim == 1 else 2
    text = None if settings is None else json.dumps(settings, sort_keys=True, ensure_ascii=False)
    with sf.SoundFile(str(path), "w", samplerate=int(sample_rate), channels=channels, subtype="PCM_16",
                      format="WAV") as f:
        if text is not None:
            if len(text.encode("utf-8")) <= _COMMENT_BYTES:
                f.comment = text
            f.software = "presto"
        f.write(np.clip(frames, -1.0, 1.0))
    if text is not None:
        append_chunk(path, text.encode("utf-8"))


def read_wav_settings(path) -> dict | None:
    """The generation settings (a dict) stored by :func:`write_wav` (its ``prst`` chunk, else the
    comment of older files), or None if the file has none or they are not a JSON object. A file
    that is not readable audio raises PrestoError."""
    try:
        with sf.SoundFile(str(path)) as f:
            comment = f.comment
        chunk = read_chunk(path)
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise PrestoError(f"cannot read settings from {path}: not a readable audio file ({e})") from None
    for text in (chunk.decode("utf-8", "replace") if chunk is not None else None, comment):
        if not text:
            continue
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    return None

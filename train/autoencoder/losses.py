"""Reconstruction and adversarial losses for training the audio VAE (paper A.1, DAC recipe).

All waveforms are (B, 1, N) or (B, N) float tensors at the model's sample rate, roughly in
[-1, 1]. Every loss returns a differentiable scalar.

* :class:`MultiScaleMelLoss` - L1 between log10 mel spectrograms at several window sizes
  (Improved RVQGAN's "mel reconstruction loss": windows 32 ... 2048, 5 ... 320 mel bands,
  magnitude (not power) spectra, summed over scales). Zero for identical inputs.
* :class:`MultiResolutionSTFTLoss` - spectral convergence + L1 log-magnitude over several
  FFT sizes (Parallel WaveGAN style); optional in the VAE objective.
* :class:`PitchBandLoss` - L1 between log10 semitone-band spectra of long-window STFTs, so bass
  and chord notes a semitone apart differ (the mel loss's longest window, 2048, has 21.5 Hz bins:
  coarser than a semitone below about 360 Hz). Our addition for "keep low notes".
* :class:`LatentSpectrumLoss` - L1 between a linear read-out of the posterior-mean latents and the
  input's log-magnitude spectrum at the latent frame rate (our addition for CPU-scale training).
* :func:`lsgan_discriminator_loss`, :func:`lsgan_generator_loss`, :func:`feature_matching_loss`
  take discriminator outputs in the form produced by :mod:`train.autoencoder.discriminators`: one list of
  feature maps per sub-discriminator whose LAST entry is the logit map.

Filterbanks and windows are computed once (librosa / torch) and kept as non-persistent
buffers, so ``.to(device)`` moves them and checkpoints do not store them.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import librosa
import librosa.filters
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Discriminator outputs: one entry per sub-discriminator, each a list of feature maps whose
# last element is the (real-valued, unbounded) logit map.
DiscOutputs = Sequence[Sequence[torch.Tensor]]


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, N) or (..., N) -> (B', N) float32."""
    return x.float().reshape(-1, x.shape[-1])


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """|STFT| of (B, N) audio: (B, n_fft // 2 + 1, frames), centred frames.

    Reflect padding needs N > n_fft // 2; shorter inputs fall back to zero padding.
    """
    mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    spec = torch.stft(x, n_fft, hop, win_length=window.shape[-1], window=window, center=True,
                      pad_mode=mode, return_complex=True)
    # eps inside the sqrt keeps the gradient finite where the spectrum is exactly zero.
    return (spec.real.pow(2) + spec.imag.pow(2) + 1e-12).sqrt()


def spectral_distance(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Spectral convergence ||Y - X||_F / ||Y||_F plus mean |log X - log Y| of two magnitude
    spectrograms of equal shape (magnitudes floored at ``eps``); scalar, zero iff they match."""
    sc = (reference - estimate).norm() / reference.norm().clamp_min(eps)
    return sc + F.l1_loss(estimate.clamp_min(eps).log(), reference.clamp_min(eps).log())


class MultiScaleMelLoss(nn.Module):
    """Sum over scales of mean |log10 max(mel(x), eps)^pow - log10 max(mel(y), eps)^pow|.

    Defaults follow Improved RVQGAN (DAC): hann windows of 32 ... 2048 samples, hop a quarter
    window, 5 ... 320 mel bands (Slaney mel scale / norm, librosa defaults), fmin 0, fmax
    Nyquist, eps 1e-5, pow 1 (magnitude), no linear-magnitude term (mag_weight 0).
    Windows longer than the input are skipped (at least one must fit).
    forward(estimate, reference): (B, 1, N) each -> scalar.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        fmin: float = 0.0,
        fmax: float | None = None,
        clamp_eps: float = 1e-5,
        pow: float = 1.0,
        log_weight: float = 1.0,
        mag_weight: float = 0.0,
    ):
        super().__init__()
        if len(window_lengths) != len(n_mels) or not window_lengths:
            raise ValueError(f"window_lengths {tuple(window_lengths)} and n_mels {tuple(n_mels)} "
                             "must be non-empty and of equal length")
        self.window_lengths = [int(w) for w in window_lengths]
        self.n_mels = [int(m) for m in n_mels]
        self.clamp_eps, self.pow = float(clamp_eps), float(pow)
        self.log_weight, self.mag_weight = float(log_weight), float(mag_weight)
        for i, (w, m) in enumerate(zip(self.window_lengths, self.n_mels)):
            with warnings.catch_warnings():
                # Many narrow low bands on short windows are empty; they contribute a constant
                # log10(eps) on both sides, i.e. nothing, exactly as in DAC.
                warnings.simplefilter("ignore")
                fb = librosa.filters.mel(sr=sample_rate, n_fft=w, n_mels=m, fmin=fmin, fmax=fmax)
            self.register_buffer(f"fb{i}", torch.from_numpy(fb).float(), persistent=False)
            self.register_buffer(f"win{i}", torch.hann_window(w), persistent=False)

    def mel(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Mel magnitude spectrogram of (B, N) audio at scale ``i``: (B, n_mels[i], frames)."""
        w = self.window_lengths[i]
        mag = stft_magnitude(x, w, w // 4, getattr(self, f"win{i}"))
        return torch.matmul(getattr(self, f"fb{i}"), mag)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if estimate.shape != reference.shape:
            raise ValueError(f"mel loss needs equal shapes, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
        x, y = _flat(estimate), _flat(reference)
        n = x.shape[-1]
        total, used = x.new_zeros(()), 0
        for i, w in enumerate(self.window_lengths):
            if w > n:
                continue
            mx, my = self.mel(x, i), self.mel(y, i)
            if self.log_weight:
                lx = mx.clamp_min(self.clamp_eps).pow(self.pow).log10()
                ly = my.clamp_min(self.clamp_eps).pow(self.pow).log10()
                total = total + self.log_weight * F.l1_loss(lx, ly)
            if self.mag_weight:
                total = total + self.mag_weight * F.l1_loss(mx, my)
            used += 1
        if not used:
            raise ValueError(f"mel loss: input of {n} samples is shorter than every window {self.window_lengths}")
        return total


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over FFT sizes of spectral convergence ||Y - X||_F / ||Y||_F plus mean |log X - log Y|.

    Hann windows of n_fft samples, hop n_fft / 4; windows longer than the input are skipped.
    forward(estimate, reference): (B, 1, N) each -> scalar; zero iff the magnitudes match.
    """

    def __init__(self, fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128), clamp_eps: float = 1e-5):
        super().__init__()
        if not fft_sizes:
            raise ValueError("MultiResolutionSTFTLoss needs at least one FFT size")
        self.fft_sizes = [int(n) for n in fft_sizes]
        self.clamp_eps = float(clamp_eps)
        for i, n in enumerate(self.fft_sizes):
            self.register_buffer(f"win{i}", torch.hann_window(n), persistent=False)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if estimate.shape != reference.shape:
            raise ValueError(f"STFT loss needs equal shapes, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
        x, y = _flat(estimate), _flat(reference)
        total, used = x.new_zeros(()), 0
        for i, n_fft in enumerate(self.fft_sizes):
            if n_fft > x.shape[-1]:
                continue
            w = getattr(self, f"win{i}")
            mx, my = stft_magnitude(x, n_fft, n_fft // 4, w), stft_magnitude(y, n_fft, n_fft // 4, w)
            total = total + spectral_distance(mx, my, self.clamp_eps)
            used += 1
        if not used:
            raise ValueError(f"STFT loss: input of {x.shape[-1]} samples is shorter than every FFT size "
                             f"{self.fft_sizes}")
        return total / used


def semitone_filterbank(sample_rate: int, n_fft: int, midi_lo: int, midi_hi: int) -> torch.Tensor:
    """(midi_hi - midi_lo + 1, n_fft // 2 + 1) weights: row m is a triangle one semitone wide on each
    side of MIDI note midi_lo + m, in log frequency, normalised to sum 1. A band narrower than one
    FFT bin (low notes on short windows) falls back to its nearest bin, so every row sees energy."""
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    with np.errstate(divide="ignore"):
        pitch = librosa.hz_to_midi(np.maximum(freqs, 1e-3))
    notes = np.arange(midi_lo, midi_hi + 1, dtype=np.float64)[:, None]
    fb = np.maximum(0.0, 1.0 - np.abs(pitch[None, :] - notes))
    for m, row in enumerate(fb):
        if row.sum() <= 0:
            row[np.argmin(np.abs(pitch - notes[m, 0]))] = 1.0
    return torch.from_numpy(fb / fb.sum(1, keepdims=True)).float()


class PitchBandLoss(nn.Module):
    """Sum over FFT sizes of mean |log10 max(B |STFT(x)|, eps) - log10 max(B |STFT(y)|, eps)|, where B
    is a semitone filterbank (:func:`semitone_filterbank`) from MIDI ``midi_lo`` to ``midi_hi``.

    Hann windows of n_fft samples, hop n_fft / 4. At 44.1 kHz an 8192-point window has 5.4 Hz bins,
    a semitone apart from about 90 Hz up; windows longer than the input are skipped (at least one
    must fit). forward(estimate, reference): (B, 1, N) each -> scalar; zero iff the band spectra match.
    """

    def __init__(self, sample_rate: int = 44100, fft_sizes: Sequence[int] = (16384, 8192), midi_lo: int = 28,
                 midi_hi: int = 108, clamp_eps: float = 1e-5):
        super().__init__()
        if not fft_sizes or not 0 < midi_lo <= midi_hi or librosa.midi_to_hz(midi_hi) >= sample_rate / 2:
            raise ValueError(f"PitchBandLoss needs FFT sizes and 0 < midi_lo <= midi_hi below Nyquist; got "
                             f"{tuple(fft_sizes)}, {midi_lo}, {midi_hi}")
        self.fft_sizes = [int(n) for n in fft_sizes]
        self.clamp_eps = float(clamp_eps)
        for i, n in enumerate(self.fft_sizes):
            self.register_buffer(f"fb{i}", semitone_filterbank(sample_rate, n, midi_lo, midi_hi), persistent=False)
            self.register_buffer(f"win{i}", torch.hann_window(n), persistent=False)

    def bands(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """(B, N) audio -> (B, notes, frames) semitone-band magnitudes at FFT size ``i``."""
        n = self.fft_sizes[i]
        return torch.matmul(getattr(self, f"fb{i}"), stft_magnitude(x, n, n // 4, getattr(self, f"win{i}")))

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if estimate.shape != reference.shape:
            raise ValueError(f"pitch band loss needs equal shapes, got {tuple(estimate.shape)} and "
                             f"{tuple(reference.shape)}")
        x, y = _flat(estimate), _flat(reference)
        total, used = x.new_zeros(()), 0
        for i, n in enumerate(self.fft_sizes):
            if n > x.shape[-1]:
                continue
            bx, by = self.bands(x, i), self.bands(y, i)
            total = total + F.l1_loss(bx.clamp_min(self.clamp_eps).log10(), by.clamp_min(self.clamp_eps).log10())
            used += 1
        if not used:
            raise ValueError(f"pitch band loss: input of {x.shape[-1]} samples is shorter than every FFT size "
                             f"{self.fft_sizes}")
        return total


class LatentSpectrumLoss(nn.Module):
    """Mean |W z_t + b - log max(gain * |STFT(x)|_t, eps)| over frames t and bins below ``max_hz``.

    z: posterior means (B, C, T); x: the input audio (B, 1, N). The STFT uses an ``n_fft`` Hann
    window centred on every latent frame (hop = the VAE hop), so frame t of the spectrum and of the
    latents cover the same audio. W, b (the read-out, a Linear(C, bins)) train with the VAE.

    Why: with only mel reconstruction, a tiny VAE on a 2-core CPU kept rhythm and loudness but no
    pitch for thousands of steps (a ridge probe from its latents to chroma: correlation 0.08, where
    a 32-component PCA of the same log spectra reaches 0.67). The decoder cannot render pitch
    early on, so nothing asks the encoder to keep it. This term asks directly: the latents must
    linearly determine a fine (10.8 Hz at 44.1 kHz and n_fft 4096) log spectrum, as a PCA would.
    """

    def __init__(self, latent_channels: int, sample_rate: int, hop: int, n_fft: int = 4096,
                 max_hz: float = 5000.0, gain: float = 10.0, clamp_eps: float = 1e-3):
        super().__init__()
        if not (n_fft >= 2 and 0 < max_hz <= sample_rate / 2 and gain > 0 and clamp_eps > 0):
            raise ValueError(f"LatentSpectrumLoss needs n_fft >= 2, 0 < max_hz <= {sample_rate / 2}, "
                             f"gain > 0, clamp_eps > 0; got {n_fft}, {max_hz}, {gain}, {clamp_eps}")
        self.hop, self.n_fft = int(hop), int(n_fft)
        self.bins = int(max_hz * n_fft / sample_rate) + 1
        self.gain, self.clamp_eps = float(gain), float(clamp_eps)
        self.readout = nn.Linear(latent_channels, self.bins)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) audio -> (B, bins, N // hop + 1) log magnitudes (no gradient needed)."""
        mag = stft_magnitude(_flat(x) * self.gain, self.n_fft, self.hop, self.window)
        return mag[:, : self.bins].clamp_min(self.clamp_eps).log()

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = z.shape[-1]
        with torch.no_grad():
            target = self.target(x)[..., :t]
        if target.shape[-1] != t:
            raise ValueError(f"latent spectrum loss: {t} latent frames but {target.shape[-1]} STFT frames")
        pred = self.readout(z.float().transpose(1, 2)).transpose(1, 2)
        return F.l1_loss(pred, target)


# ---------------------------------------------------------------------------------------------
# Least-squares GAN (Mao et al., 2017) and feature matching, summed over sub-discriminators.


def _check_pairs(real: DiscOutputs, fake: DiscOutputs) -> None:
    if len(real) != len(fake):
        raise ValueError(f"got {len(real)} real and {len(fake)} fake discriminator outputs")


def lsgan_discriminator_loss(real: DiscOutputs, fake: DiscOutputs) -> torch.Tensor:
    """Sum over sub-discriminators of mean (1 - D(real))^2 + mean D(fake)^2.

    Pass outputs computed on *detached* generator audio so that only the discriminator learns.
    """
    _check_pairs(real, fake)
    loss = real[0][-1].new_zeros(())
    for r, f in zip(real, fake):
        loss = loss + (1.0 - r[-1].float()).pow(2).mean() + f[-1].float().pow(2).mean()
    return loss


def lsgan_generator_loss(fake: DiscOutputs) -> torch.Tensor:
    """Sum over sub-discriminators of mean (1 - D(fake))^2."""
    loss = fake[0][-1].new_zeros(())
    for f in fake:
        loss = loss + (1.0 - f[-1].float()).pow(2).mean()
    return loss


def feature_matching_loss(real: DiscOutputs, fake: DiscOutputs) -> torch.Tensor:
    """Sum over sub-discriminators and their hidden feature maps (all but the last entry) of
    mean |D_l(fake) - D_l(real)|; the real features are detached (targets)."""
    _check_pairs(real, fake)
    loss = fake[0][-1].new_zeros(())
    for r, f in zip(real, fake):
        if len(r) != len(f):
            raise ValueError(f"feature lists differ in length: {len(r)} real vs {len(f)} fake")
        for fr, ff in zip(r[:-1], f[:-1]):
            loss = loss + F.l1_loss(ff.float(), fr.detach().float())
    return loss

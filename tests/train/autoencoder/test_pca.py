"""train/autoencoder/pca.py: the fitted fixed spectral path is an exact whitened PCA, and at step 0 the
VAE already reconstructs the notes of tonal audio (chroma correlation), unlike a fresh VAE."""

import math

import numpy as np
import pytest
import torch

from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.errors import PrestoError
from train.evaluation.pitch import chroma_correlation
from train.autoencoder.pca import fit_spectral_pca

SR = 16000


def _config(**kw) -> VAEConfig:
    base = dict(sample_rate=SR, hop=320, latent_channels=8, enc_channels=(8, 16, 32, 64), enc_strides=(4, 8, 10),
                dec_dim=32, dec_blocks=1, dec_upsample=4, dec_up_dim=16, dec_up_blocks=1, enc_frontend="stft",
                enc_stft_fft=640, enc_dim=16, enc_blocks=1, istft_overlap=8, dec_phase="advance", spectral_skip=True)
    return VAEConfig(**{**base, **kw})


def _melody(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Notes of random pitch (MIDI 55-79), 0.25 s each, three harmonics: tonal audio."""
    n = int(0.25 * SR)
    t = np.arange(n) / SR
    notes = []
    for m in rng.integers(55, 80, int(seconds / 0.25)):
        f0 = 440.0 * 2 ** ((m - 69) / 12)
        notes.append(sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3)) * np.hanning(n) ** 0.2)
    return np.concatenate(notes).astype(np.float32)


def test_fit_is_a_whitened_pca_and_the_vae_starts_as_that_codec():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    vae = AudioVAE(_config()).eval()
    clips = torch.from_numpy(np.stack([_melody(4.0, rng) for _ in range(6)]))[:, None]
    fit = fit_spectral_pca(vae, clips)
    assert 0.3 < fit["explained"] <= 1.0 and fit["frames"] == 6 * 200
    with torch.no_grad():
        mean, logvar = vae.encode(clips)
    # unit variance per latent channel over the fitting frames; the learned mean path starts at 0
    torch.testing.assert_close(mean.transpose(1, 2).reshape(-1, 8).std(0).double(), torch.ones(8, dtype=torch.float64),
                               atol=1e-3, rtol=0)
    assert torch.allclose(logvar, torch.full_like(logvar, -7.0))
    # the decoder's fixed path inverts the encoder's on the PCA subspace: B (W p + a) + b + log(gain) is
    # the weighted-PCA projection of p, and projecting twice changes nothing
    enc, dec = vae.encoder, vae.decoder
    p = enc.pooled(enc.log_spectrum(clips)).double()  # (K, F, T)
    proj = torch.einsum("fc,bct->bft", dec.skip_w.double(),
                        torch.einsum("cf,bft->bct", enc.pca_w.double(), p) + enc.pca_b.double()[:, None])
    proj = proj + dec.skip_b.double()[:, None] + math.log(vae.cfg.enc_input_gain)
    again = torch.einsum("fc,bct->bft", dec.skip_w.double(),
                         torch.einsum("cf,bft->bct", enc.pca_w.double(), proj) + enc.pca_b.double()[:, None])
    again = again + dec.skip_b.double()[:, None] + math.log(vae.cfg.enc_input_gain)
    torch.testing.assert_close(again, proj, atol=1e-4, rtol=0)
    assert (proj - p).abs().mean() < (p - p.mean((0, 2), keepdim=True)).abs().mean()  # better than the mean spectrum


def test_step0_reconstruction_keeps_the_notes():
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    fresh, fitted = AudioVAE(_config()).eval(), AudioVAE(_config()).eval()
    fit_spectral_pca(fitted, torch.from_numpy(np.stack([_melody(4.0, rng) for _ in range(8)]))[:, None])
    test = _melody(3.0, rng)
    x = torch.from_numpy(test)[None, None]
    with torch.no_grad():
        y_fit = fitted.decode(fitted.encode(x)[0])[0, 0, : len(test)].numpy()
        y_fresh = fresh.decode(fresh.encode(x)[0])[0, 0, : len(test)].numpy()
    assert chroma_correlation(y_fit, test, SR) > 0.7
    assert chroma_correlation(y_fresh, test, SR) < 0.3


def test_fit_and_config_errors():
    with pytest.raises(ValueError, match="spectral_skip"):
        fit_spectral_pca(AudioVAE(_config(spectral_skip=False)), torch.zeros(2, 1, 3200))
    with pytest.raises(ValueError, match="frames"):
        fit_spectral_pca(AudioVAE(_config()), torch.zeros(1, 1, 1280))
    with pytest.raises(PrestoError, match="spectral_skip"):
        _config(enc_stft_fft=512)

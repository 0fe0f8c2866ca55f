"""Set a VAE's fixed spectral path (VAEConfig.spectral_skip) to a whitened PCA of log spectra.

Why: on a 2-core CPU, a VAE trained from random init on mel reconstruction kept the rhythm and
loudness of music but no notes (train/evaluation/pitch.py: chroma correlation of its reconstructions with
the input about 0), with or without an auxiliary spectrum loss, for the thousands of steps a
session affords. A linear code needs no training to keep notes: the top 32 principal components
of per-frame log spectra (frequencies below ``split_hz`` weighted 1, above ``high_weight``),
resynthesised with the decoder's phase-advance head, keep a chroma correlation of about 0.66 with
real corpus audio. The fixed path gives the VAE that floor at step 0; the learned encoder and
decoder (whose output layers start at zero here) then only learn what the PCA misses.

Encoder: z = W (pooled log spectrum) + a with W = diag(1/s) V diag(fw), a = -W mu: every latent
channel has unit variance over the fitting frames. Decoder: log-magnitude = B z + b with
B = diag(1/fw) V^T diag(s), b = mu - log(enc_input_gain), the PCA reconstruction of the log
spectrum in the decoder's units (the encoder sees input_gain * x).
"""

from __future__ import annotations

import math

import torch

from presto_core.autoencoder import AudioVAE

LOGVAR_INIT = -7.0  # posterior std 0.03 at the start: the PCA code is not drowned in sampling noise


@torch.no_grad()
def fit_spectral_pca(vae: AudioVAE, clips: torch.Tensor, split_hz: float = 2500.0,
                     high_weight: float = 0.2) -> dict[str, float]:
    """Fit the PCA on (K, 1, N) clips and write it into ``vae``'s spectral buffers; also zero the
    learned paths' output layers (mean half of the encoder's, log-magnitude half of the decoder
    head's) so the VAE starts as the PCA codec. Returns {"explained": variance fraction kept by
    the weighted PCA, "frames": fitting frames}."""
    cfg = vae.cfg
    if not cfg.spectral_skip:
        raise ValueError("fit_spectral_pca needs a VAE built with VAEConfig(spectral_skip=True)")
    if not (0 < split_hz and 0 < high_weight <= 1):
        raise ValueError(f"need split_hz > 0 and 0 < high_weight <= 1, got {split_hz}, {high_weight}")
    enc, dec, c = vae.encoder, vae.decoder, cfg.latent_channels
    device = enc.pca_w.device
    pooled = enc.pooled(enc.log_spectrum(clips.to(device)))  # (K, F, T)
    x = pooled.transpose(1, 2).reshape(-1, pooled.shape[1]).double()
    if x.shape[0] <= c:
        raise ValueError(f"PCA needs more than {c} frames, got {x.shape[0]}: pass more or longer clips")
    freqs = torch.arange(x.shape[1], dtype=torch.float64, device=device) * cfg.sample_rate / enc.n_fft
    fw = torch.where(freqs < split_hz, 1.0, float(high_weight))
    mu = x.mean(0)
    _, sv, vt = torch.linalg.svd((x - mu) * fw, full_matrices=False)
    v, s = vt[:c], (sv[:c] / math.sqrt(x.shape[0] - 1)).clamp_min(1e-6)
    w = v * fw / s[:, None]  # (C, F)
    enc.pca_w.copy_(w)
    enc.pca_b.copy_(-(w @ mu))
    dec.skip_w.copy_((v.T * s) / fw[:, None])  # (F, C)
    dec.skip_b.copy_(mu - math.log(cfg.enc_input_gain))
    enc.out.weight.zero_()
    enc.out.bias.zero_()
    enc.out.bias[c:] = LOGVAR_INIT
    head = dec.head
    head.proj.weight[: head.n_bins].zero_()
    head.proj.bias[: head.n_bins].zero_()
    return {"explained": float(sv[:c].pow(2).sum() / sv.pow(2).sum()), "frames": int(x.shape[0])}

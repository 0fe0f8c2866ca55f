"""Audio VAE shapes, maths and a short overfit run; audio utilities."""

import math

import numpy as np
import pytest
import torch

from presto_core.audio import mrstft_distance, resample, si_sdr, to_mono
from presto_core.audio_layers import ISTFTHead, overlap_add_istft
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.errors import PrestoError


def small_config(**kw) -> VAEConfig:
    """16 kHz, hop 320 (50 Hz frames), ~0.15M params: fast enough for CPU unit tests."""
    base = dict(sample_rate=16000, hop=320, latent_channels=8, enc_channels=(8, 16, 32, 64),
                enc_strides=(4, 8, 10), dec_dim=64, dec_blocks=2, dec_upsample=4, dec_up_dim=32, dec_up_blocks=1)
    return VAEConfig(**{**base, **kw})


STFT = dict(enc_frontend="stft", enc_stft_fft=256, enc_stft_down=4, enc_dim=32, enc_blocks=1)


@pytest.fixture(params=["wave", "stft"])
def vae(request):
    torch.manual_seed(0)
    return AudioVAE(small_config(**(STFT if request.param == "stft" else {}))).eval()


@pytest.mark.parametrize("n", [1, 319, 320, 321, 1000, 3200])
def test_shapes(vae, n):
    wav = torch.randn(2, 1, n)
    mean, logvar = vae.encode(wav)
    t = math.ceil(n / 320)
    assert mean.shape == logvar.shape == (2, 8, t) and mean.dtype == torch.float32
    assert vae.decode(mean).shape == (2, 1, t * 320)
    recon, m, lv = vae(wav, generator=torch.Generator().manual_seed(1))
    assert recon.shape == (2, 1, t * 320) and m.shape == (2, 8, t)


def test_paper_hop_and_tiny_defaults():
    cfg = VAEConfig.tiny()
    assert (cfg.sample_rate, cfg.hop, cfg.latent_channels) == (44100, 960, 32)
    assert cfg.spectral_skip and cfg.dec_phase == "advance" and cfg.enc_stft_fft == cfg.istft_overlap * cfg.hop // cfg.dec_upsample
    assert VAEConfig.paper().hop == 960
    vae = AudioVAE(cfg).eval()
    with torch.no_grad():
        assert vae.encode(torch.zeros(1, 1, 2000))[0].shape == (1, 32, 3)
        assert vae.decode(torch.zeros(1, 32, 3)).shape == (1, 1, 2880)
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg


def test_config_validation():
    with pytest.raises(PrestoError, match="must equal hop"):
        VAEConfig(hop=1000)
    with pytest.raises(PrestoError, match="enc_channels"):
        VAEConfig(enc_channels=(16, 32))
    with pytest.raises(PrestoError, match="dec_upsample"):
        VAEConfig(dec_upsample=7)
    with pytest.raises(PrestoError, match="latent_scale"):
        VAEConfig(latent_scale=0.0)
    with pytest.raises(PrestoError, match="allowed"):
        VAEConfig.from_dict({"hop_size": 960})
    with pytest.raises(PrestoError, match="enc_frontend"):
        VAEConfig(enc_frontend="mel")
    with pytest.raises(PrestoError, match="enc_stft_down"):
        VAEConfig(enc_frontend="stft", enc_stft_down=7)
    vae = AudioVAE(small_config())
    with pytest.raises(PrestoError, match=r"\(B, 1, N\)"):
        vae.encode(torch.zeros(1, 2, 100))
    with pytest.raises(PrestoError, match=r"\(B, 8, T\)"):
        vae.decode(torch.zeros(1, 4, 10))


def test_determinism_and_sampling(vae):
    wav = torch.randn(1, 1, 1600, generator=torch.Generator().manual_seed(0))
    m1, lv1 = vae.encode(wav)
    m2, lv2 = vae.encode(wav)
    assert torch.equal(m1, m2) and torch.equal(lv1, lv2)
    assert torch.equal(vae.decode(m1), vae.decode(m2))
    r1 = vae(wav, generator=torch.Generator().manual_seed(3))[0]
    r2 = vae(wav, generator=torch.Generator().manual_seed(3))[0]
    r3 = vae(wav, generator=torch.Generator().manual_seed(4))[0]
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)


def test_stft_encoder_frames_are_causal_in_blocks():
    """Frame t of the STFT encoder summarises samples around [t*hop, (t+1)*hop): changing audio far
    after a frame's receptive field leaves its latent unchanged (the encoder is local, as the
    waveform one), and a whole-frame input gives exactly N / hop frames."""
    torch.manual_seed(0)
    vae = AudioVAE(small_config(**STFT)).eval()
    wav = torch.randn(1, 1, 320 * 40, generator=torch.Generator().manual_seed(0))
    later = wav.clone()
    later[..., 320 * 30:] = 0.0
    with torch.no_grad():
        a, b = vae.encode(wav)[0], vae.encode(later)[0]
    assert a.shape == (1, 8, 40)
    torch.testing.assert_close(a[..., :20], b[..., :20])
    assert not torch.allclose(a[..., 30:], b[..., 30:])


def test_kl():
    z = torch.zeros(2, 8, 5)
    assert AudioVAE.kl(z, z).item() == 0.0
    mean, logvar = torch.full_like(z, 2.0), torch.full_like(z, math.log(0.5))
    expected = 0.5 * (4.0 + 0.5 - 1.0 - math.log(0.5))
    assert AudioVAE.kl(mean, logvar).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("frontend", [{}, STFT, {**STFT, "dec_phase": "advance", "istft_overlap": 8}])
def test_gradients_reach_every_parameter(frontend):
    torch.manual_seed(0)
    vae = AudioVAE(small_config(weight_norm=True, **frontend))
    wav = torch.randn(2, 1, 1280)
    recon, mean, logvar = vae(wav, generator=torch.Generator().manual_seed(0))
    (mrstft_distance(recon[..., :1280], wav, (256, 128)) + vae.kl(mean, logvar)).backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_bf16_autocast(vae):
    wav = torch.randn(1, 1, 3200)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        recon, mean, logvar = vae(wav)
        low = vae.decode(mean)
    assert recon.dtype == mean.dtype == low.dtype == torch.float32 and torch.isfinite(recon).all()
    with torch.no_grad():
        ref = vae.decode(mean)
    assert si_sdr(low, ref).item() > 25.0  # bf16 vs fp32 decode of the same latents (~44 dB)


def test_latent_scale_round_trip():
    torch.manual_seed(0)
    vae = AudioVAE(small_config(latent_scale=0.25)).eval()
    wav = torch.randn(1, 1, 1600)
    with torch.no_grad():
        mean, logvar = vae.encode(wav)
        z = vae.encode_latents(wav)
        torch.testing.assert_close(z, 0.25 * mean)
        torch.testing.assert_close(vae.decode_latents(z), vae.decode(mean))
        zs = vae.encode_latents(wav, generator=torch.Generator().manual_seed(0), sample=True)
        torch.testing.assert_close(zs, 0.25 * AudioVAE.sample(mean, logvar, torch.Generator().manual_seed(0)))


def test_istft_head_is_exact_inverse_of_same_padded_stft():
    """The OLA in the decoder head inverts a "same"-padded hann STFT exactly (away from the edges)."""
    hop, overlap = 64, 4
    n_fft, pad = hop * overlap, (hop * overlap - hop) // 2
    x = torch.randn(1, 40 * hop, dtype=torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    frames = torch.nn.functional.pad(x, (pad, pad + hop)).unfold(-1, n_fft, hop)[:, :40]  # (1, 40, n_fft)
    spec = torch.fft.rfft(frames * window, dim=-1)
    y = overlap_add_istft(spec, hop, overlap, window)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, n_fft:-n_fft], x[:, n_fft:-n_fft])


@pytest.mark.parametrize("overlap", [4, 8])
def test_phase_advance_head_renders_a_steady_sinusoid_at_init(overlap):
    """Zero phase offsets (the init) and one active bin k: the overlap-added frames are exactly the
    steady sinusoid at k * sr / n_fft, so a decoder that gets magnitudes right gets pitch right."""
    hop, k, frames = 32, 5, 60
    torch.manual_seed(0)
    head = ISTFTHead(dim=16, hop=hop, overlap=overlap, phase_advance=True)
    assert head.proj.weight[head.n_bins:].abs().sum() == 0 and head.proj.bias[head.n_bins:].abs().sum() == 0
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias[: head.n_bins] = -30.0  # exp(-30): silent bins
        head.proj.bias[k] = 0.0
    y = head(torch.randn(1, frames, 16))[0].double()
    n = torch.arange(y.shape[-1], dtype=torch.float64)
    omega = 2 * math.pi * k / head.n_fft
    basis = torch.stack([torch.cos(omega * n), torch.sin(omega * n)], 1)
    inner = slice(head.n_fft, -head.n_fft)  # away from the edges the window envelope is complete
    coef = torch.linalg.lstsq(basis[inner], y[inner, None]).solution
    residual = y[inner] - (basis[inner] @ coef)[:, 0]
    assert coef.norm() > 1e-3 and residual.abs().max() < 1e-5 * coef.norm()
    # the advance is exact integer arithmetic: periodic in t with period `overlap`
    adv = head.advance(3 * overlap)
    torch.testing.assert_close(adv[:overlap], adv[overlap: 2 * overlap])
    # free phase (the default) has no such structure at init
    free = ISTFTHead(dim=16, hop=hop, overlap=overlap)
    assert free.proj.weight[free.n_bins:].abs().sum() > 0
    with pytest.raises(PrestoError, match="dec_phase"):
        VAEConfig(dec_phase="zero")


def test_metrics_identities():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 4000, generator=g)
    assert mrstft_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert mrstft_distance(a, torch.randn(2, 4000, generator=g)).item() > 0.1
    assert torch.all(si_sdr(0.3 * a, a) > 100.0)
    assert torch.all(si_sdr(a + 0.1 * torch.randn(2, 4000, generator=g), a) < 30.0)


def test_audio_utils():
    sr, f = 16000, 440.0
    t = np.arange(sr) / sr
    sine = np.sin(2 * np.pi * f * t).astype(np.float32)
    out = resample(sine, sr, 22050)
    assert out.dtype == np.float32 and out.shape == (22050,)
    assert resample(np.stack([sine, sine]), sr, 8000).shape == (2, 8000)
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 22050 / len(out)
    assert abs(peak_hz - f) <= 1.0
    stereo = np.stack([sine, 0 * sine])
    assert to_mono(stereo).shape == (sr,) and np.allclose(to_mono(stereo), sine / 2)
    with pytest.raises(PrestoError):
        resample(sine, 0, 16000)


@pytest.mark.slow
def test_overfit_one_clip():
    """~150 Adam steps on 0.5 s of sine + noise cut the multi-resolution STFT loss by > 40%."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vae = AudioVAE(small_config())
    t = torch.arange(8000) / 16000
    wav = (0.5 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(8000, generator=g)).reshape(1, 1, -1)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    ffts = (512, 256, 128)
    with torch.no_grad():
        before = mrstft_distance(vae.decode(vae.encode(wav)[0])[..., :8000], wav, ffts).item()
    for _ in range(150):
        recon, mean, logvar = vae(wav, generator=g)
        loss = mrstft_distance(recon[..., :8000], wav, ffts) + 1e-4 * vae.kl(mean, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = mrstft_distance(vae.decode(vae.encode(wav)[0])[..., :8000], wav, ffts).item()
    assert after < 0.6 * before, (before, after)

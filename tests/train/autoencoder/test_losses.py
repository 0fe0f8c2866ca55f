"""VAE training losses and discriminators: zero on identical signals, positive otherwise,
gradients flow, shapes and feature lists for several input lengths."""

import math

import pytest
import torch

from train.autoencoder.discriminators import Discriminator, DiscriminatorConfig
from train.autoencoder.losses import (
    LatentSpectrumLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    PitchBandLoss,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    semitone_filterbank,
)

SR = 16000


def _tone(n, f=440.0, sr=SR):
    t = torch.arange(n) / sr
    return (0.5 * torch.sin(2 * math.pi * f * t) + 0.1 * torch.sin(2 * math.pi * 3.1 * f * t))[None, None]


@pytest.fixture(scope="module")
def mel_loss():
    return MultiScaleMelLoss(sample_rate=SR)


@pytest.fixture(scope="module")
def tiny_disc():
    torch.manual_seed(0)
    return Discriminator(DiscriminatorConfig.tiny(mpd_channels=(4, 8, 8), mrd_channels=4, fft_sizes=(256, 128)))


def test_mel_loss_zero_for_identical_positive_otherwise(mel_loss, gen):
    x = _tone(4096).repeat(2, 1, 1)
    assert mel_loss(x, x.clone()).item() == 0.0
    noise = 0.05 * torch.randn(x.shape, generator=gen)
    assert mel_loss(x + noise, x).item() > 0.0
    assert mel_loss(0.5 * x, x).item() > mel_loss(0.9 * x, x).item() > 0.0  # log-mel sees level


def test_mel_loss_buffers_not_persistent_and_skip_long_windows(mel_loss):
    assert mel_loss.state_dict() == {}
    x = _tone(1000)  # shorter than the 1024/2048 windows: those scales are skipped
    assert torch.isfinite(mel_loss(x, 0.8 * x))
    with pytest.raises(ValueError):
        mel_loss(_tone(16), _tone(16))
    with pytest.raises(ValueError):
        mel_loss(_tone(4096), _tone(2048))


def test_stft_loss_zero_and_grad(gen):
    loss = MultiResolutionSTFTLoss(fft_sizes=(512, 256, 128))
    x = _tone(4096)
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen)).requires_grad_(True)
    val = loss(y, x)
    assert val.item() > 0.0
    val.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_mel_loss_gradient_flows_even_through_silence(mel_loss):
    est = torch.zeros(1, 1, 4096, requires_grad=True)  # exact zeros: sqrt(eps) keeps grads finite
    mel_loss(est, _tone(4096)).backward()
    assert torch.isfinite(est.grad).all()
    est2 = (0.3 * _tone(4096)).requires_grad_(True)
    mel_loss(est2, _tone(4096)).backward()
    assert est2.grad.abs().sum() > 0


def test_lsgan_and_feature_matching_values():
    ones, zeros = torch.ones(2, 1, 5), torch.zeros(2, 1, 5)
    feat = torch.randn(2, 3, 5)
    real = [[feat, ones], [feat, ones]]
    perfect_fake = [[feat.clone(), zeros], [feat.clone(), zeros]]
    assert lsgan_discriminator_loss(real, perfect_fake).item() == 0.0  # D is perfect
    assert lsgan_generator_loss(perfect_fake).item() == pytest.approx(2.0)  # 2 discs * mean (1-0)^2
    assert lsgan_generator_loss(real).item() == 0.0
    assert feature_matching_loss(real, perfect_fake).item() == 0.0
    fake2 = [[feat + 1.0, ones], [feat, ones]]
    assert feature_matching_loss(real, fake2).item() == pytest.approx(1.0)
    assert lsgan_discriminator_loss(real, fake2).item() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        feature_matching_loss(real, fake2[:1])


@pytest.mark.parametrize("n", [1000, 2047, 4096])
def test_discriminator_shapes_and_feature_lists(tiny_disc, n, gen):
    x = 0.3 * torch.randn(2, 1, n, generator=gen)
    outs = tiny_disc(x)
    cfg = tiny_disc.config
    assert len(outs) == len(cfg.periods) + len(cfg.fft_sizes) == len(tiny_disc.names)
    for p, feats in zip(cfg.periods, outs):
        assert len(feats) == len(cfg.mpd_channels) + 1
        for f, c in zip(feats, (*cfg.mpd_channels, 1)):
            assert f.shape[:2] == (2, c) and f.shape[-1] == p
        assert feats[-1].shape[2] == feats[-2].shape[2]  # post conv keeps the time axis
    for n_fft, feats in zip(cfg.fft_sizes, outs[len(cfg.periods):]):
        assert len(feats) == 5 * len(cfg.bands) + 1
        frames = 1 + n // int(n_fft * cfg.hop_factor)
        assert all(f.shape[0] == 2 and f.shape[2] == frames for f in feats)
        band_out = [feats[5 * i + 4] for i in range(len(cfg.bands))]
        assert feats[-1].shape == (2, 1, frames, sum(b.shape[-1] for b in band_out))
    assert all(torch.isfinite(f).all() for feats in outs for f in feats)


def test_discriminator_gradients_reach_input_and_weights(tiny_disc, gen):
    tiny_disc.zero_grad()
    x = (0.3 * torch.randn(2, 1, 3000, generator=gen)).requires_grad_(True)
    real = tiny_disc(_tone(3000).repeat(2, 1, 1))
    fake = tiny_disc(x)
    (lsgan_generator_loss(fake) + feature_matching_loss(real, fake)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    d_loss = lsgan_discriminator_loss(tiny_disc(_tone(3000)), tiny_disc(x.detach()[:1]))
    tiny_disc.zero_grad()
    d_loss.backward()
    grads = [p.grad for p in tiny_disc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_discriminator_level_invariant_and_config_roundtrip(tiny_disc):
    x = _tone(2048)
    a, b = tiny_disc(x), tiny_disc(0.25 * x + 0.0)
    assert torch.allclose(a[0][-1], b[0][-1], atol=1e-5)  # peak-normalised input
    cfg = DiscriminatorConfig.paper()
    assert DiscriminatorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        DiscriminatorConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        DiscriminatorConfig(bands=((0.5, 0.2),))


def test_latent_spectrum_loss_exact_readout_is_zero_and_pitch_sensitive(gen):
    hop = 160
    loss = LatentSpectrumLoss(latent_channels=8, sample_rate=SR, hop=hop, n_fft=1024, max_hz=2000.0)
    assert loss.bins == 2000 * 1024 // SR + 1
    x = _tone(hop * 20)
    target = loss.target(x)  # (1, bins, 21): one centred frame per latent frame, plus the tail
    assert target.shape == (1, loss.bins, 21)
    # Latents that ARE the log spectrum, with an identity read-out, are read out exactly.
    exact = LatentSpectrumLoss(latent_channels=loss.bins, sample_rate=SR, hop=hop, n_fft=1024, max_hz=2000.0)
    with torch.no_grad():
        exact.readout.weight.copy_(torch.eye(loss.bins))
        exact.readout.bias.zero_()
    assert exact(target[..., :20], x).item() == pytest.approx(0.0, abs=1e-5)
    # The same latents against a tone a fifth higher: the read-out no longer matches.
    assert exact(target[..., :20], _tone(hop * 20, f=660.0)).item() > 0.5
    # Gradients reach the latents and the read-out; the target is a constant.
    z = torch.randn(2, 8, 20, generator=gen, requires_grad=True)
    loss(z, x.repeat(2, 1, 1)).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert loss.readout.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        loss(torch.zeros(1, 8, 30), x)  # 30 latent frames, but 3200 samples give 21 STFT frames
    with pytest.raises(ValueError):
        LatentSpectrumLoss(8, SR, hop, max_hz=SR)  # above Nyquist


def test_semitone_filterbank_rows_sum_to_one_and_peak_on_their_note():
    fb = semitone_filterbank(44100, 8192, 28, 108)
    assert fb.shape == (81, 4097) and torch.all(fb >= 0)
    assert torch.allclose(fb.sum(1), torch.ones(81))
    freqs = torch.arange(4097) * 44100 / 8192
    a4 = 69 - 28  # 440 Hz: its band's centre of mass is within a bin of 440 Hz
    assert abs(float((fb[a4] * freqs).sum()) - 440.0) < 44100 / 8192


def test_pitch_band_loss_tells_bass_notes_a_semitone_apart():
    sr, n = 44100, 32768
    loss = PitchBandLoss(sr, fft_sizes=(16384, 8192))
    a1, b1 = _tone(n, 55.0, sr), _tone(n, 55.0 * 2 ** (1 / 12), sr)  # A1 and B-flat 1
    # The loudest band is each tone's own note, one band apart: A1 / B-flat 1 on the 16384-point
    # window (2.7 Hz bins), A2 / B-flat 2 on the 8192-point one (5.4 Hz bins resolve from ~90 Hz).
    for i, f in ((0, 55.0), (1, 110.0)):
        midi = 33 if f == 55.0 else 45
        peak = [int(loss.bands(_tone(n, g, sr)[:, 0], i).mean(-1).argmax()) for g in (f, f * 2 ** (1 / 12))]
        assert peak == [midi - 28, midi + 1 - 28]
    assert loss(a1, a1.clone()).item() == 0.0
    y = b1.clone().requires_grad_(True)
    value = loss(y, a1)
    value.backward()
    assert value.item() > 0.3 and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # The mel loss's longest window puts both tones in one 21.5 Hz bin: it barely moves
    mel = MultiScaleMelLoss(sample_rate=sr, window_lengths=(2048,), n_mels=(320,))
    assert mel(b1, a1).item() < 0.25 * value.item()
    assert loss.state_dict() == {}


def test_pitch_band_loss_skips_long_windows_and_checks_input():
    loss = PitchBandLoss(44100, fft_sizes=(16384, 2048))
    x = _tone(4096, 220.0, 44100)  # shorter than 16384: only the 2048 window is used
    assert torch.isfinite(loss(x, 0.5 * x)) and loss(x, 0.5 * x).item() > 0
    with pytest.raises(ValueError, match="shorter than every FFT size"):
        loss(_tone(1024), _tone(1024))
    with pytest.raises(ValueError, match="equal shapes"):
        loss(_tone(4096), _tone(2048))
    with pytest.raises(ValueError, match="midi_lo"):
        PitchBandLoss(16000, midi_lo=28, midi_hi=127)

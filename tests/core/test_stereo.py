"""The mono-to-stereo model (presto_core.stereo) and stereo through the pipeline, the command line
and WAV files, on micro random-weight models: the mid identity, channel order, the width and
correlation formulas, save/load, the mono fallback and the errors for bad requests."""

import numpy as np
import pytest
import soundfile as sf
import torch

from presto_core import checkpoint as ckpt
from presto_core.audio import read_wav_settings, write_wav
from presto_core.errors import PrestoError
from presto_core.generate import main as cli_main
from presto_core.pipeline import PrestoPipeline
from presto_core.request import GenerationRequest, downmix
from presto_core.stereo import MonoToStereo, StereoConfig, channel_correlation, hat_bands, mid_side, stereo_width
from tests.factory import MICRO_M2S, make_model_folder, perturb

SR = 16000


def micro(seed: int = 0) -> MonoToStereo:
    torch.manual_seed(seed)
    return perturb(MonoToStereo(StereoConfig(**MICRO_M2S)), seed, scale=0.2).eval()


def noise(n: int, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_hat_bands_are_a_partition_of_unity():
    w = hat_bands(513, 64, 44100)
    assert w.shape == (64, 513) and (w >= 0).all()
    torch.testing.assert_close(w.sum(0), torch.ones(513))


def test_mid_identity_shapes_and_limit():
    m = micro()
    # Mono clips are in [-1, 1] (the pipeline clamps them); the second sits at the limit.
    mid = torch.stack([noise(SR, 1).clamp(-1, 1), 0.99 * torch.sign(noise(SR, 2))])
    with torch.no_grad():
        lr = m(mid)
    assert lr.shape == (2, 2, SR) and lr.dtype == torch.float32
    assert ((lr[:, 0] + lr[:, 1]) / 2 - mid).abs().max() <= 1e-6
    assert lr.abs().max() <= 1.0 + 1e-6  # |mid| + |side| <= 1: neither channel clips
    assert float(stereo_width(lr[:1])) > 0  # random weights widen


def test_channel_order_left_is_mid_plus_side():
    m = MonoToStereo(StereoConfig(**MICRO_M2S)).eval()
    with torch.no_grad():  # direct gain tanh(5) ~ 1, no diffuse part: side = mid, so L = 2 mid and R = 0
        m.out.bias[: m.cfg.bands].fill_(5.0)
        m.out.bias[m.cfg.bands:].fill_(-30.0)
        mid = 0.2 * noise(SR, 3)
        lr = m(mid[None])[0]
    torch.testing.assert_close(lr[0], 2 * mid, atol=2e-3, rtol=0)
    assert lr[1].abs().max() < 2e-3


def test_untrained_model_starts_near_mono_and_is_loudness_invariant():
    m = MonoToStereo(StereoConfig(**MICRO_M2S)).eval()  # zero output weights: constant gains
    mid = noise(SR, 4, scale=0.05)  # far from the clip limit
    trained = micro(2)
    with torch.no_grad():
        w = float(stereo_width(m(mid[None])))
        # Features drop the clip's mean log power: 10x quieter gives a 10x quieter side.
        torch.testing.assert_close(trained.side(0.1 * mid[None]), 0.1 * trained.side(mid[None]), atol=1e-6,
                                   rtol=1e-3)
    assert 0 < w < 0.05  # sigmoid(-2)^2 ~ 0.014 of diffuse energy


def test_width_and_correlation_formulas():
    mono = noise(SR, 5)
    assert float(stereo_width(torch.stack([mono, mono]))) == 0.0
    assert float(channel_correlation(torch.stack([mono, mono]))) == pytest.approx(1.0)
    indep = torch.stack([noise(4 * SR, 6), noise(4 * SR, 7)])
    assert float(stereo_width(indep)) == pytest.approx(1.0, abs=0.05)
    assert abs(float(channel_correlation(indep))) < 0.05
    mid, side = mid_side(torch.stack([mono, -mono]))
    assert mid.abs().max() == 0 and torch.equal(side, mono)
    with pytest.raises(PrestoError, match="2 channels"):
        mid_side(torch.zeros(3, 10))


def test_save_load_round_trip(tmp_path):
    m = micro(1)
    ckpt.save_component(tmp_path / "m2s", m, m.cfg)
    loaded, _ = ckpt.load_component(tmp_path / "m2s")
    assert isinstance(loaded, MonoToStereo) and loaded.cfg == m.cfg
    mid = noise(SR, 8)[None]
    with torch.no_grad():
        assert torch.equal(loaded(mid), m(mid))
    assert ckpt.kind_of(m) == "m2s"


def test_config_errors():
    with pytest.raises(PrestoError, match="bands"):
        StereoConfig(bands=1)
    with pytest.raises(PrestoError, match="hop"):
        StereoConfig(n_fft=256, hop=200)
    with pytest.raises(PrestoError, match="shape"):
        MonoToStereo(StereoConfig(**MICRO_M2S)).side(torch.zeros(2, 2, 100))


# -- pipeline --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stereo_pipe(tmp_path_factory):
    folder = make_model_folder(tmp_path_factory.mktemp("stereo"), variants=("base", "presto-ls"), with_m2s=True)
    return PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def mono_pipe(tmp_path_factory):
    folder = make_model_folder(tmp_path_factory.mktemp("mono"), variants=("presto-ls",))
    return PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")


def test_pipeline_is_stereo_by_default_and_the_mid_is_the_mono_clip(stereo_pipe):
    assert stereo_pipe.has_stereo
    kw = dict(prompt="wide pads", duration=1.2, seed=5, num_clips=2, variant="presto-ls")
    st = stereo_pipe.generate(**kw)
    mono = stereo_pipe.generate(**kw, stereo=False)
    assert st.settings["stereo"] is True and mono.settings["stereo"] is False
    assert st.timings["stereo"] > 0 and mono.timings["stereo"] == 0
    for s, m in zip(st.clips, mono.clips):
        assert s.audio.shape == (2, round(1.2 * SR)) and s.audio.dtype == np.float32 and s.stereo
        assert m.audio.shape == (round(1.2 * SR),) and not m.stereo
        assert np.abs((s.audio[0] + s.audio[1]) / 2 - m.audio).max() <= 1e-4
        assert np.abs(s.mono - m.audio).max() <= 1e-4
        assert s.candidate == m.candidate and s.clap_score == m.clap_score


def test_rejection_widens_only_the_kept_clips(stereo_pipe):
    res = stereo_pipe.generate(prompt="house", duration=1.0, seed=2, num_clips=1, reject_ratio=0.5,
                               variant="presto-ls")
    assert res.settings["candidates"] == 2 and len(res.clips) == 1 and res.clips[0].audio.shape[0] == 2
    req = GenerationRequest(prompt="house", duration=2.0, num_clips=3).validated(stereo_pipe)
    assert stereo_pipe.cost(req).stereo_seconds == 6.0
    req = GenerationRequest(prompt="house", duration=2.0, num_clips=3, stereo=False).validated(stereo_pipe)
    assert stereo_pipe.cost(req).stereo_seconds == 0.0


def test_folder_without_m2s_stays_mono_and_refuses_stereo(mono_pipe):
    assert not mono_pipe.has_stereo
    res = mono_pipe.generate(prompt="calm piano", duration=1.0, seed=1)
    assert res.clips[0].audio.ndim == 1 and res.settings["stereo"] is False
    with pytest.raises(PrestoError, match="no mono-to-stereo component"):
        mono_pipe.generate(prompt="calm piano", duration=1.0, seed=1, stereo=True)


@pytest.mark.parametrize("bad", ["yes", 1, 0.5, [True]])
def test_stereo_must_be_a_bool(stereo_pipe, bad):
    with pytest.raises(PrestoError, match="stereo must be true, false or unset"):
        GenerationRequest(prompt="x", stereo=bad).validated(stereo_pipe)


def test_variation_of_a_stereo_upload_is_mixed_down(stereo_pipe):
    wav = np.stack([noise(SR, 9).numpy(), noise(SR, 10).numpy()], axis=1)  # (N, 2), as soundfile reads it
    a = stereo_pipe.generate(prompt="x", duration=1.0, seed=4, init_audio=wav, init_sr=SR, strength=0.5)
    b = stereo_pipe.generate(prompt="x", duration=1.0, seed=4, init_audio=wav.mean(axis=1), init_sr=SR,
                             strength=0.5)
    assert np.array_equal(a.clips[0].audio, b.clips[0].audio) and a.clips[0].audio.shape[0] == 2


def test_downmix_layouts_and_errors():
    x = np.arange(8, dtype=np.float32)
    assert np.array_equal(downmix(x), x)
    assert np.array_equal(downmix(np.stack([x, -x], axis=1)), np.zeros(8))
    assert np.array_equal(downmix(np.stack([x, x])), x)
    with pytest.raises(PrestoError, match="1 or 2 channels"):
        downmix(np.zeros((100, 6), dtype=np.float32))
    with pytest.raises(PrestoError, match="shape"):
        downmix(np.zeros((2, 2, 2), dtype=np.float32))


def test_stereo_wav_round_trip_with_settings(tmp_path):
    audio = np.stack([noise(SR, 11).numpy(), 0.5 * noise(SR, 12).numpy()])
    write_wav(tmp_path / "s.wav", audio, SR, {"prompt": "x", "stereo": True})
    back, sr = sf.read(tmp_path / "s.wav", dtype="float32")
    assert sr == SR and back.shape == (SR, 2)
    np.testing.assert_allclose(back.T, np.clip(audio, -1, 1), atol=1.0 / 32767)
    assert read_wav_settings(tmp_path / "s.wav") == {"prompt": "x", "stereo": True}
    with pytest.raises(PrestoError, match="stereo"):
        write_wav(tmp_path / "bad.wav", np.zeros((3, 10), np.float32), SR)


def test_cli_writes_stereo_and_mono(stereo_pipe, tmp_path, capsys):
    folder = stereo_pipe.source
    assert cli_main(["--model", folder, "--prompt", "x", "--duration", "1", "--seed", "0",
                     "--out", str(tmp_path / "st.wav")]) == 0
    assert cli_main(["--model", folder, "--prompt", "x", "--duration", "1", "--seed", "0", "--mono",
                     "--out", str(tmp_path / "mo.wav")]) == 0
    out = capsys.readouterr().out
    assert " stereo " in out and " mono " in out
    st, _ = sf.read(tmp_path / "st.wav", dtype="float32")
    mo, _ = sf.read(tmp_path / "mo.wav", dtype="float32")
    assert st.shape == (SR, 2) and mo.shape == (SR,)
    assert np.abs(st.mean(axis=1) - mo).max() <= 2.0 / 32767  # 16-bit rounding of each channel
    assert read_wav_settings(tmp_path / "st.wav")["stereo"] is True
    assert read_wav_settings(tmp_path / "mo.wav")["stereo"] is False


def test_cli_stereo_from_a_mono_folder_says_so(mono_pipe, tmp_path, capsys):
    assert cli_main(["--model", mono_pipe.source, "--prompt", "x", "--duration", "1", "--seed", "0",
                     "--out", str(tmp_path / "m.wav")]) == 0
    assert "no mono-to-stereo component" in capsys.readouterr().out

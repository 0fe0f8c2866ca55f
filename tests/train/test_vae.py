"""End-to-end VAE training (train.vae) on a tiny synthetic corpus with the test config:
finite losses, weights change, exact resume, NaN guard, and an export that loads."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from presto_core.checkpoint import load_component
from train.infra.checkpointing import read_metrics
from train.infra.run import EXIT_NONFINITE
from train.vae import WarmupDecay, load_clips, main, read_eval
from tests.fixtures import REPO

CONFIG = str(REPO / "train/configs/test.json")


def _piece(sr: int, seconds: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    y = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t))  # 2 Hz tremolo
    return (y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae_corpus")
    rng = np.random.default_rng(0)
    recs = []
    for i, (f0, sr, split) in enumerate([(220.0, 16000, "train"), (330.0, 22050, "train"),
                                         (196.0, 16000, "train"), (262.0, 16000, "heldout")]):
        sf.write(root / f"p{i}.wav", _piece(sr, 1.5, f0, rng), sr)
        recs.append({"path": f"p{i}.wav", "caption": f"test tone {i}", "bpm": 120.0, "split": split})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def _args(corpus, out, *extra):
    return ["--config", CONFIG, "--out", str(out), "--cpu", "--set", f"data.root={corpus}", *extra]


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_run") / "run"
    assert main(_args(corpus, out)) == 0
    return out


def _ckpt_tensors(run: Path, step: int, index: int) -> dict:
    folder = run / "checkpoints" / f"step-{step:08d}"
    name = "model.safetensors" if index == 0 else f"model_{index}.safetensors"
    return load_file(str(folder / name))


def test_losses_finite_and_logged(full_run):
    lines = read_metrics(full_run)
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    for m in lines:
        for k in ("loss", "mel", "kl", "grad_norm", "post_std"):
            assert math.isfinite(m[k]), (k, m)
    assert lines[0]["disc_loss"] == 0.0  # gan_start_step = 1: step 1 is reconstruction only
    for m in lines[1:]:
        assert m["disc_loss"] > 0 and m["adv"] > 0 and m["fm"] > 0 and math.isfinite(m["grad_norm_d"])
    ev = read_eval(full_run)
    assert [e["step"] for e in ev] == [2, 4]
    assert all(math.isfinite(e["eval/mrstft"]) and math.isfinite(e["eval/si_sdr"]) for e in ev)
    assert all(-1 <= e["eval/chroma"] <= 1 for e in ev)


def test_weights_change(full_run):
    """Steps 3 and 4 move every floating-point tensor of the VAE and of the discriminator (all are
    trained parameters: none is left out of the optimizers)."""
    for index in (0, 1):  # VAE, discriminator
        a, b = _ckpt_tensors(full_run, 2, index), _ckpt_tensors(full_run, 4, index)
        assert a.keys() == b.keys()
        changed = {k for k in a if not torch.equal(a[k], b[k])}
        assert changed, f"model {index} did not change"
        floats = {k for k, v in a.items() if v.is_floating_point()}
        assert changed <= floats
        frozen = sorted(floats - changed)
        assert frozen == [], f"model {index}: {frozen[:5]} did not train"


def test_export_loads_with_latent_scale(full_run, corpus):
    folder = full_run / "export" / "vae"
    vae, meta = load_component(folder)
    cfg = vae.cfg
    assert cfg.sample_rate == 16000 and cfg.hop == 320 and cfg.latent_channels == 8
    assert all(v.dtype == torch.float32 for v in load_file(str(folder / "model.safetensors")).values())
    stats = meta["latent_stats"]
    assert cfg.latent_scale == pytest.approx(0.5 / stats["std"])
    assert meta["step"] == 4 and math.isfinite(meta["eval"]["si_sdr"])
    # The exported weights are the trained ones, and scaled latents have std 0.5 on the same crops.
    ckpt = _ckpt_tensors(full_run, 4, 0)
    assert all(torch.equal(vae.state_dict()[k], ckpt[k]) for k in ckpt)
    clips = load_clips(corpus, "train", 0.5, 16000, 320, 2, -20.0, seed=1)
    with torch.no_grad():
        z = vae.encode_latents(clips)
    assert float(z.std()) == pytest.approx(0.5, rel=1e-3)


def test_resume_is_exact(full_run, corpus, tmp_path):
    out = tmp_path / "resumed"
    assert main(_args(corpus, out, "--max-steps", "2")) == 0
    assert main(_args(corpus, out, "--resume", "latest")) == 0
    for index in (0, 1):
        a, b = _ckpt_tensors(full_run, 4, index), _ckpt_tensors(out, 4, index)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=f"model {index} {k}")
    ma, mb = read_metrics(full_run), read_metrics(out)
    assert [m["step"] for m in mb] == [1, 2, 3, 4]
    for x, y in zip(ma[2:], mb[2:]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
    assert [e["step"] for e in read_eval(out)] == [2, 4]


def test_latent_spectrum_loss_trains_checkpoints_and_resumes(corpus, tmp_path):
    spec = ["--set", "vae.spec_weight=1.0", "--set", "vae.spec_fft=512", "--set", "vae.spec_max_hz=4000"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_args(corpus, full, *spec)) == 0
    lines = read_metrics(full)
    assert all(math.isfinite(m["spec"]) and m["spec"] > 0 for m in lines)
    # The read-out is the third prepared model: it learns and is in every checkpoint.
    a, b = _ckpt_tensors(full, 2, 2), _ckpt_tensors(full, 4, 2)
    assert set(a) == {"readout.weight", "readout.bias"} and a["readout.weight"].shape == (4000 * 512 // 16000 + 1, 8)
    assert not torch.equal(a["readout.weight"], b["readout.weight"])
    assert main(_args(corpus, part, *spec, "--max-steps", "2")) == 0
    assert main(_args(corpus, part, *spec, "--resume", "latest")) == 0
    for index in (0, 2):
        x, y = _ckpt_tensors(full, 4, index), _ckpt_tensors(part, 4, index)
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=0, atol=1e-6, msg=f"model {index} {k}")
    assert main(_args(corpus, tmp_path / "bad", *spec, "--set", "vae.spec_max_hz=9000")) == 2  # > Nyquist


PCA = ["--set", "vae.model.enc_frontend=stft", "--set", "vae.model.enc_stft_fft=320", "--set", "vae.model.enc_dim=16",
       "--set", "vae.model.enc_blocks=1", "--set", "vae.model.dec_phase=advance", "--set", "vae.model.spectral_skip=true",
       "--set", "vae.pca_init=true", "--set", "vae.pca_items=3", "--set", "vae.pca_seconds=1.0"]


def test_pca_init_fits_the_fixed_path_which_stays_fixed_and_resumes(corpus, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_args(corpus, full, *PCA)) == 0
    vae, _ = load_component(full / "export" / "vae")
    assert vae.cfg.spectral_skip and vae.encoder.pca_w.abs().sum() > 0 and vae.decoder.skip_w.abs().sum() > 0
    a, b = _ckpt_tensors(full, 2, 0), _ckpt_tensors(full, 4, 0)
    for k in ("encoder.pca_w", "encoder.pca_b", "decoder.skip_w", "decoder.skip_b"):
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], vae.state_dict()[k].to(a[k].dtype)), k  # fixed
    assert any(not torch.equal(a[k], b[k]) for k in a if "pca" not in k and "skip" not in k)  # the rest learns
    assert main(_args(corpus, part, *PCA, "--max-steps", "2")) == 0
    assert main(_args(corpus, part, *PCA, "--resume", "latest")) == 0
    x, y = _ckpt_tensors(full, 4, 0), _ckpt_tensors(part, 4, 0)
    for k in x:
        torch.testing.assert_close(y[k], x[k], rtol=0, atol=1e-6, msg=k)
    assert main(_args(corpus, tmp_path / "bad", "--set", "vae.pca_init=true")) == 2  # needs spectral_skip


def test_decoder_finetune_keeps_encoder_and_latent_scale(full_run, corpus, tmp_path):
    init = full_run / "export" / "vae"
    out = tmp_path / "dec"
    assert main(_args(corpus, out, "--max-steps", "2", "--set", f"vae.init={init}",
                      "--set", "vae.freeze_encoder=true")) == 0
    before, _ = load_component(init)
    after, meta = load_component(out / "export" / "vae")
    assert after.cfg.latent_scale == before.cfg.latent_scale  # cached latents stay valid
    enc_a, enc_b = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)
    dec_a, dec_b = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_a[k], dec_b[k]) for k in dec_a)
    assert meta["step"] == 2
    assert main(_args(corpus, tmp_path / "bad", "--set", "vae.freeze_encoder=true")) == 2  # needs init

    # A new, wider decoder for the same latents: the encoder and latent_scale are init's.
    wide = tmp_path / "wide"
    assert main(_args(corpus, wide, "--max-steps", "1", "--set", f"vae.init={init}", "--set", "vae.freeze_encoder=true",
                      "--set", "vae.reinit_decoder=true", "--set", "vae.model.dec_dim=48")) == 0
    new, _ = load_component(wide / "export" / "vae")
    assert new.cfg.dec_dim == 48 and new.cfg.latent_scale == before.cfg.latent_scale
    assert all(torch.equal(enc_a[k], new.encoder.state_dict()[k]) for k in enc_a)
    # without reinit_decoder a different decoder is an error naming the field
    assert main(_args(corpus, tmp_path / "bad2", "--set", f"vae.init={init}", "--set", "vae.freeze_encoder=true",
                      "--set", "vae.model.dec_dim=48")) == 2


def test_decoder_finetune_with_pitch_bands(full_run, corpus, tmp_path):
    init = full_run / "export" / "vae"
    out = tmp_path / "pitch"
    fine = ("--set", f"vae.init={init}", "--set", "vae.freeze_encoder=true", "--set", "vae.pitch_weight=15")
    # 16 kHz crops of 0.5 s (8000 samples): the 16384 window is skipped, the 4096 one is used
    assert main(_args(corpus, out, "--max-steps", "2", *fine, "--set", "vae.pitch_fft_sizes=[16384, 4096]",
                      "--set", "vae.pitch_midi=[36, 96]")) == 0
    lines = read_metrics(out)
    assert all(math.isfinite(m["pitch"]) and m["pitch"] > 0 for m in lines)
    ev = read_eval(out)[-1]
    assert 0 < ev["eval/tonal_ratio"] < 2 and -1 <= ev["eval/chroma"] <= 1
    # resumable like every term: the same run resumes to a third step
    assert main(_args(corpus, out, "--max-steps", "3", "--resume", "latest", *fine,
                      "--set", "vae.pitch_fft_sizes=[16384, 4096]", "--set", "vae.pitch_midi=[36, 96]")) == 0
    assert read_metrics(out)[-1]["step"] == 3
    # Errors name the setting: every window longer than a crop; a band above Nyquist; a bad range
    assert main(_args(corpus, tmp_path / "b1", *fine, "--set", "vae.pitch_fft_sizes=[16384]")) == 2
    assert main(_args(corpus, tmp_path / "b2", *fine, "--set", "vae.pitch_fft_sizes=[4096]",
                      "--set", "vae.pitch_midi=[36, 120]")) == 2
    assert main(_args(corpus, tmp_path / "b3", *fine, "--set", "vae.pitch_midi=[60, 40]")) == 2


def test_nan_guard_and_config_errors(corpus, tmp_path):
    out = tmp_path / "nan"
    rc = main(_args(corpus, out, "--max-steps", "3", "--set", "vae.loop.debug_nan_at_step=1"))
    assert rc == EXIT_NONFINITE
    assert not (out / "export").exists()
    assert main(_args(corpus, tmp_path / "bad", "--set", "vae.kl_weight=-1")) == 2
    assert main(_args(corpus, tmp_path / "bad2", "--set", "vae.disc.bands=[[0.5, 0.2]]")) == 2


def test_warmup_decay_schedule():
    f = WarmupDecay(4, 0.5)
    assert [f(s) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.25]
    assert WarmupDecay(0)(10) == 1.0


def _bursts(sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Decaying noise bursts and tone notes at random onsets: a strong temporal envelope whose
    waveform never repeats (so it cannot be memorised, only encoded)."""
    n = int(sr * seconds)
    y = np.zeros(n, np.float32)
    t = np.arange(int(0.15 * sr)) / sr
    for onset in np.sort(rng.uniform(0, seconds - 0.15, int(seconds * 5))):
        s = int(onset * sr)
        env = np.exp(-t * rng.uniform(15, 40))
        if rng.random() < 0.5:
            burst = rng.standard_normal(len(t))
        else:
            burst = np.sin(2 * np.pi * rng.uniform(150, 1500) * t + rng.uniform(0, 2 * np.pi))
        y[s: s + len(t)] += (rng.uniform(0.3, 1.0) * env * burst).astype(np.float32)
    return 0.5 * y / np.abs(y).max()


def _envelope_corr(x: torch.Tensor, y: torch.Tensor, frame: int = 160) -> float:
    """Pearson correlation of the frame-RMS envelopes of two (..., N) signals."""
    n = x.shape[-1] // frame * frame
    ex = x[..., :n].reshape(-1, frame).pow(2).mean(-1).sqrt()
    ey = y[..., :n].reshape(-1, frame).pow(2).mean(-1).sqrt()
    return float(torch.corrcoef(torch.stack([ex, ey]))[0, 1])


def _train_on_bursts(root: Path, out: Path, *extra: str) -> float:
    """Short reconstruction-only run (posterior sampling, KL, warm-up: the stage as it runs; fp32,
    as the accelerate state is per process and bf16 made no difference) on fresh random crops of
    burst audio; returns the envelope correlation of held-out reconstructions through the
    exported VAE's posterior mean."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(6):
        sf.write(root / f"b{i}.wav", _bursts(16000, 4.0, rng), 16000)
        recs.append({"path": f"b{i}.wav", "caption": f"bursts {i}", "bpm": 120.0,
                     "split": "heldout" if i == 5 else "train"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    args = _args(root, out, "--max-steps", "120", "--set", "vae.loop.lr=1e-3", "--set", "vae.loop.batch_size=4",
                 "--set", "vae.loop.warmup_steps=20", "--set", "vae.loop.mixed_precision=no",
                 "--set", "vae.loop.checkpoint_every=1000", "--set", "vae.loop.log_every=40",
                 "--set", "vae.gan_start_step=100000", "--set", "vae.adv_weight=0", "--set", "vae.fm_weight=0",
                 "--set", "vae.kl_weight=0.002", "--set", "vae.eval_every=0", *extra)
    assert main(args) == 0
    vae, _ = load_component(out / "export" / "vae")
    clips = load_clips(root, "heldout", 2.0, 16000, 320, 1, -20.0)
    with torch.no_grad():
        recon = vae.decode(vae.encode(clips)[0])[..., : clips.shape[-1]]
    return _envelope_corr(clips, recon)


@pytest.mark.slow
def test_reconstruction_follows_envelope(tmp_path):
    # Regression: the VAE once learned only a stationary "average spectrum" buzz, independent of
    # the input, because its encoder saw -20 dBFS audio in its near-linear regime (see
    # VAEConfig.enc_input_gain). Overfitting one fixed clip still worked, so it went unnoticed.
    corr = _train_on_bursts(tmp_path / "bursts", tmp_path / "run")
    assert corr > 0.5, f"reconstruction envelope does not follow the input (corr {corr:.3f})"

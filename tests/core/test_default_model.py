"""The embedded default model in assets/presto-default: size budget, integrity, defaults, and that it
makes audio offline through the same entry points the app and the command line use."""

import json
from pathlib import Path

import numpy as np
import pytest

from presto_core.generate import DEFAULT_MODEL
from presto_core.pipeline import PrestoPipeline

ASSETS = DEFAULT_MODEL.parent
MB = 1024 * 1024


def _model_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.safetensors") if p.is_file()]


def test_size_budget():
    files = _model_files(ASSETS)
    assert files, f"no model weights under {ASSETS}"
    assert max(p.stat().st_size for p in files) < 50 * MB  # every model under 50 MB
    assert sum(p.stat().st_size for p in files) < 100 * MB  # all models in assets/ together


def test_index_defaults_and_prompts():
    index = json.loads((DEFAULT_MODEL / "model_index.json").read_text())
    assert set(index["components"]) >= {"vae", "base", "clap"}
    assert "base" in index["variants"]
    assert {"presto-l", "presto-s", "presto-ls", "ase"} <= set(index["variants"])
    assert index["variants"]["ase"]["drop_schedule"] == index["variants"]["presto-l"]["drop_schedule"]
    assert index["default_variant"] == "presto-ls"  # the app and CLI default to Presto-LS at 4 steps
    spec = index["variants"]["presto-ls"]
    assert spec["sampler"] == "pingpong" and spec["steps"] == 4
    prompts = json.loads((DEFAULT_MODEL / index["prompts"]).read_text())
    assert len(prompts) >= 8 and all(p["prompt"] and 40 <= p["bpm"] <= 240 for p in prompts)


@pytest.fixture(scope="module")
def pipe():
    return PrestoPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")  # verifies every SHA-256


def test_default_variant_generates_music_shaped_audio(pipe):
    res = pipe.generate(prompt="upbeat disco groove with funky bass", bpm=120, duration=3, seed=0)
    audio = res.clips[0].audio
    assert pipe.has_stereo and res.settings["stereo"] is True  # the default ships its m2s component
    assert audio.dtype == np.float32 and audio.shape == (2, 3 * pipe.sample_rate)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    rms_db = 20 * np.log10(np.sqrt(np.mean(audio ** 2)) + 1e-12)
    assert -45 < rms_db < 0, rms_db  # neither silence nor clipping noise
    assert res.clips[0].clap_score is not None and np.isfinite(res.clips[0].clap_score)
    again = pipe.generate(prompt="upbeat disco groove with funky bass", bpm=120, duration=3, seed=0)
    np.testing.assert_array_equal(again.clips[0].audio, audio)  # a seed reproduces a clip


def test_default_vae_keeps_the_notes_of_a_melody(pipe):
    # The first embedded VAE rendered rhythm but no pitch: its reconstruction of this melody had
    # chroma correlation -0.002 with the input. The PCA spectral path (train/autoencoder/pca.py) keeps notes.
    import torch

    from train.evaluation.pitch import chroma_correlation

    sr = pipe.vae.cfg.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(int(0.25 * sr)) / sr
    notes = [sum(0.2 / k * np.sin(2 * np.pi * k * 440.0 * 2 ** ((m - 69) / 12) * t) for k in (1, 2, 3)) * np.exp(-3 * t)
             for m in rng.integers(55, 80, 16)]
    x = np.concatenate(notes).astype(np.float32)
    x = x / np.sqrt(np.mean(x ** 2)) * 0.1  # -20 dBFS, as in training
    with torch.no_grad():
        y = pipe.vae.decode(pipe.vae.encode(torch.from_numpy(x)[None, None].to(pipe.device))[0])
    assert chroma_correlation(y[0, 0, : len(x)].float().cpu().numpy(), x, sr) > 0.6

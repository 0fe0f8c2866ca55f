"""PrestoPipeline and the command line on a micro random-weight model folder: shapes, seeding,
rejection sampling, variants, variations, validation. (Plumbing only; trained behaviour is
measured by the training issue's evaluation, not here.)"""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from presto_core.audio import read_wav_settings
from presto_core.errors import PrestoError
from presto_core.generate import main as cli_main
from presto_core.pipeline import PrestoPipeline
from tests.factory import make_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), variants=("base", "presto-l", "presto-s", "presto-ls"))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return PrestoPipeline.from_pretrained(model_dir, device="cpu", precision="fp32")


def test_loads_all_variants(pipe):
    assert pipe.variant_names == ["base", "presto-l", "presto-s", "presto-ls"]
    assert pipe.default_variant == "base"
    assert pipe.sample_rate == 16000
    assert pipe.prompts and pipe.clap is not None


@pytest.mark.parametrize("variant", ["base", "presto-l", "presto-s", "presto-ls"])
def test_generate_shapes_and_settings(pipe, variant):
    calls = []
    res = pipe.generate(prompt="funky bass groove", bpm=100, duration=1.3, num_clips=2, seed=3,
                        variant=variant, progress=lambda stage, i, n: calls.append((stage, i, n)))
    assert len(res.clips) == 2
    for c in res.clips:
        assert c.audio.dtype == np.float32 and c.audio.shape == (round(1.3 * 16000),)
        assert np.isfinite(c.audio).all() and np.abs(c.audio).max() <= 1.0
        assert -1.0 <= c.clap_score <= 1.0
    s = res.settings
    assert (s["seed"], s["variant"], s["bpm"], s["candidates"]) == (3, variant, 100.0, 2)
    steps = pipe.variants[variant][0].steps
    assert s["steps"] == steps
    assert [i for st, i, n in calls if st == "generation"] == list(range(1, steps + 1))
    assert set(res.timings) == {"text", "generation", "decoding", "clap", "loop", "stereo", "total"}
    assert res.rtf > 0


def test_seed_reproduces_and_differs(pipe):
    a = pipe.generate(prompt="calm piano", duration=1.0, seed=11, variant="presto-ls")
    b = pipe.generate(prompt="calm piano", duration=1.0, seed=11, variant="presto-ls")
    c = pipe.generate(prompt="calm piano", duration=1.0, seed=12, variant="presto-ls")
    assert np.array_equal(a.clips[0].audio, b.clips[0].audio)
    assert not np.allclose(a.clips[0].audio, c.clips[0].audio)
    d = pipe.generate(prompt="calm piano", duration=1.0, variant="presto-ls")
    assert isinstance(d.settings["seed"], int)


def test_rejection_keeps_the_best_candidates(pipe):
    kw = dict(prompt="techno kick", duration=1.0, seed=5, variant="presto-s")
    everything = pipe.generate(num_clips=4, reject_ratio=0.0, **kw)  # same 4 candidates, no rejection
    kept = pipe.generate(num_clips=2, reject_ratio=0.5, **kw)
    assert kept.settings["candidates"] == 4
    all_scores = sorted((c.clap_score for c in everything.clips), reverse=True)
    assert [c.clap_score for c in kept.clips] == pytest.approx(all_scores[:2], abs=1e-5)
    best = max(everything.clips, key=lambda c: c.clap_score)
    assert np.array_equal(kept.clips[0].audio, best.audio)


def test_rho_changes_the_schedule_not_the_noise(pipe):
    # With n steps the Karras ramp pins sigma_max and sigma_min, so rho moves the n - 2 interior levels.
    kw = dict(prompt="ambient", duration=1.0, seed=1, variant="presto-ls", steps=4)
    a = pipe.generate(rho=7, **kw).clips[0].audio
    b = pipe.generate(rho=1000, **kw).clips[0].audio
    assert not np.allclose(a, b)


def test_variation_strength_controls_distance_to_init(pipe):
    sr = pipe.sample_rate
    t = np.arange(sr) / sr
    init = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with torch.no_grad():
        ref = pipe.vae.decode_latents(pipe.vae.encode_latents(torch.from_numpy(init).view(1, 1, -1)))[0, 0].numpy()
    dist = {}
    for strength in (0.05, 1.0):
        out = pipe.generate(prompt="a tone", duration=1.0, seed=2, variant="presto-s", init_audio=init,
                            init_sr=sr, strength=strength)
        dist[strength] = float(np.mean((out.clips[0].audio - np.clip(ref, -1, 1)) ** 2))
        assert out.settings["variation"] is True
    assert dist[0.05] < 0.1 * dist[1.0]


def test_drop_schedule_override(pipe):
    kw = dict(prompt="house", duration=1.0, seed=4, variant="presto-l")
    a = pipe.generate(**kw).clips[0].audio
    b = pipe.generate(drop_schedule=(0, 0, 0, 0, 0), **kw).clips[0].audio
    assert not np.allclose(a, b)
    with pytest.raises(PrestoError, match="layer-budget"):
        pipe.generate(prompt="x", duration=1.0, variant="base", drop_schedule=(0, 0, 0, 0, 0))
    with pytest.raises(PrestoError, match=r"\[0, 27\]"):
        pipe.generate(prompt="x", duration=1.0, variant="presto-l", drop_schedule=(30, 0, 0, 0, 0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=""), "prompt"),
    (dict(prompt="x" * 501), "500"),
    (dict(bpm=0), r"bpm .*\[40, 240\]"),
    (dict(bpm=float("nan")), "bpm"),
    (dict(duration=40), r"\[1, 32\]"),
    (dict(steps=0), r"steps .*\[1, 100\]"),
    (dict(steps=2.5), "integer"),
    (dict(rho=5000), r"rho .*\[1, 1000\]"),
    (dict(rho=0.5), "rho"),
    (dict(reject_ratio=0.95), r"\[0, 0.9\]"),
    (dict(num_clips=9), r"\[1, 8\]"),
    (dict(num_clips=8, reject_ratio=0.9), "at most 32 candidates"),
    (dict(seed=-1), "seed"),
    (dict(variant="nope"), "variant must be one of"),
    (dict(variant=["base"]), r"variant must be one of .* got \['base'\]"),
    (dict(prompt="piano \ud800 chords"), "invalid character at position 6 .*lone UTF-16 surrogate"),
    (dict(prompt="🎹" * 501), "500 characters"),
    (dict(stereo="yes"), "stereo must be true, false or unset"),
    (dict(guidance=2.0), r"guidance .*\[0, 1\]"),
    (dict(variant="presto-s", guidance=0.5), "takes no guidance"),
    (dict(init_audio=np.zeros(0), init_sr=16000), "init audio"),
    (dict(init_audio=np.zeros(100), init_sr=100), "sample rate"),
    (dict(strength=0), "strength"),
])
def test_bad_input_names_the_range(pipe, kwargs, match):
    kw = dict(prompt="ok", duration=1.0)
    kw.update(kwargs)
    with pytest.raises(PrestoError, match=match):
        pipe.generate(**kw)


def test_clipless_model_refuses_rejection(tmp_path):
    pipe = PrestoPipeline.from_pretrained(make_model_folder(tmp_path, variants=("presto-s",), with_clap=False),
                                          device="cpu", precision="fp32")
    assert pipe.clap is None
    res = pipe.generate(prompt="x", duration=1.0, num_clips=2)
    assert [c.clap_score for c in res.clips] == [None, None]
    with pytest.raises(PrestoError, match="CLAP"):
        pipe.generate(prompt="x", duration=1.0, reject_ratio=0.5)


def test_bad_model_paths(tmp_path):
    with pytest.raises(PrestoError, match="not a Presto model folder"):
        PrestoPipeline.from_pretrained(tmp_path)
    with pytest.raises(PrestoError, match="device"):
        PrestoPipeline.from_pretrained(tmp_path, device="tpu9")


def test_cli_writes_wavs_with_settings(model_dir, tmp_path, capsys):
    out = tmp_path / "clip.wav"
    rc = cli_main(["--prompt", "lofi beat", "--bpm", "84", "--duration", "1.5", "--seed", "9",
                   "--num-clips", "2", "--reject-ratio", "0.5", "--variant", "presto-ls",
                   "--model", str(model_dir), "--precision", "fp32", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "seed=9" in printed and "rtf=" in printed
    for name in ("clip_1.wav", "clip_2.wav"):
        audio, sr = sf.read(tmp_path / name)
        assert sr == 16000 and len(audio) == math.floor(1.5 * 16000)
        s = read_wav_settings(tmp_path / name)
        assert s["seed"] == 9 and s["bpm"] == 84 and s["variant"] == "presto-ls" and s["candidates"] == 4


def test_cli_bad_input_is_one_line(model_dir, tmp_path, capsys):
    rc = cli_main(["--prompt", "x", "--rho", "0", "--model", str(model_dir), "--out", str(tmp_path / "a.wav")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rho" in err[0] and "[1, 1000]" in err[0]
    rc = cli_main(["--prompt", "x", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "a.wav")])
    assert rc == 2


def test_read_wav_settings_on_non_audio(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(PrestoError, match="not a readable audio file"):
        read_wav_settings(bad)


def test_schedule_starts_lower_for_variations(pipe):
    from presto_core.edm import karras_ramp
    from presto_core.request import GenerationRequest

    req = GenerationRequest(prompt="x", duration=1.0, variant="presto-ls", steps=4).validated(pipe)
    full = pipe.schedule(req)
    assert full.shape == (5,) and full[0] == 80.0 and full[3] == pytest.approx(0.002) and full[4] == 0
    var = GenerationRequest(prompt="x", duration=1.0, variant="presto-ls", steps=4, strength=0.5,
                            init_audio=np.full(16000, 0.1, np.float32), init_sr=16000).validated(pipe)
    part = pipe.schedule(var)
    assert part[0] == pytest.approx(float(karras_ramp(torch.tensor(0.5, dtype=torch.float64), 0.002, 80.0, 7.0)))
    assert part[0] < 80.0 and part[3] == pytest.approx(0.002) and part[4] == 0


@pytest.mark.parametrize("variant, kw", [
    ("base", {}),
    ("presto-l", {}),
    ("presto-l", dict(drop_schedule=(0, 0, 0, 0, 0))),
    ("presto-s", {}),
    ("presto-ls", dict(steps=3)),
])
def test_cost_matches_what_generate_runs(pipe, variant, kw):
    """PrestoPipeline.cost counts the DiT forwards and the blocks they run exactly as generate does."""
    from presto_core.request import GenerationRequest

    req = GenerationRequest(prompt="x", duration=1.0, variant=variant, num_clips=2, seed=0, **kw).validated(pipe)
    cost = pipe.cost(req)
    dit = pipe.variants[variant][1].backbone
    calls, blocks = [0], [0]
    hooks = [dit.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))]
    hooks += [b.register_forward_hook(lambda *a: blocks.__setitem__(0, blocks[0] + 1)) for b in dit.blocks]
    try:
        pipe.generate(req)
    finally:
        for h in hooks:
            h.remove()
    assert cost.calls == calls[0]
    assert cost.active_fraction == pytest.approx(blocks[0] / (calls[0] * dit.cfg.depth))
    dropping = bool(req.drop_schedule or pipe.variant_spec(variant).drop_schedule) and req.drop_schedule != (0,) * 5
    assert (cost.active_fraction < 1.0) == dropping
    frames = math.ceil(16000 / 320)
    assert (cost.candidates, cost.frames, cost.decoded_frames, cost.clap_seconds) == (2, frames, 2 * frames, 2.0)
    assert cost.dit_gflop > 0


def test_cost_grows_with_steps_candidates_and_guidance(pipe):
    from presto_core.request import GenerationRequest

    def cost(**kw):
        return pipe.cost(GenerationRequest(prompt="x", duration=1.0, **kw).validated(pipe))

    one = cost(variant="base", steps=2)
    assert one.calls == 3  # DPM-Solver++(2S): 2 calls on the first step, 1 on the final step to 0
    assert cost(variant="base", steps=4).dit_gflop > one.dit_gflop
    assert cost(variant="base", steps=2, num_clips=2).dit_gflop == pytest.approx(2 * one.dit_gflop)
    s = cost(variant="presto-s", steps=3)  # no guidance: half the batch of a guided model per call
    assert s.calls == 3 and s.dit_gflop == pytest.approx(one.dit_gflop / 2)


def test_validated_request_is_not_validated_again(pipe, monkeypatch):
    from presto_core.request import GenerationRequest, ValidatedRequest

    req = GenerationRequest(prompt=" x ", duration=1.0, variant="presto-ls", num_clips=2, reject_ratio=0.5,
                            seed=4).validated(pipe)
    assert isinstance(req, ValidatedRequest) and req.prompt == "x" and req.steps == 2 and req.candidates == 4

    def fail(self, pipe):
        raise AssertionError("validated twice")

    monkeypatch.setattr(GenerationRequest, "validated", fail)
    res = pipe.generate(req)
    assert res.settings["candidates"] == 4 and "validated" not in str(res.settings)
    assert list(res.settings)[-3:] == ["candidates", "model", "sampler"]  # same settings keys as before
    with pytest.raises(AssertionError, match="validated twice"):
        pipe.generate(prompt="x", duration=1.0)  # keyword callers are validated by generate

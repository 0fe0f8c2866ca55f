"""Extend, replace bars and loops (presto_core.editing / inpaint) on micro model folders: the
maths of the masked denoiser and the splice, and each edit end to end with its guarantees
(samples outside an edit unchanged, the mid of stereo output equal to the mono output, windows
that march past the model's maximum duration, reproducible seeds, clear errors)."""

import numpy as np
import pytest
import torch

from presto_core.editing import channels_first, source_hash, widen_long, widen_loop
from presto_core.errors import PrestoError
from presto_core.inpaint import fade_curve, masked_denoiser, soft_keep, splice
from presto_core.pipeline import PrestoPipeline
from presto_core.samplers import SAMPLERS, Denoised
from tests.factory import make_model_folder

SR = 16000
BPM = 120.0  # one 4/4 bar = 2 s = 32000 samples at 16 kHz
BAR = 32000


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """Micro model with an 8 s window (so that edits need several windows) and stereo."""
    folder = make_model_folder(tmp_path_factory.mktemp("edit") / "m", variants=("base", "presto-ls"),
                               with_m2s=True, max_duration=8.0)
    return PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")


def _tone(seconds: float, stereo: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    mono = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    if not stereo:
        return mono
    return np.stack([mono * 1.1, mono * 0.9]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Maths


def test_masked_denoiser_fixes_kept_frames_only():
    z = torch.randn(1, 3, 10, generator=torch.Generator().manual_seed(0))
    keep = torch.zeros(10, dtype=torch.bool)
    keep[:4] = True
    x = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(1))
    plain = masked_denoiser(lambda x, s: 0.5 * x, z, keep)(x, torch.tensor(1.0))
    assert torch.equal(plain[:, :, :4], z.expand(2, -1, -1)[:, :, :4])
    assert torch.equal(plain[:, :, 4:], 0.5 * x[:, :, 4:])
    pair = masked_denoiser(lambda x, s: Denoised(0.5 * x, 0.25 * x), z, keep)(x, torch.tensor(1.0))
    assert torch.equal(pair.x0[:, :, :4], z.expand(2, -1, -1)[:, :, :4])
    assert torch.equal(pair.x0_renoise[:, :, :4], z.expand(2, -1, -1)[:, :, :4])
    assert torch.equal(pair.x0_renoise[:, :, 4:], 0.25 * x[:, :, 4:])


def test_soft_keep_ramps_inside_the_span_only():
    k = soft_keep(40, 10, 30, ramp=4)
    assert torch.equal(k[:10], torch.ones(10)) and torch.equal(k[30:], torch.ones(10))  # outside: kept exactly
    assert torch.equal(k[14:26], torch.zeros(12))  # the middle: regenerated
    left, right = k[10:14], k[26:30]
    assert (left < 1).all() and (left > 0).all() and (left.diff() < 0).all()  # falls from 1 ...
    torch.testing.assert_close(right, left.flip(0))  # ... and rises back, mirrored
    torch.testing.assert_close(left, torch.from_numpy(1 - fade_curve(5)[1:]))
    assert torch.equal(soft_keep(40, 10, 40, ramp=4, right=False)[36:], torch.zeros(4))  # an extension's end
    assert torch.equal(soft_keep(40, 10, 16, ramp=4)[12:14], torch.zeros(2))  # a short span: ramps of 2
    hard = soft_keep(40, 10, 30, ramp=0)
    assert torch.equal(hard, (~((torch.arange(40) >= 10) & (torch.arange(40) < 30))).float())


def test_soft_masked_denoiser_blends_by_weight():
    z = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    w = torch.tensor([1.0, 1.0, 0.75, 0.25, 0.0, 0.0, 0.5, 1.0])
    out = masked_denoiser(lambda x, s: 0.5 * x, z, w)(x, torch.tensor(1.0))
    torch.testing.assert_close(out, w * z + (1 - w) * 0.5 * x)
    hard = w == 1
    assert torch.equal(out[..., hard], z.expand(2, -1, -1)[..., hard])  # weight 1 is exact
    assert torch.equal(out[..., w == 0], 0.5 * x[..., w == 0])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_ends_on_the_known_latents(name):
    """The final state of every sampler is its last data estimate, so kept frames come out as the
    known latents exactly (float64) and the rest as the model's."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 2, 12, generator=g, dtype=torch.float64)
    keep = torch.arange(12) % 3 == 0
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.0], dtype=torch.float64)
    x = 10.0 * torch.randn(1, 2, 12, generator=g, dtype=torch.float64)
    out = SAMPLERS[name](masked_denoiser(lambda x, s: x / (1 + s ** 2), z, keep), x, sigmas,
                         generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[..., keep], z[..., keep])
    assert not torch.allclose(out[..., ~keep], z[..., ~keep])


def test_fade_curve_sums_to_one_and_splice_keeps_the_outside():
    f = fade_curve(64)
    assert f[0] < 0.01 and f[-1] > 0.99 and np.all(np.diff(f) > 0)
    np.testing.assert_allclose(f + f[::-1], 1.0, atol=1e-6)
    a, b = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    out = splice(a, b, 400, 600, 50)
    assert np.array_equal(out[:350], a[:350]) and np.array_equal(out[650:], a[650:])
    assert np.array_equal(out[400:600], b[400:600])
    same = splice(a, a.copy(), 400, 600, 50)  # a fade between identical signals is the signal
    np.testing.assert_allclose(same, a, atol=1e-6)
    edge = splice(a, b, 10, 995, 50)  # fades cut at the ends of the audio
    assert edge.shape == a.shape and np.array_equal(edge[10:995], b[10:995])


def test_channels_first_and_hash():
    mono = _tone(1.0)
    st = _tone(1.0, stereo=True)
    assert channels_first(mono).shape == (1, SR)
    assert channels_first(st.T).shape == (2, SR) and np.array_equal(channels_first(st.T), st)
    assert source_hash(st, SR) == source_hash(st.T.T.copy(), SR)
    changed = st.copy()
    changed[1, 5] += 1e-4
    assert source_hash(changed, SR) != source_hash(st, SR) != source_hash(st, 22050)
    with pytest.raises(PrestoError, match="mono or stereo"):
        channels_first(np.zeros((3, 100), np.float32))
    with pytest.raises(PrestoError, match="finite"):
        channels_first(np.array([0.0, np.nan], np.float32))


def test_widen_long_keeps_the_mid_and_matches_one_call(pipe, monkeypatch):
    mono = _tone(6.0)
    one = pipe.widen(torch.from_numpy(mono)[None])[0].numpy()
    np.testing.assert_allclose(widen_long(pipe, mono), one, atol=1e-6)
    import presto_core.editing as E
    monkeypatch.setattr(E, "WIDEN_CHUNK_S", 1.0)
    monkeypatch.setattr(E, "WIDEN_MARGIN_S", 0.5)
    chunked = widen_long(pipe, mono)
    np.testing.assert_allclose(chunked.mean(axis=0), mono, atol=1e-6)
    assert np.abs(chunked - one).max() < 0.05  # margins cover the micro model's context
    looped = widen_loop(pipe, mono)
    assert looped.shape == (2, mono.size)
    np.testing.assert_allclose(looped.mean(axis=0), mono, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Extend


@pytest.mark.parametrize("variant", ["presto-ls", "base"])
def test_extend_marches_windows_and_keeps_the_source(pipe, variant):
    src = _tone(3.0)  # one complete bar and half of the next
    calls = []
    res = pipe.extend(src, SR, bars=5, prompt="warm pads", bpm=BPM, seed=4, variant=variant, stereo=False,
                      context_seconds=2.0, progress=lambda s, i, n: calls.append((s, i, n)))
    out = res.clips[0].audio
    assert out.shape == (6 * BAR,) and out.dtype == np.float32 and np.isfinite(out).all()
    fade = int(round(0.03 * SR))
    keep = BAR - SR // 2 - fade  # up to half a second and a fade before the join
    assert np.array_equal(out[:keep], src[:keep]) and not np.array_equal(out[:keep + fade], src[:keep + fade])
    assert not np.allclose(out[BAR:2 * BAR], src[BAR:2 * BAR] if src.size >= 2 * BAR else 0)
    assert len(res.windows) == 5  # 10 s of new audio, one 2 s bar per 8 s window (1 bar of context, 3 s guard)
    assert [w["join_s"] for w in res.windows] == sorted(w["join_s"] for w in res.windows)
    assert res.windows[0]["join_s"] == pytest.approx(2.0) and res.windows[-1]["end_s"] == pytest.approx(12.0)
    assert all(w["end_s"] - w["start_s"] <= 8.0 - 3.0 + 1e-6 for w in res.windows)
    assert all(-1 <= w["clap"] <= 1 for w in res.windows)
    assert [i for s, i, n in calls if s == "window"] == list(range(len(res.windows)))
    s = res.settings
    assert (s["edit"], s["bars_added"], s["seed"], s["variant"], s["duration"]) == ("extend", 5, 4, variant, 12.0)
    assert s["source_sha256"] == source_hash(src[None], SR)
    assert res.changed == [(pytest.approx(keep / SR), pytest.approx(12.0))]
    again = pipe.extend(src, SR, bars=5, prompt="warm pads", bpm=BPM, seed=4, variant=variant, stereo=False,
                        context_seconds=2.0)
    assert np.array_equal(again.clips[0].audio, out)


def test_extend_stereo_source_keeps_its_channels_and_the_mid(pipe):
    src = _tone(4.0, stereo=True)
    res = pipe.extend(src.T, SR, bars=2, prompt="warm pads", bpm=BPM, seed=1)  # (N, 2) as soundfile reads
    out = res.clips[0].audio
    assert out.shape == (2, 4 * BAR)
    fade = int(round(0.03 * SR))
    keep = 2 * BAR - SR // 2 - fade
    assert np.array_equal(out[:, :keep], src[:, :keep])
    mono = pipe.extend(src, SR, bars=2, prompt="warm pads", bpm=BPM, seed=1, stereo=False).clips[0].audio
    np.testing.assert_allclose(out.mean(axis=0), mono, atol=1e-6)


def test_extend_resamples_and_mono_to_stereo_on_request(pipe):
    src = _tone(2.0)
    res = pipe.extend(src[::2].copy(), SR // 2, bars=1, prompt="x", bpm=BPM, seed=0, stereo=True)
    assert res.clips[0].audio.shape == (2, 2 * BAR) and res.settings["source_sample_rate"] == SR // 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(bpm=None), "tempo is needed"),
    (dict(bars=0), r"bars to add .* must be an integer in \[1, 89\]"),
    (dict(bars=10_000), r"at most 180 s: 90 bars"),
    (dict(bpm=40.0, source=_tone(3.0)), "shorter than one bar"),
    (dict(time_signature="9/9"), "time signature"),
    (dict(crossfade_ms=900), "crossfade"),
    (dict(context_seconds=0.1), "context"),
    (dict(ramp_ms=-5), r"latent crossfade \(ms\) must be .*0.*1000"),
    (dict(source=np.zeros((200 * SR,), np.float32)), "at most 180 s can be edited"),
    (dict(variant="nope"), "model variant must be one of"),
])
def test_extend_refuses_bad_input(pipe, kwargs, message):
    args = dict(audio=_tone(2.0), sample_rate=SR, bars=2, prompt="x", bpm=BPM)
    if "source" in kwargs:
        args["audio"] = kwargs.pop("source")
    args.update(kwargs)
    with pytest.raises(PrestoError, match=message):
        pipe.extend(**args)


# ----------------------------------------------------------------------------------------------
# Replace bars


@pytest.mark.parametrize("stereo", [False, True])
def test_inpaint_changes_only_the_bars_and_their_fades(pipe, stereo):
    src = _tone(12.0, stereo=stereo)  # 6 bars: longer than one window
    res = pipe.inpaint(src, SR, bars=(3, 3), prompt="drums", bpm=BPM, seed=2)
    out = res.clips[0].audio
    assert out.shape == src.shape
    fade = int(round(0.03 * SR))
    lo, hi = 2 * BAR, 3 * BAR
    assert np.array_equal(out[..., :lo - fade], src[..., :lo - fade])
    assert np.array_equal(out[..., hi + fade:], src[..., hi + fade:])
    assert np.abs(out[..., lo:hi] - src[..., lo:hi]).mean() > 1e-3
    assert res.settings["replaced_bars"] == [3, 3] and res.settings["edit"] == "inpaint"
    assert res.settings["ramp_ms"] == 150.0
    hard = pipe.inpaint(src, SR, bars=(3, 3), prompt="drums", bpm=BPM, seed=2, ramp_ms=0).clips[0].audio
    assert np.array_equal(hard[..., :lo - fade], src[..., :lo - fade])  # the ramp lies inside the bars
    assert not np.array_equal(hard[..., lo:lo + BAR // 4], out[..., lo:lo + BAR // 4])
    if stereo:
        mono = pipe.inpaint(src, SR, bars=(3, 3), prompt="drums", bpm=BPM, seed=2, stereo=False).clips[0].audio
        np.testing.assert_allclose(out.mean(axis=0), mono, atol=1e-6)


@pytest.mark.parametrize("bars, message", [
    ((0, 1), r"1 <= a <= b <= 5"), ((2, 1), r"1 <= a <= b <= 5"), ((1, 6), r"1 <= a <= b <= 5"),
    ((1.5, 2), "two whole bar numbers"), (None, "two whole bar numbers"), ((1, 4), "at most 3 bars at a time"),
    ((1, float("inf")), "two whole bar numbers"), ((True, 2), "two whole bar numbers"), ((1, 2, 3), "two whole"),
])
def test_inpaint_refuses_bad_ranges(pipe, bars, message):
    with pytest.raises(PrestoError, match=message):
        pipe.inpaint(_tone(11.0), SR, bars=bars, prompt="x", bpm=BPM)


# ----------------------------------------------------------------------------------------------
# Loops


def test_generate_loop_is_whole_bars_and_rotation_consistent(pipe):
    res = pipe.generate(prompt="loop", bpm=BPM, duration=4.5, seed=3, loop=True, stereo=False, variant="presto-ls")
    out = res.clips[0].audio
    assert out.shape == (2 * BAR,)  # 2 whole bars of the 4.5 s asked
    assert res.settings["loop"] is True and res.settings["loop_bars"] == 2 and res.settings["duration"] == 4.0
    plain = pipe.generate(prompt="loop", bpm=BPM, duration=4.0, seed=3, stereo=False, variant="presto-ls")
    fade = int(round(0.03 * SR))
    # Only the audio around the end-to-start seam changes: the middle of the clip is the plain clip's.
    mid = slice(int(0.75 * BAR) + fade, int(1.25 * BAR) - fade)
    assert np.array_equal(out[mid], plain.clips[0].audio[mid])
    assert not np.array_equal(out, plain.clips[0].audio)
    st = pipe.generate(prompt="loop", bpm=BPM, duration=4.0, seed=3, loop=True, variant="presto-ls")
    assert st.clips[0].audio.shape == (2, 2 * BAR)
    np.testing.assert_allclose(st.clips[0].audio.mean(axis=0), out, atol=1e-6)


def test_loop_shorter_than_a_bar_is_refused(pipe):
    with pytest.raises(PrestoError, match="a loop needs at least one bar"):
        pipe.generate(prompt="x", bpm=60, duration=3.0, loop=True)
    with pytest.raises(PrestoError, match="loop must be true or false"):
        pipe.generate(prompt="x", duration=3.0, loop="yes")


# ----------------------------------------------------------------------------------------------
# Command line


def test_cli_extend_replace_and_loop(pipe, tmp_path, capsys):
    import soundfile as sf

    from presto_core.audio import read_wav_settings
    from presto_core.generate import main as cli_main

    model = ["--model", pipe.source, "--precision", "fp32", "--variant", "presto-ls"]
    first = tmp_path / "a.wav"
    assert cli_main(["--prompt", "pads", "--bpm", "120", "--duration", "4", "--seed", "1", "--loop", *model,
                     "--out", str(first)]) == 0
    assert read_wav_settings(first)["loop_bars"] == 2
    longer = tmp_path / "b.wav"
    # The tempo comes from the source's own settings.
    assert cli_main(["--prompt", "pads", "--source", str(first), "--extend-bars", "3", "--seed", "2", *model,
                     "--out", str(longer)]) == 0
    printed = capsys.readouterr().out
    assert "window 1:" in printed and "rtf=" in printed
    audio, sr = sf.read(longer, always_2d=True)
    s = read_wav_settings(longer)
    assert audio.shape == (5 * BAR, 2) and s["edit"] == "extend" and s["bpm"] == 120.0
    src, _ = sf.read(first, dtype="float32", always_2d=True)
    assert s["source_sha256"] == source_hash(src.T, SR)
    fixed = tmp_path / "c.wav"
    assert cli_main(["--prompt", "drums", "--source", str(longer), "--replace-bars", "2:3", *model,
                     "--out", str(fixed)]) == 0
    assert read_wav_settings(fixed)["replaced_bars"] == [2, 3]


@pytest.mark.parametrize("extra, message", [
    (["--replace-bars", "2"], "A:B"),
    ([], "exactly one of --extend-bars"),
    (["--extend-bars", "2", "--replace-bars", "1:1"], "exactly one of --extend-bars"),
])
def test_cli_edit_errors(pipe, tmp_path, capsys, extra, message):
    import soundfile as sf

    from presto_core.generate import main as cli_main

    src = tmp_path / "plain.wav"
    sf.write(src, _tone(4.0), SR)
    assert cli_main(["--prompt", "x", "--source", str(src), "--bpm", "120", *extra, "--model", pipe.source,
                     "--out", str(tmp_path / "o.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_plain_file_without_bpm_is_refused(pipe, tmp_path, capsys):
    import soundfile as sf

    from presto_core.generate import main as cli_main

    src = tmp_path / "plain.wav"
    sf.write(src, _tone(4.0), SR)
    assert cli_main(["--prompt", "x", "--source", str(src), "--extend-bars", "1", "--model", pipe.source,
                     "--out", str(tmp_path / "o.wav")]) == 2
    assert "tempo is needed" in capsys.readouterr().err
    assert cli_main(["--prompt", "x", "--extend-bars", "1", "--model", pipe.source,
                     "--out", str(tmp_path / "o.wav")]) == 2
    assert "give it with --source" in capsys.readouterr().err


def test_make_loop_of_any_clip(pipe):
    src = _tone(7.0, stereo=True)  # 3 complete bars
    res = pipe.make_loop(src, SR, prompt="x", bpm=BPM, seed=1)
    out = res.clips[0].audio
    assert out.shape == (2, 3 * BAR) and res.settings["loop_bars"] == 3 and res.settings["edit"] == "loop"
    (a0, a1), (b0, b1) = res.changed
    assert a0 == 0.0 and b1 == pytest.approx(6.0) and a1 < b0
    keep = slice(int(a1 * SR) + 1, int(b0 * SR) - 1)
    # Outside the seam's bars the mid is the clip's own (widened again, so the sides may differ).
    np.testing.assert_allclose(out.mean(axis=0)[keep], src.mean(axis=0)[keep], atol=1e-6)
    two = pipe.make_loop(src, SR, prompt="x", bpm=BPM, bars=2, seed=1, stereo=False)
    assert two.clips[0].audio.shape == (2 * BAR,)
    with pytest.raises(PrestoError, match=r"loop bars .* must be an integer in \[1, 3\]"):
        pipe.make_loop(src, SR, prompt="x", bpm=BPM, bars=4)


def test_a_clip_of_whole_bars_rounded_down_to_samples_still_holds_them(pipe):
    from presto_core.music import loop_on_bars

    n = round(4 * 60 / 115 * SR)  # one bar at 115 BPM is 33391.3 samples: rounded down
    clip = _tone(n / SR)[:n]
    assert pipe.make_loop(clip, SR, prompt="x", bpm=115, bars=1, seed=0, stereo=False).settings["loop_bars"] == 1
    assert loop_on_bars(clip, SR, 115, "4/4", 1, 10.0)[1] == 1


def test_tiled_latents_repeat_the_last_frames_on_a_fractional_period():
    from presto_core.editing import tiled_latents

    z = torch.arange(10, dtype=torch.float32).view(1, 1, 10)
    out = tiled_latents(z, 2.5, 6)
    # period 2.5 frames: floor(7.5 + k mod 2.5) for k = 0..5
    assert out.flatten().tolist() == [7.0, 8.0, 9.0, 8.0, 9.0, 7.0]  # frame 10.5 is frame 8 again
    assert tiled_latents(z, 40.0, 3).flatten().tolist() == [0.0, 1.0, 2.0]  # at most the whole context


def test_decoding_from_an_even_frame_matches_the_whole_decode(pipe):
    """The decoder's phase advance repeats every two latent frames: decoding a window's tail from
    an even frame gives the same audio as decoding it all, away from the new left edge."""
    from presto_core.editing import DECODE_MARGIN_FRAMES, decode_from

    z = torch.randn(1, 8, 120, generator=torch.Generator().manual_seed(0))
    whole = pipe.decode(z)[0].numpy()
    part, f0 = decode_from(pipe, z, 60)
    assert f0 == 60 - DECODE_MARGIN_FRAMES and f0 % 2 == 0
    hop = pipe.vae.cfg.hop
    np.testing.assert_allclose(part[DECODE_MARGIN_FRAMES * hop:], whole[60 * hop:], atol=1e-5)


def test_level_matched_scales_the_replaced_bars_to_the_originals_rms():
    from presto_core.editing import MATCH_DB, level_matched

    rng = np.random.default_rng(0)
    orig = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    new = (0.4 * rng.standard_normal(4000)).astype(np.float32)
    out = level_matched(orig, new, 1000, 3000, 100)
    rms = lambda x: float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))  # noqa: E731
    # 12 dB louder than the original: turned down by the most allowed, 6 dB
    assert rms(out[1000:3000]) == pytest.approx(rms(new[1000:3000]) * 10 ** (-MATCH_DB / 20), rel=1e-3)
    assert np.array_equal(out[:900], new[:900]) and np.array_equal(out[3100:], new[3100:])
    quiet = (0.15 * rng.standard_normal(4000)).astype(np.float32)
    matched = level_matched(orig, quiet, 1000, 3000, 100)
    assert rms(matched[1000:3000]) == pytest.approx(rms(orig[1000:3000]), rel=1e-4)  # within +-6 dB: exact

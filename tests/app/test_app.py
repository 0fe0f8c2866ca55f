"""The web app driven through its API (gradio_client) on a micro random-weight model: normal runs,
each control's edges, bars, loops, rho sweep, A/B, variations, and bad input that must give a clear
message while the server keeps answering. Plus unit checks of the app's music/analysis helpers.
(Plumbing only: the micro model's audio is noise, so tempo is checked for shape, not value.)"""

import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app.analysis import estimate_tempo  # noqa: E402
from presto_core.spectrogram import spectrogram_png  # noqa: E402
from presto_core.music import bars_to_seconds, loop_on_bars  # noqa: E402
from app.server import resolve_model  # noqa: E402
from app.testing import serve  # noqa: E402
from app.ui import log_from_rho, rho_from_log  # noqa: E402
from presto_core.audio import read_wav_settings  # noqa: E402
from presto_core.errors import PrestoError  # noqa: E402
from tests.factory import make_model_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SR = 16000  # the micro model's sample rate
QUICK = dict(prompt="dusty boom bap drums", bpm=96, duration=1.0, variant="presto-ls", steps=1, num_clips=1,
             reject_ratio=0.0, seed=11, drop_schedule="")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("app_model"), variants=("base", "presto-ls"), with_clap=True,
                             with_m2s=True)


@pytest.fixture(scope="module")
def server(model_dir):
    with serve(model_dir) as (url, demo, engine):
        yield url, engine


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def gen(client, **kw):
    files, report, latency = client.predict(**{**QUICK, **kw}, api_name="/generate")
    return files, report, latency


# ---------------------------------------------------------------------------------------------
# Normal runs


def test_generate_returns_clips_with_settings_scores_tempo_latency(client):
    files, report, latency = gen(client, num_clips=2, reject_ratio=0.5, duration=3.0, seed=123)
    assert len(files) == 2 and len(report["clips"]) == 2
    for path, clip in zip(files, report["clips"]):
        audio, sr = sf.read(path, dtype="float32")
        assert sr == SR and audio.shape == (3 * SR, 2)  # the model folder has m2s: stereo by default
        s = read_wav_settings(path)
        assert s["stereo"] is True and clip["stereo"] is True and clip["width"] > 0
        assert s["prompt"] == "dusty boom bap drums" and s["seed"] == 123 and s["bpm"] == 96
        assert s["variant"] == "presto-ls" and s["candidates"] == 4 and s["time_signature"] == "4/4"
        assert clip["clap_score"] is not None and s["clap_score"] == clip["clap_score"]
        assert clip["requested_bpm"] == 96 and "tempo_bpm" in clip and clip["tempo_note"]
        assert clip["loop_bars"] == 1 and clip["loop_file"].endswith("_loop.wav")  # 3 s holds one 2.5 s bar
    scores = [c["clap_score"] for c in report["clips"]]
    assert scores == sorted(scores, reverse=True)  # best first
    t = report["timings"]
    assert all(t[k] >= 0 for k in ("text", "generation", "decoding", "clap")) and t["total"] > 0 and t["rtf"] > 0
    assert t["stereo"] > 0
    assert report["expected_s"] is not None and report["expected_s"] > 0
    assert "RTF" in latency and "total" in latency


def test_same_seed_reproduces_and_random_seed_is_reported(client):
    a, _, _ = gen(client, seed=77)
    b, _, _ = gen(client, seed=77)
    np.testing.assert_array_equal(sf.read(a[0])[0], sf.read(b[0])[0])
    _, rep, _ = gen(client, seed=-1)  # random seed, reported
    assert 0 <= rep["settings"]["seed"] < 2**31


@pytest.mark.parametrize("kw, check", [
    (dict(bpm=40), lambda s: s["bpm"] == 40),
    (dict(bpm=240), lambda s: s["bpm"] == 240),
    (dict(duration=1.0), lambda s: s["duration"] == 1.0),
    (dict(duration=32.0), lambda s: s["duration"] == 32.0),
    (dict(steps=1), lambda s: s["steps"] == 1),
    (dict(steps=100), lambda s: s["steps"] == 100),
    (dict(rho=1), lambda s: s["rho"] == 1),
    (dict(rho=1000), lambda s: s["rho"] == 1000),
    (dict(reject_ratio=0.0, num_clips=2), lambda s: s["candidates"] == 2),
    (dict(reject_ratio=0.9), lambda s: s["candidates"] == 10),
    (dict(num_clips=8), lambda s: s["num_clips"] == 8),
    (dict(seed=0), lambda s: s["seed"] == 0),
    (dict(seed=2**31 - 1), lambda s: s["seed"] == 2**31 - 1),
    (dict(drop_schedule="20, 16, 12, 8, 4"), lambda s: s["drop_schedule"] == [20, 16, 12, 8, 4]),
    (dict(variant="base", steps=2), lambda s: s["variant"] == "base" and s["sampler"] == "dpmpp_2s"),
    (dict(duration_mode="bars", bars=4, time_signature="6/8", bpm=120), lambda s: math.isclose(s["duration"], 6.0)),
    (dict(duration_mode="bars", bars=1, time_signature="4/4", bpm=240), lambda s: math.isclose(s["duration"], 1.0)),
])
def test_control_edges(client, kw, check):
    files, report, _ = gen(client, **kw)
    s = read_wav_settings(files[0])
    assert check(s), s
    assert len(files) == s["num_clips"]
    assert sf.info(files[0]).frames == round(s["duration"] * SR)


def test_stereo_switch(client):
    st, rep_st, _ = gen(client, seed=31)
    mono, rep_mono, _ = gen(client, seed=31, stereo=False)
    a, _ = sf.read(st[0], dtype="float32")
    b, _ = sf.read(mono[0], dtype="float32")
    assert a.shape == (SR, 2) and b.shape == (SR,)
    assert np.abs(a.mean(axis=1) - b).max() <= 2.0 / 32767  # the mid is the mono clip (16-bit rounding)
    assert read_wav_settings(mono[0])["stereo"] is False and rep_mono["clips"][0]["width"] is None
    assert rep_st["clips"][0]["width"] > 0
    assert "stereo" in client.predict(**QUICK, api_name="/estimate")
    assert "mono" in client.predict(**QUICK, stereo=False, api_name="/estimate")
    with pytest.raises(Exception, match="stereo must be true, false or unset"):
        gen(client, stereo="sometimes")


def test_estimate_endpoint(client):
    ok = client.predict(**{k: v for k, v in QUICK.items()}, api_name="/estimate")
    assert ok.startswith("**≈") and " s** on cpu" in ok
    bars = client.predict(**{**QUICK, "duration_mode": "bars", "bars": 8, "bpm": 120}, api_name="/estimate")
    assert "8 bars of 4/4 = 16.00 s" in bars
    bad = client.predict(**{**QUICK, "duration_mode": "bars", "bars": 40, "bpm": 60}, api_name="/estimate")
    assert bad.startswith("⚠️") and "at most 8 bars" in bad


def test_quality_dial_picks_steps_and_layer_budget_together(server):
    _, engine = server
    assert engine.preset("presto-ls", "sketch") == (1, (20, 16, 12, 8, 4))
    assert engine.preset("presto-ls", "balanced") == (2, None)
    assert engine.preset("presto-ls", "best") == (4, (0, 0, 0, 0, 0))
    assert engine.preset("base", "fast") == (3, None)  # no budget conditioning: steps only
    from presto_core.request import GenerationRequest

    fracs = [engine.active_fraction(engine.validate(GenerationRequest(
        prompt="x", variant="presto-ls", steps=s, drop_schedule=d)))[0]
        for s, d in (engine.preset("presto-ls", q) for q in ("sketch", "balanced", "best"))]
    assert fracs[0] < fracs[1] < fracs[2] == 1.0
    reqs = [GenerationRequest(prompt="x", variant="presto-ls", steps=s, drop_schedule=d)
            for s, d in (engine.preset("presto-ls", q) for q in ("sketch", "best"))]
    est = [engine.estimate(engine.validate(r)) for r in reqs]
    assert 0 < est[0] < est[1]


def test_each_request_is_validated_once(server, tmp_path, monkeypatch):
    """The handler builds one validated request per generation; engine and pipeline pass it on."""
    from app.handlers import Handlers
    from app.results import RunStore
    from presto_core.request import GenerationRequest

    _, engine = server
    calls = []
    validated = GenerationRequest.validated
    monkeypatch.setattr(GenerationRequest, "validated", lambda self, pipe: calls.append(1) or validated(self, pipe))
    h = Handlers(engine, RunStore(tmp_path / "runs"))
    args = dict(prompt="x", bpm=96, duration_mode="seconds", duration=1.0, bars=4, time_signature="4/4",
                variant="presto-ls", steps=1, rho=7.0, reject_ratio=0.0, num_clips=1, seed=3, drop_schedule="")
    quiet = lambda *a, **k: None  # noqa: E731
    h.generate(**args, progress=quiet)
    assert len(calls) == 1
    sweep = {k: args[k] for k in ("prompt", "bpm", "duration_mode", "duration", "bars", "time_signature", "variant",
                                  "steps", "seed", "drop_schedule")}
    h.rho_sweep("1, 7", **{**sweep, "steps": 3}, progress=quiet)
    assert len(calls) == 3  # one per rho
    assert h.estimate(**args).startswith("**≈") and len(calls) == 4
    with pytest.raises(TypeError, match="ValidatedRequest"):
        engine.generate(GenerationRequest(prompt="x", duration=1.0))


def test_app_uses_only_the_pipelines_public_api():
    for path in (ROOT / "app").glob("*.py"):
        src = path.read_text()
        assert ".backbone" not in src and ".variants[" not in src and "_EVALS" not in src, path.name


def test_info_endpoint(client):
    info = client.predict(api_name="/info")
    assert set(info["variants"]) == {"base", "presto-ls"} and info["variants"]["presto-ls"]["layer_budget"]
    assert info["clap"] and info["calibrated"] and info["limits"]["rho"] == [1.0, 1000.0]


# ---------------------------------------------------------------------------------------------
# Loops, sweeps, A/B, variations, settings


def test_loop_export_cuts_on_the_bar_line(client):
    files, _, _ = gen(client, duration=5.0, bpm=120)
    path = client.predict(handle_file(files[0]), 120, "4/4", 2, 10, api_name="/export_loop")
    loop, sr = sf.read(path, dtype="float32")
    assert loop.shape == (4 * SR, 2)  # 2 bars of 4/4 at 120 BPM = 4 s exactly, stereo like its clip
    s = read_wav_settings(path)
    assert s["loop_bars"] == 2 and s["prompt"] == QUICK["prompt"]
    whole = client.predict(handle_file(files[0]), 120, "3/4", 0, 0, api_name="/export_loop")
    assert sf.info(whole).frames == round(3 * 1.5 * SR)  # as many 1.5 s bars of 3/4 as fit in 5 s
    with pytest.raises(Exception, match="loop bars must be an integer in"):
        client.predict(handle_file(files[0]), 120, "4/4", 5, 10, api_name="/export_loop")


def test_rho_sweep_same_seed_across_rho(client):
    files, report = client.predict(rho_values="1, 7, 1000", **{k: QUICK[k] for k in
                                   ("prompt", "bpm", "duration", "variant", "steps", "seed")}, api_name="/rho_sweep")
    assert [r["rho"] for r in report["runs"]] == [1, 7, 1000] and len(files) == 3
    settings = [read_wav_settings(f) for f in files]
    assert {s["seed"] for s in settings} == {11} and [s["rho"] for s in settings] == [1, 7, 1000]
    assert all(len(r["sigmas"]) == 2 for r in report["runs"])  # 1 step: [sigma_max, 0]
    assert "whatever rho" in report["note"]  # so the page warns that rho cannot matter here
    for f, s in zip(files, settings):
        assert sf.info(f).frames == round(QUICK["duration"] * SR) and s["duration"] == QUICK["duration"]
    with pytest.raises(Exception, match="rho must be a number in"):
        client.predict(rho_values="7, 5000", api_name="/rho_sweep")


def test_rho_sweep_one_clip_per_rho_with_its_schedule(client):
    """3 steps: one clip per rho, each of the requested duration, its settings recording its rho
    (same prompt, seed, variant and steps), and rho moving the middle noise level and the audio."""
    rhos = [1, 7, 1000]
    files, report = client.predict(rho_values="1, 7, 1000", prompt=QUICK["prompt"], bpm=96, duration=2.0,
                                   variant="presto-ls", steps=3, seed=21, api_name="/rho_sweep")
    assert len(files) == len(report["runs"]) == 3 and report["note"] is None
    assert (report["seed"], report["variant"], report["steps"]) == (21, "presto-ls", 3)
    audio = []
    for f, run, rho in zip(files, report["runs"], rhos):
        s = read_wav_settings(f)
        assert run["rho"] == s["rho"] == rho and run["file"] == Path(f).name
        assert (s["seed"], s["prompt"], s["variant"], s["steps"], s["num_clips"]) == (21, QUICK["prompt"],
                                                                                      "presto-ls", 3, 1)
        a, sr = sf.read(f, dtype="float32")
        assert sr == SR and a.shape == (2 * SR, 2) and s["duration"] == 2.0 and s["stereo"] is True
        assert len(run["sigmas"]) == 4 and run["sigmas"][0] == 80 and run["sigmas"][-1] == 0
        audio.append(a)
    mids = [run["sigmas"][1] for run in report["runs"]]
    assert mids[0] > mids[1] > mids[2]  # larger rho puts the middle step at lower noise
    assert not np.array_equal(audio[0], audio[1]) and not np.array_equal(audio[1], audio[2])


def test_ab_compare_two_variants_same_seed(client):
    files, report = client.predict("base", "presto-ls", True, QUICK["prompt"], 96, "seconds", 1.0, 4, "4/4", 1, 7.0,
                                   5, api_name="/ab_compare")
    a, b = (read_wav_settings(f) for f in files)
    assert (a["variant"], b["variant"]) == ("base", "presto-ls") and a["seed"] == b["seed"] == 5
    assert (report["A"]["steps"], report["B"]["steps"]) == (4, 2)  # each variant's default steps
    _, same = client.predict("base", "presto-ls", False, QUICK["prompt"], 96, "seconds", 1.0, 4, "4/4", 1, 7.0, 5,
                             api_name="/ab_compare")
    assert same["A"]["steps"] == same["B"]["steps"] == 1
    # Two clips of the requested length, same prompt and seed, each side named in its settings.
    assert len(files) == 2 and report["seed"] == 5
    assert (a["ab_side"], b["ab_side"]) == ("A", "B") and a["prompt"] == b["prompt"] == QUICK["prompt"]
    assert (report["A"]["variant"], report["B"]["variant"]) == ("base", "presto-ls")
    assert [report[k]["file"] for k in "AB"] == [Path(f).name for f in files]
    clips = [sf.read(f, dtype="float32")[0] for f in files]
    assert all(c.shape == (SR, 2) for c in clips)
    assert not np.array_equal(clips[0], clips[1])  # different variants, same noise: different clips


def test_ab_compare_same_variant_twice_gives_the_same_clip(client):
    files, report = client.predict("base", "base", False, QUICK["prompt"], 96, "seconds", 1.0, 4, "4/4", 2, 7.0, 8,
                                   api_name="/ab_compare")
    a, b = (read_wav_settings(f) for f in files)
    assert a["variant"] == b["variant"] == "base" and a["seed"] == b["seed"] == 8 and a["steps"] == b["steps"] == 2
    np.testing.assert_array_equal(sf.read(files[0])[0], sf.read(files[1])[0])


def test_variation_from_a_generated_clip(client):
    src, _, _ = gen(client, duration=2.0)
    files, report, _ = client.predict(handle_file(src[0]), 0.3, **QUICK, api_name="/variation")
    s = read_wav_settings(files[0])
    assert s["variation"] is True and s["strength"] == 0.3 and s["duration"] == 2.0
    assert sf.info(src[0]).channels == 2 and sf.info(files[0]).channels == 2  # a stereo source, mixed down
    with pytest.raises(Exception, match="strength must be a number in"):
        client.predict(handle_file(src[0]), 0.0, **QUICK, api_name="/variation")


def test_uploads_with_more_than_two_channels_are_refused(client, tmp_path):
    path = tmp_path / "six.wav"
    sf.write(path, np.zeros((SR, 6), dtype=np.float32), SR)
    for api, args in (("/variation", (handle_file(str(path)), 0.5)), ("/export_loop", (handle_file(str(path)),))):
        kw = QUICK if api == "/variation" else {}
        extra = () if api == "/variation" else (120, "4/4", 0, 10)
        with pytest.raises(Exception, match="6 channels; upload mono or stereo"):
            client.predict(*args, *extra, **kw, api_name=api)
    slow = tmp_path / "4k.wav"
    sf.write(slow, np.zeros(8000, dtype=np.float32), 4000)
    for api, args in (("/variation", (handle_file(str(slow)), 0.5)), ("/export_loop", (handle_file(str(slow)),))):
        kw, extra = (QUICK, ()) if api == "/variation" else ({}, (120, "4/4", 0, 10))
        with pytest.raises(Exception, match=r"sample rate is 4000 Hz; use 8000 to 192000 Hz"):
            client.predict(*args, *extra, **kw, api_name=api)
    mono = tmp_path / "mono.wav"
    sf.write(mono, 0.1 * np.sin(np.arange(3 * SR) / 10).astype(np.float32), SR)
    loop = client.predict(handle_file(str(mono)), 120, "4/4", 0, 10, api_name="/export_loop")
    assert sf.info(loop).channels == 1  # a mono clip gives a mono loop


def test_settings_from_wav(client, tmp_path):
    files, _, _ = gen(client, seed=99)
    s = client.predict(handle_file(files[0]), api_name="/settings_from_wav")
    assert s["seed"] == 99 and s["prompt"] == QUICK["prompt"] and s["stereo"] is True
    plain = tmp_path / "plain.wav"
    sf.write(plain, np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(Exception, match="carries no Presto generation settings"):
        client.predict(handle_file(str(plain)), api_name="/settings_from_wav")


# ---------------------------------------------------------------------------------------------
# Bad input: a clear message, and the server keeps answering


@pytest.mark.parametrize("kw, message", [
    (dict(prompt=""), "prompt must be a non-empty text"),
    (dict(prompt="   "), "prompt must be a non-empty text"),
    (dict(prompt="x" * 501), "prompt must be 1 to 500 characters"),
    (dict(bpm=0), r"bpm must be a number in \[40, 240\]"),
    (dict(bpm=300), r"bpm must be a number in \[40, 240\]"),
    (dict(duration=0.5), r"duration \(seconds\) must be a number in \[1, 32\]"),
    (dict(duration=33), r"duration \(seconds\) must be a number in \[1, 32\]"),
    (dict(steps=0), r"steps must be an integer in \[1, 100\]"),
    (dict(steps=101), r"steps must be an integer in \[1, 100\]"),
    (dict(rho=0.5), r"rho must be a number in \[1, 1000\]"),
    (dict(rho=5000), r"rho must be a number in \[1, 1000\]"),
    (dict(reject_ratio=0.95), r"reject_ratio must be a number in \[0, 0.9\]"),
    (dict(num_clips=0), r"number of clips must be an integer in \[1, 8\]"),
    (dict(num_clips=8, reject_ratio=0.9), "at most 32 candidates"),
    (dict(seed=-2), r"seed must be -1 \(random\) or an integer"),
    (dict(drop_schedule="1, 2"), "layer budget must be 5 comma-separated integers"),
    (dict(drop_schedule="40, 0, 0, 0, 0"), "drop schedule entries must be in"),
    (dict(variant="base", drop_schedule="14, 12, 8, 4, 0"), "has no layer-budget conditioning"),
    (dict(duration_mode="bars", bars=40, bpm=60), "use at most 8 bars at this tempo"),
    (dict(variant="nope"), r"model variant must be one of \[.*\], got .nope."),
])
def test_bad_input_gives_clear_error_and_server_survives(client, kw, message):
    with pytest.raises(Exception, match=message):
        gen(client, **kw)
    files, _, _ = gen(client)  # still answering
    assert len(files) == 1


def test_unexpected_failure_is_reported_and_server_survives(server, client, monkeypatch):
    _, engine = server

    def boom(*a, **k):
        raise RuntimeError("simulated device fault")

    monkeypatch.setattr(engine.pipe, "generate", boom)
    with pytest.raises(Exception, match=r"Generation failed \(RuntimeError: simulated device fault\)"):
        gen(client)
    monkeypatch.undo()
    assert len(gen(client)[0]) == 1


@pytest.mark.slow
def test_stop_cancels_a_running_job_between_sampler_steps(server, client, monkeypatch):
    """Job.cancel() (the page's Stop button) stops the job at its next step and frees the model."""
    _, engine = server
    calls, started = [], threading.Event()
    real = engine.pipe.generate

    def spy(req, progress=None, **kw):
        rec = {"steps": 0, "error": None, "wanted": req.steps}
        calls.append(rec)

        def p(stage, i, n):
            if stage == "generation":
                rec["steps"] = i
                if i >= 2:
                    started.set()
            progress(stage, i, n)

        try:
            return real(req, progress=p, **kw)
        except BaseException as e:
            rec["error"] = type(e).__name__
            raise

    monkeypatch.setattr(engine.pipe, "generate", spy)
    job = client.submit(**{**QUICK, "steps": 100, "duration": 32.0, "num_clips": 4, "reject_ratio": 0.75},
                        api_name="/generate")
    # Generous: two steps of 16 candidates x 32 s take seconds alone, minutes on two busy cores.
    assert started.wait(600)
    job.cancel()
    files, _, _ = gen(client)  # served once the cancelled job has let go of the model
    assert len(files) == 1
    assert calls[0]["error"] == "JobCancelled" and calls[0]["steps"] < calls[0]["wanted"] == 100
    assert calls[-1]["error"] is None


def test_work_over_the_time_cap_is_refused_with_the_estimate(server, client, monkeypatch):
    _, engine = server
    monkeypatch.setattr(engine, "max_request_s", 1e-6)
    with pytest.raises(Exception, match=r"would take about .* this server runs at most"):
        gen(client)
    assert "this server runs at most" in client.predict(**QUICK, api_name="/estimate")


def test_unknown_api_is_404_and_info_shows_no_server_path(server, client, model_dir):
    import httpx

    r = httpx.post(f"{server[0]}gradio_api/call/nope", json={"data": []})
    assert r.status_code == 404 and "/generate" in r.json()["detail"]
    info = client.predict(api_name="/info")
    assert info["model"] == Path(model_dir).name


def test_scratch_run_folder_is_removed_when_the_server_closes(model_dir, monkeypatch):
    import tempfile

    import app.server

    made, real = [], tempfile.mkdtemp

    def mkdtemp(**kw):
        made.append(Path(real(**kw)))
        return str(made[-1])

    monkeypatch.setattr(app.server.tempfile, "mkdtemp", mkdtemp)
    with serve(model_dir, calibrate=False) as (url, demo, engine):
        Client(url, verbose=False).predict(**QUICK, api_name="/generate")
        (root,) = made
        assert root.name.startswith("presto-app-") and any(root.iterdir())  # the run was written there
    assert not root.exists()


def test_missing_default_model_is_one_clear_line(tmp_path):
    with pytest.raises(PrestoError, match="pass --model"):
        resolve_model(None, tmp_path / "presto-default")
    assert resolve_model("some/hub-id", tmp_path / "missing") == "some/hub-id"
    proc = subprocess.run([sys.executable, "app.py", "--model", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_single_variant_model_without_clap(tmp_path):
    """Any model folder starts: one variant (no model choice shown), no CLAP (rejection refused)."""
    import gradio as gr

    from app.server import create_app

    folder = make_model_folder(tmp_path / "m", variants=("presto-s",), with_clap=False)
    demo, engine = create_app(str(folder), device="cpu", calibrate=False, out_dir=str(tmp_path / "out"),
                              log=lambda *a: None)
    assert engine.variants == ["presto-s"] and engine.pipe.clap is None
    from app.handlers import Handlers
    from app.results import RunStore

    h = Handlers(engine, RunStore(tmp_path / "runs"))
    args = dict(prompt="x", bpm=120, duration_mode="seconds", duration=1.0, bars=4, time_signature="4/4",
                variant="presto-s", steps=1, rho=7.0, reject_ratio=0.0, num_clips=1, seed=1, drop_schedule="")
    record, files, rep, latency = h.generate(**args, progress=lambda *a, **k: None)
    assert rep["clips"][0]["clap_score"] is None and len(files) == 1 and "total" in latency
    assert "not calibrated" in h.estimate(**args)
    with pytest.raises(gr.Error, match="needs a CLAP model"):
        h.generate(**{**args, "reject_ratio": 0.5}, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="no layer-budget conditioning"):
        h.generate(**{**args, "drop_schedule": "14, 12, 8, 4, 0"}, progress=lambda *a, **k: None)
    # No m2s component: mono, said on the card, and a request for stereo is refused clearly.
    assert not engine.pipe.has_stereo and rep["clips"][0]["stereo"] is False
    assert sf.info(files[0]).channels == 1
    with pytest.raises(gr.Error, match="no mono-to-stereo component"):
        h.generate(**{**args, "stereo": True}, progress=lambda *a, **k: None)
    from app.handlers import apply_settings

    assert apply_settings({"prompt": "x", "stereo": True}, engine)["stereo"] is False
    demo.close()


# ---------------------------------------------------------------------------------------------
# Helpers (no server)


def _clicks(bpm, sr=SR, seconds=8.0):
    x = np.zeros(int(seconds * sr), dtype=np.float32)
    period = 60.0 / bpm * sr
    for k in range(int(len(x) / period)):
        s = int(k * period)
        n = min(400, len(x) - s)
        x[s:s + n] += np.exp(-np.arange(n) / 80.0) * np.sin(np.arange(n) * 0.4)
    return x


@pytest.mark.parametrize("bpm", [70, 96, 128])
def test_tempo_of_a_click_track(bpm):
    assert estimate_tempo(_clicks(bpm), SR) == pytest.approx(bpm, rel=0.03)
    assert estimate_tempo(np.zeros(SR * 4, np.float32), SR) is None


def test_loop_seam_and_bars():
    x = np.sin(2 * np.pi * 220 * np.arange(5 * SR) / SR).astype(np.float32)
    loop, bars = loop_on_bars(x, SR, 120, "4/4", None, 10)
    assert bars == 2 and loop.shape == (4 * SR,)
    # The loop's start continues the audio after the cut, so end -> start is seamless.
    assert abs(float(loop[0]) - float(x[4 * SR])) < 0.05 and abs(float(loop[-1]) - float(x[4 * SR - 1])) < 1e-6
    st, st_bars = loop_on_bars(np.stack([x, 0.5 * x]), SR, 120, "4/4", None, 10)
    assert st_bars == 2 and st.shape == (2, 4 * SR)
    np.testing.assert_array_equal(st[0], loop)
    np.testing.assert_allclose(st[1], 0.5 * loop, atol=1e-7)
    with pytest.raises(PrestoError, match="mono \\(N,\\) or stereo \\(2, N\\)"):
        loop_on_bars(np.zeros((3, SR), np.float32), SR, 120, "4/4")
    assert bars_to_seconds(3, 90, "3/4", 32) == pytest.approx(6.0)
    with pytest.raises(PrestoError, match="shorter than one bar"):
        loop_on_bars(x[:SR], SR, 60, "4/4")
    with pytest.raises(PrestoError, match="time signature must be one of"):
        bars_to_seconds(2, 120, "9/9", 32)


def test_rho_log_mapping_and_spectrogram(tmp_path):
    assert rho_from_log(log_from_rho(7)) == 7.0 and rho_from_log(3.0) == 1000.0 and rho_from_log(0.0) == 1.0
    assert log_from_rho(5000) == 3.0 and log_from_rho("bad") == pytest.approx(math.log10(7))
    from PIL import Image

    png = spectrogram_png(_clicks(120), SR, tmp_path / "s.png")
    assert Image.open(png).size == (640, 160)

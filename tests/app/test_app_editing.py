"""Extend, replace bars and loops through the web app's API (gradio_client) on a micro model with an
8 s window, so that extensions run in several windows: files, settings with the source's hash,
the report's windows, unchanged samples outside an edit, and one clear message for bad input."""

import numpy as np
import pytest
import soundfile as sf

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app.testing import serve  # noqa: E402
from presto_core.audio import read_wav_settings  # noqa: E402
from presto_core.editing import channels_first, source_hash  # noqa: E402
from tests.factory import make_model_folder  # noqa: E402

SR = 16000
BAR = 32000  # one 4/4 bar at 120 BPM
QUICK = dict(prompt="warm pads", bpm=120, duration=4.0, variant="presto-ls", steps=1, num_clips=1,
             reject_ratio=0.0, seed=3, drop_schedule="")
EDIT = dict(prompt="warm pads", source_bpm=None, time_signature="4/4", variant="presto-ls", steps=2, rho=7.0,
            seed=5, stereo=True, strength=None)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = make_model_folder(tmp_path_factory.mktemp("edit_app") / "m", variants=("base", "presto-ls"),
                               with_m2s=True, max_duration=8.0)
    with serve(folder) as (url, _demo, _engine):
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def clip(client):
    files, _, _ = client.predict(**QUICK, api_name="/generate")
    return files[0]


def test_extend_a_result_in_windows(client, clip):
    files, report, latency = client.predict(handle_file(clip), 4, **EDIT, api_name="/extend")
    out, sr = sf.read(files[0], dtype="float32", always_2d=True)
    src, _ = sf.read(clip, dtype="float32", always_2d=True)
    assert sr == SR and out.shape == (6 * BAR, 2)
    fade = int(round(0.03 * SR))
    keep = 2 * BAR - SR // 2 - fade  # the source up to half a second before its last bar line
    assert np.array_equal(out[:keep], src[:keep])
    s = read_wav_settings(files[0])
    assert s["edit"] == "extend" and s["bars_added"] == 4 and s["bpm"] == 120
    assert s["source_sha256"] == source_hash(channels_first(src), SR)
    assert len(report["windows"]) >= 2 and report["changed_s"][0][1] == pytest.approx(12.0)
    assert "window" not in latency or "total" in latency


def test_replace_bars_keeps_the_rest(client, clip):
    longer, _, _ = client.predict(handle_file(clip), 4, **EDIT, api_name="/extend")
    files, report, _ = client.predict(handle_file(longer[0]), 3, 4, **EDIT, api_name="/replace_bars")
    a, _ = sf.read(longer[0], dtype="float32")
    b, _ = sf.read(files[0], dtype="float32")
    fade = int(round(0.03 * SR))
    assert a.shape == b.shape
    assert np.array_equal(b[:2 * BAR - fade], a[:2 * BAR - fade]) and np.array_equal(b[4 * BAR + fade:],
                                                                                     a[4 * BAR + fade:])
    assert not np.array_equal(b[2 * BAR:4 * BAR], a[2 * BAR:4 * BAR])
    assert read_wav_settings(files[0])["replaced_bars"] == [3, 4]


def test_an_upload_needs_its_bpm(client, tmp_path):
    plain = tmp_path / "plain.wav"
    sf.write(plain, 0.1 * np.sin(np.arange(5 * SR) / 7).astype(np.float32), SR)
    with pytest.raises(Exception, match="tempo is needed"):
        client.predict(handle_file(str(plain)), 2, **EDIT, api_name="/extend")
    files, _, _ = client.predict(handle_file(str(plain)), 2, **{**EDIT, "source_bpm": 120, "stereo": False},
                                 api_name="/extend")
    assert sf.info(files[0]).frames == 4 * BAR and sf.info(files[0]).channels == 1


@pytest.mark.parametrize("api, args, message", [
    ("/extend", (1000,), "bars to add .* must be an integer in"),
    ("/extend", (0,), "bars to add .* must be an integer in"),
    ("/replace_bars", (2, 9), r"1 <= a <= b <= 2"),
    ("/replace_bars", (2, 1), r"1 <= a <= b <= 2"),
])
def test_bad_edits_are_one_clear_message(client, clip, api, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(clip), *args, **EDIT, api_name=api)
    files, _, _ = client.predict(**QUICK, api_name="/generate")  # and the server keeps serving
    assert files


def test_loops_made_to_loop(client, clip):
    files, report, _ = client.predict(**{**QUICK, "duration": 5.0}, loop=True, api_name="/generate")
    s = read_wav_settings(files[0])
    assert s["loop"] is True and s["loop_bars"] == 2 and sf.info(files[0]).frames == 2 * BAR
    path = client.predict(handle_file(clip), 120, "4/4", 0, 10, "made to loop", "warm pads", "presto-ls", 1,
                          api_name="/export_loop")
    s = read_wav_settings(path)
    assert s["loop_mode"] == "made to loop" and s["loop_bars"] == 2 and s["edit"] == "loop"
    assert sf.info(path).frames == 2 * BAR and sf.info(path).channels == 2
    with pytest.raises(Exception, match="loop mode must be one of"):
        client.predict(handle_file(clip), 120, "4/4", 0, 10, "wobbly", api_name="/export_loop")

"""Adapters in the app (``python app.py --adapter DIR[:WEIGHT]``), driven through the API on a micro
random model with random-factor adapters: the start-up mix, per-request weights (merged for that
request, the plain model restored exactly afterwards), the "adapted vs plain" A/B on one seed,
settings that record adapters by name and hash (never the server's folder), and the errors a
person can meet (unknown name, weight out of range, a mismatched adapter at start-up)."""

import numpy as np
import pytest
import soundfile as sf

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from app.adapter_mix import AdapterMix  # noqa: E402
from app.cli import build_parser  # noqa: E402
from app.server import create_app  # noqa: E402
from app.testing import serve  # noqa: E402
from presto_core.audio import read_wav_settings  # noqa: E402
from presto_core.errors import PrestoError  # noqa: E402
from tests.factory import make_adapter, make_model_folder  # noqa: E402

QUICK = dict(prompt="steel pan calypso", bpm=110, duration=1.0, variant="presto-ls", steps=1, num_clips=1,
             reject_ratio=0.0, seed=5, drop_schedule="", stereo=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("ad_model"), variants=("base", "presto-ls"), with_clap=False)


@pytest.fixture(scope="module")
def adapter_dirs(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ad_adapters")
    return (make_adapter(model_dir, root / "calypso", seed=1, name="calypso"),
            make_adapter(model_dir, root / "brass", components=("presto_ls",), rank=2, seed=7))


@pytest.fixture(scope="module")
def server(model_dir, adapter_dirs):
    with serve(model_dir, calibrate=False, adapters=[(str(adapter_dirs[0]), 1.0), (str(adapter_dirs[1]), 0.0)]) \
            as (url, _, engine):
        yield Client(url, verbose=False), engine


def audio_of(client, **kw):
    files, report, _ = client.predict(**{**QUICK, **kw}, api_name="/generate")
    return sf.read(files[0], dtype="float32")[0], read_wav_settings(files[0])


def test_info_lists_adapters_with_their_start_up_weights(server):
    client, _ = server
    info = client.predict(api_name="/info")
    assert [(a["name"], a["weight"]) for a in info["adapters"]] == [("calypso", 1.0), ("brass", 0.0)]
    assert info["adapters"][0]["components"] == ["base", "presto_ls"] and info["adapters"][1]["rank"] == 2


def test_per_request_weights_and_exact_return_to_plain(server):
    client, _ = server
    plain, s_plain = audio_of(client, adapters="none")
    default, s_default = audio_of(client)  # no mix: the start-up weights (calypso at 1)
    named, s_named = audio_of(client, adapters="calypso:1")
    half, _ = audio_of(client, adapters="calypso:0.5, brass:1.5")
    again, _ = audio_of(client, adapters="")
    np.testing.assert_array_equal(default, named)
    np.testing.assert_array_equal(plain, again)  # the plain weights come back exactly
    assert np.abs(default - plain).max() > 1e-3 and np.abs(half - default).max() > 1e-3
    assert "adapters" not in s_plain
    (entry,) = s_default["adapters"]
    assert entry["name"] == "calypso" and entry["weight"] == 1.0 and len(entry["sha256"]) == 64
    assert set(entry) == {"name", "weight", "sha256"}  # no server folder in a clip's metadata
    assert s_named["adapters"] == s_default["adapters"]


def test_adapted_vs_plain_ab_on_one_seed(server):
    client, _ = server
    files, report = client.predict("presto-ls", "base", True, "steel pan calypso", 110, "seconds", 1.0, 4, "4/4",
                                   1, 7.0, 9, False, "calypso:1", "adapted vs plain", api_name="/ab_compare")
    assert report["compare"] == "adapted vs plain" and report["seed"] == 9
    assert (report["A"]["variant"], report["B"]["variant"]) == ("presto-ls", "presto-ls")  # B's dropdown unused
    assert (report["A"]["adapters"], report["B"]["adapters"]) == ("calypso:1", "none")
    a, b = (sf.read(f, dtype="float32")[0] for f in files)
    adapted, _ = audio_of(client, adapters="calypso:1", seed=9, steps=None)
    plain, _ = audio_of(client, adapters="none", seed=9, steps=None)
    np.testing.assert_array_equal(a, adapted)
    np.testing.assert_array_equal(b, plain)


@pytest.mark.parametrize("mix, message", [
    ("salsa:1", "unknown adapter 'salsa'; this server's adapters: 'calypso', 'brass'"),
    ("calypso:3", "must be in [0, 2], got 3"),
    ("calypso:loud", "must be a number in [0, 2]"),
    ("calypso:1, calypso:0.5", "named twice"),
])
def test_bad_mix_names_the_allowed_values_and_the_server_keeps_serving(server, mix, message):
    client, _ = server
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        audio_of(client, adapters=mix)
    assert "adapters: calypso 1" in client.predict(**{k: v for k, v in QUICK.items() if k != "stereo"},
                                                   duration_mode="seconds", bars=4, time_signature="4/4",
                                                   api_name="/estimate")


def test_adapted_vs_plain_needs_an_adapter_on(server):
    client, _ = server
    with pytest.raises(Exception, match="'adapted vs plain' needs an adapter with a weight above 0"):
        client.predict("presto-ls", "base", True, "x", 110, "seconds", 1.0, 4, "4/4", 1, 7.0, 9, False, "none",
                       "adapted vs plain", api_name="/ab_compare")


def test_mix_text_round_trip_and_duplicate_names(adapter_dirs, tmp_path):
    mix = AdapterMix.load([(str(adapter_dirs[0]), 0.25), (str(adapter_dirs[1]), 2.0)])
    assert mix.format(mix.defaults) == "calypso:0.25, brass:2" and mix.parse(mix.format(mix.defaults)) == mix.defaults
    assert mix.parse("brass") == (0.0, 1.0) and mix.parse(None) == (0.25, 2.0) and mix.parse(" none ") == (0.0, 0.0)
    assert mix.describe((0.0, 0.0)) == "plain" and mix.describe((0.5, 1.0)) == "calypso 0.5 + brass 1"
    assert AdapterMix().parse("none") == () and AdapterMix().format(()) == "none"
    with pytest.raises(PrestoError, match="unknown adapter 'x'; this server's adapters: none"):
        AdapterMix().parse("x:1")
    with pytest.raises(PrestoError, match="both named 'calypso'"):
        AdapterMix.load([(str(adapter_dirs[0]), 1.0), (str(adapter_dirs[0]), 1.0)])


def test_mismatched_adapter_stops_the_start_with_both_hashes(adapter_dirs, tmp_path):
    other = make_model_folder(tmp_path / "other", variants=("base", "presto-ls"), with_clap=False, seed=3)
    with pytest.raises(PrestoError, match="was trained on base weights sha256 [0-9a-f]{64}, but this model.s base is sha256 [0-9a-f]{64}"):
        create_app(str(other), device="cpu", precision="fp32", calibrate=False, log=lambda *a: None,
                   adapters=[(str(adapter_dirs[0]), 1.0)])


def test_command_line_takes_repeated_adapters():
    args = build_parser().parse_args(["--adapter", "a/calypso:0.5", "--adapter", "b/brass"])
    assert args.adapter == ["a/calypso:0.5", "b/brass"]

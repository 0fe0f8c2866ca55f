"""train.report: tempo statistics on closed forms and click tracks of known BPM, crops, and the
command end to end on a micro random-weight model (its numbers are meaningless; the plumbing,
chance levels and the tracker baseline on real click tracks are checked)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from train.data.inspect_corpus import measure_tempo
from train.report import chance_pairs, first_of_each, load_crop, main, octave_error, tempo_stats

SR = 16000
HELDOUT_BPMS = (90.0, 100.0, 120.0)


def click_track(bpm: float, seconds: float, sr: int = SR) -> np.ndarray:
    """Decaying 1 kHz clicks on every beat, float32 (round(seconds * sr),)."""
    n = int(round(seconds * sr))
    t = np.arange(int(0.01 * sr)) / sr
    burst = (np.sin(2 * np.pi * 1000 * t) * np.exp(-400 * t)).astype(np.float32)
    y = np.zeros(n, np.float32)
    for start in (np.arange(0.0, seconds, 60.0 / bpm) * sr).astype(int):
        y[start: start + len(burst)] += burst[: n - start]
    return y


# ---------------------------------------------------------------------------------------------
# Tempo statistics


def test_tempo_stats_closed_form():
    pairs = [(120.0, 120.0), (60.0, 120.0), (100.0, 120.0), (126.0, 120.0)]
    s = tempo_stats(pairs)
    assert s["n"] == 4 and s["ok"] == 0.25 and s["ok_or_octave"] == 0.5
    # folded errors 0, 0, 1/6, 0.05 -> median 0.025
    assert s["median_error"] == pytest.approx(0.025)
    assert octave_error(250.0, 120.0) == pytest.approx(250 / 240 - 1)
    assert tempo_stats([]) == {"n": 0, "ok": None, "ok_or_octave": None, "median_error": None}


def test_chance_pairs_exclude_own_item():
    pairs = chance_pairs([91.0, 121.0, 92.0], owners=[0, 1, 0], bpms=[90.0, 120.0])
    assert pairs == [(91.0, 120.0), (121.0, 90.0), (92.0, 120.0)]
    assert tempo_stats(pairs)["ok"] == 0.0


@pytest.mark.parametrize("bpm", HELDOUT_BPMS)
def test_click_track_tempo_is_ok(bpm):
    measured = measure_tempo(click_track(bpm, 6.0), SR)
    assert tempo_stats([(measured, bpm)])["ok"] == 1.0, measured
    assert tempo_stats([(measured, bpm * 1.5)])["ok_or_octave"] == 0.0


def test_first_of_each():
    assert first_of_each(["a", "b", "a", "c", "b"]) == [0, 1, 3]


def test_load_crop_length_start_and_loudness(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 3 * SR, dtype=np.float32)
    sf.write(tmp_path / "r.wav", ramp, SR)
    crop = load_crop(str(tmp_path / "r.wav"), SR, 2.0)  # 4 s in does not fit: starts at 1 s
    assert crop.shape == (2 * SR,)
    assert 20 * math.log10(np.sqrt(np.mean(crop.astype(np.float64) ** 2))) == pytest.approx(-20.0, abs=0.01)
    ref = ramp[SR:] / np.sqrt(np.mean(ramp[SR:].astype(np.float64) ** 2)) * 0.1
    assert np.allclose(crop, ref, atol=1e-4)
    padded = load_crop(str(tmp_path / "r.wav"), SR, 5.0)
    assert padded.shape == (5 * SR,) and not padded[3 * SR:].any()


# ---------------------------------------------------------------------------------------------
# The command end to end (plumbing only)


def _corpus(folder, heldout=True):
    folder.mkdir(parents=True)
    lines = []
    for i, bpm in enumerate(HELDOUT_BPMS):
        sf.write(folder / f"c{i}.wav", click_track(bpm, 5.0), SR)
        lines.append({"path": f"c{i}.wav", "captions": [f"click track number {i} at {bpm:g} BPM", f"metronome {i}"],
                      "bpm": bpm, "split": "heldout" if heldout else "train"})
    lines.append({"path": "c0.wav", "caption": "a training item", "bpm": 90})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.factory import make_model_folder

    return make_model_folder(tmp_path_factory.mktemp("report") / "model", variants=("base",))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def test_report_end_to_end(model, tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    out_json, out_md = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    rc = main(["--model", str(model), "--corpus", str(corpus), "--num", "4", "--duration", "4",
               "--vae-seconds", "2", "--clap-seconds", "2", "--device", "cpu", "--precision", "fp32",
               "--json", str(out_json), "--markdown", str(out_md), "--audio-dir", str(tmp_path / "wav"),
               "--figure", str(tmp_path / "out" / "fig.png")])
    assert rc == 0
    wavs = sorted((tmp_path / "wav").glob("clip-*.wav"))
    assert [w.name for w in wavs] == [f"clip-{i:02d}.wav" for i in range(4)]
    assert sf.info(str(wavs[0])).samplerate == 16000 and sf.info(str(wavs[0])).duration == pytest.approx(4.0, abs=0.1)
    printed = capsys.readouterr().out
    md = out_md.read_text()
    assert md in printed and "python -m train.report --model" in md and "torch" in md
    for header in ("VAE reconstruction", "MR-STFT", "SI-SDR", "Chroma corr.", "Pitch content", "Tonal clarity",
                   "Tempo adherence", "ok or octave", "CLAP retrieval",
                   "Top-1", "Chance top-5", "Notes and beat", "Onsets / s", "Beat salience", "Strict ok",
                   "Heard double"):
        assert header in md
    assert "n/a" not in md
    rep = json.loads(out_json.read_text())
    from PIL import Image

    fig = Image.open(rep["figure"])  # one row per distinct "genre" (here each piece's caption): 3 rows
    assert fig.size == (150 + 2 * 520 + 18, 22 + 3 * (110 + 6) + 6)
    assert rep["n_heldout"] == 3 and rep["steps"] == 4 and rep["sampler"] == "dpmpp_2s"
    assert set(rep["timings_s"]) == {"vae", "generation", "notes", "tempo", "clap", "stereo"}
    assert rep["stereo"] is None and "no mono-to-stereo component" in md

    vae = rep["vae"]
    assert len(vae["pieces"]) == 3 and len(vae["rows"]) == 3
    for r in vae["rows"] + vae["pieces"]:
        assert _finite(r["mrstft"]) and _finite(r["si_sdr"]) and -1 <= r["chroma"] <= 1, r
    assert vae["rows"][1]["si_sdr"] > 10  # 4 kHz low-pass keeps most of a 1 kHz click's energy
    assert vae["rows"][1]["chroma"] > 0.9  # ... and its pitch class

    pitch = {r["name"]: r for r in rep["pitch"]["rows"]}
    assert list(pitch)[0] == "generated clips" and list(pitch)[-1] == "white noise"
    assert pitch["real held-out audio"]["n"] == 3 and pitch["white noise"]["n"] == 1
    for r in pitch.values():
        assert 1 / 12 - 1e-9 <= r["clarity"] <= 1, r
    assert pitch["white noise"]["clarity"] < 0.2 < pitch["real held-out audio"]["clarity"]  # 1 kHz clicks: one class

    notes = {r["name"]: r for r in rep["notes"]["rows"]}
    assert list(notes) == ["generated clips", "real held-out audio", "white noise"]
    real = notes["real held-out audio"]
    assert real["onsets_per_s"] == pytest.approx(sum(HELDOUT_BPMS) / 60 / 3, rel=0.35)  # one onset per click
    assert real["beat_salience"] > notes["white noise"]["beat_salience"]  # clicks pulse, noise does not
    assert notes["white noise"]["pitch_classes"] == 0 == real["pitch_classes"]  # 10 ms clicks are not notes
    assert rep["notes"]["generated_over_real"]["pitch_classes"] is None  # undefined, and said so
    assert rep["notes"]["generated_over_real"]["onsets_per_s"] == pytest.approx(
        notes["generated clips"]["onsets_per_s"] / real["onsets_per_s"])

    tempo = rep["tempo"]
    assert [r["n"] for r in tempo["rows"]] == [4, 4 * 2, 3, 3 * 2]
    bands = {(r["name"].split(" vs ")[0], r["band"]): r for r in tempo["bands"]}
    # Requests at 90 / 100 / 120 / 90 BPM: two in the slow band, two in the middle one.
    assert bands[("generated", "all")]["n"] == 4 and bands[("generated", "40-95")]["n"] == 2
    assert bands[("generated", "95-130")]["n"] == 2 and ("generated", "130-240") not in bands
    assert bands[("real held-out", "all")]["strict"] == 1.0  # the tracker reads the click tracks exactly
    for r in tempo["bands"]:
        assert 0 <= r["strict"] <= 1 and 0 <= r["double"] <= 1 and r["strict"] + r["double"] + r["half"] <= 1
    for r in tempo["rows"]:
        assert 0 <= r["ok"] <= r["ok_or_octave"] <= 1 and _finite(r["median_error"]) and r["median_error"] >= 0
    tracker, tracker_chance = tempo["rows"][2], tempo["rows"][3]
    assert tracker["ok"] == 1.0 and tracker_chance["ok"] == 0.0  # click tracks at 90 / 100 / 120 BPM
    assert [c["requested_bpm"] for c in tempo["generated"]] == [90.0, 100.0, 120.0, 90.0]
    assert [c["seed"] for c in tempo["generated"]] == [0, 1, 2, 3]
    assert all(_finite(c["measured_bpm"]) for c in tempo["generated"] + tempo["heldout"])

    rows = rep["clap"]["rows"]
    assert [r["n"] for r in rows] == [3, 3, 3]  # generated: 4 clips, 3 distinct prompts
    for r in rows:
        assert 0 <= r["top1"] <= r["top5"] <= 1
        assert r["chance1"] == pytest.approx(1 / 3) and r["chance5"] == 1.0
        assert r["top5"] == 1.0  # N = 3 < 5: every clip is within the top 5


def _bad(model, corpus, *extra):
    return ["--model", str(model), "--corpus", str(corpus), "--device", "cpu", *extra]


def test_bad_arguments_exit_2(model, tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    with pytest.raises(SystemExit) as e:
        main(["--corpus", str(corpus)])
    assert e.value.code == 2 and "required: --model" in capsys.readouterr().err
    for extra in (["--num", "0"], ["--duration", "100"], ["--steps", "0"], ["--seed", "-1"],
                  ["--vae-seconds", "0"], ["--variant", "presto-s"], ["--device", "tpu"]):
        assert main(_bad(model, corpus, *extra)) == 2, extra
    assert main(_bad(tmp_path / "missing", corpus)) == 2
    assert main(_bad(model, tmp_path / "nowhere")) == 2
    assert main(_bad(model, _corpus(tmp_path / "train_only", heldout=False))) == 2
    err = capsys.readouterr().err
    assert "error: --num must be an integer in [1, 1024], got 0" in err and "split 'heldout'" in err
    assert err.splitlines() == [ln for ln in err.splitlines() if ln.startswith("error: ")]  # one line each
    assert len(err.splitlines()) == 10


def test_report_stereo_section_on_a_stereo_corpus(tmp_path, capsys):
    from tests.factory import make_model_folder

    model = make_model_folder(tmp_path / "model", variants=("base",), with_clap=False, with_m2s=True)
    corpus = _corpus(tmp_path / "corpus")
    for i, bpm in enumerate(HELDOUT_BPMS):  # the same clicks, panned a little and with a decorrelated hiss
        x = click_track(bpm, 5.0)
        hiss = 0.01 * np.random.default_rng(i).standard_normal((x.size, 2))
        sf.write(corpus / f"c{i}.wav", np.stack([1.2 * x, 0.8 * x], axis=1) + hiss, SR)
    out = tmp_path / "r.json"
    rc = main(["--model", str(model), "--corpus", str(corpus), "--num", "2", "--duration", "1", "--steps", "1",
               "--vae-seconds", "1", "--device", "cpu", "--precision", "fp32", "--json", str(out),
               "--markdown", str(tmp_path / "r.md")])
    assert rc == 0
    st = json.loads(out.read_text())["stereo"]
    names = [r["name"] for r in st["rows"]]
    assert names == ["generated (2 clips), widened", "real held-out (3 pieces)", "real held-out mids, widened"]
    real = st["rows"][1]
    assert 0.04 < real["width_median"] < 0.15  # the pan alone gives ((1.2 - 0.8) / 2)^2 = 0.04; the hiss adds
    assert all(r["width_q1"] <= r["width_median"] <= r["width_q3"] for r in st["rows"])
    assert _finite(st["side_mrstft"]) and _finite(st["generated_over_real_width"])
    assert "## Stereo (mono-to-stereo)" in (tmp_path / "r.md").read_text()


def test_report_beat_grid_section(model, tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    for i, bpm in enumerate(HELDOUT_BPMS):  # pieces longer than the 8 s measured
        sf.write(corpus / f"c{i}.wav", click_track(bpm, 9.0), SR)
    out = tmp_path / "g.json"
    rc = main(["--model", str(model), "--corpus", str(corpus), "--num", "2", "--duration", "1", "--steps", "1",
               "--vae-seconds", "1", "--grid-seconds", "8", "--device", "cpu", "--precision", "fp32",
               "--json", str(out), "--markdown", str(tmp_path / "g.md")])
    assert rc == 0
    g = json.loads(out.read_text())["grid"]
    assert g["seconds"] == 8 and [r["name"] for r in g["rows"]] == ["generated clips", "real held-out pieces"]
    real = g["rows"][1]  # click tracks from their first sample: on the grid, no drift
    assert real["n"] == 2 and real["on_grid"] == 1.0 and real["max_drift_ms"] <= 10
    assert all(_finite(r["max_drift_ms"]) and 0 <= r["on_grid"] <= 1 for r in g["rows"]) and len(g["clips"]) == 2
    assert "## Beat grid over one window" in (tmp_path / "g.md").read_text()
    assert main(_bad(model, corpus, "--grid-seconds", "4")) == 2


def test_report_without_clap_skips_retrieval(tmp_path, capsys):
    from tests.factory import make_model_folder

    model = make_model_folder(tmp_path / "model", variants=("base",), with_clap=False)
    out = tmp_path / "r.json"
    rc = main(["--model", str(model), "--corpus", str(_corpus(tmp_path / "corpus")), "--num", "1", "--duration", "1",
               "--steps", "1", "--vae-seconds", "1", "--device", "cpu", "--precision", "fp32", "--json", str(out)])
    assert rc == 0 and "no CLAP component; skipped" in capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert rep["clap"] is None and rep["steps"] == 1 and rep["tempo"]["rows"][0]["n"] == 1


def test_report_with_an_adapter_names_it_and_changes_the_clips(model, tmp_path, capsys):
    from tests.factory import make_adapter

    corpus = _corpus(tmp_path / "corpus")
    adapter = make_adapter(model, tmp_path / "style", components=("base",), name="style")
    common = ["--model", str(model), "--corpus", str(corpus), "--num", "1", "--duration", "1", "--steps", "1",
              "--vae-seconds", "1", "--device", "cpu", "--precision", "fp32"]
    for name, extra in (("plain", []), ("adapted", ["--adapter", f"{adapter}:0.5"])):
        assert main([*common, *extra, "--json", str(tmp_path / f"{name}.json"), "--audio-dir", str(tmp_path / name),
                     "--markdown", str(tmp_path / f"{name}.md")]) == 0
    rep = json.loads((tmp_path / "adapted.json").read_text())
    (a,) = rep["adapters"]
    assert a["name"] == "style" and a["weight"] == 0.5 and len(a["sha256"]) == 64
    assert "adapter style at 0.5" in (tmp_path / "adapted.md").read_text()
    assert json.loads((tmp_path / "plain.json").read_text())["adapters"] == []
    plain, _ = sf.read(tmp_path / "plain" / "clip-00.wav")
    adapted, _ = sf.read(tmp_path / "adapted" / "clip-00.wav")
    assert np.abs(plain - adapted).max() > 1e-4  # same seed, the adapter changes the clip
    capsys.readouterr()
    assert main([*common, "--adapter", f"{adapter}:3"]) == 2
    assert "adapter weight must be in [0, 2], got 3" in capsys.readouterr().err

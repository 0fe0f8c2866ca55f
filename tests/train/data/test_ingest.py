"""train.data.ingest: a folder of a person's audio (every format, rate and layout it accepts, plus
bad files) becomes a dataset that read_metadata accepts; labels say where they came from; re-runs
keep what was written."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from train.data.dataset import check_audio, read_metadata
from train.data.ingest import PEAK, IngestConfig, heldout_sources, ingest, main, prepare
from train.data.ingest_labels import (
    SidecarError, caption_from_names, estimate_bpm, fold_bpm, read_sidecar,
)


def clicks(bpm: float, seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Decaying noise bursts on every beat plus a quiet tone: (N, channels) float32."""
    g = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = 0.05 * np.sin(2 * np.pi * 220 * t)
    burst = int(0.03 * sr)
    env = np.exp(-np.arange(burst) / (0.005 * sr))
    for b in np.arange(0, seconds, 60.0 / bpm):
        a = int(b * sr)
        y[a: a + burst] += (g.standard_normal(burst) * env)[: n - a]
    y = (0.5 * y / np.abs(y).max()).astype(np.float32)
    return np.stack([y] * channels, axis=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("my-audio")
    (root / "Jazz").mkdir()
    (root / "deep" / "er").mkdir(parents=True)
    sf.write(root / "Jazz" / "late_night-blues 02.wav", clicks(100, 20.0, 48000, 2), 48000)  # split, estimated BPM
    sf.write(root / "tagged.mp3", clicks(120, 6.0, 22050, 1, 1), 22050, format="MP3")
    from mutagen.easyid3 import EasyID3

    tags = EasyID3()
    tags["genre"], tags["title"] = "Chiptune", "Boss Fight"
    tags.save(root / "tagged.mp3")
    sf.write(root / "deep" / "er" / "side.ogg", clicks(90, 7.0, 32000, 1, 2), 32000, format="OGG")
    sf.write(root / "silent.flac", np.zeros((6 * 16000, 1), np.float32), 16000)
    sf.write(root / "short.wav", clicks(120, 1.0, 16000), 16000)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    (root / "notes.txt").write_text("not audio")
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "bpm"])
        w.writerow(["deep/er/side.ogg", "dusty lo-fi organ loop", "90"])
    return root


CFG = IngestConfig(sample_rate=16000, channels=2, clip_seconds=8.0, min_seconds=3.0, heldout=0.3)


def test_ingest_writes_a_dataset_with_labelled_sources(folder, tmp_path):
    lines = []
    summary = ingest(folder, tmp_path / "data", CFG, log=lines.append)
    assert summary["files"] == 6 and summary["ingested"] == 3
    assert set(summary["skipped"]) == {"silent.flac", "short.wav", "broken.wav"}
    assert "silent" in summary["skipped"]["silent.flac"] and "too short" in summary["skipped"]["short.wav"]
    assert summary["skipped"]["broken.wav"].startswith("unreadable")
    assert len(lines) == 7 and "skipped 3" in lines[-1]  # one line per file, then the summary
    recs = read_metadata(tmp_path / "data", split=None)
    by_source = {}
    for r in recs:
        by_source.setdefault(r["source"], []).append(r)
    # 20 s at 8 s clips: two full clips and a 4 s tail (>= min_seconds).
    assert [r["duration"] for r in by_source["Jazz/late_night-blues 02.wav"]] == [8.0, 8.0, 4.0]
    jazz = by_source["Jazz/late_night-blues 02.wav"][0]
    assert (jazz["caption"], jazz["caption_source"], jazz["bpm_source"]) == ("jazz, late night blues", "names", "estimate")
    assert abs(jazz["bpm"] - 100) < 4
    tagged = by_source["tagged.mp3"][0]
    assert (tagged["caption"], tagged["caption_source"]) == ("Chiptune, Boss Fight", "tags")
    side = by_source["deep/er/side.ogg"][0]
    assert (side["caption"], side["bpm"], side["caption_source"], side["bpm_source"]) == \
        ("dusty lo-fi organ loop", 90.0, "sidecar", "sidecar")
    assert side["captions"][1] == "dusty lo-fi organ loop, 90 BPM"
    check_audio(recs, min_seconds=3.0, channels=2)  # every clip: 2 channels at the rate recorded
    # Whole files are held out: every clip of a source has the same split, and one file is held out.
    assert all(len({r["split"] for r in rs}) == 1 for rs in by_source.values())
    assert sum(rs[0]["split"] == "heldout" for rs in by_source.values()) == 1
    prompts = json.loads((tmp_path / "data" / "heldout_prompts.json").read_text())
    assert len(prompts) == summary["heldout_clips"] >= 1


def test_clips_are_loudness_normalised_and_peak_limited(folder, tmp_path):
    import pyloudnorm

    ingest(folder, tmp_path / "data", CFG, log=lambda s: None)
    for r in read_metadata(tmp_path / "data", split=None):
        wav, sr = sf.read(r["abs_path"], always_2d=True)
        assert sr == 16000 and wav.shape[1] == 2
        assert np.abs(wav).max() <= PEAK + 1e-4
    sr = 16000
    tone = 0.02 * np.sin(2 * np.pi * 330 * np.arange(5 * sr) / sr)[None].astype(np.float32)
    out = prepare(tone, sr, CFG)  # a gentle signal reaches the target loudness
    assert out.shape == (2, 5 * sr) and abs(pyloudnorm.Meter(sr).integrated_loudness(out.T) - CFG.lufs) < 0.2
    peaky = clicks(100, 5.0, sr)[:, 0][None]  # a peaky one stops at -1 dBFS, below the target
    out = prepare(peaky, sr, CFG)
    assert abs(np.abs(out).max() - PEAK) < 1e-6 and pyloudnorm.Meter(sr).integrated_loudness(out.T) < CFG.lufs


def test_rerun_keeps_finished_files_and_redoes_changed_ones(folder, tmp_path, monkeypatch):
    out = tmp_path / "data"
    ingest(folder, out, CFG, log=lambda s: None)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()}
    lines = []
    ingest(folder, out, CFG, log=lines.append)
    assert sum("kept from an earlier run" in s for s in lines) == 6
    assert {p.name: p.stat().st_mtime_ns for p in (out / "audio").iterdir()} == before
    # An interrupted run: the state has the first file only; the re-run redoes the rest.
    state = (out / "ingest-state.jsonl").read_text().splitlines()
    (out / "ingest-state.jsonl").write_text(state[0] + "\n" + state[1][:20])  # a torn last line
    lines = []
    ingest(folder, out, CFG, log=lines.append)
    assert sum("kept" in s for s in lines) == 1
    assert len(read_metadata(out, split=None)) == 5


def test_main_exit_statuses(folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(tmp_path / "o1")]) == 1
    assert main([str(folder), "--out", str(tmp_path / "o2"), "--channels", "3"]) == 2
    assert "--channels must be 1 or 2" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o3")]) == 2


def test_sidecar_tables(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"x/a.wav": {"caption": " warm  pads ", "bpm": 72}, "b.wav": "just a caption"}))
    assert read_sidecar(tmp_path / "a.json") == {"x/a.wav": {"caption": "warm pads", "bpm": 72.0},
                                                 "b.wav": {"caption": "just a caption"}}
    (tmp_path / "b.json").write_text(json.dumps([{"file": "c.flac", "bpm": "400"}]))
    with pytest.raises(SidecarError, match="outside 30-300"):
        read_sidecar(tmp_path / "b.json")
    (tmp_path / "c.csv").write_text("name,caption\nx.wav,hi\n")
    with pytest.raises(SidecarError, match="'path' or 'file' column"):
        read_sidecar(tmp_path / "c.csv")


def test_label_helpers():
    assert caption_from_names("Ambient_Stuff/myDreamyLoop_final v2.flac") == "ambient stuff, my dreamy loop"
    assert caption_from_names("01.wav") == "music"
    assert fold_bpm(240.0) == 120.0 and fold_bpm(45.0) == 90.0 and fold_bpm(70.0) == 70.0
    assert estimate_bpm(np.zeros(16000 * 4, np.float32), 16000) is None
    assert abs(estimate_bpm(clicks(128, 12.0, 22050)[:, 0], 22050) - 128) < 4
    files = [f"f{i}.wav" for i in range(10)]
    held = heldout_sources(files, 0.2, seed=0)
    assert len(held) == 2 and held == heldout_sources(list(reversed(files)), 0.2, seed=0)
    assert heldout_sources(["one.wav"], 0.5, 0) == set()

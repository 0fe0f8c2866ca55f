"""train.data.resample: a mono WAV mirror of a dataset folder at one sample rate."""

import json

import numpy as np
import soundfile as sf

from train.data.dataset import AudioDataset, read_metadata
from train.data.resample import main, resample_dataset


def test_mirror_is_mono_at_rate_and_keeps_labels(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "audio").mkdir(parents=True)
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], 1)
    sf.write(src / "audio" / "a.flac", stereo.astype(np.float32), 44100)
    sf.write(src / "audio" / "b.wav", (0.2 * np.sin(2 * np.pi * 220 * t[:22050])).astype(np.float32), 22050)
    recs = [{"path": "audio/a.flac", "caption": "a", "bpm": 100, "genre": "x"},
            {"path": "audio/b.wav", "caption": "b", "bpm": 90, "split": "heldout"}]
    (src / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (src / "heldout_prompts.json").write_text('["b"]')

    resample_dataset(src, out, 16000)
    got = read_metadata(out, split=None)
    assert [r["path"] for r in got] == ["audio/a.wav", "audio/b.wav"]
    assert [r["split"] for r in got] == ["train", "heldout"] and got[0]["genre"] == "x"
    assert (out / "heldout_prompts.json").read_text() == '["b"]'
    a, sr = sf.read(out / "audio" / "a.wav", always_2d=True)
    assert sr == 16000 and a.shape == (16000, 1)
    # mono mix-down of a 0.3 / 0.1 sine pair is a 0.2 sine: RMS 0.2 / sqrt(2)
    assert abs(np.sqrt((a[1000:-1000] ** 2).mean()) - 0.2 / np.sqrt(2)) < 2e-3
    b, sr = sf.read(out / "audio" / "b.wav")
    assert sr == 16000 and len(b) == 16000  # 1 s at 22.05 kHz
    assert len(AudioDataset(out, 0.25, 16000)[0]["wav"][0]) == 4000

    before = (out / "audio" / "a.wav").stat().st_mtime_ns
    resample_dataset(src, out, 16000)  # an interrupted run continues: converted files are kept
    assert (out / "audio" / "a.wav").stat().st_mtime_ns == before


def test_bad_arguments_exit_2(tmp_path):
    assert main(["--src", str(tmp_path), "--out", str(tmp_path / "o"), "--rate", "16000"]) == 2  # no metadata
    assert main(["--src", str(tmp_path), "--out", str(tmp_path / "o"), "--rate", "0"]) == 2

"""Audio dataset (crops, loudness, augmentation + labels, determinism, collate) and the latent
cache (encode_latents / LatentDataset) on small synthetic audio: no FluidSynth needed."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from train.data.augment import AugmentConfig, rewrite_caption, rms_normalize
from train.data.dataset import AudioDataset, collate, load_mono, read_metadata
from train.data.latents import LatentDataset, encode_latents
from train.data.corpus.music_theory import transpose_key

CHORDS = {"C": (261.63, 329.63, 392.00), "A": (220.00, 261.63, 329.63)}


def _groove(sr: int, seconds: float, bpm: float, key: str, rng: np.random.Generator) -> np.ndarray:
    """A triad of the key plus a kick-like click on every beat."""
    t = np.arange(int(sr * seconds)) / sr
    y = sum(0.08 * np.sin(2 * np.pi * f * t) for f in CHORDS[key])
    click_n = int(0.04 * sr)
    env = np.exp(-np.arange(click_n) / (0.008 * sr))
    click = env * (0.6 * np.sin(2 * np.pi * 70 * np.arange(click_n) / sr) + 0.3 * rng.standard_normal(click_n))
    for beat in np.arange(0, seconds, 60.0 / bpm):
        i = int(beat * sr)
        seg = y[i: i + click_n]
        seg += click[: len(seg)]
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    a = _groove(22050, 12.0, 120, "C", rng)
    sf.write(root / "audio/a.wav", np.stack([a, 0.5 * a], 1), 22050)  # stereo, 22.05 kHz
    sf.write(root / "audio/b.flac", _groove(44100, 3.0, 100, "A", rng), 44100)  # shorter than crops
    sf.write(root / "audio/c.wav", _groove(44100, 6.0, 90, "C", rng), 44100)
    recs = [
        {"path": "audio/a.wav", "captions": ["a test groove in C major, 120 BPM", "a plain click groove"],
         "bpm": 120.0, "key": "C", "mode": "major", "genre": "test"},
        {"path": "audio/b.flac", "caption": "short A minor loop at 100 BPM", "bpm": 100, "key": "A",
         "mode": "minor", "split": "train"},
        {"path": "audio/c.wav", "caption": "held-out groove", "bpm": 90.0, "split": "heldout"},
    ]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def _tempo(wav: np.ndarray, sr: int) -> float:
    from train.data.inspect_corpus import measure_tempo

    return measure_tempo(wav, sr)


def test_read_metadata_splits_and_validation(data_dir, tmp_path):
    assert [r["path"] for r in read_metadata(data_dir)] == ["audio/a.wav", "audio/b.flac"]
    assert [r["path"] for r in read_metadata(data_dir, "heldout")] == ["audio/c.wav"]
    assert len(read_metadata(data_dir, None)) == 3
    assert read_metadata(data_dir)[1]["captions"] == ["short A minor loop at 100 BPM"]
    for bad in ({"path": "x.wav", "bpm": 90}, {"path": "x.wav", "caption": "c"}, {"caption": "c", "bpm": 1},
                {"path": "x.wav", "caption": "c", "bpm": "fast"}):
        (tmp_path / "metadata.jsonl").write_text(json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match="metadata.jsonl:1"):
            read_metadata(tmp_path)


def test_crops_length_mono_loudness(data_dir):
    ds = AudioDataset(data_dir, seconds=4.0, sample_rate=44100, seed=0)
    for i in range(len(ds)):
        item = ds[i]
        wav = item["wav"]
        assert wav.shape == (1, 4 * 44100) and wav.dtype == torch.float32
        assert item["caption"] in ds.items[i]["captions"] and item["bpm"] == ds.items[i]["bpm"]
    a = ds[0]["wav"].numpy()
    assert 20 * np.log10(np.sqrt(np.mean(a ** 2))) == pytest.approx(-20.0, abs=0.2)
    b = ds[1]["wav"].numpy()[0]  # a 3 s file under a 4 s crop: audio then zeros
    assert np.abs(b[: 2 * 44100]).max() > 0.05 and np.abs(b[int(3.1 * 44100):]).max() == 0
    assert np.abs(a).max() <= 0.99
    loud = rms_normalize(np.r_[np.ones(10), np.zeros(990)].astype(np.float32), -10.0)
    assert np.abs(loud).max() == pytest.approx(0.99)  # peak limit wins over the RMS target
    assert np.all(rms_normalize(np.zeros(100, np.float32)) == 0)


def test_determinism_by_seed_and_epoch(data_dir):
    aug = AugmentConfig()
    d1 = AudioDataset(data_dir, 3.0, 44100, augment=aug, seed=5)
    d2 = AudioDataset(data_dir, 3.0, 44100, augment=aug, seed=5)
    x, y = d1[0], d2[0]
    assert torch.equal(x["wav"], y["wav"]) and x["caption"] == y["caption"] and x["bpm"] == y["bpm"]
    starts = {AudioDataset(data_dir, 3.0, 44100, seed=s)[0]["start_s"] for s in range(4)}
    assert len(starts) == 4
    d1.set_epoch(1)
    assert d1[0]["start_s"] != y["start_s"]


def test_time_stretch_scales_bpm_label_and_measured_tempo(data_dir):
    plain = AudioDataset(data_dir, 8.0, 44100, seed=1)[0]
    assert _tempo(plain["wav"][0].numpy(), 44100) == pytest.approx(120, rel=0.04)
    for rate in (0.8, 1.2):
        aug = AugmentConfig(pitch_prob=0.0, stretch_prob=1.0, stretch_range=(rate, rate))
        ds = AudioDataset(data_dir, 8.0, 44100, augment=aug, seed=1)
        item = ds[0]
        assert item["stretch"] == pytest.approx(rate) and item["bpm"] == pytest.approx(120 * rate)
        assert item["wav"].shape == (1, 8 * 44100)
        assert _tempo(item["wav"][0].numpy(), 44100) == pytest.approx(120 * rate, rel=0.04)
        if "BPM" in item["caption"]:
            assert f"{round(120 * rate)} BPM" in item["caption"]


def test_pitch_shift_changes_key_label_and_chroma(data_dir):
    import librosa

    aug = AugmentConfig(pitch_prob=1.0, pitch_semitones=2, stretch_prob=0.0)
    plain = AudioDataset(data_dir, 4.0, 44100, seed=2)[0]
    seen = set()
    for seed in range(6):
        item = AudioDataset(data_dir, 4.0, 44100, augment=aug, seed=seed)[0]
        n = item["semitones"]
        assert n in (-2, -1, 1, 2) and item["bpm"] == 120.0
        assert item["key"] == transpose_key("C", n, "major")
        if "major" in item["caption"]:
            assert f"{item['key']} major" in item["caption"]
        if n not in seen:
            seen.add(n)
            c0 = librosa.feature.chroma_stft(y=plain["wav"][0].numpy(), sr=44100).mean(1)
            c1 = librosa.feature.chroma_stft(y=item["wav"][0].numpy(), sr=44100).mean(1)
            shift = int(np.argmax([np.dot(np.roll(c0, k), c1) for k in range(12)]))
            assert shift == n % 12
    assert len(seen) >= 2


def test_rewrite_caption():
    assert rewrite_caption("dusty beat, 84 BPM", bpm=92.4) == "dusty beat, 92 BPM"
    assert rewrite_caption("in A minor at 90 bpm", 81, "A", "B") == "in B minor at 81 bpm"
    assert rewrite_caption("Ab major and A minor", None, "A", "Bb") == "Ab major and Bb minor"


def test_collate_and_dataloader(data_dir):
    ds = AudioDataset(data_dir, 2.0, 44100, augment=AugmentConfig(), seed=0)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert batch["wav"].shape == (2, 1, 88200) and batch["bpm"].dtype == torch.float32
    assert batch["bpm"].shape == (2,) and isinstance(batch["caption"], list) and len(batch["caption"]) == 2
    assert batch["semitones"].dtype == torch.int64


class TinyVAE(torch.nn.Module):
    """Stand-in with the presto_core VAE interface: average-pool by hop into C channels."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.cfg = SimpleNamespace(sample_rate=16000, hop=320)
        self.channels = channels

    def encode_latents(self, wav, sample=False):
        x = torch.nn.functional.avg_pool1d(wav.abs(), self.cfg.hop)
        return torch.cat([x * (k + 1) for k in range(self.channels)], dim=1)


def test_latent_cache_and_dataset(data_dir, tmp_path):
    vae = TinyVAE()
    aug = AugmentConfig(pitch_prob=1.0, stretch_prob=1.0, stretch_range=(0.9, 0.9))
    path = encode_latents(data_dir, vae, tmp_path / "cache.safetensors", copies=1, augment=aug, seed=0)
    ds = LatentDataset(path, frames=64, seed=0)
    metas = ds.header["items"]
    assert len(ds) == 4 and ds.frame_rate == 50.0 and ds.header["channels"] == 4
    assert [m["path"] for m in metas] == ["audio/a.wav"] * 2 + ["audio/b.flac"] * 2
    assert metas[0]["frames"] == 600 and metas[2]["frames"] == 150  # 12 s and 3 s at 50 fps
    assert metas[1]["bpm"] == pytest.approx(108.0) and "108 BPM" in metas[1]["captions"][0]
    assert metas[1]["key"] == transpose_key("C", metas[1]["semitones"], "major") != "C"
    # the un-augmented item is exactly the VAE applied to the normalised, resampled file
    wav = rms_normalize(load_mono(str(data_dir / "audio/a.wav"), 16000), -20.0)
    ref = vae.encode_latents(torch.from_numpy(wav)[None, None])[0]
    assert torch.allclose(ds.latents_of(0), ref, atol=1e-6)
    item = ds[0]
    assert item["latents"].shape == (4, 64) and item["length"] == 64 and item["bpm"] == 120.0
    assert torch.equal(item["latents"], ref[:, item["start"]: item["start"] + 64])
    assert torch.equal(LatentDataset(path, 64, seed=0, mmap=False)[0]["latents"], item["latents"])
    long = LatentDataset(path, frames=200, seed=0)[2]  # 150-frame item: zero-padded
    assert long["length"] == 150 and long["latents"].shape == (4, 200) and long["latents"][:, 150:].abs().sum() == 0
    ds2 = LatentDataset(path, 64, seed=0)
    assert torch.equal(ds2[0]["latents"], item["latents"]) and ds2[0]["caption"] == item["caption"]
    ds2.set_epoch(3)
    assert ds2[0]["start"] != item["start"]
    batch = collate([ds[i] for i in range(4)])
    assert batch["latents"].shape == (4, 4, 64) and batch["length"].tolist() == [64] * 4


def test_crop_start_in_seconds_counts_earlier_chunks_of_the_file(data_dir, tmp_path):
    """start_s places a crop on its file's timeline (the beat grid's origin), across chunks."""
    vae = TinyVAE()
    path = encode_latents(data_dir, vae, tmp_path / "chunks.safetensors", chunk_seconds=5.0)
    ds = LatentDataset(path, frames=40, seed=0)
    metas = ds.header["items"]
    # a.wav (12 s) -> chunks of 5, 5 and 2 s; b.flac (3 s) -> one
    assert [(m["path"], m["chunk"], m["frames"]) for m in metas] == [
        ("audio/a.wav", 0, 250), ("audio/a.wav", 1, 250), ("audio/a.wav", 2, 100), ("audio/b.flac", 0, 150)]
    for i, first_s in enumerate([0.0, 5.0, 10.0, 0.0]):
        item = ds[i]
        assert item["start_s"] == pytest.approx(first_s + item["start"] / ds.frame_rate)


def test_latent_cache_with_presto_vae(data_dir, tmp_path):
    """Interface check against the real presto_core VAE (tiny config, untrained)."""
    ae = pytest.importorskip("presto_core.autoencoder")
    vae = ae.AudioVAE(ae.VAEConfig.tiny())
    path = encode_latents(data_dir, vae, tmp_path / "c.safetensors", split="heldout")
    ds = LatentDataset(path, frames=32)
    cfg = vae.cfg
    assert ds.header["hop"] == cfg.hop and ds.header["items"][0]["frames"] == -(-6 * cfg.sample_rate // cfg.hop)
    assert ds[0]["latents"].shape == (cfg.latent_channels, 32) and torch.isfinite(ds[0]["latents"]).all()


def test_stereo_crops_keep_both_channels_and_mono_files_are_refused(tmp_path):
    from tests.fixtures import make_corpus

    stereo = make_corpus(tmp_path / "st", stereo=True)
    ds = AudioDataset(stereo, seconds=0.5, sample_rate=16000, seed=0, channels=2)
    item = ds[0]
    assert item["wav"].shape == (2, 8000) and item["wav"].dtype == torch.float32
    left, right = item["wav"]
    assert not torch.allclose(left, right)  # the tone is panned: the channels differ
    mono_view = AudioDataset(stereo, seconds=0.5, sample_rate=16000, seed=0, target_db=None)
    raw = AudioDataset(stereo, seconds=0.5, sample_rate=16000, seed=0, channels=2, target_db=None)
    torch.testing.assert_close(mono_view[0]["wav"][0], raw[0]["wav"].mean(0))  # same crop, mixed down
    mono = make_corpus(tmp_path / "mono")
    with pytest.raises(ValueError, match=r"00\.wav: 1 channel\(s\), but 2 are needed"):
        AudioDataset(mono, seconds=0.5, sample_rate=16000, channels=2)
    with pytest.raises(ValueError, match="channels must be 1"):
        AudioDataset(stereo, seconds=0.5, sample_rate=16000, channels=3)

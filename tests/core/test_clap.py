"""CLAP: the embedded model (shapes, loss, a short real training run, scorer, resampling),
rejection-sampling arithmetic, and laion-clap checkpoints loaded fully offline."""

import math

import numpy as np
import pytest
import torch

from presto_core.clap import (
    ClapConfig,
    ClapScorer,
    EmbeddedClap,
    EmbeddedClapScorer,
    num_candidates,
    prepare_audio,
    select_best,
)
from presto_core.errors import PrestoError
from presto_core.text import MiniLMTextEncoder

SR = 16000
TINY = dict(sample_rate=SR, n_fft=512, hop_length=160, n_mels=32, channels=(8, 16, 32), time_layers=1,
            heads=2, dropout=0.0, text_hidden=64, embed_dim=32)
CAPTIONS = ["a high pitched sine tone", "a low rumbling sine tone", "a burst of white noise", "a train of sharp clicks"]


def synth_clip(kind: int, g: torch.Generator, sr: int = SR, seconds: float = 0.5) -> torch.Tensor:
    """One random clip (N,) of class ``kind`` (index into CAPTIONS): random pitch, level, phase."""
    t = torch.arange(int(sr * seconds)) / sr
    u = torch.rand(3, generator=g)
    amp = 0.2 + 0.6 * u[0]
    if kind == 0:
        return amp * torch.sin(2 * math.pi * (1500 + 1500 * u[1]) * t + 6.28 * u[2])
    if kind == 1:
        return amp * torch.sin(2 * math.pi * (80 + 200 * u[1]) * t + 6.28 * u[2])
    if kind == 2:
        env = ((t > 0.1 * u[1]) & (t < 0.3 + 0.2 * u[2])).float()
        return 0.3 * amp * env * torch.randn(t.shape, generator=g)
    period = int(sr / (8 + 20 * u[1]))
    clicks = torch.zeros_like(t)
    clicks[int(u[2] * period)::period] = amp
    return clicks


def batch(kinds, g, **kw) -> torch.Tensor:
    return torch.stack([synth_clip(int(k), g, **kw) for k in kinds])


@pytest.fixture(scope="module")
def text_encoder():
    return MiniLMTextEncoder(max_tokens=32)


@pytest.fixture(scope="module")
def trained(text_encoder):
    """A tiny EmbeddedClap trained for 80 steps on the 4 synthetic classes (a few seconds)."""
    torch.manual_seed(0)
    model = EmbeddedClap(ClapConfig(**TINY))
    emb, mask = text_encoder.encode(CAPTIONS)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(80):
        # Every class once per batch: distinct captions, so InfoNCE has no false negatives.
        order = torch.randperm(4, generator=g)
        a, t = model(batch(order, g), emb[order], mask[order])
        loss = model.contrastive_loss(a, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


def test_default_config_and_shapes():
    model = EmbeddedClap()
    assert sum(p.numel() for p in model.parameters()) == 2_689_121
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    # The text encoder and the derived mel/window tensors are not weights.
    assert not any(k.startswith(("mel_fb", "window")) for k in model.state_dict())
    tiny = EmbeddedClap(ClapConfig(**TINY))
    g = torch.Generator().manual_seed(0)
    a = tiny.audio_embed(torch.randn(3, 4000, generator=g) * 0.1)
    assert a.shape == (3, 32) and torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    a_short = tiny.audio_embed(torch.randn(2, 100, generator=g))  # shorter than n_fft
    assert a_short.shape == (2, 32) and torch.isfinite(a_short).all()
    emb = torch.randn(3, 7, 384, generator=g)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    t = tiny.text_embed_from_tokens(emb, mask)
    assert t.shape == (3, 32) and torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    # Padding positions must not matter.
    emb2 = emb.clone()
    emb2[1, 4:] = 99.0
    assert torch.allclose(tiny.text_embed_from_tokens(emb2, mask), t, atol=1e-6)
    with pytest.raises(PrestoError, match="384"):
        tiny.text_embed_from_tokens(torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool))


def test_config_validation():
    with pytest.raises(PrestoError, match="heads"):
        ClapConfig(channels=(8, 30), heads=4)
    with pytest.raises(PrestoError, match="f_max"):
        ClapConfig(sample_rate=16000, f_max=12000.0)
    assert ClapConfig(channels=[8, 16]).channels == (8, 16)  # JSON lists come back as tuples


def test_contrastive_loss_prefers_aligned_pairs():
    model = EmbeddedClap(ClapConfig(**TINY))
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 32, generator=g), dim=-1)
    aligned = model.contrastive_loss(a, a)
    shuffled = model.contrastive_loss(a, a[torch.roll(torch.arange(8), 1)])
    assert aligned.ndim == 0 and aligned < 0.1 < math.log(8) < shuffled
    # Symmetric: swapping the roles of audio and text gives the same loss.
    b = torch.nn.functional.normalize(torch.randn(8, 32, generator=g), dim=-1)
    assert torch.allclose(model.contrastive_loss(a, b), model.contrastive_loss(b, a))


def test_short_training_run_learns_retrieval(trained, text_encoder):
    model, losses = trained
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    scorer = EmbeddedClapScorer(model, text_encoder)
    g = torch.Generator().manual_seed(123)  # held-out clips
    kinds = torch.arange(4).repeat_interleave(6)
    audio = scorer.embed_audio(batch(kinds, g), SR)
    text = scorer.embed_text(CAPTIONS)
    sim = audio @ text.t()  # (24, 4)
    audio_to_text = (sim.argmax(1) == kinds).float().mean().item()
    text_to_audio = (kinds[sim.argmax(0)] == torch.arange(4)).float().mean().item()
    assert audio_to_text >= 0.9, audio_to_text  # chance: 0.25 (1.0 for seeds 0-3)
    assert text_to_audio >= 0.75, text_to_audio  # chance: 0.25


def test_scorer_score_shape_range_and_broadcast(trained, text_encoder):
    model, _ = trained
    scorer = EmbeddedClapScorer(model, text_encoder)
    assert isinstance(scorer, ClapScorer) and scorer.sample_rate == SR
    wav = batch([0, 1, 2], torch.Generator().manual_seed(5))
    s = scorer.score(CAPTIONS[:3], wav, SR)
    assert s.shape == (3,) and s.dtype == torch.float32 and bool(((s >= -1) & (s <= 1)).all())
    one = scorer.score([CAPTIONS[0]], wav, SR)  # one prompt for all candidates
    assert one.shape == (3,) and one.argmax().item() == 0
    stereo = wav[:, None].expand(-1, 2, -1)
    assert torch.allclose(scorer.score(CAPTIONS[:3], stereo, SR), s, atol=1e-5)
    assert model.training is False
    with pytest.raises(PrestoError, match="one prompt or one per clip"):
        scorer.score(CAPTIONS[:2], wav, SR)
    with pytest.raises(PrestoError, match="NaN"):
        scorer.embed_audio(torch.full((1, 1000), float("nan")), SR)
    with pytest.raises(PrestoError, match="sr"):
        scorer.embed_audio(wav, 0)


def test_resampled_input_matches_native_rate(trained, text_encoder):
    """The same analytic signal synthesised at 44.1 kHz and at 16 kHz embeds almost identically."""
    scorer = EmbeddedClapScorer(trained[0], text_encoder)

    def signal(sr):
        t = torch.arange(int(0.5 * sr), dtype=torch.float64) / sr
        chirp = torch.sin(2 * math.pi * (200 * t + 2500 * t**2))
        return (0.3 * torch.sin(2 * math.pi * 2200 * t) + 0.2 * chirp).float()[None]

    native = scorer.embed_audio(signal(SR), SR)
    resampled = scorer.embed_audio(signal(44100), 44100)
    other = scorer.embed_audio(batch([1], torch.Generator().manual_seed(0)), SR)
    assert (native * resampled).sum().item() > 0.99
    assert (native - resampled).norm() < 0.25 * (native - other).norm()
    assert prepare_audio(signal(44100), 44100, SR).shape == (1, 8000)


@pytest.mark.parametrize("ratio,expected", [
    (0.0, [1, 2, 3, 4, 5, 6, 7, 8]),
    (0.25, [2, 3, 4, 6, 7, 8, 10, 11]),
    (0.5, [2, 4, 6, 8, 10, 12, 14, 16]),
    (0.75, [4, 8, 12, 16, 20, 24, 28, 32]),
])
def test_num_candidates_table(ratio, expected):
    assert [num_candidates(n, ratio) for n in range(1, 9)] == expected


def test_num_candidates_float_edges_and_errors():
    # The limits are the user-facing ones of presto_core.limits (reject_ratio [0, 0.9], 32 candidates).
    assert num_candidates(9, 0.1) == 10 and num_candidates(7, 0.3) == 10 and num_candidates(1, 0.9) == 10
    assert num_candidates(np.int64(4), np.float64(0.5)) == 8
    for bad in (-0.1, 0.95, 1.0, float("nan"), "0.5", None):
        with pytest.raises(PrestoError, match=r"reject_ratio.*\[0, 0.9\]"):
            num_candidates(4, bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(PrestoError, match="number of clips"):
            num_candidates(bad, 0.5)


def test_num_candidates_uses_the_request_limits():
    from presto_core.request import LIMITS

    assert LIMITS["reject_ratio"] == (0.0, 0.9) and LIMITS["candidates"] == (1, 32)
    assert num_candidates(8, 0.75) == 32  # the most candidates allowed
    with pytest.raises(PrestoError, match="at most 32 candidates"):
        num_candidates(8, 0.8)
    with pytest.raises(PrestoError, match=r"number of clips.*\[1, 32\]"):
        num_candidates(33, 0.0)


def test_no_lazy_laion_reexport():
    """LaionClapScorer lives in clap_laion only (clap.py no longer imports it back: no circle)."""
    import presto_core.clap as clap

    assert not hasattr(clap, "LaionClapScorer")


def test_select_best_order_ties_and_errors():
    scores = torch.tensor([0.1, 0.7, 0.3, 0.7, float("nan"), 0.9])
    idx = select_best(scores, 4)
    assert idx.dtype == torch.long and idx.tolist() == [5, 1, 3, 2]
    assert select_best(scores, 6).tolist() == [5, 1, 3, 2, 0, 4]
    assert select_best(torch.zeros(5), 3).tolist() == [0, 1, 2]
    for bad_n in (0, 7):
        with pytest.raises(PrestoError, match="n must be"):
            select_best(scores, bad_n)
    with pytest.raises(PrestoError, match="1-D"):
        select_best(torch.zeros(2, 2), 1)


# ---------------------------------------------------------------------------------------------
# laion-clap, offline


FAKE_REV = "0" * 40


def _snapshot(hub, repo: str):
    """An empty snapshot folder laid out like huggingface_hub's cache, with refs/main."""
    d = hub / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / "main").write_text(FAKE_REV)
    snap = d / "snapshots" / FAKE_REV
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _fake_hub_cache(hub):
    """Local stand-ins for what laion-clap pulls from the hub: byte-level BPE tokenizers for
    roberta-base and facebook/bart-base, a WordPiece one for bert-base-uncased (all trained on a
    few sentences), and a 1-layer random RobertaModel of hidden size 768 (the width laion-clap's
    text projection expects)."""
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel
    from transformers.utils import logging as hf_logging

    corpus = CAPTIONS + ["upbeat electronic dance music", "a calm piano melody", "jazz trio"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 3, vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    for repo in ("roberta-base", "facebook/bart-base"):
        bpe.save_model(str(_snapshot(hub, repo)))
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus * 3, vocab_size=200, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    wp.save_model(str(_snapshot(hub, "bert-base-uncased")))
    cfg = RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=768, num_hidden_layers=1,
                        num_attention_heads=12, intermediate_size=64, max_position_embeddings=80,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    torch.manual_seed(0)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        RobertaModel(cfg).save_pretrained(str(_snapshot(hub, "roberta-base")))
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _write_laion_ckpt(module, path, marker: float):
    """Save like laion-clap's trainer: {"epoch", "state_dict": {"module." + key}} plus the
    position_ids buffer old transformers stored; ``marker`` tags one weight to trace loading."""
    state = {"module." + k: v.clone() for k, v in module.model.state_dict().items()}
    state["module.logit_scale_a"].fill_(marker)
    state["module.text_branch.embeddings.position_ids"] = torch.arange(80)[None]
    torch.save({"epoch": 3, "name": "fake", "state_dict": state}, path)


@pytest.fixture(scope="module")
def laion_env(tmp_path_factory):
    """Point huggingface_hub (read at call time by transformers) at a fake offline cache, and
    write one non-fusion and one fusion HTSAT-tiny checkpoint built from it."""
    import huggingface_hub.constants as hub_constants

    root = tmp_path_factory.mktemp("hf_home")
    _fake_hub_cache(root / "hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(hub_constants, "HF_HUB_CACHE", str(root / "hub"))
        mp.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        from presto_core.clap_laion import _import_laion_clap, _quiet

        laion_clap = _import_laion_clap()
        ckpts = {}
        for fusion in (False, True):
            torch.manual_seed(1)
            with _quiet():
                module = laion_clap.CLAP_Module(enable_fusion=fusion, amodel="HTSAT-tiny", device="cpu")
            ckpts[fusion] = root / f"fake-{'fusion' if fusion else 'plain'}.pt"
            _write_laion_ckpt(module, ckpts[fusion], marker=2.5 + fusion)
            del module
        yield {"root": root, "ckpts": ckpts, "mp": mp}


def test_laion_missing_and_corrupt_checkpoint(tmp_path):
    import argparse

    from presto_core.clap_laion import LaionClapScorer, read_laion_checkpoint

    with pytest.raises(PrestoError, match="does not exist"):
        LaionClapScorer(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PrestoError, match="not a readable PyTorch file"):
        LaionClapScorer(bad)
    # Trainer files that pickle more than tensors (here argparse args) still load; prefixes go.
    pickled = tmp_path / "trainer.pt"
    torch.save({"args": argparse.Namespace(lr=1e-4), "state_dict": {"module.w": torch.ones(2)}}, pickled)
    assert list(read_laion_checkpoint(pickled)) == ["w"]
    torch.save({"epoch": 1}, pickled)
    with pytest.raises(PrestoError, match="no state_dict"):
        read_laion_checkpoint(pickled)


def test_laion_scorer_offline(laion_env):
    """Real laion-clap code end to end, offline: import (module-level tokenizers), CLAP_Module
    construction (HTSAT-tiny + RobertaModel.from_pretrained from the cache), our checkpoint
    reader on the trainer's file format, text and audio embeddings, and a match with laion-clap's
    own get_audio_embedding_from_data. Not covered: the published weights and the real roberta-base
    tokenizer/model (no network), so the embedding *values* say nothing about audio-text fit."""
    from presto_core.clap_laion import LaionClapScorer

    scorer = LaionClapScorer(laion_env["ckpts"][False])
    assert isinstance(scorer, ClapScorer) and scorer.sample_rate == 48000
    assert scorer.module.model.logit_scale_a.item() == 2.5  # weights come from the file
    text = scorer.embed_text(CAPTIONS[:2])
    assert text.shape == (2, 512) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert scorer.embed_text(CAPTIONS[:1]).shape == (1, 512)

    g = torch.Generator().manual_seed(0)
    wav48 = batch([0, 2], g, sr=48000, seconds=1.0)
    audio = scorer.embed_audio(wav48, 48000)
    assert audio.shape == (2, 512) and torch.allclose(audio.norm(dim=-1), torch.ones(2), atol=1e-5)
    ref = scorer.module.get_audio_embedding_from_data(wav48.numpy(), use_tensor=False)
    assert np.allclose(audio.numpy(), ref, atol=1e-4)  # same repeat-pad + int16 path as laion-clap
    # Each 10 s window is one HTSAT pass (the slow part here), so the remaining checks share calls.
    long = torch.randn(1, 48000 * 12, generator=g) * 0.1  # two 10 s windows, averaged
    e_long = scorer.embed_audio(long, 48000)
    assert e_long.shape == (1, 512) and torch.allclose(e_long.norm(), torch.tensor(1.0))
    wav16 = batch([0], g, sr=16000)  # resampled to 48 kHz inside
    s = scorer.score([CAPTIONS[0]], wav16, 16000)
    assert s.shape == (1,) and -1 <= s.item() <= 1


def test_laion_fusion_checkpoint_and_mismatch(laion_env):
    from presto_core.clap_laion import LaionClapScorer

    scorer = LaionClapScorer(laion_env["ckpts"][True], enable_fusion=True)
    assert scorer.module.model.logit_scale_a.item() == 3.5
    audio = scorer.embed_audio(batch([1, 3], torch.Generator().manual_seed(0), sr=48000), 48000)
    assert audio.shape == (2, 512) and torch.allclose(audio.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(PrestoError, match="does not fit"):
        LaionClapScorer(laion_env["ckpts"][True], enable_fusion=False)
    with pytest.raises(PrestoError, match="unknown laion-clap audio model"):
        LaionClapScorer(laion_env["ckpts"][False], amodel="HTSAT-huge")


def test_laion_missing_hub_files_is_a_presto_error(laion_env, tmp_path):
    import huggingface_hub.constants as hub_constants

    from presto_core.clap_laion import LaionClapScorer

    laion_env["mp"].setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    try:
        with pytest.raises(PrestoError, match="roberta-base"):
            LaionClapScorer(laion_env["ckpts"][False])
    finally:
        laion_env["mp"].setattr(hub_constants, "HF_HUB_CACHE", str(laion_env["root"] / "hub"))


def test_laion_log_mel_matches_librosa():
    """Our torchaudio-free fusion mel equals librosa's HTK mel power spectrogram in dB."""
    import librosa

    from presto_core.clap_laion import laion_log_mel, repeat_pad, split_windows

    cfg = {"sample_rate": 48000, "window_size": 1024, "hop_size": 480, "mel_bins": 64, "fmin": 50, "fmax": 14000}
    x = batch([0], torch.Generator().manual_seed(0), sr=48000, seconds=0.3)[0].double()
    ours = laion_log_mel(x.float(), cfg)
    ref = librosa.feature.melspectrogram(y=x.numpy(), sr=48000, n_fft=1024, hop_length=480, power=2.0,
                                         pad_mode="reflect", n_mels=64, fmin=50, fmax=14000, htk=True, norm=None)
    ref = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None).T
    # float32 STFT vs librosa's float64: within 0.1 dB even 80 dB below the peak.
    assert ours.shape == ref.shape and np.abs(ours.numpy() - ref).max() < 0.1
    assert repeat_pad(torch.arange(1.0, 4.0), 8).tolist() == [1, 2, 3, 1, 2, 3, 0, 0]
    assert split_windows(5, 10) == [(0, 5)] and split_windows(25, 10) == [(0, 10), (10, 20), (15, 25)]

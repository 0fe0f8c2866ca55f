"""train/diffusion/clap_captions.py: the text-tower factors make a CLAP score a person's audio higher
against their captions while other prompts stay put and the audio tower is untouched; the adapter
that train.finetune writes carries them, and a pipeline serving it judges with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from presto_core import checkpoint as ckpt
from presto_core.adapters import Adapter, load_adapter, merge_into
from presto_core.clap import ClapConfig, EmbeddedClap
from presto_core.pipeline import PrestoPipeline
from tests.factory import make_model_folder
from tests.fixtures import CONFIGS, make_corpus
from train import finetune
from train.diffusion.clap_captions import TEXT_TOWER, adapt_clap, fit_caption_factors
from train.diffusion.configs import ClapCaptionsConfig
from train.evaluation.clips import real_crops, split_records
from train.infra.config import DataError


class WordVectors:
    """A stand-in text encoder: one seeded random vector per word (B, L, dim) with its mask."""

    dim = 384

    def encode(self, prompts):
        words = [p.lower().replace(",", " ").split() for p in prompts]
        n = max(len(w) for w in words)
        emb, mask = torch.zeros(len(prompts), n, self.dim), torch.zeros(len(prompts), n, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                g = torch.Generator().manual_seed(sum(ord(c) * 31 ** k for k, c in enumerate(w)) % 2 ** 31)
                emb[i, j], mask[i, j] = torch.randn(self.dim, generator=g), True
        return emb, mask


def test_fit_moves_their_captions_toward_their_audio_and_holds_the_others():
    torch.manual_seed(0)
    clap = EmbeddedClap(ClapConfig()).eval()
    plain = {k: v.clone() for k, v in clap.state_dict().items()}
    audio = torch.nn.functional.normalize(torch.randn(1, 256) + 0.3 * torch.randn(12, 256), dim=-1)
    captions = [f"Calypso, steel drum groove {i % 4}" for i in range(12)]
    anchors = ["dreamy ambient pad", "deep house groove with a rolling bass", "solo piano ballad", "fast drum and bass"]
    cfg = ClapCaptionsConfig(steps=150, lr=3e-3)
    factors, m = fit_caption_factors(clap, WordVectors(), audio, captions, anchors, cfg, rank=4, alpha=8.0)
    assert sorted(factors) == sorted(TEXT_TOWER)
    assert all(a.shape[0] == 4 and b.shape[1] == 4 for a, b in factors.values())
    assert m["their_audio_clap_after"] > m["their_audio_clap_before"] + 20
    assert m["anchor_drift"] < 0.02 and (m["captions"], m["anchors"], m["crops"]) == (4, 4, 12)
    assert all(torch.equal(v, plain[k]) for k, v in clap.state_dict().items())  # fitted on a copy

    # Served as an adapter (merged weights), the text tower computes what the fit measured.
    adapter = Adapter("mem", "mem", 4, 8.0, {"clap": {"base_sha256": "x", "modules": sorted(factors)}},
                      {"clap": factors}, {})
    merge_into(clap, "clap", [(adapter, 1.0)], {})
    emb, mask = WordVectors().encode(sorted(set(captions)))
    with torch.no_grad():
        text = clap.text_embed_from_tokens(emb, mask)
    own = torch.tensor([sorted(set(captions)).index(c) for c in captions])
    assert 100 * float((audio * text[own]).sum(-1).mean()) == pytest.approx(m["their_audio_clap_after"], abs=1e-3)


def test_fit_needs_their_captions_and_other_prompts():
    clap = EmbeddedClap(ClapConfig())
    with pytest.raises(ValueError, match="needs some of their captions and some other prompts"):
        fit_caption_factors(clap, WordVectors(), torch.zeros(1, 256), ["a"], ["a"], ClapCaptionsConfig(), 2, 4.0)


def test_finetune_adapter_carries_the_clap_factors_and_the_pipeline_judges_with_them(tmp_path):
    model = make_model_folder(tmp_path / "model", variants=("base",), with_clap=True)
    data = make_corpus(tmp_path / "data")
    argv = ["--config", str(CONFIGS / "test.json"), "--data", str(data), "--model", str(model),
            "--out", str(tmp_path / "adapter"), "--run", str(tmp_path / "run"), "--max-steps", "2"]
    assert finetune.main(argv) == 0
    a = load_adapter(tmp_path / "adapter")
    assert sorted(a.factors) == ["base", "clap"] and sorted(a.factors["clap"]) == sorted(TEXT_TOWER)
    fit = a.meta["training"]["clap_captions"]
    assert fit["their_audio_clap_after"] > fit["their_audio_clap_before"] and fit["crops"] == 6

    plain = PrestoPipeline.from_pretrained(model, device="cpu", precision="fp32")
    pipe = PrestoPipeline.from_pretrained(model, device="cpu", precision="fp32", adapters=[(tmp_path / "adapter", 1.0)])
    items = split_records(str(data), "train")
    crops, caps = real_crops(items, plain.clap.sample_rate, 1.0, per_file=1)
    wav = torch.from_numpy(np.stack(crops))
    assert torch.equal(plain.clap.embed_audio(wav, plain.clap.sample_rate),
                       pipe.clap.embed_audio(wav, pipe.clap.sample_rate))  # the audio tower is untouched
    before, after = plain.clap.score(caps, wav, plain.clap.sample_rate), pipe.clap.score(caps, wav, pipe.clap.sample_rate)
    assert 100 * float(before.mean()) == pytest.approx(fit["their_audio_clap_before"], abs=0.05)
    assert 100 * float(after.mean()) == pytest.approx(fit["their_audio_clap_after"], abs=0.05)
    pipe.set_adapters([])  # the plain CLAP again
    assert torch.allclose(pipe.clap.score(caps, wav, pipe.clap.sample_rate), before, atol=1e-6)


def test_adapt_clap_without_a_long_enough_file_is_a_data_error(tmp_path):
    model = make_model_folder(tmp_path / "model", variants=("base",), with_clap=True)
    data = make_corpus(tmp_path / "data")  # 1.5 s files
    index = ckpt.read_index(model)
    with pytest.raises(DataError, match="no training file is 10 s long"):
        adapt_clap(model, index, str(data), ClapCaptionsConfig(crop_seconds=10.0), 2, 4.0)
    assert adapt_clap(model, index, str(data), ClapCaptionsConfig(steps=0), 2, 4.0) is None
    no_clap = make_model_folder(tmp_path / "plain", variants=("base",), with_clap=False)
    assert adapt_clap(no_clap, ckpt.read_index(no_clap), str(data), ClapCaptionsConfig(), 2, 4.0) is None

"""train.adapter_report end to end on a micro model folder, a random adapter and two synthetic
held-out sets: every row is measured, the Markdown and JSON agree, bad arguments exit 2."""

import json

import pytest
import torch

from presto_core.adapters import save_adapter
from presto_core.pipeline import PrestoPipeline
from tests.factory import make_model_folder
from tests.fixtures import make_corpus
from train import adapter_report


@pytest.mark.slow
def test_report_rows_and_outputs(tmp_path, capsys):
    model = make_model_folder(tmp_path / "model", variants=("base", "presto-ls"), with_clap=True)
    pipe = PrestoPipeline.from_pretrained(model, device="cpu", precision="fp32")
    lin = pipe.variants["presto-ls"][1].backbone.blocks[0].attn.qkv
    g = torch.Generator().manual_seed(0)
    factors = {"presto_ls": {"blocks.0.attn.qkv": (torch.randn(2, lin.in_features, generator=g),
                                                   torch.randn(lin.out_features, 2, generator=g))}}
    text = pipe.clap.model.text_proj[1]  # and the CLAP's text tower, as finetune.clap_captions writes
    factors["clap"] = {"text_proj.1": (torch.randn(2, text.in_features, generator=g),
                                       torch.randn(text.out_features, 2, generator=g))}
    save_adapter(tmp_path / "ad", factors, rank=2, alpha=2.0, base_sha256=pipe.component_sha256)
    theirs, corpus = make_corpus(tmp_path / "theirs", seconds=2.0), make_corpus(tmp_path / "corpus", seconds=2.0)
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    argv = ["--model", str(model), "--adapter", f"{tmp_path / 'ad'}:0.5", "--data", str(theirs), "--corpus", str(corpus),
            "--variant", "presto-ls", "--num", "2", "--duration", "1", "--repeats", "1", "--device", "cpu",
            "--markdown", str(md), "--json", str(js)]
    assert adapter_report.main(argv) == 0
    rep = json.loads(js.read_text())
    assert set(rep["rows"]) == {"theirs/plain", "theirs/adapted", "corpus/plain", "corpus/adapted"}
    assert rep["real_crops"] == {"theirs": 4, "corpus": 4}  # two 2 s files each: two 1 s crops per file
    for r in rep["rows"].values():
        assert r["fad"] >= 0 and 0 <= r["theirs"] <= 1 and 0 <= r["tempo_strict"] <= r["tempo_octave_ok"] <= 1
    assert rep["weight"] == 0.5 and set(rep["latency_s"]) == {"plain", "adapted"}
    assert set(rep["real_clap_score"]) == set(rep["real_clap_score_adapter"]) == {"theirs", "corpus"}
    assert all(-100 <= v <= 100 for v in [*rep["real_clap_score"].values(), *rep["real_clap_score_adapter"].values()])
    # The adapter's CLAP judges plain and adapted clips alike, and differently from the plain CLAP.
    assert all(r["clap_score_adapter"] != r["clap_score"] for r in rep["rows"].values())
    assert "| theirs | adapted |" in md.read_text() and "| corpus | real held-out audio |" in md.read_text()
    assert adapter_report.main(argv[:-4] + ["--num", "1"]) == 2
    assert "--num >= 2" in capsys.readouterr().err

"""train/finetune.py end to end on a micro model folder and a synthetic dataset: the adapter folder
it writes loads on that model and changes only the adapted layers, an interrupted run resumes to
the same factors, and peft's LoRA forward equals the merged weights presto_core serves."""

from __future__ import annotations

import json

import pytest
import torch

from presto_core.adapters import Adapter, load_adapter, merge_into
from presto_core.dit import DiT, DiTConfig
from presto_core.pipeline import PrestoPipeline
from tests.factory import MICRO_DIT, make_model_folder
from tests.fixtures import CONFIGS, make_corpus
from train import finetune
from train.diffusion.lora import add_lora, copy_lora, lora_factors

CONFIG = CONFIGS / "test.json"


def assert_same_factors(a: dict, b: dict):
    """Every factor of ``a`` ({module: (A, B)}) equals ``b``'s exactly."""
    for m, (fa, fb) in a.items():
        assert torch.equal(fa, b[m][0]) and torch.equal(fb, b[m][1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    model = make_model_folder(root / "model", variants=("base", "presto-ls"), with_clap=False)
    data = make_corpus(root / "data")
    argv = ["--config", str(CONFIG), "--data", str(data), "--model", str(model)]
    return root, model, argv


@pytest.fixture(scope="module")
def reference(setup):
    root, _, argv = setup
    assert finetune.main(argv + ["--out", str(root / "adapter"), "--run", str(root / "run")]) == 0
    return root / "adapter"


def test_adapter_folder_loads_and_adapts_only_the_adapted_layers(setup, reference):
    root, model, _ = setup
    a = load_adapter(reference)
    assert (a.rank, a.alpha) == (2, 4.0) and sorted(a.factors) == ["base", "presto_ls"]
    assert len(a.factors["base"]) == len(a.factors["presto_ls"]) == 4 * MICRO_DIT["depth"]  # qkv, out, w13, w2
    # The generator phase (steps 3-5: fake, fake, generator) moved the generator's factors off zero.
    assert any(b.abs().max() > 0 for _, b in a.factors["presto_ls"].values())
    meta = json.loads((reference / "adapter.json").read_text())
    assert meta["training"]["steps"] == 6 and set(meta["training"]["heldout_dsm_loss"]) == {"plain", "adapted"}
    assert sum(f.stat().st_size for f in reference.iterdir()) < 5e6
    plain = PrestoPipeline.from_pretrained(model, device="cpu", precision="fp32")
    pipe = PrestoPipeline.from_pretrained(model, device="cpu", precision="fp32", adapters=[(reference, 1.0)])
    for variant, comp in (("base", "base"), ("presto-ls", "presto_ls")):
        p0, p1 = plain.variants[variant][1].state_dict(), pipe.variants[variant][1].state_dict()
        diff = {k for k in p0 if not torch.equal(p0[k], p1[k])}
        # Layers whose B is still zero (blocks the layer budget dropped at the one generator turn's
        # sigma get no gradient) add nothing.
        assert diff == {f"backbone.{m}.weight" for m, (_, b) in a.factors[comp].items() if b.abs().max() > 0}


def test_resume_gives_the_same_adapter(setup, reference):
    root, _, argv = setup
    out, run = root / "adapter2", root / "run2"
    assert finetune.main(argv + ["--out", str(out), "--run", str(run), "--max-steps", "4"]) == 0
    # One fake-score turn into the generator phase: the generator's factors are the adapted base's,
    # copied at its first step (finetune.transfer_factors).
    early = load_adapter(out).factors
    assert_same_factors(early["presto_ls"], early["base"])
    assert finetune.main(argv + ["--out", str(out), "--run", str(run), "--resume", "latest"]) == 0
    a, b = load_adapter(out), load_adapter(reference)
    for comp in ("base", "presto_ls"):  # stopped inside the generator phase, resumed there
        assert_same_factors(a.factors[comp], b.factors[comp])


def test_resume_at_the_phase_boundary_gives_the_same_adapter(setup, reference):
    root, _, argv = setup
    out, run = root / "adapter3", root / "run3"
    assert finetune.main(argv + ["--out", str(out), "--run", str(run), "--max-steps", "3"]) == 0  # base phase only
    assert sorted(load_adapter(out).factors) == ["base"]
    assert finetune.main(argv + ["--out", str(out), "--run", str(run), "--resume", "latest"]) == 0
    a, b = load_adapter(out), load_adapter(reference)
    for comp in ("base", "presto_ls"):
        assert_same_factors(a.factors[comp], b.factors[comp])


def test_copy_lora_copies_every_factor_and_refuses_other_ranks():
    cfg = DiTConfig(**MICRO_DIT)
    src, dst, other = DiT(cfg), DiT(cfg), DiT(cfg)
    add_lora(src, rank=2, alpha=4.0, seed=1)
    add_lora(dst, rank=2, alpha=4.0, seed=2)
    add_lora(other, rank=3, alpha=4.0, seed=3)
    with torch.no_grad():
        for n, p in src.named_parameters():
            if "lora_B" in n:
                p.fill_(0.25)
    assert copy_lora(src, dst) == 4 * MICRO_DIT["depth"]
    assert_same_factors(lora_factors(src), lora_factors(dst))
    with pytest.raises(ValueError, match="differ"):
        copy_lora(src, other)


def test_bad_model_or_missing_data_is_one_error(setup, tmp_path, capsys):
    root, _, argv = setup
    assert finetune.main(["--config", str(CONFIG), "--out", str(tmp_path / "a")]) == 2
    assert "needs --data" in capsys.readouterr().err
    bad = argv[:-1] + [str(tmp_path)]
    assert finetune.main(bad + ["--out", str(tmp_path / "a"), "--run", str(tmp_path / "r")]) == 2
    assert "not a Presto model folder" in capsys.readouterr().err


def test_peft_forward_equals_the_merged_weights():
    torch.manual_seed(0)
    cfg = DiTConfig(**MICRO_DIT)
    plain = DiT(cfg)
    adapted = DiT(cfg)
    adapted.load_state_dict(plain.state_dict())
    add_lora(adapted, rank=3, alpha=6.0, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_B" in n:  # trained factors: B is no longer zero
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    factors = lora_factors(adapted)
    merge_into(plain, "base", [(Adapter("x", "x", 3, 6.0, {"base": {}}, {"base": factors}, {}), 1.0)], {})
    x = torch.randn(2, cfg.latent_channels, 12, generator=g)
    sigma = torch.tensor([0.5, 3.0])
    text, mask = torch.randn(2, 5, cfg.text_dim, generator=g), torch.ones(2, 5, dtype=torch.bool)
    bpm = torch.tensor([90.0, 120.0])
    with torch.no_grad():
        want = adapted(x, sigma.log() / 4, text=text, text_mask=mask, bpm=bpm)
        got = plain(x, sigma.log() / 4, text=text, text_mask=mask, bpm=bpm)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

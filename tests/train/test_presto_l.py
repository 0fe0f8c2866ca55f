"""train/presto_l.py: the Presto-L objective (zero-init start, self-teacher with stop-gradient, ASE),
and the stage end to end on a micro base DiT, a random micro VAE and a synthetic corpus: training,
exact resume, export and generation with the layer-dropped variant."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from presto_core import checkpoint as ckpt
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.budget import D3, DropSchedule
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import Precond, loss_weight
from tests.fixtures import CONFIGS, logged_values, make_corpus
from train import presto_l
from train.diffusion import losses
from train.infra.checkpointing import CheckpointManager, read_metrics

CONFIG = CONFIGS / "test.json"
MICRO = json.loads(CONFIG.read_text())["base"]["model"]  # depth 4: D3 scales to (2, 2, 1, 1, 0)


def _base_dit(seed: int = 0) -> DiT:
    """A micro base DiT with every weight perturbed (a trained model's gates are not zero)."""
    torch.manual_seed(seed)
    dit = DiT(DiTConfig(**MICRO))
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return dit.eval()


def _batch(b: int = 3, t: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, MICRO["latent_channels"], t, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.tensor([40.0, 1.0, 0.01])[:b]  # noisiest, middle and cleanest quintiles
    cond = dict(text=torch.randn(b, 5, MICRO["text_dim"], generator=g), bpm=torch.full((b,), 120.0),
                uncond=torch.tensor([False, True, False])[:b])
    return x0, sigma, noise, cond


def test_fresh_presto_l_model_is_exactly_the_base_model():
    base = _base_dit()
    model = presto_l.init_from_base(base, "presto_l").eval()
    assert model.cfg.budget_conditioning and model.cfg.drop_mode == "shifted"
    for m in (model.budget_embed, model.budget_ada):
        assert not m.weight.any() and not m.bias.any()
    x, sigma, _, cond = _batch()
    pb, pm = Precond(base), Precond(model)
    with torch.no_grad():
        for k in (0, 2, torch.tensor([2, 1, 0])):
            a, ha = pb(x, sigma, layers_dropped=k, return_hidden=True, **cond)
            b, hb = pm(x, sigma, layers_dropped=k, return_hidden=True, **cond)
            assert torch.equal(a, b) and torch.equal(ha, hb)
    with pytest.raises(ValueError):
        presto_l.init_from_base(DiT(DiTConfig(**{**MICRO, "depth": 3})).eval(), "nope")


def test_self_teacher_is_zero_without_dropping():
    model = Precond(presto_l.init_from_base(_base_dit()))
    x0, sigma, noise, cond = _batch()
    none = DropSchedule((0, 0, 0, 0, 0), depth=4)
    loss, m = losses.presto_l_loss(model, x0, sigma, noise, schedule=none, nu=0.1, **cond)
    assert m["self_teacher"] == 0 and m["layers_dropped"] == 0 and torch.equal(loss, m["dsm"])
    # The DSM term is the weighted denoising loss of the layer-dropped model.
    d3 = DropSchedule.scaled(D3, 4)
    assert d3.counts == (2, 2, 1, 1, 0)
    loss, m = losses.presto_l_loss(model, x0, sigma, noise, schedule=d3, nu=0.1, **cond)
    with torch.no_grad():
        den = model(x0 + sigma.view(-1, 1, 1) * noise, sigma, layers_dropped=torch.tensor([2, 1, 0]), **cond)
    want = (loss_weight(sigma) * ((den - x0) ** 2).flatten(1).mean(1)).mean()
    assert torch.allclose(m["dsm"], want) and m["self_teacher"] > 0 and math.isfinite(float(loss.detach()))
    assert torch.allclose(loss.detach(), m["dsm"] + 0.1 * m["self_teacher"])


def test_self_teacher_gradient_stops_at_the_full_model():
    """With 2 of 4 blocks dropped for every sample, blocks 1 and 2 run only in the full-depth
    (teacher) pass: they must get no gradient, and the gradient must equal that of the loss with
    the teacher's hidden state as a constant."""
    torch.manual_seed(0)
    model = Precond(presto_l.init_from_base(_base_dit()))
    x0, sigma, noise, cond = _batch()
    two = DropSchedule((2, 2, 2, 2, 2), depth=4)
    seen = []
    inner = model.forward

    def spy(*a, **kw):
        out = inner(*a, **kw)
        seen.append((kw["layers_dropped"], out[1]))
        return out

    model.forward = spy
    loss, m = losses.presto_l_loss(model, x0, sigma, noise, schedule=two, nu=0.1, **cond)
    loss.backward()
    (k_l, h_l), (k_full, h_full) = seen
    assert k_full == 0 and not h_full.requires_grad and h_l.requires_grad and m["self_teacher"] > 0
    blocks = model.backbone.blocks
    assert all(p.grad is None for i in (1, 2) for p in blocks[i].parameters())
    assert all(p.grad is not None for i in (0, 3) for p in blocks[i].parameters())
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    x = x0 + sigma.view(-1, 1, 1) * noise
    den, h = inner(x, sigma, layers_dropped=2, return_hidden=True, **cond)
    ref = (loss_weight(sigma) * ((den - x0) ** 2).flatten(1).mean(1)).mean()
    ref = ref + 0.1 * ((h - h_full.detach()) ** 2).mean()
    ref.backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-7) for n in want)


def test_ase_flag():
    cfg = presto_l.PrestoLStageConfig(method="ase")
    assert cfg.self_teacher_weight == 0 and cfg.name == "ase"
    ase = presto_l.init_from_base(_base_dit(), "ase")
    assert ase.cfg.drop_mode == "ase" and not ase.cfg.budget_conditioning
    assert not any(n.startswith("budget_") for n, _ in ase.named_parameters())
    model = Precond(ase)
    calls = []
    inner = model.forward
    model.forward = lambda *a, **kw: calls.append(kw["layers_dropped"]) or inner(*a, **kw)
    x0, sigma, noise, cond = _batch()
    _, m = losses.presto_l_loss(model, x0, sigma, noise, schedule=DropSchedule.scaled(D3, 4),
                                  nu=cfg.self_teacher_weight, **cond)
    assert len(calls) == 1 and m["self_teacher"] == 0  # no full-depth teacher pass
    with pytest.raises(ValueError, match="method"):
        presto_l.PrestoLStageConfig(method="asee")


# ---------------------------------------------------------------------------------------------
# The stage end to end


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Corpus, a random micro VAE, a perturbed micro base DiT component, a shared latent cache."""
    root = tmp_path_factory.mktemp("presto_l")
    corpus = make_corpus(root / "corpus")
    torch.manual_seed(0)
    vcfg = VAEConfig(**json.loads(CONFIG.read_text())["vae"]["model"])
    ckpt.save_component(root / "vae", AudioVAE(vcfg), vcfg)
    base = _base_dit()
    ckpt.save_component(root / "base", base, base.cfg, meta={"edm": {"sigma_data": 0.5}, "step": 6})
    argv = ["--config", str(CONFIG), "--set", f"data.root={corpus}", "--set", f"presto_l.vae={root / 'vae'}",
            "--set", f"presto_l.base_model={root / 'base'}", "--set", f"presto_l.latent_cache={root / 'cache'}"]
    return root, argv


@pytest.fixture(scope="module")
def reference(setup):
    root, argv = setup
    assert presto_l.main(argv + ["--out", str(root / "ref")]) == 0
    return root / "ref"


def test_trains_changes_weights_and_exports(setup, reference):
    root, _ = setup
    metrics = [m for m in read_metrics(reference) if "loss" in m]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        assert all(math.isfinite(m[k]) for k in ("loss", "dsm", "self_teacher", "grad_norm", "layers_dropped"))
    assert any(m["self_teacher"] > 0 for m in metrics)
    assert [m["step"] for m in read_metrics(reference) if "heldout_loss" in m] == [2, 4]

    base, _ = ckpt.load_component(root / "base")
    torch.manual_seed(0)  # the trainer's seed: the same budget_hidden init
    init = presto_l.init_from_base(base).state_dict()
    final = load_file(str(CheckpointManager(reference / "checkpoints").final_dir(4) / "model.safetensors"))
    changed = {k for k, v in init.items() if not torch.equal(v, final["backbone." + k])}
    assert len(changed) > len(init) // 2
    assert {"budget_embed.weight", "budget_ada.weight", "budget_hidden.0.weight"} <= changed

    folder = reference / "model"
    index = ckpt.read_index(folder)
    assert set(index["components"]) == {"vae", "base", "presto_l"} and index["default_variant"] == "base"
    assert index["variants"]["presto-l"] == {"component": "presto_l", "sampler": "dpmpp_2s", "steps": 4,
                                             "guidance": {"kind": "cfg_pp", "scale": 0.8},
                                             "drop_schedule": [14, 12, 8, 4, 0]}
    entry = index["components"]["presto_l"]
    dit, meta = ckpt.load_component(folder / entry["path"], entry["sha256"])
    assert dit.cfg.budget_conditioning and dit.cfg.drop_mode == "shifted" and meta["step"] == 4
    assert meta["method"] == "presto_l" and meta["edm"]["sigma_data"] == 0.5

    from presto_core.pipeline import PrestoPipeline

    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32", variants=["presto-l"])
    result = pipe.generate(prompt="a piano tone", bpm=100.0, duration=1.0, steps=2, seed=0, num_clips=1,
                           variant="presto-l")
    audio = result.clips[0].audio
    assert audio.shape == (16000,) and bool(torch.isfinite(torch.as_tensor(audio)).all())


def test_resume_reproduces_the_uninterrupted_run(setup, reference):
    root, argv = setup
    out = root / "resumed"
    assert presto_l.main(argv + ["--out", str(out), "--max-steps", "2"]) == 0
    assert presto_l.main(argv + ["--out", str(out), "--resume", "latest"]) == 0


    assert logged_values(out) == logged_values(reference)
    for name in ("model.safetensors", "ema_model.safetensors"):
        a, b = (load_file(str(CheckpointManager(d / "checkpoints").final_dir(4) / name)) for d in (out, reference))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ase_run_exports_an_ase_variant(setup):
    root, argv = setup
    out = root / "ase"
    assert presto_l.main(argv + ["--out", str(out), "--max-steps", "1", "--set", "presto_l.method=ase",
                                 "--set", "presto_l.eval_every=0"]) == 0
    (m,) = [m for m in read_metrics(out) if "loss" in m]
    assert m["self_teacher"] == 0 and m["loss"] == m["dsm"]
    index = ckpt.read_index(out / "model")
    assert index["variants"]["ase"]["component"] == "ase"
    dit, meta = ckpt.load_component(out / "model" / "ase", index["components"]["ase"]["sha256"])
    assert dit.cfg.drop_mode == "ase" and not dit.cfg.budget_conditioning and meta["method"] == "ase"


def test_a_base_model_with_another_sigma_data_is_one_config_error(setup, tmp_path, capsys):
    root, argv = setup
    assert presto_l.main(argv + ["--out", str(tmp_path / "run"), "--set", "presto_l.edm.sigma_data=0.7"]) == 2
    err = capsys.readouterr().err
    assert "config error: edm.sigma_data=0.7 differs from presto_l.base_model=" in err and "trained with 0.5" in err

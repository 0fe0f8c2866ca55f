"""DiT score network: shapes, masks, zero-init, null condition, layer dropping, budget conditioning,
the beat grid."""

import pytest
import torch

from presto_core.attention import attention
import math

from presto_core.dit import GRID_FEATURES, DiT, DiTConfig, beat_grid_features, beat_positions
from presto_core.edm import Precond, precondition
from presto_core.errors import PrestoError

DEPTH = 4


def small_cfg(**kw) -> DiTConfig:
    base = dict(latent_channels=8, dim=32, depth=DEPTH, heads=2, text_dim=16, freq_dim=32, bpm_max=300.0)
    return DiTConfig(**{**base, **kw})


def perturb(model: torch.nn.Module, seed: int = 0, std: float = 0.1, only: str | None = None):
    """Add noise to the weights so zero-initialised paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only is None or name.startswith(only):
                p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def make(seed=0, fresh=False, **kw) -> DiT:
    torch.manual_seed(seed)
    m = DiT(small_cfg(**kw)).eval()
    return m if fresh else perturb(m, seed)


def inputs(b=2, t=9, l=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 8, t, generator=g)
    c_noise = torch.randn(b, generator=g) * 0.5
    text = torch.randn(b, l, 16, generator=g)
    mask = torch.ones(b, l, dtype=torch.bool)
    bpm = torch.linspace(80.0, 160.0, b)
    return x, c_noise, dict(text=text, text_mask=mask, bpm=bpm)


def test_config_validation():
    for bad in (dict(heads=3), dict(dim=30, heads=2), dict(drop_mode="middle"), dict(attention="xformers"),
                dict(depth=0), dict(freq_dim=31), dict(bpm_max=0.0)):
        with pytest.raises(PrestoError):
            small_cfg(**bad)
    assert DiTConfig.tiny().dim == 256 and DiTConfig.paper().depth == 28


@pytest.mark.parametrize("t,l", [(1, 1), (9, 5), (16, 3), (33, 7)])
def test_shapes(t, l):
    m = make()
    x, cn, cond = inputs(b=3, t=t, l=l)
    out, hidden = m(x, cn, **cond, return_hidden=True)
    assert out.shape == (3, 8, t) and hidden.shape == (3, t, 32)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_inputs_raise():
    m = make()
    x, cn, cond = inputs()
    with pytest.raises(PrestoError):
        m(x[:, :4], cn, **cond)
    with pytest.raises(PrestoError):
        m(x, cn, **{**cond, "text": cond["text"][..., :8]})
    with pytest.raises(PrestoError):
        m(x, cn, **{**cond, "bpm": None})


def test_zero_init_output_and_precond():
    m = make(fresh=True)
    x, cn, cond = inputs()
    assert torch.equal(m(x, cn, **cond), torch.zeros_like(x))
    sigma = torch.tensor([0.05, 7.0])
    den = Precond(m)(x, sigma, **cond)
    c_skip = precondition(sigma)[0]
    assert torch.equal(den, c_skip[:, None, None] * x)


def test_bf16_autocast_close_to_fp32():
    m = make()
    x, cn, cond = inputs(t=12)
    ref = m(x, cn, **cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, cn, **cond, layers_dropped=torch.tensor([0, 1]))
        den = Precond(m)(x, torch.tensor([1.0, 2.0]), **cond)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all() and den.dtype == torch.float32
    ref1 = m(x, cn, **cond, layers_dropped=torch.tensor([0, 1]))
    assert (out.float() - ref1).norm() / ref1.norm() < 0.05
    assert not torch.allclose(ref, ref1)
    # A model cast to bf16 (no autocast) also runs, fp32 inputs included.
    mb = make().to(torch.bfloat16)
    out_b = mb(x, cn, **cond)
    assert out_b.dtype == torch.bfloat16 and (out_b.float() - ref).norm() / ref.norm() < 0.1


def test_padding_mask():
    m = make()
    x, cn, cond = inputs(b=2, l=6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    out = m(x, cn, **{**cond, "text_mask": mask})
    text2 = cond["text"].clone()
    text2[~mask] = torch.randn(int((~mask).sum()), 16) * 10
    assert torch.allclose(out, m(x, cn, **{**cond, "text": text2, "text_mask": mask}), atol=1e-6)
    # Masking padding equals not having it at all.
    alone = m(x[:1], cn[:1], text=cond["text"][:1, :3], text_mask=None, bpm=cond["bpm"][:1])
    assert torch.allclose(out[:1], alone, atol=1e-5)
    # And the mask matters: unmasking the padded tokens changes the output.
    assert not torch.allclose(out, m(x, cn, **{**cond, "text": text2}), atol=1e-3)


def test_output_depends_on_conditions():
    m = make()
    x, cn, cond = inputs()
    out = m(x, cn, **cond)
    assert not torch.allclose(out, m(x, cn + 0.3, **cond), atol=1e-4)
    assert not torch.allclose(out, m(x, cn, **{**cond, "bpm": cond["bpm"] + 20}), atol=1e-4)
    assert not torch.allclose(out, m(x, cn, **{**cond, "text": cond["text"] + 0.5}), atol=1e-4)
    # Text keys carry no rotary position: token order lives in the encoder's contextual embeddings.
    assert torch.allclose(out, m(x, cn, **{**cond, "text": cond["text"].flip(1)}), atol=1e-5)
    assert not torch.allclose(out, m(x, cn, **cond, uncond=True), atol=1e-4)


def test_uncond_ignores_text_and_bpm():
    m = make()
    x, cn, cond = inputs(b=3)
    u = m(x, cn, **cond, uncond=True)
    other = dict(text=torch.randn(3, 2, 16), text_mask=torch.tensor([[1, 0], [1, 1], [0, 1]]).bool(), bpm=200.0)
    assert torch.equal(u, m(x, cn, **other, uncond=torch.ones(3, dtype=torch.bool)))
    assert torch.equal(u, m(x, cn, text=None, bpm=None, uncond=True))
    # Mixed batch (training's condition dropout): each row matches its own all-cond / all-uncond run.
    c = m(x, cn, **cond)
    mixed = m(x, cn, **cond, uncond=torch.tensor([True, False, True]))
    assert torch.allclose(mixed[0], u[0], atol=1e-5) and torch.allclose(mixed[2], u[2], atol=1e-5)
    assert torch.allclose(mixed[1], c[1], atol=1e-5)
    with pytest.raises(PrestoError):
        m(x, cn, text=None, bpm=100.0, uncond=torch.tensor([True, False, True]))


def test_attention_matches_reference_and_flash_needs_cuda():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8**0.5
    ref = torch.einsum("bhqk,bkhd->bqhd", logits.masked_fill(~mask[:, None, None], -torch.inf).softmax(-1), v)
    assert torch.allclose(attention(q, k, v, mask, "sdpa"), ref, atol=1e-5)
    assert torch.allclose(attention(q, k, v, mask, "auto"), ref, atol=1e-5)
    with pytest.raises(PrestoError):
        attention(q, k, v, mask, "flash")


@pytest.mark.parametrize("mode", ["shifted", "ase"])
def test_active_blocks_and_skipping(mode):
    m = make(drop_mode=mode)
    expect = {
        "ase": [[0, 1, 2, 3], [0, 1, 2], [0, 1], [0]],
        "shifted": [[0, 1, 2, 3], [0, 1, 3], [0, 3], [3]],
    }[mode]
    ran = []
    hooks = [blk.register_forward_hook(lambda mod, a, o, i=i: ran.append(i)) for i, blk in enumerate(m.blocks)]
    x, cn, cond = inputs(b=2, t=6)
    outs = []
    for k in range(DEPTH):
        assert m.active_blocks(k) == expect[k]
        ran.clear()
        outs.append(m(x, cn, **cond, layers_dropped=k))
        assert ran == expect[k]  # dropped blocks are truly skipped
        # The per-sample path with a uniform tensor agrees with the int path.
        assert torch.allclose(outs[-1], m(x, cn, **cond, layers_dropped=torch.full((2,), k)), atol=1e-6)
    assert all(not torch.allclose(outs[0], o, atol=1e-4) for o in outs[1:])
    # Per-sample: a block no sample needs is not computed.
    ran.clear()
    m(x, cn, **cond, layers_dropped=torch.tensor([1, 2]))
    assert ran == ([0, 1, 2] if mode == "ase" else [0, 1, 3])
    # run_at_drop (sharded training): more blocks run, the result is the same.
    for k, floor in ((2, 0), (torch.tensor([1, 2]), 0), (3, 1), (1, 3)):
        ran.clear()
        out = m(x, cn, **cond, layers_dropped=k, run_at_drop=floor)
        lowest = min(floor, int(torch.as_tensor(k).min()))
        assert ran == m.active_blocks(lowest)
        torch.testing.assert_close(out, m(x, cn, **cond, layers_dropped=k), atol=1e-6, rtol=0)
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("mode,budget", [("shifted", True), ("ase", False)])
def test_mixed_per_sample_batch_equals_each_alone(mode, budget):
    m = make(drop_mode=mode, budget_conditioning=budget)
    ks = torch.tensor([0, 3, 1, 2])
    x, cn, cond = inputs(b=4, t=7, l=4)
    cond["text_mask"][1, 2:] = False
    out, hid = m(x, cn, **cond, layers_dropped=ks, return_hidden=True)
    for i, k in enumerate(ks.tolist()):
        one = {key: v[i : i + 1] for key, v in cond.items()}
        o, h = m(x[i : i + 1], cn[i : i + 1], **one, layers_dropped=k, return_hidden=True)
        assert torch.allclose(out[i : i + 1], o, atol=1e-5) and torch.allclose(hid[i : i + 1], h, atol=1e-5)


def test_too_many_dropped_raises():
    m = make()
    x, cn, cond = inputs()
    for bad in (DEPTH, -1, torch.tensor([0, DEPTH]), torch.tensor([1.0, 2.0]), 1.5):
        with pytest.raises(PrestoError, match=r"\[0, 3\]|integer"):
            m(x, cn, **cond, layers_dropped=bad)
    with pytest.raises(PrestoError, match=r"\[0, 3\]"):
        m.active_blocks(DEPTH)


@pytest.mark.parametrize("mode", ["shifted", "ase"])
def test_budget_conditioning_zero_init(mode):
    base = make(drop_mode=mode)
    torch.manual_seed(5)
    bud = DiT(small_cfg(drop_mode=mode, budget_conditioning=True)).eval()
    missing, unexpected = bud.load_state_dict(base.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("budget_") for k in missing)
    x, cn, cond = inputs()
    for k in (0, 2, torch.tensor([3, 1])):
        assert torch.equal(bud(x, cn, **cond, layers_dropped=k), base(x, cn, **cond, layers_dropped=k))
    # Once trained, the budget modules do change the output.
    perturb(bud, seed=3, only="budget_")
    assert not torch.allclose(bud(x, cn, **cond, layers_dropped=2), base(x, cn, **cond, layers_dropped=2), atol=1e-4)


def test_return_hidden_is_normalised_and_precond_passes_it():
    m = make()
    x, cn, cond = inputs(t=10)
    out, hidden = m(x, cn, **cond, layers_dropped=1, return_hidden=True)
    assert torch.equal(out, m(x, cn, **cond, layers_dropped=1))
    assert hidden.mean(-1).abs().max() < 1e-5
    assert (hidden.pow(2).mean(-1) - 1).abs().max() < 1e-3
    den, h2 = Precond(m)(x, torch.tensor([0.5, 3.0]), **cond, return_hidden=True)
    assert den.shape == x.shape and h2.shape == (2, 10, 32)


def test_return_features_gives_block_outputs():
    m = make()
    x, cn, cond = inputs(t=7)
    plain = m(x, cn, **cond)
    out, feats = m(x, cn, **cond, return_features=(2, 1))
    assert torch.equal(out, plain) and len(feats) == 2 and feats[0].shape == (2, 7, 32)
    out2, hidden, feats2 = m(x, cn, **cond, return_hidden=True, return_features=(1,))
    assert torch.equal(out2, plain) and torch.equal(feats2[0], feats[1]) and hidden.shape == (2, 7, 32)
    den, f = Precond(m)(x, torch.tensor([0.5, 3.0]), **cond, return_features=(3,))
    assert den.shape == x.shape and f[0].shape == (2, 7, 32)
    # per-sample budgets: a block kept by every sample is fine, a dropped one raises
    _, f3 = m(x, cn, **cond, layers_dropped=torch.tensor([0, 1]), return_features=(0,))
    assert f3[0].shape == (2, 7, 32)
    with pytest.raises(PrestoError):
        m(x, cn, **cond, layers_dropped=torch.tensor([0, 1]), return_features=(2,))
    with pytest.raises(PrestoError):
        m(x, cn, **cond, layers_dropped=1, return_features=(2,))
    with pytest.raises(PrestoError):
        m(x, cn, **cond, return_features=(DEPTH,))
    # gradients flow through the returned features
    x.requires_grad_(True)
    _, f4 = m(x, cn, **cond, return_features=(1,))
    f4[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradients_reach_every_needed_block():
    m = make(budget_conditioning=True).train()
    perturb(m, seed=4, only="budget_")
    x, cn, cond = inputs(b=3, t=5)
    out, hidden = m(x, cn, **cond, uncond=torch.tensor([False, True, False]),
                    layers_dropped=torch.tensor([0, 2, 1]), return_hidden=True)
    (out.square().mean() + hidden.square().mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.blocks[2].mlp.w2.weight.grad.abs().sum() > 0  # only sample 0 runs block 2


def test_parameter_counts():
    with torch.device("meta"):
        paper = DiT(DiTConfig.paper())
        tiny = DiT(DiTConfig.tiny(latent_channels=32))
        paper_l = DiT(DiTConfig.paper(budget_conditioning=True))
    assert 650e6 < paper.num_parameters() < 700e6  # DiT-XL is ~675M
    assert 14e6 < tiny.num_parameters() < 16e6  # the embedded default, train/configs/tiny.json
    assert paper_l.num_parameters() > paper.num_parameters()


def test_beat_grid_features_are_periodic_in_beats_and_bars():
    x = torch.linspace(0.0, 7.9, 80)[None]
    f = beat_grid_features(x, beats_per_bar=4.0)
    assert f.shape == (1, 80, GRID_FEATURES) and f.dtype == torch.float32
    assert torch.allclose(f, beat_grid_features(x + 4.0), atol=1e-5)  # one bar later: the same
    # features: cos of (beat, 2 x beat, bar, 2 x bar) phases, then their sines
    one_beat = beat_grid_features(x + 1.0)
    assert torch.allclose(f[..., :2], one_beat[..., :2], atol=1e-5)  # beat-phase cos terms agree
    assert not torch.allclose(f, one_beat, atol=1e-3)  # the bar phase tells the beats apart
    # cos(2 pi x) on the beat: 1 on every beat, -1 half-way
    assert torch.allclose(beat_grid_features(torch.tensor([[0.0, 0.5, 3.0]]))[0, :, 0], torch.tensor([1.0, -1.0, 1.0]),
                          atol=1e-5)
    nan = beat_grid_features(torch.full((2, 3), float("nan")))
    assert torch.equal(nan, torch.zeros(2, 3, GRID_FEATURES))


def test_beat_positions():
    b = beat_positions(torch.tensor([0.0, 2.0]), torch.tensor([120.0, 60.0]), 5, frame_rate=10.0)
    assert b.shape == (2, 5)
    assert torch.allclose(b[0], torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8]))  # 2 beats per second
    assert torch.allclose(b[1], torch.tensor([2.0, 2.1, 2.2, 2.3, 2.4]))
    assert torch.allclose(beat_positions(1.5, 90.0, 3, 44100 / 960)[0, 0], torch.tensor(1.5))
    assert math.isclose(float(beat_positions(0.0, 120.0, 2, 44100 / 960)[0, 1]), 2 * 960 / 44100, rel_tol=1e-6)


def test_beat_grid_zero_init_then_it_conditions_cond_samples_only():
    plain, grid = make(), make(fresh=True, beat_grid=True)
    grid.load_state_dict(plain.state_dict(), strict=False)  # only grid_proj is new, and it is zero
    x, cn, cond = inputs(b=3)
    beats = beat_positions(0.0, cond["bpm"], x.shape[-1], frame_rate=5.0)
    assert torch.equal(grid(x, cn, **cond, beats=beats), plain(x, cn, **cond))
    perturb(grid, seed=3, only="grid_proj")
    with_grid = grid(x, cn, **cond, beats=beats)
    assert not torch.allclose(with_grid, plain(x, cn, **cond), atol=1e-4)
    # one bar later the grid is the same; a beat later it is not
    assert torch.allclose(with_grid, grid(x, cn, **cond, beats=beats + 4.0), atol=1e-5)
    assert not torch.allclose(with_grid, grid(x, cn, **cond, beats=beats + 1.0), atol=1e-4)
    # no beats, or a NaN row, is the model without the grid for that sample
    none = grid(x, cn, **cond)
    assert torch.equal(none, plain(x, cn, **cond))
    rows = beats.clone()
    rows[1] = float("nan")
    mixed = grid(x, cn, **cond, beats=rows)
    assert torch.allclose(mixed[1], none[1], atol=1e-5) and torch.allclose(mixed[0], with_grid[0], atol=1e-5)
    # the null condition has no tempo: unconditional samples ignore the grid
    u = torch.tensor([False, True, False])
    assert torch.allclose(grid(x, cn, **cond, beats=beats, uncond=u)[1], grid(x, cn, **cond, uncond=True)[1], atol=1e-5)
    # a model without the grid ignores beats
    assert torch.equal(plain(x, cn, **cond, beats=beats), plain(x, cn, **cond))
    with pytest.raises(PrestoError, match="beats must be"):
        grid(x, cn, **cond, beats=beats[:, :4])

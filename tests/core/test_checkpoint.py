"""Model folders: bit-exact save/load, integrity errors, hub-layout resolution."""

import json
import os
from pathlib import Path

import pytest
import torch

from presto_core import checkpoint as ckpt
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.dit import DiT, DiTConfig
from presto_core.errors import PrestoError
from tests.factory import MICRO_DIT, MICRO_VAE, VARIANTS, make_model_folder, perturb


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind", ["vae", "dit"])
def test_round_trip_bit_exact(tmp_path, kind):
    if kind == "vae":
        cfg = VAEConfig(**MICRO_VAE, latent_scale=0.37)
        model = AudioVAE(cfg)
    else:
        cfg = DiTConfig(**MICRO_DIT, budget_conditioning=True, drop_mode="ase")
        model = DiT(cfg)
    perturb(model, 1)
    sha = ckpt.save_component(tmp_path / kind, model, cfg, meta={"note": "x"})
    loaded, meta = ckpt.load_component(tmp_path / kind, sha)
    assert meta == {"note": "x"}
    assert loaded.cfg == cfg
    assert _states_equal(model, loaded)
    assert not loaded.training


def test_fp16_save_loads_as_fp32_rounded(tmp_path):
    cfg = VAEConfig(**MICRO_VAE)
    model = AudioVAE(cfg)
    perturb(model, 2)
    ckpt.save_component(tmp_path / "v", model, cfg, dtype=torch.float16)
    loaded, _ = ckpt.load_component(tmp_path / "v")
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == v.dtype
        if v.is_floating_point():
            assert torch.equal(w, v.half().float())


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    cfg = VAEConfig(**MICRO_VAE)
    sha = ckpt.save_component(tmp_path / "v", AudioVAE(cfg), cfg)
    weights = tmp_path / "v" / ckpt.WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(PrestoError, match="checksum"):
        ckpt.load_component(tmp_path / "v", sha)
    weights.write_bytes(bytes(blob[:100]))  # truncated and no checksum to compare against
    with pytest.raises(PrestoError, match="corrupt weights"):
        ckpt.load_component(tmp_path / "v")
    weights.unlink()
    with pytest.raises(PrestoError, match="missing weights"):
        ckpt.load_component(tmp_path / "v")
    (tmp_path / "v" / ckpt.CONFIG).write_text("{not json")
    with pytest.raises(PrestoError, match="corrupt model config"):
        ckpt.load_component(tmp_path / "v")
    with pytest.raises(PrestoError, match="missing model config"):
        ckpt.load_component(tmp_path / "nowhere")


def test_weights_that_do_not_match_config(tmp_path):
    cfg = DiTConfig(**MICRO_DIT)
    ckpt.save_component(tmp_path / "d", DiT(cfg), cfg)
    data = json.loads((tmp_path / "d" / ckpt.CONFIG).read_text())
    data["config"]["depth"] = 5
    (tmp_path / "d" / ckpt.CONFIG).write_text(json.dumps(data))
    with pytest.raises(PrestoError, match="do not match config"):
        ckpt.load_component(tmp_path / "d")
    data["config"]["bogus"] = 1
    (tmp_path / "d" / ckpt.CONFIG).write_text(json.dumps(data))
    with pytest.raises(PrestoError, match="unknown config keys"):
        ckpt.load_component(tmp_path / "d")


def _int8_dit(folder: Path) -> DiT:
    """Save a perturbed micro DiT (one all-zero row) with quantize="int8" to ``folder``; return it."""
    cfg = DiTConfig(**MICRO_DIT)
    model = perturb(DiT(cfg).eval(), 3)
    with torch.no_grad():
        model.blocks[0].mlp.w2.weight[0].zero_()
    ckpt.save_component(folder, model, cfg, quantize="int8")
    return model


def _dit_inputs(cfg: DiTConfig, b: int = 2, t: int = 12, length: int = 5):
    g = torch.Generator().manual_seed(7)
    text = torch.randn(b, length, cfg.text_dim, generator=g)
    return (torch.randn(b, cfg.latent_channels, t, generator=g), torch.randn(b, generator=g) * 0.5,
            dict(text=text, text_mask=torch.ones(b, length, dtype=torch.bool), bpm=torch.linspace(80.0, 160.0, b)))


def test_int8_round_trip_dit(tmp_path):
    from safetensors.torch import load_file

    model = _int8_dit(tmp_path / "q")
    sha_fp16 = ckpt.save_component(tmp_path / "h", model, model.cfg, dtype=torch.float16)
    ratio = (tmp_path / "q" / ckpt.WEIGHTS).stat().st_size / (tmp_path / "h" / ckpt.WEIGHTS).stat().st_size
    assert 0.45 < ratio < 0.6  # int8 matrices + fp32 row scales + fp16 rest (0.54 measured)
    assert ckpt.load_component(tmp_path / "h", sha_fp16)[0] is not None
    storage = ckpt.read_component_config(tmp_path / "q")["storage"]
    assert storage["quantize"] == "int8" and storage["float_dtype"] == "float16"

    stored = load_file(str(tmp_path / "q" / ckpt.WEIGHTS))
    quantized = {k for k, v in stored.items() if v.dtype == torch.int8}
    assert {"blocks.0.attn.qkv.weight", "text_proj.0.weight", "final_ada.weight"} <= quantized
    assert not {"x_proj.weight", "final_proj.weight", "null_text"} & quantized  # < 4096 elements or no Linear
    assert set(stored) == set(model.state_dict()) | {k + ckpt.SCALE_SUFFIX for k in quantized}
    loaded, _ = ckpt.load_component(tmp_path / "q", ckpt.sha256_file(tmp_path / "q" / ckpt.WEIGHTS))
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == torch.float32
        if k in quantized:
            half_step = v.abs().amax(dim=1, keepdim=True) / 127 / 2
            assert ((w - v).abs() <= half_step * (1 + 1e-4)).all(), k
        else:
            assert torch.equal(w, v.half().float()), k
    assert not loaded.state_dict()["blocks.0.mlp.w2.weight"][0].any()  # a zero row stays exactly zero

    x, c_noise, cond = _dit_inputs(model.cfg)
    with torch.no_grad():
        ref, got = model(x, c_noise, **cond), loaded(x, c_noise, **cond)
    assert ((got - ref).norm() / ref.norm()).item() < 1e-2


@pytest.mark.parametrize("corrupt, match", [
    (lambda s: s.pop("blocks.1.attn.out.weight" + ckpt.SCALE_SUFFIX), "'blocks.1.attn.out.weight' has no scale"),
    (lambda s: s["blocks.1.attn.out.weight" + ckpt.SCALE_SUFFIX].fill_(float("nan")), "finite positive"),
    (lambda s: s["blocks.1.attn.out.weight" + ckpt.SCALE_SUFFIX].neg_(), "finite positive"),
    (lambda s: s.update({"text_proj.2.weight" + ckpt.SCALE_SUFFIX: torch.ones(3)}), "finite positive"),
    (lambda s: s.update({"text_proj.2.weight": s["text_proj.2.weight"].float()}), "scales without an int8"),
])
def test_int8_corrupt_scales_give_clear_errors(tmp_path, corrupt, match):
    from safetensors.torch import load_file, save_file

    _int8_dit(tmp_path / "q")
    weights = tmp_path / "q" / ckpt.WEIGHTS
    state = load_file(str(weights))
    corrupt(state)
    save_file(state, str(weights))
    with pytest.raises(PrestoError, match=match) as e:
        ckpt.load_component(tmp_path / "q")
    assert str(weights) in str(e.value)


def test_int8_storage_record_is_required_and_checked(tmp_path):
    _int8_dit(tmp_path / "q")
    path = tmp_path / "q" / ckpt.CONFIG
    data = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "storage"}))
    with pytest.raises(PrestoError, match="is int8 but config.json records no quantization"):
        ckpt.load_component(tmp_path / "q")
    data["storage"]["quantize"] = "int4"
    path.write_text(json.dumps(data))
    with pytest.raises(PrestoError, match="unsupported weight storage"):
        ckpt.load_component(tmp_path / "q")


def test_quantize_argument_is_validated(tmp_path):
    cfg = DiTConfig(**MICRO_DIT)
    model = DiT(cfg)
    with pytest.raises(PrestoError, match="quantize must be None or one of"):
        ckpt.save_component(tmp_path / "d", model, cfg, quantize="int4")
    assert not (tmp_path / "d").exists()
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[0, 0] = float("inf")
    with pytest.raises(PrestoError, match="'blocks.0.attn.qkv.weight': it holds NaN or inf"):
        ckpt.save_component(tmp_path / "d", model, cfg, quantize="int8")


def test_export_quantizes_only_the_diffusion_components(tmp_path):
    from train.export import build_model_folder

    src = make_model_folder(tmp_path / "src", variants=("base", "presto-ls"))
    out = build_model_folder(tmp_path / "out", vae=src / "vae", base=src / "base", clap=src / "clap",
                             extra_variants={"presto-ls": (VARIANTS["presto-ls"], src / "presto_ls")},
                             quantize="int8")
    comps = ckpt.read_index(out)["components"]
    assert set(comps) == {"vae", "base", "presto_ls", "clap"}
    for name, entry in comps.items():
        assert ("storage" in ckpt.read_component_config(out / name)) == (name in ("base", "presto_ls"))
        ckpt.load_component(out / name, entry["sha256"])


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    ckpt.atomic_write_json(path, {"a": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_index_errors(tmp_path):
    with pytest.raises(PrestoError, match="not a Presto model folder"):
        ckpt.read_index(tmp_path)
    for bad in ({"format": "other"}, [1, 2]):
        (tmp_path / ckpt.INDEX).write_text(json.dumps(bad))
        with pytest.raises(PrestoError, match="not a Presto model index"):
            ckpt.read_index(tmp_path)
    (tmp_path / ckpt.INDEX).write_text("{oops")
    with pytest.raises(PrestoError, match="corrupt"):
        ckpt.read_index(tmp_path)
    ckpt.write_index(tmp_path, {"components": {}, "variants": {}})
    with pytest.raises(PrestoError, match="default_variant"):
        ckpt.read_index(tmp_path)


def _fake_hub_cache(cache: Path, repo_id: str, source: Path, rev: str = "0" * 40) -> None:
    """Lay ``source`` out exactly as huggingface_hub's cache stores a downloaded snapshot."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)


def test_resolve_local_and_hub_layout(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model_index.json").write_text("{}")
    assert ckpt.resolve_model_dir(src) == src
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
    _fake_hub_cache(tmp_path / "cache", "presto/tiny", src)
    got = ckpt.resolve_model_dir("presto/tiny", cache_dir=str(tmp_path / "cache"))
    assert (got / "model_index.json").is_file()
    with pytest.raises(PrestoError, match="could not fetch"):
        ckpt.resolve_model_dir("presto/absent", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(PrestoError, match="neither a model folder"):
        ckpt.resolve_model_dir(str(tmp_path / "no" / "such" / "dir"))

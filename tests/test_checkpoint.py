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
from tests.factory import MICRO_DIT, MICRO_VAE, perturb


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

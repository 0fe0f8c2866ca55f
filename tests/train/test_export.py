"""train/export.py merging the variants of several run model folders into one (the shipped default
model): index, default variant, loading and generation, fp16/int8 storage, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from presto_core import checkpoint as ckpt
from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import Precond
from presto_core.errors import PrestoError
from presto_core.pipeline import PrestoPipeline
from tests.factory import VARIANTS, make_model_folder
from tests.fixtures import CONFIGS
from train import export
from train.diffusion import model_folder
from train.infra.checkpointing import EMA

DISTILLED = ("presto-l", "presto-s", "presto-ls")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Micro components (``src``) and one model folder per distillation run, written as the runs
    write them (base + own variant); the Presto-S run stores fp16 weights."""
    root = tmp_path_factory.mktemp("export")
    src = make_model_folder(root / "src", variants=("base", *DISTILLED))
    folders = {}
    for name in DISTILLED:
        spec = VARIANTS[name]
        folders[name] = model_folder.build_model_folder(
            root / name / "model", vae=src / "vae", base=src / "base", steps=4,
            extra_variants={name: (spec, src / spec["component"])}, fp16=name == "presto-s")
    return src, folders


@pytest.fixture(scope="module")
def merged(runs, tmp_path_factory) -> Path:
    src, folders = runs
    extra = model_folder.variants_from_model_folders(folders.values())
    return model_folder.build_model_folder(tmp_path_factory.mktemp("merged") / "model", vae=src / "vae",
                                     base=src / "base", clap=src / "clap", steps=4, extra_variants=extra,
                                     default_variant="presto-ls")


def test_variants_from_model_folder(runs):
    src, folders = runs
    got = model_folder.variants_from_model_folder(folders["presto-l"])
    assert got == {"presto-l": (VARIANTS["presto-l"], folders["presto-l"] / "presto_l")}


def test_merged_index_loads_and_generates(merged):
    index = ckpt.read_index(merged)
    assert index["default_variant"] == "presto-ls"
    assert list(index["variants"]) == ["base", *DISTILLED]
    assert all(index["variants"][v] == VARIANTS[v] for v in DISTILLED)
    assert set(index["components"]) == {"vae", "base", "clap", "presto_l", "presto_s", "presto_ls"}
    # The Presto-S run's fp16 weights are copied as they are (the loader casts them to fp32).
    stored = load_file(str(merged / "presto_s" / ckpt.WEIGHTS))
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    pipe = PrestoPipeline.from_pretrained(merged, device="cpu", precision="fp32")
    assert pipe.variant_names == ["base", *DISTILLED] and pipe.default_variant == "presto-ls"
    res = pipe.generate(prompt="calm piano", duration=1.0, steps=1, seed=0)
    assert res.settings["variant"] == "presto-ls" and res.clips[0].audio.shape == (16000,)


def test_int8_applies_to_added_diffusion_components(runs, tmp_path):
    src, folders = runs
    out = model_folder.build_model_folder(tmp_path / "q", vae=src / "vae", base=src / "base", clap=src / "clap",
                                    extra_variants=model_folder.variants_from_model_folders(folders.values()),
                                    quantize="int8")
    for name, entry in ckpt.read_index(out)["components"].items():
        storage = ckpt.read_component_config(out / name).get("storage")
        assert (storage is not None) == (name not in ("vae", "clap")), name
        got = ckpt.load_component(out / name, entry["sha256"])[0].state_dict()
        if storage:  # re-quantized from the run's weights (fp16 for presto_s): within a quantization step
            ref, _ = ckpt.load_component(folders["presto-s"] / "presto_s" if name == "presto_s" else src / name)
            for k, v in ref.state_dict().items():
                assert (got[k] - v).abs().max() <= 0.01 * v.abs().max() + 1e-6, (name, k)


def test_bad_inputs_fail_clearly(runs, tmp_path):
    src, folders = runs
    base = dict(vae=src / "vae", base=src / "base")
    extra = model_folder.variants_from_model_folders([folders["presto-l"]])
    with pytest.raises(ValueError, match=r"default variant 'presto-s' is not one of .*'presto-l'"):
        model_folder.build_model_folder(tmp_path / "a", **base, extra_variants=extra, default_variant="presto-s")
    with pytest.raises(ValueError, match="'base' is reserved"):
        model_folder.build_model_folder(tmp_path / "a", **base,
                                  extra_variants={"base": (VARIANTS["presto-l"], src / "presto_l")})
    assert not any(tmp_path.iterdir())  # validated before anything is written
    with pytest.raises(PrestoError, match="'presto-l' is in both"):
        model_folder.variants_from_model_folders([folders["presto-l"], folders["presto-l"]])
    with pytest.raises(PrestoError, match="not a Presto model folder"):
        model_folder.variants_from_model_folder(src / "vae")
    # Another run's presto_l component with other weights under a second variant name.
    other = make_model_folder(tmp_path / "other", variants=("base", "presto-l"), with_clap=False, seed=1)
    clash = {**extra, "presto-l2": (VARIANTS["presto-l"], other / "presto_l")}
    with pytest.raises(ValueError, match="component 'presto_l' at .* differs"):
        model_folder.build_model_folder(tmp_path / "a", **base, extra_variants=clash)
    # A run folder whose component no longer matches its recorded SHA-256.
    weights = other / "presto_l" / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    with pytest.raises(PrestoError, match="checksum does not match"):
        model_folder.variants_from_model_folder(other)


def test_cli_adds_variants(runs, tmp_path, capsys):
    """The CLI on a hand-written base checkpoint (EMA of Precond(DiT) + run_state.json)."""
    src, folders = runs
    ck = tmp_path / "ck"
    torch.manual_seed(0)
    EMA(Precond(DiT(DiTConfig(**json.loads((CONFIGS / "test.json").read_text())["base"]["model"]))), 0.9).save(
        ck / "ema_model.safetensors")
    ckpt.atomic_write_json(ck / "run_state.json", {"step": 7})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heldout_prompts.json").write_text(json.dumps([{"caption": "a tune", "bpm": 90}]))
    argv = ["--config", str(CONFIGS / "test.json"), "--set", f"data.root={tmp_path / 'data'}",
            "--checkpoint", str(ck), "--vae", str(src / "vae"), "--clap", str(src / "clap"),
            "--out", str(tmp_path / "model"), "--add-variants", *map(str, folders.values())]
    assert export.main(argv + ["--default-variant", "presto-x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "default variant 'presto-x'" in err
    assert export.main(argv + ["--add-variants", str(tmp_path)]) == 2  # no model_index.json there
    assert "not a Presto model folder" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()

    assert export.main(argv + ["--default-variant", "presto-ls", "--int8"]) == 0
    index = ckpt.read_index(tmp_path / "model")
    assert index["default_variant"] == "presto-ls" and list(index["variants"]) == ["base", *DISTILLED]
    assert index["prompts"] == "prompts.json"
    for name, entry in index["components"].items():
        assert ("storage" in ckpt.read_component_config(tmp_path / "model" / name)) == (name not in ("vae", "clap"))
    _, meta = ckpt.load_component(tmp_path / "model" / "base", index["components"]["base"]["sha256"])
    assert meta["step"] == 7


def test_cli_reassembles_a_model_folder_with_one_variant_replaced(merged, runs, tmp_path, capsys):
    """How a shipped folder is updated after one more distillation run: its own base component
    (--base), some of its variants (DIR:a,b) and the new run's variant."""
    src, folders = runs
    newer = make_model_folder(tmp_path / "newer", variants=("base", "presto-ls"), with_clap=False, seed=3)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heldout_prompts.json").write_text(json.dumps([{"caption": "a tune", "bpm": 90}]))
    out = tmp_path / "model"
    argv = ["--config", str(CONFIGS / "test.json"), "--set", f"data.root={tmp_path / 'data'}",
            "--base", str(merged / "base"), "--vae", str(merged / "vae"), "--clap", str(merged / "clap"),
            "--out", str(out), "--default-variant", "presto-ls"]
    # Without a selection, presto-ls would come from both folders.
    assert export.main(argv + ["--add-variants", str(merged), str(newer)]) == 2
    assert "'presto-ls' is in both" in capsys.readouterr().err
    assert export.main(argv + ["--add-variants", f"{merged}:presto-x", str(newer)]) == 2
    assert "has no variant 'presto-x'" in capsys.readouterr().err
    assert export.main(argv + ["--base", str(merged / "vae"), "--add-variants", str(newer)]) == 2
    assert "is not a DiT component" in capsys.readouterr().err
    assert not out.exists()
    assert export.main(argv + ["--add-variants", f"{merged}:presto-l,presto-s", str(newer)]) == 0
    index = ckpt.read_index(out)
    assert list(index["variants"]) == ["base", "presto-l", "presto-s", "presto-ls"]
    for comp, ref in (("base", merged / "base"), ("presto_l", merged / "presto_l"),
                      ("presto_ls", newer / "presto_ls")):
        got = ckpt.load_component(out / comp)[0].state_dict()
        for k, v in ckpt.load_component(ref)[0].state_dict().items():
            assert torch.equal(got[k], v), (comp, k)
    assert model_folder.split_variant_source("/a/b:c,d") == ("/a/b", ["c", "d"])
    assert model_folder.split_variant_source("runs/x/model") == ("runs/x/model", None)


def test_cli_adds_a_mono_to_stereo_component(merged, tmp_path, capsys):
    stereo = make_model_folder(tmp_path / "st", variants=("base",), with_clap=False, with_m2s=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heldout_prompts.json").write_text(json.dumps([{"caption": "a tune", "bpm": 90}]))
    argv = ["--config", str(CONFIGS / "test.json"), "--set", f"data.root={tmp_path / 'data'}",
            "--base", str(merged / "base"), "--vae", str(merged / "vae"), "--out", str(tmp_path / "model")]
    assert export.main(argv + ["--m2s", str(merged / "vae")]) == 2
    assert "not a mono-to-stereo one" in capsys.readouterr().err
    assert export.main(argv + ["--m2s", str(stereo / "m2s")]) == 0
    index = ckpt.read_index(tmp_path / "model")
    assert index["components"]["m2s"]["sha256"] == ckpt.sha256_file(tmp_path / "model" / "m2s" / "model.safetensors")
    pipe = PrestoPipeline.from_pretrained(tmp_path / "model", device="cpu", precision="fp32")
    assert pipe.has_stereo
    assert pipe.generate(prompt="x", duration=1.0, seed=0, steps=1).clips[0].audio.shape == (2, 16000)
    assert "| m2s | m2s |" in (tmp_path / "model" / "README.md").read_text()


def test_into_adds_m2s_to_an_existing_folder_and_changes_nothing_else(tmp_path, capsys):
    import shutil

    folder = make_model_folder(tmp_path / "shipped", variants=("base", "presto-ls"))
    stereo = make_model_folder(tmp_path / "st", variants=("base",), with_clap=False, with_m2s=True)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert export.main(["--into", str(folder), "--m2s", str(stereo / "vae")]) == 2
    assert "not 'm2s'" in capsys.readouterr().err
    assert export.main(["--into", str(folder), "--m2s", str(stereo / "m2s"), "--fp16"]) == 0
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    changed = {str(k) for k in after if before.get(k) != after[k]}
    assert changed == {"model_index.json", "m2s/config.json", "m2s/model.safetensors"}
    index = ckpt.read_index(folder)
    assert set(index["components"]) == {"vae", "base", "presto_ls", "clap", "m2s"}
    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    assert pipe.has_stereo
    other = make_model_folder(tmp_path / "other", variants=("base",), with_clap=False)
    shutil.rmtree(other / "vae")  # a 44.1 kHz VAE beside the 16 kHz m2s: refused
    vae = AudioVAE(VAEConfig.tiny())
    ckpt.save_component(other / "vae", vae, vae.cfg)
    assert export.main(["--into", str(other), "--m2s", str(stereo / "m2s")]) == 2
    assert "Hz" in capsys.readouterr().err


def test_model_card_records_training_data_measures_and_limits(merged, tmp_path, capsys):
    """Every exported folder carries a README.md model card; --results puts a train.eval report's
    numbers in it, and a file that is not one is refused before anything is written."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"path": f"audio/{i}.wav", "caption": "a tune", "bpm": 90, "duration": 1800.0,
                              "genre": "jazz" if i else "funk", "split": "heldout" if i == 2 else "train"})
                  for i in range(3)) + "\n")
    results = {"command": "python -m train.eval --model M", "date": "2026-12-01", "machine": {"cpu": "X", "threads": 2},
               "quality": [{"variant": "presto-ls", "sampler": "pingpong", "steps": 4, "reject_ratio": 0.0,
                            "fad": 0.599, "clap": 50.47}],
               "speed": [{"variant": "presto-ls", "batch": 1, "mono_latency_ms": 209.4, "speedup": 27.4}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "bad.json").write_text("[1, 2]")
    argv = ["--config", str(CONFIGS / "test.json"), "--set", f"data.root={data}", "--base", str(merged / "base"),
            "--vae", str(merged / "vae"), "--clap", str(merged / "clap"), "--out", str(tmp_path / "model")]
    assert export.main(argv + ["--results", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not a train.eval report" in capsys.readouterr().err and not (tmp_path / "model").exists()
    assert export.main(argv + ["--results", str(tmp_path / "results.json")]) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: presto\n") and "pipeline_tag: text-to-audio" in card
    assert "| base | dit |" in card and "| vae | vae |" in card and "| base (default) | base | dpmpp_2s |" in card
    assert "2 train pieces, 1.50 hours" in card.replace("1 heldout, ", "") and "Genres: funk, jazz." in card
    assert "| presto-ls | pingpong, 4 | 0.0 | 0.599 | 50.5 |" in card and "| presto-ls | 209 | 27.4x |" in card
    assert "## Limits" in card and "mono" in card
    # Without a report the card says how to measure.
    assert export.main(argv + ["--out", str(tmp_path / "plain")]) == 0
    assert "Not evaluated at export time: `python -m train.eval" in (tmp_path / "plain" / "README.md").read_text()


def test_presto_train_dispatches_to_each_command(capsys):
    from train.__main__ import STAGES, main

    assert main(["nope"]) == 2 and "unknown stage 'nope'; allowed: vae, clap, base" in capsys.readouterr().err
    assert main([]) == 2 and main(["--help"]) == 0
    for stage in STAGES:
        with pytest.raises(SystemExit) as e:
            main([stage.replace("_", "-"), "--help"])
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith("usage:")

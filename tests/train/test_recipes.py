"""train/recipes/redistill.sh, vae-decoder.sh and base-grid.sh: each training call is a stage command whose --set keys and values
load into that stage's config (with PYTHON=echo the script prints the command instead of running it)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from train.diffusion.configs import PrestoLSStageConfig, PrestoLStageConfig, PrestoSStageConfig
from train.infra.config import load_config

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "train" / "recipes" / "redistill.sh"


def _command(*args: str, recipe: Path = RECIPE) -> list[str]:
    out = subprocess.run(["bash", str(recipe), *args], env={**os.environ, "PYTHON": "echo"}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return shlex.split(out)


@pytest.mark.parametrize("call,stage,cls", [("presto-ls", "presto_ls", PrestoLSStageConfig),
                                            ("presto-s", "presto_s", PrestoSStageConfig)])
def test_training_calls_load_into_their_stage_config(call, stage, cls):
    argv = _command(call)
    assert argv[:2] == ["-m", f"train.{stage}"] and "--resume" in argv and "--out" in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert all(s.split("=", 1)[0].split(".")[0] in (stage, "data") for s in sets)
    data, cfg, _ = load_config(ROOT / argv[argv.index("--config") + 1], stage, cls, sets)
    assert str(data.root) == "data/corpus-v2" and len(sets) >= 12
    assert cfg.guidance == 2.0 and cfg.loop.batch_size == 4 and cfg.loop.checkpoint_every == 250
    assert cfg.base_model.endswith("/base") and cfg.fake_warmup_steps == 200


@pytest.mark.parametrize("call,method", [("presto-l", "presto_l"), ("ase", "ase")])
def test_score_matching_calls_load_into_the_presto_l_config(call, method):
    argv = _command(call)
    assert argv[:2] == ["-m", "train.presto_l"] and "--resume" in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    data, cfg, _ = load_config(ROOT / argv[argv.index("--config") + 1], "presto_l", PrestoLStageConfig, sets)
    assert str(data.root) == "data/corpus-v2" and cfg.method == method and cfg.base_model.endswith("/base")
    assert cfg.latent_cache == "runs/tiny/cache-v2" and cfg.loop.max_steps == 1000


def test_presto_ls_starts_from_the_redistilled_presto_l():
    # the grid base (base v3) teaches every variant; Presto-LS's generator is the Presto-L from it
    argv = _command("presto-ls")
    sets = dict(s.split("=", 1) for s in (argv[i + 1] for i, a in enumerate(argv) if a == "--set"))
    run = "runs/tiny/presto_l-v4/export/presto_l"  # else the shipped Presto-L v4 (a clone has no runs/)
    assert sets["presto_ls.generator_model"] == (run if (ROOT / run).is_dir() else "assets/presto-default/presto_l")
    dsm = _command("presto-l")
    assert dsm[dsm.index("--out") + 1] == "runs/tiny/presto_l-v4"


def test_unknown_call_prints_usage_and_exits_2():
    r = subprocess.run(["bash", str(RECIPE), "nonsense"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "redistill.sh presto-ls" in r.stdout
    r = subprocess.run(["bash", str(RECIPE), "snapshot", "nonsense", "5", "out"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown variant nonsense" in r.stderr


def test_vae_decoder_recipe_loads_into_the_vae_config():
    from train.vae import VAEStageConfig

    argv = _command(recipe=ROOT / "train" / "recipes" / "vae-decoder.sh")
    assert argv[:2] == ["-m", "train.vae"] and "--resume" in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    data, cfg, _ = load_config(ROOT / argv[argv.index("--config") + 1], "vae", VAEStageConfig, sets)
    assert str(data.root) == "data/corpus-v2" and cfg.freeze_encoder and cfg.init.endswith("presto-default/vae")
    assert cfg.pitch_weight > 0 and cfg.adv_weight == 0.5 and not cfg.pca_init
    r = subprocess.run(["bash", str(ROOT / "train" / "recipes" / "vae-decoder.sh"), "nonsense"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "vae-decoder.sh snapshot" in r.stdout


def test_base_grid_recipe_loads_into_the_base_config():
    from train.diffusion.configs import BaseStageConfig

    recipe = ROOT / "train" / "recipes" / "base-grid.sh"
    argv = _command(recipe=recipe)
    assert argv[:2] == ["-m", "train.base"] and "--resume" in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    data, cfg, _ = load_config(ROOT / argv[argv.index("--config") + 1], "base", BaseStageConfig, sets)
    assert str(data.root) == "data/corpus-v2" and cfg.model.beat_grid and cfg.grid_dropout == 0.1
    assert cfg.init.endswith("/base") and cfg.latent_cache == "runs/tiny/cache-v2" and cfg.loop.lr == 2e-4
    r = subprocess.run(["bash", str(recipe), "nonsense"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "base-grid.sh snapshot" in r.stdout

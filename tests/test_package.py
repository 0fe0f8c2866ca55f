"""The installable package: a plain (non-editable) install of a wheel built from this tree gives the
three console scripts, and ``presto`` generates with the embedded default model from outside the
source tree. The wheel's dependencies are taken from this test's own environment (a .pth file), so
nothing is downloaded."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from presto_core import generate

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("vae", "base", "clap", "presto_l", "presto_s", "presto_ls", "ase")


def test_default_model_falls_back_to_the_installed_copy(tmp_path, monkeypatch):
    installed = tmp_path / "share" / "presto" / "presto-default"
    installed.mkdir(parents=True)
    assert generate.default_model() == generate.DEFAULT_MODEL  # the source tree's assets/ first
    monkeypatch.setattr(generate, "DEFAULT_MODEL", tmp_path / "missing")
    monkeypatch.setattr(generate, "INSTALLED_MODEL", installed)
    assert generate.default_model() == installed
    monkeypatch.setattr(generate, "INSTALLED_MODEL", tmp_path / "also-missing")
    assert generate.default_model() == tmp_path / "missing"  # the error then names the usual place


@pytest.mark.slow
def test_plain_install_runs_the_console_scripts(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=600, cwd=tmp_path)
    (wheel,) = wheels.glob("presto_music-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = [n for n in names if "/data/share/presto/presto-default/" in n]
    assert any(n.endswith("presto-default/model_index.json") for n in data)
    assert any(n.endswith("presto-default/README.md") for n in data)
    for comp in COMPONENTS:
        assert any(n.endswith(f"presto-default/{comp}/model.safetensors") for n in data), comp
    assert any(n.endswith("train/configs/tiny.json") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("presto = presto_core.generate:main", "presto-app = app.cli:main",
                   "presto-train = train.__main__:main"):
        assert script in entry

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=600)
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    run_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = tmp_path / "clip.wav"
    # Outside the source tree: only the installed package and its share/ copy of the model are found.
    done = subprocess.run([str(env_dir / "bin" / "presto"), "--prompt", "warm jazz piano trio", "--bpm", "100",
                           "--duration", "1", "--steps", "1", "--seed", "3", "--out", str(out)],
                          cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    info = sf.info(out)
    assert info.samplerate == 44100 and abs(info.duration - 1.0) < 0.05
    for script in ("presto-app", "presto-train"):
        helped = subprocess.run([str(env_dir / "bin" / script), "--help"], cwd=tmp_path, env=run_env,
                                capture_output=True, text=True, timeout=300)
        assert helped.returncode == 0 and "usage" in (helped.stdout + helped.stderr)

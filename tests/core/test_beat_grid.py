"""A beat-grid model folder in the pipeline: clips and edits give the DiT the beat position of every
latent frame, counted from the clip's first sample (a window of a longer piece starts part-way
into the grid), and a model folder without the grid is served as before."""

import numpy as np
import pytest
import torch

from presto_core.pipeline import PrestoPipeline
from presto_core.request import GenerationRequest
from tests.factory import make_model_folder

SR = 16000
BPM = 120.0  # 2 beats per second; one 4/4 bar = 2 s
BAR = 32000


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = make_model_folder(tmp_path_factory.mktemp("grid") / "m", variants=("base", "presto-ls"),
                               max_duration=8.0, beat_grid=True)
    return PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")


def _latents(pipe, variant: str, beat_start: float) -> torch.Tensor:
    req = GenerationRequest(prompt="drums", bpm=BPM, duration=4.0, seed=0, variant=variant, stereo=False).validated(pipe)
    cond = pipe.encode_prompt(req.prompt, 1)
    return pipe.sample_latents(req, cond, 24, torch.Generator().manual_seed(0), beat_start=beat_start)


@pytest.mark.parametrize("variant", ["base", "presto-ls"])
def test_the_grid_repeats_every_bar_and_moves_with_the_beat(pipe, variant):
    assert pipe.variants[variant][1].backbone.cfg.beat_grid
    z0 = _latents(pipe, variant, 0.0)
    assert torch.allclose(z0, _latents(pipe, variant, 4.0), atol=1e-5)  # a whole 4/4 bar later
    assert not torch.allclose(z0, _latents(pipe, variant, 1.0), atol=1e-4)  # a beat later


def test_edits_give_each_window_its_place_on_the_grid(pipe, monkeypatch):
    seen = []
    real = pipe.sample_latents

    def spy(*args, **kwargs):
        seen.append(kwargs.get("beat_start", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe, "sample_latents", spy)
    src = np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR).astype(np.float32) * 0.3
    res = pipe.extend(src, SR, bars=5, prompt="drums", bpm=BPM, seed=1, variant="presto-ls", stereo=False,
                      context_seconds=2.0)
    assert len(seen) == len(res.windows) > 1
    assert seen == [pytest.approx(w["start_s"] * BPM / 60.0) for w in res.windows]
    assert seen[0] == 0.0 and seen[-1] > 4.0
    # A loop regenerates its seam in the clip rolled by whole bars: the grid is unchanged there.
    seen.clear()
    pipe.generate(prompt="drums", bpm=BPM, duration=4.0, seed=3, loop=True, stereo=False, variant="presto-ls")
    assert len(seen) == 2 and seen[0] == 0.0 and float(seen[1]) % 4.0 == pytest.approx(0.0)


def test_a_folder_without_the_grid_ignores_the_beat_position(tmp_path):
    plain = PrestoPipeline.from_pretrained(make_model_folder(tmp_path / "p", variants=("base", "presto-ls"),
                                                             max_duration=8.0), device="cpu", precision="fp32")
    assert not plain.variants["presto-ls"][1].backbone.cfg.beat_grid
    assert torch.equal(_latents(plain, "presto-ls", 0.0), _latents(plain, "presto-ls", 1.0))

"""presto_core.adapters: the adapter folder round trip, the merge maths, stacking with weights,
switching back to the plain model exactly, and the errors a person can meet (mismatched model,
bad weight, corrupt folder)."""

import json

import pytest
import torch

from presto_core.adapters import (
    WEIGHTS, check_weight, load_adapter, lora_delta, merge_into, parse_adapter_arg, save_adapter,
)
from presto_core.errors import PrestoError
from presto_core.pipeline import PrestoPipeline
from presto_core.request import GenerationRequest
from tests.factory import LORA_MODULES, make_model_folder, random_lora_factors

MODULES = list(LORA_MODULES)


def random_factors(pipe, comp: str, rank: int, seed: int) -> dict:
    return random_lora_factors(pipe, comp, rank, seed)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), variants=("base", "presto-ls"), with_clap=False)


@pytest.fixture(scope="module")
def adapters(folder, tmp_path_factory):
    """Two adapters of the micro model: A adapts base and presto_ls, B base only (rank 2)."""
    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    root = tmp_path_factory.mktemp("adapters")
    sha = pipe.component_sha256
    save_adapter(root / "a", {"base": random_factors(pipe, "base", 4, 1), "presto_ls": random_factors(pipe, "presto_ls", 4, 2)},
                 rank=4, alpha=8.0, base_sha256=sha, name="style-a")
    save_adapter(root / "b", {"base": random_factors(pipe, "base", 2, 3)}, rank=2, alpha=2.0, base_sha256=sha)
    return root / "a", root / "b"


def req(**kw):
    return GenerationRequest(prompt="warm rhodes", bpm=100.0, duration=1.0, seed=7, **kw)


def test_round_trip_and_merge_maths(adapters):
    a = load_adapter(adapters[0])
    assert (a.name, a.rank, a.alpha, a.scale) == ("style-a", 4, 8.0, 2.0)
    assert sorted(a.factors) == ["base", "presto_ls"] and sorted(a.factors["base"]) == sorted(MODULES)
    lin = torch.nn.Linear(6, 5, bias=True)
    A, B = torch.randn(3, 6, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    lin = lin.double()
    x = torch.randn(4, 6, dtype=torch.float64)
    unmerged = lin(x) + 0.7 * 1.5 * (x @ A.T) @ B.T  # a LoRA layer's forward at scale 0.7
    holder = torch.nn.Module()
    holder.lin = lin
    fake = type(a)("x", "x", 3, 4.5, {"c": {}}, {"c": {"lin": (A, B)}}, {})
    merge_into(holder, "c", [(fake, 0.7)], plain := {})
    torch.testing.assert_close(lin(x), unmerged, rtol=0, atol=1e-12)
    torch.testing.assert_close(lora_delta(A, B, 1.5), 1.5 * B @ A)
    merge_into(holder, "c", [], plain)  # back to plain: the exact weights, not a subtraction
    torch.testing.assert_close(lin(x), unmerged - 0.7 * 1.5 * (x @ A.T) @ B.T, rtol=0, atol=1e-12)
    assert plain == {}


def test_adapted_generation_changes_and_plain_is_restored_exactly(folder, adapters):
    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    plain_state = {k: v.clone() for k, v in pipe.variants["base"][1].state_dict().items()}
    plain = pipe.generate(req(variant="base")).clips[0].audio
    pipe.set_adapters([(adapters[0], 1.0)])
    adapted = pipe.generate(req(variant="base"))
    assert adapted.settings["adapters"][0]["name"] == "style-a" and adapted.settings["adapters"][0]["weight"] == 1.0
    assert abs(adapted.clips[0].audio - plain).max() > 1e-4
    pipe.set_adapters([(adapters[0], 0.0)])  # weight 0 is the plain model
    assert torch.equal(torch.as_tensor(pipe.generate(req(variant="base")).clips[0].audio), torch.as_tensor(plain))
    pipe.set_adapters([])
    assert all(torch.equal(v, plain_state[k]) for k, v in pipe.variants["base"][1].state_dict().items())
    assert "adapters" not in pipe.generate(req(variant="base")).settings


def test_stacked_adapters_add_their_weighted_updates(folder, adapters):
    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32",
                                          adapters=[(adapters[0], 0.5), (adapters[1], 1.5)])
    plain = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    a, b = load_adapter(adapters[0]), load_adapter(adapters[1])
    for name in MODULES:
        got = dict(pipe.variants["base"][1].backbone.named_modules())[name].weight
        w0 = dict(plain.variants["base"][1].backbone.named_modules())[name].weight
        want = w0 + 0.5 * lora_delta(*a.factors["base"][name], a.scale) + 1.5 * lora_delta(*b.factors["base"][name], b.scale)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # B adapts base only: presto-ls carries A's update alone.
    got = dict(pipe.variants["presto-ls"][1].backbone.named_modules())[MODULES[0]].weight
    w0 = dict(plain.variants["presto-ls"][1].backbone.named_modules())[MODULES[0]].weight
    torch.testing.assert_close(got, w0 + 0.5 * lora_delta(*a.factors["presto_ls"][MODULES[0]], a.scale))


def test_mismatched_model_names_both_hashes(folder, adapters, tmp_path):
    other = make_model_folder(tmp_path / "other", variants=("base",), with_clap=False, seed=5)
    have = json.loads((other / "model_index.json").read_text())["components"]["base"]["sha256"]
    want = json.loads((adapters[0] / "adapter.json").read_text())["components"]["base"]["base_sha256"]
    with pytest.raises(PrestoError) as e:
        PrestoPipeline.from_pretrained(other, device="cpu", adapters=[(adapters[0], 1.0)])
    assert have in str(e.value) and want in str(e.value) and have != want


def test_bad_weight_and_corrupt_folder(folder, adapters, tmp_path):
    pipe = PrestoPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    before = {k: v.clone() for k, v in pipe.variants["base"][1].state_dict().items()}
    with pytest.raises(PrestoError, match=r"in \[0, 2\], got 3"):
        pipe.set_adapters([(adapters[1], 1.0), (adapters[0], 3.0)])
    assert all(torch.equal(v, before[k]) for k, v in pipe.variants["base"][1].state_dict().items())
    with pytest.raises(PrestoError, match="must be a number"):
        check_weight("loud")
    assert parse_adapter_arg("my/style:0.5") == ("my/style", 0.5)
    assert parse_adapter_arg("my/style") == ("my/style", 1.0)
    assert parse_adapter_arg("odd:name") == ("odd:name", 1.0)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in adapters[1].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (bad / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(PrestoError, match="SHA-256 does not match"):
        load_adapter(bad)
    with pytest.raises(PrestoError, match="not an adapter folder"):
        load_adapter(tmp_path)


def test_cli_adapter_flag(folder, adapters, tmp_path):
    from presto_core.generate import main

    out = tmp_path / "clip.wav"
    assert main(["--prompt", "warm rhodes", "--duration", "1", "--seed", "3", "--model", str(folder), "--variant",
                 "presto-ls", "--adapter", f"{adapters[0]}:0.8", "--adapter", str(adapters[1]), "--mono",
                 "--out", str(out)]) == 0
    from presto_core.audio import read_wav_settings

    assert [a["weight"] for a in read_wav_settings(out)["adapters"]] == [0.8, 1.0]
    assert main(["--prompt", "x", "--model", str(folder), "--adapter", f"{adapters[0]}:9", "--out", str(out)]) == 2

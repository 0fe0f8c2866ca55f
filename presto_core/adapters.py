"""Low-rank adapters (LoRA) for a model folder's DiT components: the adapter folder format, and
merging weighted adapters into loaded weights (so adapted generation costs what plain generation does).

Adapter folder (written by ``python -m train.finetune``)::

    ADAPTER/adapter.json         {"format": "presto-adapter", "version": 1, "rank": r, "alpha": a,
                                  "sha256": <of adapter.safetensors>,
                                  "components": {"base": {"base_sha256": <the component's weights
                                                 it was trained on>, "modules": ["blocks.0.attn.qkv", ...]},
                                                 "presto_ls": {...}},
                                  "name", "made_from", "data", "training": (free-form provenance)}
    ADAPTER/adapter.safetensors  "<component>/<module>.lora_A" (r, in) and ".lora_B" (out, r)

For every adapted Linear with weight W (out, in), adapters i with weights w_i merge as
``W' = W + sum_i w_i * (alpha_i / r_i) * B_i @ A_i``, the same update as peft's LoRA layers at scale w_i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from torch import nn

from presto_core.checkpoint import atomic_write_bytes, atomic_write_json, sha256_file
from presto_core.errors import PrestoError

FORMAT = "presto-adapter"
VERSION = 1
CONFIG = "adapter.json"
WEIGHTS = "adapter.safetensors"
WEIGHT_RANGE = (0.0, 2.0)  # an adapter's weight: 0 = plain model, 1 = as trained


@dataclass(frozen=True)
class Adapter:
    """A loaded adapter folder: per component, module name -> (A (r, in), B (out, r)) fp32 tensors."""

    path: str
    name: str
    rank: int
    alpha: float
    components: dict  # component -> {"base_sha256": str, "modules": [str]}
    factors: dict  # component -> {module: (A, B)}
    meta: dict

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def parse_adapter_arg(text: str) -> tuple[str, float]:
    """``DIR[:WEIGHT]`` (command line) -> (DIR, weight); the weight defaults to 1."""
    path, weight = text, 1.0
    if ":" in text:
        head, tail = text.rsplit(":", 1)
        try:
            path, weight = head, float(tail)
        except ValueError:
            pass  # a colon in the folder name, no weight
    return path, check_weight(weight, path)


def check_weight(weight, what: str = "adapter") -> float:
    """``weight`` as a float in WEIGHT_RANGE, else one PrestoError naming the range."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise PrestoError(f"{what}: adapter weight must be a number in [{WEIGHT_RANGE[0]:g}, {WEIGHT_RANGE[1]:g}], "
                          f"got {weight!r}") from None
    if not WEIGHT_RANGE[0] <= w <= WEIGHT_RANGE[1]:
        raise PrestoError(f"{what}: adapter weight must be in [{WEIGHT_RANGE[0]:g}, {WEIGHT_RANGE[1]:g}], got {w:g}")
    return w


def load_adapter(path: str | Path) -> Adapter:
    """Read and verify an adapter folder (format, weights hash, factor shapes). Errors: PrestoError."""
    folder = Path(path)
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise PrestoError(f"{folder} is not an adapter folder ({CONFIG} is missing)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrestoError(f"corrupt {cfg_path}: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise PrestoError(f"{cfg_path}: not a Presto adapter (format {cfg.get('format') if isinstance(cfg, dict) else None!r})")
    if cfg.get("version", 0) > VERSION:
        raise PrestoError(f"{cfg_path}: version {cfg['version']} is newer than this library supports ({VERSION})")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise PrestoError(f"{folder}: {WEIGHTS} is missing")
    if cfg.get("sha256") and sha256_file(weights) != cfg["sha256"]:
        raise PrestoError(f"{weights}: SHA-256 does not match {CONFIG} (corrupt or partly written adapter)")
    try:
        tensors = load_file(str(weights))
        rank, alpha, comps = int(cfg["rank"]), float(cfg["alpha"]), dict(cfg["components"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise PrestoError(f"corrupt adapter {folder}: {e}") from None
    factors: dict = {}
    for comp, entry in comps.items():
        factors[comp] = {}
        for module in entry.get("modules", []):
            a, b = tensors.get(f"{comp}/{module}.lora_A"), tensors.get(f"{comp}/{module}.lora_B")
            if a is None or b is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
                raise PrestoError(f"corrupt adapter {folder}: {comp}/{module} needs lora_A ({rank}, in) and "
                                  f"lora_B (out, {rank})")
            factors[comp][module] = (a.float(), b.float())
    return Adapter(str(folder), str(cfg.get("name") or folder.name), rank, alpha, comps, factors, cfg)


def save_adapter(folder: str | Path, factors: dict, rank: int, alpha: float, base_sha256: dict[str, str],
                 fp16: bool = False, **meta) -> str:
    """Write an adapter folder: ``factors`` component -> {module: (A (r, in), B (out, r))},
    ``base_sha256`` component -> the weights hash it was trained on, ``meta`` free-form provenance
    (name, made_from, data, training). Weights first, then adapter.json, each atomically, so a
    reader never sees a config naming missing weights. Returns the weights' SHA-256."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {}
    for comp, mods in factors.items():
        for name, (a, b) in mods.items():
            if a.shape[0] != rank or b.shape[1] != rank:
                raise ValueError(f"{comp}/{name}: factors {tuple(a.shape)}, {tuple(b.shape)} are not rank {rank}")
            tensors[f"{comp}/{name}.lora_A"] = a.detach().to("cpu", dtype).contiguous()
            tensors[f"{comp}/{name}.lora_B"] = b.detach().to("cpu", dtype).contiguous()
    atomic_write_bytes(folder / WEIGHTS, save(tensors))
    sha = sha256_file(folder / WEIGHTS)
    comps = {c: {"base_sha256": base_sha256[c], "modules": sorted(m)} for c, m in factors.items()}
    atomic_write_json(folder / CONFIG, {"format": FORMAT, "version": VERSION, "rank": int(rank), "alpha": float(alpha),
                                        "sha256": sha, "components": comps, **meta})
    return sha


def check_compatible(adapter: Adapter, component_sha256: dict[str, str]) -> list[str]:
    """The components of a model (name -> weights SHA-256) that ``adapter`` adapts, after checking
    it was trained on exactly those weights; a mismatch is one PrestoError naming both hashes."""
    shared = [c for c in adapter.components if c in component_sha256]
    if not shared:
        raise PrestoError(f"adapter {adapter.path} adapts {sorted(adapter.components)}, none of which this model "
                          f"has (it has {sorted(component_sha256)})")
    for comp in shared:
        want, have = adapter.components[comp].get("base_sha256"), component_sha256[comp]
        if want != have:
            raise PrestoError(f"adapter {adapter.path} was trained on {comp} weights sha256 {want}, but this model's "
                              f"{comp} is sha256 {have}; fine-tune it again on this model")
    return shared


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """The weight update ``scale * B @ A``: (out, in) for A (r, in) and B (out, r)."""
    return scale * (b @ a)


def merge_into(module: nn.Module, comp: str, adapters: list[tuple[Adapter, float]],
               plain: dict[str, torch.Tensor]) -> None:
    """Set each adapted Linear of ``module`` to its plain weight (from ``plain``, which gains a copy
    of any weight seen for the first time) plus the weighted sum of the adapters' updates."""
    targets: dict[str, list] = {}
    for adapter, w in adapters:
        for name, (a, b) in adapter.factors.get(comp, {}).items():
            targets.setdefault(name, []).append((adapter, w, a, b))
    modules = dict(module.named_modules())
    for name, parts in targets.items():  # every check before any weight changes
        lin = modules.get(name)
        if not isinstance(lin, nn.Linear):
            raise PrestoError(f"adapter {parts[0][0].path}: {comp} has no Linear layer {name!r}")
        for adapter, _, a, b in parts:
            if (b.shape[0], a.shape[1]) != tuple(lin.weight.shape):
                raise PrestoError(f"adapter {adapter.path}: the {comp}.{name} update is {(b.shape[0], a.shape[1])}, "
                                  f"the layer is {tuple(lin.weight.shape)}")
    with torch.no_grad():
        for name in list(plain):
            if name not in targets:  # adapted before, not now: back to plain
                modules[name].weight.copy_(plain.pop(name))
        for name, parts in targets.items():
            lin = modules[name]
            w0 = plain.setdefault(name, lin.weight.detach().clone())
            delta = torch.zeros_like(w0)
            for adapter, w, a, b in parts:
                delta += w * lora_delta(a.to(w0), b.to(w0), adapter.scale)
            lin.weight.copy_(w0 + delta)

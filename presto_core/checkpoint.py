"""Model folders: safetensors weights + JSON configs, integrity checks, hub resolution.

A model folder (a local directory or a hub repository with the same layout)::

    model_index.json          {"format": "presto", "version": 1, "components": {...},
                               "text_encoder": {...}, "variants": {...}, "default_variant": ...,
                               "prompts": "prompts.json"}
    <component>/config.json   {"kind": "vae" | "dit" | "clap", "config": {...}, "meta": {...}}
    <component>/model.safetensors

``model_index.json`` records the SHA-256 of every weights file so a truncated or corrupted
download is reported as such instead of failing deep inside ``load_state_dict``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from presto_core.errors import PrestoError

FORMAT = "presto"
VERSION = 1
INDEX = "model_index.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------------------------
# Configs


def config_to_dict(cfg) -> dict:
    """A dataclass config as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(cls, data: dict):
    """Build dataclass ``cls`` from ``data``; unknown keys raise PrestoError naming the allowed ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise PrestoError(f"{cls.__name__}: unknown config keys {unknown}; allowed: {sorted(names)}")
    return cls(**data)


def _registry() -> dict[str, tuple[type, type]]:
    # Imported here so that loading one component does not import every architecture up front.
    from presto_core.autoencoder import AudioVAE, VAEConfig
    from presto_core.clap import ClapConfig, EmbeddedClap
    from presto_core.dit import DiT, DiTConfig

    return {"vae": (AudioVAE, VAEConfig), "dit": (DiT, DiTConfig), "clap": (EmbeddedClap, ClapConfig)}


def kind_of(module: nn.Module) -> str:
    """The registry kind ('vae', 'dit', 'clap') of a model instance."""
    for kind, (cls, _) in _registry().items():
        if isinstance(module, cls):
            return kind
    raise PrestoError(f"cannot save a {type(module).__name__}: not a Presto component")


# ---------------------------------------------------------------------------------------------
# Files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename,
    so a reader never sees a half-written file and a crash never destroys the previous one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_component(
    folder: str | Path,
    module: nn.Module,
    config,
    *,
    meta: dict | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """Save ``module`` (weights) and its dataclass ``config`` into ``folder``; return the weights'
    SHA-256. ``dtype`` (e.g. torch.float16) casts floating tensors to shrink embedded models."""
    from safetensors.torch import save

    folder = Path(folder)
    state = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    blob = save(state, metadata={"format": FORMAT})
    atomic_write_bytes(folder / WEIGHTS, blob)
    atomic_write_json(
        folder / CONFIG, {"kind": kind_of(module), "config": config_to_dict(config), "meta": meta or {}}
    )
    return hashlib.sha256(blob).hexdigest()


def _read_json(path: Path, missing: str, what: str):
    """Parse ``path``; a missing file raises PrestoError(``missing``), bad JSON names ``what``."""
    if not path.is_file():
        raise PrestoError(missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrestoError(f"corrupt {what}{path}: {e}") from None


def read_component_config(folder: str | Path) -> dict:
    """The parsed ``config.json`` of a component folder, with clear errors."""
    path = Path(folder) / CONFIG
    data = _read_json(path, f"missing model config {path}; the model folder is incomplete", "model config ")
    if not isinstance(data, dict) or "kind" not in data or "config" not in data:
        raise PrestoError(f"corrupt model config {path}: needs 'kind' and 'config'")
    return data


def load_component(folder: str | Path, expected_sha256: str | None = None, device="cpu") -> tuple[nn.Module, dict]:
    """Build the component stored in ``folder`` and load its weights (in fp32, eval mode).

    Returns ``(module, meta)``. Missing files, hash mismatches, unreadable safetensors and
    missing/unexpected/mis-shaped tensors all raise PrestoError naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    data = read_component_config(folder)
    registry = _registry()
    if data["kind"] not in registry:
        raise PrestoError(f"{folder / CONFIG}: unknown kind {data['kind']!r}; allowed: {sorted(registry)}")
    cls, cfg_cls = registry[data["kind"]]
    config = config_from_dict(cfg_cls, data["config"])
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise PrestoError(f"missing weights {weights}; the model folder is incomplete")
    if expected_sha256 is not None and sha256_file(weights) != expected_sha256:
        raise PrestoError(f"corrupt weights {weights}: checksum does not match model_index.json; re-download the model")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PrestoError(f"corrupt weights {weights}: {e}") from None
    module = cls(config)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        raise PrestoError(
            f"weights {weights} do not match config {folder / CONFIG}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {bad_shape[:5]}"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return module.to(device).eval(), data.get("meta", {})


# ---------------------------------------------------------------------------------------------
# Model index


def write_index(folder: str | Path, index: dict) -> None:
    """Write ``model_index.json`` (format and version filled in)."""
    atomic_write_json(Path(folder) / INDEX, {"format": FORMAT, "version": VERSION, **index})


def read_index(folder: str | Path) -> dict:
    """Parse and check ``model_index.json`` of a model folder."""
    path = Path(folder) / INDEX
    index = _read_json(path, f"{folder} is not a Presto model folder: {INDEX} is missing", "")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        fmt = index.get("format") if isinstance(index, dict) else None
        raise PrestoError(f"{path}: not a Presto model index (format {fmt!r})")
    if index.get("version", 0) > VERSION:
        raise PrestoError(f"{path}: version {index['version']} is newer than this library supports ({VERSION})")
    for key in ("components", "variants", "default_variant"):
        if key not in index:
            raise PrestoError(f"corrupt {path}: missing {key!r}")
    return index


def resolve_model_dir(path_or_hub_id: str | Path, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local folder as is, else a hub repository id fetched (or found in the local cache) with
    ``huggingface_hub.snapshot_download``; honours HF_HUB_OFFLINE. Errors are PrestoError."""
    p = Path(path_or_hub_id).expanduser()
    if p.is_dir():
        return p
    text = str(path_or_hub_id)
    if p.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise PrestoError(f"model {text!r} is neither a model folder nor a hub id of the form 'org/name'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text, revision=revision, cache_dir=cache_dir))
    except Exception as e:  # the hub raises many types; one clear message is what a person needs
        raise PrestoError(f"could not fetch model {text!r} from the hub (or find it in the local cache): {e}") from None

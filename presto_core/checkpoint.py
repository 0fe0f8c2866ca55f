"""Model folders: safetensors weights + JSON configs, integrity checks, hub resolution.

A model folder (a local directory or a hub repository with the same layout)::

    model_index.json          {"format": "presto", "version": 1, "components": {...},
                               "text_encoder": {...}, "variants": {...}, "default_variant": ...,
                               "prompts": "prompts.json"}
    <component>/config.json   {"kind": "vae" | "dit" | "clap" | "m2s", "config": {...}, "meta": {...},
                               "storage": {"quantize": "int8", ...}  (only for quantized weights)}
    <component>/model.safetensors

``model_index.json`` records the SHA-256 of every weights file so a truncated or corrupted
download is reported as such instead of failing deep inside ``load_state_dict``.

Int8 storage (``save_component(..., quantize="int8")``): each large Linear/Conv weight ``W``
[rows, ...] is stored as int8 ``Q`` under its own name plus fp32 ``<name>.__scale`` [rows] with
``W ~= Q * scale[:, None, ...]``; ``load_component`` dequantizes to fp32, so models never see int8.
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
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.clap import ClapConfig, EmbeddedClap
from presto_core.dit import DiT, DiTConfig
from presto_core.errors import PrestoError
from presto_core.stereo import MonoToStereo, StereoConfig

FORMAT = "presto"
VERSION = 1
INDEX = "model_index.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"

QUANTIZE = ("int8",)
QUANT_SCHEME = "symmetric per-output-channel"
SCALE_SUFFIX = ".__scale"
# Smaller matrices save under 4 KB each and include the most sensitive layers (the latent
# in/out projections), so they stay in floating point.
QUANT_MIN_NUMEL = 4096
# Kinds whose ``weight`` has output channels on dim 0 (ConvTranspose has input channels there).
_QUANT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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
    return {"vae": (AudioVAE, VAEConfig), "dit": (DiT, DiTConfig), "clap": (EmbeddedClap, ClapConfig),
            "m2s": (MonoToStereo, StereoConfig)}


def kind_of(module: nn.Module) -> str:
    """The registry kind ('vae', 'dit', 'clap', 'm2s') of a model instance."""
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


def _quantizable(module: nn.Module) -> set[str]:
    """State-dict names of the Linear/Conv weights of ``module`` with >= QUANT_MIN_NUMEL elements."""
    return {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, m in module.named_modules()
        if isinstance(m, _QUANT_MODULES) and m.weight.numel() >= QUANT_MIN_NUMEL
    }


def _per_row(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """``v`` [rows] shaped [rows, 1, ...] to broadcast over an ``ndim``-dimensional tensor."""
    return v.reshape(-1, *[1] * (ndim - 1))


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``(q, scale)`` with q int8 shaped like ``w`` [rows, ...] in
    [-127, 127], scale fp32 [rows] = max|row| / 127, and |w - q * scale| <= scale / 2."""
    w = w.detach().float()
    amax = w.abs().flatten(1).amax(dim=1)
    # An all-zero row would divide 0 by 0; any positive scale stores it exactly as zeros.
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(w / _per_row(scale, w.ndim)).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 ``q * scale[:, None, ...]`` for int8 ``q`` [rows, ...] and ``scale`` [rows]."""
    return q.float() * _per_row(scale.float(), q.ndim)


def _encode_state(module: nn.Module, dtype: torch.dtype | None, quantize: str | None) -> dict[str, torch.Tensor]:
    """The tensors to store: floats cast to ``dtype``, large matrices as int8 + scale if ``quantize``."""
    quantized = _quantizable(module) if quantize else set()
    state = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if k in quantized and v.is_floating_point():
            if not torch.isfinite(v).all():
                raise PrestoError(f"cannot quantize {k!r}: it holds NaN or inf values")
            state[k], state[k + SCALE_SUFFIX] = quantize_int8(v)
            continue
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous()
    return state


def save_component(
    folder: str | Path,
    module: nn.Module,
    config,
    *,
    meta: dict | None = None,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> str:
    """Save ``module`` (weights) and its dataclass ``config`` into ``folder``; return the weights'
    SHA-256. ``dtype`` (e.g. torch.float16) casts floating tensors to shrink embedded models.

    ``quantize="int8"`` stores every Linear/Conv weight with >= QUANT_MIN_NUMEL elements as int8
    with an fp32 scale per output channel (see the module docstring) and the other floating
    tensors in ``dtype``, default float16; config.json records it under "storage". Scales are
    fp32, not fp16: fp16 loses precision below 6.1e-5 (rows with max|w| < 0.008, e.g. near-zero
    initialised output layers), and fp32 costs 4 bytes per row (1.4% of the 15M-parameter int8 DiT).
    """
    if quantize not in (None, *QUANTIZE):
        raise PrestoError(f"quantize must be None or one of {list(QUANTIZE)}, got {quantize!r}")
    folder = Path(folder)
    if quantize and dtype is None:
        dtype = torch.float16
    blob = save(_encode_state(module, dtype, quantize), metadata={"format": FORMAT})
    atomic_write_bytes(folder / WEIGHTS, blob)
    data = {"kind": kind_of(module), "config": config_to_dict(config), "meta": meta or {}}
    if quantize:
        data["storage"] = {"quantize": quantize, "scheme": QUANT_SCHEME, "scale_suffix": SCALE_SUFFIX,
                           "scale_dtype": "float32", "min_numel": QUANT_MIN_NUMEL,
                           "float_dtype": str(dtype).removeprefix("torch.")}
    atomic_write_json(folder / CONFIG, data)
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


def _storage(data: dict, path: Path) -> dict | None:
    """The "storage" record of a parsed config.json (None: plain floats); unknown schemes raise."""
    storage = data.get("storage")
    if storage is None:
        return None
    known = isinstance(storage, dict) and storage.get("quantize") in QUANTIZE and storage.get("scheme") == QUANT_SCHEME
    if not known:
        raise PrestoError(f"{path}: unsupported weight storage {storage!r}; this library reads "
                          f"quantize {list(QUANTIZE)} with scheme {QUANT_SCHEME!r}")
    return storage


def _decode_state(state: dict[str, torch.Tensor], storage: dict | None, weights: Path) -> dict[str, torch.Tensor]:
    """``state`` with every int8 tensor dequantized to fp32 by its scale, which is dropped.

    An int8 tensor without a "storage" record or without a valid scale, and a scale without
    an int8 tensor, raise PrestoError naming ``weights`` and the tensor.
    """
    state = dict(state)
    scales = {}
    if storage is not None:
        scales = {k[: -len(SCALE_SUFFIX)]: state.pop(k) for k in [k for k in state if k.endswith(SCALE_SUFFIX)]}
    for k, v in state.items():
        if v.dtype != torch.int8:
            continue
        if storage is None:
            raise PrestoError(f"corrupt weights {weights}: tensor {k!r} is int8 but {CONFIG} records no quantization")
        scale = scales.pop(k, None)
        if scale is None:
            raise PrestoError(f"corrupt weights {weights}: int8 tensor {k!r} has no scale {k + SCALE_SUFFIX!r}")
        if (not scale.is_floating_point() or scale.shape != v.shape[:1]
                or not bool((torch.isfinite(scale) & (scale > 0)).all())):
            raise PrestoError(f"corrupt weights {weights}: scale {k + SCALE_SUFFIX!r} must hold finite positive "
                              f"floats shaped {tuple(v.shape[:1])}, got {scale.dtype} {tuple(scale.shape)}")
        state[k] = dequantize_int8(v, scale)
    if scales:
        raise PrestoError(f"corrupt weights {weights}: scales without an int8 tensor: {sorted(scales)[:5]}")
    return state


def load_component(folder: str | Path, expected_sha256: str | None = None, device="cpu") -> tuple[nn.Module, dict]:
    """Build the component stored in ``folder`` and load its weights (in fp32, eval mode).

    Returns ``(module, meta)``. Int8-quantized weights (see ``save_component``) are dequantized
    to fp32. Missing files, hash mismatches, unreadable safetensors, bad or missing int8 scales
    and missing/unexpected/mis-shaped tensors all raise PrestoError naming the file.
    """
    folder = Path(folder)
    data = read_component_config(folder)
    registry = _registry()
    if data["kind"] not in registry:
        raise PrestoError(f"{folder / CONFIG}: unknown kind {data['kind']!r}; allowed: {sorted(registry)}")
    cls, cfg_cls = registry[data["kind"]]
    config = config_from_dict(cfg_cls, data["config"])
    storage = _storage(data, folder / CONFIG)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise PrestoError(f"missing weights {weights}; the model folder is incomplete")
    if expected_sha256 is not None and sha256_file(weights) != expected_sha256:
        raise PrestoError(f"corrupt weights {weights}: checksum does not match model_index.json; re-download the model")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PrestoError(f"corrupt weights {weights}: {e}") from None
    state = _decode_state(state, storage, weights)
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
        return Path(snapshot_download(repo_id=text, revision=revision, cache_dir=cache_dir))
    except Exception as e:  # the hub raises many types; one clear message is what a person needs
        raise PrestoError(f"could not fetch model {text!r} from the hub (or find it in the local cache): {e}") from None

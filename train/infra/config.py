"""Typed JSON configs and the command line every training entry point shares.

A config file is {"name": ..., "data": {...}, "shared": {...}, "<stage>": {...}, ...}; :func:`from_dict` builds a
typed dataclass from a section (nested dataclasses, tuples, type checks, unknown keys rejected),
and ``--set a.b.c=VALUE`` overrides any value from the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presto_core.checkpoint import config_to_dict

SECTIONS = ("data", "shared", "vae", "base", "clap", "presto_l", "presto_s", "presto_ls", "m2s", "finetune")

class ConfigError(ValueError):
    """A config file or override does not match the typed config (message names the key)."""


class DataError(ValueError):
    """The training data cannot be used as it is (message names the file and, for metadata, the line)."""


def _convert(tp, value, where: str):
    """Check/convert a JSON value to type ``tp`` (dataclasses recursively)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for a in inner[:-1]:  # the first member the value fits (e.g. ``str | bool``)
            try:
                return _convert(a, value, where)
            except ConfigError:
                pass
        return _convert(inner[-1], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin in (list, dict) or tp in (Any, dict, list):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a JSON dict: nested dataclasses, tuples, type checks; unknown
    keys raise ConfigError naming the allowed ones. Missing keys take the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # the class's own validation (e.g. PrestoError)
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def to_dict(cfg) -> dict:
    """A dataclass config as a JSON-able dict (inverse of :func:`from_dict`)."""
    return config_to_dict(cfg)


def _apply_override(raw: dict, text: str) -> None:
    """``a.b.c=VALUE`` (VALUE parsed as JSON, else taken as a string) into the nested dict."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. base.loop.lr=3e-4), got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = parsed


def read_config_file(path: str | os.PathLike, overrides: list[str] | tuple = ()) -> dict:
    """The raw JSON of a config file with ``--set`` overrides applied; checks the section names."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    for o in overrides:
        _apply_override(raw, o)
    unknown = sorted(set(raw) - set(SECTIONS) - {"name"})
    if unknown:
        raise ConfigError(f"{path}: unknown sections {unknown}; allowed: name, {', '.join(SECTIONS)}")
    raw.setdefault("name", path.stem)
    return raw


FSDP_MODES = ("no", "full", "hybrid")


@dataclass
class LoopConfig:
    """Settings every stage shares (the ``loop`` sub-section of a stage)."""

    max_steps: int = 1000
    # Per process and per micro-batch: the global batch of one optimizer step is
    # batch_size x processes x grad_accum_steps (logged at the start and in config.json).
    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping (the norm is still logged)
    ema_decay: float = 0.999
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    # Sharding when launched on several processes: "no" (DDP), "full" (FSDP2, every rank holds a
    # shard) or "hybrid" (HSDP: shards within a node, replicas across nodes). true/false = full/no.
    fsdp: str | bool = "no"
    grad_accum_steps: int = 1  # micro-batches of batch_size per optimizer step (global batch below)
    activation_checkpointing: bool = False  # recompute each DiT block's activations in the backward
    debug_nan_at_step: int = -1  # test hook: multiply the loss by NaN at this step

    def __post_init__(self):
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"loop.mixed_precision must be auto|no|bf16|fp16, got {self.mixed_precision!r}")
        if isinstance(self.fsdp, bool):
            self.fsdp = "full" if self.fsdp else "no"
        if self.fsdp not in FSDP_MODES:
            raise ConfigError(f"loop.fsdp must be one of {'|'.join(FSDP_MODES)} (or true/false), got {self.fsdp!r}")
        for name in ("max_steps", "batch_size", "checkpoint_every", "log_every", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"loop.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class DataConfig:
    """The top-level ``data`` section: where the corpus lives (train/data/dataset.py format)."""

    root: str = "data/corpus"
    train_split: str = "train"
    heldout_split: str = "heldout"


def _merged(defaults: dict, own: dict) -> dict:
    """``own`` over ``defaults``; nested objects are merged key by key (own wins)."""
    out = dict(defaults)
    for k, v in own.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def stage_section(raw: dict, stage: str, cls) -> dict:
    """The raw section of ``stage`` with the file's ``shared`` values filled in for every field of
    ``cls`` the section does not set itself (so a value every latent stage needs, e.g. ``edm`` or
    ``vae``, is written once)."""
    shared = raw.get("shared", {})
    if not isinstance(shared, dict):
        raise ConfigError(f"the 'shared' section must be an object, got {shared!r}")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    return _merged({k: v for k, v in shared.items() if k in fields}, raw[stage])


def load_config(path, stage: str, cls, overrides: list[str] | tuple = ()):
    """Load one stage of a config file: returns ``(DataConfig, cls instance, config name)``.

    The file is {"name": ..., "data": {...}, "shared": {...}, "<stage>": {...}, ...}; ``shared``
    holds values common to several stages (see :func:`stage_section`); other stages' sections are
    not interpreted here (each stage validates its own).
    """
    raw = read_config_file(path, overrides)
    if stage not in raw:
        raise ConfigError(f"{path} has no {stage!r} section")
    data = from_dict(DataConfig, raw.get("data", {}), "data")
    return data, from_dict(cls, stage_section(raw, stage, cls), stage), raw["name"]


def parse_args(stage: str, argv: list[str] | None = None, extra=None) -> argparse.Namespace:
    """The arguments every entry point accepts. ``extra(parser)`` may add stage-specific ones."""
    ap = argparse.ArgumentParser(prog=f"python -m train.{stage}", description=f"Presto {stage} training")
    ap.add_argument("--config", required=True, help="train/configs/<scale>.json")
    ap.add_argument("--out", default=None, help="run folder (default runs/<config name>/<stage>)")
    ap.add_argument("--resume", default=None, help="'latest', a step number or a checkpoint folder")
    ap.add_argument("--max-steps", type=int, default=None, help="stop at this step (overrides loop.max_steps)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set base.loop.lr=3e-4 (repeatable)")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


def default_run_dir(config_name: str, stage: str) -> Path:
    return Path("runs") / config_name / stage

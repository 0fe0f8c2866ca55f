"""What a training run writes on disk: crash-safe checkpoint folders, EMA weights and the
metrics log.

Checkpoints live under ``RUN_DIR/checkpoints``::

    step-00001000/          one complete checkpoint (accelerate state + ema_*.safetensors + run_state.json;
                            under FSDP also sharded_model_<i>.safetensors + sharded_optimizer_<i>.pt,
                            the gathered weights and optimizer state of each sharded network)
    latest                  text file naming the newest complete checkpoint (written atomically)
    .tmp-step-00003000/     a checkpoint being written; ignored (and removed) if a run died mid-write

A checkpoint folder is written under a temporary name and renamed into place only once every file
in it is on disk, so a SIGKILL at any moment leaves either the old set of checkpoints or the old
set plus one complete new one. ``run_state.json`` is the last file written before the rename and
serves as the completeness marker; it records the SHA-256 of every other file in the folder, so a
truncated or bit-flipped checkpoint is found before it is loaded (:func:`verify_checkpoint`) and a
resume falls back to the newest intact one. A save that runs out of disk space removes its scratch
folder and raises :class:`DiskFullError`; the checkpoints already there are untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save as safetensors_bytes
from torch import nn

from presto_core.checkpoint import atomic_write_bytes, atomic_write_json
from train.infra import sharding

# ---------------------------------------------------------------------------------------------
# Checkpoints

RUN_STATE = "run_state.json"
LATEST = "latest"
SUMS = "sha256"  # run_state key: {relative file path: hex SHA-256} of every other file in the folder
_STEP_DIR = re.compile(r"^step-(\d+)$")
_DISK_FULL_HINTS = ("no space left", "unexpected pos", "file write failed", "disk quota")
_MIN_FREE_BYTES = 64 << 20


class CheckpointError(RuntimeError):
    """No usable checkpoint: the one asked for is damaged, or every checkpoint of the run is."""


class DiskFullError(RuntimeError):
    """A checkpoint could not be written because the disk (or quota) is full."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_sums(folder: Path) -> dict[str, str]:
    """{posix path relative to ``folder``: SHA-256} of every file in it except run_state.json."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != RUN_STATE}


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint folder is intact, else what is wrong with it (naming the file).
    A checkpoint written before sums were recorded can only be checked for a readable run_state."""
    path = Path(path)
    try:
        state = json.loads((path / RUN_STATE).read_text())
    except (OSError, ValueError) as e:
        return f"{path / RUN_STATE} is unreadable ({e})"
    if not isinstance(state, dict) or "step" not in state:
        return f"{path / RUN_STATE} is not a run state"
    for name, digest in (state.get(SUMS) or {}).items():
        f = path / name
        if not f.is_file():
            return f"{f} is missing"
        if sha256_file(f) != digest:
            return f"{f} does not match its recorded SHA-256 (truncated or corrupted)"
    return None


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """Whether an error raised while writing into ``folder`` means the disk is full: ENOSPC/EDQUOT,
    torch's serializer messages for a short write, or almost no free space left."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(h in str(err).lower() for h in _DISK_FULL_HINTS):
        return True
    try:
        return shutil.disk_usage(folder).free < _MIN_FREE_BYTES
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory entry is flushed; best effort (not on every FS).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointManager:
    """Names, finalises, finds and prunes the checkpoint folders of one run (see module doc).

    Only the main process should call :meth:`finalize`, :meth:`prune` and :meth:`clean_partial`;
    every process may call :meth:`tmp_dir`, :meth:`latest` and :meth:`resolve`.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 3):
        self.root = Path(root)
        self.keep = max(int(keep), 1)

    def tmp_dir(self, step: int) -> Path:
        """Deterministic scratch folder for the checkpoint of ``step`` (same path on every process)."""
        return self.root / f".tmp-step-{step:08d}"

    def final_dir(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def complete(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as (step, folder), oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and p.is_dir() and (p / RUN_STATE).is_file():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def latest(self) -> Path | None:
        """The newest complete checkpoint: the ``latest`` pointer if it names a complete folder, else
        the highest complete step (the pointer can lag by one checkpoint after a crash)."""
        found = self.complete()
        pointer = self.root / LATEST
        if pointer.is_file():
            target = self.root / pointer.read_text().strip()
            if (target / RUN_STATE).is_file() and found and target == found[-1][1]:
                return target
        return found[-1][1] if found else None

    def resolve(self, spec: str) -> Path | None:
        """``"latest"`` (None if the run has no checkpoint yet), a step number, or a folder path."""
        if spec == LATEST:
            return self.latest()
        if spec.isdigit():
            path = self.final_dir(int(spec))
        else:
            path = Path(spec)
        if not (path / RUN_STATE).is_file():
            raise FileNotFoundError(f"no complete checkpoint at {path} (missing {RUN_STATE})")
        return path

    def finalize(self, tmp: Path, step: int, run_state: dict) -> Path:
        """Record the files' SHA-256 in the completeness marker, write it, rename ``tmp`` into
        place, move ``latest``, prune."""
        atomic_write_json(tmp / RUN_STATE, {**run_state, SUMS: folder_sums(tmp)})
        _fsync_dir(tmp)
        final = self.final_dir(step)
        if final.exists():  # re-saving the same step (e.g. the end-of-run save): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        atomic_write_bytes(self.root / LATEST, (final.name + "\n").encode())
        self.prune()
        return final

    def prune(self) -> None:
        """Delete all but the newest ``keep`` complete checkpoints (never the one ``latest`` names)."""
        found = self.complete()
        for _, path in found[: max(len(found) - self.keep, 0)]:
            shutil.rmtree(path, ignore_errors=True)

    def clean_partial(self) -> None:
        """Remove scratch folders left by a run that died while saving."""
        if self.root.is_dir():
            for p in self.root.glob(".tmp-step-*"):
                shutil.rmtree(p, ignore_errors=True)


def read_run_state(ckpt_dir: str | os.PathLike) -> dict:
    """The ``run_state.json`` of a checkpoint folder (step, stage, metrics, ...)."""
    return json.loads((Path(ckpt_dir) / RUN_STATE).read_text())


class EMA:
    """Exponential moving average of a model's floating-point parameters (buffers are copied).

    Kept in float32 on the model's device whatever the training precision. The effective decay
    ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates when ``warmup`` is set, so
    early averages are not dominated by the random initialisation. Works on the unwrapped module
    (pass ``accelerator.unwrap_model(model)``); under DDP every rank holds identical copies.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.lerp_(v.detach().float(), 1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    @torch.no_grad()
    def full_shadow(self) -> dict[str, torch.Tensor]:
        """The whole averaged state dict. Collective when the model is sharded (FSDP): every rank
        calls it and gets the same tensors."""
        return {k: sharding.full(v) for k, v in self.shadow.items()}

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None) -> nn.Module | None:
        """Load the averaged weights into ``model`` (cast to its dtypes); returns it. Under FSDP every
        rank calls it (the weights are gathered); ranks that evaluate nothing pass None."""
        shadow = self.full_shadow()
        if model is None:
            return None
        own = model.state_dict()
        model.load_state_dict({k: shadow[k].to(own[k].dtype) for k in own})
        return model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates, "shadow": self.shadow}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model: differing keys {sorted(missing)[:5]}")
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(sharding.like(v, self.shadow[k]))

    def metadata(self) -> dict[str, str]:
        return {"decay": str(self.decay), "warmup": str(int(self.warmup)), "updates": str(self.updates)}

    def save(self, path: str | os.PathLike, shadow: dict[str, torch.Tensor] | None = None) -> None:
        """Write the averaged weights (safetensors, readable without this class) atomically.
        ``shadow``: what :meth:`full_shadow` returned, when the caller gathered it on every rank."""
        shadow = self.shadow if shadow is None else shadow
        tensors = {k: v.detach().cpu().contiguous() for k, v in shadow.items()}
        atomic_write_bytes(Path(path), safetensors_bytes(tensors, metadata=self.metadata()))

    def load(self, path: str | os.PathLike) -> None:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shadow = {k: f.get_tensor(k) for k in f.keys()}
        self.load_state_dict({"updates": int(meta.get("updates", 0)), "shadow": shadow})


def load_ema_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The averaged state dict stored by :meth:`EMA.save` (float32, CPU)."""
    return load_file(str(path), device="cpu")


def save_checkpoint(accelerator, manager: CheckpointManager, step: int, emas: dict[str, EMA], info: dict,
                    sharded: list | None = None) -> Path:
    """Collective: every process calls it. accelerate writes models, optimizers, registered objects
    and per-process RNG states into the scratch folder, the main process adds ``ema_<name>.safetensors``
    and ``run_state.json`` and renames the folder into place. ``sharded``: (model, optimizer or None)
    pairs trained under FSDP, whose whole state is gathered here and written by the main process.

    Raises :class:`DiskFullError` on every process when any of them ran out of space (the scratch
    folder is removed, earlier checkpoints stay as they were); other write errors propagate."""
    tmp = manager.tmp_dir(step)
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    err = None
    try:
        accelerator.save_state(str(tmp))
    except (OSError, RuntimeError) as e:
        err = e
    _agree_on_failure(accelerator, err, manager, tmp, step)
    # Gathering is collective, so it happens on every process before the main one writes.
    shadows = {name: e.full_shadow() for name, e in emas.items()}
    states = [(sharding.full_model_state(m), sharding.full_optimizer_state(m, o) if o is not None else None)
              for m, o in (sharded or [])]
    accelerator.wait_for_everyone()  # every process's RNG file must be in the folder before the rename
    err = None
    if accelerator.is_main_process:
        try:
            for name, e in emas.items():
                e.save(tmp / f"ema_{name}.safetensors", shadows[name])
            for i, (weights, optim) in enumerate(states):
                atomic_write_bytes(tmp / f"sharded_model_{i}.safetensors",
                                   safetensors_bytes({k: v.contiguous() for k, v in weights.items()}))
                if optim is not None:
                    torch.save(optim, tmp / f"sharded_optimizer_{i}.pt")
            manager.finalize(tmp, step, {**info, "step": step, "time": time.time(), "emas": sorted(emas)})
        except (OSError, RuntimeError) as e:
            err = e
    _agree_on_failure(accelerator, err, manager, tmp, step)
    accelerator.wait_for_everyone()
    return manager.final_dir(step)


def _agree_on_failure(accelerator, err: BaseException | None, manager: CheckpointManager, tmp: Path,
                      step: int) -> None:
    """Raise on every process when one failed to write (one failing alone would leave the others
    waiting at the next barrier): DiskFullError for a full disk, else the error itself."""
    full_here = err is not None and is_disk_full(err, manager.root)
    flags = torch.tensor([float(err is not None), float(full_here)], device=accelerator.device)
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, reduction="sum")
    failed, full = (float(v) > 0 for v in flags.tolist())
    if not failed:
        return
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    if err is not None and not full_here:
        raise err
    if full:
        last = manager.latest()
        raise DiskFullError(
            f"the disk is full: checkpoint step {step} could not be written to {manager.root}; "
            f"{'the previous checkpoint ' + str(last) + ' is intact' if last else 'no earlier checkpoint exists'}. "
            "Free some space, then continue with --resume latest") from None
    raise RuntimeError(f"checkpoint step {step} failed on another process (see its log)")


def load_checkpoint(accelerator, path: Path, emas: dict[str, EMA], sharded: list | None = None) -> dict:
    """Collective inverse of :func:`save_checkpoint`; returns the checkpoint's run_state."""
    accelerator.load_state(str(path))
    for i, (model, optimizer) in enumerate(sharded or []):
        weights = load_file(str(Path(path) / f"sharded_model_{i}.safetensors"))
        optim = None
        if optimizer is not None:
            optim = torch.load(Path(path) / f"sharded_optimizer_{i}.pt", map_location="cpu", weights_only=False)
        sharding.load_full_state(model, weights, optimizer, optim)
    for name, e in emas.items():
        e.load(Path(path) / f"ema_{name}.safetensors")
    return read_run_state(path)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (a killed run may have logged steps it never saved)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The metrics.jsonl lines of a run folder (one dict per log step)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []

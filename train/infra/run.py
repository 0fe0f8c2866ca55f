"""Shared training infrastructure: :class:`Run` (configs and the CLI are in train/infra/config.py).

A stage (``train/base.py``, ``train/vae.py``, ...) is written as::

    args = parse_args("base", argv)                       # --config --out --resume --max-steps --set --cpu
    data, cfg = load_config(args.config, "base", BaseStageConfig, args.overrides)
    run = Run("base", cfg.loop, args, config_record={...})   # accelerator, run folder, logging
    model = ...; opt = run.adam(model.parameters())
    sched = run.lr_schedule(opt)                          # linear warm-up, registered for checkpoints
    model, opt = run.prepare(model, opt)                  # DDP / FSDP / mixed precision
    ema = run.ema("model", model, cfg.loop.ema_decay)     # saved with every checkpoint
    # (the four lines above are run.train_one(model) for a stage with one optimizer)
    run.restore()                                         # last: after everything that draws from the RNG
    for batch in run.batches(dataset, collate):          # stops at max_steps, resumes mid-epoch
        gen = run.generator()                             # per-step RNG: exact after resume
        loss = ...
        grad_norm = run.backward(loss, model, opt, sched)  # NaN guard, clipping, optimizer step
        run.end_step(loss=loss, grad_norm=grad_norm)      # EMA, logs, progress, checkpoints
    run.finish()

Every random choice of the loop is a function of (seed, process, step), and the remaining global
RNG states are saved by accelerate, so a run resumed from step k repeats an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object
from torch.utils.data import DataLoader
from tqdm import tqdm

from presto_core.checkpoint import atomic_write_json
from train.infra.checkpointing import (LATEST, EMA, CheckpointError, CheckpointManager, DiskFullError, load_checkpoint,
                                       read_run_state, save_checkpoint, truncate_metrics, verify_checkpoint)
from train.infra import sharding
from train.infra.config import ConfigError, DataError, LoopConfig, default_run_dir, load_config, parse_args, to_dict
from train.infra.lock import RunLock, RunLockedError

EXIT_NONFINITE = 3  # process exit status when the NaN/inf guard stops a run
EXIT_STOPPED = 4  # process exit status after SIGTERM/SIGINT: checkpoint written, resume with --resume latest


class StopRequested(RuntimeError):
    """Raised by :meth:`Run.batches` after a SIGTERM/SIGINT, once the step's checkpoint is written and
    the stage's code after :meth:`Run.end_step` (its logging) has run."""


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf; the step was not applied and nothing was saved."""


# ---------------------------------------------------------------------------------------------
# The run


def resolve_mixed_precision(choice: str, cpu: bool, launcher: str | None = None) -> str:
    """'auto' -> the launcher's ``--mixed_precision`` when it asks for one, else bf16 on CUDA with
    bf16 (else fp16), bf16 on AVX512 CPUs, else no. An explicit config value that contradicts the
    launcher is a :class:`ConfigError` (accelerate exports "no" when the flag is absent, so "no"
    from the launcher never overrides the config)."""
    launcher = launcher if launcher and launcher != "no" else None
    if choice != "auto":
        if launcher is not None and launcher != choice:
            raise ConfigError(f"the launcher asks for --mixed_precision {launcher} but loop.mixed_precision is "
                              f"{choice!r}; drop one of them or make them agree")
        return choice
    if launcher is not None:
        if launcher not in ("bf16", "fp16"):
            raise ConfigError(f"launcher --mixed_precision {launcher}: this project trains in no|bf16|fp16")
        return launcher
    if torch.cuda.is_available() and not cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return "bf16" if "AVX512" in cap.upper() else "no"


class _Scalar:
    """A registered stateful scalar (accelerate saves objects with state_dict/load_state_dict)."""

    def __init__(self, value=0):
        self.value = value

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, s):
        self.value = s["value"]


class Run:
    """One training run of one stage: accelerator, run folder, checkpoints, logs, NaN guard.

    ``args`` is the namespace of :func:`parse_args` (out, resume, max_steps, cpu). Files in the
    run folder: config.json (what was run), metrics.jsonl (one line per log step), tb/ (TensorBoard),
    checkpoints/ (see train/infra/checkpointing.py), and whatever the stage exports.
    """

    def __init__(self, stage: str, loop: LoopConfig, args: argparse.Namespace, *, config_name: str = "run",
                 config_record: dict | None = None, find_unused_parameters: bool = False):
        self.stage, self.cfg = stage, loop
        self.max_steps = int(args.max_steps or loop.max_steps)
        self.resume_spec = args.resume
        self.out_dir = Path(args.out) if args.out else default_run_dir(config_name, stage)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cpu = bool(getattr(args, "cpu", False))
        self.mixed_precision = resolve_mixed_precision(loop.mixed_precision, cpu,
                                                       os.environ.get("ACCELERATE_MIXED_PRECISION"))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not cpu and not torch.cuda.is_available():
            # Without this, accelerate falls back to one independent process per launched rank.
            raise ConfigError("launched on several processes with no GPU: pass the stage's --cpu to train "
                              "them together on the CPU (gloo)")
        self.accelerator = Accelerator(
            cpu=cpu, mixed_precision=self.mixed_precision, log_with="tensorboard", project_dir=str(self.out_dir),
            # Stages whose steps leave some parameters without gradient (e.g. sample-dependent layer
            # dropping) must say so, or DDP waits for those gradients forever.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        )
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        # One process has nothing to shard: FSDP runs as plain single-process training.
        self.fsdp = loop.fsdp if self.world > 1 else "no"
        if self.fsdp != "no" and self.mixed_precision == "fp16":
            raise ConfigError("loop.fsdp with fp16: FSDP here trains in bf16 or float32 (no loss scaling); "
                              "set loop.mixed_precision=bf16")
        self.global_batch = loop.batch_size * self.world * loop.grad_accum_steps
        self._lock = RunLock(self.out_dir)
        if self.is_main:
            self._lock.acquire()
        self._models: list[torch.nn.Module] = []
        self._optimizers: list[torch.optim.Optimizer] = []
        self._sharded: list[tuple[torch.nn.Module, torch.optim.Optimizer | None]] = []
        self._micro = 0  # micro-batch index inside the current optimizer step
        self._finite = True
        self.ckpt = CheckpointManager(self.out_dir / "checkpoints", loop.keep_checkpoints)
        self._step = _Scalar(0)
        self.accelerator.register_for_checkpointing(self._step)
        self._emas: dict[str, tuple[EMA, torch.nn.Module]] = {}
        self._lrs: dict[int, float] = {}
        self._stop_signal: int | None = None
        self._saved_step = -1
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._in_step = False
        self._bar = None
        self._t0 = time.perf_counter()
        self._step0 = 0
        if self.is_main:
            record = {"stage": stage, "loop": to_dict(loop), **(config_record or {}),
                      "mixed_precision": self.mixed_precision, "num_processes": self.world,
                      "global_batch": self.global_batch, "fsdp": self.fsdp}
            atomic_write_json(self.out_dir / "config.json", record)
        self.accelerator.init_trackers("tb")

    # -- properties ---------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps completed so far (0 before the first)."""
        return self._step.value

    @property
    def done(self) -> bool:
        return self.step >= self.max_steps

    @property
    def stepped(self) -> bool:
        """Whether the last :meth:`end_step` finished an optimizer step (always, without gradient
        accumulation; on the last micro-batch of each step with it). Stage code after end_step
        (evaluations) runs when this is true."""
        return self._micro == 0

    # -- building -----------------------------------------------------------------------------
    def adam(self, params, lr: float | None = None, betas=None, weight_decay: float | None = None):
        """Adam (AdamW when weight_decay > 0) with the loop's settings unless overridden."""
        lr = self.cfg.lr if lr is None else lr
        wd = self.cfg.weight_decay if weight_decay is None else weight_decay
        betas = tuple(betas or self.cfg.betas)
        if wd > 0:
            return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
        return torch.optim.Adam(params, lr=lr, betas=betas)

    def lr_schedule(self, optimizer, warmup_steps: int | None = None):
        """Linear warm-up from 0 to the optimizer's lr over ``warmup_steps``, then constant.

        Registered for checkpointing; call ``scheduler.step()`` once per optimizer step (done by
        :meth:`backward` when passed). Not passed through accelerate.prepare, because accelerate
        would step it once per process and change the schedule with the world size.
        """
        w = self.cfg.warmup_steps if warmup_steps is None else warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _Warmup(w))
        self.accelerator.register_for_checkpointing(sched)
        return sched

    def prepare(self, *objs):
        """Models and optimizers, ready to train: activation checkpointing when configured, then
        accelerate.prepare (DDP, device, autocast) or, with ``loop.fsdp`` on several processes, FSDP2
        sharding (train/infra/sharding.py; the same objects come back, sharded in place)."""
        models = [o for o in objs if isinstance(o, torch.nn.Module)]
        opts = [o for o in objs if isinstance(o, torch.optim.Optimizer)]
        if self.cfg.activation_checkpointing:
            for m in models:
                sharding.checkpoint_activations(m)
        if self.fsdp == "no":
            out = self.accelerator.prepare(*objs)
            out = out if isinstance(out, tuple) else (out,)
            self._models += [o for o in out if isinstance(o, torch.nn.Module)]
            self._optimizers += [o for o in out if isinstance(o, torch.optim.Optimizer)]
            return out if len(out) > 1 else out[0]
        self._sharded += sharding.shard(models, opts, mode=self.fsdp, device=self.device,
                                        param_dtype=torch.bfloat16 if self.mixed_precision == "bf16" else None)
        self._models += models
        self._optimizers += opts
        return objs if len(objs) > 1 else objs[0]

    def train_one(self, model, ema_name: str = "model"):
        """The usual set-up of one trained model: Adam with the loop's settings, its warm-up schedule,
        accelerate's wrapping and an EMA. Returns (prepared model, optimizer, scheduler, EMA)."""
        opt = self.adam(model.parameters())
        sched = self.lr_schedule(opt)
        model, opt = self.prepare(model, opt)
        return model, opt, sched, self.ema(ema_name, model)

    def unwrap(self, model):
        """The module itself (DDP's wrapper removed; an FSDP module is its own)."""
        return model if self.fsdp != "no" else self.accelerator.unwrap_model(model)

    def ema(self, name: str, model, decay: float | None = None, warmup: bool = True) -> EMA:
        """Track an EMA of ``model`` (prepared or not); updated in :meth:`end_step`, saved as
        ``ema_<name>.safetensors`` in every checkpoint."""
        # Under FSDP the shadow copies are sharded like the parameters (each rank averages its shard);
        # checkpoints and copy_to gather them.
        inner = self.unwrap(model)
        e = EMA(inner, self.cfg.ema_decay if decay is None else decay, warmup)
        self._emas[name] = (e, inner)
        return e

    def register(self, obj) -> None:
        """Checkpoint any object with state_dict()/load_state_dict() (e.g. a second scheduler)."""
        self.accelerator.register_for_checkpointing(obj)

    # -- randomness and data ------------------------------------------------------------------
    def generator(self, device=None, salt: int = 0) -> torch.Generator:
        """A fresh generator seeded by (seed, process, step, salt) (and the micro-batch with gradient
        accumulation): the loop's noise, sigmas and dropout masks drawn from it are identical whether
        or not the run was resumed."""
        key = [self.cfg.seed, self.accelerator.process_index, self.step, salt]
        return _seeded(key + ([self._micro] if self.cfg.grad_accum_steps > 1 else []), device or self.device)

    def sample_generators(self, n: int, device=None, salt: int = 0) -> list[torch.Generator]:
        """One generator per sample of the current micro-batch, seeded by (seed, step, salt, the
        sample's place in the global batch): what is drawn from them does not depend on the number
        of processes or micro-batches, so one process at batch B, two at B/2 and one accumulating two
        micro-batches of B/2 train the same model."""
        first = (self._micro * self.world + self.accelerator.process_index) * n
        return [_seeded([self.cfg.seed, 0x5A3B, self.step, salt, first + i], device or self.device)
                for i in range(n)]

    def batches(self, dataset, collate_fn=None, batch_size: int | None = None) -> Iterator:
        """Yield device batches until ``max_steps``; call :meth:`end_step` once per batch.

        Data order is a pure function of (seed, epoch): each epoch is a seeded permutation (tiled
        when the dataset is smaller than the global batch), split across processes, and
        ``dataset.set_epoch(epoch)`` is called when it exists. So resuming at step k continues with
        exactly the batch an uninterrupted run would have seen.
        """
        per = batch_size or self.cfg.batch_size
        world, rank, k = self.world, self.accelerator.process_index, self.cfg.grad_accum_steps
        gb = per * world * k  # samples per optimizer step; micro-batch m of rank r is slice m * world + r
        n = len(dataset)
        if n == 0:
            raise ValueError("empty dataset")
        epoch_len = max(n // gb, 1)
        self._t0, self._step0 = time.perf_counter(), self.step
        previous = self._install_stop_handlers()
        try:
            while not self.done:
                epoch, pos = divmod(self.step, epoch_len)
                perm = np.resize(np.random.default_rng([self.cfg.seed, 0xDA7A, epoch]).permutation(n), epoch_len * gb)
                steps = range(pos, min(epoch_len, pos + self.max_steps - self.step))
                plan = [perm[j * gb + (m * world + rank) * per: j * gb + (m * world + rank + 1) * per].tolist()
                        for j in steps for m in range(k)]
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
                # An own generator: a new DataLoader iterator otherwise draws its worker base seed from the
                # global torch RNG, and a resumed run creates its first iterator mid-epoch.
                worker_gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
                loader = DataLoader(dataset, batch_sampler=plan, collate_fn=collate_fn, num_workers=self.cfg.num_workers,
                                    pin_memory=self.device.type == "cuda", generator=worker_gen)
                for batch in loader:
                    self._in_step = True
                    if k > 1:  # DDP/FSDP reduce gradients on a step's last micro-batch only
                        for m in self._models:
                            sharding.set_gradient_sync(m, self._micro == k - 1)
                    yield _to_device(batch, self.device)
                    if self._in_step:
                        raise RuntimeError("Run.batches: call run.end_step(...) once per batch")
                    if self.stepped and self._stop_agreed() and not self.done:
                        # Raised here, not in end_step, so that what the stage logs after end_step
                        # (held-out losses, turn averages) for the stopped step is written too.
                        self._flush_logs()
                        if self._saved_step != self.step:  # the signal came after end_step
                            self.save_checkpoint()
                        raise StopRequested(f"stopped by {self._stop_reason()} after step {self.step}; "
                                            "checkpoint written, continue with --resume latest")
        except BaseException:
            self._lock.release()  # the run is over; the process may go on (tests, notebooks)
            raise
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)

    def _stop_agreed(self) -> bool:
        """Whether any process was signalled to stop. Collective (one tiny all-reduce per step), at
        the same point of every process's loop, so all stop after the same step."""
        local = self._stop_signal is not None
        if self.world == 1:
            return local
        flag = self.accelerator.reduce(torch.tensor([float(local)], device=self.device), reduction="sum")
        anyone = float(flag) > 0
        if anyone and not local:
            self._stop_signal = -1  # another rank's signal
        return anyone

    def _stop_reason(self) -> str:
        return "another process's signal" if self._stop_signal == -1 else f"signal {self._stop_signal}"

    # -- the step -----------------------------------------------------------------------------
    def autocast(self):
        """Mixed-precision context for code outside prepared models (no-op with mixed_precision=no)."""
        return self.accelerator.autocast() if self.mixed_precision != "no" else nullcontext()

    def backward(self, loss: torch.Tensor, model, optimizer, scheduler=None, *, clip: float | None = None,
                 name: str = "loss") -> float:
        """Backward, NaN/inf guard, gradient clipping, optimizer (and scheduler) step, zero_grad.

        With ``loop.grad_accum_steps`` k > 1 the loss is divided by k and the optimizer steps on the
        k-th micro-batch only; earlier ones return None. Returns the global gradient norm before
        clipping. Raises :class:`NonFiniteError` before
        the optimizer step if the loss or gradient is not finite (on every process at once), so
        the weights stay as they were and no broken checkpoint is ever written.
        """
        if self.step == self.cfg.debug_nan_at_step:
            loss = loss * float("nan")
        k = self.cfg.grad_accum_steps
        self.accelerator.backward(loss / k if k > 1 else loss)
        self._finite = self._finite and bool(torch.isfinite(loss.detach()).all())
        if self._micro < k - 1:
            return None  # gradients accumulate; the optimizer steps on the last micro-batch
        finite, self._finite = self._finite, True
        params = [p for p in model.parameters() if p.requires_grad]
        max_norm = self.cfg.grad_clip if clip is None else clip
        max_norm = max_norm if max_norm > 0 else float("inf")
        if self.fsdp != "no":
            norm = sharding.grad_norm(params, max_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(params, max_norm)
            norm = float(norm) if norm is not None else 0.0
        ok = torch.tensor([float(finite)], device=self.device)
        if self.accelerator.scaler is None:  # with fp16 loss scaling, inf grads only skip the step
            ok = ok * float(math.isfinite(norm))
        if self.accelerator.num_processes > 1:
            ok = self.accelerator.reduce(ok, reduction="sum") / self.accelerator.num_processes
        if float(ok) < 1.0:
            optimizer.zero_grad(set_to_none=True)
            last = self.ckpt.latest()
            raise NonFiniteError(
                f"{self.stage}: non-finite {name} at step {self.step + 1} (loss={float(loss.detach()):.4g}, "
                f"grad_norm={norm:.4g}); the step was not applied and nothing was saved. "
                f"Last good checkpoint: {last or 'none'}. Lower the lr / check the data, then --resume latest."
            )
        self._lrs[id(optimizer)] = optimizer.param_groups[0]["lr"]  # the lr this step used
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def _install_stop_handlers(self) -> dict:
        """While batches are drawn, SIGTERM/SIGINT finish the current step, checkpoint it and stop
        (exit EXIT_STOPPED), so a run stopped on purpose loses no steps; a second signal acts as
        usual. Returns the previous handlers (restored when :meth:`batches` ends)."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # handlers can only be installed from the main thread

        def handler(signum, frame):
            if self._stop_signal is not None:
                signal.signal(signum, previous.get(signum, signal.SIG_DFL))
                signal.raise_signal(signum)
            self._stop_signal = signum

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, handler)
        return previous

    def end_step(self, update_ema: bool = True, **metrics) -> None:
        """Finish the step: EMA updates (unless ``update_ema`` is False, e.g. on a step that did not
        change the averaged model), step counter, progress bar, logging, periodic checkpoint.
        With gradient accumulation, call it after every micro-batch: the metrics of each are
        averaged, and the step ends on the last one (:attr:`stepped`). None values are skipped."""
        self._in_step = False
        for k, v in metrics.items():
            if v is None:
                continue
            v = float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1
        self._micro = (self._micro + 1) % self.cfg.grad_accum_steps
        if self._micro:
            return
        if update_ema:
            for e, inner in self._emas.values():
                e.update(inner)
        self._step.value += 1
        if self.is_main:
            if self._bar is None:
                self._bar = tqdm(total=self.max_steps, initial=self.step - 1, desc=self.stage, dynamic_ncols=True)
            self._bar.update(1)
        if self.step % self.cfg.log_every == 0 or self.done:
            self._flush_logs()
        # One process stops at once; several agree in batches() first (a signal reaches one rank).
        stopping = self._stop_signal is not None and self.world == 1
        if stopping:
            self._flush_logs()
        if self.step % self.cfg.checkpoint_every == 0 or self.done or stopping:
            self.save_checkpoint()

    def log(self, **metrics) -> None:
        """Log values now (e.g. evaluation results) at the current step: TensorBoard + metrics.jsonl.
        Not collective: values one process computed for the whole run (held-out scores on the main
        process). Per-process values go through :meth:`log_mean`."""
        logs = {k: float(v) for k, v in metrics.items()}
        self.accelerator.log(logs, step=self.step)
        if self.is_main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **logs}) + "\n")

    def log_mean(self, **metrics) -> None:
        """:meth:`log` of per-process values (a stage's own meters), averaged over processes.
        Collective: every process calls it with the same keys."""
        self.log(**self._mean_over_ranks(metrics))

    def _mean_over_ranks(self, metrics: dict) -> dict[str, float]:
        keys = sorted(metrics)
        if self.world == 1 or not keys:
            return {k: float(metrics[k]) for k in keys}
        names = gather_object([keys])  # the key lists of all processes, in rank order
        if any(n != keys for n in names):
            raise RuntimeError(f"{self.stage}: processes logged different metrics ({names}); log the same keys")
        vals = torch.tensor([float(metrics[k]) for k in keys], device=self.device, dtype=torch.float64)
        return dict(zip(keys, self.accelerator.reduce(vals, reduction="mean").tolist()))

    def lrs(self) -> dict[str, float]:
        """Learning rate of each prepared optimizer's first group in its latest step ("lr/<index>")."""
        return {f"lr/{i}": self._lrs.get(id(opt), opt.param_groups[0]["lr"])
                for i, opt in enumerate(self._optimizers)}

    def _flush_logs(self) -> None:
        if not self._counts:
            return
        keys = sorted(self._sums)
        vals = torch.tensor([self._sums[k] / self._counts[k] for k in keys], device=self.device, dtype=torch.float64)
        if self.world > 1 and keys:
            vals = self.accelerator.reduce(vals, reduction="mean")
        logs = {k: float(v) for k, v in zip(keys, vals.tolist())}
        logs.update(self.lrs())
        self._sums, self._counts = {}, {}
        now = time.perf_counter()
        logs["steps_per_s"] = (self.step - self._step0) / max(now - self._t0, 1e-9)
        self._t0, self._step0 = now, self.step  # rate over the last logging interval
        self.accelerator.log(logs, step=self.step)
        if self.is_main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **logs}) + "\n")
            if self._bar is not None:
                shown = {k: f"{v:.4g}" for k, v in logs.items() if not k.startswith("lr/") and k != "steps_per_s"}
                self._bar.set_postfix(shown, refresh=False)

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write a complete checkpoint of everything registered, atomically (see checkpointing.py)."""
        emas = {name: e for name, (e, _) in self._emas.items()}
        info = {"stage": self.stage, "num_processes": self.world, "global_batch": self.global_batch,
                "fsdp": self.fsdp}
        path = save_checkpoint(self.accelerator, self.ckpt, self.step, emas, info, self._sharded)
        self._saved_step = self.step
        return path

    def restore(self, spec: str | None = None) -> int:
        """Load the checkpoint named by ``spec`` (default: ``--resume``); returns the restored step.

        Each checkpoint is verified against its recorded SHA-256 sums first. ``latest`` falls back
        to the newest intact checkpoint with a log line naming the damaged file; an explicit
        checkpoint that is damaged, or a run whose checkpoints are all damaged, raises
        :class:`CheckpointError` (exit 2 under :func:`run_main`).

        ``--resume latest`` on a run with no checkpoint starts fresh (so a preemptible job can always
        pass it). Without ``--resume``, a run folder that already has checkpoints is an error rather
        than silently mixing two runs.
        """
        spec = spec if spec is not None else self.resume_spec
        if self.is_main:
            self.ckpt.clean_partial()
        self.accelerator.wait_for_everyone()
        if spec is None:
            if self.ckpt.latest() is not None:
                raise FileExistsError(f"{self.out_dir} already has checkpoints: pass --resume latest or a new --out")
            return 0
        try:
            path = self.ckpt.resolve(spec)
        except FileNotFoundError as e:
            raise CheckpointError(str(e)) from None
        if path is None:
            return 0
        candidates = [path]
        if spec == LATEST:  # the newest first; an older one only when every newer one is damaged
            candidates += [p for _, p in reversed(self.ckpt.complete()) if p != path]
        emas = {name: e for name, (e, _) in self._emas.items()}
        for path in candidates:
            problem = verify_checkpoint(path)
            if problem is None:
                self._check_same_layout(path)
                try:
                    state = load_checkpoint(self.accelerator, path, emas, self._sharded)
                    break
                except Exception as e:  # noqa: BLE001 - e.g. a truncated file of a checkpoint without sums
                    problem = f"{path} could not be loaded ({type(e).__name__}: {e})"
            if spec != LATEST:
                raise CheckpointError(f"checkpoint damaged: {problem}; resume from another one "
                                      "(--resume latest or a step number) or start a new --out")
            self.print(f"checkpoint {path.name} is damaged: {problem}; falling back to the previous one")
        else:
            raise CheckpointError(f"no intact checkpoint in {self.ckpt.root} ({len(candidates)} damaged); "
                                  "start a new --out (or delete the damaged step folders)")
        if self.step != state["step"]:
            raise RuntimeError(f"checkpoint {path}: step counter {self.step} != run_state step {state['step']}")
        if self.is_main:
            truncate_metrics(self.out_dir / "metrics.jsonl", self.step)
        self.print(f"resumed at step {self.step}")
        return self.step

    def _check_same_layout(self, path: Path) -> None:
        """Refuse a checkpoint written by another number of processes or another global batch: its
        per-process RNG states and data order belong to that layout, so the run would silently
        change (the weights themselves are whole in every checkpoint, DDP or FSDP)."""
        state = read_run_state(path)
        saved = state.get("num_processes", self.world), state.get("global_batch", self.global_batch)
        if saved != (self.world, self.global_batch):
            raise CheckpointError(
                f"{path} was written by {saved[0]} process(es) with a global batch of {saved[1]}; this run has "
                f"{self.world} with {self.global_batch} (batch_size {self.cfg.batch_size} x {self.world} x "
                f"grad_accum_steps {self.cfg.grad_accum_steps}). Resume with the same launch, or warm-start a new "
                "--out from the exported EMA weights (the stage's init key)")

    def finish(self, export: Callable[[], Path] | None = None) -> Path:
        """Flush logs, close the progress bar and trackers; then, on the main process, call
        ``export()`` (the stage's export) and log where it wrote. Returns the run folder."""
        self._flush_logs()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.fsdp != "no":  # the export runs on the main process only: gather the averages first
            for e, _ in self._emas.values():
                e.shadow = e.full_shadow()
        self.accelerator.wait_for_everyone()  # no process tears its group down while another still uses it
        self.accelerator.end_training()
        if export is not None and self.is_main:
            self.print(f"exported {export()}")
        self._lock.release()
        return self.out_dir

    def print(self, *a) -> None:
        """A log line from the main process only (stderr, so stdout stays clean for tools)."""
        if self.is_main:
            print(*a, file=sys.stderr, flush=True)


def _seeded(key: list[int], device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1)))
    return g


class _Warmup:
    """Picklable LR multiplier: linear warm-up then constant."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def __call__(self, step: int) -> float:
        return 1.0 if self.steps <= 0 else min(1.0, (step + 1) / self.steps)


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# What run_main prints before each error's message, and the exit status it returns.
_EXITS = ((NonFiniteError, "error: ", EXIT_NONFINITE), (ConfigError, "config error: ", 2), (DataError, "data error: ", 2),
          (CheckpointError, "checkpoint error: ", 2), (DiskFullError, "error: ", 2), (RunLockedError, "error: ", 2),
          (StopRequested, "", EXIT_STOPPED))


def run_main(fn, argv=None) -> int:
    """Call a stage's ``train(argv)``; map the NaN guard, stops, and config, data, checkpoint and
    disk errors to one line on stderr and an exit status."""
    code = 0
    try:
        fn(argv)
    except tuple(cls for cls, _, _ in _EXITS) as e:
        prefix, code = next((p, c) for cls, p, c in _EXITS if isinstance(e, cls))
        print(f"{prefix}{e}", file=sys.stderr)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_worker(code)
    return code


def _exit_worker(code: int) -> None:
    """End one process of a multi-process launch without the interpreter's finalization. Gloo's C++
    threads can abort it after all work is done ("terminate called without an active exception",
    SIGABRT; seen once in CI on the DDP test, and described in pytorch PR 179291), which turns a
    finished run into a failed launch. Every file the run writes is closed and synced by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_stage(stage: str, cfg_cls, argv: list[str] | None = None, *, extra=None,
                find_unused_parameters: bool = False, adjust_data=None):
    """The start of every stage command: parse the command line, load and check the stage's section
    of the config file and open the :class:`Run` (which records what was run in config.json).
    ``extra(parser)`` adds stage-specific flags; ``adjust_data(data, cfg)`` may replace the data
    config before it is recorded. Returns ``(args, data, cfg, run)``."""
    args = parse_args(stage, argv, extra=extra)
    data, cfg, name = load_config(args.config, stage, cfg_cls, args.overrides)
    if adjust_data is not None:
        data = adjust_data(data, cfg)
    run = Run(stage, cfg.loop, args, config_name=name, find_unused_parameters=find_unused_parameters,
              config_record={"config": to_dict(cfg), "data": to_dict(data), "config_file": str(args.config)})
    return args, data, cfg, run

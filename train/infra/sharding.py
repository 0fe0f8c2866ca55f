"""FSDP2 sharding, activation checkpointing and world-size-independent state for :class:`train.infra.run.Run`.

``loop.fsdp = "full"`` shards every trained network over all processes (``fully_shard`` on each
block, i.e. each child of an ``nn.ModuleList``, then on the root); ``"hybrid"`` shards within a node
and replicates across nodes (HSDP, a 2-D device mesh). Parameters become DTensors, so optimizers
built before sharding are re-pointed at the new parameters, EMA shadows are sharded like their
parameters, and checkpoints store *full* (gathered) weights and optimizer state written by rank 0:
the same files a DDP run writes, whatever the world size.

Why not accelerate's FSDP plugin: it needs CUDA, so it cannot be exercised on the CPU machines
that run CI, while ``torch.distributed.fsdp.fully_shard`` runs on gloo as well as NCCL.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import nn

try:  # DTensor is always present in torch >= 2.4; the guard keeps single-process use import-light
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover
    DTensor, distribute_tensor = (), None


def is_sharded(t) -> bool:
    return isinstance(t, DTensor) if DTensor else False


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) tensor. Collective for a DTensor: every rank calls it."""
    return t.full_tensor() if is_sharded(t) else t


def like(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor, the same on every rank) laid out like ``target`` (sharded or not)."""
    value = value.to(device=target.device if not is_sharded(target) else target.to_local().device,
                     dtype=target.dtype)
    if is_sharded(target):
        return distribute_tensor(value, target.device_mesh, target.placements)
    return value


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks each sharded (and checkpointed) on its own: every child with parameters of an
    ``nn.ModuleList`` anywhere in ``model`` (the DiT's transformer blocks, the VAE's conv stages)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.ModuleList):
            # Containers (a list of lists, weight norm's parametrizations) have no forward to wrap;
            # their own members are listed where modules() reaches them.
            out += [c for c in m if any(True for _ in c.parameters())
                    and not isinstance(c, (nn.ModuleList, nn.ModuleDict))]
    return out


class _Checkpointed:
    """A module's forward, recomputed in the backward pass instead of keeping its activations."""

    def __init__(self, forward):
        self.forward = forward

    def __call__(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(self.forward, *args, use_reentrant=False, **kwargs)


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute every block's activations in the backward (``loop.activation_checkpointing``):
    memory of one block's activations instead of all, for about one more forward pass of compute.
    The state dict keys do not change. Returns the number of blocks wrapped."""
    units = shard_units(model)
    for m in units:
        if not isinstance(m.forward, _Checkpointed):
            m.forward = _Checkpointed(m.forward)
    return len(units)


def device_mesh(mode: str, device: torch.device):
    """The mesh of ``mode``: 1-D over all ranks ("full") or (nodes, ranks per node) ("hybrid")."""
    from torch.distributed.device_mesh import init_device_mesh

    world = torch.distributed.get_world_size()
    if mode == "full":
        return init_device_mesh(device.type, (world,))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % local:
        raise ValueError(f"hybrid sharding: world size {world} is not a multiple of the ranks per node {local}")
    return init_device_mesh(device.type, (world // local, local), mesh_dim_names=("replicate", "shard"))


def shard(models: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer], *, mode: str,
          device: torch.device, param_dtype: torch.dtype | None) -> list[tuple[nn.Module, torch.optim.Optimizer | None]]:
    """Shard ``models`` in place with FSDP2 and re-point ``optimizers`` (built on the unsharded
    parameters, still without state) at the sharded ones. ``param_dtype``: the compute dtype of
    mixed precision (bf16), gradients reduced in float32; None keeps float32. Returns each sharded
    model with the optimizer of its parameters (None for a model no optimizer trains)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh(mode, device)
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else \
        MixedPrecisionPolicy()
    renamed: dict[int, tuple[nn.Module, str]] = {}
    owned: dict[int, torch.optim.Optimizer | None] = {}
    for model in models:
        if not any(True for _ in model.parameters()):
            model.to(device)
            continue
        owned[id(model)] = None
        renamed.update({id(p): (model, n) for n, p in model.named_parameters()})
        model.to(device)
        for unit in reversed(shard_units(model)):  # innermost first: a unit may hold nested units
            fully_shard(unit, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
    sharded = [m for m in models if id(m) in owned]
    for opt in optimizers:
        if opt.state:
            raise RuntimeError("shard(): the optimizer already has state; shard before the first step")
        for group in opt.param_groups:
            fresh = []
            for p in group["params"]:
                if id(p) not in renamed:
                    raise RuntimeError("shard(): an optimizer holds parameters of a model that was not sharded")
                model, name = renamed[id(p)]
                fresh.append(model.get_parameter(name))
                owned[id(model)] = opt
            group["params"] = fresh
    return [(m, owned[id(m)]) for m in sharded]


def agreed_drop_floor(k: torch.Tensor) -> int:
    """The smallest layer-drop count in ``k`` (B,) long over every process (an all-reduce MIN;
    collective: every rank calls it once per forward). Passed as the DiT's ``run_at_drop``, it makes
    all processes run the same blocks, which FSDP needs: each block's parameters are gathered and
    its gradients reduced as a collective, so a block one process skips would hang the others."""
    import torch.distributed as dist

    m = k.detach().min().to(torch.int64).reshape(1).clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(m, op=dist.ReduceOp.MIN)
    return int(m.item())


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Whether the next backward reduces gradients across ranks (off for all but the last
    micro-batch of an accumulated step). Works for FSDP2 modules and DDP wrappers."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        model.require_backward_grad_sync = sync


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gathered float weights and buffers of a sharded model, on CPU, on rank 0 (empty elsewhere).
    Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Gathered optimizer state keyed by parameter name, on rank 0 (empty elsewhere). Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_full_state(model: nn.Module, weights: dict, optimizer: torch.optim.Optimizer | None = None,
                    optim_state: dict | None = None) -> None:
    """Inverse of :func:`full_model_state` / :func:`full_optimizer_state`: every rank passes the whole
    state it read from the checkpoint and keeps its own shard. Collective."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, weights, options=_options())
    if optimizer is not None and optim_state is not None:
        # strict=False: parameters that never had a gradient (e.g. a null embedding) have no Adam
        # state in the saved run either.
        set_optimizer_state_dict(model, optimizer, optim_state, options=_options(strict=False))


def grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm of (possibly sharded) parameters to ``max_norm`` (inf: only
    measure it); returns the norm before clipping. Collective for sharded parameters."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm)
    return float(full(norm))

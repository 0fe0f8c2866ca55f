"""Low-rank adapters on a DiT for fine-tuning, through peft: inject trainable LoRA factors into
chosen Linear layers (everything else frozen) and read them back in the adapter-folder layout that
presto_core.adapters merges for serving (``W + (alpha / r) B A``, peft's own update)."""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

# The block projections: attention in/out and the SwiGLU MLP. The adaLN and embedding layers stay
# frozen, so an adapter changes what the blocks compute, not how noise level and BPM are read.
DEFAULT_TARGETS = ("attn.qkv", "attn.out", "mlp.w13", "mlp.w2")
ADAPTER = "default"


def add_lora(dit: nn.Module, rank: int, alpha: float, targets=DEFAULT_TARGETS, seed: int = 0) -> list[str]:
    """Inject LoRA factors (A random, B zero: the model is unchanged until trained) into every Linear
    of ``dit`` whose name ends with one of ``targets``; freeze all other parameters. Returns the
    adapted module names (sorted). Raises ValueError if no layer matches."""
    if rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA needs rank >= 1 and alpha > 0, got {rank}, {alpha}")
    names = sorted(n for n, m in dit.named_modules()
                   if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets))
    if not names:
        raise ValueError(f"no Linear layer of the model matches the LoRA targets {list(targets)}")
    dit.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # A's init draws from the global RNG: keep it seeded and local
        torch.manual_seed(seed)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0,
                                           bias="none"), dit, adapter_name=ADAPTER)
    for n, p in dit.named_parameters():
        p.requires_grad_("lora_" in n)
    return names


def _lora_layers(module: nn.Module):
    """(name, layer) of every layer of ``module`` that carries this project's LoRA factors."""
    return ((n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A)


def lora_factors(dit: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A (r, in), B (out, r))} of every LoRA layer of ``dit`` (detached fp32 copies)."""
    return {name: (m.lora_A[ADAPTER].weight.detach().float().cpu().clone(),
                   m.lora_B[ADAPTER].weight.detach().float().cpu().clone()) for name, m in _lora_layers(dit)}


@torch.no_grad()
def copy_lora(src: nn.Module, dst: nn.Module) -> int:
    """Set the LoRA factors of ``dst`` to those of ``src`` (modules matched by name; both from
    :func:`add_lora` with the same rank). Returns how many layers were copied; ValueError if a
    layer of ``src`` has no match in ``dst`` or the ranks differ."""
    theirs = dict(_lora_layers(dst))
    copied = 0
    for name, m in _lora_layers(src):
        if name not in theirs:
            raise ValueError(f"LoRA layer {name} has no counterpart to copy into")
        d = theirs[name]
        for mine, other in ((m.lora_A[ADAPTER].weight, d.lora_A[ADAPTER].weight),
                            (m.lora_B[ADAPTER].weight, d.lora_B[ADAPTER].weight)):
            if mine.shape != other.shape:
                raise ValueError(f"LoRA layer {name}: factors {tuple(mine.shape)} and {tuple(other.shape)} differ")
            other.copy_(mine)
        copied += 1
    return copied


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters that get gradients (the LoRA factors after :func:`add_lora`)."""
    return [p for p in module.parameters() if p.requires_grad]

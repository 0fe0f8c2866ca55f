"""Teach a model folder's CLAP what a person's captions sound like, for their adapter.

The embedded CLAP never heard their style, so it scores even their real audio low against their
captions, and CLAP rejection with their adapter would keep the least-adapted candidates. Here LoRA
factors on the CLAP's *text* tower only (``text_proj``) are fitted so that:

- each of their training crops is nearer their captions than the model's other prompts (InfoNCE
  over all text candidates, every one of their captions counting as a positive: a person's
  captions name one style, often with near-identical wording);
- the other prompts (the model folder's prompts.json) embed where they did (squared drift x
  ``anchor_weight``), so the judge of every other style is unchanged.

The audio tower is untouched: a clip, plain or adapted, is heard exactly as before, and only what
their words mean moves. The judge never sees a generated clip, so it cannot learn to prefer the
adapted model's output for its own sake. Full-batch Adam over the prompts' token embeddings, computed
once: seconds on a CPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from presto_core import checkpoint as ckpt
from presto_core.clap import EmbeddedClapScorer
from presto_core.text import load_text_encoder
from train.diffusion.configs import ClapCaptionsConfig
from train.diffusion.lora import add_lora, lora_factors, trainable
from train.evaluation.clips import embed_audio, real_crops, split_records
from train.infra.config import DataError

TEXT_TOWER = ("text_proj.1", "text_proj.3")  # the text MLP's two Linear layers


def fit_caption_factors(clap, text_encoder, audio_emb: torch.Tensor, captions: list[str], anchors: list[str],
                        cfg: ClapCaptionsConfig, rank: int, alpha: float, seed: int = 0) -> tuple[dict, dict]:
    """Fit the text-tower LoRA factors on a copy of ``clap`` (an EmbeddedClap, left unchanged).

    ``audio_emb`` (N, D) unit vectors of their training crops, ``captions`` their captions (any
    count, duplicates allowed), ``anchors`` the other prompts to hold in place. Returns
    (factors {module: (A (r, in), B (out, r))}, metrics: mean cosine x100 of the crops with their
    captions before and after, and the anchors' mean drift (1 - cosine))."""
    theirs = sorted(set(captions))
    anchors = [a for a in dict.fromkeys(anchors) if a not in set(theirs)]
    if not theirs or not anchors:
        raise ValueError("fitting the CLAP's captions needs some of their captions and some other prompts")
    model = copy.deepcopy(clap).float().eval()  # eval: no dropout in the text MLP either
    add_lora(model, rank, alpha, TEXT_TOWER, seed=seed)
    dev = audio_emb.device
    emb, mask = text_encoder.encode(theirs + anchors)
    emb, mask = emb.to(dev, torch.float32), mask.to(dev)
    with torch.no_grad():
        before = model.text_embed_from_tokens(emb, mask)  # B = 0: the plain tower
    scale = float(clap.logit_scale.detach().clamp(max=float(np.log(100.0))).exp())
    k = len(theirs)
    opt = torch.optim.Adam(trainable(model), lr=cfg.lr)
    for _ in range(cfg.steps):
        text = model.text_embed_from_tokens(emb, mask)
        logits = scale * audio_emb @ text.t()  # (N, k + M)
        nce = (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, :k], dim=1)).mean()
        drift = (text[k:] - before[k:]).pow(2).sum(-1).mean()
        loss = nce + cfg.anchor_weight * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.text_embed_from_tokens(emb, mask)
    own = torch.tensor([theirs.index(c) for c in captions], device=dev)
    metrics = {"their_audio_clap_before": 100 * float((audio_emb * before[own]).sum(-1).mean()),
               "their_audio_clap_after": 100 * float((audio_emb * after[own]).sum(-1).mean()),
               "anchor_drift": float(1 - (after[k:] * before[k:]).sum(-1).mean()),
               "captions": k, "anchors": len(anchors), "crops": int(audio_emb.shape[0]), "steps": cfg.steps}
    return lora_factors(model), metrics


def adapt_clap(model: str | Path, index: dict, data_root: str, cfg: ClapCaptionsConfig, rank: int, alpha: float,
               seed: int = 0) -> tuple[dict, str, dict] | None:
    """The CLAP part of an adapter for model folder ``model`` (its parsed ``index``) and the ingested
    dataset ``data_root``: (factors, the CLAP weights' SHA-256, metrics of :func:`fit_caption_factors`),
    or None when the folder has no CLAP or ``cfg.steps`` is 0. Crops come from the train split;
    the anchors are the folder's prompts.json prompts."""
    entry = index["components"].get("clap")
    if entry is None or cfg.steps == 0:
        return None
    clap, _ = ckpt.load_component(Path(model) / entry["path"], entry.get("sha256"))
    text_encoder = load_text_encoder(index.get("text_encoder", {"kind": "minilm"}))
    scorer = EmbeddedClapScorer(clap, text_encoder)
    sr = clap.cfg.sample_rate
    crops, captions = real_crops(split_records(data_root, "train"), sr, cfg.crop_seconds, cfg.crops_per_file)
    if not crops:
        raise DataError(f"{data_root}: no training file is {cfg.crop_seconds:g} s long, so the CLAP has nothing "
                         "to learn their captions from (lower finetune.clap_captions.crop_seconds)")
    audio = torch.from_numpy(embed_audio(scorer, crops, sr))
    prompts_file = Path(model) / index.get("prompts", "prompts.json")
    anchors = [p["prompt"] if isinstance(p, dict) else str(p) for p in json.loads(prompts_file.read_text())] \
        if prompts_file.is_file() else []
    factors, metrics = fit_caption_factors(clap, text_encoder, audio, captions, anchors, cfg, rank, alpha, seed)
    return factors, entry["sha256"], metrics

"""Text-to-audio retrieval accuracy of paired embeddings (CLAP training and train.report)."""

from __future__ import annotations

import torch


def retrieval_accuracy(text_emb: torch.Tensor, audio_emb: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Text->audio retrieval over N matching pairs (N, D) each: the fraction of texts whose own clip
    ranks within the top k of all N clips by cosine similarity (ties count against)."""
    sim = text_emb.float() @ audio_emb.float().t()
    own = sim.diagonal()[:, None]
    rank = (sim > own).sum(dim=1) + ((sim == own).sum(dim=1) - 1)  # 0 = best
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}

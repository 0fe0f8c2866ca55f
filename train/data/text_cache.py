"""Frozen text-encoder tokens of captions, cached: every stage that conditions on text (CLAP and the
latent-diffusion stages) reads its captions' tokens through it."""

from __future__ import annotations

from collections import OrderedDict

import torch


class TextCache:
    """Frozen text-encoder tokens per caption, memoised (LRU, on the CPU).

    Each caption is encoded alone, so its tokens do not depend on which other captions happened to
    share a batch (keeps resumed runs bit-identical). ``batch(captions)`` pads to the longest.
    """

    def __init__(self, encoder, max_entries: int = 100_000):
        self.encoder, self.max_entries = encoder, max(int(max_entries), 1)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def tokens(self, caption: str) -> torch.Tensor:
        """(L, D) float32 tokens of one caption (padding removed)."""
        hit = self._cache.get(caption)
        if hit is not None:
            self._cache.move_to_end(caption)
            return hit
        emb, mask = self.encoder.encode([caption], device="cpu")
        tok = emb[0, mask[0]].contiguous()
        self._cache[caption] = tok
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return tok

    def batch(self, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> emb (B, L, D) float32, mask (B, L) bool on ``device``."""
        toks = [self.tokens(c) for c in captions]
        length = max(t.shape[0] for t in toks)
        emb = torch.zeros(len(toks), length, toks[0].shape[1])
        mask = torch.zeros(len(toks), length, dtype=torch.bool)
        for i, t in enumerate(toks):
            emb[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        return emb.to(device), mask.to(device)

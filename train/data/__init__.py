"""Training data for Presto: dataset format, procedural corpus builder, latent cache.

    AudioDataset, collate, read_metadata   (dataset.py)   waveform crops + labels
    AugmentConfig                          (augment.py)   pitch-shift / time-stretch
    encode_latents, LatentDataset          (latents.py)   pre-encoded latent crops
    build_corpus                           (build_corpus.py, also a CLI)

Names are imported lazily so that the corpus CLI does not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AudioDataset": "dataset", "collate": "dataset", "read_metadata": "dataset", "load_mono": "dataset",
    "AugmentConfig": "augment", "encode_latents": "latents", "LatentDataset": "latents",
    "build_corpus": "build_corpus",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"train.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'train.data' has no attribute {name!r}")

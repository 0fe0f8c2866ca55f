"""Latent cache: encode every file of a dataset once, then train on random latent crops.

Cache file (safetensors):
    tensors   "latents" (C, T_total) -- all items concatenated along time
              "offsets" (n_items + 1,) int64 -- item i is latents[:, offsets[i]:offsets[i+1]]
    metadata  "presto_latent_cache" -> JSON {"version", "sample_rate", "hop", "channels",
              "target_db", "items": [{path, captions, bpm, key, mode, genre, split,
              frames, stretch, semitones, chunk}]}

The VAE only needs `vae.encode_latents(wav (B, 1, N), sample=False) -> (B, C, T)` and
`vae.cfg` with `sample_rate` and `hop`, as presto_core.autoencoder.AudioVAE has; its
encode_latents already applies latent_scale, so the cache holds diffusion-space latents.
Latents cannot be pitch-shifted or time-stretched, so augmentation happens before encoding: `copies=k` adds
k augmented versions of every file (labels adjusted as in augment.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm import tqdm

from train.data.augment import AugmentConfig, apply, augment_labels, rms_normalize
from train.data.dataset import check_audio, load_mono, read_metadata

CACHE_KEY = "presto_latent_cache"
_KEEP = ("path", "captions", "bpm", "key", "mode", "genre", "split")


@torch.no_grad()
def encode_latents(dataset_dir: str | os.PathLike, vae, out_path: str | os.PathLike,
                   split: str | None = "train", augment: AugmentConfig | None = None, copies: int = 0,
                   seed: int = 0, chunk_seconds: float | None = None, target_db: float | None = -20.0,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   progress: bool = False) -> Path:
    """Pre-encode every file of `dataset_dir` (one split) with `vae` into `out_path`.

    chunk_seconds: split long files into independent items of at most this length (bounds
    encoder memory; chunks are separate items, no seams inside a crop). copies: number of
    extra augmented versions per file, drawn from `augment` (default AugmentConfig())
    with a generator seeded by (seed, item, copy). Returns the written path.
    """
    items = read_metadata(dataset_dir, split)
    check_audio(items)
    cfg = vae.cfg
    sr, hop = int(cfg.sample_rate), int(cfg.hop)
    augment = augment or AugmentConfig()
    was_training = getattr(vae, "training", False)
    if hasattr(vae, "eval"):
        vae.eval()
    pieces, metas = [], []
    jobs = [(i, c) for i in range(len(items)) for c in range(copies + 1)]
    if progress:
        jobs = tqdm(jobs, desc="encode", unit="clip")
    for i, c in jobs:
        item = items[i]
        wav = load_mono(item["abs_path"], sr)
        rate, semis = (1.0, 0) if c == 0 else augment.sample(np.random.default_rng([seed, i, c]))
        wav = apply(wav, sr, rate, semis)
        labels = augment_labels(item, rate, semis)
        step = len(wav) if not chunk_seconds else int(chunk_seconds * sr) // hop * hop
        for k, s in enumerate(range(0, len(wav), max(step, hop))):
            seg = wav[s: s + step]
            if len(seg) < hop:
                continue
            seg = np.pad(seg, (0, (-len(seg)) % hop))
            if target_db is not None:
                seg = rms_normalize(seg, target_db)
            x = torch.from_numpy(seg).to(device)[None, None]
            z = vae.encode_latents(x, sample=False)[0].to("cpu", dtype)
            pieces.append(z)
            meta = {f: labels.get(f) for f in _KEEP}
            meta.update(frames=int(z.shape[-1]), stretch=rate, semitones=semis, chunk=k)
            metas.append(meta)
    if was_training and hasattr(vae, "train"):
        vae.train()
    if not pieces:
        raise ValueError(f"nothing to encode in {dataset_dir} (split={split!r})")
    offsets = torch.tensor([0] + np.cumsum([p.shape[-1] for p in pieces]).tolist(), dtype=torch.int64)
    header = {"version": 1, "sample_rate": sr, "hop": hop, "channels": int(pieces[0].shape[0]),
              "target_db": target_db, "vae": type(vae).__name__,
              "vae_config": cfg.to_dict() if hasattr(cfg, "to_dict") else None, "items": metas}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    save_file({"latents": torch.cat(pieces, dim=-1).contiguous(), "offsets": offsets}, str(tmp),
              metadata={CACHE_KEY: json.dumps(header)})
    os.replace(tmp, out_path)
    return out_path


class LatentDataset(Dataset):
    """Random crops of `frames` latent frames from a cache written by `encode_latents`.

    Item: dict(latents=(C, frames) tensor, length=int valid frames (items shorter than
    `frames` are zero-padded at the end), caption=str (random phrasing), bpm=float, key,
    mode, genre, path, start=int first frame, start_s=float seconds from the start of the file to
    that frame: chunks of one file follow each other in the cache). Seeded by (seed, epoch, index) like
    AudioDataset; call `set_epoch` each epoch.
    """

    def __init__(self, path: str | os.PathLike, frames: int, split: str | None = None, seed: int = 0,
                 mmap: bool = True):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if CACHE_KEY not in meta:
                raise ValueError(f"{path} is not a latent cache (no {CACHE_KEY!r} metadata)")
            self.header = json.loads(meta[CACHE_KEY])
            self.offsets = f.get_tensor("offsets").tolist()
            self.latents = (_memmap(path, "latents") if mmap else None)
            if self.latents is None:
                self.latents = f.get_tensor("latents")
        self.index = [i for i, m in enumerate(self.header["items"]) if split is None or m["split"] == split]
        if not self.index:
            raise ValueError(f"no cached items with split={split!r} in {path}")
        self.frames, self.seed, self.epoch = int(frames), int(seed), 0
        # The first frame of every item within its file: a chunk k > 0 follows chunk k - 1.
        items = self.header["items"]
        self._file_frame = [0] * len(items)
        for j in range(1, len(items)):
            if int(items[j].get("chunk", 0)) > 0:
                self._file_frame[j] = self._file_frame[j - 1] + self.offsets[j] - self.offsets[j - 1]

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.header["sample_rate"] / self.header["hop"]

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Change the crops drawn for every item (deterministically)."""
        self.epoch = int(epoch)

    def latents_of(self, i: int) -> torch.Tensor:
        """All latent frames (C, T_i) of item `i`, float32."""
        j = self.index[i]
        return self._frames(self.offsets[j], self.offsets[j + 1])

    def _frames(self, a: int, b: int) -> torch.Tensor:
        z = self.latents[:, a:b]
        return torch.from_numpy(np.array(z, dtype=np.float32)) if isinstance(z, np.ndarray) else z.float()

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        j = self.index[i]
        meta = self.header["items"][j]
        a, b = self.offsets[j], self.offsets[j + 1]
        start = int(rng.integers(0, max(b - a - self.frames, 0) + 1))
        z = self._frames(a + start, min(a + start + self.frames, b))
        length = int(z.shape[-1])
        if length < self.frames:
            z = torch.nn.functional.pad(z, (0, self.frames - length))
        caps = meta["captions"]
        return {"latents": z.float().contiguous(), "length": length,
                "caption": caps[int(rng.integers(len(caps)))], "bpm": float(meta["bpm"]),
                "key": meta.get("key"), "mode": meta.get("mode"), "genre": meta.get("genre"),
                "path": meta["path"], "start": start, "start_s": (self._file_frame[j] + start) / self.frame_rate}


def _memmap(path: str | os.PathLike, name: str) -> np.ndarray | None:
    """Read-only numpy memmap of tensor `name` in a safetensors file (None for dtypes numpy
    lacks, e.g. bf16). Shared between DataLoader workers through the page cache."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    entry = header[name]
    dtype = {"F32": np.float32, "F16": np.float16, "F64": np.float64}.get(entry["dtype"])
    if dtype is None:
        return None
    begin, end = entry["data_offsets"]
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + n + begin, shape=tuple(entry["shape"]))

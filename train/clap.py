"""Train the embedded CLAP model (presto_core.clap.EmbeddedClap) for CLAP rejection sampling.

    [accelerate launch -m | python -m] train.clap --config train/configs/<scale>.json
        [--out RUN_DIR] [--resume latest] [--max-steps N] [--set clap.loop.lr=1e-3] [--cpu]

Per step: random audio crops of the training pieces (resampled to the CLAP rate) paired with one
random caption phrasing each; the frozen text encoder's tokens feed the text tower; loss = the
symmetric InfoNCE of EmbeddedClap.contrastive_loss. Every ``eval_every`` steps the EMA weights are
scored on one fixed crop per held-out piece: text->audio retrieval top-1 / top-5 accuracy.
The EMA weights are exported as the ``clap`` component at RUN_DIR/export/clap.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from presto_core import checkpoint as ckpt
from presto_core.clap import ClapConfig, EmbeddedClap
from presto_core.text import load_text_encoder
from train.data.augment import AugmentConfig
from train.data.dataset import AudioDataset, collate
from train.data.text_cache import TextCache
from train.evaluation.retrieval import retrieval_accuracy
from train.infra.config import LoopConfig
from train.infra.run import run_main, start_stage


@dataclass
class ClapStageConfig:
    """The ``clap`` section of a config file."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    model: ClapConfig = field(default_factory=ClapConfig)
    text_encoder: dict = field(default_factory=lambda: {"kind": "minilm", "max_tokens": 64})
    crop_seconds: float = 10.0
    # A mirror of data.root already at the CLAP rate (python -m train.data.resample): crops are then
    # read with a seek instead of decoded and resampled on every step. Empty: data.root.
    data_root: str = ""
    augment: bool = False  # pitch-shift / time-stretch crops (labels follow; slower data loading)
    eval_every: int = 500
    text_cache_size: int = 100_000


class HeldoutSet:
    """One fixed crop and caption per held-out piece, loaded once."""

    def __init__(self, data, cfg: ClapStageConfig):
        try:
            ds = AudioDataset(data.root, cfg.crop_seconds, cfg.model.sample_rate, split=data.heldout_split,
                              seed=cfg.loop.seed + 1)
        except ValueError:  # no held-out pieces
            self.wav, self.captions = None, []
            return
        items = [ds[i] for i in range(len(ds))]
        self.wav = torch.stack([it["wav"][0] for it in items])
        self.captions = [it["caption"] for it in items]

    def __len__(self) -> int:
        return len(self.captions)

    @torch.no_grad()
    def evaluate(self, model: EmbeddedClap, text: TextCache, device) -> dict[str, float]:
        was = model.training
        model.eval()
        a, t = [], []
        for i in range(0, len(self), 64):
            emb, mask = text.batch(self.captions[i: i + 64], device)
            a.append(model.audio_embed(self.wav[i: i + 64].to(device)))
            t.append(model.text_embed_from_tokens(emb, mask))
        model.train(was)
        a, t = torch.cat(a), torch.cat(t)
        out = {f"heldout/{k}": v for k, v in retrieval_accuracy(t, a).items()}
        out["heldout/loss"] = float(model.contrastive_loss(a, t))
        return out


def train(argv: list[str] | None = None) -> Path:
    """Entry point (see module doc). Returns the run folder."""
    _, data, cfg, run = start_stage("clap", ClapStageConfig, argv, adjust_data=lambda data, cfg: (
        dataclasses.replace(data, root=cfg.data_root) if cfg.data_root else data))
    encoder = load_text_encoder(cfg.text_encoder, device=run.device)
    if encoder.dim != cfg.model.text_dim:
        raise ValueError(f"clap.model.text_dim={cfg.model.text_dim} but the text encoder gives {encoder.dim}-d tokens")
    text = TextCache(encoder, cfg.text_cache_size)
    dataset = AudioDataset(data.root, cfg.crop_seconds, cfg.model.sample_rate, split=data.train_split,
                           augment=AugmentConfig() if cfg.augment else None, seed=cfg.loop.seed)
    heldout = HeldoutSet(data, cfg) if run.is_main else None

    torch.manual_seed(cfg.loop.seed)
    model = EmbeddedClap(cfg.model)
    run.print(f"clap: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {len(dataset)} training "
              f"pieces, {len(heldout) if heldout else 0} held out, {run.mixed_precision}")
    model, opt, sched, ema = run.train_one(model)
    # Built before restore(): initialising it draws from the global RNG, which restore() resets.
    eval_model = EmbeddedClap(cfg.model).to(run.device) if run.is_main else None
    run.restore()

    def evaluate():
        averaged = ema.copy_to(eval_model)  # on every process: under FSDP the average is gathered
        if run.is_main and heldout is not None and len(heldout):
            run.log(**heldout.evaluate(averaged, text, run.device))
        run.accelerator.wait_for_everyone()

    for batch in run.batches(dataset, collate):
        emb, mask = text.batch(batch["caption"], run.device)
        audio_emb, text_emb = model(batch["wav"][:, 0], emb, mask)
        loss = run.unwrap(model).contrastive_loss(audio_emb.float(), text_emb.float())
        grad_norm = run.backward(loss, model, opt, sched)
        with torch.no_grad():
            acc = retrieval_accuracy(text_emb.detach(), audio_emb.detach(), ks=(1,))["top1"]
        run.end_step(loss=loss, grad_norm=grad_norm, train_top1=acc)
        if run.stepped and (run.step % cfg.eval_every == 0 or run.done):
            evaluate()

    def export() -> Path:
        dst = run.out_dir / "export" / "clap"
        ckpt.save_component(dst, ema.copy_to(EmbeddedClap(cfg.model)), cfg.model,
                            meta={"text_encoder": cfg.text_encoder, "step": run.step})
        return dst

    return run.finish(export=export)


def main(argv: list[str] | None = None) -> int:
    return run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())

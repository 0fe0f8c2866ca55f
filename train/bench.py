"""Training-step throughput: ``python -m train.bench [--size tiny|paper] [--device cuda] [--batch 8]
[--seconds 10] [--repeats 5] [--precision fp32,bf16]``.

Prints a table of the median wall time of one optimizer step (forward, backward, Adam) and the
samples and audio-seconds per second it gives, on random latents of ``--seconds`` at the size's
latent rate, for: the base model's DSM step (train/base.py), and Presto-S's fake-score turn and
generator turn (Algorithm 1, train/diffusion/distill.py: generator, fake score with its GAN head,
frozen real score with CFG), in each of ``--precision``. A Presto-S iteration averages one
generator turn per ``fake_updates_per_gen`` (5) fake turns; its row gives that mix. Random
weights: throughput does not depend on the values. ``--size paper`` is DiT-XL (28 x 1152), for a
GPU; one process, so multiply by the number of GPUs for data-parallel training (the all-reduce is
overlapped with the backward pass and small beside it at this size).
"""

from __future__ import annotations

import argparse
import sys

import torch

from presto_core.autoencoder import VAEConfig
from presto_core.bench import median_time
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import Precond, sample_sigmas
from train.diffusion.configs import PrestoSStageConfig
from train.diffusion.distill import fake_turn, generator_turn
from train.diffusion.gan_head import FakeScoreWithHead, GanHead, GanHeadConfig
from train.diffusion.losses import masked_dsm_loss


def _cond(b: int, cfg: DiTConfig, dev, g) -> dict:
    return dict(text=torch.randn(b, 32, cfg.text_dim, generator=g).to(dev), text_mask=torch.ones(b, 32, dtype=torch.bool, device=dev),
                bpm=torch.full((b,), 120.0, device=dev), uncond=False)


def run(size: str = "tiny", device: str = "cpu", batch: int = 8, seconds: float = 10.0, repeats: int = 5,
        precisions=("fp32", "bf16")) -> list[dict]:
    """Measure and return rows: name, precision, batch, frames, median seconds, samples/s, audio s/s."""
    dev = torch.device(device)
    vcfg = getattr(VAEConfig, size)()
    frames = int(round(seconds * vcfg.sample_rate / vcfg.hop))
    dcfg = getattr(DiTConfig, size)(latent_channels=vcfg.latent_channels)
    g = torch.Generator().manual_seed(0)
    scfg = PrestoSStageConfig(head=GanHeadConfig(blocks=(), channels=128))
    base = Precond(DiT(dcfg)).to(dev)
    gen = Precond(DiT(dcfg)).to(dev)
    blocks = scfg.head.resolve_blocks(dcfg.depth)
    psi = FakeScoreWithHead(Precond(DiT(dcfg)), GanHead(dcfg.dim, len(blocks), 128, 2), blocks).to(dev)
    real = Precond(DiT(dcfg)).to(dev).eval().requires_grad_(False)
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-5) for n, m in (("base", base), ("gen", gen), ("psi", psi))}
    x0 = torch.randn(batch, dcfg.latent_channels, frames, generator=g).to(dev)
    cond = _cond(batch, dcfg, dev, g)
    tg = torch.Generator(device=dev).manual_seed(1)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(name, loss_fn):
        def fn():
            opts[name].zero_grad(set_to_none=True)
            loss_fn().backward()
            opts[name].step()
            sync()
        return fn

    def dsm():
        sigma = sample_sigmas("train", batch, scfg.edm, generator=tg, device=dev)
        noise = torch.randn(x0.shape, generator=tg, device=dev)
        return masked_dsm_loss(base, x0, sigma, noise, None, scfg.edm.sigma_data, **cond)

    def gen_turn():
        psi.requires_grad_(False)
        try:
            return generator_turn(scfg, gen, psi, real, x0, cond, tg)[0]
        finally:
            psi.requires_grad_(True)

    rows = []
    for prec in precisions:
        ac = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16")

        def timed(fn):
            def inner():
                with ac:
                    fn()
            return median_time(inner, repeats)

        t = {"base DSM step": timed(step("base", dsm)),
             "Presto-S fake-score turn": timed(step("psi", lambda: fake_turn(scfg, gen, psi, x0, cond, tg)[0])),
             "Presto-S generator turn": timed(step("gen", gen_turn))}
        k = scfg.fake_updates_per_gen
        t[f"Presto-S iteration ({k}:1 mix)"] = (k * t["Presto-S fake-score turn"] + t["Presto-S generator turn"]) / (k + 1)
        for name, s in t.items():
            rows.append({"name": name, "precision": prec, "batch": batch, "frames": frames, "seconds": s,
                         "samples_per_s": batch / s, "audio_s_per_s": batch * seconds / s})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="tiny", choices=("tiny", "paper"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="audio length of each training crop")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    precs = tuple(x.strip() for x in a.precision.split(",") if x.strip())
    if a.batch < 1 or a.repeats < 1 or not 0.5 <= a.seconds <= 64 or not precs or set(precs) - {"fp32", "bf16"}:
        print("error: need --batch >= 1, --repeats >= 1, --seconds in [0.5, 64] and --precision of fp32,bf16",
              file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = run(a.size, a.device, a.batch, a.seconds, a.repeats, precs)
    print(f"| step ({a.size}, {a.device}, batch {a.batch} x {a.seconds:g} s = {rows[0]['frames']} frames) | precision "
          f"| median ms | samples/s | audio s/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['precision']} | {1000 * r['seconds']:.1f} | {r['samples_per_s']:.2f} | "
              f"{r['audio_s_per_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

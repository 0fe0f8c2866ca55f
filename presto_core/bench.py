"""Latency benchmark: ``python -m presto_core.bench [--repeats 5] [--seconds 32]``.

Prints a table of median forward latency (and the ratio against fp32) for the CPU-sized DiT
at the token count of ``--seconds`` of audio, with and without layer dropping, and for the
VAE decoder on the same audio, in fp32 and bf16 autocast. Random weights: latency does not
depend on the values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(repeats: int = 5, seconds: float = 32.0, device: str = "cpu", text_tokens: int = 32) -> list[dict]:
    """Measure and return rows: name, precision, tokens, median seconds, ratio vs fp32."""
    from presto_core.autoencoder import AudioVAE, VAEConfig
    from presto_core.dit import DiT, DiTConfig
    from presto_core.edm import Precond

    dev = torch.device(device)
    vcfg = VAEConfig.tiny()
    frames = int(round(seconds * vcfg.sample_rate / vcfg.hop))
    gen = torch.Generator().manual_seed(0)
    dit_cfg = DiTConfig.tiny(latent_channels=vcfg.latent_channels)
    dit = Precond(DiT(dit_cfg)).to(dev).eval()
    vae = AudioVAE(vcfg).to(dev).eval()
    x = torch.randn(1, vcfg.latent_channels, frames, generator=gen).to(dev)
    text = torch.randn(1, text_tokens, dit_cfg.text_dim, generator=gen).to(dev)
    mask = torch.ones(1, text_tokens, dtype=torch.bool, device=dev)
    bpm = torch.tensor([120.0], device=dev)
    depth = dit_cfg.depth
    cases = {
        f"DiT tiny forward ({depth} blocks)": lambda: dit(x, 1.0, text=text, text_mask=mask, bpm=bpm),
        f"DiT tiny forward ({depth // 2} dropped)": lambda: dit(x, 1.0, text=text, text_mask=mask, bpm=bpm,
                                                                 layers_dropped=depth // 2),
        "VAE decoder": lambda: vae.decode(x),
    }
    rows = []
    with torch.no_grad():
        for name, fn in cases.items():
            base = None
            for prec in ("fp32", "bf16"):
                ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if prec == "bf16"
                       else torch.autocast(dev.type, enabled=False))

                def call():
                    with ctx:
                        fn()
                    if dev.type == "cuda":
                        torch.cuda.synchronize()

                t = median_time(call, repeats)
                base = base or t
                rows.append({"name": name, "precision": prec, "frames": frames, "seconds": t, "vs_fp32": base / t})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m presto_core.bench", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=32.0, help="audio length the latents stand for")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.repeats, args.seconds, args.device)
    dev = args.device if args.device != "cpu" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; torch {torch.__version__}; median of {args.repeats}; audio {args.seconds:g} s")
    print(f"{'component':36s} {'precision':9s} {'frames':>6s} {'median ms':>10s} {'speed-up vs fp32':>17s}")
    for r in rows:
        print(f"{r['name']:36s} {r['precision']:9s} {r['frames']:6d} {1000 * r['seconds']:10.1f} {r['vs_fp32']:16.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

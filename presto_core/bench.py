"""Latency benchmark: ``python -m presto_core.bench [--repeats 5] [--seconds 32] [--size tiny|paper]
[--device cuda] [--compile]``.

Prints a table of median latency (and the ratio against fp32) at the token count of ``--seconds``
of audio for: one DiT forward, with and without layer dropping; the VAE decoder; the
mono-to-stereo model (M2S); the whole Presto-LS mono path the paper times (appendix A.6: 4
ping-pong generator calls over the Karras(rho=7) schedule, each with the reduced Presto-LS drop
schedule's budget for its sigma, then decoding); and the same path in stereo (then M2S), in fp32 and
bf16 autocast, followed by M2S's share of the stereo path. ``--size tiny`` is the embedded default's architecture (CPU-sized),
``--size paper`` DiT-XL (28 blocks, 1152 wide) with the paper-scale VAE, for the issue's GPU
comparison against the paper's 230 ms on an A100 (flash-attn is used when installed, else SDPA;
``--compile`` wraps the DiT and the decoder in torch.compile, whose first call is not timed).
Random weights: latency does not depend on the values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from presto_core.autoencoder import AudioVAE, VAEConfig
from presto_core.budget import PRESTO_LS, DropSchedule
from presto_core.dit import DiT, DiTConfig
from presto_core.edm import EDMConfig, Precond, karras_sigmas
from presto_core.samplers import sample_pingpong
from presto_core.stereo import MonoToStereo, StereoConfig


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


def run(repeats: int = 5, seconds: float = 32.0, device: str = "cpu", text_tokens: int = 32,
        size: str = "tiny", compile: bool = False, steps: int = 4) -> list[dict]:
    """Measure and return rows: name, precision, frames, median seconds, ratio vs fp32."""
    if size not in ("tiny", "paper"):
        raise ValueError(f"size must be 'tiny' or 'paper', got {size!r}")
    dev = torch.device(device)
    vcfg = VAEConfig.tiny() if size == "tiny" else VAEConfig.paper()
    frames = int(round(seconds * vcfg.sample_rate / vcfg.hop))
    gen = torch.Generator().manual_seed(0)
    dit_cfg = getattr(DiTConfig, size)(latent_channels=vcfg.latent_channels, budget_conditioning=True)
    dit = Precond(DiT(dit_cfg)).to(dev).eval()
    vae = AudioVAE(vcfg).to(dev).eval()
    m2s = MonoToStereo(getattr(StereoConfig, size)()).to(dev).eval()
    mono_clip = 0.1 * torch.randn(1, int(round(seconds * vcfg.sample_rate)), generator=gen).to(dev)
    decode = vae.decode
    if compile:
        dit, decode = torch.compile(dit), torch.compile(vae.decode)
    edm = EDMConfig()
    schedule = DropSchedule.scaled(PRESTO_LS, dit_cfg.depth, edm)
    sigmas = karras_sigmas(steps, edm.sigma_min, edm.sigma_max, edm.rho).to(dev)
    x = torch.randn(1, vcfg.latent_channels, frames, generator=gen).to(dev)
    text = torch.randn(1, text_tokens, dit_cfg.text_dim, generator=gen).to(dev)
    mask = torch.ones(1, text_tokens, dtype=torch.bool, device=dev)
    bpm = torch.tensor([120.0], device=dev)
    depth = dit_cfg.depth

    def presto_ls():
        def denoise(z, sigma):
            s = torch.as_tensor(sigma, dtype=torch.float32, device=dev).expand(z.shape[0])
            return dit(z, s, text=text, text_mask=mask, bpm=bpm, layers_dropped=schedule(s))
        return decode(sample_pingpong(denoise, x * sigmas[0], sigmas, torch.Generator(dev).manual_seed(0)))

    cases = {
        f"DiT {size} forward ({depth} blocks)": lambda: dit(x, 1.0, text=text, text_mask=mask, bpm=bpm),
        f"DiT {size} forward ({depth // 2} dropped)": lambda: dit(x, 1.0, text=text, text_mask=mask, bpm=bpm,
                                                                   layers_dropped=depth // 2),
        "VAE decoder": lambda: decode(x),
        f"M2S {size} ({seconds:g} s)": lambda: m2s(mono_clip),
        f"Presto-LS {steps} steps + decode": presto_ls,
        f"Presto-LS {steps} steps stereo": lambda: m2s(presto_ls()[:, 0]),
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
    p.add_argument("--size", default="tiny", choices=("tiny", "paper"),
                   help="tiny: the embedded default's architecture; paper: DiT-XL + paper-scale VAE")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT and the decoder")
    p.add_argument("--steps", type=int, default=4, help="ping-pong steps of the Presto-LS row")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.repeats, args.seconds, args.device, size=args.size, compile=args.compile, steps=args.steps)
    if args.device.startswith("cuda"):
        dev = f"{args.device} ({torch.cuda.get_device_name(torch.device(args.device))})"
    else:
        dev = f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; torch {torch.__version__}; size {args.size}; compile {args.compile}; "
          f"median of {args.repeats}; audio {args.seconds:g} s")
    print(f"{'component':36s} {'precision':9s} {'frames':>6s} {'median ms':>10s} {'speed-up vs fp32':>17s}")
    for r in rows:
        print(f"{r['name']:36s} {r['precision']:9s} {r['frames']:6d} {1000 * r['seconds']:10.1f} {r['vs_fp32']:16.2f}x")
    for prec, share in m2s_share(rows).items():
        print(f"M2S share of the Presto-LS stereo path, {prec}: {100 * share:.1f}%")
    return 0


def m2s_share(rows: list[dict]) -> dict[str, float]:
    """Per precision: the M2S row's median over the stereo Presto-LS row's (both timed in one run)."""
    out = {}
    for prec in ("fp32", "bf16"):
        m2s = [r["seconds"] for r in rows if r["name"].startswith("M2S") and r["precision"] == prec]
        full = [r["seconds"] for r in rows if r["name"].endswith("stereo") and r["precision"] == prec]
        if m2s and full:
            out[prec] = m2s[0] / full[0]
    return out


if __name__ == "__main__":
    sys.exit(main())

"""Quality and speed evaluation of a Presto model folder: one command writes the table.

    python -m train.eval --model DIR [--heldout CORPUS_DIR] [--variants base,presto-l,presto-s,presto-ls]
        [--num N] [--duration S] [--batch-sizes 1,max] [--max-batch 8] [--repeats 3]
        [--steps NAME=N,...] [--reject-ratio 0.5] [--reject-variant NAME] [--clap-checkpoint PT]
        [--out results.md] [--device cpu]

Quality (paper section 4.1, table 2): each variant is sampled with its own sampler and guidance
from model_index.json at the paper's budgets (table 2: base: DPM-Solver++(2S) + CFG++ at 40 steps =
80 NFE; Presto-L: the same with its drop schedule; Presto-S/LS: ping-pong at 4 steps;
``--steps NAME=N,...`` overrides, e.g. base=16 for the app's interactive default),
one clip per held-out prompt (caption + bpm of
the corpus's "heldout" split, or the model folder's prompts.json), seed ``--seed + i``. Generated
clips and the held-out real audio (first ``--duration`` seconds of each file) are embedded with
the model's CLAP (or a laion-clap checkpoint, ``--clap-checkpoint``, the paper's backbone) and
compared with :mod:`train.evaluation.metrics`: FAD, MMD (x1000), CLAP score (x100, as in the paper),
density, recall, coverage. CLAP rejection (appendix A.10): the same for one variant at
``--reject-ratio``.

Speed (appendix A.6, tables 3-4): median over ``--repeats`` (after one warm-up) of the pipeline's
per-stage timings; mono latency = generation + decoding, RTF = batch * duration / mono latency;
"end-to-end" adds text encoding and CLAP scoring. Batch "max" is the largest batch that runs:
on CUDA found by doubling up to ``--max-batch`` (default 32, the pipeline's candidate limit) until
out of memory; on CPU simply ``--max-batch`` (default 8), stated in the output. Speed-up = base
mono latency / variant mono latency at the same batch size, in the same run.

Writes ``--out`` (Markdown) and the same numbers as JSON beside it (``.json``), with the machine,
torch version, thread count, date and the exact command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from presto_core.clap import num_candidates
from presto_core.clap_laion import LaionClapScorer
from presto_core.pipeline import PrestoPipeline
from presto_core.request import LIMITS
from train.data.dataset import load_mono, read_metadata
from train.evaluation import metrics
from train.evaluation.clips import embed_audio, embed_text, generate_set
from train.evaluation.reporting import command_line, fmt, machine_info, markdown_table, run_reported

QUALITY_COLS = ("fad", "mmd", "clap", "density", "recall", "coverage")
STEREO_COLS = (("m2s_ms", "M2S ms"), ("stereo_latency_ms", "Stereo latency ms"), ("rtf_stereo", "RTF stereo"))
SPEED_COLS = ("generation_ms", "decoding_ms", "mono_latency_ms", "rtf", "total_ms", "rtf_e2e", "speedup")
RANDOM_WEIGHTS_NOTE = ("NOTE: numbers from random-weight (untrained) models are meaningless; "
                       "such runs only check the evaluation plumbing.")


# ---------------------------------------------------------------------------------------------
# Inputs


def heldout_items(corpus: str | None, pipe) -> list[dict]:
    """Prompts to generate for: {prompt, bpm, path or None}, from the corpus's heldout split or
    the model folder's prompts.json (which has no real audio)."""
    if corpus:
        recs = read_metadata(corpus, "heldout")
        if not recs:
            raise SystemExit(f"{corpus}: metadata.jsonl has no items with split 'heldout'")
        return [{"prompt": r["captions"][0], "bpm": r["bpm"], "path": r["abs_path"]} for r in recs]
    items = []
    for p in pipe.prompts:
        if isinstance(p, str):
            items.append({"prompt": p, "bpm": 120.0, "path": None})
        elif isinstance(p, dict) and p.get("prompt"):
            items.append({"prompt": p["prompt"], "bpm": float(p.get("bpm", 120.0)), "path": None})
    if not items:
        raise SystemExit("no prompts: pass --heldout CORPUS_DIR or use a model folder with prompts.json")
    return items


def real_embeddings(scorer, items: list[dict], duration: float, limit: int | None) -> np.ndarray | None:
    """CLAP embeddings (N_real, D) of the first ``duration`` s of each held-out file, or None."""
    paths = [it["path"] for it in items if it["path"]][: limit or None]
    if not paths:
        return None
    sr = int(scorer.sample_rate)
    n = int(round(duration * sr))
    clips = [load_mono(p, sr, 0.0, duration)[:n] for p in paths]
    return embed_audio(scorer, clips, sr)


# ---------------------------------------------------------------------------------------------
# Quality


def quality_row(real: np.ndarray | None, fake: np.ndarray, text: np.ndarray, k: int,
                mmd_bandwidth: float | None) -> dict:
    """All quality metrics of one generated set: fake/text (N, D), real (N_real, D) or None.
    k of the k-NN metrics is lowered to fit small sets (reported as ``k``)."""
    row = {"n": len(fake), "clap": 100.0 * metrics.clap_score(text, fake)}
    if real is None or len(real) < 2 or len(fake) < 2:
        row.update({c: float("nan") for c in ("fad", "mmd", "density", "recall", "coverage")}, k=0)
        return row
    kk = max(1, min(k, len(real) - 1, len(fake) - 1))
    row["fad"] = metrics.frechet_distance(real, fake)
    row["mmd"] = metrics.mmd(real, fake, bandwidth=mmd_bandwidth)
    row.update(metrics.density_coverage(real, fake, k=kk))
    row["recall"] = metrics.precision_recall(real, fake, k=kk)["recall"]
    row["k"] = kk
    return row


# The paper's sampling budgets (table 2): the base model and its layer-dropped versions with
# DPM-Solver++(2S) at 80 NFE (2 model calls per step; CFG's pair counts once), the distilled
# generators with ping-pong at 4 steps.
PAPER_STEPS = {"dpmpp_2s": 40, "pingpong": 4}


def paper_steps(spec, overrides: dict | None = None) -> int:
    """Steps a variant is evaluated at: ``overrides[name]`` if given, else the paper's budget for its
    sampler (PAPER_STEPS: 40 DPM-Solver++(2S) steps, 4 ping-pong steps), else its own default."""
    if overrides and spec.name in overrides:
        return overrides[spec.name]
    return PAPER_STEPS.get(spec.sampler, spec.steps)


# ---------------------------------------------------------------------------------------------
# Speed


def batch_kwargs(batch: int, has_clap: bool) -> dict:
    """num_clips / reject_ratio that make generate() sample exactly ``batch`` candidates: up to
    8 (the clip limit) directly, beyond that through CLAP rejection (needs a CLAP model)."""
    n_max = LIMITS["num_clips"][1]
    if batch <= n_max:
        return {"num_clips": batch, "reject_ratio": 0.0}
    if not has_clap or batch > LIMITS["candidates"][1]:
        raise ValueError(f"batch {batch} > {n_max} needs a CLAP model and at most "
                         f"{LIMITS['candidates'][1]} candidates")
    for n in range(n_max, 0, -1):
        r = math.floor((1 - n / batch) * 1e6) / 1e6
        if r <= LIMITS["reject_ratio"][1] and num_candidates(n, r) == batch:
            return {"num_clips": n, "reject_ratio": r}
    raise ValueError(f"cannot express batch {batch} as num_clips / (1 - reject_ratio)")


def time_once(pipe, variant: str, batch: int, duration: float, prompt: str, steps: int | None = None) -> dict:
    """One generation of ``batch`` clips; per-stage seconds. On CUDA the stage boundaries are
    synchronised through the progress callback so asynchronous kernels are charged correctly."""
    cuda = pipe.device.type == "cuda"
    marks = {}

    def progress(stage, i, n):
        if cuda and (stage != "generation" or i == n):
            torch.cuda.synchronize(pipe.device)
        marks[(stage, i == n)] = time.perf_counter()

    if cuda:
        torch.cuda.synchronize(pipe.device)
    t0 = time.perf_counter()
    res = pipe.generate(prompt=prompt, bpm=120.0, duration=duration, variant=variant, seed=0, steps=steps,
                        progress=progress,
                        **batch_kwargs(batch, pipe.clap is not None))
    if cuda:
        torch.cuda.synchronize(pipe.device)
    t_end = time.perf_counter()
    t = dict(res.timings)
    if cuda:
        dec0 = marks.get(("decoding", False), t0)
        t["decoding"] = marks.get(("clap", False), t_end) - dec0
    t["wall"] = t_end - t0
    t["batch"] = res.settings["candidates"]
    t["kept"] = len(res.clips)
    return t


def fits(pipe, variant: str, batch: int, duration: float, prompt: str, steps: int | None = None) -> bool:
    try:
        time_once(pipe, variant, batch, duration, prompt, steps)
        return True
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return False


def max_batch(pipe, variant: str, cap: int, duration: float, prompt: str, steps: int | None = None) -> int:
    """Largest batch that runs: CPU -> ``cap``; CUDA -> doubling (1, 2, 4, ... cap) until OOM."""
    if pipe.device.type != "cuda":
        return cap
    sizes = [1 << i for i in range(cap.bit_length()) if (1 << i) < cap] + [cap]
    best = 1
    for b in sizes:
        if not fits(pipe, variant, b, duration, prompt, steps):
            break
        best = b
    return best


def speed_row(pipe, variant: str, batch: int, duration: float, repeats: int, prompt: str,
              steps: int | None = None) -> dict:
    """Median (over ``repeats`` after one warm-up) latencies in ms and RTFs of one variant/batch."""
    time_once(pipe, variant, batch, duration, prompt, steps)
    runs = [time_once(pipe, variant, batch, duration, prompt, steps) for _ in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in ("generation", "decoding", "stereo", "total", "wall")}
    mono = statistics.median(r["generation"] + r["decoding"] for r in runs)
    audio_s = batch * duration
    row = {"variant": variant, "batch": batch, "steps": steps, "generation_ms": 1e3 * med["generation"],
           "decoding_ms": 1e3 * med["decoding"], "mono_latency_ms": 1e3 * mono, "rtf": audio_s / mono,
           "total_ms": 1e3 * med["total"], "rtf_e2e": audio_s / med["total"], "repeats": repeats}
    if pipe.has_stereo:
        # M2S widens the kept clips only; beyond 8 candidates (CLAP rejection) that is not the batch.
        whole = runs[0]["kept"] == batch
        stereo = statistics.median(r["generation"] + r["decoding"] + r["stereo"] for r in runs)
        row.update(m2s_ms=1e3 * med["stereo"] if whole else float("nan"),
                   stereo_latency_ms=1e3 * stereo if whole else float("nan"),
                   rtf_stereo=audio_s / stereo if whole else float("nan"))
    return row


# ---------------------------------------------------------------------------------------------
# Report


def render_markdown(report: dict) -> str:
    m, a = report["machine"], report["args"]
    lines = ["# Presto evaluation", ""]
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    lines += [f"- date: {report['date']}",
              f"- command: `{report['command']}`",
              f"- machine: {m.get('gpu', m['cpu'])}" + (f" (host CPU {m['cpu']})" if "gpu" in m else "")
              + f"; torch {m['torch']}; {m['threads']} CPU threads; device {m['device']}",
              f"- model: {a['model']}; held-out: {a['heldout'] or 'none (prompts.json; no real audio)'}; "
              f"N = {a['num']} clips of {a['duration']} s per variant; reference set: {report['n_real']} real clips",
              f"- CLAP backbone: {report['clap_backbone']}", ""]
    lines += ["## Quality", "",
              "FAD and MMD (x1000, Gaussian RBF, bandwidth "
              f"{report['mmd_bandwidth']}) vs the held-out audio (lower is better); CLAP score x100, "
              "density, recall, coverage (higher is better; k-NN k shown)."
              " Each variant with its own sampler and guidance, at the paper's budgets (DPM-Solver++(2S)"
              " 40 steps = 80 NFE, ping-pong 4 steps) unless --steps says otherwise.", ""]
    lines += markdown_table(report["quality"], [("variant", "Variant"), ("sampler", "Sampler"), ("steps", "Steps"),
                            ("reject_ratio", "Reject"), ("n", "N"), ("fad", "FAD ↓"),
                            ("mmd", "MMD ↓"), ("clap", "CLAP ↑"), ("density", "Density ↑"),
                            ("recall", "Recall ↑"), ("coverage", "Coverage ↑"), ("k", "k")])
    if report.get("rejection"):
        r = report["rejection"]
        lines += ["", f"CLAP rejection ({r['variant']}): mean CLAP score x100 {fmt(r['clap_r0'])} at "
                      f"reject_ratio 0 vs {fmt(r['clap_r'])} at {r['reject_ratio']} (row above with Reject > 0)."]
    lines += ["", "## Speed", "",
              "Median of " + str(a["repeats"]) + " runs after one warm-up. Mono latency = generation + decoding "
              "(paper appendix A.6); RTF = batch x duration / mono latency; end-to-end adds text encoding "
              "and CLAP scoring. Speed-up = base mono latency / variant mono latency at the same batch; "
              "e2e speed-up the same for end-to-end time. With a mono-to-stereo component: M2S ms is its own "
              "time, stereo latency = mono latency + M2S and RTF stereo = batch x duration / stereo latency (n/a "
              "where CLAP rejection keeps fewer clips than the batch, as M2S widens only the kept ones).",
              f"Batch 'max': {report['max_batch_note']}", ""]
    stereo_cols = list(STEREO_COLS) if any("m2s_ms" in r for r in report["speed"]) else []
    lines += markdown_table(report["speed"], [("variant", "Variant"), ("steps", "Steps"), ("batch", "Batch"),
                            ("generation_ms", "Generation ms"),
                            ("decoding_ms", "Decoding ms"), ("mono_latency_ms", "Mono latency ms"),
                            ("rtf", "RTF"), *stereo_cols, ("total_ms", "End-to-end ms"), ("rtf_e2e", "RTF e2e"),
                            ("speedup", "Speed-up vs base"), ("speedup_e2e", "e2e speed-up")])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command


def _parse_batches(text: str) -> list:
    out = []
    for tok in text.split(","):
        tok = tok.strip().lower()
        if tok == "max":
            out.append("max")
        elif tok:
            b = int(tok)
            if b < 1:
                raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {b}")
            out.append(b)
    return out


def _parse_steps(text: str) -> dict:
    out = {}
    for tok in text.split(","):
        if tok.strip():
            name, _, n = tok.partition("=")
            try:
                out[name.strip()] = int(n)
            except ValueError:
                raise argparse.ArgumentTypeError(f"--steps takes NAME=INT pairs, got {tok!r}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--heldout", default=None, help="corpus folder whose metadata.jsonl has split 'heldout' items")
    p.add_argument("--variants", default=None, help="comma-separated (default: all in the model folder)")
    p.add_argument("--num", type=int, default=64, help="generated clips per variant (one per held-out prompt)")
    p.add_argument("--num-real", type=int, default=None, help="cap on real reference clips (default: all)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per clip (generated and real)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=_parse_steps, default=None,
                   help="per-variant steps, e.g. 'base=16,presto-ls=2' (default: the paper's budgets, "
                        "40 DPM-Solver++(2S) steps = 80 NFE, 4 ping-pong steps)")
    p.add_argument("--k", type=int, default=5, help="k of density/recall/coverage (lowered for small sets)")
    p.add_argument("--mmd-bandwidth", default="median",
                   help="RBF sigma: 'median' (pooled median distance) or a number (CMMD uses 10)")
    p.add_argument("--reject-ratio", type=float, default=0.5, help="CLAP rejection row; 0 skips it")
    p.add_argument("--reject-variant", default=None, help="variant of the rejection row (default: the last)")
    p.add_argument("--batch-sizes", type=_parse_batches, default=_parse_batches("1,max"))
    p.add_argument("--max-batch", type=int, default=None, help="cap for 'max' (default: 8 on CPU, 32 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per speed row (median)")
    p.add_argument("--speed-duration", type=float, default=None,
                   help="clip seconds for speed rows (default --duration)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--clap-checkpoint", default=None, help="laion-clap .pt to embed with (default: the model's CLAP)")
    p.add_argument("--clap-amodel", default="HTSAT-base", help="laion-clap audio tower (music checkpoints: HTSAT-base)")
    p.add_argument("--clap-fusion", action="store_true")
    p.add_argument("--random-weights", action="store_true", help="label the output as a plumbing check")
    p.add_argument("--out", default="results.md")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def run(args: argparse.Namespace, command: str) -> dict:
    """Evaluate and return the report dict (also written to args.out and its .json)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    pipe = PrestoPipeline.from_pretrained(args.model, device=args.device, precision=args.precision, variants=variants)
    names = pipe.variant_names
    if args.clap_checkpoint:
        scorer = LaionClapScorer(args.clap_checkpoint, amodel=args.clap_amodel, enable_fusion=args.clap_fusion,
                                 device=pipe.device)
        backbone = f"laion-clap {Path(args.clap_checkpoint).name} ({args.clap_amodel})"
        if pipe.clap is None:
            pipe.clap = scorer  # rejection sampling needs some CLAP
    elif pipe.clap is not None:
        scorer, backbone = pipe.clap, "the model folder's embedded CLAP (not the paper's CLAP-LAION)"
    else:
        scorer, backbone = None, "none"
    bw = None if str(args.mmd_bandwidth).lower() == "median" else float(args.mmd_bandwidth)

    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "command": command,
              "machine": machine_info(pipe.device), "args": {k: v for k, v in vars(args).items()},
              "clap_backbone": backbone, "mmd_bandwidth": "median heuristic" if bw is None else bw,
              "quality": [], "rejection": None, "speed": [], "n_real": 0,
              "note": RANDOM_WEIGHTS_NOTE if args.random_weights else None}
    items = heldout_items(args.heldout, pipe)

    if not args.skip_quality:
        if scorer is None:
            raise SystemExit("quality metrics need a CLAP: the model folder has none; pass --clap-checkpoint")
        real = real_embeddings(scorer, items, args.duration, args.num_real)
        report["n_real"] = 0 if real is None else len(real)

        def evaluate(variant, ratio):
            spec = pipe.variants[variant][0]
            steps = paper_steps(spec, args.steps)
            clips, prompts = generate_set(pipe, variant, items, args.num, args.duration, args.seed, ratio, steps)
            fake = embed_audio(scorer, clips, pipe.sample_rate)
            row = quality_row(real, fake, embed_text(scorer, prompts), args.k, bw)
            row.update(variant=variant, sampler=spec.sampler, steps=steps, reject_ratio=ratio)
            return row

        for v in names:
            report["quality"].append(evaluate(v, 0.0))
        if args.reject_ratio > 0 and pipe.clap is not None:
            rv = args.reject_variant or names[-1]
            if rv not in names:
                raise SystemExit(f"--reject-variant {rv!r} is not among the evaluated variants {names}")
            row = evaluate(rv, args.reject_ratio)
            report["quality"].append(row)
            base_row = next(r for r in report["quality"] if r["variant"] == rv and r["reject_ratio"] == 0)
            report["rejection"] = {"variant": rv, "reject_ratio": args.reject_ratio,
                                   "clap_r0": base_row["clap"], "clap_r": row["clap"]}

    if not args.skip_speed:
        cuda = pipe.device.type == "cuda"
        cap = args.max_batch or (32 if cuda else 8)
        if pipe.clap is None:
            cap = min(cap, 8)
        report["max_batch_note"] = (f"largest batch that ran, doubling up to {cap} (pipeline limit 32 candidates)"
                                    if cuda else f"on CPU capped at --max-batch = {cap}, not searched")
        dur = args.speed_duration or args.duration
        prompt = items[0]["prompt"]
        for v in names:
            steps = paper_steps(pipe.variants[v][0], args.steps)
            sizes = []
            for b in args.batch_sizes:
                b = max_batch(pipe, v, cap, dur, prompt, steps) if b == "max" else b
                if b not in sizes:
                    sizes.append(b)
            for b in sizes:
                report["speed"].append(speed_row(pipe, v, b, dur, args.repeats, prompt, steps))
        ref = "base" if "base" in names else names[0]
        base = {r["batch"]: r for r in report["speed"] if r["variant"] == ref}
        for r in report["speed"]:
            b = base.get(r["batch"])
            r["speedup"] = b["mono_latency_ms"] / r["mono_latency_ms"] if b else float("nan")
            r["speedup_e2e"] = b["total_ms"] / r["total_ms"] if b else float("nan")
        report["speedup_reference"] = ref
    else:
        report["max_batch_note"] = "speed skipped"

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str, allow_nan=True))
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.num < 1 or args.repeats < 1:
        raise SystemExit("--num and --repeats must be >= 1")
    report = run_reported(run, args, command_line("python -m train.eval", argv))
    if report is None:
        return 2
    print(render_markdown(report))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a fine-tuned adapter does: the plain and the adapted model side by side on the person's
held-out files and on the original corpus's held-out pieces, and what it costs in latency.

    python -m train.adapter_report --model MODEL --adapter DIR[:WEIGHT] --data DATA --corpus CORPUS
        [--variant presto-ls] [--num 16] [--duration 10] [--seed 0] [--repeats 5]
        [--markdown OUT.md] [--json OUT.json] [--device cpu]

For each held-out set (DATA = python -m train.data.ingest's output, CORPUS = the training corpus)
and each model (plain, adapted), ``--num`` clips of ``--duration`` s are generated with
``--variant``, one per held-out prompt (caption + BPM, cycling), seeds ``--seed + i`` (the same
seeds for both models). Real references: up to three consecutive ``--duration`` crops per held-out
file. All audio is embedded with the model folder's CLAP. Per row:

- FAD: Frechet distance between the generated and the real embeddings of that set (lower is
  closer to that set's sound);
- CLAP score: mean cosine of each clip with its prompt, x100 (also of the set's real crops with
  their own captions: what this CLAP gives the real thing); when the adapter taught the CLAP their
  captions (``finetune.clap_captions``), also with the adapter's CLAP, for plain and adapted clips alike;
- theirs: share of generated clips whose nearest real crop (cosine, over both sets pooled) is one
  of the person's, i.e. how often a clip sounds more like their music than the corpus;
- tempo: share within 4 % of the requested BPM (strict) and allowing double/half time.

Latency: median over ``--repeats`` (after one warm-up, interleaved) of one ``--duration`` s
generation with ``--variant``, plain and adapted at the given weight, in the same process.
Bad arguments print one error line and exit with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from presto_core.adapters import parse_adapter_arg
from presto_core.errors import PrestoError
from presto_core.pipeline import PrestoPipeline
from train.data.augment import rms_normalize
from train.evaluation import metrics
from train.evaluation.clips import embed_audio, embed_text, generate_set, heldout_records, real_crops
from train.evaluation.tempo import measure_tempo, strict_match, tempo_match


def measure_set(scorer, sr: int, clips: list[np.ndarray], prompts: list[str], bpms: list[float],
                real: np.ndarray, theirs: np.ndarray, judge=None) -> dict:
    """The row's measures (see the module doc) of mono ``clips`` at ``sr``: ``real`` (M, D) is this
    set's real embeddings, ``theirs`` = (pooled real embeddings (P, D), bool (P,) true for the person's);
    ``judge``, the adapter's CLAP (same audio tower, its own text tower), adds ``clap_score_adapter``."""
    gen = embed_audio(scorer, [rms_normalize(c) for c in clips], sr)
    text = embed_text(scorer, prompts)
    extra = {} if judge is None else {"clap_score_adapter": 100 * metrics.clap_score(embed_text(judge, prompts), gen)}
    pooled, mask = theirs
    g = gen / np.linalg.norm(gen, axis=1, keepdims=True)
    p = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    nearest = (g @ p.T).argmax(axis=1)
    tempos = [measure_tempo(c, sr, start_bpm=b) for c, b in zip(clips, bpms)]
    return {"fad": metrics.frechet_distance(real, gen), "clap_score": 100 * metrics.clap_score(text, gen),
            "theirs": float(mask[nearest].mean()),
            "tempo_strict": float(np.mean([strict_match(t, b) for t, b in zip(tempos, bpms)])),
            "tempo_octave_ok": float(np.mean([tempo_match(t, b) != "MISMATCH" for t, b in zip(tempos, bpms)])),
            **extra}


def latency(pipes: dict, variant: str, duration: float, repeats: int) -> dict:
    """Median seconds of one generation per pipeline (one warm-up each, runs interleaved)."""
    times: dict[str, list[float]] = {k: [] for k in pipes}
    for r in range(repeats + 1):
        for name, pipe in pipes.items():
            t = time.perf_counter()
            pipe.generate(prompt="latency probe", bpm=110.0, duration=duration, variant=variant, seed=r, stereo=False)
            if r:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def build_report(a) -> dict:
    path, weight = parse_adapter_arg(a.adapter)
    plain = PrestoPipeline.from_pretrained(a.model, device=a.device, precision=a.precision)
    adapted = PrestoPipeline.from_pretrained(a.model, device=a.device, precision=a.precision,
                                             adapters=[(path, weight)])
    if plain.clap is None:
        raise PrestoError(f"{a.model} has no CLAP component to embed with")
    variant = a.variant or plain.default_variant
    scorer, sr = plain.clap, plain.sample_rate
    sets = {"theirs": heldout_records(a.data), "corpus": heldout_records(a.corpus)}
    crops = {k: real_crops(v, sr, a.duration) for k, v in sets.items()}
    real = {k: embed_audio(scorer, c, sr) for k, (c, _) in crops.items()}
    # What the CLAP makes of each set's own audio and captions: the ceiling a CLAP score can be read
    # against (a CLAP that never heard a style scores even the real thing low).
    def real_clap(judge) -> dict:
        return {k: 100 * metrics.clap_score(embed_text(judge, caps), real[k]) for k, (_, caps) in crops.items()}

    # An adapter that taught the CLAP their captions judges with it too (the audio tower is the
    # plain one, so only the text side differs and every clip is heard the same way).
    judge = adapted.clap if any("clap" in ad.factors for ad, _ in adapted.adapters) else None
    real_scores = {"real_clap_score": real_clap(scorer),
                   **({"real_clap_score_adapter": real_clap(judge)} if judge is not None else {})}
    pooled = (np.concatenate([real["theirs"], real["corpus"]]),
              np.r_[np.ones(len(real["theirs"]), bool), np.zeros(len(real["corpus"]), bool)])
    rows = {}
    for set_name, items in sets.items():
        for model_name, pipe in (("plain", plain), ("adapted", adapted)):
            clips, prompts = generate_set(pipe, variant, items, a.num, a.duration, a.seed)
            bpms = [items[i % len(items)]["bpm"] for i in range(a.num)]
            rows[f"{set_name}/{model_name}"] = measure_set(scorer, sr, clips, prompts, bpms, real[set_name], pooled,
                                                           judge)
    lat = latency({"plain": plain, "adapted": adapted}, variant, a.duration, a.repeats)
    meta = json.loads((Path(path) / "adapter.json").read_text())
    return {"rows": rows, "latency_s": lat, "variant": variant, "adapter": str(path), "weight": weight,
            "adapter_bytes": sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()),
            "training": meta.get("training", {}), **real_scores, "real_crops": {k: len(v) for k, v in real.items()},
            "num": a.num, "duration": a.duration, "seed": a.seed, "model": str(a.model),
            "date": dt.date.today().isoformat(), "command": " ".join(["python -m train.adapter_report"] + sys.argv[1:])}


def markdown(rep: dict) -> str:
    lines = [f"# Adapter report: {rep['adapter']} (weight {rep['weight']:g}) on {rep['model']}, variant {rep['variant']}",
             "", f"{rep['num']} clips of {rep['duration']:g} s per row, seeds {rep['seed']}+i; real crops: "
             f"{rep['real_crops']['theirs']} of the person's held-out files, {rep['real_crops']['corpus']} of the corpus's. "
             f"{rep['date']}, `{rep['command']}`", "",
             "| held-out set | model | FAD (lower: closer to the set) | CLAP score x100 | CLAP score x100, the adapter's CLAP "
             "| nearest real is theirs | tempo strict | tempo incl. 2x/0.5x |",
             "|---|---|---|---|---|---|---|---|"]
    ad_real = rep.get("real_clap_score_adapter", {})
    for key, r in rep["rows"].items():
        s, m = key.split("/")
        ad = f"{r['clap_score_adapter']:.1f}" if "clap_score_adapter" in r else "(none)"
        lines.append(f"| {s} | {m} | {r['fad']:.3f} | {r['clap_score']:.1f} | {ad} | {100 * r['theirs']:.0f}% | "
                     f"{100 * r['tempo_strict']:.0f}% | {100 * r['tempo_octave_ok']:.0f}% |")
        if m == "adapted" and s in rep.get("real_clap_score", {}):
            ad = f"{ad_real[s]:.1f}" if s in ad_real else "(none)"
            lines.append(f"| {s} | real held-out audio | | {rep['real_clap_score'][s]:.1f} | {ad} | | | |")
    t, c = rep["rows"], rep["latency_s"]
    lines += ["", f"FAD on their audio, adapted / plain: {t['theirs/adapted']['fad'] / t['theirs/plain']['fad']:.2f}x; "
              f"on the corpus: {t['corpus/adapted']['fad'] / t['corpus/plain']['fad']:.2f}x.",
              f"Latency of one {rep['duration']:g} s {rep['variant']} clip (median): plain {c['plain']:.3f} s, "
              f"adapted {c['adapted']:.3f} s ({c['adapted'] / c['plain']:.2f}x). Adapter size: "
              f"{rep['adapter_bytes'] / 1e6:.2f} MB."]
    tr = rep.get("training", {})
    if tr.get("heldout_dsm_loss"):
        lines.append(f"Held-out DSM loss of the base on their audio: {json.dumps(tr['heldout_dsm_loss'])} "
                     f"({tr.get('steps')} steps, base {tr.get('base_steps')}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.adapter_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", required=True, metavar="DIR[:WEIGHT]")
    p.add_argument("--data", required=True, help="the person's dataset (train.data.ingest output)")
    p.add_argument("--corpus", required=True, help="the training corpus")
    p.add_argument("--variant", default=None)
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--markdown", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    a = p.parse_args(argv)
    try:
        if a.num < 2 or a.repeats < 1 or not 1 <= a.duration <= 32:
            raise PrestoError("need --num >= 2, --repeats >= 1 and --duration in [1, 32]")
        rep = build_report(a)
    except PrestoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown(rep)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

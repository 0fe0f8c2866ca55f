"""Measured report of a Presto model folder on a corpus's held-out pieces: VAE reconstruction,
tempo adherence of generated samples and CLAP retrieval, as Markdown tables (and JSON).

    python -m train.report --model MODEL_DIR --corpus CORPUS_DIR [--variant base] [--num N]
        [--duration S] [--steps K] [--seed 0] [--json OUT.json] [--markdown OUT.md] [--figure OUT.png]
        [--device cpu]

1. VAE reconstruction: one crop of ``--vae-seconds`` (default 8) per held-out piece (split
   "heldout" of CORPUS_DIR/metadata.jsonl), starting 4 s in (earlier if the piece is short),
   loudness-normalised to -20 dBFS like training, encoded to the posterior mean and decoded.
   Multi-resolution STFT distance (lower is better) and SI-SDR (dB, higher is better), mean and
   per piece. Two references scored the same way: the input low-passed at 4 kHz (a band-limited
   but otherwise perfect codec) and another held-out piece in place of the reconstruction (chance).
   Chroma correlation with the input (train/evaluation/pitch.py) says whether the notes survive.
2. Tempo adherence: ``--num`` clips (default 16) of ``--duration`` s (default 10) with
   ``--variant``, one per held-out prompt (first caption and labelled BPM, cycling), seeds
   ``--seed + i``; tempo measured by librosa's estimator (train.data.inspect_corpus). Rows: the
   clips against their requested BPM; the same clips against every *other* prompt's BPM (chance:
   the agreement a model that ignores BPM gets); the real held-out audio (crops of the same length)
   against its label (the tracker's own accuracy) and against the other labels. "ok" = within 4 %,
   "octave" = at 1/2x or 2x; the error is |measured / target - 1| after folding octaves.
   Pitch content: tonal clarity (train/evaluation/pitch.py) of the generated clips, of real held-out crops,
   of the VAE's reconstructions and of white noise: rhythmic noise scores near the noise row.
   Notes and beat: onsets per second, clearly sounding pitch classes, beat salience and tonal
   clarity of the generated clips beside real held-out crops and white noise; strict tempo
   accuracy (no octave folding) per BPM band of the request, with the share heard double or half.
3. CLAP retrieval with the model folder's CLAP: text -> audio top-1 / top-5 over the held-out
   pieces (one ``--clap-seconds`` crop each, default 10; first caption, and the mean over the
   caption phrasings) and over the generated clips (prompt -> its clip, one clip per distinct
   prompt); chance k / N beside. All audio is loudness-normalised as in CLAP training.
4. Stereo, when the folder has a mono-to-stereo component: width (side / mid energy) quartiles and
   left/right correlation of the generated clips widened by it, of the real held-out crops (a
   stereo corpus) and of their mids widened by it, with its side MR-STFT against the real side.

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
import soundfile as sf
import torch

from presto_core.audio import mrstft_distance, si_sdr, write_wav
from presto_core.adapters import parse_adapter_arg
from presto_core.errors import PrestoError, check_number
from presto_core.pipeline import PrestoPipeline
from presto_core.request import LIMITS
from train.data.augment import rms_normalize
from train.data.dataset import load_audio
from train.evaluation.clips import (CROP_START_S, TARGET_DB, clamp_bpm, embed_audio, embed_text, generate_set,
                                    heldout_records, load_crop)
from train.evaluation.figure import comparison_figure
from train.evaluation.grid import grid_section
from train.evaluation.pitch import chroma_correlation, tonal_clarity
from train.evaluation.reporting import command_line, fmt, machine_info, markdown_table, run_reported
from train.evaluation.retrieval import retrieval_accuracy
from train.evaluation.stereo import stereo_scores, width_summary
from train.evaluation.notes import onsets_per_second, pitch_class_count
from train.evaluation.tempo import BANDS, band_name, beat_salience, measure_tempo, strict_match, tempo_match

LOWPASS_HZ = 4000.0
OCTAVES = (0.5, 1.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Inputs


def normalized(clips: list[np.ndarray]) -> list[np.ndarray]:
    """Clips RMS-normalised to the training loudness (what CLAP was trained on)."""
    return [rms_normalize(c, TARGET_DB) for c in clips]


# ---------------------------------------------------------------------------------------------
# 1. VAE reconstruction


def lowpass(x: torch.Tensor, sample_rate: int, cutoff_hz: float = LOWPASS_HZ) -> torch.Tensor:
    """(..., N) waveforms with every FFT bin above ``cutoff_hz`` zeroed; same shape."""
    spec = torch.fft.rfft(x.double())
    spec[..., torch.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate) > cutoff_hz] = 0
    return torch.fft.irfft(spec, n=x.shape[-1]).to(x.dtype)


def pair_metrics(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """Mean per-clip multi-resolution STFT distance, SI-SDR (dB) and chroma correlation
    (train/evaluation/pitch.py: 1 = same notes) of (K, 1, N) estimates against their references."""
    pairs = list(zip(estimate, reference))
    return {"mrstft": statistics.fmean(float(mrstft_distance(e, r)) for e, r in pairs),
            "si_sdr": statistics.fmean(float(si_sdr(e[0], r[0])) for e, r in pairs),
            "chroma": statistics.fmean(chroma_correlation(e[0].numpy(), r[0].numpy(), sample_rate) for e, r in pairs)}


def vae_section(vae, items: list[dict], seconds: float) -> dict:
    """Posterior-mean reconstruction metrics of one crop per held-out item, with two references."""
    sr, hop = vae.cfg.sample_rate, vae.cfg.hop
    n = int(round(seconds * sr)) // hop * hop
    if n < hop:
        raise PrestoError(f"--vae-seconds {seconds} is shorter than one latent frame ({hop / sr:.3f} s)")
    clips = torch.stack([torch.from_numpy(load_crop(it["path"], sr, seconds)[:n]) for it in items])[:, None]
    device = next(vae.parameters()).device
    with torch.no_grad():  # one encode/decode per piece, shared by the metrics and the pitch section
        means = [vae.encode(clips[i: i + 1].to(device))[0].float() for i in range(len(items))]
        recons = torch.cat([vae.decode(m)[..., :n].float().cpu() for m in means])
    pieces = [{"path": it["path"], **pair_metrics(recons[i: i + 1], clips[i: i + 1], sr),
               "latent_std": float(means[i].std())} for i, it in enumerate(items)]
    rows = [{"name": "VAE (posterior mean)",
             **{k: statistics.fmean(p[k] for p in pieces) for k in ("mrstft", "si_sdr", "chroma")}},
            {"name": f"reference: input low-passed at {LOWPASS_HZ / 1000:g} kHz",
             **pair_metrics(lowpass(clips, sr), clips, sr)}]
    other = (pair_metrics(clips.roll(1, 0), clips, sr) if len(items) > 1
             else {"mrstft": None, "si_sdr": None, "chroma": None})
    rows.append({"name": "reference: another held-out piece (chance)", **other})
    clarity = {"input": mean_clarity([c[0].numpy() for c in clips], sr)["clarity"],
               "reconstruction": mean_clarity([r[0].numpy() for r in recons], sr)["clarity"]}
    return {"seconds": n / sr, "sample_rate": sr, "rows": rows, "pieces": pieces, "clarity": clarity}


def mean_clarity(clips: list[np.ndarray], sample_rate: int) -> dict:
    """{"n": clips that are not silent, "clarity": their mean tonal clarity (None if all are silent)}."""
    values = []
    for c in clips:
        try:
            values.append(tonal_clarity(c, sample_rate))
        except ValueError:  # silent: no pitch to measure
            pass
    return {"n": len(values), "clarity": statistics.fmean(values) if values else None}


def pitch_section(clips: list[np.ndarray], items: list[dict], seconds: float, sample_rate: int,
                  vae_clarity: dict) -> dict:
    """Tonal clarity (train/evaluation/pitch.py: 1/12 = noise) of the generated clips beside real held-out
    crops of the same length, the VAE's reconstructions of them, and white noise."""
    real = [load_crop(it["path"], sample_rate, seconds) for it in items]
    noise = np.random.default_rng(0).standard_normal(int(seconds * sample_rate)).astype(np.float32)
    rows = [{"name": name, **mean_clarity(group, sample_rate)} for name, group in
            (("generated clips", clips), ("real held-out audio", real), ("white noise", [noise]))]
    rows[2:2] = [{"name": "VAE reconstructions of real audio (VAE crops)", "n": len(items),
                  "clarity": vae_clarity["reconstruction"]},
                 {"name": "VAE inputs (same crops)", "n": len(items), "clarity": vae_clarity["input"]}]
    return {"rows": rows}


def _mean_of(fn, clips: list[np.ndarray], sample_rate: int) -> float | None:
    """Mean of ``fn(clip, sample_rate)`` over the clips it can measure (silent ones raise ValueError)."""
    values = []
    for c in clips:
        try:
            values.append(float(fn(c, sample_rate)))
        except ValueError:
            pass
    return statistics.fmean(values) if values else None


def notes_section(clips: list[np.ndarray], items: list[dict], seconds: float, sample_rate: int) -> dict:
    """Note and beat content (train/evaluation/notes.py, tempo.beat_salience) of the generated clips
    beside real held-out crops of the same length and white noise, plus generated / real ratios."""
    real = [load_crop(it["path"], sample_rate, seconds) for it in items]
    noise = [np.random.default_rng(0).standard_normal(int(seconds * sample_rate)).astype(np.float32)]
    measures = (("onsets_per_s", onsets_per_second), ("pitch_classes", pitch_class_count),
                ("beat_salience", beat_salience), ("clarity", tonal_clarity))
    rows = [{"name": name, "n": len(group), **{k: _mean_of(fn, group, sample_rate) for k, fn in measures}}
            for name, group in (("generated clips", clips), ("real held-out audio", real), ("white noise", noise))]
    ratio = {k: (rows[0][k] / rows[1][k] if rows[0][k] is not None and rows[1][k] else None) for k, _ in measures}
    return {"rows": rows, "generated_over_real": ratio}


# ---------------------------------------------------------------------------------------------
# 2. Tempo adherence


def octave_error(measured: float, target: float) -> float:
    """|measured / target - 1| for the closest of target x 1/2, 1, 2 (a tracker's octave ambiguity)."""
    return min(abs(measured / (target * k) - 1.0) for k in OCTAVES)


def tempo_stats(pairs: list[tuple[float, float]]) -> dict:
    """Agreement of (measured, target) BPM pairs: n, fraction "ok", fraction "ok" or "octave"
    (train.evaluation.tempo.tempo_match) and the median octave-folded relative error."""
    if not pairs:
        return {"n": 0, "ok": None, "ok_or_octave": None, "median_error": None}
    matches = [tempo_match(m, t) for m, t in pairs]
    return {"n": len(pairs), "ok": matches.count("ok") / len(pairs),
            "ok_or_octave": (matches.count("ok") + matches.count("octave")) / len(pairs),
            "median_error": statistics.median(octave_error(m, t) for m, t in pairs)}


def band_rows(name: str, pairs: list[tuple[float, float]]) -> list[dict]:
    """Strict tempo accuracy (within 4 % of the target itself, no octave folding) of (measured,
    target) pairs, for all of them and per BPM band of the target (train.evaluation.tempo.BANDS)."""
    groups: dict[str, list[tuple[float, float]]] = {"all": list(pairs)}
    for m, t in pairs:
        groups.setdefault(band_name(t), []).append((m, t))
    order = ["all"] + [f"{lo:g}-{hi:g}" for lo, hi in BANDS]
    return [{"name": name, "band": b, "n": len(groups[b]),
             "strict": sum(strict_match(m, t) for m, t in groups[b]) / len(groups[b]),
             "double": sum(strict_match(m, 2 * t) for m, t in groups[b]) / len(groups[b]),
             "half": sum(strict_match(m, t / 2) for m, t in groups[b]) / len(groups[b])}
            for b in order if groups.get(b)]


def chance_pairs(measured: list[float], owners: list[int], bpms: list[float]) -> list[tuple[float, float]]:
    """Each measured tempo against the BPM of every item other than its own (``owners[i]`` indexes
    ``bpms``): the exact mean over all mismatched assignments, not one random permutation."""
    return [(m, bpms[b]) for m, a in zip(measured, owners) for b in range(len(bpms)) if b != a]


def measure_all(clips: list[np.ndarray], sample_rate: int) -> list[float]:
    """Measured tempo (BPM) of each clip."""
    return [measure_tempo(c, sample_rate) for c in clips]


def tempo_section(pipe, items: list[dict], clips: list[np.ndarray], duration: float, seed: int) -> dict:
    """Tempo rows for generated ``clips`` (clip i for ``items[i % len(items)]``, seed + i) and the
    real held-out audio cropped to ``duration`` s; per-clip measurements beside."""
    sr = pipe.sample_rate
    owners = [i % len(items) for i in range(len(clips))]
    requested = [clamp_bpm(it["bpm"]) for it in items]
    labels = [it["bpm"] for it in items]
    gen = measure_all(clips, sr)
    real = measure_all([load_crop(it["path"], sr, duration) for it in items], sr)
    own = list(range(len(items)))
    rows = [
        {"name": "generated vs requested BPM", **tempo_stats([(m, requested[a]) for m, a in zip(gen, owners)])},
        {"name": "generated vs other prompts' BPM (chance)", **tempo_stats(chance_pairs(gen, owners, requested))},
        {"name": "real held-out vs labelled BPM (tracker)", **tempo_stats(list(zip(real, labels)))},
        {"name": "real held-out vs other labels (chance)", **tempo_stats(chance_pairs(real, own, labels))},
    ]
    bands = (band_rows("generated vs requested BPM", [(m, requested[a]) for m, a in zip(gen, owners)])
             + band_rows("real held-out vs labelled BPM (tracker)", list(zip(real, labels))))
    generated = [{"prompt": items[a]["prompt"], "seed": seed + i, "requested_bpm": requested[a], "measured_bpm": m,
                  "match": tempo_match(m, requested[a])} for i, (m, a) in enumerate(zip(gen, owners))]
    heldout = [{"path": it["path"], "bpm": it["bpm"], "measured_bpm": m, "match": tempo_match(m, it["bpm"])}
               for it, m in zip(items, real)]
    return {"rows": rows, "bands": bands, "generated": generated, "heldout": heldout}


# ---------------------------------------------------------------------------------------------
# 3. CLAP retrieval


def retrieval_row(name: str, text_emb: np.ndarray, audio_emb: np.ndarray) -> dict:
    """Text -> audio top-1/top-5 over N matching (N, D) pairs, with the chance levels 1/N and min(5, N)/N."""
    n = len(text_emb)
    acc = retrieval_accuracy(torch.from_numpy(text_emb), torch.from_numpy(audio_emb))
    return {"name": name, "n": n, "top1": acc["top1"], "chance1": 1.0 / n, "top5": acc["top5"],
            "chance5": min(5, n) / n}


def first_of_each(prompts: list[str]) -> list[int]:
    """Index of the first occurrence of each distinct prompt, in order."""
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        seen.setdefault(p, i)
    return list(seen.values())


def clap_section(scorer, items: list[dict], seconds: float, clips: list[np.ndarray], prompts: list[str],
                 sample_rate: int) -> dict:
    """Retrieval rows: held-out pieces by first caption and by every phrasing (mean), and the
    generated ``clips`` (at ``sample_rate``) by their ``prompts``."""
    sr = int(scorer.sample_rate)
    audio = embed_audio(scorer, [load_crop(it["path"], sr, seconds) for it in items], sr)
    rows = [retrieval_row("held-out pieces, first caption", embed_text(scorer, [it["prompt"] for it in items]), audio)]
    phrasings = max(len(it["captions"]) for it in items)
    if phrasings > 1:
        per = [retrieval_row("", embed_text(scorer, [it["captions"][c % len(it["captions"])] for it in items]), audio)
               for c in range(phrasings)]
        rows.append({**per[0], "name": f"held-out pieces, mean over {phrasings} caption phrasings",
                     "top1": statistics.fmean(r["top1"] for r in per),
                     "top5": statistics.fmean(r["top5"] for r in per)})
    keep = first_of_each(prompts)
    rows.append(retrieval_row("generated clips, prompt -> its clip",
                              embed_text(scorer, [prompts[i] for i in keep]),
                              embed_audio(scorer, normalized([clips[i] for i in keep]), sample_rate)))
    return {"seconds": seconds, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Report


def check_args(args: argparse.Namespace) -> None:
    """Range checks that fail before any model runs; PrestoError names the option and range."""
    check_number("--num", args.num, 1, 1024, integer=True)
    check_number("--duration", args.duration, *LIMITS["duration"])
    if args.steps is not None:
        check_number("--steps", args.steps, *LIMITS["steps"], integer=True)
    check_number("--seed", args.seed, LIMITS["seed"][0], LIMITS["seed"][1] - args.num + 1, integer=True)
    check_number("--vae-seconds", args.vae_seconds, 0.05, 60.0)
    check_number("--clap-seconds", args.clap_seconds, 0.5, 60.0)
    if args.grid_seconds:
        check_number("--grid-seconds", args.grid_seconds, 8.0, LIMITS["duration"][1])


def figure_rows(items: list[dict], clips: list[np.ndarray], sample_rate: int, seconds: float,
                limit: int = 8) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(genre, real crop, generated clip) for the first held-out piece of each genre (clip i was
    generated for items[i]), at most ``limit`` genres."""
    rows, seen = [], set()
    for i, it in enumerate(items[: len(clips)]):
        if it["genre"] in seen or len(rows) >= limit:
            continue
        seen.add(it["genre"])
        rows.append((f"{it['genre']} {it['bpm']:g} BPM", load_crop(it["path"], sample_rate, seconds), clips[i]))
    return rows


def save_clips(folder: str, clips: list[np.ndarray], prompts: list[str], items: list[dict], sample_rate: int,
               seed: int) -> None:
    """Write generated clip i as FOLDER/clip-ii.wav (16-bit) with its prompt, BPM and seed in the
    WAV comment, so the report's numbers can be checked by ear."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for i, (clip, prompt) in enumerate(zip(clips, prompts)):
        bpm = clamp_bpm(items[i % len(items)]["bpm"])
        write_wav(Path(folder) / f"clip-{i:02d}.wav", clip, sample_rate, {"prompt": prompt, "bpm": bpm, "seed": seed + i})


def run(args: argparse.Namespace, command: str) -> dict:
    """Measure every section and return the report dict (see :func:`render_markdown`)."""
    check_args(args)
    items = heldout_records(args.corpus)
    adapters = [parse_adapter_arg(a) for a in args.adapter or []]
    pipe = PrestoPipeline.from_pretrained(args.model, device=args.device, precision=args.precision,
                                          variants=[args.variant], adapters=adapters)
    spec = pipe.variants[args.variant][0]
    steps = args.steps or spec.steps
    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "command": command,
              "machine": machine_info(pipe.device), "model": args.model, "corpus": args.corpus,
              "adapters": pipe.adapter_settings().get("adapters", []),
              "variant": args.variant, "sampler": spec.sampler, "steps": steps,
              "guidance": f"{spec.guidance_kind} {spec.guidance_scale:g}",
              "precision": str(pipe.autocast_dtype or "fp32").removeprefix("torch."),
              "num": args.num, "duration": args.duration, "seed": args.seed, "n_heldout": len(items),
              "timings_s": {}}
    timings = report["timings_s"]

    t = time.perf_counter()
    report["vae"] = vae_section(pipe.vae, items, args.vae_seconds)
    timings["vae"] = time.perf_counter() - t

    t = time.perf_counter()
    clips, prompts = generate_set(pipe, args.variant, items, args.num, args.duration, args.seed, steps=steps)
    timings["generation"] = time.perf_counter() - t
    if args.audio_dir:
        save_clips(args.audio_dir, clips, prompts, items, pipe.sample_rate, args.seed)

    report["pitch"] = pitch_section(clips, items, args.duration, pipe.sample_rate, report["vae"]["clarity"])
    if args.figure:
        report["figure"] = str(comparison_figure(figure_rows(items, clips, pipe.sample_rate, args.duration),
                                                 pipe.sample_rate, args.figure))
    t = time.perf_counter()
    report["notes"] = notes_section(clips, items, args.duration, pipe.sample_rate)
    timings["notes"] = time.perf_counter() - t

    t = time.perf_counter()
    report["tempo"] = tempo_section(pipe, items, clips, args.duration, args.seed)
    timings["tempo"] = time.perf_counter() - t

    t = time.perf_counter()
    report["clap"] = (None if pipe.clap is None
                      else clap_section(pipe.clap, items, args.clap_seconds, clips, prompts, pipe.sample_rate))
    timings["clap"] = time.perf_counter() - t

    t = time.perf_counter()
    report["stereo"] = stereo_section(pipe, items, clips, args.duration)
    timings["stereo"] = time.perf_counter() - t

    if args.grid_seconds:
        t = time.perf_counter()
        report["grid"] = grid_section(pipe, args.variant, items, args.num, min(args.grid_seconds, pipe.max_duration),
                                      args.seed, steps=steps)
        timings["grid"] = time.perf_counter() - t
    return report


def stereo_section(pipe, items: list[dict], clips: list[np.ndarray], seconds: float) -> dict | None:
    """Width and channel correlation of the generated clips widened by the folder's M2S, of real
    held-out stereo crops (when the corpus is stereo) and of M2S applied to those crops' mids
    (side MR-STFT against the real side); None without an m2s component."""
    if not pipe.has_stereo:
        return None
    sr = pipe.sample_rate
    n = int(round(seconds * sr))
    widened = pipe.widen(torch.from_numpy(np.stack([c[:n] for c in clips]))).cpu()
    out = {"rows": [{"name": f"generated ({len(clips)} clips), widened", **width_summary(widened, "")}],
           "seconds": seconds}
    stereo = [it for it in items if sf.info(it["path"]).channels == 2]
    if stereo:
        real = torch.from_numpy(np.stack([load_audio(it["path"], sr, min(CROP_START_S, max(
            0.0, sf.info(it["path"]).duration - seconds)), seconds, channels=2)[:, :n] for it in stereo]))
        scores = stereo_scores(pipe.m2s, real.to(pipe.device))
        out["rows"].append({"name": f"real held-out ({len(stereo)} pieces)", **width_summary(real, "")})
        out["rows"].append({"name": "real held-out mids, widened", "width_median": scores["pred_width_median"],
                            "width_q1": scores["pred_width_q1"], "width_q3": scores["pred_width_q3"],
                            "correlation_median": scores["pred_correlation_median"]})
        out["side_mrstft"] = scores["side_mrstft"]
        out["generated_over_real_width"] = out["rows"][0]["width_median"] / max(out["rows"][1]["width_median"], 1e-12)
    return out


def render_markdown(report: dict) -> str:
    """The report as Markdown: header, then one table per section."""
    m, t = report["machine"], report["timings_s"]
    lines = ["# Presto model report", "",
             f"- command: `{report['command']}`",
             f"- date: {report['date']}",
             f"- model: {report['model']}; variant {report['variant']}: {report['sampler']} at {report['steps']} "
             f"steps, guidance {report['guidance']}, precision {report['precision']}"
             + "".join(f"; adapter {a['name']} at {a['weight']:g} (sha256 {str(a['sha256'])[:12]})"
                       for a in report.get("adapters", [])),
             f"- corpus: {report['corpus']} ({report['n_heldout']} held-out pieces)",
             f"- machine: {m.get('gpu', m['cpu'])}; torch {m['torch']}; {m['threads']} CPU threads; "
             f"device {m['device']}",
             "- wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), ""]
    v = report["vae"]
    lines += ["## VAE reconstruction on held-out audio", "",
              f"One {v['seconds']:g} s crop per held-out piece at {v['sample_rate']} Hz, -20 dBFS, posterior mean. "
              "MR-STFT distance: lower is better; SI-SDR: higher is better.", ""]
    lines += markdown_table(v["rows"], [("name", "Reconstruction"), ("mrstft", "MR-STFT ↓"), ("si_sdr", "SI-SDR dB ↑"),
                                        ("chroma", "Chroma corr. ↑")])
    lines += ["", "## Pitch content", "",
              "Tonal clarity: mean over frames of the largest pitch-class share of the chroma (1/12 = 0.083 for "
              "a flat spectrum; notes and chords score higher). Chroma correlation above: 1 = the same notes as "
              "the input, about 0 = unrelated.", ""]
    lines += markdown_table(report["pitch"]["rows"], [("name", "Audio"), ("n", "Clips"), ("clarity", "Tonal clarity")])
    notes = report["notes"]
    lines += ["", "## Notes and beat", "",
              "Onsets per second (librosa's onset detector), pitch classes that sound clearly (constant-Q chroma; "
              "train/evaluation/notes.py), beat salience (normalised onset autocorrelation at the strongest beat "
              "period, 40-240 BPM) and tonal clarity, averaged over clips. The last row is generated / real.", ""]
    cols = [("name", "Audio"), ("n", "Clips"), ("onsets_per_s", "Onsets / s"), ("pitch_classes", "Pitch classes"),
            ("beat_salience", "Beat salience"), ("clarity", "Tonal clarity")]
    ratio = {k: ("undefined (real = 0)" if v is None else v) for k, v in notes["generated_over_real"].items()}
    lines += markdown_table(notes["rows"] + [{"name": "generated / real", "n": "", **ratio}], cols)
    lines += ["", "## Tempo adherence of generated samples", "",
              f"{report['num']} clips of {report['duration']:g} s (seeds {report['seed']} to "
              f"{report['seed'] + report['num'] - 1}), tempo by librosa's estimator. ok: within 4 %; "
              "octave: 1/2x or 2x; error: median |measured / target - 1| after folding octaves. "
              "Chance rows score each clip against every other prompt's BPM.", ""]
    lines += markdown_table(report["tempo"]["rows"], [("name", "Clips vs target"), ("n", "Pairs"), ("ok", "ok"),
                                              ("ok_or_octave", "ok or octave"), ("median_error", "Median error")])
    lines += ["", "Strict tempo by BPM band of the target: within 4 % of the target itself (no octave folding); "
              "double / half: within 4 % of twice / half the target.", ""]
    lines += markdown_table(report["tempo"]["bands"], [("name", "Clips vs target"), ("band", "BPM band"), ("n", "Clips"),
                                                       ("strict", "Strict ok"), ("double", "Heard double"),
                                                       ("half", "Heard half")])
    lines += ["", "## CLAP retrieval (text -> audio)", ""]
    if report["clap"] is None:
        lines += ["The model folder has no CLAP component; skipped."]
    else:
        lines += [f"Held-out pieces: one {report['clap']['seconds']:g} s crop each. Generated: one clip per "
                  "distinct prompt. Chance = k / N.", ""]
        lines += markdown_table(report["clap"]["rows"], [("name", "Queries -> clips"), ("n", "N"), ("top1", "Top-1"),
                                                 ("chance1", "Chance top-1"), ("top5", "Top-5"),
                                                 ("chance5", "Chance top-5")])
    st = report.get("stereo")
    lines += ["", "## Stereo (mono-to-stereo)", ""]
    if st is None:
        lines += ["The model folder has no mono-to-stereo component; its clips are mono."]
    else:
        lines += [f"Width = side energy / mid energy (0 = mono, 1 = uncorrelated channels); quartiles over "
                  f"{st['seconds']:g} s clips, and the median left/right correlation.", ""]
        lines += markdown_table(st["rows"], [("name", "Audio"), ("width_q1", "Width Q1"),
                                             ("width_median", "Width median"), ("width_q3", "Width Q3"),
                                             ("correlation_median", "L/R correlation")])
        if "side_mrstft" in st:
            lines += ["", f"Generated / real median width: {fmt(st['generated_over_real_width'])}. M2S side "
                      f"MR-STFT against the real side of the held-out crops: {fmt(st['side_mrstft'])}."]
    g = report.get("grid")
    if g is not None:
        lines += ["", "## Beat grid over one window", "",
                  f"One clip of {g['seconds']:g} s per prompt, and each held-out piece's first {g['seconds']:g} s. "
                  "Drift: the bar pattern of each quarter against the first's (ms; a steady grid reads about 0). "
                  "Offset: where the beats fall against beats at the asked BPM from the clip's first sample "
                  "(ms, within half a beat); on the grid: |offset| under 50 ms. Medians over clips.", ""]
        lines += markdown_table(g["rows"], [("name", "Audio"), ("n", "Clips"), ("max_drift_ms", "Max drift ms"),
                                            ("end_drift_ms", "End drift ms"), ("abs_offset_ms", "|Offset| ms"),
                                            ("on_grid", "On the grid")])
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--corpus", required=True, help="corpus folder whose metadata.jsonl has split 'heldout' items")
    p.add_argument("--variant", default="base", help="variant that generates (default: base)")
    p.add_argument("--adapter", action="append", default=[], metavar="DIR[:WEIGHT]",
                   help="serve with this adapter (python -m train.finetune) at WEIGHT in [0, 2] (default 1); "
                        "repeatable. --corpus may be python -m train.data.ingest's output: the person's "
                        "held-out files. For plain and adapted side by side: python -m train.adapter_report")
    p.add_argument("--num", type=int, default=16, help="generated clips (one per held-out prompt, cycling)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per generated clip")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the variant's)")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i")
    p.add_argument("--vae-seconds", type=float, default=8.0, help="VAE crop length per held-out piece")
    p.add_argument("--clap-seconds", type=float, default=10.0, help="CLAP crop length per held-out piece")
    p.add_argument("--grid-seconds", type=float, default=0.0,
                   help="also measure beat drift and grid phase on one clip of this length per prompt (0: skip)")
    p.add_argument("--json", default=None, help="also write the numbers as JSON here")
    p.add_argument("--markdown", default=None, help="also write the printed report here")
    p.add_argument("--audio-dir", default=None, help="also write the generated clips here as WAV files")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="also write spectrograms of one real held-out piece per genre beside its generated clip")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    return p


def write_outputs(report: dict, json_path: str | None, md_path: str | None) -> list[Path]:
    """Write the JSON and/or Markdown files asked for; returns their paths."""
    out = []
    for path, text in ((json_path, lambda: json.dumps(report, indent=2)), (md_path, lambda: render_markdown(report))):
        if path:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text())
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    report = run_reported(run, args, command_line("python -m train.report", argv))
    if report is None:
        return 2
    print(render_markdown(report))
    for p in write_outputs(report, args.json, args.markdown):
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measured report of extend, replace-bars and loops on a model folder: seams, beat drift, CLAP
drift over long pieces, unchanged samples and wall time, as Markdown (and JSON).

    python -m train.edit_report --model MODEL_DIR --corpus CORPUS_DIR [--num 4] [--total 180]
        [--variant presto-ls] [--seed 0] [--lengths 30,60,120,180] [--json OUT] [--markdown OUT]

For each of ``--num`` held-out prompts of CORPUS (first caption, labelled BPM, 4/4):

1. **Extend**: a 4-bar seed clip, extended to the most whole bars within ``--total`` seconds
   (stereo when the model can). Seam score at the window joins against the ordinary bar lines
   of the same piece (train/evaluation/seams.py), beat-phase drift per 20 s at the asked BPM
   (beside it the same measure over one window-long clip, in quarters: the model's own wander
   with no join), and the CLAP score of each window's new audio (first, last, lowest).
2. **Replace bars**: bars 5..6 of the extended piece from the same prompt, and two bars in its
   middle; seam score at the two boundaries of each against the piece's other bar lines, and
   whether every sample outside the bars and their fades is unchanged. Bar 5 starts where the
   4-bar seed clip was extended (an extension join), so the unedited piece is also measured at
   those boundaries: what the edit found there; the middle bars are away from any seed join.
3. **Loops**: an 8-bar clip (fewer if 8 do not fit the window) made to loop
   (``pipe.make_loop``), played twice: the seam score at the loop point against the bar lines
   inside; beside it the same clip cut and crossfaded (presto_core.music.loop_on_bars, 10 ms)
   and simply repeated.

Then wall time of extending the first seed clip to each of ``--lengths`` seconds, stereo,
median of ``--repeats``, and the process's peak resident memory during each length (reset
between lengths: memory stays flat when it does not grow with the length). Bad arguments print one error line and exit with status 2.
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
import torch

from presto_core.errors import check_number
from presto_core.music import bar_seconds, loop_on_bars
from presto_core.pipeline import PrestoPipeline
from train.evaluation.clips import clamp_bpm, heldout_records
from train.evaluation.reporting import command_line, machine_info, markdown_table, run_reported
from train.evaluation.grid import ON_GRID_MS, segment_offsets_ms
from train.evaluation.seams import beat_phase_drift, onset_envelope, pooled_ratio, seam_jumps

TS = "4/4"
SEED_BARS = 4
LOOP_BARS = 8
DRIFT_SEGMENT_S = 20.0  # beat drift per segment of this length (a quarter of shorter pieces)


def _mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def _bar_lines(n_bars: int, bar_s: float) -> list[float]:
    return [k * bar_s for k in range(1, n_bars)]


def extend_row(pipe, item: dict, seed: int, total: float, variant: str, strength, ramp_ms=None) -> tuple[dict, np.ndarray]:
    bpm = clamp_bpm(item["bpm"])
    bar_s = bar_seconds(bpm, TS)
    seed_clip = pipe.generate(prompt=item["prompt"], bpm=bpm, duration=min(SEED_BARS * bar_s, pipe.max_duration),
                              seed=seed, variant=variant)
    src = seed_clip.clips[0].audio
    have = int(np.floor((_mono(src).size + 0.5) / (bar_s * pipe.sample_rate) + 1e-9))
    add = int(np.floor(total / bar_s + 1e-9)) - have
    t0 = time.perf_counter()
    res = pipe.extend(src, pipe.sample_rate, bars=add, prompt=item["prompt"], bpm=bpm, seed=seed + 1000,
                      variant=variant, strength=strength, ramp_ms=ramp_ms)
    wall = time.perf_counter() - t0
    mono = _mono(res.clips[0].audio)
    joins = [w["join_s"] for w in res.windows]
    n_bars = have + add
    seams = seam_jumps(mono, pipe.sample_rate, joins, _bar_lines(n_bars, bar_s))
    seg_s = min(DRIFT_SEGMENT_S, mono.size / pipe.sample_rate / 4)
    env = onset_envelope(mono, pipe.sample_rate)  # both beat measures read the same envelope
    drift = beat_phase_drift(mono, pipe.sample_rate, bpm, segment_s=seg_s, env=env)
    # Where each segment's beats fall against the asked grid from the first sample: drift says the
    # grid moved, this says whether the beats are still on the grid the windows were given.
    offsets = segment_offsets_ms(mono, pipe.sample_rate, bpm, seg_s, env=env)
    claps = [w["clap"] for w in res.windows if w["clap"] is not None]
    # The same measure inside one window, where no join can move the beat: the model's own wander.
    one = pipe.generate(prompt=item["prompt"], bpm=bpm, duration=pipe.max_duration, seed=seed, variant=variant,
                        stereo=False).clips[0].audio
    window_drift = beat_phase_drift(one, pipe.sample_rate, bpm, segment_s=pipe.max_duration / 4)["max_drift_ms"]
    return {"prompt": item["prompt"], "bpm": bpm, "seconds": mono.size / pipe.sample_rate, "windows": len(joins),
            "wall_s": wall, "extend": seams,
            "max_drift_ms": drift["max_drift_ms"], "end_drift_ms": drift["end_drift_ms"],
            "drift_ms": drift["drift_ms"], "window_drift_ms": window_drift, "offsets_ms": offsets,
            "end_offset_ms": offsets[-1], "on_grid": float(np.mean(np.abs(offsets) < ON_GRID_MS)),
            "clap_first": claps[0] if claps else None,
            "clap_last": claps[-1] if claps else None, "clap_min": min(claps) if claps else None,
            "_piece": res.clips[0].audio}, src


def inpaint_row(pipe, item: dict, src: np.ndarray, seed: int, variant: str, strength, ramp_ms=None) -> dict:
    """Replace bars 5..6 of the extended piece ``src`` (where the seed clip's extension join is) and
    two bars in its middle (away from it), from the same prompt; seams at both boundaries of each,
    the unedited piece at bars 5..6's boundaries (what was there before), and whether every sample
    outside the bars and their fades is unchanged."""
    bpm = clamp_bpm(item["bpm"])
    bar_s = bar_seconds(bpm, TS)
    sr = pipe.sample_rate
    n_bars = int(np.floor((src.shape[-1] + 0.5) / (bar_s * sr) + 1e-9))
    mid = n_bars // 2 + 1
    spans = {"inpaint": (5, 6), "inpaint_mid": (mid, mid + 1)}
    out_row, unchanged = {}, True
    for key, (a, b) in spans.items():
        res = pipe.inpaint(src, sr, bars=(a, b), prompt=item["prompt"], bpm=bpm, seed=seed + 2000, variant=variant,
                           strength=strength, ramp_ms=ramp_ms)
        out = res.clips[0].audio
        fade = int(round(res.settings["crossfade_ms"] * sr / 1000))
        lo, hi = int(round((a - 1) * bar_s * sr)), int(round(b * bar_s * sr))
        outside = np.ones(src.shape[-1], dtype=bool)
        outside[lo - fade:hi + fade] = False
        unchanged &= bool(np.array_equal(out[..., outside], src[..., outside]))
        out_row[key] = seam_jumps(_mono(out), sr, [(a - 1) * bar_s, b * bar_s], _bar_lines(n_bars, bar_s))
    a, b = spans["inpaint"]
    out_row["inpaint_before"] = seam_jumps(_mono(src), sr, [(a - 1) * bar_s, b * bar_s], _bar_lines(n_bars, bar_s))
    return {"unchanged_outside": unchanged, **out_row}


def loop_row(pipe, item: dict, seed: int, variant: str, strength, ramp_ms=None) -> dict:
    bpm = clamp_bpm(item["bpm"])
    bar_s = bar_seconds(bpm, TS)
    bars = max(1, min(LOOP_BARS, int(np.floor(pipe.max_duration / bar_s + 1e-9))))
    plain_loop = pipe.generate(prompt=item["prompt"], bpm=bpm, duration=bars * bar_s, seed=seed + 3000,
                               variant=variant, stereo=False).clips[0].audio
    made = pipe.make_loop(plain_loop, pipe.sample_rate, prompt=item["prompt"], bpm=bpm, bars=bars, seed=seed,
                          variant=variant, stereo=False, strength=strength, ramp_ms=ramp_ms)
    plain = pipe.generate(prompt=item["prompt"], bpm=bpm, duration=min(pipe.max_duration, (bars + 0.5) * bar_s),
                          seed=seed + 3000, variant=variant, stereo=False)
    cut, _ = loop_on_bars(plain.clips[0].audio, pipe.sample_rate, bpm, TS, bars, 10.0)
    row = {"loop_bars": bars}
    for name, clip in (("made", made.clips[0].audio), ("cut", cut), ("plain", plain_loop)):
        twice = np.concatenate([clip, clip])
        seam = clip.size / pipe.sample_rate
        row[f"loop_{name}"] = seam_jumps(twice, pipe.sample_rate, [seam], _bar_lines(2 * bars, bar_s))
    return row


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux: clear_refs 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def scaling_rows(pipe, item: dict, src: np.ndarray, lengths: list[float], repeats: int, variant: str) -> list[dict]:
    bpm = clamp_bpm(item["bpm"])
    bar_s = bar_seconds(bpm, TS)
    have = int(np.floor((_mono(src).size + 0.5) / (bar_s * pipe.sample_rate) + 1e-9))
    rows = []
    for total in lengths:
        add = int(np.floor(total / bar_s + 1e-9)) - have
        times, res = [], None
        can_reset = _reset_peak_rss()
        for r in range(repeats):
            t0 = time.perf_counter()
            res = pipe.extend(src, pipe.sample_rate, bars=add, prompt=item["prompt"], bpm=bpm, seed=r,
                              variant=variant)
            times.append(time.perf_counter() - t0)
        seconds = _mono(res.clips[0].audio).size / pipe.sample_rate
        med = statistics.median(times)
        rows.append({"seconds": seconds, "windows": len(res.windows), "stereo": res.settings["stereo"],
                     "wall_s": med, "per_minute_s": med / seconds * 60,
                     "peak_rss_mb": _peak_rss_mb() if can_reset else None})
    return rows


def run(args, command: str) -> dict:
    num = check_number("--num", args.num, 1, 64, integer=True)
    total = check_number("--total", args.total, 10, 180)
    lengths = [check_number("--lengths", float(v), 10, 180) for v in args.lengths.split(",") if v.strip()]
    pipe = PrestoPipeline.from_pretrained(args.model, device=args.device, precision=args.precision)
    variant = args.variant or pipe.default_variant
    items = heldout_records(args.corpus)[:num]
    t0 = time.perf_counter()
    rows = []
    first_src = None
    for i, item in enumerate(items):
        row, src = extend_row(pipe, item, args.seed + i, total, variant, args.extend_strength, args.ramp_ms)
        first_src = src if first_src is None else first_src
        row.update(inpaint_row(pipe, item, row.pop("_piece"), args.seed + i, variant, args.replace_strength,
                               args.ramp_ms))
        row.update(loop_row(pipe, item, args.seed + i, variant, args.loop_strength, args.ramp_ms))
        rows.append(row)
    scaling = scaling_rows(pipe, items[0], first_src, lengths, args.repeats, variant)
    return {"command": command, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "model": args.model, "variant": variant, "machine": machine_info(pipe.device),
            "stereo": pipe.has_stereo, "rows": rows, "scaling": scaling,
            "wall_s": time.perf_counter() - t0}


def render_markdown(rep: dict) -> str:
    m = rep["machine"]
    rows = rep["rows"]
    lines = ["# Editing report", "", f"- command: `{rep['command']}`", f"- date: {rep['date']}",
             f"- model: {rep['model']}; variant {rep['variant']}; {'stereo' if rep['stereo'] else 'mono'}",
             f"- machine: {m.get('cpu')}; torch {m.get('torch')}; {m.get('threads')} CPU threads; "
             f"device {m.get('device')}", f"- wall time: {rep['wall_s']:.0f} s", "",
             "## Seams", "",
             "Mean spectral flux and loudness jump (dB) at the seams, over the same at the ordinary bar lines "
             "of the same audio (1 = a seam is like any bar line; target <= 1.2), with a 90 % bootstrap interval "
             "over prompts; 'share over bar p90': the seams whose flux exceeds 90 % of the bar lines' (0.1 = "
             "like bar lines).", ""]
    summary = []
    for name, key in (("extend: window joins", "extend"),
                      ("replace bars 5..6 (on the seed clip's join): both boundaries", "inpaint"),
                      ("the same boundaries before the edit", "inpaint_before"),
                      ("replace 2 bars in the middle of the piece: both boundaries", "inpaint_mid"),
                      ("loop, made to loop: loop point", "loop_made"),
                      ("loop, cut and crossfaded (10 ms): loop point", "loop_cut"),
                      ("loop, the plain clip repeated: loop point", "loop_plain")):
        r = pooled_ratio([row[key] for row in rows])
        summary.append({"name": name, **r})
    for r in summary:
        for k in ("flux", "loudness_db"):
            r[f"{k}_ci"] = f"{r[f'{k}_ratio_lo']:.2f}-{r[f'{k}_ratio_hi']:.2f}"
    lines += markdown_table(summary, [("name", "Seams"), ("seams", "N"), ("bar_lines", "Bar lines"),
                                      ("flux_ratio", "Flux ratio"), ("flux_ci", "90 % interval"),
                                      ("flux_above_p90", "Share over bar p90"),
                                      ("loudness_db_ratio", "Loudness-jump ratio"), ("loudness_db_ci", "90 % interval"),
                                      ("flux_seam", "Flux at seams"), ("flux_bars", "Flux at bar lines"),
                                      ("loudness_db_seam", "dB at seams"), ("loudness_db_bars", "dB at bar lines")])
    rep["summary"] = summary
    lines += ["", "## Long pieces", "",
              "Beat drift: change of the beat-grid phase at the asked BPM from the first 20 s segment (ms); "
              "'one window, no joins': the same over one window-long clip in quarters. Offset: where each "
              f"segment's beats fall against beats at the asked BPM from the first sample; on the grid: the "
              f"segments within {ON_GRID_MS:g} ms. "
              "CLAP: the score of each window's new audio against the prompt.", ""]
    med = {k: float(np.median([r[k] for r in rows])) for k in ("max_drift_ms", "end_drift_ms", "window_drift_ms")}
    med["on_grid"] = float(np.mean([r["on_grid"] for r in rows]))  # over pieces, each its share of segments
    lines += [f"Medians over {len(rows)} pieces: max drift {med['max_drift_ms']:.1f} ms, end drift "
              f"{med['end_drift_ms']:.1f} ms, one window {med['window_drift_ms']:.1f} ms; segments on the grid "
              f"{med['on_grid']:.0%}.", ""]
    rep["long_summary"] = med
    lines += markdown_table(rows, [("prompt", "Prompt"), ("bpm", "BPM"), ("seconds", "Seconds"),
                                   ("windows", "Windows"), ("wall_s", "Wall s"), ("max_drift_ms", "Max drift ms"),
                                   ("end_drift_ms", "End drift ms"), ("window_drift_ms", "One window, no joins: ms"),
                                   ("end_offset_ms", "End offset ms"), ("on_grid", "On the grid"), ("clap_first", "CLAP first"),
                                   ("clap_last", "CLAP last"), ("clap_min", "CLAP min"),
                                   ("unchanged_outside", "Replace: outside unchanged")])
    lines += ["", "## Wall time by length", "", "Extending the first seed clip, median of repeats.", ""]
    lines += markdown_table(rep["scaling"], [("seconds", "Seconds"), ("windows", "Windows"), ("stereo", "Stereo"),
                                             ("wall_s", "Wall s"), ("per_minute_s", "s per minute of audio"),
                                             ("peak_rss_mb", "Peak RSS MB (reset per length)")])
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.edit_report", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--corpus", required=True, help="corpus folder whose metadata.jsonl has split 'heldout' items")
    p.add_argument("--variant", default=None, help="variant (default: the model's)")
    p.add_argument("--num", type=int, default=4, help="held-out prompts")
    p.add_argument("--total", type=float, default=180.0, help="seconds each seed clip is extended to [10, 180]")
    p.add_argument("--lengths", default="30,60,120,180", help="lengths (s) timed for the scaling table")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extend-strength", type=float, default=None, help="(default: the library's)")
    p.add_argument("--replace-strength", type=float, default=None, help="(default: the library's)")
    p.add_argument("--loop-strength", type=float, default=None, help="(default: the library's)")
    p.add_argument("--ramp-ms", type=float, default=None,
                   help="latent crossfade at each boundary, ms [0, 1000] (default: the library's)")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    with torch.no_grad():  # scoped: main() also runs inside other processes (tests)
        rep = run_reported(run, args, command_line("python -m train.edit_report", argv))
    if rep is None:
        return 2
    text = render_markdown(rep)
    print(text)
    for path, body in ((args.json, lambda: json.dumps(rep, indent=2, default=float)), (args.markdown, lambda: text)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(body())
    return 0


if __name__ == "__main__":
    sys.exit(main())

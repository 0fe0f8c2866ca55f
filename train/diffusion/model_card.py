"""The model card (README.md) of a model folder: hub metadata, what each component was trained on
and for how long, the variants and how they sample, measured numbers when an evaluation report is
given, and the model's limits."""

from __future__ import annotations

import json
from pathlib import Path

from presto_core import checkpoint as ckpt
from train.data.dataset import read_metadata

CARD = "README.md"

LIMITS = (
    "Trained only on this project's procedurally arranged MIDI corpus rendered with a General MIDI "
    "soundfont (FluidSynth): it knows those instruments and genres, not recorded music, vocals or lyrics.",
    "Output is mono at the VAE's sample rate, at most `max_duration` seconds per clip.",
    "Prompts are read by the frozen text encoder named in `model_index.json`; words the corpus captions "
    "never use have little effect.",
    "Tempo is a condition, not a guarantee: check the tempo figures of `train.report` for the BPM band you use.",
)


def corpus_summary(root: str | Path | None) -> dict | None:
    """Pieces per split, hours and genres of a dataset folder (None when it cannot be read)."""
    if not root:
        return None
    try:
        records = read_metadata(root, None)
    except (OSError, ValueError):
        return None
    splits: dict[str, int] = {}
    for r in records:
        splits[r["split"]] = splits.get(r["split"], 0) + 1
    seconds = sum(float(r.get("duration") or 0.0) for r in records)
    genres = sorted({r["genre"] for r in records if r.get("genre")})
    return {"root": str(root), "pieces": splits, "hours": seconds / 3600 if seconds else None, "genres": genres}


def _fmt(v, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _guidance(spec: dict) -> str:
    g = spec.get("guidance") or {"kind": "none"}
    return "none" if g.get("kind", "none") == "none" else f"{g['kind']} w={_fmt(float(g.get('scale', 0.0)))}"


def _results_lines(results: dict) -> list[str]:
    """The quality and speed rows of a ``train.eval`` report (its JSON)."""
    lines = [f"Measured by `{results.get('command', 'python -m train.eval')}` on {results.get('date', '?')} "
             f"({(results.get('machine') or {}).get('cpu', '?')}, {(results.get('machine') or {}).get('threads', '?')} "
             "threads):", "", "| variant | sampler, steps | reject ratio | FAD | CLAP x100 |", "|---|---|---|---|---|"]
    for row in results.get("quality", []):
        lines.append(f"| {row['variant']} | {row['sampler']}, {row['steps']} | {row.get('reject_ratio', 0)} | "
                     f"{_fmt(row.get('fad'))} | {_fmt(row.get('clap'), 3)} |")
    speed = [r for r in results.get("speed", []) if r.get("batch") == 1]
    if speed:
        lines += ["", "| variant | mono latency, batch 1 (ms) | speed-up |", "|---|---|---|"]
        lines += [f"| {r['variant']} | {r['mono_latency_ms']:.0f} | {r.get('speedup', 1.0):.1f}x |" for r in speed]
    return lines


def render_model_card(folder: str | Path, corpus: dict | None = None, results: dict | None = None,
                      notes: list[str] | tuple = ()) -> str:
    """Markdown of the card for the model folder ``folder`` (its model_index.json must exist); ``notes``
    are measured weaknesses added to the limits."""
    folder = Path(folder)
    index = ckpt.read_index(folder)
    name = folder.name
    out = ["---", "library_name: presto", "pipeline_tag: text-to-audio",
           "tags: [music, text-to-music, diffusion, distillation, presto]", "---", "",
           f"# {name}", "",
           "A Presto text-to-music model folder (EDM latent diffusion transformer conditioned on text and BPM, "
           "with the distilled variants of *Presto! Distilling Steps and Layers for Accelerating Music "
           "Generation*). Load it with `PrestoPipeline.from_pretrained(\"<this folder or hub id>\")`.", "",
           "## Components", "", "| component | kind | parameters | trained steps | stage |", "|---|---|---|---|---|"]
    for comp, entry in index["components"].items():
        data = ckpt.read_component_config(folder / entry["path"])
        meta = data.get("meta") or {}
        params = _param_count(folder / entry["path"] / ckpt.WEIGHTS)
        out.append(f"| {comp} | {data['kind']} | {params / 1e6:.1f}M | {meta.get('step', '?')} | "
                   f"{meta.get('stage', meta.get('method', comp))} |")
    out += ["", "## Variants", "", "| variant | component | sampler | steps | guidance | drop schedule |",
            "|---|---|---|---|---|---|"]
    for vname, spec in index["variants"].items():
        mark = " (default)" if vname == index["default_variant"] else ""
        out.append(f"| {vname}{mark} | {spec['component']} | {spec['sampler']} | {spec['steps']} | {_guidance(spec)} | "
                   f"{spec.get('drop_schedule') or '-'} |")
    out += ["", "## Training data", ""]
    if corpus:
        hours = f", {corpus['hours']:.2f} hours" if corpus.get("hours") else ""
        pieces = ", ".join(f"{n} {s}" for s, n in sorted(corpus["pieces"].items()))
        out.append(f"Corpus `{corpus['root']}`: {pieces} pieces{hours}.")
        if corpus.get("genres"):
            out.append(f"Genres: {', '.join(corpus['genres'])}.")
    else:
        out.append("Not recorded at export time.")
    out += ["", "## Measured", ""]
    if results:
        out += _results_lines(results)
    else:
        out.append("Not evaluated at export time: `python -m train.eval --model <this folder> --heldout <corpus> "
                   "--out results.md` measures FAD, CLAP score and latency of every variant.")
    out += ["", "## Limits", ""] + [f"- {line}" for line in (*LIMITS, *notes)]
    out.append(f"- At most {_fmt(float(index.get('max_duration', 32.0)))} s per clip at "
               f"{index.get('sample_rate', '?')} Hz.")
    return "\n".join(out) + "\n"


def _param_count(weights: Path) -> int:
    """Number of stored elements of a safetensors file, read from its header only."""
    with open(weights, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    total = 0
    for key, t in header.items():
        if key == "__metadata__" or key.endswith(ckpt.SCALE_SUFFIX):
            continue
        count = 1
        for d in t["shape"]:
            count *= d
        total += count
    return total


def write_model_card(folder: str | Path, corpus: dict | None = None, results: dict | None = None,
                     notes: list[str] | tuple = ()) -> Path:
    """Write ``folder/README.md`` (see :func:`render_model_card`)."""
    path = Path(folder) / CARD
    path.write_text(render_model_card(folder, corpus, results, notes))
    return path

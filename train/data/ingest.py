"""Turn a folder of a person's own audio into a training dataset (the format of train/data/dataset.py).

    python -m train.data.ingest DIR --out DATA [--sidecar FILE] [--sample-rate 44100] [--channels 2]
        [--clip-seconds 32] [--min-seconds 4] [--heldout 0.1] [--lufs -18] [--seed 0]

Every WAV, FLAC, OGG and MP3 under DIR (nested folders too, any rate, mono or stereo) is read,
resampled, mixed to ``--channels``, normalised to ``--lufs`` integrated loudness (ITU-R BS.1770, by
pyloudnorm; peaks kept under -1 dBFS) and split into clips of at most ``--clip-seconds`` (a tail
shorter than ``--min-seconds`` is dropped). Its BPM comes from a sidecar table, else from librosa's
tempo estimate; its caption from a sidecar table, else from its tags, else from its folder and file
names (train/data/ingest_labels.py); one line per file says which. Whole files, not clips, are held
out (``--heldout`` of them, at least one when there are two or more), so no held-out clip shares a
recording with a training clip.

Unreadable, silent and too-short files are skipped with one line each; a summary ends the run.
Each clip is written atomically and each finished file is recorded in DATA/ingest-state.jsonl
before the next starts, so an interrupted run, re-run, keeps what it wrote and redoes only the
files it had not finished (or that changed since). Exit status: 0 with at least one clip, 1 when
nothing usable was found, 2 for bad arguments or a bad sidecar table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from presto_core.audio import resample
from presto_core.checkpoint import atomic_write_bytes
from train.data.ingest_labels import (
    caption_from_names, caption_from_tags, estimate_bpm, find_sidecar, read_sidecar, sidecar_row,
)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
STATE = "ingest-state.jsonl"
SILENT_LUFS = -70.0  # below this a file (or a clip) is taken for silence
PEAK = 10 ** (-1.0 / 20)  # -1 dBFS


@dataclass(frozen=True)
class IngestConfig:
    """Options of one ingest run (see the module doc)."""

    sample_rate: int = 44100
    channels: int = 2
    clip_seconds: float = 32.0
    min_seconds: float = 4.0
    heldout: float = 0.1
    lufs: float = -18.0
    seed: int = 0

    def __post_init__(self):
        if self.channels not in (1, 2):
            raise ValueError(f"--channels must be 1 or 2, got {self.channels}")
        if not 8000 <= self.sample_rate <= 192000:
            raise ValueError(f"--sample-rate must be 8000-192000 Hz, got {self.sample_rate}")
        if not 0.5 <= self.min_seconds <= self.clip_seconds <= 600:
            raise ValueError(f"need 0.5 <= --min-seconds <= --clip-seconds <= 600, got {self.min_seconds}, "
                             f"{self.clip_seconds}")
        if not 0.0 <= self.heldout < 1.0:
            raise ValueError(f"--heldout must be in [0, 1), got {self.heldout}")
        if not -40.0 <= self.lufs <= -6.0:
            raise ValueError(f"--lufs must be -40 to -6, got {self.lufs}")


class Skip(Exception):
    """A file that gives no clips; the message is the one-line reason."""


def find_audio(root: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files under ``root`` (recursively, sorted), leaving out anything under ``exclude``."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            if exclude is not None and exclude.resolve() in p.resolve().parents:
                continue
            out.append(p)
    return out


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """float32 (C, N) audio and its rate; Skip("unreadable ...") for a file nothing can decode."""
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)  # libsndfile: WAV, FLAC, OGG, MP3
    except Exception as first:  # noqa: BLE001 - fall back to librosa/audioread for odd encodings
        try:
            import librosa

            with warnings.catch_warnings():  # librosa warns before trying audioread; the skip line says it
                warnings.simplefilter("ignore")
                wav, sr = librosa.load(str(path), sr=None, mono=False)
            wav = np.atleast_2d(wav).T
        except Exception:  # noqa: BLE001
            raise Skip(f"unreadable ({' '.join(str(first).split())[:120]})") from None
    return np.ascontiguousarray(wav.T, dtype=np.float32), int(sr)


def loudness(wav: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS) of (C, N) audio; -inf for silence or audio under 0.4 s."""
    import pyloudnorm

    if wav.shape[-1] < int(0.4 * sample_rate):
        return -math.inf
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(wav.T.astype(np.float64)))


def prepare(wav: np.ndarray, sr: int, cfg: IngestConfig) -> np.ndarray:
    """(C, N) at ``sr`` -> (channels, M) at cfg.sample_rate, at cfg.lufs with peaks under -1 dBFS.
    Skip for audio shorter than cfg.min_seconds or silent."""
    seconds = wav.shape[-1] / sr
    if seconds < cfg.min_seconds:
        raise Skip(f"too short ({seconds:.1f} s < --min-seconds {cfg.min_seconds:g})")
    if not np.isfinite(wav).all():
        raise Skip("unreadable (samples that are not finite numbers)")
    wav = wav.mean(axis=0, keepdims=True) if (cfg.channels == 1 or wav.shape[0] > 2) else wav
    if cfg.channels == 2 and wav.shape[0] == 1:
        wav = np.repeat(wav, 2, axis=0)
    wav = resample(wav, sr, cfg.sample_rate)
    level = loudness(wav, cfg.sample_rate)
    if not level > SILENT_LUFS:
        raise Skip(f"silent ({level:.0f} LUFS)")
    wav = wav * 10 ** ((cfg.lufs - level) / 20)
    peak = float(np.abs(wav).max())
    return (wav * (PEAK / peak) if peak > PEAK else wav).astype(np.float32)


def split_clips(wav: np.ndarray, cfg: IngestConfig) -> list[tuple[float, np.ndarray]]:
    """Consecutive (start seconds, clip) pieces of at most clip_seconds; a tail under min_seconds
    and silent pieces are dropped."""
    n, hop = wav.shape[-1], int(round(cfg.clip_seconds * cfg.sample_rate))
    out = []
    for a in range(0, n, hop):
        clip = wav[:, a: a + hop]
        if clip.shape[-1] < cfg.min_seconds * cfg.sample_rate:
            continue
        if loudness(clip, cfg.sample_rate) > SILENT_LUFS:
            out.append((a / cfg.sample_rate, clip))
    return out


def write_flac(path: Path, clip: np.ndarray, sample_rate: int) -> None:
    """(C, N) float32 -> 24-bit FLAC at ``path``, atomically (a crash leaves no half file)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, clip.T, sample_rate, format="FLAC", subtype="PCM_24")
    atomic_write_bytes(path, buf.getvalue())


def ingest_file(path: Path, rel: str, out: Path, rows: dict, cfg: IngestConfig) -> dict:
    """One source file -> its state record (clips written under out/audio). Raises Skip."""
    wav, sr = read_audio(path)
    wav = prepare(wav, sr, cfg)
    row = sidecar_row(rows, rel)
    if "bpm" in row:
        bpm, bpm_source = row["bpm"], "sidecar"
    else:
        bpm, bpm_source = estimate_bpm(wav.mean(axis=0), cfg.sample_rate), "estimate"
        if bpm is None:
            raise Skip("no BPM (no onsets to estimate one from; give it in a sidecar table)")
    caption, caption_source = row.get("caption"), "sidecar"
    if not caption:
        caption, caption_source = caption_from_tags(path), "tags"
    if not caption:
        caption, caption_source = caption_from_names(rel), "names"
    clips = split_clips(wav, cfg)
    if not clips:
        raise Skip("silent (no clip of --min-seconds above silence)")
    stem = hashlib.sha1(rel.encode()).hexdigest()[:12]
    written = []
    for k, (start, clip) in enumerate(clips):
        name = f"audio/{stem}-{k:03d}.flac"
        write_flac(out / name, clip, cfg.sample_rate)
        written.append({"path": name, "start_s": round(start, 3), "duration": round(clip.shape[-1] / cfg.sample_rate, 3)})
    return {"caption": caption, "caption_source": caption_source, "bpm": float(bpm), "bpm_source": bpm_source,
            "clips": written}


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_state(out: Path) -> dict[str, dict]:
    """Finished files of earlier runs: {relative source path: state record} (a torn last line is ignored)."""
    records = {}
    path = out / STATE
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[rec["source"]] = rec
    return records


def _reusable(rec: dict | None, path: Path, out: Path, cfg: IngestConfig) -> bool:
    return (rec is not None and rec.get("fingerprint") == _fingerprint(path) and rec.get("config") == cfg.__dict__
            and all((out / c["path"]).is_file() for c in rec.get("clips", [])))


def heldout_sources(sources: list[str], fraction: float, seed: int) -> set[str]:
    """The files held out: ``fraction`` of them (at least one of two or more), chosen by a hash of
    (seed, path) so that the choice does not depend on the order files were found in."""
    if len(sources) < 2 or fraction <= 0:
        return set()
    n = min(len(sources) - 1, max(1, round(fraction * len(sources))))
    ranked = sorted(sources, key=lambda s: hashlib.sha256(f"{seed}|{s}".encode()).hexdigest())
    return set(ranked[:n])


def dataset_records(done: dict[str, dict], cfg: IngestConfig) -> list[dict]:
    """metadata.jsonl records of every clip of the ingested files (sorted by source)."""
    ok = {s: r for s, r in done.items() if r["status"] == "ok"}
    held = heldout_sources(sorted(ok), cfg.heldout, cfg.seed)
    out = []
    for source in sorted(ok):
        r = ok[source]
        bpm = r["bpm"]
        captions = [r["caption"], f"{r['caption']}, {bpm:.0f} BPM"]
        for c in r["clips"]:
            out.append({"path": c["path"], "caption": captions[0], "captions": captions, "bpm": bpm,
                        "split": "heldout" if source in held else "train", "duration": c["duration"],
                        "channels": cfg.channels, "sample_rate": cfg.sample_rate, "source": source,
                        "start_s": c["start_s"], "caption_source": r["caption_source"],
                        "bpm_source": r["bpm_source"]})
    return out


def ingest(root: str | Path, out: str | Path, cfg: IngestConfig = IngestConfig(), sidecar: str | Path | None = None,
           log=print) -> dict:
    """Ingest every audio file under ``root`` into the dataset folder ``out`` (see the module doc);
    ``log`` gets one line per file and the summary. Returns the summary dict (also out/ingest.json)."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    table = find_sidecar(root, sidecar)
    rows = read_sidecar(table) if table else {}
    (out / "audio").mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    files = find_audio(root, exclude=out)
    done: dict[str, dict] = {}
    with open(out / STATE, "a") as state_file:
        for i, path in enumerate(files, 1):
            rel = path.relative_to(root).as_posix()
            prefix = f"[{i}/{len(files)}] {rel}"
            if _reusable(state.get(rel), path, out, cfg):
                done[rel] = state[rel]
                log(f"{prefix}: kept from an earlier run")
                continue
            try:
                rec = {"status": "ok", **ingest_file(path, rel, out, rows, cfg)}
                secs = sum(c["duration"] for c in rec["clips"])
                log(f"{prefix}: {len(rec['clips'])} clip(s), {secs:.0f} s, {rec['bpm']:g} BPM ({rec['bpm_source']}), "
                    f"caption from {rec['caption_source']}: {rec['caption']!r}")
            except Skip as e:
                rec = {"status": "skipped", "reason": str(e)}
                log(f"{prefix}: skipped, {e}")
            rec.update(source=rel, fingerprint=_fingerprint(path), config=cfg.__dict__)
            done[rel] = rec
            state_file.write(json.dumps(rec) + "\n")
            state_file.flush()
            os.fsync(state_file.fileno())
    records = dataset_records(done, cfg)
    meta = "".join(json.dumps(r) + "\n" for r in records).encode()
    atomic_write_bytes(out / "metadata.jsonl", meta)
    prompts = [{k: r[k] for k in ("caption", "captions", "bpm", "duration", "path")}
               for r in records if r["split"] == "heldout"]
    atomic_write_bytes(out / "heldout_prompts.json", json.dumps(prompts, indent=1).encode())
    skipped = {s: r["reason"] for s, r in sorted(done.items()) if r["status"] != "ok"}
    summary = {
        "source": str(root.resolve()), "sidecar": str(table) if table else None, "config": cfg.__dict__,
        "files": len(files), "ingested": len(done) - len(skipped), "skipped": skipped, "clips": len(records),
        "train_clips": sum(r["split"] == "train" for r in records),
        "heldout_clips": sum(r["split"] == "heldout" for r in records),
        "minutes": round(sum(r["duration"] for r in records) / 60, 2),
        "heldout_files": sorted({r["source"] for r in records if r["split"] == "heldout"}),
    }
    atomic_write_bytes(out / "ingest.json", json.dumps(summary, indent=1).encode())
    log(f"ingested {summary['ingested']} of {len(files)} file(s) -> {len(records)} clip(s), {summary['minutes']:g} min "
        f"({summary['train_clips']} train, {summary['heldout_clips']} held out); skipped {len(skipped)}"
        + "".join(f"\n  {s}: {why}" for s, why in skipped.items()))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.data.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="folder of audio files (searched recursively)")
    ap.add_argument("--out", required=True, help="dataset folder to write (metadata.jsonl + audio/)")
    ap.add_argument("--sidecar", default=None, help="CSV/JSON table of path, caption, bpm (default: DIR/metadata.csv ...)")
    d = IngestConfig()
    ap.add_argument("--sample-rate", type=int, default=d.sample_rate)
    ap.add_argument("--channels", type=int, default=d.channels)
    ap.add_argument("--clip-seconds", type=float, default=d.clip_seconds)
    ap.add_argument("--min-seconds", type=float, default=d.min_seconds)
    ap.add_argument("--heldout", type=float, default=d.heldout, help="share of files held out for the report")
    ap.add_argument("--lufs", type=float, default=d.lufs, help="integrated loudness of every file")
    ap.add_argument("--seed", type=int, default=d.seed)
    a = ap.parse_args(argv)
    try:
        cfg = IngestConfig(a.sample_rate, a.channels, a.clip_seconds, a.min_seconds, a.heldout, a.lufs, a.seed)
        summary = ingest(a.dir, a.out, cfg, a.sidecar)
    except (ValueError, FileNotFoundError) as e:  # SidecarError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not summary["clips"]:
        print(f"error: no usable audio under {a.dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where an ingested file's caption and BPM come from: a sidecar table, the file's tags, its folder
and file names, or (BPM only) an estimate from the audio. Used by train/data/ingest.py.

Sidecar tables sit at the top of the ingested folder (the first of ``SIDECARS`` found) or are named
with ``--sidecar``. Rows are keyed by the file's path relative to that folder (forward slashes), or
by its bare file name when that is unique:

    metadata.csv    columns: path (or file), caption, bpm   (caption and bpm may be blank)
    metadata.json   [{"path": ..., "caption": ..., "bpm": ...}, ...]  or  {"a/b.wav": {...} | "caption"}
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDECARS = ("metadata.csv", "metadata.json", "captions.csv", "captions.json")
BPM_RANGE = (30.0, 300.0)  # a sidecar BPM outside this is refused; estimates are folded into it
# Tags that describe the music, in the order they are joined into a caption.
TAG_KEYS = ("genre", "title", "comment", "description")


class SidecarError(ValueError):
    """A sidecar table that cannot be read (names the file and the line)."""


@dataclass(frozen=True)
class Label:
    """A caption or BPM and where it came from (``source``: sidecar | tags | names | estimate)."""

    value: object
    source: str


def find_sidecar(root: Path, explicit: str | Path | None = None) -> Path | None:
    """The sidecar table to use: ``explicit`` if given (must exist), else the first of SIDECARS in root."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SidecarError(f"--sidecar {path}: no such file")
        return path
    return next((root / n for n in SIDECARS if (root / n).is_file()), None)


def _row(where: str, key, caption, bpm) -> tuple[str, dict]:
    if not isinstance(key, str) or not key.strip():
        raise SidecarError(f"{where}: needs a 'path' (or 'file')")
    out = {}
    if caption not in (None, ""):
        if not isinstance(caption, str):
            raise SidecarError(f"{where}: caption must be text, got {caption!r}")
        out["caption"] = " ".join(caption.split())
    if bpm not in (None, ""):
        try:
            value = float(bpm)
        except (TypeError, ValueError):
            raise SidecarError(f"{where}: bpm must be a number, got {bpm!r}") from None
        if not BPM_RANGE[0] <= value <= BPM_RANGE[1]:
            raise SidecarError(f"{where}: bpm {value:g} is outside {BPM_RANGE[0]:g}-{BPM_RANGE[1]:g}")
        out["bpm"] = value
    return key.strip().replace("\\", "/").lstrip("./"), out


def read_sidecar(path: Path) -> dict[str, dict]:
    """{relative path or file name: {"caption"?: str, "bpm"?: float}} of a CSV or JSON sidecar."""
    rows: dict[str, dict] = {}
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
            if "path" not in fields and "file" not in fields:
                raise SidecarError(f"{path}: needs a 'path' or 'file' column, has {sorted(fields)}")
            for ln, rec in enumerate(reader, 2):
                get = {k: rec.get(h) for k, h in fields.items()}
                key, row = _row(f"{path}:{ln}", get.get("path") or get.get("file"), get.get("caption"), get.get("bpm"))
                rows[key] = row
        return rows
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SidecarError(f"{path}: not JSON ({e})") from None
    if isinstance(data, dict):
        items = [(f"{path}[{k!r}]", k, v if isinstance(v, dict) else {"caption": v}) for k, v in data.items()]
    elif isinstance(data, list):
        items = [(f"{path}[{i}]", r.get("path", r.get("file")) if isinstance(r, dict) else None,
                  r if isinstance(r, dict) else {}) for i, r in enumerate(data)]
    else:
        raise SidecarError(f"{path}: must be a list of objects or an object keyed by path")
    for where, key, rec in items:
        k, row = _row(where, key, rec.get("caption"), rec.get("bpm"))
        rows[k] = row
    return rows


def sidecar_row(rows: dict[str, dict], rel: str) -> dict:
    """The sidecar row of relative path ``rel``: by path, else by bare file name."""
    return rows.get(rel) or rows.get(rel.rsplit("/", 1)[-1]) or {}


def caption_from_tags(path: Path) -> str | None:
    """A caption from the file's tags (genre, title, comment), or None when it has none."""
    try:
        import mutagen  # tags of WAV, FLAC, OGG and MP3 behind one API

        tags = mutagen.File(path, easy=True)
    except Exception:  # noqa: BLE001 - a file mutagen cannot parse simply has no usable tags
        return None
    if tags is None or not getattr(tags, "tags", None):
        return None
    parts = []
    for key in TAG_KEYS:
        for v in tags.tags.get(key, []) if hasattr(tags.tags, "get") else []:
            v = " ".join(str(v).split())
            if v and v.lower() not in (p.lower() for p in parts):
                parts.append(v)
    return ", ".join(parts) or None


_NOISE = re.compile(r"(?:^|\s)(?:\d+|take\s*\d+|final|mix|master|v\d+)(?=\s|$)", re.I)


def caption_from_names(rel: str) -> str:
    """A caption from folder and file names: "Jazz/late_night-blues 02.wav" -> "jazz, late night blues"."""
    parts = []
    for name in Path(rel).with_suffix("").parts:
        words = re.sub(r"[_\-.]+", " ", name)
        words = re.sub(r"([a-z])([A-Z])", r"\1 \2", words)  # camelCase
        words = " ".join(_NOISE.sub(" ", words).split()).lower()
        if words and words not in parts:
            parts.append(words)
    return ", ".join(parts) or "music"


def fold_bpm(bpm: float, low: float = 60.0, high: float = 180.0) -> float:
    """Halve or double ``bpm`` into [low, high) (a beat tracker's octave is a guess either way)."""
    while bpm >= high:
        bpm /= 2
    while bpm < low:
        bpm *= 2
    return bpm


def estimate_bpm(mono: np.ndarray, sample_rate: int) -> float | None:
    """Tempo of float32 audio (N,) by librosa's onset-autocorrelation estimator, folded into
    60-180 BPM and rounded to 0.1; None when there are no onsets to go by."""
    import librosa  # numba start-up: only when a file needs an estimate

    env = librosa.onset.onset_strength(y=mono, sr=sample_rate)
    if not np.isfinite(env).all() or env.max() <= 0:
        return None
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=env, sr=sample_rate, aggregate=np.median))[0])
    return round(fold_bpm(tempo), 1) if tempo > 0 else None

"""Quick listening substitute for a corpus: per-piece loudness, brightness and tempo checks.

    python -m train.data.inspect_corpus DIR [--limit N] [--split train|heldout]

Prints one line per piece: RMS (dBFS), peak, spectral centroid (Hz), silence ratio, the
labelled BPM and the BPM measured by librosa's tempo estimator on onset strength. Measured
tempi at 1/2x or 2x the label are marked "octave" (a beat tracker's usual ambiguity, e.g.
half-time reggae or drum and bass); anything else off by > 4% is marked "MISMATCH".
"""

from __future__ import annotations

import argparse

import librosa
import numpy as np
import soundfile as sf

from train.data.dataset import read_metadata
from train.evaluation.tempo import measure_tempo, tempo_match


def piece_stats(wav: np.ndarray, sample_rate: int, bpm: float) -> dict:
    """Loudness/brightness/tempo statistics of one mono clip."""
    rms = float(np.sqrt(np.mean(wav ** 2)))
    frame_rms = librosa.feature.rms(y=wav)[0]
    centroid = librosa.feature.spectral_centroid(y=wav, sr=sample_rate)[0]
    tempo = measure_tempo(wav, sample_rate)
    return {"rms_db": 20 * np.log10(rms + 1e-9), "peak": float(np.abs(wav).max()),
            "centroid_hz": float(np.median(centroid)), "silent": float(np.mean(frame_rms < 1e-3)),
            "bpm": bpm, "tempo": tempo, "tempo_check": tempo_match(tempo, bpm)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--split", default=None, help="train | heldout (default: all)")
    a = ap.parse_args(argv)
    items = read_metadata(a.root, a.split)[: a.limit]
    print(f"{'file':34s} {'split':7s} {'rms dB':>7s} {'peak':>5s} {'centroid':>8s} {'silent':>6s} "
          f"{'bpm':>5s} {'tempo':>6s} check")
    for it in items:
        wav, sr = sf.read(it["abs_path"], dtype="float32", always_2d=True)
        s = piece_stats(wav.mean(axis=1), sr, it["bpm"])
        print(f"{it['path'][-34:]:34s} {it['split']:7s} {s['rms_db']:7.1f} {s['peak']:5.2f} "
              f"{s['centroid_hz']:8.0f} {s['silent']:6.2f} {s['bpm']:5.0f} {s['tempo']:6.1f} {s['tempo_check']}")


if __name__ == "__main__":
    main()

"""Offline MIDI rendering with the FluidSynth command-line synthesiser and a GM soundfont.

Needs the Debian packages listed in train/data/APT_PACKAGES.txt (`fluidsynth` and a GM
soundfont, by default `musescore-general-soundfont-small`). `find_soundfont()` auto-detects
installed soundfonts; `$PRESTO_SOUNDFONT` or an explicit path overrides.
"""

from __future__ import annotations

import copy
import os
import shutil
import struct
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

# In order of preference; the first that exists is used.
SOUNDFONT_CANDIDATES = (
    ("/usr/share/sounds/sf3/MuseScore_General.sf3", "musescore-general-soundfont-small"),
    ("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "musescore-general-soundfont-small"),
    ("/usr/share/sounds/sf2/MuseScore_General.sf2", "musescore-general-soundfont"),
    ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
    ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont"),
    ("/usr/share/sounds/sf3/default-GM.sf3", "(alternatives link)"),
    ("/usr/share/sounds/sf2/default-GM.sf2", "(alternatives link)"),
)
DEFAULT_APT = "fluidsynth musescore-general-soundfont-small"


class RenderError(RuntimeError):
    """FluidSynth or the soundfont is missing, or a render failed."""


def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """Soundfont to use: `path`, else $PRESTO_SOUNDFONT, else the first installed candidate."""
    explicit = path or os.environ.get("PRESTO_SOUNDFONT")
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise RenderError(f"soundfont {p} does not exist")
        return p
    for cand, _ in SOUNDFONT_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    raise RenderError("no General MIDI soundfont found (looked in "
                      + ", ".join(c for c, _ in SOUNDFONT_CANDIDATES)
                      + f"); install one: apt-get install -y {DEFAULT_APT}  (or fluid-soundfont-gm / "
                      "timgm6mb-soundfont), or pass --soundfont PATH / set PRESTO_SOUNDFONT")


def find_fluidsynth() -> str:
    """Path of the `fluidsynth` executable; RenderError naming the apt package when absent."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError("the `fluidsynth` program is not installed: apt-get install -y fluidsynth")
    return exe


@lru_cache(maxsize=8)
def fluidsynth_version() -> str:
    out = subprocess.run([find_fluidsynth(), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout.splitlines() or ["unknown"])[0].strip()


@lru_cache(maxsize=8)
def soundfont_presets(path: str) -> frozenset[tuple[int, int]]:
    """(bank, program) pairs defined by an SF2/SF3 file (parsed from its `phdr` chunk)."""
    with open(path, "rb") as f:
        riff, _, form = struct.unpack("<4sI4s", f.read(12))
        if riff != b"RIFF" or form != b"sfbk":
            raise RenderError(f"{path} is not a SoundFont file")
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise RenderError(f"{path}: no preset headers found")
            cid, size = struct.unpack("<4sI", head)
            if cid == b"LIST" and f.read(4) == b"pdta":
                end = f.tell() + size - 4
                while f.tell() < end:
                    sid, ssize = struct.unpack("<4sI", f.read(8))
                    if sid == b"phdr":
                        body = f.read(ssize)
                        recs = [struct.unpack_from("<20sHH", body, k) for k in range(0, ssize - 38, 38)]
                        return frozenset((bank, prog) for _, prog, bank in recs)
                    f.seek(ssize, 1)
            elif cid == b"LIST":
                f.seek(size - 4, 1)  # no RIFF pad byte: SF3 files omit it
            else:
                f.seek(size, 1)


def _fit_to_soundfont(pm: pretty_midi.PrettyMIDI, presets: frozenset[tuple[int, int]]) -> pretty_midi.PrettyMIDI:
    """Map drum kits missing from the soundfont to the standard kit (0)."""
    for inst in pm.instruments:
        if inst.is_drum and (128, inst.program) not in presets:
            inst.program = 0
    return pm


def render_midi(midi: pretty_midi.PrettyMIDI | str | os.PathLike, sample_rate: int = 44100,
                soundfont: str | os.PathLike | None = None, gain: float = 0.5, stereo: bool = False) -> np.ndarray:
    """Render MIDI with FluidSynth; returns a float32 waveform at `sample_rate`: mono (N,), or with
    ``stereo`` (N, 2) as FluidSynth mixes it (left, right).

    Pan, reverb and chorus are driven by CC10/CC91/CC93 in the file (FluidSynth's effects).
    """
    exe = find_fluidsynth()
    sf_path = find_soundfont(soundfont)
    pm = copy.deepcopy(midi) if isinstance(midi, pretty_midi.PrettyMIDI) else pretty_midi.PrettyMIDI(str(midi))
    pm = _fit_to_soundfont(pm, soundfont_presets(str(sf_path)))
    with tempfile.TemporaryDirectory(prefix="presto_render_") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        pm.write(str(mid))
        cmd = [exe, "-ni", "-q", "-o", "synth.dynamic-sample-loading=1", "-o", "synth.cpu-cores=1",
               "-o", "synth.polyphony=512", "-O", "float", "-T", "wav", "-r", str(sample_rate),
               "-g", str(gain), "-F", str(wav), str(sf_path), str(mid)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0 or not wav.is_file():
            raise RenderError(f"fluidsynth failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RenderError(f"fluidsynth wrote {sr} Hz, expected {sample_rate}")
    if not stereo:
        return audio.mean(axis=1)
    if audio.shape[1] != 2:
        raise RenderError(f"fluidsynth wrote {audio.shape[1]} channel(s), expected 2")
    return np.ascontiguousarray(audio)


SILENT_PEAK = 1e-4  # a render whose peak stays below this (-80 dBFS) is broken, not quiet music


def finish_clip(audio: np.ndarray, sample_rate: int, seconds: float, peak_db: float = -1.0,
                fade_s: float = 0.05, name: str = "render") -> np.ndarray:
    """Cut/pad to exactly `seconds`, fade the last `fade_s`, peak-normalise to `peak_db` dBFS (one
    gain for all channels, so a stereo image is kept). ``audio``: (N,) or (N, channels).
    A silent or non-finite render raises RenderError naming ``name``."""
    n = int(round(seconds * sample_rate))
    out = np.zeros((n, *audio.shape[1:]), dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    if not np.isfinite(out).all():
        raise RenderError(f"{name}: the render has non-finite samples")
    nf = min(int(fade_s * sample_rate), n)
    if nf > 0:
        ramp = np.linspace(1.0, 0.0, nf, dtype=np.float32)
        out[n - nf:] *= ramp.reshape(-1, *([1] * (out.ndim - 1)))
    peak = float(np.abs(out).max())
    if peak < SILENT_PEAK:
        raise RenderError(f"{name}: the render is silent (peak {peak:.2g}); check the soundfont and the MIDI file")
    out *= np.float32(10 ** (peak_db / 20) / peak)
    return out

"""Command line: ``python -m presto_core.generate --prompt ... --out clip.wav``.

Edits take a source file: ``--source in.wav --extend-bars 16`` continues it (up to 3 minutes in
all), ``--source in.wav --replace-bars 5:8`` regenerates bars 5-8 and keeps the rest; ``--loop``
makes a generated clip loop. A source written by Presto carries its tempo; any other needs
``--bpm``.

Writes one WAV per clip (``clip.wav``, or ``clip_1.wav`` ... for several) with the exact
generation settings in each file's metadata: two channels when the model folder has a
mono-to-stereo component (``--mono`` for one), one otherwise, and prints one line per clip (path, CLAP score)
plus the per-stage latency. Exit status 2 with a one-line message on bad input or weights.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

import soundfile as sf

from presto_core.adapters import parse_adapter_arg
from presto_core.audio import read_wav_settings, write_wav
from presto_core.errors import PrestoError
from presto_core.pipeline import PrestoPipeline
from presto_core.request import GenerationRequest

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "presto-default"
# Where a plain ``pip install .`` puts the same folder (pyproject.toml's data-files).
INSTALLED_MODEL = Path(sysconfig.get_path("data")) / "share" / "presto" / "presto-default"


def default_model() -> Path:
    """The embedded default model folder: ``assets/presto-default`` of the source tree (a clone or an
    editable install), else the copy a plain install placed under ``<prefix>/share/presto``."""
    if DEFAULT_MODEL.is_dir() or not INSTALLED_MODEL.is_dir():
        return DEFAULT_MODEL
    return INSTALLED_MODEL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m presto_core.generate", description=__doc__.splitlines()[0])
    p.add_argument("--prompt", required=True, help="text description of the music")
    p.add_argument("--bpm", type=float, default=None,
                   help="tempo in beats per minute [40, 240] (default 120; for --source, the file's own)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of audio [1, 32]")
    p.add_argument("--steps", type=int, default=None, help="sampling steps [1, 100] (default: the model's)")
    p.add_argument("--rho", type=float, default=7.0, help="Karras schedule shape [1, 1000]")
    p.add_argument("--reject-ratio", type=float, default=0.0, help="CLAP rejection ratio [0, 0.9]")
    p.add_argument("--num-clips", type=int, default=1, help="clips to keep [1, 8]")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--variant", default=None, help="base, presto-l, presto-s, presto-ls (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG++ scale [0, 1] for score models")
    p.add_argument("--init-audio", default=None, help="audio file to make a variation of")
    p.add_argument("--strength", type=float, default=None,
                   help="variation or edit strength (0, 1]: 1 ignores the audio (default: 1 for a variation; "
                        "1 to extend, 0.9 to replace bars)")
    p.add_argument("--loop", action="store_true", help="make the clip loop: whole bars that fit in --duration")
    p.add_argument("--time-signature", default="4/4", help="bars for --loop and edits: 4/4, 3/4, 6/8, ...")
    p.add_argument("--source", default=None, help="audio file to edit (with --extend-bars or --replace-bars)")
    p.add_argument("--extend-bars", type=int, default=None, help="continue --source by this many bars")
    p.add_argument("--replace-bars", default=None, metavar="A:B", help="regenerate bars A to B of --source (1-based)")
    p.add_argument("--crossfade-ms", type=float, default=30.0, help="fade at each edit join [0, 500] ms")
    p.add_argument("--context-seconds", type=float, default=10.0,
                   help="known audio each extension window starts from [1, 24] s")
    p.add_argument("--mono", action="store_true",
                   help="write one channel (default: stereo when the model has a mono-to-stereo component)")
    p.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model in assets/)")
    p.add_argument("--adapter", action="append", default=[], metavar="DIR[:WEIGHT]",
                   help="fine-tuned adapter folder (python -m train.finetune) and its weight [0, 2] (default 1); "
                        "repeat to stack adapters")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--out", default="clip.wav", help="output WAV path")
    return p


def _read(path: str, what: str):
    try:
        return sf.read(path, dtype="float32", always_2d=False)
    except (RuntimeError, OSError) as e:
        raise PrestoError(f"cannot read {what} {path}: {e}") from None


def _replace_range(text: str) -> tuple[int, int]:
    parts = text.replace("-", ":").split(":")
    try:
        a, b = (int(v) for v in parts)
    except ValueError:
        raise PrestoError(f"--replace-bars takes A:B, two whole bar numbers (e.g. 5:8), got {text!r}") from None
    return a, b


def run_edit(pipe: PrestoPipeline, args):
    """The --source edit the arguments ask for, as a GenerationResult."""
    if (args.extend_bars is None) == (args.replace_bars is None):
        raise PrestoError("--source needs exactly one of --extend-bars N or --replace-bars A:B")
    audio, sr = _read(args.source, "source audio")
    bpm = args.bpm
    if bpm is None:
        try:
            bpm = (read_wav_settings(args.source) or {}).get("bpm")
        except Exception:  # noqa: BLE001 - any file that is not a WAV with our metadata
            bpm = None
    common = dict(prompt=args.prompt, bpm=bpm, time_signature=args.time_signature, variant=args.variant,
                  steps=args.steps, rho=args.rho, guidance=args.guidance, seed=args.seed,
                  stereo=False if args.mono else None, crossfade_ms=args.crossfade_ms, strength=args.strength)
    if args.extend_bars is not None:
        return pipe.extend(audio, sr, bars=args.extend_bars, context_seconds=args.context_seconds, **common)
    return pipe.inpaint(audio, sr, bars=_replace_range(args.replace_bars), **common)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = args.model or default_model()
        if args.model is None and not Path(model).is_dir():
            raise PrestoError(f"the embedded default model is missing at {model}; pass --model DIR|hub-id")
        if args.source is None and (args.extend_bars is not None or args.replace_bars is not None):
            raise PrestoError("--extend-bars and --replace-bars edit an audio file: give it with --source")
        init_audio = init_sr = None
        if args.init_audio:
            init_audio, init_sr = _read(args.init_audio, "init audio")
        pipe = PrestoPipeline.from_pretrained(model, device=args.device, precision=args.precision,
                                              variants=[args.variant] if args.variant else None,
                                              adapters=[parse_adapter_arg(a) for a in args.adapter])
        if args.source is not None:
            result = run_edit(pipe, args)
        else:
            req = GenerationRequest(prompt=args.prompt, bpm=120.0 if args.bpm is None else args.bpm,
                                    duration=args.duration, steps=args.steps, rho=args.rho,
                                    reject_ratio=args.reject_ratio, seed=args.seed, num_clips=args.num_clips,
                                    variant=args.variant, guidance=args.guidance, init_audio=init_audio,
                                    init_sr=init_sr, strength=1.0 if args.strength is None else args.strength,
                                    stereo=False if args.mono else None, loop=args.loop,
                                    time_signature=args.time_signature)
            result = pipe.generate(req)
    except PrestoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(result.clips):
        path = out if len(result.clips) == 1 else out.with_name(f"{out.stem}_{i + 1}{out.suffix or '.wav'}")
        write_wav(path, clip.audio, result.sample_rate, {**result.settings, "candidate": clip.candidate})
        score = "n/a" if clip.clap_score is None else f"{clip.clap_score:.3f}"
        print(f"{path}\tclap={score}")
    t = result.timings
    channels = "stereo" if result.settings["stereo"] else (
        "mono" if args.mono or args.source else "mono (this model has no mono-to-stereo component)")
    stages = " ".join(f"{k}={v:.3f}s" for k, v in t.items())
    print(f"seed={result.settings['seed']} variant={result.settings['variant']} steps={result.settings['steps']} "
          f"{channels} {stages} rtf={result.rtf:.1f}x")
    for w in result.windows:
        clap = "n/a" if w["clap"] is None else f"{w['clap']:.3f}"
        print(f"window {w['window'] + 1}: {w['join_s']:.2f}-{w['end_s']:.2f} s clap={clap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

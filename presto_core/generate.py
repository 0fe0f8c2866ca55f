"""Command line: ``python -m presto_core.generate --prompt ... --out clip.wav``.

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

from presto_core.audio import write_wav
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
    p.add_argument("--bpm", type=float, default=120.0, help="tempo in beats per minute [40, 240]")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of audio [1, 32]")
    p.add_argument("--steps", type=int, default=None, help="sampling steps [1, 100] (default: the model's)")
    p.add_argument("--rho", type=float, default=7.0, help="Karras schedule shape [1, 1000]")
    p.add_argument("--reject-ratio", type=float, default=0.0, help="CLAP rejection ratio [0, 0.9]")
    p.add_argument("--num-clips", type=int, default=1, help="clips to keep [1, 8]")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--variant", default=None, help="base, presto-l, presto-s, presto-ls (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG++ scale [0, 1] for score models")
    p.add_argument("--init-audio", default=None, help="audio file to make a variation of")
    p.add_argument("--strength", type=float, default=1.0, help="variation strength (0, 1]: 1 ignores the audio")
    p.add_argument("--mono", action="store_true",
                   help="write one channel (default: stereo when the model has a mono-to-stereo component)")
    p.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model in assets/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--out", default="clip.wav", help="output WAV path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = args.model or default_model()
        if args.model is None and not Path(model).is_dir():
            raise PrestoError(f"the embedded default model is missing at {model}; pass --model DIR|hub-id")
        init_audio = init_sr = None
        if args.init_audio:
            try:
                init_audio, init_sr = sf.read(args.init_audio, dtype="float32", always_2d=False)
            except (RuntimeError, OSError) as e:
                raise PrestoError(f"cannot read init audio {args.init_audio}: {e}") from None
        pipe = PrestoPipeline.from_pretrained(model, device=args.device, precision=args.precision,
                                              variants=[args.variant] if args.variant else None)
        req = GenerationRequest(prompt=args.prompt, bpm=args.bpm, duration=args.duration, steps=args.steps,
                                rho=args.rho, reject_ratio=args.reject_ratio, seed=args.seed,
                                num_clips=args.num_clips, variant=args.variant, guidance=args.guidance,
                                init_audio=init_audio, init_sr=init_sr, strength=args.strength,
                                stereo=False if args.mono else None)
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
        "mono" if args.mono else "mono (this model has no mono-to-stereo component)")
    print(f"seed={result.settings['seed']} variant={result.settings['variant']} steps={result.settings['steps']} "
          f"{channels} text={t['text']:.3f}s generation={t['generation']:.3f}s decoding={t['decoding']:.3f}s "
          f"clap={t['clap']:.3f}s stereo={t['stereo']:.3f}s total={t['total']:.3f}s rtf={result.rtf:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

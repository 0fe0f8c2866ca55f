"""The app's command line: ``python app.py`` / ``presto-app`` / ``python -m app``
[--model DIR|hub-id] [--device auto|cpu|cuda] [--host 127.0.0.1] [--port 7860] [--share]
[--concurrency 1] [--adapter DIR[:WEIGHT] ...].

Loads the model folder once (default: the embedded model in assets/presto-default), times a
short warm-up to predict latency, and serves the Gradio page and its API (named endpoints:
generate, variation, rho_sweep, ab_compare, export_loop, settings_from_wav, estimate, info).
"""

from __future__ import annotations

import argparse
import sys

from app.engine import MAX_REQUEST_S
from app.server import MAX_SESSIONS, create_app, launch_kwargs, resolve_model
from presto_core.adapters import parse_adapter_arg
from presto_core.errors import PrestoError
from presto_core.generate import default_model

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="Presto! text-to-music sketching app (Gradio)")
    p.add_argument("--model", default=None,
                   help="model folder or hub id (default: the embedded model in assets/presto-default)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--concurrency", type=int, default=1, help="generations run at once (they share one model)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting at most; more are turned away")
    p.add_argument("--max-sessions", type=int, default=MAX_SESSIONS,
                   help="browser/API sessions whose page state is kept (about 0.4 MB each; the oldest are dropped)")
    p.add_argument("--max-request-seconds", type=float, default=MAX_REQUEST_S,
                   help="refuse a request expected to run longer than this on the device (default 600)")
    p.add_argument("--adapter", action="append", default=[], metavar="DIR[:WEIGHT]",
                   help="an adapter folder (python -m train.finetune) at a start-up weight in [0, 2] (default 1); "
                        "repeat to stack several; each gets a weight slider and the A/B tab compares adapted "
                        "against plain")
    p.add_argument("--no-calibrate", action="store_true", help="skip the warm-up that predicts latency")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = resolve_model(args.model, default_model())
        kwargs = launch_kwargs(args.host, args.port, args.share, args.max_sessions)
        adapters = [parse_adapter_arg(a) for a in args.adapter]
        demo, _ = create_app(model, device=args.device, precision=args.precision, concurrency=args.concurrency,
                             max_queue=args.max_queue, calibrate=not args.no_calibrate,
                             max_request_s=args.max_request_seconds, adapters=adapters)
    except PrestoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo.launch(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

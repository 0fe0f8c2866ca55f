"""Presto web app: ``python app.py [--model DIR|hub-id] [--device auto|cpu|cuda] [--host 127.0.0.1]
[--port 7860] [--share] [--concurrency 1]`` (the same as ``presto-app`` once installed; see app/cli.py)."""

from __future__ import annotations

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())

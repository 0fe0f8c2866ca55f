"""Helpers for the app's tests: serve a model folder in-process on a free local port."""

from __future__ import annotations

import contextlib
import socket

from app.server import create_app, launch_kwargs


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model_dir, concurrency: int = 1, calibrate: bool = True, **kwargs):
    """Yield (url, demo, engine) for an in-process server on 127.0.0.1; closed on exit.
    Calibration uses short clips (1 s and 2 s) to keep tests quick."""
    demo, engine = create_app(str(model_dir), device="cpu", precision="fp32", concurrency=concurrency,
                              calibrate=calibrate, log=lambda *a: None,
                              calibration={"durations": (1.0, 2.0), "repeats": 2}, **kwargs)
    port = free_port()
    kw = launch_kwargs("127.0.0.1", port)
    demo.launch(prevent_thread_lock=True, quiet=True, **kw)
    try:
        yield f"http://127.0.0.1:{port}/", demo, engine
    finally:
        demo.close()

"""Start-up: load the model folder once, calibrate the latency model, build the Blocks and its
queue. Used by ``app.py`` (command line) and by the tests (in-process)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import gradio as gr
from fastapi.exceptions import RequestValidationError
from starlette.middleware import Middleware

from presto_core.errors import PrestoError
from presto_core.pipeline import PrestoPipeline

from app.api_guard import UnknownApiMiddleware, request_shape_error
from app.adapter_mix import AdapterMix
from app.engine import MAX_REQUEST_S, Engine
from app.handlers import Handlers
from app.results import RunStore
from app.ui import CSS, build_ui


def resolve_model(model: str | None, default: Path) -> str:
    """The model to load: ``model`` if given, else ``default`` when that folder exists; otherwise a
    PrestoError telling the person to pass --model."""
    if model:
        return model
    if Path(default).is_dir():
        return str(default)
    raise PrestoError(f"the embedded default model is missing at {default}; pass --model DIR|hub-id "
                      "(a Presto model folder or a Hugging Face repository id)")


def create_app(model: str, device: str = "auto", precision: str = "auto", concurrency: int = 1,
               max_queue: int = 64, calibrate: bool = True, out_dir: str | None = None, log=print,
               calibration: dict | None = None, max_request_s: float = MAX_REQUEST_S,
               adapters: list[tuple[str, float]] | None = None):
    """(demo, engine): the pipeline is loaded here and closed over by the handlers.
    ``calibration`` passes keyword arguments to Engine.calibrate (durations, repeats); ``adapters``
    are (adapter folder, start-up weight) pairs, each given a weight slider on the page."""
    if not isinstance(concurrency, int) or concurrency < 1:
        raise PrestoError(f"--concurrency must be an integer >= 1, got {concurrency!r}")
    pipe = PrestoPipeline.from_pretrained(model, device=device, precision=precision)
    log(f"loaded {model} on {pipe.device}: variants {pipe.variant_names}, CLAP {'yes' if pipe.clap else 'no'}")
    mix = AdapterMix.load(adapters)
    engine = Engine(pipe, max_request_s=max_request_s, adapters=mix)
    if mix.names:
        log(f"adapters: {mix.format(mix.defaults)} (start-up weights; each has a slider)")
    if calibrate:
        engine.calibrate(log=log, **(calibration or {}))
    store = RunStore(out_dir or tempfile.mkdtemp(prefix="presto-app-"))
    demo = build_ui(engine, Handlers(engine, store))
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    if out_dir is None:  # our own scratch folder: gone when the server closes or the process exits
        remove = functools.partial(shutil.rmtree, store.root, ignore_errors=True)
        atexit.register(remove)
        close = demo.close

        def close_and_clean(*a, **kw):
            try:
                return close(*a, **kw)
            finally:
                remove()

        demo.close = close_and_clean
    return demo, engine


MAX_UPLOAD = "50mb"  # a 32 s stereo 48 kHz float WAV is 12 MB; a 120 s loop source at CD quality 21 MB
MAX_SESSIONS = 64  # per-session page state Gradio keeps (about 0.4 MB each); the oldest are dropped


def launch_kwargs(host: str, port: int | None, share: bool = False, max_sessions: int = MAX_SESSIONS) -> dict:
    """Arguments for demo.launch (theme and CSS live there in Gradio 6): the upload size limit, the
    bound on remembered sessions and the middleware that answers unknown API names with 404."""
    if not isinstance(max_sessions, int) or max_sessions < 1:
        raise PrestoError(f"--max-sessions must be an integer >= 1, got {max_sessions!r}")
    # System fonts only: the page must not wait on font servers when the machine is offline.
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])
    return dict(server_name=host, server_port=port, share=share, theme=theme, css=CSS, show_error=True,
                footer_links=["api"], max_file_size=MAX_UPLOAD, state_session_capacity=max_sessions,
                app_kwargs={"middleware": [Middleware(UnknownApiMiddleware)],
                            "exception_handlers": {RequestValidationError: request_shape_error}})

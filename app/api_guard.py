"""The app's edge below the handlers: what Gradio itself checks before a handler runs (the number of
inputs, file payloads, upload paths), unknown API names, and whether the job a handler serves is
still wanted. Gradio's own messages there name pydantic models, dump component reprs or show
server paths; these say what to send instead.
"""

from __future__ import annotations

import inspect
import json
import logging
import re

import gradio as gr
from gradio.context import LocalContext
from gradio.exceptions import InvalidPathError

from presto_core.errors import PrestoError, shown

log = logging.getLogger("presto.app")
_API_PREFIX = "/gradio_api"
# POST/GET routes that take an API name: /call/{name}, /call/v2/{name}, /call/{name}/{event}, /run|api/{name}
_NAMED_ROUTE = re.compile(r"^/(?:call/v2|call|run|api)/([^/]+)/?(?:[^/]+/?)?$")
_PATH = re.compile(r"(?<![\w.:])(?:/[^\s'\"(),:;]+)+/([^\s'\"(),:;/]*)")


class JobCancelled(PrestoError):
    """The person cancelled the request or closed the page; raised between sampler steps."""


def scrub_paths(message: str) -> str:
    """``message`` with every absolute path shortened to its last part (no server layout leaks)."""
    return _PATH.sub(lambda m: m.group(1) or "/", message)


def job_alive() -> bool:
    """False once the queued job this thread serves was cancelled or its client went away (Gradio
    drops a cancelled job from the active set and marks a disconnected one not alive). True
    outside a queued job (direct calls, tests calling a handler)."""
    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return True
    for job in list(queue.active_jobs):
        for event in job or ():
            if event._id == event_id:
                return bool(getattr(event, "alive", True))
    return False


def _input_names(block_fn) -> list[str]:
    try:
        params = [p for p in inspect.signature(block_fn.fn).parameters.values()
                  if p.name != "progress" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params][: len(block_fn.inputs)]
    return names + [f"input {i}" for i in range(len(names), len(block_fn.inputs))]


def _is_file_payload(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    path, meta = value.get("path"), value.get("meta")
    return isinstance(meta, dict) and meta.get("_type") == "gradio.FileData" and isinstance(path, str) and bool(path)


def _described(value) -> str:
    """What a bad file payload was, without echoing the paths it names."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(map(str, value))[:6]}"
    return f"{type(value).__name__} {shown(value, 40)}" if not isinstance(value, str) else f"the text {shown(value, 40)}"


class PrestoBlocks(gr.Blocks):
    """gr.Blocks whose input checks fail with one clear line naming the endpoint and the input."""

    def validate_inputs(self, block_fn, inputs):
        if len(inputs) < len(block_fn.inputs):
            names = _input_names(block_fn)
            raise gr.Error(f"/{block_fn.api_name or block_fn.name} takes {len(names)} inputs ({', '.join(names)}), "
                           f"got {len(inputs)}; send every one (see the API page or Client.view_api())",
                           title="Please check the request", print_exception=False)

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        self.validate_inputs(block_fn, inputs)
        api = f"/{block_fn.api_name or block_fn.name}"
        for i, block in enumerate(block_fn.inputs):
            if isinstance(block, (gr.File, gr.Audio)) and not _is_file_payload(inputs[i]):
                raise gr.Error(f"{api}: '{_input_names(block_fn)[i]}' must be a file, sent as gradio_client.handle_file(path) "
                               f"(an object with the 'path' /upload returned and meta {{'_type': 'gradio.FileData'}}), "
                               f"got {_described(inputs[i])}", title="Please check the request", print_exception=False)
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except InvalidPathError:
            raise gr.Error(f"{api}: a file input names a file this server did not receive; upload it first "
                           "(gradio_client.handle_file does)", title="Please check the request", print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - Gradio's own conversion of a value it could not read
            log.info("%s: input not readable: %s", api, e)
            raise gr.Error(f"{api}: an input has the wrong shape or type for its control; check each value "
                           "against Client.view_api()", title="Please check the request", print_exception=False) from None


class UnknownApiMiddleware:
    """ASGI middleware: a call to an API name the app does not have is a 404 listing the names
    (Gradio answers 500 with a KeyError or an 'infer function index' error)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http":
            path = scope.get("path", "")
            if path.startswith(_API_PREFIX):
                m = _NAMED_ROUTE.match(path[len(_API_PREFIX):])
                server = scope.get("app")
                blocks = server.get_blocks() if hasattr(server, "get_blocks") else None
                if m and blocks is not None:
                    known = sorted({fn.api_name for fn in blocks.fns.values()
                                    if fn.api_name and fn.api_visibility != "private"})
                    if m.group(1) not in {fn.api_name for fn in blocks.fns.values()}:
                        body = json.dumps({"detail": f"no API endpoint named /{m.group(1)}; the endpoints are "
                                                     + ", ".join(f"/{n}" for n in known)}).encode()
                        await send({"type": "http.response.start", "status": 404,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                        await send({"type": "http.response.body", "body": body})
                        return
        await self.app(scope, receive, send)


async def request_shape_error(request, exc):
    """FastAPI's 422 for a body that is not ``{"data": [...]}``, as one line saying what to send."""
    from fastapi.responses import JSONResponse

    problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}"
                         for e in exc.errors()[:3])
    return JSONResponse(status_code=422, content={
        "detail": f"the request body must be JSON like {{\"data\": [input values in order]}} ({problems})"})

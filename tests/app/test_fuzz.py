"""Seeded fuzz of the raw HTTP API (app/fuzz.py) at 500 inputs over every endpoint: bad values
of every input, malformed and unusual files, malformed file payloads and bodies, unknown API
names. Each must get a clear message (no Gradio/pydantic internals, no server paths, no
'failed (TypeError ...)'), nothing may hang, and a good request must succeed afterwards."""

import pytest

pytest.importorskip("gradio_client")

from app.fuzz import Fuzzer, Tally, classify, make_files  # noqa: E402
from app.testing import serve  # noqa: E402
from tests.factory import make_model_folder  # noqa: E402


def test_classify_tells_clear_from_unclear_and_internal():
    assert classify(200, None) == "accepted"
    assert classify(200, "bpm must be a number in [40, 240], got 'x'") == "clear"
    assert classify(404, "no API endpoint named /nope; the endpoints are /generate") == "clear"
    assert classify(500, "anything") == "internal"
    assert classify(200, "Generation failed (TypeError: bad operand). The server is still running") == "internal"
    assert classify(200, "1 validation error for FileData") == "unclear"
    assert classify(200, "cannot open /tmp/gradio/abc/x.wav") == "unclear"
    assert classify(200, "unhashable type: 'list'") == "unclear"
    assert classify(200, "") == "unclear"


def test_500_bad_inputs_get_clear_messages_and_the_server_keeps_serving(tmp_path):
    model = make_model_folder(tmp_path / "model", variants=("base", "presto-ls"), with_clap=True, with_m2s=True)
    with serve(model) as (url, demo, engine):
        fz = Fuzzer(url, make_files(tmp_path / "files"), seed=1234, timeout=120)
        tally = fz.run(500, Tally())
        assert fz.good_request_works()
    c = tally.counts
    assert c["tried"] == 500
    assert c["internal"] == 0 and c["unclear"] == 0 and c["hangs"] == 0, tally.examples
    assert c["clear"] >= 350  # most cases are bad by construction; some land on valid values

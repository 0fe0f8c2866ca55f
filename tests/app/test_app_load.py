"""Many visitors at once: 8 gradio_client clients x 5 generations each against `python app.py`
(a subprocess, so its memory is measured alone). Every request is answered with its own seed,
none is lost, and the server's RSS stays bounded from the first round to the last."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
from gradio_client import Client  # noqa: E402

from app.testing import free_port  # noqa: E402
from presto_core.audio import read_wav_settings  # noqa: E402
from tests.factory import make_model_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLIENTS, ROUNDS = 8, 5
MAX_GROWTH_MB = 300

pytestmark = pytest.mark.slow  # a real server and clients (or a browser): tens of seconds


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = make_model_folder(tmp_path_factory.mktemp("load_model"), variants=("base", "presto-ls"))
    port = free_port()
    log = open(tmp_path_factory.mktemp("load_log") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(model), "--device", "cpu", "--port", str(port),
                             "--concurrency", "2", "--max-queue", "64", "--no-calibrate"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            Client(url, verbose=False)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"server did not start: {log.read()[-2000:]}")
            time.sleep(1)
    yield url, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def rss_mb(proc) -> float:
    p = psutil.Process(proc.pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


def test_concurrent_clients_all_answered_and_memory_bounded(server):
    url, proc = server
    clients = [Client(url, verbose=False) for _ in range(CLIENTS)]
    results, errors = {}, []
    rss = []
    for r in range(ROUNDS):
        barrier = threading.Barrier(CLIENTS)

        def one(i, r=r):
            seed = 1000 * i + r
            try:
                barrier.wait()
                files, report, _ = clients[i].predict(prompt=f"client {i} round {r}", bpm=100, duration=1.0,
                                                      variant="presto-ls", steps=1, num_clips=1, reject_ratio=0.0,
                                                      seed=seed, drop_schedule="", api_name="/generate")
                results[(i, r)] = (files, report, seed)
            except Exception as e:  # noqa: BLE001
                errors.append(f"client {i} round {r}: {e!r}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        rss.append(rss_mb(proc))
    assert not errors, errors
    assert len(results) == CLIENTS * ROUNDS  # none lost
    for (i, r), (files, report, seed) in results.items():
        assert len(files) == 1 and report["settings"]["seed"] == seed
        assert read_wav_settings(files[0])["prompt"] == f"client {i} round {r}"
    assert proc.poll() is None, "server died"
    growth = rss[-1] - rss[0]
    print(f"server RSS per round (MB): {[round(x) for x in rss]}")
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.0f} MB from round 1 to {ROUNDS}: {rss}"

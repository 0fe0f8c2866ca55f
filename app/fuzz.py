"""Seeded fuzzing of a running app's raw HTTP API: bad values for every input of every endpoint,
malformed files and file payloads, malformed bodies and unknown API names. Each answer is
classified as accepted, a clear message, an unclear one (Gradio/pydantic internals, component
reprs, server paths), an internal error (HTTP 500, "... failed (TypeError ...)") or a hang.

``python -m app.fuzz [--model DIR] [--num 2000] [--seed 0]`` serves the model in-process, runs the
cases, then 200 rejected requests from new sessions (RSS growth), the largest allowed request
(peak RSS) and a cancelled long job (time until the model serves again), and prints a table.
The test suite runs the same cases at 500 inputs on a micro model (tests/app/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from gradio_client import Client

from app.testing import serve
from presto_core.generate import default_model

API = "gradio_api"
SR = 16000
_UNCLEAR = re.compile(r"validation error for|didn't receive enough|Traceback|<gradio\.|object at 0x|"
                      r"unhashable|KeyError|AttributeError|TypeError|IndexError|NoneType|"
                      r"(?<![\w.])/(?:tmp|root|home|work|usr|etc|var)/", re.I)
_INTERNAL = re.compile(r"^(Generation|Loop export|Reading the settings|Extending|Replacing bars) failed \(", re.I)
GENERIC = [None, "", "abc", [], [1, 2], {}, {"a": 1}, True, False, -1, 0, 1e308, -1e308, "NaN", "inf", 3.5,
           10 ** 30, "\ud800", "x" * 10000, float("nan"), float("inf")]
EDGES = {
    "prompt": ["   ", "piano \ud800 chords", "é" * 501, "🎹" * 501, 42, ["piano"], "\x00"],
    "bpm": [39.9, 240.1, "fast", -120],
    "duration_mode": ["minutes", "SECONDS", 1],
    "duration": [0.5, 32.5, 0, -3],
    "bars": [0, 1000, 2.5, -1],
    "time_signature": ["5/4", "4/0", "", 4],
    "variant": ["nope", "BASE", 0, ["base"]],
    "steps": [0, 101, 2.5, -1],
    "rho": [0.99, 1000.1, 0],
    "reject_ratio": [0.95, -0.1, 1],
    "num_clips": [0, 9, 1.5],
    "seed": [-2, 2 ** 31, 1.5, "12x"],
    "drop_schedule": ["1,2,3", "a,b,c,d,e", "30,0,0,0,0", "1.5,0,0,0,0", [1, 2, 3, 4, 5, 6], 7],
    "stereo": ["yes", 1, [True]],
    "strength": [0, 1.5, -0.5],
    "rho_values": ["", "1,2,3,4,5,6,7,8,9", "0.5", "a, b", "7, 5000", [], [1, "x"]],
    "variant_a": ["nope", ["base"], {"v": 1}],
    "variant_b": ["nope", 3],
    "own_steps": ["yes", 2, None],
    "crossfade_ms": [-1, 1e6, "ten"],
    "loop": ["yes", 2, [True]],
    "mode": ["loop", "MADE TO LOOP", 1],
    "source_bpm": [39, 241, "slow"],
    "bar_from": [0, 2, 1.5, -1, 1000],
    "bar_to": [0, 3, 1.5, 1000],
    "adapters": ["salsa:1", "none:1", ":", "a:b:c", ",,,", 5, ["calypso"], {"calypso": 1}],
    "compare": ["adapted vs plain", "both", 1, None],
}
BAD_PAYLOADS = [{"path": 5, "meta": {"_type": "gradio.FileData"}}, "file.wav", 5, [], {"meta": {"_type": "gradio.FileData"}},
                {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, {"path": "/etc/passwd"},
                {"path": "../../etc/hostname", "meta": {"_type": "gradio.FileData"}},
                {"url": "http://127.0.0.1:9/x.wav", "path": None, "meta": {"_type": "gradio.FileData"}}]
BODIES = ["not json", "{}", '{"data": 5}', '{"data": null}', "[1, 2]", '{"data": "x"}', '{"dat": []}', ""]


@dataclass
class Tally:
    """Counts of the outcomes and the first few examples of each bad one."""

    counts: dict = field(default_factory=lambda: dict(tried=0, accepted=0, clear=0, unclear=0, internal=0, hangs=0))
    examples: dict = field(default_factory=dict)

    def add(self, kind: str, case: str, message: str) -> None:
        self.counts["tried"] += 1
        self.counts[kind] += 1
        if kind in ("unclear", "internal", "hangs"):
            self.examples.setdefault(kind, []).append(f"{case}: {message[:300]}")


def classify(status: int, message: str | None) -> str:
    """'accepted' | 'clear' | 'unclear' | 'internal' for one answer (HTTP status, message or None)."""
    if status >= 500:
        return "internal"
    if status == 200 and message is None:
        return "accepted"
    if not message or not message.strip():
        return "unclear"
    if _INTERNAL.search(message):
        return "internal"
    return "unclear" if _UNCLEAR.search(message) else "clear"


def make_files(folder: Path) -> dict[str, Path]:
    """Good and bad audio files to upload (small; the long one is silence, which FLAC packs)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(2 * SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    out = {}

    def wav(name, data, sr=SR, **kw):
        out[name] = folder / name
        sf.write(out[name], data, sr, **kw)

    wav("mono.wav", tone)
    wav("stereo.wav", np.stack([tone, tone[::-1]], 1))
    wav("six.wav", np.zeros((SR, 6), np.float32))
    wav("rate4k.wav", tone[:8000], 4000)
    wav("nan.wav", np.full(SR, np.nan, np.float32), subtype="FLOAT")
    wav("eight_192k.flac", np.zeros((19200, 8), np.float32), 192000)
    wav("long.flac", np.zeros(8000 * 600, np.float32), 8000)  # ten minutes
    (folder / "text.wav").write_text("hello, not audio")
    out["text.wav"] = folder / "text.wav"
    (folder / "truncated.wav").write_bytes(out["mono.wav"].read_bytes()[:30])
    out["truncated.wav"] = folder / "truncated.wav"
    (folder / "empty.wav").write_bytes(b"")
    out["empty.wav"] = folder / "empty.wav"
    for i, comment in enumerate(["2019", "[1,2,3]", '"hello"', "NaN", '{"bpm": "fast"}', "{not json"]):
        name = f"comment{i}.wav"
        with sf.SoundFile(folder / name, "w", SR, 1) as f:
            f.comment = comment
            f.write(tone)
        out[name] = folder / name
    return out


class Fuzzer:
    """Cases against one served app at ``url`` (ending in '/')."""

    def __init__(self, url: str, files: dict[str, Path], seed: int = 0, timeout: float = 120.0):
        self.url, self.rng, self.timeout = url, random.Random(seed), timeout
        self.http = httpx.Client(timeout=timeout)
        info = self.call("info", [])[1]
        self.variant = json.loads(info)[0]["default_variant"] if info else "presto-ls"
        self.uploads = {name: self.upload(path) for name, path in files.items()}

    # -- HTTP ---------------------------------------------------------------------------------
    def upload(self, path: Path) -> dict | None:
        with open(path, "rb") as f:
            r = self.http.post(f"{self.url}{API}/upload", files={"files": (path.name, f)})
        if r.status_code != 200:
            return None
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}

    def post(self, api: str, body: str) -> tuple[int, str | None]:
        """(status, error message or None when the job completed) for a raw body."""
        r = self.http.post(f"{self.url}{API}/call/{api}", content=body.encode("utf-8", "surrogatepass"),
                           headers={"content-type": "application/json"})
        if r.status_code != 200:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            return r.status_code, detail if isinstance(detail, str) else json.dumps(detail)
        event = r.json()["event_id"]
        text = self.http.get(f"{self.url}{API}/call/{api}/{event}").text
        kind = re.findall(r"^event: (\w+)", text, re.M)
        data = re.findall(r"^data: (.*)$", text, re.M)
        if kind and kind[-1] == "complete":
            out = json.loads(data[-1]) if data else None
            # /estimate answers a bad request with its message as the result ("⚠️ ...")
            if api == "estimate" and isinstance(out, list) and out and str(out[0]).startswith("⚠️"):
                return 200, str(out[0])[2:].strip()
            return 200, None
        payload = json.loads(data[-1]) if data and data[-1] not in ("", "null") else None
        message = payload.get("error") if isinstance(payload, dict) else None
        return 200, message or ""

    def call(self, api: str, data: list) -> tuple[int, str | None]:
        """A JSON call; returns (status, message) and, for /info, the data as the message."""
        if api == "info":
            r = self.http.post(f"{self.url}{API}/call/info", json={"data": []})
            text = self.http.get(f"{self.url}{API}/call/info/{r.json()['event_id']}").text
            return 200, re.findall(r"^data: (.*)$", text, re.M)[-1]
        # json.dumps keeps NaN/inf tokens and escapes lone surrogates, as a careless client would send
        return self.post(api, json.dumps({"data": data}))

    # -- cases --------------------------------------------------------------------------------
    def valid(self, api: str) -> tuple[list[str], list]:
        """(input names, a valid quick input list) of an endpoint."""
        gen = dict(prompt="dusty boom bap drums", bpm=96, duration_mode="seconds", duration=1.0, bars=4,
                   time_signature="4/4", variant=self.variant, steps=1, rho=7.0, reject_ratio=0.0, num_clips=1,
                   seed=7, drop_schedule="", stereo=None, loop=False, adapters=None)
        src = self.uploads["mono.wav"]
        edit = dict(prompt="dusty boom bap drums", source_bpm=120, time_signature="4/4", variant=self.variant,
                    steps=1, rho=7.0, seed=7, stereo=False, strength=None, adapters=None)
        table = {
            "generate": gen,
            "estimate": gen,
            "variation": {"init_audio": src, "strength": 0.5, **gen},
            "rho_sweep": {"rho_values": "3, 7", **{k: gen[k] for k in ("prompt", "bpm", "duration_mode", "duration",
                          "bars", "time_signature", "variant")}, "steps": 1, "seed": 7, "drop_schedule": "",
                          "stereo": None, "adapters": None},
            "ab_compare": {"variant_a": self.variant, "variant_b": self.variant, "own_steps": False,
                           **{k: gen[k] for k in ("prompt", "bpm", "duration_mode", "duration", "bars",
                                                  "time_signature", "steps", "rho", "seed", "stereo",
                                                  "adapters")}, "compare": "two variants"},
            "export_loop": {"clip": src, "bpm": 120, "time_signature": "4/4", "bars": 0, "crossfade_ms": 10,
                            "mode": "cut and crossfade", "prompt": "dusty boom bap drums", "variant": self.variant,
                            "seed": 7, "adapters": None},
            "extend": {"clip": src, "bars": 1, **edit},
            "replace_bars": {"clip": src, "bar_from": 1, "bar_to": 1, **edit},
            "settings_from_wav": {"file": src},
        }
        d = table[api]
        return list(d), list(d.values())

    def case(self) -> tuple[str, str, str]:
        """(label, outcome, message) of one random case."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            api = rng.choice(["generate", "variation", "export_loop", "nope", "Generate", "info2", "x" * 200])
            status, msg = self.post(api, rng.choice(BODIES))
            return f"body {api}", classify(status, msg), msg or ""
        if roll < 0.07:
            name = rng.choice(["nope", "generate_", "admin", "predict", "reset", "%2e%2e"])
            status, msg = self.call(name, [])
            return f"name {name}", classify(status, msg), msg or ""
        api = rng.choice(["generate", "generate", "variation", "rho_sweep", "ab_compare", "export_loop",
                          "settings_from_wav", "estimate", "extend", "replace_bars"])
        names, data = self.valid(api)
        label = api
        if roll < 0.12:
            cut = rng.randrange(len(data))
            data = data[:cut]
            label += f" first {cut} inputs"
        else:
            for _ in range(1 if rng.random() < 0.8 else 2):
                i = rng.randrange(len(names))
                name = names[i]
                if name in ("init_audio", "clip", "file"):
                    if rng.random() < 0.6:
                        which = rng.choice(sorted(self.uploads))
                        value = self.uploads[which]
                        label += f" {name}={which}"
                    else:
                        value = rng.choice(BAD_PAYLOADS)
                        label += f" {name}={str(value)[:60]}"
                else:
                    value = rng.choice(EDGES.get(name, []) + GENERIC)
                    label += f" {name}={str(value)[:40]!s}"
                data[i] = value
        status, msg = self.call(api, data)
        return label, classify(status, msg), msg or ""

    def run(self, n: int, tally: Tally | None = None) -> Tally:
        tally = tally or Tally()
        for _ in range(n):
            try:
                label, outcome, msg = self.case()
            except httpx.TimeoutException:
                label, outcome, msg = "timeout", "hangs", "no answer"
            tally.add(outcome, label, msg)
        return tally

    def good_request_works(self) -> bool:
        return self.call("generate", self.valid("generate")[1])[1] is None


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-large", action="store_true", help="skip the largest-request and cancel checks")
    args = p.parse_args(argv)
    model = args.model or str(default_model())
    with tempfile.TemporaryDirectory() as tmp, serve(model) as (url, demo, engine):
        fz = Fuzzer(url, make_files(Path(tmp) / "files"), seed=args.seed)
        t0 = time.perf_counter()
        tally = fz.run(args.num)
        fuzz_s = time.perf_counter() - t0
        good = fz.good_request_works()
        rows = [("inputs tried", tally.counts["tried"]), ("accepted (valid after all)", tally.counts["accepted"]),
                ("clear messages", tally.counts["clear"]), ("unclear messages", tally.counts["unclear"]),
                ("internal errors", tally.counts["internal"]), ("hangs", tally.counts["hangs"]),
                ("a good request afterwards", "ok" if good else "FAILED"), ("fuzz wall time (s)", f"{fuzz_s:.0f}")]
        # 200 rejected requests, each from a new session (every raw /call is one)
        bad = fz.valid("generate")[1]
        bad[1] = 1000  # bpm out of range
        for _ in range(20):
            fz.call("generate", bad)
        before = rss_mb()
        for _ in range(200):
            fz.call("generate", bad)
        after = rss_mb()
        rows += [("RSS before 200 rejected new-session requests (MB)", f"{before:.0f}"),
                 ("RSS after (MB)", f"{after:.0f}"), ("growth (MB)", f"{after - before:+.0f}")]
        if not args.skip_large:
            names, data = fz.valid("generate")
            big = dict(zip(names, data), duration=engine.pipe.max_duration, num_clips=8, reject_ratio=0.75)
            start_peak = peak_rss_mb()
            status, msg = fz.call("generate", list(big.values()))
            rows += [("largest request (32 candidates x 32 s)", "ok" if msg is None else msg[:80]),
                     ("peak RSS of the server process (MB)", f"{max(start_peak, peak_rss_mb()):.0f}")]
            client = Client(url, verbose=False)
            job = client.submit(**{**big, "steps": 40}, api_name="/generate")
            t_start = time.perf_counter()
            while job.status().code.name not in ("PROCESSING", "FINISHED") and time.perf_counter() - t_start < 60:
                time.sleep(0.05)
            time.sleep(1.0)
            job.cancel()
            t = time.perf_counter()
            ok = fz.good_request_works()
            rows += [("cancelled job: seconds until a quick request is served", f"{time.perf_counter() - t:.1f}"
                      + ("" if ok else " (FAILED)"))]
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    for kind, ex in tally.examples.items():
        print(f"\n{kind}: {len(ex)}")
        for line in ex[:10]:
            print("  " + line)
    return 0 if not (tally.counts["unclear"] or tally.counts["internal"] or tally.counts["hangs"]) and good else 1


if __name__ == "__main__":
    raise SystemExit(main())

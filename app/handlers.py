"""Event handlers: what a person typed (:class:`Controls`, built once per call from the endpoint's
inputs) -> one validated request (:meth:`Handlers.request`, the app's only validation) -> the
engine -> files, report and page updates. Every endpoint is wrapped by :func:`guarded`: PrestoError
becomes a gr.Error with its message (which names the allowed range) and anything unexpected becomes
a gr.Error saying generation failed, so the server keeps serving.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import numpy as np
import soundfile as sf
import torch

from presto_core.audio import read_wav_settings, write_wav
from presto_core.errors import PrestoError, check_bool, check_choice, check_number, shown
from presto_core.editing import EditRequest
from presto_core.request import LIMITS, GenerationRequest, ValidatedRequest

from app import results as R
from app.api_guard import JobCancelled, job_alive, scrub_paths
from app.edit_figure import edit_figure
from app.engine import Engine
from presto_core.music import TIME_SIGNATURES, bars_to_seconds, loop_on_bars, parse_time_signature

log = logging.getLogger("presto.app")
MAX_SWEEP = 8
LOOP_MODES = ("cut and crossfade", "made to loop")
LOOP_MAX_SECONDS = 120.0  # a loop is cut from at most this much of an upload (the rest is not decoded)
UPLOAD_RATES = (8000, 192000)  # Hz
DURATION_MODES = ("seconds", "bars")
AB_MODES = ("two variants", "adapted vs plain")
# Overall progress fraction at the start of each pipeline stage.
_STAGE_SPAN = {"text": (0.0, 0.05), "generation": (0.05, 0.85), "decoding": (0.85, 0.92), "clap": (0.92, 0.97)}


def guarded(fn=None, *, failed: str = "Generation failed"):
    """PrestoError -> gr.Error(message); other exceptions -> logged, gr.Error('<failed> ...'). Server
    paths in messages are cut to their last part. Use as ``@guarded`` or ``@guarded(failed=...)``."""
    if fn is None:
        return functools.partial(guarded, failed=failed)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except JobCancelled as e:
            raise gr.Error(str(e), title="Cancelled", print_exception=False) from None
        except PrestoError as e:
            raise gr.Error(scrub_paths(str(e)), title="Please check the settings", print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the server must outlive any one request
            log.exception("request failed")
            if type(e).__name__ == "OutOfMemoryError" or isinstance(e, MemoryError):
                _free_gpu()
                msg = "out of memory; lower the duration, the number of clips or the rejection ratio"
            else:
                msg = scrub_paths(f"{type(e).__name__}: {e}")
            raise gr.Error(f"{failed} ({msg}). The server is still running; please try again.",
                           title=failed) from None

    return wrapper


def _free_gpu():
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def parse_seed(seed):
    """None, '' or -1 -> None (random); else an integer in the allowed range."""
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        return None
    if isinstance(seed, str):
        try:
            seed = float(seed)
        except ValueError:
            raise PrestoError(f"seed must be -1 (random) or an integer in [0, {LIMITS['seed'][1]}], "
                              f"got {shown(seed)}") from None
    if isinstance(seed, (int, float)) and not isinstance(seed, bool) and seed == -1:
        return None
    try:
        return check_number("seed", seed, *LIMITS["seed"], integer=True)
    except PrestoError:
        raise PrestoError(f"seed must be -1 (random) or an integer in [0, {LIMITS['seed'][1]}], got {shown(seed)}") from None


def parse_drop_schedule(text):
    """'' / None -> None (the variant's own); '12, 8, 8, 0, 0' or a list -> tuple of 5 ints."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    message = ("layer budget must be 5 comma-separated integers in [0, 27] (blocks dropped per noise quintile, "
               f"noisiest first, e.g. '14, 12, 8, 4, 0'), got {shown(text)}")
    try:
        items = text.replace(";", ",").replace(" ", ",").split(",") if isinstance(text, str) else list(text)
        vals = [float(v) for v in items if not (isinstance(v, str) and not v.strip())]
    except (TypeError, ValueError):
        raise PrestoError(message) from None
    if len(vals) != 5 or any(not v.is_integer() for v in vals):
        raise PrestoError(message)
    return tuple(int(v) for v in vals)


def _progress_fn(progress, lo: float = 0.0, hi: float = 1.0, label: str = ""):
    """Map the pipeline's (stage, i, n) callback onto gr.Progress over [lo, hi]."""

    def cb(stage, i, n):
        # Called between sampler steps and stages: a job cancelled or abandoned by its page stops
        # here and frees the model for the next request, instead of running to the end unseen.
        if not job_alive():
            raise JobCancelled("the request was cancelled or its page was closed; nothing was written")
        a, b = _STAGE_SPAN.get(stage, (0.97, 1.0))
        frac = a + (b - a) * (i / n if n else 0.0)
        desc = f"{label}{stage}" + (f" step {i}/{n}" if stage == "generation" else "")
        progress(lo + (hi - lo) * frac, desc=desc)

    return cb


@dataclass(frozen=True)
class Controls:
    """The Generate tab's controls as the page (or an API client) sent them, unchecked: the one
    object that travels from an endpoint to :meth:`Handlers.request`. ``duration`` is in seconds
    when ``duration_mode`` is "seconds", else ``bars`` of ``time_signature`` at ``bpm`` set it;
    ``seed`` -1/None/'' is random; ``drop_schedule`` is text like '14, 12, 8, 4, 0' or empty;
    ``stereo`` True/False is the Stereo switch (None: stereo when the model can); ``loop`` makes the
    clip loop (whole bars)."""

    prompt: Optional[str]
    bpm: Any
    duration_mode: str
    duration: Any
    bars: Any
    time_signature: str
    variant: Optional[str]
    steps: Any
    rho: Any
    reject_ratio: Any
    num_clips: Any
    seed: Any
    drop_schedule: Any
    stereo: Any = None
    loop: Any = False
    adapters: Any = None

    @classmethod
    def from_inputs(cls, inputs: dict, **overrides) -> "Controls":
        """Controls from an endpoint's arguments (its ``locals()``): the fields it has, then
        ``overrides`` (for the controls a tab does not send). Other names are ignored."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{**{k: inputs[k] for k in names if k in inputs}, **overrides})


class Handlers:
    """Endpoints over one Engine; output files go to a RunStore. The endpoints' parameter lists
    are the public API (gradio_client names the arguments after them)."""

    def __init__(self, engine: Engine, store: R.RunStore):
        self.engine = engine
        self.store = store

    # -- inputs -------------------------------------------------------------------------------
    def duration_of(self, c: Controls) -> float:
        """Seconds of audio the controls ask for (bars converted at the tempo)."""
        check_choice("duration mode", c.duration_mode, DURATION_MODES)
        parse_time_signature(c.time_signature)
        if c.duration_mode == "seconds":
            return c.duration
        bpm = check_number("bpm", c.bpm, *LIMITS["bpm"])
        return bars_to_seconds(c.bars, bpm, c.time_signature, self.engine.pipe.max_duration)

    def request(self, c: Controls, **extra) -> ValidatedRequest:
        """The validated request for the controls (``extra``: init audio and strength of a
        variation). This is the app's one validation; raises PrestoError naming the range."""
        req = GenerationRequest(
            prompt="" if c.prompt is None else c.prompt, bpm=c.bpm, duration=self.duration_of(c),
            steps=None if c.steps in (None, "") else c.steps, rho=c.rho, reject_ratio=c.reject_ratio,
            seed=parse_seed(c.seed), num_clips=c.num_clips, variant=c.variant or None,
            drop_schedule=parse_drop_schedule(c.drop_schedule), stereo=c.stereo,
            loop=False if c.loop in (None, "") else c.loop, time_signature=c.time_signature, **extra)
        return self.engine.validate(req)

    def weights(self, c: Controls) -> tuple[float, ...]:
        """The adapter weights the controls ask for (None: the server's start-up weights)."""
        return self.engine.adapter_weights(c.adapters)

    # -- endpoints ----------------------------------------------------------------------------
    @guarded
    def generate(self, prompt, bpm, duration_mode, duration, bars, time_signature, variant, steps, rho,
                 reject_ratio, num_clips, seed, drop_schedule, stereo=None, loop=False, adapters=None,
                 progress=gr.Progress()):
        """Generate clips (``loop``: each made to loop, whole bars; ``adapters``: 'name:weight, ...',
        'none' for the plain model, None for the server's start-up mix); returns (record for the page,
        WAV files, report JSON, latency text)."""
        c = Controls.from_inputs(locals())
        return self._run(self.request(c), c.time_signature, "generate", progress, self.weights(c))

    @guarded
    def variation(self, init_audio, strength, prompt, bpm, duration_mode, duration, bars, time_signature, variant,
                  steps, rho, reject_ratio, num_clips, seed, drop_schedule, stereo=None, loop=False, adapters=None,
                  progress=gr.Progress()):
        """Regenerate from ``init_audio`` (a file; a stereo one is mixed down to mono for encoding) at
        noise level ``strength`` (0.01 .. 1); the clip's own length (up to the model's maximum)
        replaces the duration control."""
        c = Controls.from_inputs(locals())
        audio, sr = self._read_audio(init_audio, "a variation needs a source clip: upload one or press "
                                                 "'Vary' under a result", max_seconds=self.engine.pipe.max_duration)
        dur = min(max(audio.shape[-1] / sr, LIMITS["duration"][0]), self.engine.pipe.max_duration)
        req = self.request(dataclasses.replace(c, duration_mode="seconds", duration=round(dur, 3)),
                           init_audio=audio, init_sr=sr, strength=strength)
        return self._run(req, c.time_signature, "variation", progress, self.weights(c))

    def _run(self, req, time_signature, kind, progress, weights):
        (expected,) = self.engine.check_work([req])
        progress(0.0, desc="waiting for the model")
        result = self.engine.generate(req, progress=_progress_fn(progress), adapters=weights)
        progress(0.97, desc="writing files")
        run = self.store.new_run(kind)
        entries = R.write_result(run, result, time_signature)
        record = {"kind": kind, "clips": entries, "seed": result.settings["seed"]}
        files = [e["wav"] for e in entries]
        rep = R.report(entries, result, expected, device=self.engine.device)
        return record, files, rep, R.latency_markdown(result, expected)

    @guarded
    def rho_sweep(self, rho_values, prompt, bpm, duration_mode, duration, bars, time_signature, variant, steps,
                  seed, drop_schedule, stereo=None, adapters=None, progress=gr.Progress()):
        """The same prompt and seed at several rho values (paper A.5), one clip each, no rejection."""
        rhos = parse_rho_list(rho_values)
        seed = parse_seed(seed)
        seed = secrets.randbelow(LIMITS["seed"][1]) if seed is None else seed
        c = Controls.from_inputs(locals(), rho=7.0, reject_ratio=0.0, num_clips=1)
        reqs = [self.request(dataclasses.replace(c, rho=r)) for r in rhos]
        weights = self.weights(c)
        self.engine.check_work(reqs)
        base = reqs[0]
        note = None
        if base.steps <= 2:
            note = (f"with {base.steps} step(s) the noise schedule is [sigma_max, sigma_min] whatever rho, so these "
                    "clips only differ by chance; use 3 steps or more to see rho's effect")
            gr.Warning(note.replace("sigma_", "σ_").replace("rho", "ρ"))
        run = self.store.new_run("sweep")
        entries, rows = [], []
        for k, req in enumerate(reqs):
            label = f"ρ = {req.rho:g}"
            result = self.engine.generate(req, progress=_progress_fn(progress, k / len(reqs), (k + 1) / len(reqs),
                                                                    f"{label}: "), adapters=weights)
            (entry,) = R.write_result(run, result, time_signature, prefix=f"rho_{req.rho:g}")
            entry.update(title=label, latency=R.short_latency(result), timings=R.timings_dict(result))
            entries.append(entry)
            rows.append({"rho": req.rho, "file": entry["name"] + ".wav", "clap_score": entry["clap_score"],
                         "tempo_bpm": entry["tempo_bpm"], "timings": entry["timings"],
                         "sigmas": [round(s, 5) for s in self.engine.pipe.schedule(req).tolist()]})
        record = {"kind": "sweep", "clips": entries, "seed": seed}
        rep = {"seed": seed, "variant": base.variant, "steps": base.steps, "prompt": base.prompt, "runs": rows,
               "note": note}
        return record, [e["wav"] for e in entries], rep

    @guarded
    def ab_compare(self, variant_a, variant_b, own_steps, prompt, bpm, duration_mode, duration, bars,
                   time_signature, steps, rho, seed, stereo=None, adapters=None, compare=AB_MODES[0],
                   progress=gr.Progress()):
        """Two clips on the same prompt and seed, one each. ``compare`` "two variants": A and B are
        ``variant_a`` and ``variant_b`` with the adapter mix ``adapters``; "adapted vs plain": both are
        ``variant_a``, A with the mix (at least one adapter on) and B without. ``own_steps`` runs each at
        its variant's default step count (else both at ``steps``)."""
        compare = check_choice("compare", compare, AB_MODES)
        for name, v in (("variant A", variant_a), ("variant B", variant_b)):
            check_choice(name, v, self.engine.variants)
        own_steps = check_bool("'each at its own default steps'", own_steps)
        seed = parse_seed(seed)
        seed = secrets.randbelow(LIMITS["seed"][1]) if seed is None else seed
        c = Controls.from_inputs(locals(), variant=None, reject_ratio=0.0, num_clips=1, drop_schedule=None)
        mix = self.weights(c)
        if compare == AB_MODES[0]:
            sides = (("A", variant_a, mix), ("B", variant_b, mix))
        else:
            if not any(mix):
                have = ", ".join(self.engine.mix.names) or "none: start the app with --adapter DIR[:WEIGHT]"
                raise PrestoError(f"'adapted vs plain' needs an adapter with a weight above 0 (this server's "
                                  f"adapters: {have})")
            sides = (("A", variant_a, mix), ("B", variant_a, self.engine.mix.plain))
        reqs = {side: self.request(dataclasses.replace(c, variant=v, steps=None if own_steps else c.steps))
                for side, v, _ in sides}
        self.engine.check_work(list(reqs.values()))
        run = self.store.new_run("ab")
        entries, rows = [], {}
        for k, (side, v, weights) in enumerate(sides):
            req = reqs[side]
            result = self.engine.generate(req, progress=_progress_fn(progress, k / 2, (k + 1) / 2, f"{side}: "),
                                          adapters=weights)
            (entry,) = R.write_result(run, result, c.time_signature, prefix=f"{side}_{v}", extra={"ab_side": side})
            title = f"{side}: {self.engine.label(v)} · {req.steps} steps"
            if self.engine.mix.names:
                title += f" · {self.engine.mix.describe(weights)}"
            entry.update(title=title, latency=R.latency_markdown(result), timings=R.timings_dict(result))
            entries.append(entry)
            rows[side] = {"variant": v, "steps": req.steps, "adapters": self.engine.mix.format(weights),
                          "file": entry["name"] + ".wav", "clap_score": entry["clap_score"],
                          "tempo_bpm": entry["tempo_bpm"], "timings": entry["timings"]}
        record = {"kind": "ab", "clips": entries, "seed": seed}
        return record, [e["wav"] for e in entries], {"seed": seed, "compare": compare, **rows}

    @guarded(failed="Loop export failed")
    def export_loop(self, clip, bpm, time_signature, bars, crossfade_ms, mode=LOOP_MODES[0], prompt=None,
                    variant=None, seed=None, adapters=None, progress=gr.Progress()):
        """Cut ``clip`` to whole bars from its start (bars 0 = as many as fit). ``mode`` "cut and
        crossfade" fades the seam (``crossfade_ms``); "made to loop" regenerates the audio around the
        seam with the model so the end flows into the start (the clip's prompt, or ``prompt``). A
        stereo clip gives a stereo loop. The tempo stored in a generated clip's metadata wins over
        ``bpm``. ``adapters``: the adapter mix of a "made to loop" regeneration, as in generate."""
        mode = check_choice("loop mode", mode, LOOP_MODES)
        weights = self.engine.adapter_weights(adapters)
        audio, sr = self._read_audio(clip, "loop export needs a clip: upload one or pick a result",
                                     max_seconds=LOOP_MAX_SECONDS)
        settings = _wav_settings(clip)
        bpm = settings.get("bpm", bpm)
        bpm = check_number("bpm", bpm, *LIMITS["bpm"])
        bars = 0 if bars in (None, "") else bars
        if mode == LOOP_MODES[0]:
            loop, used = loop_on_bars(audio, sr, bpm, time_signature, bars, crossfade_ms)
            extra = {"loop_crossfade_ms": crossfade_ms, "loop_mode": mode}
        else:
            text = prompt if isinstance(prompt, str) and prompt.strip() else settings.get("prompt") or prompt
            edit = self.engine.validate_edit(EditRequest(
                kind="loop", source=audio, source_sr=sr, bars=bars or None, prompt="" if text is None else text,
                bpm=bpm, time_signature=time_signature, variant=variant or None, seed=parse_seed(seed),
                stereo=audio.ndim == 2 and self.engine.pipe.has_stereo))
            self.engine.check_edit(edit)
            result = self.engine.edit(edit, progress=_edit_progress(progress), adapters=weights)
            loop, used, sr = result.clips[0].audio, edit.bars, result.sample_rate
            extra = {**result.settings, "loop_mode": mode}
        run = self.store.new_run("loop")
        path = run / f"loop_{used}bars.wav"
        write_wav(path, loop, sr, {**settings, "bpm": bpm, "time_signature": time_signature, "loop_bars": used,
                                   **extra})
        return str(path)

    # -- edits --------------------------------------------------------------------------------
    @guarded(failed="Extending failed")
    def extend(self, clip, bars, prompt, source_bpm, time_signature, variant, steps, rho, seed, stereo=None,
               strength=None, adapters=None, progress=gr.Progress()):
        """Continue ``clip`` (a result or an upload, up to 3 minutes in all) by ``bars`` bars from
        its last complete bar. A clip written by Presto carries its tempo and time signature; any
        other needs ``source_bpm``. Returns the page record (the extended clip, then its source),
        its WAV, the report (windows with their CLAP scores) and the latency line."""
        src = self._edit_source(clip, source_bpm, time_signature)
        weights = self.engine.adapter_weights(adapters)
        edit = self._edit("extend", src, prompt, variant, steps, rho, seed, stereo, strength, bars=bars)
        return self._run_edit(edit, src, f"Extended by {edit.bars} bar{'s' if edit.bars > 1 else ''}", progress,
                              weights)

    @guarded(failed="Replacing bars failed")
    def replace_bars(self, clip, bar_from, bar_to, prompt, source_bpm, time_signature, variant, steps, rho, seed,
                     stereo=None, strength=None, adapters=None, progress=gr.Progress()):
        """Regenerate bars ``bar_from``..``bar_to`` (1-based, inclusive) of ``clip`` from ``prompt``;
        outside them and a 30 ms fade each side the clip is unchanged, sample for sample. Tempo as
        :meth:`extend`. Same outputs."""
        src = self._edit_source(clip, source_bpm, time_signature)
        weights = self.engine.adapter_weights(adapters)
        edit = self._edit("inpaint", src, prompt, variant, steps, rho, seed, stereo, strength,
                          replace=(bar_from, bar_to))
        a, b = edit.replace
        return self._run_edit(edit, src, f"Bars {a}-{b} replaced" if b > a else f"Bar {a} replaced", progress,
                              weights)

    def _edit_source(self, clip, source_bpm, time_signature) -> dict:
        """The clip to edit: audio (mono (N,) or stereo (2, N)), rate, the settings it carries, its
        tempo (its own, else ``source_bpm``; None when neither) and time signature."""
        hi = LIMITS["piece_seconds"][1]
        audio, sr = self._read_audio(clip, "an edit needs a clip: upload one, or press Extend or Replace under a "
                                           "result", max_seconds=hi + 1.0)
        if audio.shape[-1] > hi * sr:
            raise PrestoError(f"the clip lasts more than {hi:g} s; clips of at most {hi:g} s can be edited")
        settings = _wav_settings(clip)
        bpm = settings.get("bpm")
        if bpm is None and source_bpm not in (None, "", 0, -1):
            bpm = source_bpm
        ts = settings.get("time_signature") if settings.get("time_signature") in TIME_SIGNATURES else time_signature
        return {"audio": audio, "sr": sr, "settings": settings, "bpm": bpm, "time_signature": ts}

    def _edit(self, kind, src, prompt, variant, steps, rho, seed, stereo, strength, **extra):
        text = prompt if isinstance(prompt, str) and prompt.strip() else src["settings"].get("prompt", prompt)
        return self.engine.validate_edit(EditRequest(
            kind=kind, source=src["audio"], source_sr=src["sr"], prompt="" if text is None else text,
            bpm=src["bpm"], time_signature=src["time_signature"], variant=variant or None,
            steps=None if steps in (None, "") else steps, rho=rho, seed=parse_seed(seed),
            stereo=None if stereo is None else check_bool("stereo", stereo),
            strength=None if strength in (None, "") else strength, **extra))

    def _run_edit(self, edit, src, title, progress, weights):
        expected = self.engine.check_edit(edit)
        progress(0.0, desc="waiting for the model")
        result = self.engine.edit(edit, progress=_edit_progress(progress), adapters=weights)
        progress(0.97, desc="writing files")
        run = self.store.new_run(edit.kind)
        ts = edit.time_signature
        clip = result.clips[0]
        settings = {**result.settings, "candidate": 0, "time_signature": ts,
                    "clap_score": None if clip.clap_score is None else round(float(clip.clap_score), 4)}
        entry = R.write_clip(run, "edit", clip.audio, result.sample_rate, settings, ts)
        entry["png"] = str(edit_figure(edit.audio, clip.audio, result.sample_rate, result.changed,
                                       run / "edit_changes.png"))
        entry.update(title=title, latency=R.latency_markdown(result, expected))
        source_settings = {**src["settings"], "bpm": edit.gen.bpm, "time_signature": ts}
        source_settings.setdefault("prompt", edit.gen.prompt)
        audio = edit.audio if edit.audio.shape[0] == 2 else edit.audio[0]
        source = R.write_clip(run, "source", audio, result.sample_rate, source_settings, ts)
        source.update(title="Source")
        record = {"kind": edit.kind, "clips": [entry, source], "seed": result.settings["seed"]}
        windows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in w.items()} for w in result.windows]
        rep = R.report([entry], result, expected, device=self.engine.device, windows=windows,
                       changed_s=[[round(a, 4), round(b, 4)] for a, b in result.changed])
        return record, [entry["wav"]], rep, R.latency_markdown(result, expected, label=title)

    @guarded(failed="Reading the settings failed")
    def settings_from_wav(self, file):
        """The generation settings stored in a WAV written by this app or the CLI."""
        if not file:
            raise PrestoError("choose a WAV file written by Presto to read its settings")
        settings = read_wav_settings(file)
        if not settings:
            raise PrestoError("this file carries no Presto generation settings (only WAVs downloaded from "
                              "this app or written by presto_core.generate do)")
        return settings

    def estimate(self, prompt, bpm, duration_mode, duration, bars, time_signature, variant, steps, rho,
                 reject_ratio, num_clips, seed, drop_schedule, stereo=None, loop=False, adapters=None) -> str:
        """Expected latency on this device, or the validation problem, as one line of markdown
        (adapters are merged into the weights, so they cost nothing per step)."""
        c = Controls.from_inputs(locals())
        try:
            req = self.request(dataclasses.replace(c, prompt=c.prompt or "estimate"))
            weights = self.weights(c)
        except PrestoError as e:
            return f"⚠️ {e}"
        except Exception as e:  # noqa: BLE001
            return f"⚠️ {type(e).__name__}: {e}"
        try:
            (sec,) = self.engine.check_work([req])
        except PrestoError as e:
            return f"⚠️ {e}"
        cost = self.engine.cost(req)
        dur = f"{req.duration:g} s" if c.duration_mode == "seconds" else \
            f"{int(c.bars)} bars of {c.time_signature} = {req.duration:.2f} s"
        if sec is None:
            eta = "≈ ? s (not calibrated)"
        else:
            eta = f"**≈ {sec:.1f} s**" if sec >= 0.95 else f"**≈ {sec:.2f} s**"
        return (f"{eta} on {self.engine.device} · {dur} · {req.steps} steps · "
                f"{100 * cost.active_fraction:.0f}% of layers active · "
                f"{cost.candidates} candidate(s) → {req.num_clips} kept · {'stereo' if req.stereo else 'mono'}"
                + (f" · adapters: {self.engine.mix.describe(weights)}" if self.engine.mix.names else ""))

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _read_audio(path, missing: str, max_seconds: float):
        """(audio, rate) of an uploaded file, at most its first ``max_seconds``: mono (N,) or stereo
        (2, N) float32. The header is checked before anything is decoded: more than two channels, a
        rate outside [8, 192] kHz or no samples raise PrestoError."""
        if not path:
            raise PrestoError(missing)
        if not isinstance(path, (str, Path)):
            raise PrestoError(f"{missing} (got {shown(path)})")
        try:
            info = sf.info(str(path))
        except Exception:  # noqa: BLE001 - libsndfile's reason names the server path
            raise PrestoError("cannot read the audio file (not a WAV, FLAC or OGG file libsndfile can open, "
                              "or it is damaged); use WAV, FLAC or OGG") from None
        if info.channels > 2:
            raise PrestoError(f"the audio file has {info.channels} channels; upload mono or stereo (1 or 2)")
        lo, hi = UPLOAD_RATES
        if not lo <= info.samplerate <= hi:
            raise PrestoError(f"the audio file's sample rate is {info.samplerate} Hz; use {lo} to {hi} Hz")
        if info.frames <= 0:
            raise PrestoError("the audio file is empty")
        frames = min(info.frames, int(max_seconds * info.samplerate))
        try:
            audio, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
        except Exception:  # noqa: BLE001
            raise PrestoError("cannot decode the audio file (damaged data after its header); use WAV, FLAC "
                              "or OGG") from None
        if audio.shape[0] == 0:
            raise PrestoError("the audio file is empty")
        if not np.isfinite(audio).all():
            raise PrestoError("the audio file has NaN or infinite samples")
        audio = audio[:, 0] if audio.shape[1] == 1 else np.ascontiguousarray(audio.T)
        return audio.astype(np.float32, copy=False), int(sr)


def _wav_settings(path) -> dict:
    """The Presto settings a file carries, or {} for any file without them."""
    try:
        return read_wav_settings(path) or {}
    except Exception:  # noqa: BLE001 - not a WAV with our metadata
        return {}


def _edit_progress(progress):
    """The edits' (stage, i, n) callback onto gr.Progress: one bar across the windows, its text
    naming the window and the sampler step inside it; cancellation as :func:`_progress_fn`."""
    at = {"i": 0, "n": 1}

    def cb(stage, i, n):
        if not job_alive():
            raise JobCancelled("the request was cancelled or its page was closed; nothing was written")
        if stage == "window":
            at.update(i=i, n=max(n, 1))
            progress(0.95 * i / at["n"], desc=f"window {i + 1}/{at['n']}")
        elif stage == "generation":
            frac = (at["i"] + (i / n if n else 0.0)) / at["n"]
            progress(0.95 * frac, desc=f"window {at['i'] + 1}/{at['n']} step {i}/{n}")
        else:
            progress(0.96, desc=stage)

    return cb


def parse_rho_list(text) -> list[float]:
    """'1, 7, 100' (or a list) -> up to MAX_SWEEP distinct rho values, each in [1, 1000]."""
    items = text if isinstance(text, (list, tuple)) else str(text or "").replace(";", ",").split(",")
    out = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            v = float(item)
        except (TypeError, ValueError):
            raise PrestoError(f"rho values must be numbers in [1, 1000] separated by commas, got {shown(item)}") from None
        v = check_number("rho", v, *LIMITS["rho"])
        if all(not math.isclose(v, o) for o in out):
            out.append(v)
    if not 1 <= len(out) <= MAX_SWEEP:
        raise PrestoError(f"a rho sweep takes 1 to {MAX_SWEEP} distinct values, e.g. '1, 3, 7, 30, 100, 1000'; "
                          f"got {len(out)}")
    return out


def apply_settings(settings: dict | None, engine: Engine) -> dict:
    """Control values (by control name) that reproduce ``settings`` from a clip's metadata."""
    if not settings:
        raise PrestoError("no settings to use")
    s = dict(settings)
    variant = s.get("variant") if s.get("variant") in engine.variants else engine.pipe.default_variant
    drop = s.get("drop_schedule")
    ts = s.get("time_signature") if s.get("time_signature") in TIME_SIGNATURES else "4/4"
    return {"prompt": s.get("prompt", ""), "bpm": s.get("bpm", 120.0), "duration_mode": "seconds",
            "duration": s.get("duration", 10.0), "time_signature": ts, "variant": variant,
            "steps": s.get("steps") or engine.default_steps(variant), "rho": s.get("rho", 7.0),
            "reject_ratio": s.get("reject_ratio", 0.0), "num_clips": s.get("num_clips", 1),
            "seed": s.get("seed", -1), "drop_schedule": ", ".join(str(int(c)) for c in drop) if drop else "",
            "stereo": bool(s.get("stereo", False)) and engine.pipe.has_stereo,
            "adapters": _settings_mix(s, engine)}


def _settings_mix(settings: dict, engine: Engine) -> str:
    """The adapter mix a clip was made with, over the adapters this server has (by name; others
    are left out: a clip from another server's adapter replays here without it)."""
    used = {a.get("name"): a.get("weight", 1.0) for a in settings.get("adapters") or [] if isinstance(a, dict)}
    weights = tuple(float(used[n]) if isinstance(used.get(n), (int, float)) and 0 <= used[n] <= 2 else 0.0
                    for n in engine.mix.names)
    return engine.mix.format(weights)

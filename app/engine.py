"""The model side of the app: one loaded PrestoPipeline behind a lock, the speed/quality presets
(steps and layer budget picked together) and a latency model calibrated at start-up.

Latency model, per variant and stage, over the work the pipeline reports for a request
(``PrestoPipeline.cost``):
  text: a constant; generation: per_call * denoiser calls + per_gflop * DiT FLOPs, the FLOPs
  counted from the DiT's shape, the blocks that run at each call's sigma (drop schedule), the
  candidates and the latent frames (attention grows with frames^2); decoding: a + b * frames x
  candidates; CLAP: a + b * seconds of audio x candidates. Three warm-up generations per variant at
  start-up fit the coefficients on the current device; every generation served then nudges a
  common correction factor (load from other processes moves all stages alike).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from presto_core import editing
from presto_core.budget import D3
from presto_core.editing import EditRequest, ValidatedEdit, edit_windows
from presto_core.errors import PrestoError, check_choice
from presto_core.pipeline import GenerationCost, PrestoPipeline
from presto_core.request import LIMITS, GenerationRequest, ValidatedRequest

from app.adapter_mix import AdapterMix

LABELS = {"base": "Base (teacher)", "presto-l": "Presto-L", "presto-s": "Presto-S", "presto-ls": "Presto-LS",
          "ase": "Base + ASE (baseline)"}
ORDER = ("presto-ls", "presto-s", "presto-l", "base", "ase")
# Speed/quality dial: (steps as a multiple of the variant's default, drop counts at the 28-layer scale;
# None = the variant's own schedule). Only variants with budget conditioning use the counts.
QUALITY = {
    "sketch": (0.5, (20, 16, 12, 8, 4)),
    "fast": (0.75, D3),
    "balanced": (1.0, None),
    "best": (2.0, (0, 0, 0, 0, 0)),
}
CUSTOM = "custom"
_LEARN_RATE = 0.3  # weight of the newest generation in the running latency correction
MAX_REQUEST_S = 600.0  # default cap on one request's expected run time on this device
CALIBRATION_BATCH = 4  # clips in the calibration's large-batch run (at 4x the longer duration)


def _nonneg_fit(rows: list[tuple[float, float]], times: list[float]) -> tuple[float, float]:
    """Coefficients (u, v) >= 0 of t = u * x + v * y through the points, least squares in relative
    error (a 0.1 s run and a 100 s run count alike). Falls back to the better one-term fit when
    the two-term solution has a negative coefficient (noisy timings)."""
    x = np.array(rows, dtype=np.float64)
    t = np.array(times, dtype=np.float64)
    w = 1.0 / np.maximum(t, 1e-6)
    cands = []
    sol, *_ = np.linalg.lstsq(x * w[:, None], t * w, rcond=None)
    if (sol >= 0).all():
        cands.append((float(sol[0]), float(sol[1])))
    for j in (0, 1):
        col = x[:, j] * w
        k = float(col @ (t * w) / (col @ col)) if col @ col > 0 else 0.0
        cands.append((max(k, 0.0), 0.0) if j == 0 else (0.0, max(k, 0.0)))

    def err(c):
        return float((((x @ np.array(c)) - t) * w) @ (((x @ np.array(c)) - t) * w))

    return min(cands, key=err)


@dataclass
class Fit:
    a: float = 0.0
    b: float = 0.0

    def __call__(self, work: float) -> float:
        return max(self.a + self.b * work, 0.0)

    @staticmethod
    def from_points(points: list[tuple[float, float]]) -> "Fit":
        """a + b * work through (work, seconds) points, a, b >= 0."""
        a, b = _nonneg_fit([(1.0, w) for w, _ in points], [t for _, t in points])
        return Fit(a, b)


class GenFit:
    """generation seconds = per_call * denoiser calls + per_gflop * DiT GFLOPs (both >= 0)."""

    def __init__(self, per_call: float, per_gflop: float):
        self.per_call, self.per_gflop = per_call, per_gflop

    def __call__(self, work: dict) -> float:
        return self.per_call * work["gen_calls"] + self.per_gflop * work["gen_gflop"]

    def __repr__(self):
        return f"GenFit(per_call={self.per_call:.3g}, per_gflop={self.per_gflop:.3g})"

    @staticmethod
    def from_points(points: list[tuple[dict, float]]) -> "GenFit":
        """Fit through (work, seconds) points; the calibration's points differ in steps, length
        and candidates, so per-call overhead and per-FLOP cost separate."""
        return GenFit(*_nonneg_fit([(w["gen_calls"], w["gen_gflop"]) for w, _ in points], [t for _, t in points]))


class Engine:
    """Owns the pipeline (loaded once, built in app.main) and serialises access to it."""

    def __init__(self, pipe: PrestoPipeline, max_request_s: float = MAX_REQUEST_S, adapters: AdapterMix | None = None):
        if not (isinstance(max_request_s, (int, float)) and max_request_s > 0):
            raise PrestoError(f"--max-request-seconds must be a number > 0, got {max_request_s!r}")
        self.pipe = pipe
        self.mix = adapters or AdapterMix()
        self._served = self.mix.plain  # the pipeline is loaded plain; _serve merges on first use
        if any(self.mix.defaults):  # check every adapter against this model now, not at the first request
            self._serve(self.mix.defaults)
        self.max_request_s = float(max_request_s)
        self._lock = threading.Lock()
        self.fits: dict[str, dict[str, Fit]] = {}
        self.calibration_s = 0.0
        self.correction = 1.0

    # -- variants ---------------------------------------------------------------------------
    @property
    def variants(self) -> list[str]:
        names = self.pipe.variant_names
        known = [v for v in ORDER if v in names]
        return known + [v for v in names if v not in known]

    def label(self, variant: str) -> str:
        return LABELS.get(variant, variant)

    def choices(self) -> list[tuple[str, str]]:
        return [(self.label(v), v) for v in self.variants]

    def spec(self, variant: str):
        return self.pipe.variant_spec(check_choice("model variant", variant, self.variants))

    def has_budget(self, variant: str) -> bool:
        return self.pipe.has_layer_budget(variant)

    def default_steps(self, variant: str) -> int:
        return int(self.spec(variant).steps)

    @property
    def model_name(self) -> str:
        """The model as shown to visitors: a local folder's name (not its server path) or the hub id."""
        src = str(self.pipe.source)
        return Path(src).name if Path(src).is_dir() else src

    @property
    def device(self) -> str:
        return str(self.pipe.device)

    # -- speed/quality dial -----------------------------------------------------------------
    def preset(self, variant: str, quality: str) -> tuple[int, tuple[int, ...] | None]:
        """(steps, drop-schedule override or None) for a dial position on ``variant``."""
        check_choice("quality", quality, QUALITY)
        factor, drop = QUALITY[quality]
        lo, hi = LIMITS["steps"]
        steps = int(min(hi, max(lo, math.floor(self.default_steps(variant) * factor + 0.5))))
        return steps, (tuple(drop) if drop is not None and self.has_budget(variant) else None)

    def cost(self, req: ValidatedRequest) -> GenerationCost:
        """The work the pipeline reports for a validated request (calls, layers, candidates, frames)."""
        return self.pipe.cost(req)

    def active_fraction(self, req: ValidatedRequest) -> tuple[float, int]:
        """(mean fraction of DiT blocks that run per denoiser call, number of calls) for a
        validated request."""
        c = self.pipe.cost(req)
        return c.active_fraction, c.calls

    def _work(self, req: ValidatedRequest) -> dict[str, float]:
        """Work per stage for the latency model: one text encoding, the denoiser calls and DiT
        GFLOPs, decoded latent frames, seconds of audio scored by CLAP and seconds widened to stereo."""
        c = self.pipe.cost(req)
        return {"text": 1.0, "gen_calls": float(c.calls), "gen_gflop": c.dit_gflop,
                "decoding": float(c.decoded_frames), "clap": c.clap_seconds, "stereo": c.stereo_seconds}

    # -- calibration and estimates ----------------------------------------------------------
    def calibrate(self, log=print, durations: tuple[float, float] = (2.0, 8.0), repeats: int = 2) -> None:
        """Warm up, then time three generations per variant: 1 step at a short duration, 2 steps at
        a longer one (the fastest of ``repeats`` runs each, as other load only slows runs down) and
        one of CALIBRATION_BATCH clips at four times the longer duration (at most the model's
        maximum), so that the fit holds for many long candidates as well as for one clip."""
        t0 = time.perf_counter()
        self.generate(self.validate(GenerationRequest(prompt="warm-up", duration=1.0, steps=1, seed=0)))
        lo, hi = (min(d, self.pipe.max_duration) for d in durations)
        long = min(4 * hi, self.pipe.max_duration)  # long clips cost more per FLOP at a large batch
        for v in self.variants:
            pts = []
            for steps, dur, clips, reps in ((1, lo, 1, repeats), (2, hi, 1, repeats), (1, long, CALIBRATION_BATCH, 1)):
                req = self.validate(GenerationRequest(prompt="warm-up", duration=dur, steps=steps, seed=0, variant=v,
                                                      num_clips=clips))
                runs = [self.generate(req).timings for _ in range(max(1, reps))]
                pts.append((self._work(req), {k: min(r.get(k, 0.0) for r in runs) for k in runs[0]}))
            fits = {k: Fit.from_points([(w[k], t.get(k, 0.0)) for w, t in pts]) for k in ("decoding", "clap", "stereo")}
            fits["text"] = Fit(min(t["text"] for _, t in pts), 0.0)
            fits["generation"] = GenFit.from_points([(w, t["generation"]) for w, t in pts])
            self.fits[v] = fits
        self.calibration_s = time.perf_counter() - t0
        self.correction = 1.0
        log(f"calibrated latency on {self.device} in {self.calibration_s:.1f} s")

    def _model_seconds(self, req: ValidatedRequest) -> float | None:
        fits = self.fits.get(req.variant)
        if not fits:
            return None
        work = self._work(req)
        return sum(fits[k](work) if k == "generation" else fits[k](work[k]) for k in fits)

    def estimate(self, req: ValidatedRequest) -> float | None:
        """Expected seconds for a validated request, or None before calibration: the calibrated
        model times a running correction learnt from the generations served since start-up
        (other load on the machine shifts every stage alike)."""
        sec = self._model_seconds(req)
        return None if sec is None else sec * self.correction

    def check_work(self, reqs: list[ValidatedRequest]) -> list[float | None]:
        """The expected seconds of each request (:meth:`estimate`); PrestoError when requests
        served as one (a sweep, an A/B pair) are expected to run longer than ``max_request_s``
        here (memory is bounded by the pipeline's chunked decoding; time is what a large request
        costs). Nothing is refused before calibration."""
        times = [self.estimate(r) for r in reqs]
        if any(t is None for t in times):
            return times
        total = sum(times)
        if total > self.max_request_s:
            r = reqs[0]
            raise PrestoError(
                f"this request would take about {total:.0f} s on {self.device} ({len(reqs)} x {r.candidates} "
                f"candidate(s) of {r.duration:g} s at {r.steps} steps); this server runs at most "
                f"{self.max_request_s:.0f} s per request: lower the clips, the rejection ratio, the steps or "
                "the duration")
        return times

    def _learn(self, req: ValidatedRequest, seconds: float) -> None:
        predicted = self._model_seconds(req)
        if predicted and predicted > 0 and seconds > 0:
            ratio = min(max(seconds / predicted, 0.05), 20.0)
            self.correction = math.exp((1 - _LEARN_RATE) * math.log(self.correction) + _LEARN_RATE * math.log(ratio))

    # -- adapters ---------------------------------------------------------------------------
    def adapter_weights(self, text) -> tuple[float, ...]:
        """A request's adapter mix (:meth:`AdapterMix.parse`: None = the start-up weights) -> weights."""
        return self.mix.parse(text)

    def _serve(self, weights: tuple[float, ...]) -> None:
        """Merge the adapters at ``weights`` into the pipeline unless it already serves them (call
        under the lock: a merge rewrites the weights the running generation reads)."""
        if tuple(weights) != self._served:
            self.pipe.set_adapters(self.mix.pairs(weights))
            self._served = tuple(weights)

    def _finish(self, result) -> None:
        result.settings["model"] = self.model_name  # clips carry no server path
        if "adapters" in result.settings:  # names, weights and hashes; not the server's folders
            result.settings["adapters"] = [{k: a[k] for k in ("name", "weight", "sha256")}
                                           for a in result.settings["adapters"]]

    # -- generation -------------------------------------------------------------------------
    def generate(self, req: ValidatedRequest, progress=None, adapters: tuple[float, ...] | None = None):
        """Run the pipeline on a request validated at the edge (:meth:`validate`), one request at a
        time on the device; it is not checked again. ``adapters``: one weight per adapter
        (:meth:`adapter_weights`; None = the start-up weights)."""
        if not isinstance(req, ValidatedRequest):
            raise TypeError(f"Engine.generate takes a ValidatedRequest (Engine.validate), got {type(req).__name__}")
        weights = self.mix.defaults if adapters is None else tuple(adapters)
        with self._lock:
            self._serve(weights)
            result = self.pipe.generate(req, progress=progress)
        self._finish(result)
        self._learn(req, result.timings.get("total", 0.0))
        return result

    def edit(self, edit: ValidatedEdit, progress=None, adapters: tuple[float, ...] | None = None):
        """Run an extend, inpaint or loop edit validated at the edge (:meth:`validate_edit`), one request
        at a time on the device, like :meth:`generate`."""
        run = {"extend": editing.extend, "inpaint": editing.inpaint, "loop": editing.loop}[edit.kind]
        weights = self.mix.defaults if adapters is None else tuple(adapters)
        with self._lock:
            self._serve(weights)
            result = run(self.pipe, edit, progress)
        self._finish(result)
        return result

    def check_edit(self, edit: ValidatedEdit) -> float | None:
        """Expected seconds of an edit (its windows, each a window-long generation) or None before
        calibration; PrestoError above ``max_request_s``, as :meth:`check_work`."""
        windows = edit_windows(self.pipe, edit)
        one = self.estimate(edit.gen)
        if one is None:
            return None
        total = one * windows
        if total > self.max_request_s:
            raise PrestoError(f"this edit would take about {total:.0f} s on {self.device} ({windows} window(s) of "
                              f"{edit.gen.duration:g} s); this server runs at most {self.max_request_s:.0f} s per "
                              "request: extend by fewer bars at a time")
        return total

    def validate_edit(self, edit: EditRequest) -> ValidatedEdit:
        """The one validation of an edit from the page (PrestoError naming the allowed range)."""
        return edit.validated(self.pipe)

    def validate(self, req: GenerationRequest) -> ValidatedRequest:
        """The one validation of a request from the page (PrestoError naming the allowed range)."""
        return req.validated(self.pipe)

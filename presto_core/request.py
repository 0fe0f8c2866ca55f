"""What a person asks for (GenerationRequest), the checked form of it (ValidatedRequest), and how a
model variant is sampled (VariantSpec).

Every field a person can set is validated here, once, with PrestoError messages that name the
allowed range (``LIMITS``), so the command line, the Python API and the web app all reject bad
input the same way before any model runs. Validation happens at the edge
(:meth:`GenerationRequest.validated`, called by ``PrestoPipeline.generate`` for Python callers and
by the app's handlers for the page); the :class:`ValidatedRequest` it returns then travels through
the layers below, which do not check it again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from presto_core.audio import resample
from presto_core.budget import check_schedule
from presto_core.clap import num_candidates
from presto_core.edm import EDMConfig
from presto_core.errors import PrestoError, check_bool, check_choice, check_number, check_text, shown
from presto_core.limits import LIMITS  # also importable from here, as callers have done
from presto_core.music import bar_seconds, loop_bars, parse_time_signature

SAMPLERS = ("euler", "heun", "dpmpp_2s", "pingpong")
GUIDANCE = ("none", "cfg", "cfg_pp")


@dataclass(frozen=True)
class VariantSpec:
    """How to sample one model variant: its DiT component, sampler, default steps, guidance
    (kind and scale) and an optional layer-drop schedule (five counts at the 28-layer scale)."""

    name: str
    component: str
    sampler: str = "dpmpp_2s"
    steps: int = 16
    guidance_kind: str = "cfg_pp"
    guidance_scale: float = 0.8
    drop_schedule: Optional[tuple[int, ...]] = None
    edm: EDMConfig = field(default_factory=EDMConfig)

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "VariantSpec":
        """Parse one entry of model_index.json's ``variants``."""
        try:
            g = d.get("guidance") or {"kind": "none", "scale": 0.0}
            spec = cls(name=name, component=d["component"], sampler=d.get("sampler", "dpmpp_2s"),
                       steps=int(d.get("steps", 16)), guidance_kind=g.get("kind", "none"),
                       guidance_scale=float(g.get("scale", 0.0)),
                       drop_schedule=tuple(d["drop_schedule"]) if d.get("drop_schedule") else None)
        except (KeyError, TypeError, ValueError) as e:
            raise PrestoError(f"corrupt variant {name!r} in model_index.json: {e}") from None
        if spec.sampler not in SAMPLERS:
            raise PrestoError(f"variant {name!r}: sampler must be one of {SAMPLERS}, got {spec.sampler!r}")
        if spec.guidance_kind not in GUIDANCE:
            raise PrestoError(f"variant {name!r}: guidance must be one of {GUIDANCE}, got {spec.guidance_kind!r}")
        return spec

    def with_edm(self, edm: EDMConfig) -> "VariantSpec":
        return dataclasses.replace(self, edm=edm)

    def to_dict(self) -> dict:
        """The model_index.json entry (inverse of :meth:`from_dict`); an unguided variant has no
        scale, and a variant without layer dropping no drop_schedule."""
        guidance = {"kind": self.guidance_kind}
        if self.guidance_kind != "none":
            guidance["scale"] = float(self.guidance_scale)
        out = {"component": self.component, "sampler": self.sampler, "steps": int(self.steps), "guidance": guidance}
        if self.drop_schedule:
            out["drop_schedule"] = list(self.drop_schedule)
        return out


def _check_stereo(stereo, available: bool) -> bool:
    if stereo is None:
        return available
    if not isinstance(stereo, (bool, np.bool_)):
        raise PrestoError(f"stereo must be true, false or unset (stereo when the model can), got {shown(stereo)}")
    if stereo and not available:
        raise PrestoError("this model folder has no mono-to-stereo component (m2s), so it generates mono only; "
                          "ask for stereo=False or use a model folder with m2s")
    return bool(stereo)


def downmix(audio: np.ndarray) -> np.ndarray:
    """Mono (N,) from mono (N,), (N, 1), (N, 2) as soundfile and Gradio read files, or (1|2, N);
    float32. Anything else (more than two channels, more dimensions) raises PrestoError."""
    if audio.ndim == 1:
        return audio.astype(np.float32, copy=False)
    if audio.ndim == 2:
        if audio.shape[1] in (1, 2):
            return audio.mean(axis=1).astype(np.float32)
        if audio.shape[0] in (1, 2):
            return audio.mean(axis=0).astype(np.float32)
        raise PrestoError(f"init audio must be mono or stereo (1 or 2 channels), got {min(audio.shape)} channels")
    raise PrestoError(f"init audio must be a waveform of shape (samples,) or (samples, channels), "
                      f"got shape {audio.shape}")


@dataclass
class GenerationRequest:
    """One generation. ``steps``/``variant``/``guidance`` of None take the variant's defaults;
    ``seed`` None draws one (reported in the result's settings). ``init_audio`` (mono float
    array at ``init_sr`` Hz) with ``strength`` in (0, 1] makes a variation: 1 ignores the audio,
    small values stay close to it. ``drop_schedule`` overrides a layer-budget variant's five
    per-quintile drop counts (at the 28-layer reference scale, noisiest quintile first).
    ``stereo`` None is stereo when the model folder has an ``m2s`` component and mono otherwise;
    True asks for stereo (an error without ``m2s``), False for mono. ``loop`` makes the clip loop:
    it lasts the whole bars of ``time_signature`` that fit in ``duration`` at ``bpm``, and its
    end flows into its start (presto_core.editing.make_loop)."""

    prompt: str
    bpm: float = 120.0
    duration: float = 10.0
    steps: Optional[int] = None
    rho: float = 7.0
    reject_ratio: float = 0.0
    seed: Optional[int] = None
    num_clips: int = 1
    variant: Optional[str] = None
    guidance: Optional[float] = None
    init_audio: Optional[np.ndarray] = None
    init_sr: Optional[int] = None
    strength: float = 1.0
    drop_schedule: Optional[tuple[int, ...]] = None
    stereo: Optional[bool] = None
    loop: bool = False
    time_signature: str = "4/4"

    def validated(self, pipe) -> "ValidatedRequest":
        """A :class:`ValidatedRequest` with defaults resolved against ``pipe`` and every value
        checked (PrestoError naming the allowed range otherwise)."""
        prompt = check_text("prompt", self.prompt, LIMITS["prompt_chars"][1],
                            "mellow lo-fi beat with Rhodes chords")
        variant = self.variant if self.variant is not None else pipe.default_variant
        check_choice("model variant", variant, pipe.variant_names)
        spec = pipe.variant_spec(variant)
        max_dur = min(LIMITS["duration"][1], pipe.max_duration)
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationRequest)}
        out.update(
            prompt=prompt,
            variant=variant,
            bpm=check_number("bpm", self.bpm, *LIMITS["bpm"]),
            duration=check_number("duration (seconds)", self.duration, LIMITS["duration"][0], max_dur),
            steps=check_number("steps", spec.steps if self.steps is None else self.steps, *LIMITS["steps"],
                               integer=True),
            rho=check_number("rho", self.rho, *LIMITS["rho"]),
            reject_ratio=check_number("reject_ratio", self.reject_ratio, *LIMITS["reject_ratio"]),
            num_clips=check_number("number of clips", self.num_clips, *LIMITS["num_clips"], integer=True),
            seed=None if self.seed is None else check_number("seed", self.seed, *LIMITS["seed"], integer=True),
            strength=check_number("strength", self.strength, *LIMITS["strength"]),
        )
        if self.drop_schedule is not None:
            if not pipe.has_layer_budget(variant):
                raise PrestoError(f"variant {variant!r} has no layer-budget conditioning; "
                                  "a layer-drop schedule needs Presto-L or Presto-LS")
            out["drop_schedule"] = check_schedule(self.drop_schedule)
        if spec.guidance_kind == "none":
            if self.guidance not in (None, 0, 0.0):
                raise PrestoError(f"variant {variant!r} is a distilled generator and takes no guidance scale")
            out["guidance"] = 0.0
        else:
            hi = 1.0 if spec.guidance_kind == "cfg_pp" else 20.0
            g = spec.guidance_scale if self.guidance is None else self.guidance
            out["guidance"] = check_number(f"guidance ({spec.guidance_kind})", g, 0.0, hi)
        out["stereo"] = _check_stereo(self.stereo, pipe.has_stereo)
        out["loop"] = check_bool("loop", self.loop)
        parse_time_signature(self.time_signature)
        if out["loop"]:
            bars = loop_bars(out["duration"], out["bpm"], self.time_signature)
            out["duration"] = bars * bar_seconds(out["bpm"], self.time_signature)
            if out["duration"] < LIMITS["duration"][0]:
                raise PrestoError(f"a loop of {bars} bar(s) of {self.time_signature} at {out['bpm']:g} BPM lasts "
                                  f"{out['duration']:.2f} s, under the minimum of {LIMITS['duration'][0]:g} s")
        if out["reject_ratio"] > 0 and pipe.clap is None:
            raise PrestoError("reject_ratio > 0 needs a CLAP model, and this model folder has none; use 0")
        candidates = num_candidates(out["num_clips"], out["reject_ratio"])  # at most LIMITS["candidates"]
        if self.init_audio is not None:
            audio = downmix(np.asarray(self.init_audio, dtype=np.float32))
            if audio.size == 0 or not np.isfinite(audio).all():
                raise PrestoError("init audio must be a non-empty, finite mono or stereo waveform")
            out["init_sr"] = check_number("init audio sample rate", self.init_sr, 8000, 192000, integer=True)
            out["init_audio"] = audio
        return ValidatedRequest(**out, candidates=candidates)

    def init_audio_at(self, sr: int) -> np.ndarray:
        """The init audio resampled to ``sr`` Hz, peak-limited to [-1, 1]. Shape (N,)."""
        audio = self.init_audio if self.init_sr == sr else resample(self.init_audio, self.init_sr, sr)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        return (audio / peak if peak > 1.0 else audio).astype(np.float32)

    def settings(self, **resolved) -> dict:
        """JSON-able settings that reproduce this generation (init audio is described, not embedded)."""
        names = [f.name for f in dataclasses.fields(GenerationRequest) if f.name not in ("init_audio", "init_sr")]
        full = dataclasses.asdict(self)
        d = {k: full[k] for k in names}
        d["variation"] = self.init_audio is not None
        d.update(resolved)
        return d


@dataclass
class ValidatedRequest(GenerationRequest):
    """A GenerationRequest checked against one pipeline by :meth:`GenerationRequest.validated`:
    ``variant``, ``steps`` and ``guidance`` resolved, every value in range, ``candidates`` =
    ceil(num_clips / (1 - reject_ratio)) the number of clips sampled before CLAP rejection.

    The pipeline and the app pass it on without checking it again. Build one only through
    ``validated``; to change a field, change the GenerationRequest and validate that (a
    ``dataclasses.replace`` of a ValidatedRequest is not re-checked)."""

    candidates: int = 1

"""Longer pieces and edits: extend a clip by whole bars, replace bars a..b, make a clip loop.

All three regenerate part of a latent *window* of at most the model's ``max_duration`` with the
rest fixed (:func:`presto_core.inpaint.masked_denoiser`), decode the window, and splice the new
audio into the original on bar lines (:func:`presto_core.inpaint.splice`), so every variant works,
the 4-step distilled ones included, and memory stays that of one window whatever the length.

- **extend**: windows march forward; each keeps ``context_seconds`` (whole bars) of what exists as
  known latents and adds the next bars. The first join is the source's last bar line; later joins
  fall WINDOW_GUARD_S (3 s) or more before a window's end, so the model never ends the music at a window's
  edge. The audio is spliced ``SPLICE_LEAD_S`` before each join: the source is kept sample for
  sample up to half a second (and a fade) before its last bar line.
- **inpaint**: one window around bars a..b; outside the bars and their fades the source is kept
  sample for sample.
- **loop**: the clip rotated by half its bars puts its end-to-start seam in the middle of a
  window; the bars around the seam are regenerated with both sides known, and the clip rotated
  back. Stereo is widened circularly.

Audio is generated mono; stereo output widens only the new audio (its mid is the mono output
exactly) and keeps a stereo source's own channels outside the edit. Bar 1 starts at sample 0 of
the source. Tempo (BPM) counts quarter notes as in :mod:`presto_core.music`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from presto_core.audio import resample
from presto_core.errors import PrestoError, check_bool, check_number
from presto_core.inpaint import fade_curve, soft_keep, splice
from presto_core.limits import LIMITS
from presto_core.music import CROSSFADE_MS, bar_seconds, parse_time_signature
from presto_core.request import GenerationRequest, ValidatedRequest
from presto_core.results import Clip, GenerationResult

EDIT_KINDS = ("extend", "inpaint", "loop")
# Extensions never end closer than this to a window's end: the last seconds of a window read like
# the end of a piece, and joins placed 1 s from the end had 1.3-1.7x the spectral flux of a bar
# line (3 s: 0.7x; train/README.md, "Editing").
WINDOW_GUARD_S = 3.0
# Decoder receptive field is about 18 latent frames each way; decode this many before a join.
DECODE_MARGIN_FRAMES = 24
# An extension replaces this much of what precedes each join (more than the decoder's reach).
SPLICE_LEAD_S = 0.5
# The mono-to-stereo net sees about 1.5 s of context: long audio is widened in chunks with margins.
WIDEN_CHUNK_S, WIDEN_MARGIN_S, WIDEN_FADE = 30.0, 2.0, 2048
# How far the regenerated part departs from where it starts (1 = from pure noise): an extension
# starts from its last bars repeated, a replacement from the bars it replaces, a loop's seam from
# the clip around it. Set by the measured seams and beat drift (train/README.md, "Editing").
LOOP_STRENGTH = 0.7
STRENGTH = {"extend": 1.0, "inpaint": 0.9, "loop": LOOP_STRENGTH}
# Each boundary of replaced bars (and of a loop's regenerated seam) is a latent crossfade of this
# length inside the regenerated span (presto_core.inpaint.soft_keep): the spectral flux there went
# from 1.22x a bar line's to 0.94x (300 ms: no better, and 3x the loudness jump; train/README.md,
# "Editing").
LATENT_RAMP_S = 0.15
LATENT_RAMP_MS = (0.0, 1000.0)  # allowed range of EditRequest.ramp_ms
# Largest level change a replacement gets to match the bars it replaces (dB).
MATCH_DB = 6.0
# Bars an extension repeats as its starting point (a phrase; fewer when the context is shorter).
TILE_BARS = 4


def channels_first(audio, what: str = "source audio") -> np.ndarray:
    """(N,), (N, 1|2) as soundfile reads, or (1|2, N) -> float32 (C, N) with C in {1, 2}."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    elif x.ndim == 2 and x.shape[0] not in (1, 2) and x.shape[1] in (1, 2):
        x = x.T
    if x.ndim != 2 or x.shape[0] not in (1, 2):
        raise PrestoError(f"{what} must be mono or stereo, shaped (samples,), (samples, 1|2) or (1|2, samples); "
                          f"got shape {x.shape}")
    if x.shape[1] == 0 or not np.isfinite(x).all():
        raise PrestoError(f"{what} must be a non-empty, finite waveform")
    return np.ascontiguousarray(x)


def source_hash(audio_cf: np.ndarray, sr: int) -> str:
    """SHA-256 of a source clip: its float32 channels-first samples, then its rate as text. The
    same file read again gives the same hash; any changed sample changes it."""
    h = hashlib.sha256(np.ascontiguousarray(audio_cf, dtype=np.float32).tobytes())
    h.update(f"/{int(sr)}".encode())
    return h.hexdigest()


@dataclass
class EditRequest:
    """One edit of a source clip (``source``: mono or stereo float array at ``source_sr`` Hz).

    kind "extend" adds ``bars`` whole bars after the source's last complete bar (the total at most
    ``LIMITS["piece_seconds"]``); kind "inpaint" regenerates bars ``replace[0]..replace[1]``
    (1-based, inclusive); kind "loop" makes the source's first ``bars`` bars (None: as many as fit
    one window) loop. ``bpm`` is the source's tempo and must be given. The other fields are
    :class:`GenerationRequest`'s; ``strength`` (0, 1] is how far the regenerated audio departs from
    where it starts (the last bars repeated, or the bars replaced; 1 = from pure noise; default
    STRENGTH[kind]); ``stereo`` None follows the source's channels (and True widens a
    mono source, keeping it as the mid); ``ramp_ms`` is the latent crossfade inside the
    regenerated span at each boundary of replaced bars or a loop's seam (None: LATENT_RAMP_S; 0: a
    hard step; extensions always join without one)."""

    kind: str
    source: np.ndarray
    source_sr: int
    prompt: str
    bpm: Optional[float] = None
    time_signature: str = "4/4"
    bars: Optional[int] = None
    replace: Optional[tuple] = None
    variant: Optional[str] = None
    steps: Optional[int] = None
    rho: float = 7.0
    guidance: Optional[float] = None
    seed: Optional[int] = None
    stereo: Optional[bool] = None
    crossfade_ms: float = 30.0
    context_seconds: float = 10.0
    strength: Optional[float] = None
    drop_schedule: Optional[tuple] = None
    ramp_ms: Optional[float] = None

    def validated(self, pipe) -> "ValidatedEdit":
        """Every value checked against ``pipe`` (PrestoError naming the allowed range otherwise)."""
        if self.kind not in EDIT_KINDS:
            raise PrestoError(f"edit kind must be one of {EDIT_KINDS}, got {self.kind!r}")
        if self.bpm is None or (isinstance(self.bpm, str) and not self.bpm.strip()):
            raise PrestoError("the source clip's tempo is needed: give its BPM (40-240); clips written by "
                              "Presto carry it in their settings")
        parse_time_signature(self.time_signature)
        source = channels_first(self.source)
        sr_in = check_number("source sample rate", self.source_sr, 8000, 192000, integer=True)
        sha = source_hash(source, sr_in)
        sr = pipe.sample_rate
        audio = source if sr_in == sr else resample(source, sr_in, sr)
        lo, hi = LIMITS["piece_seconds"]
        seconds = audio.shape[-1] / sr
        if seconds > hi + 1e-6:
            raise PrestoError(f"the source clip lasts {seconds:.1f} s; clips of at most {hi:g} s can be edited")
        window = min(LIMITS["duration"][1], pipe.max_duration)
        gen = GenerationRequest(prompt=self.prompt, bpm=self.bpm, duration=window, steps=self.steps, rho=self.rho,
                                seed=self.seed, variant=self.variant, guidance=self.guidance,
                                drop_schedule=self.drop_schedule, stereo=False).validated(pipe)
        # None follows the source's channels where the model can widen; True without m2s is an error.
        stereo = (audio.shape[0] == 2 and pipe.has_stereo) if self.stereo is None else check_bool("stereo", self.stereo)
        gen_st = GenerationRequest(prompt=gen.prompt, duration=window, stereo=stereo).validated(pipe)
        bar = bar_seconds(gen.bpm, self.time_signature) * sr
        # Samples are whole: a clip of N bars rounded to the nearest sample still holds N bars.
        complete = int(math.floor((audio.shape[-1] + 0.5) / bar + 1e-9))
        if complete < 1:
            raise PrestoError(f"the source clip ({seconds:.2f} s) is shorter than one bar of {self.time_signature} at "
                              f"{gen.bpm:g} BPM ({bar / sr:.2f} s)")
        xf = check_number("crossfade (ms)", self.crossfade_ms, *CROSSFADE_MS)
        ctx = check_number("context (seconds)", self.context_seconds, *LIMITS["context_seconds"])
        strength = STRENGTH[self.kind] if self.strength is None else self.strength
        strength = check_number("strength", strength, *LIMITS["strength"])
        ramp_ms = 1000.0 * LATENT_RAMP_S if self.ramp_ms is None else self.ramp_ms
        ramp_ms = check_number("latent crossfade (ms)", ramp_ms, *LATENT_RAMP_MS)
        out = dict(kind=self.kind, strength=strength, audio=audio, sha256=sha, source_sr=sr_in, gen=gen,
                   stereo=gen_st.stereo, ramp_ms=ramp_ms, ramp=int(round(ramp_ms * sr / 1000.0 / pipe.vae.cfg.hop)),
                   time_signature=self.time_signature, bar=bar, complete_bars=complete,
                   fade=int(round(xf * sr / 1000.0)), crossfade_ms=xf, context_seconds=ctx)
        if self.kind == "extend":
            max_total = int(math.floor(hi * sr / bar + 1e-9))
            room = max_total - complete
            if room < 1:
                raise PrestoError(f"the source's {complete} bars already reach the {hi:g} s maximum at "
                                  f"{gen.bpm:g} BPM; nothing can be added")
            out["bars"] = check_number(f"bars to add (the piece may last at most {hi:g} s: {max_total} bars of "
                                       f"{self.time_signature} at {gen.bpm:g} BPM)", self.bars, 1, room, integer=True)
            out["window_bars"] = _window_bars(pipe, bar, ctx)
        elif self.kind == "loop":
            fit = min(complete, int(math.floor(window / (bar / sr) + 1e-3)))
            bars = fit if self.bars in (None, 0) else self.bars
            out["bars"] = check_number(f"loop bars (whole bars of the clip that fit the model's {window:g} s window)",
                                       bars, 1, fit, integer=True)
        else:
            out["replace"] = _check_range(self.replace, complete, bar, sr, pipe, out["fade"], self.time_signature,
                                          gen.bpm)
        return ValidatedEdit(**out)


def _window_frames(pipe) -> int:
    """Latent frames in one window: the model's maximum duration, an even count (see _even)."""
    frames = pipe._frames(min(LIMITS["duration"][1], pipe.max_duration))[1]
    return frames - frames % 2


def _even(frame: int) -> int:
    """Windows start on even latent frames: the decoder's phase advance repeats every 8
    upsampled frames (2 latent frames), so a window decoded from an even frame matches the
    same latents decoded from frame 0."""
    return frame - frame % 2


def _window_bars(pipe, bar: float, ctx_s: float) -> tuple[int, int]:
    """(context bars, new bars) per extension window at ``bar`` samples per bar."""
    usable = (_window_frames(pipe) - 2) * pipe.vae.cfg.hop - WINDOW_GUARD_S * pipe.sample_rate
    fit = int(math.floor(usable / bar))
    if fit < 2:
        raise PrestoError(f"one bar ({bar / pipe.sample_rate:.1f} s) is too long to extend in windows of "
                          f"{pipe.max_duration:g} s; use a faster tempo or shorter bars")
    ctx = min(fit - 1, max(1, int(math.floor(ctx_s * pipe.sample_rate / bar + 1e-9))))
    return ctx, fit - ctx


def _check_range(replace, complete: int, bar: float, sr: int, pipe, fade: int, ts: str, bpm: float):
    try:
        a, b = (int(v) if not isinstance(v, (bool, np.bool_)) and float(v) == int(v) else None for v in replace)
    except (TypeError, ValueError, OverflowError):  # not two numbers, or inf/NaN
        a = b = None
    if a is None or b is None:
        raise PrestoError(f"bars to replace must be two whole bar numbers a..b within 1..{complete}, "
                          f"got {replace!r}")
    if not 1 <= a <= b <= complete:
        raise PrestoError(f"bars to replace must satisfy 1 <= a <= b <= {complete} (the clip's complete bars of "
                          f"{ts} at {bpm:g} BPM), got {a}..{b}; a range is at least one bar")
    span = (b - a + 1) * bar + 2 * fade + 2 * DECODE_MARGIN_FRAMES * pipe.vae.cfg.hop
    window = _window_frames(pipe) * pipe.vae.cfg.hop
    if span > window:
        fit = int(math.floor((window - 2 * fade - 2 * DECODE_MARGIN_FRAMES * pipe.vae.cfg.hop) / bar))
        raise PrestoError(f"bars {a}..{b} last {(b - a + 1) * bar / sr:.1f} s; at most {fit} bars at a time can be "
                          f"replaced at {bpm:g} BPM (the model's window is {pipe.max_duration:g} s)")
    return a, b


@dataclass
class ValidatedEdit:
    """An :class:`EditRequest` checked against one pipeline: the source at the pipeline's rate
    (C, N), its hash, the shared generation settings (``gen``, a ValidatedRequest), bar length in
    samples (float), fade length in samples, and the kind's own checked values."""

    kind: str
    audio: np.ndarray
    sha256: str
    source_sr: int
    gen: ValidatedRequest
    stereo: bool
    time_signature: str
    bar: float
    complete_bars: int
    fade: int
    crossfade_ms: float
    context_seconds: float
    strength: float
    ramp_ms: float
    ramp: int  # latent frames
    bars: int = 0
    window_bars: tuple = (0, 0)
    replace: tuple = (0, 0)


# ---------------------------------------------------------------------------------------------
# One window


def regenerate(pipe, req: ValidatedRequest, cond, z_known: torch.Tensor, lo: int, hi: int, gen: torch.Generator,
               strength: float, ramp: int, z_init: Optional[torch.Tensor] = None, callback=None,
               beat_start: float = 0.0) -> torch.Tensor:
    """Sample one window's latents (1, C, T) with frames [lo, hi) regenerated and the rest fixed to
    ``z_known`` (1, C, T), each inner boundary a crossfade of ``ramp`` frames inside [lo, hi).
    The regenerated frames start from ``z_init`` (default ``z_known``) noised to the level
    ``strength`` selects (1: pure noise; lower keeps more of their beat grid and sound).
    beat_start: the window's first frame on the piece's beat grid (a beat-grid model's condition)."""
    frames = z_known.shape[-1]
    keep = soft_keep(frames, lo, hi, ramp, left=lo > 0, right=hi < frames).to(pipe.device)
    start = z_known if z_init is None else torch.where(keep.view(1, 1, -1) == 1.0, z_known, z_init)
    return pipe.sample_latents(req, cond, frames, gen, z_init=start, known=(z_known, keep), callback=callback,
                               strength=strength, beat_start=beat_start)


def _beats(samples: int, sr: int, bpm: float) -> float:
    """Beats elapsed at ``bpm`` over ``samples`` at ``sr`` (bars are counted from the clip's first
    sample, so that is where its grid starts)."""
    return samples / sr * bpm / 60.0


def decode_from(pipe, z: torch.Tensor, first: int) -> tuple[np.ndarray, int]:
    """Decode latents (1, C, T) from frame ``first`` on (less a margin for the decoder's context,
    from an even frame): (audio (M,), the window frame it starts at). Audio before a window's
    joins is never used, so it is not decoded."""
    f0 = _even(max(0, first - DECODE_MARGIN_FRAMES))
    return pipe.decode(z[..., f0:])[0].cpu().numpy(), f0


def tiled_latents(z: torch.Tensor, period: float, n: int) -> torch.Tensor:
    """``n`` frames continuing latents (1, C, T) by repeating their last ``period`` frames
    (fractional: frame k after the end is frame floor(T - period + (k mod period))). An extension
    starts from these, noised: its beat grid is the context's, to within a frame."""
    t = z.shape[-1]
    period = min(float(period), float(t))
    k = torch.arange(n, dtype=torch.float64)
    idx = torch.floor(t - period + torch.remainder(k, period)).long().clamp(0, t - 1)
    return z[..., idx.to(z.device)]


def widen_long(pipe, mono: np.ndarray) -> np.ndarray:
    """Stereo (2, N) for mono (N,) of any length, in chunks of WIDEN_CHUNK_S with context margins
    and faded seams; ``(L + R) / 2`` is ``mono`` exactly, and memory is one chunk's."""
    sr, n = pipe.sample_rate, mono.shape[-1]
    chunk, margin = int(WIDEN_CHUNK_S * sr), int(WIDEN_MARGIN_S * sr)
    out = np.empty((2, n), dtype=np.float32)
    prev = None
    for c in range(0, n, chunk):
        s, e, c_end = max(0, c - margin), min(n, c + chunk + margin), min(n, c + chunk)
        st = pipe.widen(torch.from_numpy(np.ascontiguousarray(mono[s:e]))[None])[0].cpu().numpy()
        out[:, c:c_end] = st[:, c - s:c_end - s]
        if prev is not None:
            p_st, p_s, p_e = prev
            k = min(WIDEN_FADE, p_e - c, c_end - c)
            f = fade_curve(k)
            out[:, c:c + k] = p_st[:, c - p_s:c - p_s + k] * (1 - f) + out[:, c:c + k] * f
        prev = (st, s, e)
    return out


def widen_loop(pipe, mono: np.ndarray) -> np.ndarray:
    """Stereo (2, N) for a loop (N,): widened with the loop's own end before it and start after
    it, so the side is continuous across the loop point."""
    n = mono.shape[-1]
    m = min(n, int(WIDEN_MARGIN_S * pipe.sample_rate))
    ext = np.concatenate([mono[n - m:], mono, mono[:m]])
    return widen_long(pipe, ext)[:, m:m + n]


def _clap(pipe, prompt: str, audio: np.ndarray) -> Optional[float]:
    if pipe.clap is None or audio.shape[-1] == 0:
        return None
    return float(pipe.clap.score([prompt], torch.from_numpy(np.ascontiguousarray(audio))[None], pipe.sample_rate)[0])


# ---------------------------------------------------------------------------------------------
# Extend


def extend(pipe, edit: ValidatedEdit, progress=None) -> GenerationResult:
    """Continue ``edit.audio`` by ``edit.bars`` bars in windows (see the module docstring)."""
    progress = progress or (lambda stage, i, n: None)
    t0 = time.perf_counter()
    req, sr, hop, bar = edit.gen, pipe.sample_rate, pipe.vae.cfg.hop, edit.bar
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    gen = torch.Generator(device=pipe.device).manual_seed(seed)
    cond = pipe.encode_prompt(req.prompt, 1)
    first_join = int(round(edit.complete_bars * bar))
    total = int(round((edit.complete_bars + edit.bars) * bar))
    src_mono = edit.audio.mean(axis=0)
    # The source's partial last bar stays until the first window overwrites it: the encoder's
    # frames just before the join then see the music that follows, not silence.
    mono = np.zeros(total, dtype=np.float32)
    mono[:min(total, src_mono.shape[-1])] = src_mono[:total]
    ctx_bars, new_bars = edit.window_bars
    tile = min(ctx_bars, TILE_BARS)
    wf_max = _window_frames(pipe)
    plan = _extend_plan(edit.complete_bars, edit.bars, ctx_bars, new_bars)
    windows, prev, first_cut, first_dec = [], None, first_join, None
    for i, (ctx_start_bar, join_bar, end_bar) in enumerate(plan):
        progress("window", i, len(plan))
        join = int(round(join_bar * bar))
        end = total if end_bar == edit.complete_bars + edit.bars else int(round(end_bar * bar))
        start = _even(int(round(ctx_start_bar * bar)) // hop) * hop
        frames = min(wf_max, math.ceil((total - start) / hop))
        frames += frames % 2
        lo = (join - start) // hop
        if prev is None:
            z_known = pipe.encode_audio(mono[start:start + frames * hop], frames)
        else:  # the previous window's latents are the known part: nothing is re-encoded
            p_z, p_start = prev
            off = (start - p_start) // hop
            z_known = torch.zeros(1, p_z.shape[1], frames, device=pipe.device)
            have = min(frames, p_z.shape[-1] - off)
            z_known[..., :have] = p_z[..., off:off + have]
        # Below strength 1 (not the default) the new bars start from the last bars repeated on the
        # asked grid, which keeps them closer to the context.
        z_init = z_known.clone()
        z_init[..., lo:] = tiled_latents(z_known[..., :lo], tile * bar / hop, frames - lo)
        # No latent crossfade at an extension's join: what lies past the source is no audio to fade
        # from (with one, joins measured 1.33x a bar line's loudness jump, without 0.97x).
        z = regenerate(pipe, req, cond, z_known, lo, frames, gen, edit.strength, 0, z_init=z_init,
                       callback=lambda j, n, _x, i=i: progress("generation", j + 1, n),
                       beat_start=_beats(start, sr, req.bpm))
        # The audio is spliced half a second before the join, where the new decode is still the
        # known latents' audio: the move from old bars to new then happens inside one decode, as
        # the model made it, and the fade joins two near-identical signals.
        cut = max(start + edit.fade, join - int(SPLICE_LEAD_S * sr))
        dec, f0 = decode_from(pipe, z, (cut - edit.fade - start) // hop)
        d0 = start + f0 * hop  # the sample where ``dec`` starts
        a, b = max(0, cut - edit.fade), min(total, d0 + dec.shape[-1])
        if i == 0:
            first_cut, first_dec = cut, dec[a - d0:cut - d0].copy()
        # In place over this window's span; what a fade-out leaves past ``end`` is overwritten by
        # the next window.
        mono[a:b] = splice(mono[a:b], dec[a - d0:b - d0], cut - a, end - a, edit.fade)
        windows.append({"window": i, "start_s": start / sr, "join_s": join / sr, "end_s": end / sr,
                        "clap": _clap(pipe, req.prompt, mono[join:end])})
        prev = (z, start)
    timings = {"generation": time.perf_counter() - t0}
    audio = mono
    t1 = time.perf_counter()
    if edit.stereo:
        progress("stereo", 0, 1)
        audio = _stereo_extension(pipe, edit, mono, first_cut, first_dec)
    timings["stereo"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    scores = [w["clap"] for w in windows if w["clap"] is not None]
    settings = _settings(pipe, edit, seed, total / sr, bars_added=edit.bars, window_bars=list(edit.window_bars))
    clip = Clip(audio.astype(np.float32), float(np.mean(scores)) if scores else None, 0)
    return GenerationResult(clips=[clip], sample_rate=sr, settings=settings, timings=timings, windows=windows,
                            changed=[(max(0, first_cut - edit.fade) / sr, total / sr)])


def edit_windows(pipe, edit: ValidatedEdit) -> int:
    """How many windows (model calls of one window each) ``edit`` samples."""
    if edit.kind != "extend":
        return 1
    return len(_extend_plan(edit.complete_bars, edit.bars, *edit.window_bars))


def _extend_plan(have: int, add: int, ctx: int, new: int) -> list[tuple[int, int, int]]:
    """Windows as (first context bar, join bar, end bar), bars counted from 0 at the source's start."""
    plan, join, total = [], have, have + add
    while join < total:
        end = min(total, join + new)
        plan.append((max(0, join - ctx), join, end))
        join = end
    return plan


def _stereo_extension(pipe, edit: ValidatedEdit, mono: np.ndarray, join: int, first_dec: np.ndarray) -> np.ndarray:
    """Stereo for an extended piece: the source's channels (a mono source widened) up to the first
    join, the widened new audio after it, faded over the join so that the mid is ``mono``."""
    src = edit.audio[:, :join]
    src_st = src if src.shape[0] == 2 else widen_long(pipe, src[0])
    a = join - first_dec.shape[-1]
    margin = min(a, int(WIDEN_MARGIN_S * pipe.sample_rate))
    stream = mono[a - margin:].copy()
    stream[margin:margin + first_dec.shape[-1]] = first_dec  # what the new audio was faded from
    new_st = widen_long(pipe, stream)[:, margin:]
    out = np.empty((2, mono.shape[-1]), dtype=np.float32)
    out[:, :a] = src_st[:, :a]
    f = fade_curve(join - a)
    out[:, a:join] = src_st[:, a:join] * (1 - f) + new_st[:, :join - a] * f
    out[:, join:] = new_st[:, join - a:]
    return out


# ---------------------------------------------------------------------------------------------
# Inpaint


def inpaint(pipe, edit: ValidatedEdit, progress=None) -> GenerationResult:
    """Regenerate bars ``edit.replace`` of ``edit.audio`` in one window around them."""
    progress = progress or (lambda stage, i, n: None)
    t0 = time.perf_counter()
    req, sr, bar = edit.gen, pipe.sample_rate, edit.bar
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    gen = torch.Generator(device=pipe.device).manual_seed(seed)
    cond = pipe.encode_prompt(req.prompt, 1)
    a, b = edit.replace
    lo_s, hi_s = int(round((a - 1) * bar)), int(round(b * bar))
    src_mono = edit.audio.mean(axis=0)
    progress("window", 0, 1)
    new, (w0, w1) = replace_range(pipe, req, cond, src_mono, lo_s, hi_s, edit.fade, gen, edit.strength, edit.ramp,
                                  callback=lambda j, n, _x: progress("generation", j + 1, n))
    new = level_matched(src_mono, new, lo_s, hi_s, edit.fade)
    mono = splice(src_mono, new, lo_s, hi_s, edit.fade)
    timings = {"generation": time.perf_counter() - t0}
    t1 = time.perf_counter()
    audio = mono
    if edit.stereo:
        progress("stereo", 0, 1)
        src_st = edit.audio if edit.audio.shape[0] == 2 else widen_long(pipe, src_mono)
        new_st = np.zeros_like(src_st)
        new_st[:, w0:w1] = widen_long(pipe, new[w0:w1])
        audio = splice(src_st, new_st, lo_s, hi_s, edit.fade)
    timings["stereo"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    windows = [{"window": 0, "start_s": lo_s / sr, "join_s": lo_s / sr, "end_s": hi_s / sr,
                "clap": _clap(pipe, req.prompt, mono[lo_s:hi_s])}]
    settings = _settings(pipe, edit, seed, src_mono.shape[-1] / sr, replaced_bars=[a, b])
    clip = Clip(audio.astype(np.float32), windows[0]["clap"], 0)
    return GenerationResult(clips=[clip], sample_rate=sr, settings=settings, timings=timings, windows=windows,
                            changed=[(max(0, lo_s - edit.fade) / sr, min(src_mono.shape[-1], hi_s + edit.fade) / sr)])


def level_matched(original: np.ndarray, new: np.ndarray, lo: int, hi: int, fade: int) -> np.ndarray:
    """``new`` with samples [lo, hi) scaled so that their RMS is ``original``'s over the same bars
    (at most +-MATCH_DB dB), the gain ramped back to 1 over the fades: replaced bars sit at the
    level of the bars they replace. (N,) arrays; returns a copy."""
    ref = float(np.sqrt(np.mean(original[lo:hi].astype(np.float64) ** 2)))
    got = float(np.sqrt(np.mean(new[lo:hi].astype(np.float64) ** 2)))
    if ref < 1e-6 or got < 1e-6:
        return new.copy()
    g = float(np.clip(ref / got, 10 ** (-MATCH_DB / 20), 10 ** (MATCH_DB / 20)))
    env = np.ones(new.shape[-1], dtype=np.float32)
    env[lo:hi] = g
    a, b = max(0, lo - fade), min(new.shape[-1], hi + fade)
    env[a:lo] = 1 + (g - 1) * fade_curve(fade)[fade - (lo - a):]
    env[hi:b] = 1 + (g - 1) * fade_curve(fade)[::-1][:b - hi]
    out = new.copy()
    out[a:b] = np.clip(new[a:b] * env[a:b], -1.0, 1.0)
    return out


def replace_range(pipe, req: ValidatedRequest, cond, mono: np.ndarray, lo: int, hi: int, fade: int,
                  gen: torch.Generator, strength: float, ramp: int, callback=None,
                  origin_beats: float = 0.0) -> tuple[np.ndarray, tuple[int, int]]:
    """Regenerate samples [lo, hi) of ``mono`` (N,) in one window around them; ``mono``'s first
    sample lies ``origin_beats`` beats after a downbeat (0: the clip starts on one).

    Returns (audio (N,) that is the decoded window inside the window and 0 outside, the window's
    (first, end) samples); :func:`splice` it into ``mono`` over [lo, hi) with ``fade``."""
    hop, n = pipe.vae.cfg.hop, mono.shape[-1]
    wf = _window_frames(pipe)
    need = math.ceil(n / hop)
    if need <= wf:
        start, frames = 0, need + need % 2
    else:
        centre = (lo + hi) // 2
        start = _even(max(0, min(centre - wf * hop // 2, n - wf * hop)) // hop) * hop
        frames = wf
    f_lo, f_hi = (lo - start) // hop, math.ceil((hi - start) / hop)
    z_known = pipe.encode_audio(mono[start:start + frames * hop], frames)
    z = regenerate(pipe, req, cond, z_known, f_lo, f_hi, gen, strength, ramp, callback=callback,
                   beat_start=origin_beats + _beats(start, pipe.sample_rate, req.bpm))
    dec = pipe.decode(z)[0].cpu().numpy()
    out = np.zeros(n, dtype=np.float32)
    end = min(n, start + dec.shape[-1])
    out[start:end] = dec[:end - start]
    return out, (start, end)


# ---------------------------------------------------------------------------------------------
# Loops


def make_loop(pipe, req: ValidatedRequest, cond, mono: np.ndarray, bars: int, bar: float, fade: int,
              gen: torch.Generator, ramp: int, callback=None, strength: float = None) -> np.ndarray:
    """A clip of ``bars`` bars (N,) made to loop: the audio around its end-to-start seam is
    regenerated with the end before it and the start after it known; the rest is unchanged.
    Returns (N,) float32 whose end flows into its start."""
    n = mono.shape[-1]
    shift = int(round((bars // 2) * bar)) if bars >= 2 else n // 2
    rolled = np.roll(mono, -shift)
    seam = n - shift  # where the clip's end meets its start in the rolled clip
    half = int(round(min(bar, n / 4)))
    lo, hi = max(fade, seam - half), min(n - fade, seam + half)
    new, _ = replace_range(pipe, req, cond, rolled, lo, hi, fade, gen, LOOP_STRENGTH if strength is None else strength,
                           ramp, callback=callback, origin_beats=_beats(shift, pipe.sample_rate, req.bpm))
    return np.roll(splice(rolled, new, lo, hi, fade), shift)


def loop(pipe, edit: ValidatedEdit, progress=None) -> GenerationResult:
    """The first ``edit.bars`` bars of ``edit.audio`` made to loop (:func:`make_loop`): outside the
    seam's bars the clip's own samples (its mid, widened again for stereo)."""
    progress = progress or (lambda stage, i, n: None)
    t0 = time.perf_counter()
    req, sr = edit.gen, pipe.sample_rate
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    gen = torch.Generator(device=pipe.device).manual_seed(seed)
    n = int(round(edit.bars * edit.bar))
    mono = np.ascontiguousarray(edit.audio.mean(axis=0)[:n])
    progress("window", 0, 1)
    looped = make_loop(pipe, req, pipe.encode_prompt(req.prompt, 1), mono, edit.bars, edit.bar, edit.fade, gen,
                       edit.ramp, callback=lambda j, k, _x: progress("generation", j + 1, k), strength=edit.strength)
    timings = {"generation": time.perf_counter() - t0}
    t1 = time.perf_counter()
    audio = widen_loop(pipe, looped) if edit.stereo else looped
    timings["stereo"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    half = (min(edit.bar, n / 4) + edit.fade) / sr  # make_loop's regenerated span each side of the seam
    windows = [{"window": 0, "start_s": 0.0, "join_s": 0.0, "end_s": n / sr, "clap": _clap(pipe, req.prompt, looped)}]
    settings = _settings(pipe, edit, seed, n / sr, loop_bars=edit.bars)
    return GenerationResult(clips=[Clip(audio.astype(np.float32), windows[0]["clap"], 0)], sample_rate=sr,
                            settings=settings, timings=timings, windows=windows,
                            changed=[(0.0, min(half, n / sr)), (max(0.0, n / sr - half), n / sr)])


# ---------------------------------------------------------------------------------------------


def _settings(pipe, edit: ValidatedEdit, seed: int, duration: float, **extra) -> dict:
    req = edit.gen
    base = req.settings(seed=seed, steps=req.steps, candidates=1, model=pipe.source,
                        sampler=pipe.variant_spec(req.variant).sampler)
    for k in ("reject_ratio", "num_clips", "strength", "variation", "duration", "loop"):
        base.pop(k, None)
    return {**base, "edit": edit.kind, "source_sha256": edit.sha256, "source_sample_rate": edit.source_sr,
            "source_seconds": round(edit.audio.shape[-1] / pipe.sample_rate, 4), "duration": round(duration, 4),
            "time_signature": edit.time_signature, "crossfade_ms": edit.crossfade_ms,
            "context_seconds": edit.context_seconds, "strength": edit.strength, "stereo": edit.stereo,
            "ramp_ms": edit.ramp_ms, **pipe.adapter_settings(), **extra}

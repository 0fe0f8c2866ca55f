"""PrestoPipeline: prompt -> text tokens -> sampler over the score model/generator -> VAE -> CLAP
-> mono-to-stereo.

One pipeline holds one model folder (see :mod:`presto_core.checkpoint`): a VAE, a text encoder,
optionally a CLAP model and a mono-to-stereo model (``m2s``), and one or more *variants* (base
score model, Presto-L, Presto-S, Presto-LS), each a DiT component plus how to sample it. Everything is loaded once in
:meth:`PrestoPipeline.from_pretrained`; :meth:`PrestoPipeline.generate` is then stateless apart
from the models, so one pipeline can serve many requests (one at a time per device).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from presto_core import checkpoint as ckpt
from presto_core.adapters import Adapter, check_compatible, check_weight, load_adapter, merge_into
from presto_core.budget import DropSchedule
from presto_core.clap import EmbeddedClapScorer, select_best
from presto_core.dit import beat_positions
from presto_core.edm import EDMConfig, Precond, karras_ramp, karras_sigmas
from presto_core.errors import PrestoError
from presto_core import editing
from presto_core.editing import LATENT_RAMP_S, EditRequest, make_loop, widen_loop
from presto_core.inpaint import masked_denoiser
from presto_core.music import bar_seconds, beats_per_bar, loop_bars
from presto_core.request import GenerationRequest, ValidatedRequest, VariantSpec
from presto_core.results import Clip, GenerationResult  # noqa: F401 - part of this module's API
from presto_core.samplers import batched_guidance, call_sigmas, get_sampler
from presto_core.text import load_text_encoder

# Audio decoded (and CLAP-scored) per call, in seconds: bounds memory whatever the candidate count.
CHUNK_SECONDS = 64.0
# Fades around the regenerated seam of a loop (the loop's own samples elsewhere).
LOOP_FADE_MS = 30.0

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GenerationCost:
    """The work one validated request asks of the models, from their shapes alone (no timing).

    calls: denoiser calls the sampler makes (one DiT forward each; under CFG/CFG++ the conditional
    and unconditional passes share that forward as a doubled batch); active_fraction: mean fraction
    of the DiT's blocks that run per call (1.0 without layer dropping); candidates: clips sampled
    before CLAP rejection; frames: latent frames per clip; dit_gflop: DiT FLOPs over the whole
    sampling run in GFLOP (per token and block: projections and MLP (8 + 4 * mlp_ratio) * dim^2,
    attention 4 * dim * frames); decoded_frames: latent frames the VAE decodes (frames x
    candidates); clap_seconds: seconds of audio CLAP scores (0 without a CLAP model);
    stereo_seconds: seconds of audio the mono-to-stereo model widens (0 for mono)."""

    calls: int
    active_fraction: float
    candidates: int
    frames: int
    dit_gflop: float
    decoded_frames: int
    clap_seconds: float
    stereo_seconds: float = 0.0


def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PrestoError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PrestoError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def _resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    if precision not in ("auto", "bf16", "fp32"):
        raise PrestoError(f"precision must be one of 'auto', 'bf16', 'fp32', got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # bf16 autocast roughly halves CPU time where the CPU has native bf16 (AVX512-BF16 / AMX).
    native = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return torch.bfloat16 if "AVX512" in native.upper() else None


class PrestoPipeline:
    """Text-to-music generation with a Presto model folder. Build with :meth:`from_pretrained`."""

    def __init__(self, *, vae, text_encoder, variants: dict, default_variant: str, clap=None,
                 prompts: list | None = None, device="cpu", autocast_dtype=None, max_duration: float = 32.0,
                 source: str = "", m2s=None, component_sha256: dict | None = None):
        self.vae = vae
        self.text_encoder = text_encoder
        self.clap = clap
        self.m2s = m2s
        self.variants = variants  # name -> (VariantSpec, Precond)
        self.default_variant = default_variant
        self.prompts = prompts or []
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.max_duration = max_duration
        self.source = source
        self.component_sha256 = dict(component_sha256 or {})  # component -> weights hash (adapters check it)
        self.adapters: list[tuple[Adapter, float]] = []
        self._plain: dict[str, dict] = {}  # variant (or " clap") -> adapted Linear name -> its plain weight

    # -----------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, device="auto", precision: str = "auto",
                        variants: list[str] | None = None, revision: str | None = None,
                        cache_dir: str | None = None, adapters: list | None = None) -> "PrestoPipeline":
        """Load a model folder or hub repository (same layout). ``variants`` restricts which
        score models/generators are loaded (default: all); ``adapters``, a list of (adapter folder,
        weight), are merged into the components they adapt (see :meth:`set_adapters`). Raises
        PrestoError on any problem."""
        dev = _resolve_device(device)
        folder = ckpt.resolve_model_dir(path_or_hub_id, revision=revision, cache_dir=cache_dir)
        index = ckpt.read_index(folder)
        comps = index["components"]

        def load(name):
            if name not in comps:
                raise PrestoError(f"{folder}: model_index.json names no component {name!r}")
            entry = comps[name]
            module, meta = ckpt.load_component(folder / entry["path"], entry.get("sha256"), device=dev)
            return module, meta

        vae, _ = load("vae")
        wanted = variants or list(index["variants"])
        loaded = {}
        for name in wanted:
            if name not in index["variants"]:
                raise PrestoError(f"unknown variant {name!r}; this model has {sorted(index['variants'])}")
            spec = VariantSpec.from_dict(name, index["variants"][name])
            dit, meta = load(spec.component)
            edm = ckpt.config_from_dict(EDMConfig, meta.get("edm", {}))
            precond = Precond(dit, sigma_data=edm.sigma_data).eval()
            loaded[name] = (spec.with_edm(edm), precond)
        default = index["default_variant"] if index["default_variant"] in loaded else next(iter(loaded))
        clap = None
        text_encoder = load_text_encoder(index.get("text_encoder", {"kind": "minilm"}), device=dev)
        if "clap" in comps:
            clap_model, _ = load("clap")
            clap = EmbeddedClapScorer(clap_model, text_encoder)
        m2s = load("m2s")[0] if "m2s" in comps else None
        if m2s is not None and m2s.cfg.sample_rate != vae.cfg.sample_rate:
            raise PrestoError(f"{folder}: the m2s component runs at {m2s.cfg.sample_rate} Hz but the VAE at "
                              f"{vae.cfg.sample_rate} Hz")
        prompts = []
        if index.get("prompts") and (folder / index["prompts"]).is_file():
            prompts = json.loads((folder / index["prompts"]).read_text())
        pipe = cls(vae=vae, text_encoder=text_encoder, variants=loaded, default_variant=default, clap=clap,
                   prompts=prompts, device=dev, autocast_dtype=_resolve_precision(precision, dev),
                   max_duration=float(index.get("max_duration", 32.0)), source=str(path_or_hub_id), m2s=m2s,
                   component_sha256={k: v.get("sha256") for k, v in comps.items()})
        if adapters:
            pipe.set_adapters(adapters)
        return pipe

    def set_adapters(self, adapters: list) -> None:
        """Serve with these adapters from now on: ``adapters`` is a list of (adapter folder or
        loaded :class:`~presto_core.adapters.Adapter`, weight in [0, 2]); [] serves the plain model.
        Each adapter's updates are merged into the weights of the variants whose component it adapts
        (and into the CLAP's for a "clap" component: the judge of CLAP rejection), on top of the plain
        weights (kept aside the first time), so weights can change per request and generation costs
        what it does without adapters. All adapters are checked (hashes of the
        components they were trained on, shapes) before any weight changes."""
        loaded = []
        for entry in adapters:
            try:
                src, weight = entry
            except (TypeError, ValueError):
                raise PrestoError(f"adapters must be (folder, weight) pairs, got {entry!r}") from None
            adapter = src if isinstance(src, Adapter) else load_adapter(src)
            check_compatible(adapter, self.component_sha256)
            loaded.append((adapter, check_weight(weight, adapter.path)))
        merged = []
        try:
            for key, module, comp in self._adapter_targets():
                merge_into(module, comp, loaded, self._plain.setdefault(key, {}))
                merged.append((key, module, comp))
        except PrestoError:
            for key, module, comp in merged:  # a layer that does not fit: leave every module as it was
                merge_into(module, comp, self.adapters, self._plain[key])
            raise
        self.adapters = loaded

    def _adapter_targets(self) -> list[tuple[str, torch.nn.Module, str]]:
        """(key of its plain weights, module, component name) of everything an adapter can change:
        each variant's backbone, and the CLAP (an adapter may teach it the person's captions)."""
        out = [(name, precond.backbone, spec.component) for name, (spec, precond) in self.variants.items()]
        if self.clap is not None:
            out.append((" clap", self.clap.model, "clap"))  # a key no variant name can take
        return out

    def adapter_settings(self) -> dict:
        """{"adapters": [{name, path, weight, sha256}, ...]} of the adapters being served ({} for none),
        for a result's settings."""
        if not self.adapters:
            return {}
        return {"adapters": [{"name": a.name, "path": a.path, "weight": w, "sha256": a.meta.get("sha256")}
                             for a, w in self.adapters]}

    @property
    def sample_rate(self) -> int:
        return self.vae.cfg.sample_rate

    @property
    def has_stereo(self) -> bool:
        """Whether this model folder has a mono-to-stereo component (clips are stereo by default)."""
        return self.m2s is not None

    @property
    def variant_names(self) -> list[str]:
        return list(self.variants)

    def _variant(self, name: str) -> tuple[VariantSpec, Precond]:
        if name not in self.variants:
            raise PrestoError(f"model variant must be one of {self.variant_names}, got {name!r}")
        return self.variants[name]

    def variant_spec(self, name: str) -> VariantSpec:
        """How variant ``name`` is sampled (sampler, default steps, guidance, drop schedule)."""
        return self._variant(name)[0]

    def has_layer_budget(self, name: str) -> bool:
        """Whether variant ``name``'s DiT is conditioned on its layer budget (Presto-L / -LS), so
        that a request may override its drop schedule."""
        return bool(self._variant(name)[1].backbone.cfg.budget_conditioning)

    # -----------------------------------------------------------------------------------------
    # Generation

    def _sync(self) -> None:
        # CUDA kernels run asynchronously: wait before reading a stage's clock.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _denoiser(self, spec: VariantSpec, precond: Precond, text, mask, bpm: float, b: int, guidance: float,
                  drop_schedule=None, beat_start: float = 0.0, beats_per_bar: float = 4.0):
        """The denoiser callable D(x, sigma) for this variant: layer budget from sigma, and
        batched CFG/CFG++ for score models (one forward over [cond; uncond]). A beat-grid model gets
        the grid at ``bpm`` with beat ``beat_start`` on the first latent frame."""
        schedule = self._drop_schedule(spec, precond, drop_schedule)
        bpm_t = torch.full((b,), float(bpm), device=self.device)
        grid = bool(precond.backbone.cfg.beat_grid)
        rate = self.vae.cfg.sample_rate / self.vae.cfg.hop

        def forward(x, sigma, uncond):
            k = schedule(float(sigma)) if schedule is not None else 0
            n = x.shape[0]
            reps = n // text.shape[0]
            extra = {}
            if grid:
                extra = dict(beats=beat_positions(beat_start, float(bpm), x.shape[-1], rate, self.device).expand(n, -1),
                             beats_per_bar=beats_per_bar)
            with self._autocast():
                return precond(x, sigma, text=text.repeat(reps, 1, 1), text_mask=mask.repeat(reps, 1),
                               bpm=bpm_t.repeat(reps), uncond=uncond, layers_dropped=k, **extra).float()

        if spec.guidance_kind == "none":
            return lambda x, sigma: forward(x, sigma, None)
        uncond = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(self.device)
        return batched_guidance(lambda x2, sigma: forward(x2, sigma, uncond), guidance,
                                plus_plus=spec.guidance_kind == "cfg_pp")

    @staticmethod
    def _drop_schedule(spec: VariantSpec, precond: Precond, override=None) -> Optional[DropSchedule]:
        """sigma -> blocks dropped for this variant (``override`` or its own counts, rescaled to
        its depth, quintiles of its noise process), or None when it runs every block."""
        counts = override or spec.drop_schedule
        return DropSchedule.scaled(counts, precond.backbone.cfg.depth, spec.edm) if counts else None

    def _frames(self, duration: float) -> tuple[int, int]:
        """(audio samples, latent frames) per clip of ``duration`` seconds."""
        n_samples = int(round(duration * self.vae.cfg.sample_rate))
        return n_samples, math.ceil(n_samples / self.vae.cfg.hop)

    def cost(self, req: ValidatedRequest) -> GenerationCost:
        """What a validated request will ask of the models (see :class:`GenerationCost`): the
        sampler's denoiser calls at their sigmas, the blocks each call runs under the drop schedule,
        the candidates and the latent frames. Cheap (no model runs)."""
        spec, precond = self._variant(req.variant)
        cfg = precond.backbone.cfg
        sigmas = call_sigmas(spec.sampler, self.schedule(req))
        schedule = self._drop_schedule(spec, precond, req.drop_schedule)
        kept = [cfg.depth if schedule is None else schedule.kept(s) for s in sigmas]
        _, frames = self._frames(req.duration)
        batch = req.candidates * (1 if spec.guidance_kind == "none" else 2)
        per_token_block = (8 + 4 * cfg.mlp_ratio) * cfg.dim ** 2 + 4 * cfg.dim * frames
        return GenerationCost(
            calls=len(sigmas), active_fraction=sum(kept) / (len(kept) * cfg.depth), candidates=req.candidates,
            frames=frames, dit_gflop=sum(kept) * batch * frames * per_token_block / 1e9,
            decoded_frames=frames * req.candidates,
            clap_seconds=req.duration * req.candidates if self.clap is not None else 0.0,
            stereo_seconds=req.duration * req.num_clips if req.stereo else 0.0)

    def schedule(self, req: GenerationRequest, strength: Optional[float] = None) -> torch.Tensor:
        """The noise levels a validated request samples at: Karras(rho) from sigma_max (or, for a
        variation or an edit's ``strength``, from the level that strength selects on the same ramp)
        down to sigma_min, then 0. Shape (steps + 1,), float64."""
        edm = self.variants[req.variant][0].edm
        top = edm.sigma_max
        if strength is None and req.init_audio is not None:
            strength = req.strength
        if strength is not None:
            top = float(karras_ramp(torch.tensor(1.0 - strength, dtype=torch.float64),
                                    edm.sigma_min, edm.sigma_max, req.rho))
        return karras_sigmas(req.steps, edm.sigma_min, top, req.rho)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens for ``n`` clips of one prompt: ((n, L, D) float, (n, L) bool mask)."""
        text, mask = self.text_encoder.encode([prompt], device=self.device)
        return text.expand(n, -1, -1), mask.expand(n, -1)

    @torch.no_grad()
    def encode_audio(self, mono: np.ndarray, frames: int) -> torch.Tensor:
        """Mono audio (N,) at the pipeline's rate -> (1, C, frames) diffusion-space latents (the
        posterior mean), zero-padded or cut to ``frames`` latent frames."""
        hop = self.vae.cfg.hop
        wav = torch.from_numpy(np.ascontiguousarray(mono[:frames * hop], dtype=np.float32)).to(self.device)
        wav = torch.nn.functional.pad(wav, (0, frames * hop - wav.shape[-1]))
        return self.vae.encode_latents(wav.view(1, 1, -1))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, T) latents -> (B, T * hop) float32 mono audio in [-1, 1] (one decoder call)."""
        with self._autocast():
            return self.vae.decode_latents(z.float()).float()[:, 0].clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample_latents(self, req: ValidatedRequest, cond, frames: int, gen: torch.Generator,
                       z_init: Optional[torch.Tensor] = None, known: Optional[tuple] = None,
                       callback=None, strength: Optional[float] = None, beat_start: float = 0.0) -> torch.Tensor:
        """Run the variant's sampler for ``req`` over ``frames`` latent frames: (n, C, frames).

        cond: :meth:`encode_prompt`'s pair for n clips; z_init: (1|n, C, frames) latents a
        variation or an edit starts from, noised to the schedule's top (set by ``strength``, or by
        the request's for a variation); known: ``(z_known (1|n, C, frames), keep (frames,) bool or float
        weights)`` fixes the kept frames to z_known at every step (see presto_core.inpaint);
        beat_start: the beat (from the piece's first downbeat) on the first frame, for a beat-grid
        model (a window of a longer piece starts part-way into its grid)."""
        spec, precond = self.variants[req.variant]
        text, mask = cond
        n = text.shape[0]
        sigmas = self.schedule(req, strength).to(self.device)
        noise = torch.randn(n, self.vae.cfg.latent_channels, frames, generator=gen, device=self.device)
        x = noise * sigmas[0].float() if z_init is None else z_init + noise * sigmas[0].float()
        denoiser = self._denoiser(spec, precond, text, mask, req.bpm, n, req.guidance, req.drop_schedule,
                                  beat_start, beats_per_bar(req.time_signature))
        if known is not None:
            z_known, keep = known
            denoiser = masked_denoiser(denoiser, z_known, keep)
            w = keep.to(device=x.device, dtype=x.dtype).view(1, 1, -1)
            start = z_known + noise * sigmas[0].float()
            x = torch.where(w == 1.0, start, w * start + (1 - w) * x)
        return get_sampler(spec.sampler)(denoiser, x, sigmas, generator=gen, callback=callback)

    @torch.no_grad()
    def widen(self, mono: torch.Tensor) -> torch.Tensor:
        """Mono clips (B, N) in [-1, 1] -> stereo (B, 2, N) float32 with the folder's mono-to-stereo
        model, exactly as :meth:`generate` widens its clips; ``(L + R) / 2`` is the input."""
        if self.m2s is None:
            raise PrestoError("this model folder has no mono-to-stereo component (m2s)")
        with self._autocast():
            return self.m2s(mono.to(self.device).float())

    @torch.no_grad()
    def generate(self, request: GenerationRequest | None = None, progress: Progress | None = None,
                 **kwargs) -> GenerationResult:
        """Generate clips for ``request`` (or keyword arguments of :class:`GenerationRequest`).

        Returns the ``num_clips`` best of ``ceil(num_clips / (1 - reject_ratio))`` candidates by
        CLAP score, each float32 audio of ``duration`` seconds: stereo (2, N) when the request
        resolves to stereo (the kept clips only are widened, after CLAP has scored the mono mids),
        mono (N,) otherwise. This is where a Python
        caller's request is validated (bad values raise PrestoError); a :class:`ValidatedRequest`
        (``request.validated(pipe)``, as the app builds) is used as it is.
        """
        if isinstance(request, ValidatedRequest):
            req = request
        else:
            req = (request if request is not None else GenerationRequest(**kwargs)).validated(self)
        spec, precond = self.variants[req.variant]
        progress = progress or (lambda stage, i, n: None)
        t0 = time.perf_counter()
        timings = {}

        n_cand = req.candidates
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        gen = torch.Generator(device=self.device).manual_seed(seed)

        progress("text", 0, 1)
        cond = self.encode_prompt(req.prompt, n_cand)
        self._sync()
        timings["text"] = time.perf_counter() - t0

        # Latents and the schedule; variations start part-way down from the encoded audio.
        t1 = time.perf_counter()
        sr = self.vae.cfg.sample_rate
        n_samples, frames = self._frames(req.duration)
        z_init = None
        if req.init_audio is not None:
            z_init = self.encode_audio(req.init_audio_at(sr)[:n_samples], frames).expand(n_cand, -1, -1)
        z = self.sample_latents(req, cond, frames, gen, z_init=z_init,
                                callback=lambda i, n, _x: progress("generation", i + 1, n))
        self._sync()
        timings["generation"] = time.perf_counter() - t1

        # Decoding and scoring go a few candidates at a time: the decoder's activations for 32
        # candidates of 32 s at once would need about 10 GB, a chunk needs a fixed amount.
        t2 = time.perf_counter()
        chunk = max(1, int(CHUNK_SECONDS // req.duration))
        parts = []
        for k in range(0, n_cand, chunk):
            progress("decoding", k, n_cand)
            parts.append(self.decode(z[k:k + chunk])[:, :n_samples])
        audio = torch.cat(parts)
        del parts
        self._sync()
        timings["decoding"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        scores = None
        if self.clap is not None:
            chunks = []
            for k in range(0, n_cand, chunk):
                progress("clap", k, n_cand)
                chunks.append(self.clap.score([req.prompt], audio[k:k + chunk], sr).float().cpu())
            scores = torch.cat(chunks)
            order = select_best(scores, req.num_clips).tolist()
        else:
            order = list(range(req.num_clips))
        timings["clap"] = time.perf_counter() - t3

        kept = audio[order]
        timings["loop"] = 0.0
        if req.loop:
            # Only the kept clips are made to loop: CLAP judged them as sampled.
            t5 = time.perf_counter()
            bars = loop_bars(req.duration, req.bpm, req.time_signature)
            bar = bar_seconds(req.bpm, req.time_signature) * sr
            one = (cond[0][:1], cond[1][:1])
            kept = torch.stack([torch.from_numpy(make_loop(
                self, req, one, kept[j].cpu().numpy(), bars, bar, int(round(LOOP_FADE_MS * sr / 1000)), gen,
                int(round(LATENT_RAMP_S * sr / self.vae.cfg.hop)), callback=lambda i, n, _x, j=j: progress("loop", j * n + i + 1, n * len(order))))
                for j in range(len(order))]).to(self.device)
            timings["loop"] = time.perf_counter() - t5
        timings["stereo"] = 0.0
        if req.stereo:
            t4 = time.perf_counter()
            progress("stereo", 0, 1)
            if req.loop:
                kept = torch.stack([torch.from_numpy(widen_loop(self, k.cpu().numpy())) for k in kept])
            else:
                kept = self.widen(kept)
            self._sync()
            timings["stereo"] = time.perf_counter() - t4
        timings["total"] = time.perf_counter() - t0

        audio_np = kept.cpu().numpy().astype(np.float32)
        clips = [Clip(audio_np[j], None if scores is None else float(scores[i]), i) for j, i in enumerate(order)]
        settings = req.settings(seed=seed, steps=req.steps, candidates=n_cand, model=self.source,
                                sampler=spec.sampler, **self.adapter_settings())
        if req.loop:
            settings["loop_bars"] = loop_bars(req.duration, req.bpm, req.time_signature)
        return GenerationResult(clips=clips, sample_rate=sr, settings=settings, timings=timings)

    def extend(self, audio, sample_rate: int, bars: int, prompt: str, bpm: float, progress: Progress | None = None,
               **kwargs) -> GenerationResult:
        """Continue ``audio`` (mono (N,) or stereo, at ``sample_rate`` Hz, bar 1 at its first
        sample) by ``bars`` whole bars at ``bpm`` from its last complete bar, in windows of the
        model's maximum duration, up to LIMITS["piece_seconds"] in total. Other keywords:
        :class:`presto_core.editing.EditRequest`'s (time_signature, variant, steps, seed, stereo,
        crossfade_ms, context_seconds, ...). One clip; ``windows`` lists each window's CLAP score."""
        edit = EditRequest(kind="extend", source=audio, source_sr=sample_rate, bars=bars, prompt=prompt, bpm=bpm,
                           **kwargs).validated(self)
        return editing.extend(self, edit, progress)

    def inpaint(self, audio, sample_rate: int, bars: tuple[int, int], prompt: str, bpm: float,
                progress: Progress | None = None, **kwargs) -> GenerationResult:
        """Regenerate bars ``bars = (a, b)`` (1-based, inclusive, bar 1 at the first sample) of
        ``audio`` from ``prompt``; outside the bars and a ``crossfade_ms`` fade each side the
        audio is unchanged, sample for sample. Keywords as :meth:`extend`."""
        edit = EditRequest(kind="inpaint", source=audio, source_sr=sample_rate, replace=bars, prompt=prompt, bpm=bpm,
                           **kwargs).validated(self)
        return editing.inpaint(self, edit, progress)

    def make_loop(self, audio, sample_rate: int, prompt: str, bpm: float, bars: int | None = None,
                  progress: Progress | None = None, **kwargs) -> GenerationResult:
        """The first ``bars`` bars of ``audio`` (None: as many as fit one window) made to loop: the
        audio around the end-to-start seam is regenerated with both sides known, the rest kept.
        Keywords as :meth:`extend`."""
        edit = EditRequest(kind="loop", source=audio, source_sr=sample_rate, bars=bars, prompt=prompt, bpm=bpm,
                           **kwargs).validated(self)
        return editing.loop(self, edit, progress)

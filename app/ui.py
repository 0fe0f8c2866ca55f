"""The Blocks layout and its wiring. ``build_ui(engine, handlers)`` returns the
gr.Blocks; nothing here holds a model (the engine is built in app.main and closed over).

Named API endpoints: generate, variation, extend, replace_bars, rho_sweep, ab_compare, export_loop,
settings_from_wav, estimate, info. Every endpoint that runs the model shares the concurrency group "model".
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import gradio as gr

from presto_core.request import LIMITS

from app.api_guard import PrestoBlocks
from app.engine import CUSTOM, QUALITY, Engine
from app.adapter_mix import SLIDER_RANGE
from app.handlers import AB_MODES, LOOP_MODES, MAX_SWEEP, Handlers, apply_settings, guarded
from presto_core.music import MAX_BARS, TIME_SIGNATURES
from app.results import clip_markdown

MAX_CLIPS = LIMITS["num_clips"][1]
RHO_PRESETS = (1, 7, 100, 1000)
LOOP_CONCURRENCY = 2  # loop exports at once (each decodes up to LOOP_MAX_SECONDS of an upload)
CSS = (".presto-slot {padding: 6px} .presto-eta {font-size: 0.95em} "
       ".presto-sweep-col {flex: 0 1 calc(25% - 12px) !important; min-width: 200px !important}")


def _unchecked(component):
    """Let a slider's/number's value reach the handler unchecked (and unrounded), so out-of-range or
    fractional API input gets the handler's message (which names the control and its range) instead
    of Gradio's bare bounds error or a silent rounding. (An instance attribute, not a subclass:
    Gradio writes a .pyi beside every component subclass's source file.)"""
    component.preprocess = lambda payload: payload
    return component


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 - reads like the component it builds
    return _unchecked(gr.Slider(*args, **kwargs))


def Number(*args, **kwargs) -> gr.Number:  # noqa: N802
    return _unchecked(gr.Number(*args, **kwargs))


def rho_from_log(x: float) -> float:
    """Slider position log10(rho) -> a tidy rho (2 decimals below 10, 3 significant digits above)."""
    rho = 10.0 ** float(x)
    return round(rho, 2) if rho < 10 else float(f"{rho:.3g}")


def log_from_rho(rho) -> float:
    try:
        return round(math.log10(min(max(float(rho), 1.0), 1000.0)), 3)
    except (TypeError, ValueError):
        return math.log10(7.0)


def _slot_updates(record: dict | None, n_slots: int, with_buttons: bool):
    """Per slot: group, title/info markdown, audio, spectrogram (+ WAV and loop downloads)."""
    clips = (record or {}).get("clips", [])
    out = []
    for i in range(n_slots):
        e = clips[i] if i < len(clips) else None
        title = e.get("title", f"Clip {i + 1}") if e else ""
        info = clip_markdown(e, title) + (f"\n\n{e['latency']}" if e and e.get("latency") else "") if e else ""
        out += [gr.update(visible=e is not None), info, e and e["wav"], e and e["png"]]
        if with_buttons:
            out += [gr.update(value=e and e["wav"]),
                    gr.update(value=e and e["loop"], visible=bool(e and e["loop"]),
                              label=f"⬇ Loop ({e['loop_bars']} bar{'s' if e['loop_bars'] > 1 else ''})"
                              if e and e["loop"] else "⬇ Loop")]
    return out


def _result_card(audio_id: str, image_height: int, **column_kwargs) -> list:
    """A hidden column with a caption, a player and a spectrogram: [column, markdown, audio, image]."""
    with gr.Column(visible=False, **column_kwargs) as col:
        info = gr.Markdown()
        audio = gr.Audio(type="filepath", interactive=False, show_label=False, elem_id=audio_id)
        img = gr.Image(type="filepath", interactive=False, show_label=False, height=image_height)
    return [col, info, audio, img]


def _examples(prompts) -> list[list]:
    """[prompt, bpm] rows from the model folder's prompts ({"prompt", "bpm"} dicts or plain text)."""
    rows = []
    for p in prompts or []:
        if isinstance(p, str) and p.strip():
            rows.append([p, 120.0])
        elif isinstance(p, dict) and str(p.get("prompt", "")).strip():
            bpm = p.get("bpm", 120.0)
            rows.append([str(p["prompt"]), float(bpm) if isinstance(bpm, (int, float)) else 120.0])
    return rows[:24]


def build_ui(engine: Engine, handlers: Handlers) -> gr.Blocks:
    pipe = engine.pipe
    examples = _examples(pipe.prompts)
    h = handlers
    max_dur = min(float(pipe.max_duration), LIMITS["duration"][1])
    default_v = pipe.default_variant
    has_clap = pipe.clap is not None
    has_stereo = pipe.has_stereo
    gpu = dict(concurrency_id="model", concurrency_limit="default")
    cheap = dict(concurrency_limit=None, show_progress="hidden")

    with PrestoBlocks(title="Presto! text-to-music sketches", delete_cache=(900, 3600)) as demo:
        gen_state, sweep_state, ab_state = gr.State(None), gr.State(None), gr.State(None)
        src = Path(pipe.source).name if Path(pipe.source).is_dir() else pipe.source
        gr.Markdown(f"## Presto! — text-to-music sketches\nModel `{src}` on **{engine.device}** · "
                    f"{', '.join(engine.label(v) for v in engine.variants)} · {pipe.sample_rate} Hz "
                    f"{'stereo' if has_stereo else 'mono (this model folder has no mono-to-stereo component)'}")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=360):
                        prompt = gr.Textbox(label="Prompt", lines=2, max_length=LIMITS["prompt_chars"][1],
                                            placeholder="e.g. mellow lo-fi hip hop beat with warm Rhodes chords",
                                            value=examples[0][0] if examples else "", elem_id="prompt")
                        with gr.Row():
                            bpm = Slider(*LIMITS["bpm"], value=examples[0][1] if examples else 120.0, step=1,
                                         label="BPM", elem_id="bpm")
                            time_sig = _unchecked(gr.Dropdown(list(TIME_SIGNATURES), value="4/4", label="Time signature",
                                                   min_width=100))
                        if examples:
                            gr.Examples(examples, inputs=[prompt, bpm], label="Example prompts")
                        with gr.Row():
                            dur_mode = _unchecked(gr.Radio(["seconds", "bars"], value="seconds", label="Length in",
                                                min_width=140))
                            duration = Slider(LIMITS["duration"][0], max_dur, value=min(10.0, max_dur), step=0.5,
                                              label=f"Duration (s, up to {max_dur:g})", elem_id="duration")
                            bars = Slider(1, MAX_BARS, value=4, step=1, label="Bars", visible=False)
                        variant = _unchecked(gr.Radio(engine.choices(), value=default_v, label="Model",
                                           visible=len(engine.variants) > 1, elem_id="variant"))
                        quality = _unchecked(gr.Radio([*QUALITY, CUSTOM], value="balanced", label="Speed ↔ quality",
                                           info="steps and layer budget together"))
                        with gr.Row():
                            num_clips = Slider(*LIMITS["num_clips"], value=2, step=1, label="Clips", scale=3)
                            stereo = gr.Checkbox(value=has_stereo, label="Stereo", interactive=has_stereo, scale=1,
                                                 elem_id="stereo",
                                                 info="mono-to-stereo: the mono clip is the mid" if has_stereo
                                                 else "this model folder has no mono-to-stereo component")
                            loop = gr.Checkbox(value=False, label="Loop", scale=1, elem_id="loop",
                                               info="whole bars; the end flows into the start")
                        mix = engine.mix
                        # The endpoints take the mix as one text ("name:weight, ..."); the sliders write it.
                        adapter_spec = gr.Textbox(value=mix.format(mix.defaults), visible=False, elem_id="adapters")
                        adapter_sliders = []
                        if mix.names:
                            with gr.Accordion("Adapters (0 = off, 1 = as trained)", open=True):
                                for i, (a, w) in enumerate(zip(mix.adapters, mix.defaults)):
                                    adapter_sliders.append(Slider(*SLIDER_RANGE, value=w, step=0.05, label=a.name,
                                                                  info=_adapter_info(a), elem_id=f"adapter-{i}"))
                        with gr.Accordion("Advanced", open=False):
                            steps = Slider(*LIMITS["steps"], value=engine.default_steps(default_v), step=1,
                                           label="Steps", elem_id="steps")
                            with gr.Row():
                                rho_log = gr.Slider(0.0, 3.0, value=round(math.log10(7), 3), step=0.001, scale=3,
                                                    label="ρ, log scale",
                                                    info="log10 ρ: 0 = 1, 1 = 10, 2 = 100, 3 = 1000")
                                rho = Number(value=7.0, label="ρ (exact)", minimum=None, maximum=None, scale=1,
                                             elem_id="rho")
                            with gr.Row():
                                rho_btns = [gr.Button(f"ρ = {r}", size="sm") for r in RHO_PRESETS]
                            reject = Slider(*LIMITS["reject_ratio"], value=0.0, step=0.05,
                                            label="CLAP rejection ratio", interactive=has_clap,
                                            info="generate n / (1 - ratio) candidates, keep the n best by CLAP"
                                            if has_clap else "this model folder has no CLAP model")
                            with gr.Row():
                                seed = Number(value=-1, precision=0, label="Seed (-1 = random)", scale=2,
                                              elem_id="seed")
                                rand_btn = gr.Button("🎲 Random", size="sm", scale=1)
                                reuse_btn = gr.Button("♻ Reuse last", size="sm", scale=1)
                            drop = gr.Textbox(label="Layer budget (blocks dropped per noise quintile at 28-layer "
                                                    "scale, noisiest first; empty = the model's own)",
                                              value="", interactive=engine.has_budget(default_v))
                            wav_in = gr.File(label="Load settings from a Presto WAV", file_types=[".wav"],
                                             height=90)
                            settings_json = gr.JSON(label="Settings read from the WAV", visible=False)
                        with gr.Row():
                            gen_btn = gr.Button("Generate", variant="primary", scale=2, elem_id="generate-btn")
                            stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-btn")
                            eta = gr.Markdown("", label="expected latency", elem_classes="presto-eta", elem_id="eta")
                        with gr.Accordion("Variation from audio", open=False) as var_acc:
                            var_audio = gr.Audio(label="Source clip (upload, or press 'Vary' under a result)",
                                                 type="filepath", sources=["upload"])
                            strength = Slider(*LIMITS["strength"], value=0.5, step=0.01,
                                              label="Strength (1 = ignore the source, small = stay close)")
                            var_btn = gr.Button("Generate variation", variant="secondary")
                        with gr.Accordion("Extend or replace bars", open=False):
                            edit_audio = gr.Audio(label="Clip to edit (upload, or use Extend / Replace under a "
                                                        "result)", type="filepath", sources=["upload"])
                            source_bpm = Number(value=None, label="Source BPM (clips from Presto carry their own)",
                                                minimum=None, maximum=None, elem_id="source-bpm")
                            with gr.Row():
                                edit_bars = Number(value=8, precision=0, label="Bars to add", minimum=None,
                                                   maximum=None)
                                extend_btn = gr.Button("Extend", variant="secondary", elem_id="extend-btn")
                            with gr.Row():
                                edit_from = Number(value=2, precision=0, label="Replace from bar", minimum=None,
                                                   maximum=None)
                                edit_to = Number(value=2, precision=0, label="to bar", minimum=None, maximum=None)
                                replace_btn = gr.Button("Replace bars", variant="secondary", elem_id="replace-btn")
                            edit_strength = Number(value=None, label="Edit strength (0.01-1; 1 = from pure noise; "
                                                                     "empty = 1 to extend, 0.9 to replace)",
                                                   minimum=None, maximum=None)
                        with gr.Accordion("Loop export", open=False):
                            loop_clip = gr.Audio(label="Clip to loop", type="filepath", sources=["upload"])
                            loop_mode = _unchecked(gr.Radio(list(LOOP_MODES), value=LOOP_MODES[0], label="Loop",
                                                            info="made to loop: the model regenerates the seam"))
                            with gr.Row():
                                loop_bars = Number(value=0, precision=0, label="Bars (0 = as many as fit)")
                                loop_xf = Slider(0, 100, value=10, step=1, label="Crossfade (ms)")
                            loop_btn = gr.Button("Export loop")
                            loop_file = gr.File(label="Loop WAV", interactive=False)
                    with gr.Column(scale=3, min_width=420):
                        latency = gr.Markdown("Results appear here.", label="latency", elem_id="latency")
                        slots, slot_out, cards = [], [], []
                        for i in range(MAX_CLIPS):
                            with gr.Group(visible=False, elem_classes="presto-slot") as grp:
                                info = gr.Markdown()
                                with gr.Row():
                                    audio = gr.Audio(type="filepath", interactive=False, show_label=False,
                                                     elem_id=f"clip-audio-{i}")
                                    img = gr.Image(type="filepath", interactive=False, show_label=False, height=130,
                                                   elem_id=f"clip-spec-{i}")
                                with gr.Row():
                                    dl = gr.DownloadButton("⬇ WAV", size="sm")
                                    dl_loop = gr.DownloadButton("⬇ Loop", size="sm", visible=False)
                                    use_btn = gr.Button("Use these settings", size="sm")
                                    vary_btn = gr.Button("Vary", size="sm")
                                with gr.Row():
                                    card_add = Number(value=8, precision=0, label="bars", min_width=70, scale=1,
                                                      minimum=None, maximum=None)
                                    card_ext = gr.Button("Extend", size="sm", scale=1, elem_id=f"clip-extend-{i}")
                                    card_a = Number(value=2, precision=0, label="from bar", min_width=70, scale=1,
                                                    minimum=None, maximum=None)
                                    card_b = Number(value=2, precision=0, label="to bar", min_width=70, scale=1,
                                                    minimum=None, maximum=None)
                                    card_rep = gr.Button("Replace bars", size="sm", scale=1,
                                                         elem_id=f"clip-replace-{i}")
                            slots.append((use_btn, vary_btn))
                            cards.append((card_add, card_ext, card_a, card_b, card_rep))
                            slot_out += [grp, info, audio, img, dl, dl_loop]
                        with gr.Accordion("Files and report (what the API returns)", open=False):
                            files = gr.File(label="WAV files", file_count="multiple", interactive=False)
                            rep = gr.JSON(label="Report")

            with gr.Tab("ρ sweep", id="sweep"):
                gr.Markdown("The same prompt, seed, model and steps (from the Generate tab) at several ρ, one clip "
                            "each — how the noise-schedule shape trades detail for structure (paper, A.5). "
                            "A random seed (-1) is drawn once and shared. With 1 or 2 steps the schedule is "
                            "[σ_max, σ_min] whatever ρ, so use 3 steps or more.")
                with gr.Row():
                    rho_values = gr.Textbox(value="1, 3, 7, 30, 100, 1000", label=f"ρ values (up to {MAX_SWEEP})",
                                            scale=3)
                    sweep_btn = gr.Button("Run sweep", variant="primary", scale=1, elem_id="sweep-btn")
                sweep_out = []
                for row in range(0, MAX_SWEEP, 4):
                    with gr.Row():
                        for i in range(row, row + 4):
                            sweep_out += _result_card(f"sweep-audio-{i}", 110, min_width=200,
                                                      elem_classes="presto-sweep-col")
                with gr.Accordion("Files and report", open=False):
                    sweep_files = gr.File(file_count="multiple", interactive=False, label="WAV files")
                    sweep_rep = gr.JSON(label="Report (with each ρ's σ schedule)")

            with gr.Tab("A/B", id="ab"):
                gr.Markdown("Two model variants on the same prompt and seed (settings from the Generate tab), "
                            "one clip each" + (", or one variant with the Generate tab's adapters against the "
                                               "plain model." if engine.mix.names else "."))
                names = engine.variants
                ab_mode = _unchecked(gr.Radio(list(AB_MODES), value=AB_MODES[0], label="Compare",
                                              visible=bool(engine.mix.names), elem_id="ab-mode"))
                with gr.Row():
                    ab_a = _unchecked(gr.Dropdown(engine.choices(), value=names[-1], label="A"))
                    ab_b = _unchecked(gr.Dropdown(engine.choices(), value=names[0], label="B"))
                    own_steps = gr.Checkbox(value=True, label="each at its own default steps")
                    ab_btn = gr.Button("Compare", variant="primary", elem_id="ab-btn")
                ab_out = []
                with gr.Row():
                    for i in range(2):
                        ab_out += _result_card(f"ab-audio-{i}", 130)
                with gr.Accordion("Files and report", open=False):
                    ab_files = gr.File(file_count="multiple", interactive=False, label="WAV files")
                    ab_rep = gr.JSON(label="Report")

            with gr.Tab("About", id="about"):
                gr.Markdown(_about(engine))

        # ---- wiring -------------------------------------------------------------------------
        controls = [prompt, bpm, dur_mode, duration, bars, time_sig, variant, steps, rho, reject, num_clips, seed,
                    drop, stereo, loop, adapter_spec]
        filled = [prompt, bpm, dur_mode, duration, time_sig, variant, steps, rho, reject, num_clips, seed, drop,
                  stereo, rho_log, quality, adapter_spec]

        gen = gr.on([gen_btn.click, prompt.submit], h.generate, controls, [gen_state, files, rep, latency],
                    api_name="generate", **gpu)
        gen.success(lambda r: _slot_updates(r, MAX_CLIPS, True), gen_state, slot_out, api_visibility="private",
                    **cheap)
        var = var_btn.click(h.variation, [var_audio, strength, *controls], [gen_state, files, rep, latency],
                            api_name="variation", **gpu)
        var.success(lambda r: _slot_updates(r, MAX_CLIPS, True), gen_state, slot_out, api_visibility="private",
                    **cheap)
        sweep = sweep_btn.click(h.rho_sweep, [rho_values, prompt, bpm, dur_mode, duration, bars, time_sig, variant,
                                              steps, seed, drop, stereo, adapter_spec],
                                [sweep_state, sweep_files, sweep_rep],
                                api_name="rho_sweep", **gpu)
        sweep.success(lambda r: _slot_updates(r, MAX_SWEEP, False), sweep_state, sweep_out,
                      api_visibility="private", **cheap)
        ab = ab_btn.click(h.ab_compare, [ab_a, ab_b, own_steps, prompt, bpm, dur_mode, duration, bars, time_sig,
                                         steps, rho, seed, stereo, adapter_spec, ab_mode], [ab_state, ab_files, ab_rep],
                          api_name="ab_compare",
                          **gpu)
        ab.success(lambda r: _slot_updates(r, 2, False), ab_state, ab_out, api_visibility="private", **cheap)
        edit_outputs = [gen_state, files, rep, latency]
        edit_common = [prompt, source_bpm, time_sig, variant, steps, rho, seed, stereo, edit_strength, adapter_spec]
        edits = [extend_btn.click(h.extend, [edit_audio, edit_bars, *edit_common], edit_outputs, api_name="extend",
                                  **gpu),
                 replace_btn.click(h.replace_bars, [edit_audio, edit_from, edit_to, *edit_common], edit_outputs,
                                   api_name="replace_bars", **gpu)]
        for i, (card_add, card_ext, card_a, card_b, card_rep) in enumerate(cards):
            # A result's own WAV carries its tempo: the card's buttons edit it in place of an upload.
            edits.append(card_ext.click(functools.partial(_card_edit, h.extend, i), [gen_state, card_add, *edit_common],
                                        edit_outputs, api_visibility="private", **gpu))
            edits.append(card_rep.click(functools.partial(_card_edit, h.replace_bars, i),
                                        [gen_state, card_a, card_b, *edit_common], edit_outputs,
                                        api_visibility="private", **gpu))
        for ev in edits:
            ev.success(lambda r: _slot_updates(r, MAX_CLIPS, True), gen_state, slot_out, api_visibility="private",
                       **cheap)
        # Stop: Gradio cancels the running job; the handler notices between sampler steps and frees
        # the model (app/api_guard.job_alive). gradio_client's Job.cancel() posts to this too.
        loop_ev = loop_btn.click(h.export_loop, [loop_clip, bpm, time_sig, loop_bars, loop_xf, loop_mode, prompt,
                                                 variant, seed, adapter_spec], loop_file, api_name="export_loop",
                                 concurrency_limit=LOOP_CONCURRENCY)
        stop_btn.click(None, None, None, cancels=[gen, var, sweep, ab, loop_ev, *edits], api_visibility="private",
                       **cheap)

        def fill(settings):
            v = apply_settings(settings, engine)
            return [v[k] for k in ("prompt", "bpm", "duration_mode", "duration", "time_signature", "variant",
                                   "steps", "rho", "reject_ratio", "num_clips", "seed", "drop_schedule", "stereo")] + \
                [log_from_rho(v["rho"]), CUSTOM, v["adapters"]]

        wav_in.upload(h.settings_from_wav, wav_in, settings_json, api_name="settings_from_wav",
                      concurrency_limit=None).success(guarded(fill), settings_json, filled,
                                                      api_visibility="private", **cheap)
        for i, (use_btn, vary_btn) in enumerate(slots):
            use_btn.click(guarded(functools.partial(_clip_settings, fill, i)), gen_state, filled,
                          api_visibility="private", **cheap)
            vary_btn.click(functools.partial(_vary, i), gen_state, [var_audio, var_acc, loop_clip, edit_audio],
                           api_visibility="private", **cheap)

        # rho: log slider <-> exact number, preset buttons
        rho_log.input(rho_from_log, rho_log, rho, api_visibility="private", **cheap)
        rho.input(log_from_rho, rho, rho_log, api_visibility="private", **cheap)
        for r, b in zip(RHO_PRESETS, rho_btns):
            b.click(lambda r=r: (float(r), log_from_rho(r)), None, [rho, rho_log], api_visibility="private",
                    **cheap)

        # adapters: the sliders write the mix; a mix read from a clip's settings moves the sliders
        if adapter_sliders:
            for sl in adapter_sliders:
                sl.input(guarded(lambda *ws: mix.format(tuple(float(w) for w in ws))), adapter_sliders, adapter_spec,
                         api_visibility="private", **cheap)
            adapter_spec.change(guarded(lambda text: list(mix.parse(text))), adapter_spec, adapter_sliders,
                                api_visibility="private", **cheap)
        ab_mode.change(lambda m: gr.update(interactive=m == AB_MODES[0]), ab_mode, ab_b, api_visibility="private",
                       **cheap)

        # seed helpers
        rand_btn.click(lambda: -1, None, seed, api_visibility="private", **cheap)
        reuse_btn.click(guarded(_last_seed), gen_state, seed, api_visibility="private", **cheap)

        # length in seconds or bars
        dur_mode.change(lambda m: (gr.update(visible=m == "seconds"), gr.update(visible=m == "bars")), dur_mode,
                        [duration, bars], api_visibility="private", **cheap)

        # speed/quality dial: steps and layer budget together; touching either makes it "custom"
        def dial(v, q, cur_steps, cur_drop):
            budget = engine.has_budget(v) if v in engine.variants else False
            if q == CUSTOM or v not in engine.variants:
                return cur_steps, gr.update(value=cur_drop if budget else "", interactive=budget)
            s, counts = engine.preset(v, q)
            return s, gr.update(value=", ".join(map(str, counts)) if counts else "", interactive=budget)

        quality.input(dial, [variant, quality, steps, drop], [steps, drop], api_visibility="private", **cheap)
        variant.change(dial, [variant, quality, steps, drop], [steps, drop], api_visibility="private", **cheap)
        steps.input(lambda: CUSTOM, None, quality, api_visibility="private", **cheap)
        drop.input(lambda: CUSTOM, None, quality, api_visibility="private", **cheap)

        # expected latency, recomputed whenever a control changes
        gr.on([c.change for c in controls], h.estimate, controls, eta, api_name="estimate",
              trigger_mode="always_last", **cheap)
        demo.load(h.estimate, controls, eta, api_visibility="private", **cheap)

        def info() -> dict:
            """Model folder, device, variants (default steps, layer budget), limits and calibration."""
            return _info(engine)

        gr.api(info, api_name="info", concurrency_limit=None)
    return demo


def _card_edit(handler, i, record, *args, progress=gr.Progress()):
    """Run ``handler`` (extend / replace_bars) on result card ``i``'s own WAV."""
    clips = (record or {}).get("clips", [])
    path = clips[i]["wav"] if i < len(clips) else None
    if path is None or not Path(path).is_file():
        raise gr.Error("that clip has been cleaned up (the server keeps the latest runs); generate again")
    return handler(path, *args, progress=progress)


def _clip_settings(fill, i, record):
    clips = (record or {}).get("clips", [])
    if i >= len(clips):
        raise gr.Error("that clip is gone; generate again")
    return fill(clips[i]["settings"])


def _vary(i, record):
    clips = (record or {}).get("clips", [])
    path = clips[i]["wav"] if i < len(clips) else None
    if path is None or not Path(path).is_file():
        raise gr.Error("that clip has been cleaned up (the server keeps the latest runs); generate again")
    return path, gr.update(open=True), path, path


def _last_seed(record):
    if not record or record.get("seed") is None:
        gr.Warning("no generation yet: generate once, then reuse its seed")
        return -1
    return int(record["seed"])


def _info(engine: Engine) -> dict:
    """Model folder, device, variants (default steps, layer budget), limits, calibration."""
    pipe = engine.pipe
    return {"model": engine.model_name, "device": engine.device, "sample_rate": pipe.sample_rate,
            "max_duration": pipe.max_duration, "default_variant": pipe.default_variant, "clap": pipe.clap is not None,
            "stereo": pipe.has_stereo,
            "variants": {v: {"label": engine.label(v), "steps": engine.default_steps(v),
                             "sampler": engine.spec(v).sampler, "layer_budget": engine.has_budget(v)}
                         for v in engine.variants},
            "adapters": [{"name": a.name, "weight": w, "components": sorted(a.components), "rank": a.rank}
                         for a, w in zip(engine.mix.adapters, engine.mix.defaults)],
            "limits": {k: list(v) for k, v in LIMITS.items()}, "prompts": pipe.prompts,
            "calibrated": bool(engine.fits), "calibration_s": round(engine.calibration_s, 2)}


def _about(engine: Engine) -> str:
    lines = ["### Model", f"`{engine.model_name}` on **{engine.device}**, {engine.pipe.sample_rate} Hz "
             f"{'stereo (mono-to-stereo: the generated mono clip is the mid)' if engine.pipe.has_stereo else 'mono'}, "
             f"up to {engine.pipe.max_duration:g} s.", "", "| variant | sampler | default steps | layer budget |",
             "|---|---|---|---|"]
    for v in engine.variants:
        s = engine.spec(v)
        lines.append(f"| {engine.label(v)} | {s.sampler} | {s.steps} | "
                     f"{', '.join(map(str, s.drop_schedule)) if s.drop_schedule else '—'} |")
    if engine.mix.names:
        lines += ["", "### Adapters", "| adapter | adapts | rank | start-up weight |", "|---|---|---|---|"]
        lines += [f"| {a.name} | {', '.join(sorted(a.components))} | {a.rank} | {w:g} |"
                  for a, w in zip(engine.mix.adapters, engine.mix.defaults)]
        lines += ["", "API: pass `adapters=\"name:weight, ...\"` (`\"none\"` = plain) to any endpoint that runs "
                  "the model."]
    lines += ["", "### API", "Endpoints: `/generate`, `/variation`, `/extend`, `/replace_bars`, `/rho_sweep`, "
              "`/ab_compare`, `/export_loop`, "
              "`/settings_from_wav`, `/estimate`, `/info` — see *Use via API* or "
              "`gradio_client.Client(url).view_api()`.",
              "", "Speed ↔ quality presets: " + "; ".join(
                  f"**{q}** = {f:g}× default steps, drop {', '.join(map(str, d)) if d else 'model default'}"
                  for q, (f, d) in QUALITY.items())]
    return "\n".join(lines)


def _adapter_info(adapter) -> str:
    """A slider's hint: what the adapter adapts and what it was made from."""
    data = adapter.meta.get("data")
    clips = data.get("clips") if isinstance(data, dict) else None
    made = f" · trained on {clips} clips" if isinstance(clips, int) else ""
    return f"adapts {', '.join(sorted(adapter.components))} (rank {adapter.rank}){made}"

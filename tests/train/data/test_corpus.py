"""Procedural corpus: arrangement (MIDI level, every genre), captions, determinism, split,
and FluidSynth rendering (skipped with a reason when fluidsynth or a soundfont is missing;
CI installs train/data/APT_PACKAGES.txt)."""

import json
import re
import shutil

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from train.data.corpus.arrange import arrange, swing_warp
from train.data.build_corpus import build_corpus, main, plan_corpus
from train.data.corpus.captions import INSTRUMENT_WORDS
from train.data.dataset import read_metadata
from train.data.corpus.genres import GENRES
from train.data.corpus.music_theory import parse_roman, transpose_key, voice_chord
from train.data.corpus import render


def _render_available() -> str | None:
    """None when rendering works here, else the reason to skip."""
    if shutil.which("fluidsynth") is None:
        return "fluidsynth not installed (apt-get install -y fluidsynth)"
    try:
        render.find_soundfont()
    except render.RenderError as exc:
        return str(exc)
    return None


needs_render = pytest.mark.skipif(_render_available() is not None, reason=str(_render_available()))


def test_music_theory_basics():
    c = parse_roman("bVI", 9)  # F major in A minor
    assert c.pitch_classes == (5, 9, 0)
    assert parse_roman("ii7", 0).symbol == "Dm7"
    assert parse_roman("V7", 7).pitch_classes == (2, 6, 9, 0)
    assert transpose_key("A", 2, "minor") == "B" and transpose_key("C", -2, "major") == "Bb"
    assert transpose_key("E", 1, "minor") == "F"
    v = voice_chord(parse_roman("IV", 0), 60)
    assert {p % 12 for p in v} == {5, 9, 0} and max(v) - min(v) < 12
    assert swing_warp(1.0, 2 / 3, 16) == pytest.approx(4 / 3)
    assert swing_warp(2.0, 2 / 3, 8) == pytest.approx(8 / 3) and swing_warp(4.0, 0.6, 8) == 4.0


@pytest.mark.parametrize("name", sorted(GENRES))
def test_every_genre_arranges(name, tmp_path):
    genre = GENRES[name]
    pm, info = arrange(genre, np.random.default_rng(3), 12.0)
    path = tmp_path / "x.mid"
    pm.write(str(path))
    back = pretty_midi.PrettyMIDI(str(path))  # round trip through a real MIDI file
    _, tempi = back.get_tempo_changes()
    assert genre.bpm[0] <= info.bpm <= genre.bpm[1] and 60 <= info.bpm <= 180
    assert tempi[0] == pytest.approx(info.bpm, rel=1e-3)
    assert back.get_end_time() >= 12.0 and info.seconds >= 12.0
    drums = [i for i in back.instruments if i.is_drum]  # is_drum <=> GM channel 10 in the file
    if info.drum_kit is not None:
        assert len(drums) == 1 and drums[0].program == info.drum_kit
        assert drums[0].notes and all(35 <= n.pitch <= 81 for n in drums[0].notes)
    else:
        assert not drums
    pitched = [i for i in back.instruments if not i.is_drum]
    assert sorted(i.program for i in pitched) == sorted(info.programs)
    assert all(any(n.start < 12.0 for n in i.notes) for i in back.instruments)  # no silent parts
    for inst, part in zip([i for i in pm.instruments if not i.is_drum], info.parts):
        notes = inst.notes
        if not notes:
            continue
        lo, hi = min(n.pitch for n in notes), max(n.pitch for n in notes)
        if part["role"] == "bass":
            assert 24 <= lo and hi <= 67, (part, lo, hi)
        else:
            assert 28 <= lo and hi <= 100, (part, lo, hi)
        assert all(n.start >= 0 and n.end > n.start and 1 <= n.velocity <= 127 for n in notes)
    assert any(i.notes for i in pitched)
    assert info.mode in ("major", "minor") and info.key
    assert sum(s.n_bars for s in info.sections) * 240 / info.bpm == pytest.approx(info.seconds)


def test_plan_is_balanced_and_has_heldout():
    plans = plan_corpus(40, seed=1, heldout_fraction=0.05)
    counts = {g: sum(p.genre == g for p in plans) for g in GENRES}
    assert min(counts.values()) >= 2 and max(counts.values()) <= 3
    assert sum(p.split == "heldout" for p in plans) == 2
    assert sum(p.split == "heldout" for p in plan_corpus(4, seed=1, heldout_fraction=0.05)) == 1


def test_metadata_and_midi_deterministic_by_seed(tmp_path):
    a = build_corpus(tmp_path / "a", n_pieces=6, seed=7, clip_seconds=8, render=False)
    b = build_corpus(tmp_path / "b", n_pieces=6, seed=7, clip_seconds=8, render=False)
    c = build_corpus(tmp_path / "c", n_pieces=6, seed=8, clip_seconds=8, render=False)
    assert (tmp_path / "a/metadata.jsonl").read_bytes() == (tmp_path / "b/metadata.jsonl").read_bytes()
    for rec in a:
        assert (tmp_path / "a" / rec["midi"]).read_bytes() == (tmp_path / "b" / rec["midi"]).read_bytes()
    assert a == b and a != c


def test_metadata_and_captions_valid(tmp_path):
    recs = build_corpus(tmp_path, n_pieces=16, seed=3, clip_seconds=8, render=False)
    assert {r["genre"] for r in recs} == set(GENRES)  # one of each genre in the first round
    items = read_metadata(tmp_path, split=None)
    assert len(items) == 16
    for r in recs:
        caps = r["captions"]
        assert len(caps) >= 3 and len(set(caps)) == len(caps)
        bpm_caps = [c for c in caps if re.search(r"\b\d+ BPM\b", c)]
        assert bpm_caps and len(bpm_caps) < len(caps)  # some phrasings quote the BPM, some not
        assert all(f"{r['bpm']:g} BPM" in c for c in bpm_caps)
        text = " ".join(caps).lower()
        for prog in r["programs"]:  # every instrument is named in at least one phrasing
            named = any(w.lower().rstrip("s") in text for w in INSTRUMENT_WORDS[prog])
            assert named or (prog == 0 and "piano" in text), (prog, caps)
        for c in caps:
            assert "  " not in c and not re.search(r"\b(\w+) \1\b", c), c
            keys = re.findall(r"\b([A-G][b#]?) (major|minor)\b", c)
            assert all(k == (r["key"], r["mode"]) for k in keys), (c, r["key"], r["mode"])
        assert set(r) >= {"path", "caption", "captions", "bpm", "key", "mode", "genre", "instruments",
                          "duration", "split", "midi"}


def test_heldout_split_has_its_own_prompts(tmp_path):
    recs = build_corpus(tmp_path, n_pieces=10, seed=0, clip_seconds=8, heldout_fraction=0.2, render=False)
    held = [r for r in recs if r["split"] == "heldout"]
    prompts = json.loads((tmp_path / "heldout_prompts.json").read_text())
    assert len(held) == 2 and [p["caption"] for p in prompts] == [r["caption"] for r in held]
    assert all(p["bpm"] == r["bpm"] for p, r in zip(prompts, held))
    assert len(read_metadata(tmp_path, "heldout")) == 2 and len(read_metadata(tmp_path, "train")) == 8


def test_cli_no_render(tmp_path):
    main(["--out", str(tmp_path), "--pieces", "3", "--seed", "2", "--clip-seconds", "6", "--no-render",
          "--genres", "house,jazz"])
    recs = [json.loads(x) for x in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and {r["genre"] for r in recs} <= {"house", "jazz"}
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--pieces", "3", "--no-render", "--genres", "polka"])


def test_missing_soundfont_error_names_package(monkeypatch, tmp_path):
    monkeypatch.delenv("PRESTO_SOUNDFONT", raising=False)
    monkeypatch.setattr(render, "SOUNDFONT_CANDIDATES", ((str(tmp_path / "none.sf2"), "x"),))
    with pytest.raises(render.RenderError, match="musescore-general-soundfont-small"):
        render.find_soundfont()
    with pytest.raises(render.RenderError, match="does not exist"):
        render.find_soundfont(tmp_path / "missing.sf3")


@needs_render
def test_soundfont_has_gm_presets():
    presets = render.soundfont_presets(str(render.find_soundfont()))
    assert (0, 0) in presets and (128, 0) in presets and len(presets) >= 128


@needs_render
@pytest.mark.slow
def test_rendered_corpus_audio(tmp_path):
    recs = build_corpus(tmp_path, n_pieces=4, seed=11, clip_seconds=5, genres=["funk", "ambient", "pop", "jazz"])
    info = json.loads((tmp_path / "corpus.json").read_text())
    assert info["rendered"] == 4 and info["soundfont"]
    for r in recs:
        wav, sr = sf.read(str(tmp_path / r["path"]), dtype="float32", always_2d=True)
        assert sr == 44100 and wav.shape == (5 * 44100, 1)
        x = wav[:, 0]
        rms_db = 20 * np.log10(np.sqrt(np.mean(x ** 2)) + 1e-12)
        assert rms_db > -35, (r["genre"], rms_db)  # not silent
        assert np.abs(x).max() < 0.95 and np.mean(np.abs(x) > 0.94) == 0  # not clipped
        assert np.sqrt(np.mean(x[: 44100] ** 2)) > 1e-3  # sound from the first second on


@needs_render
@pytest.mark.slow
def test_render_is_deterministic():
    pm, _ = arrange(GENRES["house"], np.random.default_rng(0), 3.0)
    a, b = render.render_midi(pm), render.render_midi(pm)
    assert a.shape == b.shape and np.array_equal(a, b)


@needs_render
@pytest.mark.parametrize("name,seed", [("house", 0), ("rock", 1)])
def test_beat_tracker_finds_labelled_bpm(name, seed):
    """librosa's tempo estimate on a rendered drum-heavy piece is within 4% of the label.
    (No octave allowance: four-on-the-floor / backbeat genres in 100-150 BPM are unambiguous.
    Half-time-feel genres such as reggae or drum and bass can come out at 2x or 1/2x, which
    inspect_corpus reports as "octave".)"""
    from train.data.inspect_corpus import measure_tempo

    pm, info = arrange(GENRES[name], np.random.default_rng(seed), 10.0, start_section="verse")
    wav = render.finish_clip(render.render_midi(pm), 44100, 10.0)
    assert measure_tempo(wav, 44100) == pytest.approx(info.bpm, rel=0.04)

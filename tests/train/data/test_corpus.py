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
from train.data.corpus.mix import ROLE_MIX, apply_mix
from train.data.dataset import AudioDataset, check_audio, load_mono
from train.evaluation.tempo import measure_tempo


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
    pm, info = arrange(GENRES[name], np.random.default_rng(seed), 10.0, start_section="verse")
    wav = render.finish_clip(render.render_midi(pm), 44100, 10.0)
    assert measure_tempo(wav, 44100) == pytest.approx(info.bpm, rel=0.04)


# ---------------------------------------------------------------------------------------------
# Corpus version 2: stereo mix, humanised velocities, slow pieces, bad data


def test_version_2_keeps_the_version_1_piece_and_adds_the_mix(tmp_path):
    v1 = build_corpus(tmp_path / "v1", n_pieces=24, seed=3, clip_seconds=8, render=False)
    v2 = build_corpus(tmp_path / "v2", n_pieces=24, seed=3, clip_seconds=8, render=False, version=2,
                      slow_share=0.0)
    assert [r["bpm"] for r in v1] == [r["bpm"] for r in v2] and [r["caption"] for r in v1] == [r["caption"] for r in v2]
    assert "mix" not in v1[0] and v2[0]["channels"] == 2 and v2[0]["version"] == 2
    for a, b in zip(v1[:4], v2[:4]):
        ma, mb = pretty_midi.PrettyMIDI(str(tmp_path / "v1" / a["midi"])), pretty_midi.PrettyMIDI(str(tmp_path / "v2" / b["midi"]))
        assert len(ma.instruments) == len(mb.instruments) == len(b["mix"])
        for ia, ib, mix in zip(ma.instruments, mb.instruments, b["mix"]):
            # Same notes and timing; velocities humanised; one pan / reverb / chorus value each.
            assert [(n.pitch, n.start) for n in ia.notes] == [(n.pitch, n.start) for n in ib.notes]
            assert all(1 <= n.velocity <= 127 for n in ib.notes)
            ccs = {c.number: c.value for c in ib.control_changes if c.number in (10, 91, 93)}
            assert ccs == {10: mix["pan"], 91: mix["reverb"], 93: mix["chorus"]}
            assert sum(c.number == 10 for c in ib.control_changes) == 1
        moved = [na.velocity != nb.velocity for ia, ib in zip(ma.instruments, mb.instruments)
                 for na, nb in zip(ia.notes, ib.notes)]
        assert 0.5 < np.mean(moved) < 1.0
    assert json.loads((tmp_path / "v2" / "corpus.json").read_text())["version"] == 2


def test_mix_places_bass_and_drums_centre_and_spreads_the_rest():
    pm = pretty_midi.PrettyMIDI()
    for role in ("bass", "chords", "pad", "lead", "arp"):
        inst = pretty_midi.Instrument(0, name=role)
        inst.notes.append(pretty_midi.Note(100, 60, 0.0, 1.0))
        pm.instruments.append(inst)
    pm.instruments.append(pretty_midi.Instrument(0, is_drum=True, name="drums"))
    for seed in range(20):
        mix = {m["role"]: m for m in apply_mix(pm, 40, np.random.default_rng(seed))}
        assert abs(mix["bass"]["pan"] - 64) <= ROLE_MIX["bass"][0] and mix["drums"]["pan"] == 64
        assert abs(mix["chords"]["pan"] - 64) >= 0.6 * ROLE_MIX["chords"][0] - 1
        # Two wide parts in a row go to opposite sides.
        assert (mix["chords"]["pan"] - 64) * (mix["pad"]["pan"] - 64) < 0
        assert all(0 <= m[k] <= 127 for m in mix.values() for k in ("pan", "reverb", "chorus"))
        assert mix["bass"]["reverb"] < mix["pad"]["reverb"]


def test_version_2_gives_slow_tempos_their_share():
    plans = plan_corpus(320, seed=0, version=2, slow_share=0.35)
    assert len({p.genre for p in plans}) == len(GENRES)  # still every genre
    banded = [p for p in plans if p.bpm_range is not None]
    assert banded and all(60 <= p.bpm_range[0] < p.bpm_range[1] <= 95 for p in banded)
    naturally = [p for p in plans if GENRES[p.genre].bpm[1] <= 95]
    assert (len(banded) + len(naturally)) / len(plans) == pytest.approx(0.35, abs=0.02)
    assert plan_corpus(320, seed=0, version=1) == plan_corpus(320, seed=0)  # v1 is untouched
    with pytest.raises(ValueError, match=r"corpus version must be one of \(1, 2\)"):
        plan_corpus(4, seed=0, version=3)
    with pytest.raises(ValueError, match=r"slow_share must be in \[0, 1\)"):
        plan_corpus(4, seed=0, version=2, slow_share=1.0)


def test_version_2_slow_pieces_are_labelled_in_the_band(tmp_path):
    recs = build_corpus(tmp_path, n_pieces=64, seed=1, clip_seconds=8, render=False, version=2)
    slow = [r for r in recs if r["bpm"] <= 95]
    assert len(slow) >= 0.3 * len(recs)
    assert all(60 <= r["bpm"] <= 95 for r in slow)
    info = json.loads((tmp_path / "corpus.json").read_text())
    assert info["slow_pieces"] == len([r for r in recs if 60 <= r["bpm"] <= 95])


@needs_render
@pytest.mark.slow
def test_version_2_renders_stereo_with_a_plausible_width(tmp_path):
    recs = build_corpus(tmp_path, n_pieces=3, seed=0, clip_seconds=6, version=2, genres=["pop", "lofi_hip_hop"])
    for rec in recs:
        wav, sr = sf.read(tmp_path / rec["path"], always_2d=True)
        assert wav.shape == (6 * 44100, 2) and sr == 44100
        mid, side = wav.mean(1), (wav[:, 0] - wav[:, 1]) / 2
        width = float((side ** 2).sum() / (mid ** 2).sum())
        assert 0.005 < width < 1.0, width
        # The dataset reads the mono mix-down of a stereo file.
        assert np.allclose(load_mono(str(tmp_path / rec["path"]), 44100), mid.astype(np.float32), atol=1e-4)


@needs_render
def test_silent_render_is_an_error_naming_the_file(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    pm.write(str(tmp_path / "empty.mid"))
    with pytest.raises(render.RenderError, match=r"empty\.mid: the render is silent"):
        render.finish_clip(render.render_midi(str(tmp_path / "empty.mid")), 44100, 1.0, name=str(tmp_path / "empty.mid"))
    with pytest.raises(render.RenderError, match="non-finite"):
        render.finish_clip(np.full(100, np.nan, dtype=np.float32), 100, 1.0)


def test_bad_audio_files_are_named(tmp_path):
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "ok.wav", 0.1 * np.ones(16000, dtype=np.float32), 16000)
    (tmp_path / "audio" / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    sf.write(tmp_path / "audio" / "short.wav", np.zeros(10, dtype=np.float32), 16000)
    rows = [{"path": "audio/ok.wav", "caption": "a", "bpm": 90, "sample_rate": 16000}]

    def write(extra):
        (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows + [extra]) + "\n")
        return read_metadata(tmp_path, "train")

    with pytest.raises(ValueError, match=r"broken\.wav: unreadable audio"):
        check_audio(write({"path": "audio/broken.wav", "caption": "b", "bpm": 90}))
    write({"path": "audio/short.wav", "caption": "c", "bpm": 90})
    with pytest.raises(ValueError, match=r"short\.wav: only 0\.001 s of audio"):
        AudioDataset(tmp_path, 0.5, 16000)  # the dataset checks its files when it is built
    with pytest.raises(ValueError, match=r"ok\.wav: the file is 16000 Hz but metadata.jsonl says 44100 Hz"):
        check_audio(write({"path": "audio/ok.wav", "caption": "d", "bpm": 90, "sample_rate": 44100}))
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: needs a numeric 'bpm'"):
        write({"path": "audio/ok.wav", "caption": "e"})
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: needs 'path' and a non-empty 'caption'"):
        write({"path": "audio/ok.wav", "bpm": 90})
    good = write({"path": "audio/ok.wav", "caption": "f", "bpm": 90})
    check_audio(good)  # good files pass
    assert len(AudioDataset(tmp_path, 0.5, 16000)) == 2


def test_slow_pieces_put_the_beat_in_kick_and_snare():
    """Below 95 BPM the mix turns hats down and kick/snare up, so a tracker hears the labelled beat
    rather than the sixteenth hats at twice the tempo; faster pieces keep their drum balance."""
    def drums():
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(0, is_drum=True, name="drums")
        inst.notes += [pretty_midi.Note(100, 42, 0.0, 0.1), pretty_midi.Note(100, 36, 0.0, 0.1),
                       pretty_midi.Note(100, 38, 0.5, 0.6)]
        pm.instruments.append(inst)
        return pm

    from train.data.corpus.mix import MixSpec

    spec = MixSpec(velocity_jitter=0.0)
    slow, fast = drums(), drums()
    apply_mix(slow, 40, np.random.default_rng(0), spec, bpm=75)
    apply_mix(fast, 40, np.random.default_rng(0), spec, bpm=120)
    assert [n.velocity for n in slow.instruments[0].notes] == [55, 112, 112]
    assert [n.velocity for n in fast.instruments[0].notes] == [100, 100, 100]

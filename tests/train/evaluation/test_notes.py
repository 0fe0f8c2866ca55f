"""Notes, pitch classes, beat salience and strict tempo (train/evaluation/notes.py, tempo.py) on
signals whose answer is known."""

import numpy as np
import pytest

from train.evaluation.notes import onsets_per_second, pitch_class_count
from train.evaluation.tempo import BANDS, band_name, beat_salience, strict_match

SR = 22050


def notes(freqs_per_beat, bpm: float, seconds: float) -> np.ndarray:
    """A plucked note per beat, cycling through ``freqs_per_beat`` (each entry a chord: Hz list)."""
    n, beat = int(seconds * SR), 60.0 / bpm
    y = np.zeros(n, np.float32)
    t = np.arange(int(beat * SR)) / SR
    for k, start in enumerate(np.arange(0.0, seconds - beat, beat)):
        chord = freqs_per_beat[k % len(freqs_per_beat)]
        tone = sum(np.sin(2 * np.pi * f * t) for f in chord) * np.exp(-4 * t) / len(chord)
        i = int(start * SR)
        y[i: i + len(t)] += tone.astype(np.float32)
    return 0.5 * y


def test_onsets_count_one_per_note():
    y = notes([[440.0]], 120, 8.0)
    assert onsets_per_second(y, SR) == pytest.approx(15 / 8, rel=0.15)  # 15 whole beats in 8 s
    with pytest.raises(ValueError, match="at least 0.25 s"):
        onsets_per_second(y[:100], SR)


def test_pitch_classes_of_a_melody_a_chord_and_noise():
    c_major_scale = [261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88]
    assert pitch_class_count(notes([[f] for f in c_major_scale], 120, 8.0), SR) == 7
    assert pitch_class_count(notes([[261.63, 329.63, 392.0]], 100, 6.0), SR) == 3
    noise = np.random.default_rng(0).standard_normal(6 * SR).astype(np.float32)
    assert pitch_class_count(noise, SR) <= 1
    with pytest.raises(ValueError, match="silent"):
        pitch_class_count(np.zeros(SR, np.float32), SR)


def test_beat_salience_separates_a_pulse_from_noise():
    pulse = notes([[220.0]], 90, 10.0)
    noise = np.random.default_rng(1).standard_normal(10 * SR).astype(np.float32) * 0.1
    assert beat_salience(pulse, SR) > 0.6 > 0.3 > beat_salience(noise, SR)
    with pytest.raises(ValueError, match="no onsets"):
        beat_salience(np.zeros(SR, np.float32), SR)


def test_strict_tempo_and_bands():
    assert strict_match(71.0, 70.0) and not strict_match(140.0, 70.0) and not strict_match(35.0, 70.0)
    assert strict_match(72.7, 70.0) and not strict_match(72.9, 70.0)  # 4 %
    assert [band_name(b) for b in (40, 70, 94.9, 95, 129, 130, 240)] == [
        "40-95", "40-95", "40-95", "95-130", "95-130", "130-240", "130-240"]
    assert BANDS[0][1] == 95.0
    with pytest.raises(ValueError, match="outside the bands"):
        band_name(250)

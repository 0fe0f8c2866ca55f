"""Pitch metrics: exact identities and orderings on synthetic notes, chords and noise."""

import numpy as np
import pytest

from train.evaluation.pitch import chroma, chroma_correlation, tonal_clarity

SR = 22050


def _notes(midis, seconds=1.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for m in midis:
        f0 = 440.0 * 2 ** ((m - 69) / 12)
        out += sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
    return out.astype(np.float32)


def test_chroma_finds_the_pitch_class():
    c = chroma(_notes([69]), SR)  # A4
    assert c.shape[0] == 12
    assert int(np.argmax(c.sum(1))) == 9  # librosa's chroma starts at C: A is class 9


def test_chroma_correlation_same_notes_vs_other_notes_vs_noise():
    rng = np.random.default_rng(0)
    c_major, fs_major = _notes([60, 64, 67]), _notes([66, 70, 73])
    assert chroma_correlation(c_major, c_major, SR) == pytest.approx(1.0, abs=1e-6)
    assert chroma_correlation(0.3 * c_major, c_major, SR) == pytest.approx(1.0, abs=1e-6)  # level-invariant
    assert chroma_correlation(fs_major, c_major, SR) < 0.0  # a tritone away shares no pitch class
    noise = rng.standard_normal(SR).astype(np.float32)
    assert abs(chroma_correlation(noise, c_major, SR)) < 0.3
    assert chroma_correlation(c_major + 0.05 * noise, c_major, SR) > 0.9


def test_tonal_clarity_orders_note_chord_noise():
    rng = np.random.default_rng(1)
    noise = tonal_clarity(rng.standard_normal(SR).astype(np.float32), SR)
    note, chord = tonal_clarity(_notes([62]), SR), tonal_clarity(_notes([60, 64, 67]), SR)
    assert noise < 0.2 < chord < note <= 1.0
    assert 1 / 12 <= noise


def test_pitch_metrics_reject_short_or_silent_input():
    with pytest.raises(ValueError):
        chroma(np.zeros(100, np.float32), SR)
    with pytest.raises(ValueError):
        tonal_clarity(np.zeros(SR, np.float32), SR)
    with pytest.raises(ValueError):
        chroma_correlation(_notes([60]), np.zeros(SR, np.float32), SR)

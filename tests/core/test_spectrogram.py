"""presto_core.spectrogram: a tone shows as one bright band at its mel position, low at the bottom."""

import numpy as np

from presto_core.spectrogram import log_mel, spectrogram_image


def test_tone_is_one_band_at_the_right_height():
    sr = 16000
    t = np.arange(sr) / sr
    db, fps = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), sr, n_mels=64)
    assert db.shape[0] == 64 and abs(fps - sr / 186) < 1.0
    band = int(np.argmax(db.mean(1)))
    img = np.asarray(spectrogram_image(np.sin(2 * np.pi * 1000 * t).astype(np.float32), sr, 200, 96))
    assert img.shape == (96, 200, 3)
    row = int(np.argmax(img.sum((1, 2))))  # brightest image row: 96 mel bands, flipped
    assert abs(row - (95 - band * 96 / 64)) <= 2
    low = np.asarray(spectrogram_image(np.sin(2 * np.pi * 100 * t).astype(np.float32), sr, 200, 96))
    assert int(np.argmax(low.sum((1, 2)))) > row  # a lower tone sits lower in the picture

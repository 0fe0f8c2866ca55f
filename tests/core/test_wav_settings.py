"""Settings in WAV files (presto_core.audio, presto_core.wav_chunks): every valid request reads back
exactly, however long and non-ASCII its prompt; comments that are JSON but not an object are not
taken for settings; the audio is untouched by the extra chunk."""

import json

import numpy as np
import pytest
import soundfile as sf

from presto_core.audio import read_wav_settings, write_wav
from presto_core.limits import LIMITS
from presto_core.wav_chunks import append_chunk, read_chunk

LONGEST = LIMITS["prompt_chars"][1]


@pytest.mark.parametrize("char", ["a", "é", "音", "😀"])  # 1-, 2-, 3- and 4-byte UTF-8
def test_longest_prompt_reads_back_exactly(tmp_path, char):
    settings = {"prompt": char * LONGEST, "seed": 2**31 - 1, "bpm": 240.0, "drop_schedule": [14, 12, 8, 4, 0],
                "stereo": True, "model": "/some/long/path/" * 10}
    audio = np.sin(np.arange(2 * 4000) / 7).reshape(2, 4000).astype(np.float32) * 0.5
    write_wav(tmp_path / "c.wav", audio, 16000, settings)
    assert read_wav_settings(tmp_path / "c.wav") == settings
    back, sr = sf.read(tmp_path / "c.wav", dtype="float32")
    assert sr == 16000 and back.shape == (4000, 2)
    np.testing.assert_allclose(back.T, audio, atol=1.0 / 32767)


@pytest.mark.parametrize("comment", ["2019", "[1, 2, 3]", '"hello"', "NaN", "null", "not json"])
def test_comments_that_are_not_objects_are_no_settings(tmp_path, comment):
    path = tmp_path / "c.wav"
    with sf.SoundFile(str(path), "w", samplerate=16000, channels=1, format="WAV") as f:
        f.comment = comment
        f.write(np.zeros(100, np.float32))
    assert read_wav_settings(path) is None
    append_chunk(path, comment.encode())  # the same in the chunk
    assert read_wav_settings(path) is None


def test_chunk_round_trip_odd_length_and_other_files(tmp_path):
    path = tmp_path / "c.wav"
    sf.write(path, np.zeros(101, np.int16), 16000, subtype="PCM_16")  # odd data length: a pad byte
    append_chunk(path, b"abc")
    append_chunk(path, b"x", chunk_id=b"othr")
    assert read_chunk(path) == b"abc" and read_chunk(path, b"othr") == b"x" and read_chunk(path, b"none") is None
    assert sf.info(path).frames == 101
    riff_size = int.from_bytes(path.read_bytes()[4:8], "little")
    assert riff_size == path.stat().st_size - 8
    flac = tmp_path / "c.flac"
    sf.write(flac, np.zeros(100, np.float32), 16000)
    assert read_chunk(flac) is None
    with pytest.raises(ValueError, match="not a RIFF/WAVE"):
        append_chunk(flac, b"x")


def test_settings_in_chunk_win_over_an_old_comment(tmp_path):
    path = tmp_path / "c.wav"
    write_wav(path, np.zeros(100, np.float32), 16000, {"prompt": "new"})
    assert json.loads(sf.SoundFile(str(path)).comment) == {"prompt": "new"}  # short: in the comment too
    assert read_wav_settings(path) == {"prompt": "new"}

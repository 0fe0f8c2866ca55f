"""train.data.style_folder renders a person-like folder (four formats, rates, channel counts,
nested folders, a partial sidecar, tags) that train.data.ingest reads with every label source."""

import json
from pathlib import Path

import pytest
import soundfile as sf

from train.data.ingest import IngestConfig, ingest
from train.data.style_folder import SOUNDFONT, build


@pytest.mark.slow
def test_style_folder_through_ingest(tmp_path):
    if not Path(SOUNDFONT).is_file():
        pytest.skip(f"{SOUNDFONT} missing: apt-get install timgm6mb-soundfont (train/data/APT_PACKAGES.txt)")
    rows = build(tmp_path / "folder", minutes=4 * 5 / 60, piece_seconds=5.0, log=lambda s: None)
    assert [Path(r["path"]).suffix for r in rows] == [".wav", ".flac", ".ogg", ".mp3"]
    infos = [sf.info(tmp_path / "folder" / r["path"]) for r in rows]
    assert [(i.samplerate, i.channels) for i in infos] == [(48000, 2), (44100, 2), (32000, 1), (44100, 2)]
    assert all(abs(i.duration - 5.0) < 0.1 for i in infos)
    summary = ingest(tmp_path / "folder", tmp_path / "data", IngestConfig(sample_rate=16000, min_seconds=3.0),
                     log=lambda s: None)
    assert summary["ingested"] == 4 and not summary["skipped"]
    recs = [json.loads(line) for line in (tmp_path / "data" / "metadata.jsonl").read_text().splitlines()]
    src = {r["source"]: (r["caption_source"], r["bpm_source"]) for r in recs}
    assert src[rows[0]["path"]] == ("sidecar", "sidecar") and src[rows[2]["path"]] == ("sidecar", "sidecar")
    assert src[rows[1]["path"]] == ("names", "estimate") and src[rows[3]["path"]] == ("tags", "estimate")

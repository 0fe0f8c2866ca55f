"""train.edit_report end to end on a micro model with an 8 s window (plumbing only: the micro
model's audio is noise, so seams and drift are checked for shape and range, not value)."""

import json

import pytest

from tests.factory import make_model_folder
from train.edit_report import main


def test_edit_report_end_to_end(tmp_path, capsys):
    model = make_model_folder(tmp_path / "model", variants=("presto-ls",), with_m2s=True, max_duration=8.0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"path": "a.wav", "captions": ["warm pads, 120 BPM"], "bpm": 120, "split": "heldout"},
            {"path": "b.wav", "captions": ["drums"], "bpm": 100, "split": "train"}]
    (corpus / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    rc = main(["--model", str(model), "--corpus", str(corpus), "--num", "1", "--total", "24", "--lengths", "12,24",
               "--repeats", "1", "--device", "cpu", "--precision", "fp32", "--json", str(out / "r.json"),
               "--markdown", str(out / "r.md")])
    assert rc == 0
    md = (out / "r.md").read_text()
    assert md in capsys.readouterr().out
    for header in ("## Seams", "extend: window joins", "replace bars 5..6", "before the edit", "in the middle of the piece", "made to loop", "cut and crossfaded",
                   "## Long pieces", "One window, no joins", "## Wall time by length", "Peak RSS"):
        assert header in md
    rep = json.loads((out / "r.json").read_text())
    (row,) = rep["rows"]
    assert row["seconds"] == pytest.approx(24.0) and row["windows"] >= 3 and row["unchanged_outside"] is True
    assert [r["seconds"] for r in rep["scaling"]] == [pytest.approx(12.0), pytest.approx(24.0)]
    assert {s["name"].split(":")[0] for s in rep["summary"]} >= {"extend", "loop, made to loop"}
    # one offset per drift segment, each within half a beat; the share on the grid is one of them
    beat_ms = 60000 / 120
    assert len(row["offsets_ms"]) == len(row["drift_ms"]) and all(abs(o) <= beat_ms / 2 for o in row["offsets_ms"])
    assert row["on_grid"] in {k / len(row["offsets_ms"]) for k in range(len(row["offsets_ms"]) + 1)}
    assert rep["long_summary"]["on_grid"] == row["on_grid"] and "Medians over 1 pieces" in md
    assert main(["--model", str(model), "--corpus", str(corpus), "--total", "5"]) == 2

"""`spotter scan`: local workers, resumable results with error records, per-service summary; Ray when installed."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spotter import config
from spotter.artifact import DEFAULT_ONNX_MODEL
from spotter.scan import read_results, scan

pytestmark = pytest.mark.skipif(not DEFAULT_ONNX_MODEL.is_file(), reason="no models/default.onnx")


@pytest.fixture
def archive(tmp_path, speech_wav):
    d = tmp_path / "archive"
    (d / "b").mkdir(parents=True)
    speech = speech_wav("Il y a un incendie, venez vite.")
    sf.write(d / "one.wav", speech, config.SAMPLE_RATE)
    sf.write(d / "b" / "two.flac", np.concatenate([speech, speech]), config.SAMPLE_RATE)
    sf.write(d / "b" / "tel.wav", speech[::2].copy(), 8000)
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (d / "notes.txt").write_text("not audio")
    return d


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scan_is_resumable_with_error_records_and_summary(archive, tmp_path):
    out = tmp_path / "results.jsonl"
    stdout, progress = io.StringIO(), io.StringIO()
    recs = scan([archive], out, str(DEFAULT_ONNX_MODEL), workers=2, progress=progress, stdout=stdout)
    lines = _records(out)
    assert len(lines) == len(recs) == 4
    errors = [r for r in lines if "error" in r]
    assert [Path(r["file"]).name for r in errors] == ["broken.wav"]
    ok = {Path(r["file"]).name: r for r in lines if "error" not in r}
    assert ok["two.flac"]["duration_s"] == pytest.approx(2 * ok["one.wav"]["duration_s"], abs=0.01)
    assert all(r["model_sha256"] and "events" in r for r in ok.values())
    assert "summary: 4 files" in stdout.getvalue() and "errors                  1 files" in stdout.getvalue()
    assert "4 to do" in progress.getvalue()
    # resumed: nothing left to do, nothing appended
    scan([archive], out, str(DEFAULT_ONNX_MODEL), workers=1, progress=io.StringIO(), stdout=io.StringIO())
    assert len(_records(out)) == 4
    # a crash left a torn line and lost one record: only that file is redone, the torn line is fenced off
    kept = out.read_text().splitlines()[:3]
    lost = json.loads(out.read_text().splitlines()[3])["file"]
    out.write_text("\n".join(kept) + "\n" + '{"file": "/x", "dur')
    progress = io.StringIO()
    scan([archive], out, str(DEFAULT_ONNX_MODEL), workers=1, progress=progress, stdout=io.StringIO())
    assert "1 to do" in progress.getvalue()
    assert set(read_results(out)) == {r["file"] for r in lines} and lost in read_results(out)


def test_scan_results_equal_replay_events(archive, tmp_path):
    """A scan record holds the events `spotter replay --json` prints for the same file."""
    from spotter.cli import main
    out = tmp_path / "r.jsonl"
    scan([archive / "b" / "two.flac"], out, str(DEFAULT_ONNX_MODEL), workers=1, progress=io.StringIO(),
         stdout=io.StringIO())
    buf = io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(buf):
        assert main(["replay", str(archive / "b" / "two.flac"), "--json", "--log", str(tmp_path / "ev.jsonl")]) == 0
    replay = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert _records(out)[0]["events"] == replay["events"]


def test_scan_on_a_local_ray(archive, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.jsonl"
        recs = scan([archive], out, str(DEFAULT_ONNX_MODEL), use_ray=True, progress=io.StringIO(),
                    stdout=io.StringIO())
        assert len(recs) == 4 and sum("error" in r for r in recs) == 1
    finally:
        ray.shutdown()

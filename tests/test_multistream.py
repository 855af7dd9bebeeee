"""Batched multi-stream step: N lines per tick give each line's single-stream posteriors and events, logged with
the line id."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spotter import config
from spotter.artifact import DEFAULT_ONNX_MODEL
from spotter.detector import KeywordSpotter
from spotter.eventlog import EventLog
from spotter.multistream import MultiSpotter
from spotter.onnxmodel import load_onnx_model

pytestmark = pytest.mark.skipif(not DEFAULT_ONNX_MODEL.is_file(), reason="no models/default.onnx")


def test_lines_equal_single_streams_and_log_line_ids(speech_wav, tone_noise, tmp_path):
    model = load_onnx_model(DEFAULT_ONNX_MODEL)
    d = model.detector.to_dict()
    d["thresholds"] = {k: 0.15 for k in d["thresholds"]}
    cfg = config.DetectorConfig.from_dict(d)
    a = speech_wav("Il y a un incendie, venez vite, ça sent le gaz.")
    b = np.concatenate([0.3 * tone_noise, speech_wav("Au secours, une agression et un vol.")])
    n = max(a.size, b.size) + 4000
    calls = {"l1": np.pad(a, (0, n - a.size)), "l2": np.pad(b, (0, n - b.size)), "l3": np.zeros(n, np.float32)}
    log = EventLog(tmp_path / "ev.jsonl")
    ms = MultiSpotter(model, list(calls), log=log, detector=cfg)
    rng = np.random.default_rng(0)
    got = {k: [] for k in calls}
    i = 0
    while i < n:                                        # gateway-style frames of uneven sizes
        k = int(rng.integers(100, 5000))
        for line, evs in ms.process({line: x[i:i + k] for line, x in calls.items()}).items():
            got[line] += evs
        i += k
    for line, evs in ms.flush().items():
        got[line] += evs
    log.close()
    for line, x in calls.items():
        single = KeywordSpotter(model, detector=cfg)
        ref = single.process(x).events + single.flush()
        assert [(e.keyword, e.detected_s) for e in got[line]] == [(e.keyword, e.detected_s) for e in ref]
        assert all(abs(e.score - r.score) < 1e-4 for e, r in zip(got[line], ref))
    assert got["l1"] and not got["l3"]
    records = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert len(records) == sum(len(v) for v in got.values())
    assert {r["line"] for r in records} <= {"l1", "l2"} and all(r["source"] == f"line:{r['line']}" for r in records)


def test_a_line_reset_mid_call_restarts_only_that_line(speech_wav):
    """Resetting one line's stream between ticks gives that line a fresh stream and leaves the others alone."""
    model = load_onnx_model(DEFAULT_ONNX_MODEL)
    a = speech_wav("Il y a un incendie, venez vite.")
    n = (a.size // config.STEP_SAMPLES) * config.STEP_SAMPLES
    rows = np.stack([a[:n], a[:n][::-1].copy()])
    ms = MultiSpotter(model, ["x", "y"])
    refs = [KeywordSpotter(model), KeywordSpotter(model)]
    half = (n // config.STEP_SAMPLES // 2) * config.STEP_SAMPLES
    got = {"x": [], "y": []}
    for i in range(0, n, config.STEP_SAMPLES):
        if i == half:
            ms.spotters["y"].reset_stream()
        for line, o in ms.step(rows[:, i:i + config.STEP_SAMPLES]).items():
            got[line].append(o.posteriors[0])
    for line, ref, row in zip("xy", refs, rows):
        if line == "y":
            first = ref.process(row[:half]).posteriors
            ref.reset_stream()
            want = np.concatenate([first, ref.process(row[half:]).posteriors])
        else:
            want = ref.process(row).posteriors
        assert np.abs(np.stack(got[line]) - want).max() < 1e-5


def test_step_checks_frames():
    from spotter.errors import SpotterError
    ms = MultiSpotter(load_onnx_model(DEFAULT_ONNX_MODEL), ["a", "b"])
    with pytest.raises(SpotterError, match="expected frames"):
        ms.step(np.zeros((3, config.STEP_SAMPLES), np.float32))


def test_listen_over_several_sources(speech_wav, tmp_path):
    """`spotter listen --device A --device B`'s loop, on file sources standing in for devices."""
    import io
    import soundfile as sf
    from spotter.cli import listen_lines
    from spotter.sources import FileSource
    for name, text in (("a.wav", "Il y a un incendie, venez vite."), ("b.wav", "Bonjour, tout va bien.")):
        sf.write(tmp_path / name, speech_wav(text), config.SAMPLE_RATE)
    model = load_onnx_model(DEFAULT_ONNX_MODEL)
    sources = [FileSource(str(tmp_path / "a.wav")), FileSource(str(tmp_path / "b.wav"))]
    log = EventLog(tmp_path / "ev.jsonl")
    out = io.StringIO()
    assert listen_lines(sources, model, log, out=out) == 0
    text = out.getvalue()
    assert "L1: listening on" in text and "L2: listening on" in text
    for r in (json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()):
        assert r["line"] in ("L1", "L2")

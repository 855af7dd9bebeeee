"""The trained model on a synthesized call: keyword events, their times, the service, the event log, and the
same result whatever the file's rate or channel count."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from spotter.demo import espeak
from spotter.detector import KeywordSpotter
from spotter.eventlog import EventLog, read_log
from spotter.model import load_model
from spotter.replay import replay_file

SR = 16000
PARTS = [("Allô, venez vite s'il vous plaît, c'est au troisième étage.", None),
         ("il y a un incendie", "incendie"),
         ("dans la cuisine, tout le monde est dehors.", None)]


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    """A call with one keyword at a known time, spoken by the demo voice; returns (path, start_s, end_s)."""
    gap = np.full(int(0.4 * SR), 1e-4, np.float32)
    audio, t, span = [gap], gap.size / SR, None
    for text, kw in PARTS:
        seg = espeak(text)
        if kw:
            span = (t, t + seg.size / SR)
        audio += [seg, gap]
        t += (seg.size + gap.size) / SR
    x = np.concatenate(audio)
    x = 0.5 * x / np.abs(x).max()
    path = tmp_path_factory.mktemp("call") / "call.wav"
    sf.write(path, x, SR, subtype="PCM_16")
    return path, span


@pytest.fixture(scope="module")
def spotter_(keyword_model_path):
    return KeywordSpotter(load_model(keyword_model_path))


def test_keyword_found_in_time_with_service(spotter_, call):
    path, (start, end) = call
    duration, events, suggestion = replay_file(spotter_, path)
    hits = [e for e in events if e.keyword == "incendie"]
    assert hits, f"no 'incendie' in {[(e.keyword, round(e.score, 2)) for e in events]}"
    assert start - 0.5 <= hits[0].detected_s <= end + 1.0          # decided shortly after the word ends
    assert suggestion is not None and suggestion.service == "18"


def test_telephone_rate_and_stereo_give_the_same_keyword(spotter_, call, tmp_path):
    path, _ = call
    x, _ = sf.read(path, dtype="float32")
    tel = tmp_path / "tel8k.wav"
    sf.write(tel, resample_poly(x, 1, 2).astype(np.float32), 8000, subtype="PCM_16")
    stereo = tmp_path / "stereo44k.wav"
    y = resample_poly(x, 441, 160).astype(np.float32)
    sf.write(stereo, np.stack([y, y], axis=1), 44100, subtype="PCM_24")
    for f in (tel, stereo):
        _, events, sug = replay_file(spotter_, f)
        assert "incendie" in {e.keyword for e in events}, f
        assert sug is not None and sug.service == "18"


def test_replay_json_and_durable_log(keyword_model_path, call, tmp_path):
    path, _ = call
    log = tmp_path / "events.jsonl"
    out = subprocess.run([sys.executable, "-m", "spotter.cli", "replay", "--json", "--model", str(keyword_model_path),
                          "--log", str(log), str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["file"] == str(path)
    assert doc["suggestion"]["service"] == "18"
    printed = [e["keyword"] for e in doc["events"]]
    logged = [r["keyword"] for r in read_log(log)]
    assert "incendie" in printed and logged == printed                # nothing printed that was not logged


def test_event_log_sink_sees_every_event(keyword_model_path, call, tmp_path):
    path, _ = call
    log = EventLog(tmp_path / "e.jsonl")
    sp = KeywordSpotter(load_model(keyword_model_path), sinks=[log])
    _, events, _ = replay_file(sp, path)
    log.close()
    assert [r["keyword"] for r in read_log(tmp_path / "e.jsonl")] == [e.keyword for e in events]

"""The console's session controller (gui/session.py) driven without any widget, on real signals.

The session is the console minus Qt: sources, the call, detections. Its suggestion is the detector's own
CallState (no second assessment), "Nouvel appel" is a command applied by the detector thread, and a seek or a
model swap keeps the call.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from spotter import config
from spotter.eventlog import EventLog
from spotter.model import KeywordModel

TIMEOUT_S = 60.0
MAX, TWICE = 2, 1                  # SPEEDS indices: "Max" (unpaced) and "2×" (paced)
REPO = Path(__file__).resolve().parent.parent


def eager_model(seed: int = 0) -> KeywordModel:
    """Untrained head, zero thresholds: it fires on any audio (exercises the session, is not a detector)."""
    torch.manual_seed(seed)
    detector = config.DetectorConfig(thresholds={k: 0.0 for k in config.KEYWORDS})
    return KeywordModel(detector=detector, meta={"name": f"eager-{seed}"}).eval()


@pytest.fixture
def call_path(tmp_path, speech_wav):
    """A 16 kHz French call (espeak-ng) of about 15 s."""
    gap = np.zeros(int(0.4 * config.SAMPLE_RATE), np.float32)
    parts = [gap]
    for text in ("Allô, venez vite, il y a un incendie dans mon immeuble", "ça sent le gaz partout") * 2:
        parts += [speech_wav(text), gap]
    audio = np.concatenate(parts)
    path = tmp_path / "appel.wav"
    sf.write(path, 0.5 * audio / np.abs(audio).max(), config.SAMPLE_RATE, subtype="PCM_16")
    return str(path)


@pytest.fixture
def session(tmp_path):
    from gui.session import ConsoleSession
    s = ConsoleSession(log=EventLog(tmp_path / "events.jsonl"))
    s.install_model(eager_model())
    yield s
    s.shutdown()
    s.log.close()


def drain_until(session, condition, shown: list) -> None:
    """Drain like the window's timer until condition() holds; every new Detection handed out goes to `shown`."""
    t_end = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < t_end, "timed out"
        shown += session.drain(0.02).detections
        time.sleep(0.01)
    shown += session.drain(None).detections


def evidence_of(detections) -> dict:
    ev = {s: 0.0 for s in config.SERVICES}
    for d in detections:
        ev[d.event.service] += d.event.score
    return ev


def assert_same_evidence(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9)


def test_the_session_imports_no_qt():
    code = "import sys, gui.session; assert 'PyQt5' not in sys.modules, 'Qt imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_a_replay_hands_out_every_logged_event_and_the_detectors_suggestion(session, call_path, tmp_path):
    session.set_speed(MAX)
    assert session.open_file(call_path)
    shown = []
    drain_until(session, lambda: session.finished, shown)
    assert not session.running and session.position_s == session.file_duration
    assert shown and [d.id for d in shown] == sorted(session.detections)
    records = [json.loads(line) for line in open(tmp_path / "events.jsonl", encoding="utf-8")]
    assert [r["keyword"] for r in records] == [d.event.keyword for d in shown]       # logged before handed out
    for d in shown:
        assert d.source_path == session.file_path
        assert d.mel.shape == (config.WINDOW_FRAMES, config.N_MELS)
        assert d.window_end_s == d.event.window_end_s                              # one segment from 0
    # the suggestion shown is the detector's own, over exactly the events shown
    assert_same_evidence(session.call_state.evidence, evidence_of(shown))
    assert session.call_state.suggestion is not None
    assert ("note", "Fin de l'enregistrement") in session.view.messages


def test_new_call_while_replaying_is_applied_by_the_detector_thread(session, call_path):
    session.set_speed(TWICE)
    assert session.open_file(call_path)
    before = []
    drain_until(session, lambda: len(session.detections) > 0, before)
    session.new_call()
    assert session.detections == {} and session.call_state.suggestion is None
    assert sum(session.call_state.evidence.values()) == 0
    after = []
    drain_until(session, lambda: not session.new_call_pending, after)      # CallReset came back
    session.set_speed(MAX)
    drain_until(session, lambda: session.finished, after)
    assert after, "detection goes on after the new call"
    # the detector forgot the old call too: its evidence is that of the events after the reset only
    assert_same_evidence(session.call_state.evidence, evidence_of(after))
    assert {d.id for d in after} == set(session.detections)


def test_new_call_then_stop_before_the_detector_answered_is_not_lost(session, call_path):
    session.set_speed(TWICE)
    assert session.open_file(call_path)
    drain_until(session, lambda: len(session.detections) > 0, [])
    session.new_call()
    session.stop()                                         # the thread may never have seen the command
    assert session.drain(None).detections == []
    assert session.spotter.call_state().suggestion is None
    assert sum(session.spotter.call_state().evidence.values()) == 0


def test_seek_and_model_swap_keep_the_call(session, call_path):
    session.set_speed(TWICE)
    assert session.open_file(call_path)
    shown = []
    drain_until(session, lambda: len(session.detections) >= 2, shown)
    session.pause()
    assert session.paused
    session.seek(session.file_duration - 4.0)
    assert session.running and session.paused                         # a paused replay stays paused
    assert session.offset_s == pytest.approx(session.file_duration - 4.0)
    kept = set(session.detections)
    assert kept >= {d.id for d in shown}                              # same call: nothing forgotten
    session.install_model(eager_model(seed=1))                        # a retrained model, mid-call
    assert session.running and session.paused
    assert set(session.detections) >= kept
    session.set_speed(MAX)
    session.toggle_play()
    drain_until(session, lambda: session.finished, shown)
    later = [d for d in shown if d.offset_s > 0]
    assert later and all(d.window_end_s == pytest.approx(d.offset_s + d.event.window_end_s) for d in later)
    # one call across segments and models: the suggestion weighs every event shown
    assert_same_evidence(session.call_state.evidence, evidence_of(session.detections.values()))


def test_an_unreadable_file_is_a_message_and_the_replay_goes_on(session, call_path, tmp_path):
    bad = tmp_path / "appel_corrompu.wav"
    bad.write_text("ceci n'est pas un fichier audio")
    session.set_speed(TWICE)
    assert session.open_file(call_path)
    assert not session.open_file(bad)
    kind, text = session.view.messages[-1]
    assert kind == "error" and "Impossible de lire" in text and "appel_corrompu.wav" in text
    assert session.running and Path(session.file_path).name == "appel.wav"      # the replay in progress goes on
    session.set_speed(MAX)
    drain_until(session, lambda: session.finished, [])
    assert session.detections


def test_without_a_model_nothing_starts(tmp_path, call_path):
    from gui.session import ConsoleSession
    s = ConsoleSession()
    assert not s.open_file(call_path) and not s.start_live()
    assert all(kind == "error" and "Aucun modèle" in text for kind, text in s.view.messages)
    assert s.drain(None).items == 0


def test_the_end_of_a_file_drained_in_one_go_leaves_the_position_at_its_end(session, call_path):
    """The last steps and the end of the file consumed by one drain: the position is the file's end, not the last
    step's (the last partial step is shorter than 80 ms)."""
    session.set_speed(MAX)
    assert session.open_file(call_path)
    t_end = time.monotonic() + TIMEOUT_S
    while session.pipe is not None and session.pipe.running:       # nothing drained until the thread ends
        assert time.monotonic() < t_end, "timed out"
        time.sleep(0.01)
    session.drain(None)
    assert session.finished and session.position_s == session.file_duration

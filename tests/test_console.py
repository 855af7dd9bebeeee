"""Operator console (offscreen Qt): replay, faults shown in the window, sample recording, model swap, CLI screenshot."""
from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import json
from math import gcd

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from spotter import config
from spotter.model import KeywordModel

REPLAY_TIMEOUT_MS = 60_000
CALL_TEXT = ("Allô, venez vite, il y a un incendie dans mon immeuble", "ça sent le gaz partout")


# --- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eager_model_path(tmp_path_factory):
    """A model with an untrained head and zero thresholds: it fires on any audio.

    Not a detector; it exercises the pipeline, the list, the service panel and Grad-CAM without a trained model.
    """
    torch.manual_seed(0)
    detector = config.DetectorConfig(thresholds={k: 0.0 for k in config.KEYWORDS})
    model = KeywordModel(detector=detector, meta={"name": "test-non-entraîné"})
    path = tmp_path_factory.mktemp("models") / "eager.pt"
    model.save(path)
    return path


def write_call(path, speech_wav, rate: int = 8000, texts=CALL_TEXT) -> str:
    """A synthesized French call (espeak-ng) written at `rate` (8 kHz: telephone audio)."""
    gap = np.zeros(int(0.4 * config.SAMPLE_RATE), dtype=np.float32)
    parts = [gap]
    for t in texts:
        parts += [np.array(speech_wav(t)), gap]
    audio = np.concatenate(parts)
    audio = 0.5 * audio / np.abs(audio).max()
    g = gcd(rate, config.SAMPLE_RATE)
    if rate != config.SAMPLE_RATE:
        audio = resample_poly(audio, rate // g, config.SAMPLE_RATE // g)
    sf.write(path, audio, rate, subtype="PCM_16")
    return str(path)


@pytest.fixture
def call_8k(tmp_path, speech_wav):
    return write_call(tmp_path / "appel_8k.wav", speech_wav, rate=8000)


def make_console(qtbot, tmp_path, model_path):
    from gui.console import ConsoleWindow
    win = ConsoleWindow(model_path=model_path, log_path=tmp_path / "events.jsonl",
                        recordings_root=tmp_path / "echantillons")
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.fixture
def console(qtbot, tmp_path, eager_model_path):
    win = make_console(qtbot, tmp_path, eager_model_path)
    yield win
    win.shutdown()


def replay_to_end(qtbot, win, path) -> None:
    win.set_speed(2)                                   # "Max"
    assert win.open_file(path), win.banner.text()
    qtbot.waitUntil(lambda: win.finished, timeout=REPLAY_TIMEOUT_MS)
    win._drain(None)


# --- replay --------------------------------------------------------------------------------------------
def test_replay_fills_list_panel_log_and_spectrogram(qtbot, tmp_path, console, call_8k):
    replay_to_end(qtbot, console, call_8k)
    n = len(console.detections)
    assert n > 0
    assert console.table.rowCount() == n
    assert console.service_panel.service in config.SERVICES
    assert "8000 Hz" in console.status_input.text()
    assert console.banner.text() == ""
    # every displayed detection was logged durably first
    records = [json.loads(line) for line in open(tmp_path / "events.jsonl", encoding="utf-8")]
    assert len(records) == n
    assert {r["keyword"] for r in records} == set(console.table.keywords())
    # the spectrogram shows the end of the call, and each detection kept the mel window that produced it
    assert console.spectrogram._buf.max() > -8.0
    assert all(d.mel is not None and d.mel.shape == (196, 32) for d in console.detections)


def test_new_call_clears_list_and_suggestion(qtbot, console, call_8k):
    replay_to_end(qtbot, console, call_8k)
    assert console.table.rowCount() > 0
    console.new_call()
    assert console.table.rowCount() == 0
    assert console.service_panel.service is None


def test_new_call_during_live_replay_is_applied_by_the_detector_thread(qtbot, console, tmp_path, speech_wav):
    long_call = write_call(tmp_path / "long.wav", speech_wav, rate=16000, texts=CALL_TEXT * 3)
    console.set_speed(1)                                                   # 2x, paced
    assert console.open_file(long_call)
    qtbot.waitUntil(lambda: console.table.rowCount() > 0, timeout=REPLAY_TIMEOUT_MS)
    console.new_call()
    assert console.table.rowCount() == 0
    qtbot.waitUntil(lambda: not console.session.new_call_pending, timeout=REPLAY_TIMEOUT_MS)   # CallReset came back
    qtbot.waitUntil(lambda: console.table.rowCount() > 0, timeout=REPLAY_TIMEOUT_MS)     # and detection goes on
    console.stop()


def test_seek_and_pause_keep_the_call(qtbot, console, tmp_path, speech_wav):
    path = write_call(tmp_path / "seek.wav", speech_wav, rate=16000, texts=CALL_TEXT * 2)
    console.set_speed(1)
    assert console.open_file(path)
    qtbot.waitUntil(lambda: console.table.rowCount() > 0, timeout=REPLAY_TIMEOUT_MS)
    console.pause()
    assert console.session.source.paused
    before = console.table.rowCount()
    console.seek(console.session.file_duration - 2.0)
    assert console.running and console.session.source.paused               # a paused replay stays paused
    assert console.table.rowCount() >= before                         # same call: nothing forgotten
    console.set_speed(2)
    console.toggle_play()
    qtbot.waitUntil(lambda: console.finished, timeout=REPLAY_TIMEOUT_MS)
    assert console.session.position_s >= console.session.file_duration - 0.1


def test_new_call_then_seek_before_the_detector_answered(qtbot, console, tmp_path, speech_wav):
    path = write_call(tmp_path / "race.wav", speech_wav, rate=16000, texts=CALL_TEXT * 2)
    console.set_speed(1)
    assert console.open_file(path)
    qtbot.waitUntil(lambda: console.table.rowCount() > 0, timeout=REPLAY_TIMEOUT_MS)
    console.new_call()
    console.seek(1.0)                                 # the old pipeline (and its pending request) is gone
    qtbot.waitUntil(lambda: console.table.rowCount() > 0, timeout=REPLAY_TIMEOUT_MS)
    console.stop()


def test_backlog_is_drained_in_bounded_ticks_without_losing_events(qtbot, console, tmp_path, speech_wav):
    """A replay at max speed that piles up results: ticks consume them in order; every event reaches the list."""
    path = write_call(tmp_path / "backlog.wav", speech_wav, rate=16000, texts=CALL_TEXT * 3)
    console._timer.stop()
    console.set_speed(2)
    assert console.open_file(path)
    qtbot.waitUntil(lambda: not console.session.pipe._thread.is_alive(), timeout=REPLAY_TIMEOUT_MS)
    ticks = 0
    while not console.finished:
        console._drain(0.0)                           # smallest budget: one batch per tick
        ticks += 1
    assert ticks > 1
    records = [json.loads(line) for line in open(tmp_path / "events.jsonl", encoding="utf-8")]
    assert len(records) == console.table.rowCount() == len(console.detections) > 0
    assert [r["keyword"] for r in records] == console.table.keywords()[::-1]


# --- faults are shown, not raised ----------------------------------------------------------------------
def test_unreadable_file_shows_a_message(qtbot, console, tmp_path, call_8k):
    bad = tmp_path / "appel.wav"
    bad.write_text("ceci n'est pas un fichier audio")
    console.set_speed(1)
    assert console.open_file(call_8k)
    assert not console.open_file(bad)
    assert "Impossible de lire" in console.banner.text() and "appel.wav" in console.banner.text()
    assert console.running                                              # the replay in progress goes on
    console.set_speed(2)
    qtbot.waitUntil(lambda: console.finished, timeout=REPLAY_TIMEOUT_MS)
    assert console.table.rowCount() > 0


def test_missing_input_device_shows_a_message(console):
    assert not console.start_live("micro-inexistant-1234")
    text = console.banner.text()
    assert "micro" in text.lower()
    assert not console.running
    console.samples.toggle_mic_recording()                                     # recording a sample: same, no crash
    assert "micro" in console.banner.text().lower()
    assert console.samples.take is None


def test_incompatible_model_is_refused_and_the_current_one_kept(qtbot, console, tmp_path, call_8k,
                                                                eager_model_path):
    blob = torch.load(eager_model_path, weights_only=True)
    blob["labels"] = list(blob["labels"])[::-1]
    wrong = tmp_path / "incompatible.pt"
    torch.save(blob, wrong)
    label = console.status_model.text()
    assert not console.load_model_file(wrong)
    assert "Modèle refusé" in console.banner.text() and "incompatible.pt" in console.banner.text()
    assert console.status_model.text() == label
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    assert not console.load_model_file(junk)
    replay_to_end(qtbot, console, call_8k)
    assert console.table.rowCount() > 0


def test_loading_another_model_mid_replay_continues_the_call(qtbot, console, tmp_path, speech_wav,
                                                            eager_model_path):
    path = write_call(tmp_path / "swap.wav", speech_wav, rate=16000, texts=CALL_TEXT * 2)
    console.set_speed(1)
    assert console.open_file(path)
    qtbot.waitUntil(lambda: console.table.rowCount() > 0, timeout=REPLAY_TIMEOUT_MS)
    assert console.load_model_file(eager_model_path)
    assert console.running
    console.set_speed(2)
    qtbot.waitUntil(lambda: console.finished, timeout=REPLAY_TIMEOUT_MS)


def test_model_missing_at_start_shows_a_message(qtbot, tmp_path, call_8k):
    win = make_console(qtbot, tmp_path, tmp_path / "absent.pt")
    try:
        assert "absent.pt" in win.banner.text()
        assert not win.open_file(call_8k)
        assert "Aucun modèle" in win.banner.text()
    finally:
        win.shutdown()


# --- samples for retraining ----------------------------------------------------------------------------
def test_cut_detection_and_save_writes_a_readable_sample(qtbot, console, tmp_path, call_8k):
    replay_to_end(qtbot, console, call_8k)
    det = console.detections[0]
    console.table.select_id(det.id)
    assert console.cut_selected_detection()
    take = console.samples.take
    assert take.keyword == det.event.keyword
    expected = (det.end_s + 0.3) - max(0.0, det.start_s - 0.3)
    assert abs(take.duration_s - expected) < 0.02
    path = console.samples.save_take()
    assert path.parent == tmp_path / "echantillons" / config.KEYWORD_ASCII[det.event.keyword]
    audio, sr = sf.read(path, dtype="float32")
    assert sr == config.SAMPLE_RATE and len(audio) == len(take.audio)
    # it is that segment of the call (16-bit rounding aside)
    from spotter.audio import load_audio
    whole = load_audio(call_8k)
    a = int(round(max(0.0, det.start_s - 0.3) * config.SAMPLE_RATE))
    np.testing.assert_allclose(audio, whole[a:a + len(audio)], atol=2e-4)
    assert console.samples.take is None


def test_saving_under_another_keyword_and_unsorted(qtbot, console, tmp_path, call_8k):
    replay_to_end(qtbot, console, call_8k)
    console.table.select_id(console.detections[0].id)
    assert console.cut_selected_detection()
    console.samples.keyword_combo.setCurrentIndex(console.samples.keyword_combo.findData("électrocution"))
    assert console.samples.save_take().parent.name == "electrocution"
    assert console.cut_selected_detection()
    console.samples.keyword_combo.setCurrentIndex(console.samples.keyword_combo.findData(None))
    assert console.samples.save_take().parent.name == "_non_classes"


def test_pending_take_is_saved_when_the_window_closes(qtbot, tmp_path, eager_model_path, call_8k):
    win = make_console(qtbot, tmp_path, eager_model_path)
    replay_to_end(qtbot, win, call_8k)
    win.table.select_id(win.detections[0].id)
    assert win.cut_selected_detection()
    win.close()
    saved = list((tmp_path / "echantillons" / "_non_classes").glob("*.wav"))
    assert len(saved) == 1
    assert sf.info(saved[0]).frames > 0


# --- Grad-CAM from the list ----------------------------------------------------------------------------
def test_selecting_a_detection_shows_its_gradcam(qtbot, console, call_8k):
    replay_to_end(qtbot, console, call_8k)
    heat = console.explain(console.detections[-1].id)
    assert heat is not None and heat.shape == (196, 32)
    assert console.cam_view.heat is heat


# --- the real model: a keyword call ends in the right service ------------------------------------------
def test_replayed_keyword_call_shows_keyword_and_service(qtbot, tmp_path, request, speech_wav):
    try:
        model_path = request.getfixturevalue("keyword_model_path")
    except pytest.FixtureLookupError:
        pytest.skip("keyword_model_path fixture not provided yet (trained model)")
    from spotter.demo import espeak                    # the demo's voice, held out of the default model's training
    path = write_call(tmp_path / "incendie.wav", lambda text: espeak(text), rate=8000,
                      texts=("Allô, venez vite s'il vous plaît, c'est au troisième étage.", "il y a un incendie",
                             "dans la cuisine, tout le monde est dehors."))
    win = make_console(qtbot, tmp_path, model_path)
    try:
        replay_to_end(qtbot, win, path)
        assert "incendie" in win.table.keywords()
        assert win.service_panel.service == "18"
        assert "18 — Sapeurs-pompiers" in win.service_panel.title.text()
    finally:
        win.shutdown()


# --- lifetime of Qt objects ----------------------------------------------------------------------------
def test_cycles_are_collected_in_the_gui_thread_while_a_window_lives(qtbot, tmp_path, eager_model_path):
    """Qt objects in reference cycles (the window, pyqtgraph items) must not be torn down from a worker thread or
    in the middle of a paint: until a console is destroyed, its tick collects cycles in the GUI thread
    (collector.py)."""
    import gc
    from PyQt5 import QtCore
    from gui.console import ConsoleWindow
    console = ConsoleWindow(model_path=eager_model_path, log_path=tmp_path / "events.jsonl",
                            recordings_root=tmp_path / "echantillons")
    console.show()
    try:
        check_cycles_are_collected_in_the_gui_thread(qtbot)
        console.close()
        assert not gc.isenabled()                      # closed, but its items still exist
    finally:
        console.close()
        console.deleteLater()
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
    assert gc.isenabled()


def check_cycles_are_collected_in_the_gui_thread(qtbot) -> None:
    import gc
    import threading
    assert not gc.isenabled()
    where: list[str] = []
    kept = []

    class Cycle:
        def __init__(self):
            self.me = self

        def __del__(self):
            where.append(threading.current_thread().name)

    def worker() -> None:                              # the detector's thread allocates like this all the time
        Cycle()
        kept.append([[] for _ in range(20000)])        # generation 0's threshold crossed many times over

    t = threading.Thread(target=worker, name="worker")
    t.start()
    t.join()
    assert where == []
    qtbot.waitUntil(lambda: bool(where), timeout=5000)
    assert where == ["MainThread"]


def test_the_collector_collects_what_cpython_thresholds_ask_for():
    from gui.collector import due_generation
    thresholds = (700, 10, 10)
    assert due_generation((700, 50, 50), thresholds) is None
    assert due_generation((701, 10, 10), thresholds) == 0
    assert due_generation((701, 11, 10), thresholds) == 1
    assert due_generation((701, 11, 11), thresholds) == 2
    assert due_generation((701, 0, 11), thresholds) == 0
    assert due_generation((10_000, 11, 11), (0, 10, 10)) is None


# --- command line --------------------------------------------------------------------------------------
def test_cli_screenshot_of_a_replay(tmp_path, qapp, eager_model_path, call_8k):
    from spotter.cli import main
    png = tmp_path / "console.png"
    code = main(["console", "--model", str(eager_model_path), "--file", call_8k, "--speed", "max",
                 "--log", str(tmp_path / "ev.jsonl"), "--recordings", str(tmp_path / "rec"),
                 "--screenshot", str(png), "--screenshot-after", "3"])
    assert code == 0
    import gc
    assert gc.isenabled()                              # the window was deleted: automatic collection is back
    from PyQt5.QtGui import QImage
    img = QImage(str(png))
    assert img.width() > 800 and img.height() > 500


def test_verified_detections_are_marked_and_rejections_counted(qtbot, tmp_path, speech_wav):
    """`spotter console --verify` (real Whisper base; skipped without the verify extra): the table lists the
    verified detections with their mark, the status bar counts the rejected candidates, and the log holds both."""
    from spotter import verify
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from gui.console import ConsoleWindow
    if not verify.status()[0]:
        pytest.skip(verify.status()[1])
    say = speech_wav("Allô, il y a un incendie dans la cuisine, ça sent le gaz, venez vite.")
    z = np.zeros(8000, np.float32)
    path = tmp_path / "appel.wav"
    sf.write(path, np.concatenate([z, say, z, say, z, z]), config.SAMPLE_RATE)
    win = ConsoleWindow(model_path=DEFAULT_ONNX_MODEL, log_path=tmp_path / "events.jsonl",
                        recordings_root=tmp_path / "echantillons", verify=True)
    qtbot.addWidget(win)
    win.show()
    try:
        replay_to_end(qtbot, win, path)
        win._show_verification()
        records = [json.loads(line) for line in open(tmp_path / "events.jsonl", encoding="utf-8")]
        assert records and all(r["verified"] in (True, False) for r in records)
        kept = [r for r in records if r["verified"]]
        assert win.table.rowCount() == len(kept) == len(win.detections)
        assert win.table.verified() == ["✓ vérifié"] * len(kept)
        # the union proposes by default: each row says who proposed it and each opinion's score
        assert all(t.startswith("Proposé par : ") and "avis Whisper" in t for t in win.table.evidence())
        assert not win.table.isColumnHidden(win.table.VERIFIED_COLUMN)
        assert win.status_verify.text().startswith(f"Vérification : active · {len(records) - len(kept)} candidat")
    finally:
        win.shutdown()


def test_the_evidence_tooltip_says_when_a_detection_did_not_wait_for_whisper():
    """A union detection released before the Whisper head was done with it (VerifiedEvent.whisper_pending) says
    so in the « Vérif. » tooltip, and is not called « premier étage seul »: the head may still join it."""
    from dataclasses import replace
    from gui.widgets import proposer_evidence
    from spotter.detector import Event
    from spotter.verify import VerifiedEvent
    ev = Event("gaz", "18", 0.95, 1.0, 1.5, 1.8, 0.0, 1.8)
    early = VerifiedEvent(ev, 0.95, 3.0, 0.97, True, 300.0, whisper_score=0.0, released_s=1.85,
                          whisper_pending=True)
    tip = proposer_evidence(early)
    assert "premier étage (Whisper pas encore entendu)" in tip and "sans attendre Whisper" in tip
    late = replace(early, whisper_pending=False)
    assert "premier étage seul" in proposer_evidence(late) and "sans attendre" not in proposer_evidence(late)
    assert early.to_dict()["whisper_pending"] is True and "whisper_pending" not in late.to_dict()

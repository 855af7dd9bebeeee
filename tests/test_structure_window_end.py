"""Event.window_end_s: the end of the head window behind an event, right from the first step of a stream.

A peak in the first 0.25 s has its keyword end clipped to 0, so end_s + KEYWORD_END_OFFSET_S cannot give the
window back; the console must take Event.window_end_s, and the mel window it keeps must be the frames that the
head actually saw (silence before the stream start, then the first frames of the audio).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
import torch

from spotter import config
from spotter.detector import KEYWORD_END_OFFSET_S, KeywordSpotter
from spotter.features import MEL_FLOOR, MelStream
from spotter.model import KeywordModel


def eager_model() -> KeywordModel:
    """Untrained head, zero thresholds: its first event is decided within max_hold_steps of the stream start."""
    torch.manual_seed(0)
    detector = config.DetectorConfig(thresholds={k: 0.0 for k in config.KEYWORDS})
    return KeywordModel(detector=detector, meta={"name": "eager"}).eval()


def test_an_event_at_stream_start_carries_its_window_end(tone_noise):
    sp = KeywordSpotter(eager_model())
    out = sp.process(tone_noise)
    first = out.events[0]
    assert 0 < first.window_end_s < 0.25                                   # a peak in the first 0.25 s
    steps = first.window_end_s / config.STEP_S
    assert steps == pytest.approx(round(steps))                            # the end of a step's head window
    assert first.window_end_s <= first.detected_s
    assert first.end_s == 0.0                                              # clipped: the offset cannot undo it
    assert first.end_s + KEYWORD_END_OFFSET_S != pytest.approx(first.window_end_s)
    assert "window_end_s" not in first.to_dict()                           # logged/printed records unchanged
    for e in out.events:                                                   # and everywhere else in the stream
        assert e.end_s == pytest.approx(max(0.0, e.window_end_s - KEYWORD_END_OFFSET_S))


def test_the_console_keeps_the_mel_window_the_head_saw_at_stream_start(tmp_path, tone_noise):
    from gui.session import ConsoleSession
    path = tmp_path / "debut.wav"
    sf.write(path, tone_noise, config.SAMPLE_RATE, subtype="FLOAT")
    session = ConsoleSession()
    session.install_model(eager_model())
    session.set_speed(2)                                                   # "Max"
    assert session.open_file(path)
    t_end = time.monotonic() + 60
    while not session.finished:
        assert time.monotonic() < t_end, "timed out"
        session.drain(0.02)
        time.sleep(0.01)
    session.drain(None)
    session.shutdown()
    det = session.detections[min(session.detections)]
    assert det.window_end_s < 0.25
    n = int(round(det.window_end_s / config.FRAME_S))                      # frames of audio inside the window
    audio, _ = sf.read(path, dtype="float32")
    ms = MelStream()
    heard = np.concatenate([ms.push(audio[i:i + config.STEP_SAMPLES]).numpy()
                            for i in range(0, n // config.EMBED_STEP * config.STEP_SAMPLES, config.STEP_SAMPLES)])
    assert det.mel.shape == (config.WINDOW_FRAMES, config.N_MELS)
    np.testing.assert_allclose(det.mel[-n:], heard, atol=1e-5)           # ends exactly where the head window ended
    assert (det.mel[:-n] == MEL_FLOOR).all()                               # before the stream: silence

"""Shared test fixtures: real signals (espeak-ng French speech, tones and noise) at 16 kHz."""
from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from spotter.config import SAMPLE_RATE

torch.set_num_threads(1)
# The Whisper cascade is on by default when the verify extra is installed (CI installs it); tests of everything
# else run the first stage alone, as they assert on its events. Tests of the cascade ask for it explicitly.
os.environ.setdefault("SPOTTER_VERIFY", "off")


@pytest.fixture(autouse=True)
def qt_objects_die_with_their_test(request):
    """A Qt test's windows are destroyed at the end of that test, in this thread, and their Python wrappers are
    collected here too. pytest-qt only closes them and calls deleteLater(), which outside an event loop waits for
    whichever later test first runs one, or for the garbage collector to delete them at any moment of a later test
    (see gui/collector.py)."""
    yield
    if "qtbot" not in request.fixturenames and "qapp" not in request.fixturenames:
        return
    import gc
    from PyQt5 import QtCore
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
    assert gc.isenabled(), "a console window outlived its test: automatic cycle collection is still off"
    gc.collect()


@functools.lru_cache(maxsize=32)
def synthesize_french(text: str) -> np.ndarray:
    """espeak-ng French speech for text, as float32 mono at 16 kHz (cached per text)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "fr", "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
    g = gcd(SAMPLE_RATE, rate)
    audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
    audio.flags.writeable = False   # shared by the cache: callers must copy before editing
    return audio


@pytest.fixture(scope="session")
def speech_wav():
    """Factory: speech_wav(text) -> np.ndarray float32 at 16 kHz (espeak-ng, voice fr)."""
    return synthesize_french


@pytest.fixture(scope="session")
def tone_noise() -> np.ndarray:
    """2 s of 440 Hz + 1.3 kHz tones with a 0.5 s 3 kHz burst over white noise, float32 at 16 kHz."""
    rng = np.random.default_rng(1234)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1300 * t)
    x += 0.2 * np.sin(2 * np.pi * 3000 * t) * ((t > 0.7) & (t < 1.2))
    x += 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def keyword_model_path(tmp_path_factory):
    """A trained keyword model: the shipped models/default.pt, or (if it is absent) a tiny model trained here
    on espeak-ng speech with training/configs/tiny.toml."""
    from spotter.model import DEFAULT_MODEL
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    from training.recipe import load_recipe, run_training
    work = tmp_path_factory.mktemp("tiny_model")
    recipe = load_recipe(Path(__file__).resolve().parent.parent / "training/configs/tiny.toml",
                         overrides=[f"out={work / 'tiny.pt'}", f"work_dir={work}", "evaluate.enabled=false"])
    return run_training(recipe)

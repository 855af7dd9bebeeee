"""A second keyword set end to end: the tiny English wake-word recipe trains, exports to ONNX and replays in a
fresh French-default process (the artifact brings its own labels); recordings laid out by the console's recorder
are what `--recordings` and `evaluate --real` read."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spotter import config, keywordset

REPO = Path(__file__).resolve().parent.parent
EN = REPO / "spotter" / "keywordsets" / "en_wake.toml"


@pytest.fixture
def restore_set():
    previous = config.KEYWORD_SET
    yield
    config.use_keyword_set(previous)


def _say(text: str, voice: str = "en-us+f3") -> np.ndarray:
    from training.espeak_lib import speak
    from training.calls import _to_16k
    raw, rate, _ = speak(text, voice, 160, 50, 50)
    return _to_16k(raw, rate)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_english_set_trains_exports_and_replays(tmp_path, restore_set):
    from spotter.audio import write_wav
    from training.calltrain import train_from_calls
    from training.export import export_onnx
    from training.recipe import load_recipe, use_recipe_keywords
    recipe = load_recipe(REPO / "training/configs/en_wake_tiny.toml", overrides=[
        f"out={tmp_path / 'en.pt'}", f"work_dir={tmp_path / 'work'}", f"calls.cache_dir={tmp_path / 'sentences'}"])
    use_recipe_keywords(recipe)
    assert config.KEYWORDS == ("alexa", "computer")
    out = train_from_calls(recipe)
    card = out.with_suffix(".md").read_text()
    assert "alexa" in card and "computer" in card
    onnx = export_onnx(out, tmp_path / "en.onnx")

    call = np.concatenate([np.zeros(8000, np.float32), _say("Alexa, turn on the lights."),
                           np.zeros(16000, np.float32), _say("Computer, what time is it?"), np.zeros(16000, np.float32)])
    wav = tmp_path / "call.wav"
    write_wav(wav, call)
    config.use_keyword_set(keywordset.default())          # the child process starts French, like any other
    env = {**os.environ, "SPOTTER_LOG": str(tmp_path / "events.jsonl")}
    proc = subprocess.run([sys.executable, "-m", "spotter.cli", "replay", "--model", str(onnx), "--json", str(wav)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1]
    assert summary["file"].endswith("call.wav") and "error" not in summary
    for ev in [x["event"] for x in lines if "event" in x] + summary.get("events", []):
        assert ev["keyword"] in ("alexa", "computer") and ev["service"] is None
    proc = subprocess.run([sys.executable, "-m", "spotter.cli", "replay", "--model", str(onnx), str(wav)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "suggested service" not in proc.stdout


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_recorder_layout_is_what_recordings_read(tmp_path, restore_set):
    from gui.recorder import sample_path
    from spotter.audio import write_wav
    from evaluation.realeval import keyword_recordings, speech_span
    config.use_keyword_set(keywordset.load(EN))
    audio = np.concatenate([np.zeros(4000, np.float32), _say("alexa"), np.zeros(4000, np.float32)])
    for kw in ("alexa", "alexa", None):                           # None: an unclassified take, not training data
        path = sample_path(tmp_path, kw)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, audio)
    found = keyword_recordings(tmp_path)
    assert [kw for kw, _ in found] == ["alexa", "alexa"]
    a, b = speech_span(audio)
    assert 0.2 < a < 0.3 and b - a > 0.3


def test_recordings_folder_errors_name_the_folder(tmp_path, restore_set):
    from spotter.errors import SpotterError
    from evaluation.realeval import keyword_recordings
    config.use_keyword_set(keywordset.load(EN))
    with pytest.raises(SpotterError, match=str(tmp_path / "none")):
        keyword_recordings(tmp_path / "none")
    (tmp_path / "alexa").mkdir()
    with pytest.raises(SpotterError, match="no recordings of alexa, computer"):
        keyword_recordings(tmp_path)


def test_real_negatives_never_include_keyword_recordings(tmp_path, restore_set):
    from spotter.audio import write_wav
    from evaluation.realeval import real_speech_files
    config.use_keyword_set(keywordset.load(EN))
    tone = np.sin(np.arange(8000) / 5).astype(np.float32) * 0.1
    for rel in ("speech/real_kws/alexa/1.flac", "speech/real_kws/computer/2.wav", "speech/people_en/a.wav",
                "held/alexa/1.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(tmp_path / rel, tone)
    found = real_speech_files(tmp_path / "speech", tmp_path / "held")
    assert [f.relative_to(tmp_path).as_posix() for f in found] == ["speech/people_en/a.wav"]

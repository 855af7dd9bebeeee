"""`spotter` command line: one clear line and a non-zero exit for every bad input, JSON output contract."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from spotter.model import KeywordModel


def run(*args, env_extra=None, tmp_path=None):
    import os
    env = dict(os.environ, SPOTTER_LOG=str(tmp_path / "events.jsonl") if tmp_path else os.devnull)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "spotter.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "random.pt"
    KeywordModel(meta={"name": "random"}).save(path)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio\n" * 20)
    good = d / "good.wav"
    sf.write(good, np.zeros(16000, np.float32), 16000)
    (d / "truncated.wav").write_bytes(good.read_bytes()[:30])
    sf.write(d / "zero.wav", np.zeros((0,), np.float32), 16000)
    (d / "folder.wav").mkdir()
    return d


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("replay", "listen", "devices"):
        assert cmd in out.stdout


def test_devices_says_when_there_is_no_input_device():
    out = run("devices")
    assert out.returncode == 2                       # no device is an error for scripts (issue 11)
    assert "no input device" in out.stderr.lower() and "Traceback" not in out.stderr


def test_listen_without_a_device_is_one_clear_line(random_model, tmp_path):
    out = run("listen", "--model", str(random_model), tmp_path=tmp_path)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "no input device" in out.stderr.lower()


@pytest.mark.parametrize("name, problem", [
    ("missing.wav", "not found"), ("empty.wav", "empty"), ("text.wav", "not an audio file"),
    ("truncated.wav", "truncated"), ("zero.wav", "no audio"), ("folder.wav", "directory"),
])
def test_bad_files_one_line_each(random_model, bad_files, tmp_path, name, problem):
    out = run("replay", "--model", str(random_model), str(bad_files / name), tmp_path=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and problem in lines[0]


def test_good_and_bad_files_together(random_model, bad_files, tmp_path):
    out = run("replay", "--json", "--model", str(random_model), str(bad_files / "good.wav"),
              str(bad_files / "empty.wav"), str(bad_files / "good.wav"), tmp_path=tmp_path)
    assert out.returncode == 2                                  # a failure is reported...
    docs = [json.loads(l) for l in out.stdout.splitlines()]     # one object per input file, failures included
    assert [d["file"].endswith("empty.wav") for d in docs] == [False, True, False]
    assert "empty" in docs[1]["error"]
    for d in (docs[0], docs[2]):                                # ...and the good files are still processed
        assert set(d) == {"file", "duration_s", "events", "suggestion"}
        assert d["duration_s"] == pytest.approx(1.0, abs=0.01)
        assert d["events"] == [] and d["suggestion"] is None


def test_corrupt_model_is_one_line(bad_files, tmp_path):
    out = run("replay", "--model", str(bad_files / "text.wav"), str(bad_files / "good.wav"), tmp_path=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a readable spotter model" in out.stderr

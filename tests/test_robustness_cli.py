"""Issue 11, defects 1-3, 6-10 and the CLI side of 11: each test reproduces one probe finding on real signals
(generated noise and tones, espeak-ng speech) through the real command line."""
from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from spotter import cli, config
from spotter.detector import Event
from spotter.eventlog import EventLog, TornLineWarning, read_log
from spotter.model import KeywordModel

ROOT = Path(__file__).resolve().parent.parent


def run(*args, log=None, env_extra=None, timeout=300, **kw):
    env = dict(os.environ, SPOTTER_LOG=str(log) if log else os.devnull, PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    kw.setdefault("cwd", ROOT)
    return subprocess.run([sys.executable, "-m", "spotter.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def one_error_line(out, *needles):
    assert "Traceback" not in out.stderr, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.startswith("spotter:")]
    assert len(lines) == 1, out.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def noise(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * config.SAMPLE_RATE))).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """random: an untrained head with default thresholds (rarely fires); eager: zero thresholds, fires about once a
    second on any audio (exercises the event path without a trained model)."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    KeywordModel(meta={"name": "random"}).save(d / "random.pt")
    eager = config.DetectorConfig(thresholds={k: 0.0 for k in config.KEYWORDS})
    KeywordModel(detector=eager, meta={"name": "eager"}).save(d / "eager.pt")
    return {"random": d / "random.pt", "eager": d / "eager.pt"}


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory):
    p = tmp_path_factory.mktemp("audio") / "noise.wav"
    sf.write(p, noise(3.0), config.SAMPLE_RATE, subtype="PCM_16")
    return p


# --- 1: events printed as they are decided; Ctrl-C keeps them -----------------------------------------------------
def _stream_until_event(proc, is_event, limit_s: float):
    """Read proc's stdout lines until one satisfies is_event; returns (lines read, seconds waited)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if not sel.select(timeout=1.0):
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if is_event(lines[-1]):
            break
    return lines, time.monotonic() - t0


@pytest.mark.parametrize("mode", ["realtime", "plain-json"])
def test_events_are_printed_when_decided_and_ctrl_c_keeps_them(models, tmp_path, mode):
    seconds = 120.0 if mode == "realtime" else 900.0     # long: the first event comes well before the end, even under load
    path = tmp_path / "long.wav"
    sf.write(path, noise(seconds, seed=1), config.SAMPLE_RATE, subtype="PCM_16")
    log = tmp_path / "events.jsonl"
    args = ["--realtime"] if mode == "realtime" else ["--json"]
    env = dict(os.environ, SPOTTER_LOG=str(log), PYTHONUNBUFFERED="1")
    # Ctrl-C as a terminal delivers it: a shell's background job (`pytest ... &`) ignores SIGINT, and a child
    # inherits that, so the replay gets the default disposition back
    proc = subprocess.Popen([sys.executable, "-m", "spotter.cli", "replay", *args, "--model", str(models["eager"]),
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        is_event = (lambda l: "score" in l) if mode == "realtime" else (lambda l: '"event"' in l)
        lines, _ = _stream_until_event(proc, is_event, limit_s=240)
        assert lines and is_event(lines[-1]), lines            # an event arrived while the file was still running
        assert not any("suggested service" in l or '"duration_s"' in l for l in lines)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted" in err
    logged = read_log(log)
    assert logged and logged[0]["keyword"] in lines[-1]      # what was printed had been logged first


# --- 2: torn tail fenced on open, reported by the reader -----------------------------------------------------------
def test_torn_last_line_does_not_swallow_the_next_run(tmp_path):
    path = tmp_path / "events.jsonl"
    first = EventLog(path)
    first.write(Event("malaise", "15", 0.9, 1.0, 1.5, 1.9, 1.0))
    first.close()
    with open(path, "a") as f:                                  # a crash in the middle of the next record
        f.write('{"logged_at": "2026-12-01T10:00:00", "keyword": "ga')
    second = EventLog(path)
    second.write(Event("incendie", "18", 0.97, 4.5, 5.0, 5.4, 2.0))
    second.close()
    torn = []
    records = read_log(path, torn=torn)
    assert [r["keyword"] for r in records] == ["malaise", "incendie"]
    assert len(torn) == 1 and torn[0][0] == 2 and torn[0][1].endswith('"keyword": "ga')
    with warnings.catch_warnings(record=True) as caught:         # without a list: a warning, never silence
        warnings.simplefilter("always")
        assert len(read_log(path)) == 2
    assert any(issubclass(w.category, TornLineWarning) and ":2:" in str(w.message) for w in caught)


# --- 3: log write failures ------------------------------------------------------------------------------------------
def test_unwritable_log_is_refused_before_any_audio(models, noise_wav):
    out = run("replay", "--model", str(models["random"]), str(noise_wav), env_extra={"SPOTTER_LOG": "/dev/full"})
    assert out.returncode == 2
    one_error_line(out, "/dev/full", "cannot write the event log")
    assert out.stdout == ""                                     # no file was started


def _limit_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_write_failure_mid_run_is_one_line_and_the_event_is_not_shown_as_logged(models, tmp_path):
    path = tmp_path / "call.wav"
    sf.write(path, noise(6.0, seed=2), config.SAMPLE_RATE, subtype="PCM_16")
    log = tmp_path / "events.jsonl"
    log.write_text('{"old": 1}\n' * 100)                        # the log is full up to the process's file size limit
    limit = log.stat().st_size + 10
    out = run("replay", "--model", str(models["eager"]), str(path), str(path), log=log,
              preexec_fn=_limit_file_size(limit))
    assert out.returncode == 2
    line = one_error_line(out, "cannot write the event log", "event not logged")
    kw = line.rsplit("event not logged: ", 1)[1].split()[0]
    assert kw in config.KEYWORDS
    assert "score" not in out.stdout                            # the unlogged event was never shown as an event
    assert out.stdout.count("(") == 1                           # the run stopped: the second file never started
    torn = []
    assert len(read_log(log, torn=torn)) == 100
    assert len(torn) <= 1 and all(n == 101 for n, _ in torn)   # a partial write is reported, and fenced next run


# --- 6: output spoofing -----------------------------------------------------------------------------------------------
def test_control_characters_in_file_and_model_names_are_escaped(tmp_path, noise_wav):
    evil_name = "appel\x1b[2K\r\n  suggested service: 17 Police secours\x1b[0m.wav"
    evil = tmp_path / evil_name
    evil.write_bytes(noise_wav.read_bytes())
    torch.manual_seed(0)
    model = tmp_path / "m.pt"
    KeywordModel(meta={"name": "m\x1b]0;pwned\x07\nsuggested service: 15"}).save(model)
    missing = tmp_path / "gone\x1b[31m\n.wav"
    out = run("replay", "--model", str(model), str(evil), str(missing))
    assert out.returncode == 2
    for stream in (out.stdout, out.stderr):
        assert "\x1b" not in stream and "\r" not in stream and "\x07" not in stream
    assert [l for l in out.stdout.splitlines() if l.lstrip().startswith("suggested service")] == \
        ["  suggested service: none (no keyword evidence)"]      # the only such line is the real one
    assert "\\x1b[2K\\x0d\\x0a" in out.stdout and "m\\x1b]0;pwned\\x07\\x0a" in out.stdout
    one_error_line(out, "gone\\x1b[31m\\x0a.wav", "file not found")


# --- 7: non-UTF-8 file names ----------------------------------------------------------------------------------------
def test_latin1_file_name_is_read(models, tmp_path, noise_wav):
    raw = os.fsencode(tmp_path) + b"/appel_r\xe9seau.wav"       # Latin-1 "é", as on old Windows shares
    with open(raw, "wb") as f:
        f.write(noise_wav.read_bytes())
    out = subprocess.run([os.fsencode(sys.executable), b"-m", b"spotter.cli", b"replay", b"--json", b"--model",
                          os.fsencode(models["random"]), raw], capture_output=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, SPOTTER_LOG=os.devnull))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.decode("utf-8"))
    assert doc["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert os.fsencode(doc["file"]) == raw                      # the JSON name maps back to the very bytes
    text = subprocess.run([os.fsencode(sys.executable), b"-m", b"spotter.cli", b"replay", b"--model",
                           os.fsencode(models["random"]), raw], capture_output=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, SPOTTER_LOG=os.devnull))
    assert text.returncode == 0 and b"appel_r\\xe9seau.wav  (3.0 s" in text.stdout


# --- 8: one line instead of a traceback -------------------------------------------------------------------------------
@pytest.mark.parametrize("speed", ["0", "-1", "nan", "inf"])
def test_bad_speed_is_one_line(models, noise_wav, speed):
    out = run("replay", "--realtime", "--speed", speed, "--model", str(models["random"]), str(noise_wav))
    assert out.returncode == 2
    one_error_line(out, "--speed", "positive")


@pytest.mark.parametrize("value", ["abc", "0", "-2"])
def test_bad_spotter_threads_is_one_line(models, noise_wav, value):
    out = run("replay", "--model", str(models["random"]), str(noise_wav), env_extra={"SPOTTER_THREADS": value})
    assert out.returncode == 2
    one_error_line(out, "SPOTTER_THREADS", repr(value))


def test_espeak_failure_is_one_line(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    exe = fake_bin / "espeak-ng"                                 # an espeak-ng that fails (broken voice data)
    exe.write_text("#!/bin/sh\necho 'Error processing file: no voice data' >&2\nexit 1\n")
    exe.chmod(0o755)
    out = run("demo", "--out", str(tmp_path / "demo.wav"),
              env_extra={"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 2
    one_error_line(out, "espeak-ng", "synthesis failed", "no voice data")


def test_broken_pipe_exits_quietly(models, noise_wav):
    env = dict(os.environ, SPOTTER_LOG=os.devnull)
    proc = subprocess.Popen([sys.executable, "-m", "spotter.cli", "replay", "--json", "--model", str(models["random"]),
                             *[str(noise_wav)] * 30], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()                               # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert json.loads(first)["file"] == str(noise_wav)
    assert err == "" and proc.returncode == cli.EXIT_BROKEN_PIPE


def test_empty_cached_demo_file_is_regenerated(tmp_path, monkeypatch):
    from spotter.audio import open_audio
    from spotter.demo import demo_call_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "spotter" / "demo_call_fr+michel.wav"
    cached.parent.mkdir()
    cached.write_bytes(b"")                                      # left by an interrupted first run
    assert demo_call_path() == cached
    assert open_audio(cached).duration_s > 5.0


# --- 9: --json accounts for every input -----------------------------------------------------------------------------
def test_json_has_one_object_per_file_including_failures(models, tmp_path, noise_wav):
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    missing = tmp_path / "missing.wav"
    out = run("replay", "--json", "--model", str(models["random"]), str(noise_wav), str(missing), str(nan))
    assert out.returncode == 2
    docs = [json.loads(l) for l in out.stdout.splitlines()]
    assert [d["file"] for d in docs] == [str(noise_wav), str(missing), str(nan)]
    assert "duration_s" in docs[0] and "error" not in docs[0]
    assert docs[1] == {"file": str(missing), "error": "file not found"}
    assert docs[2]["error"].startswith("no valid audio")
    assert len(out.stderr.strip().splitlines()) == 2            # and still one line each on stderr


# --- 10: headless console with a missing device ---------------------------------------------------------------------
@pytest.mark.parametrize("screenshot", [False, True])
def test_headless_console_with_missing_device_exits_with_a_line(models, tmp_path, screenshot):
    args = ["console", "--model", str(models["random"]), "--device", "99", "--log", str(tmp_path / "e.jsonl")]
    if screenshot:
        args += ["--screenshot", str(tmp_path / "shot.png"), "--screenshot-after", "0.5"]
    out = run(*args, env_extra={"QT_QPA_PLATFORM": "offscreen"}, timeout=120)
    assert out.returncode == 2
    one_error_line(out, "micro")


# --- 11: smaller ones (CLI side) ------------------------------------------------------------------------------------
def test_devices_exits_non_zero_without_a_device():
    out = run("devices")
    assert out.returncode == 2
    one_error_line(out, "no input device")


def test_listen_checks_the_device_before_loading_the_model(tmp_path):
    t0 = time.monotonic()
    out = run("listen", "--model", str(tmp_path / "absent.pt"))
    assert out.returncode == 2
    one_error_line(out, "no input device")                      # not "model file not found": never got there
    assert time.monotonic() - t0 < 60


def test_symlink_loop_and_fifo_are_named(models, tmp_path):
    (tmp_path / "a.wav").symlink_to(tmp_path / "b.wav")
    (tmp_path / "b.wav").symlink_to(tmp_path / "a.wav")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    for name, problem in (("a.wav", "symbolic link loop"), ("dangling.wav", "broken symbolic link"),
                          ("pipe.wav", "named pipe (FIFO)")):
        out = run("replay", "--model", str(models["random"]), str(tmp_path / name))
        assert out.returncode == 2
        one_error_line(out, name, problem)


def test_log_is_private_and_records_tell_runs_apart(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "call.wav", noise(3.0, seed=3), config.SAMPLE_RATE, subtype="PCM_16")
    log = tmp_path / "private" / "events.jsonl"
    for _ in range(2):
        out = run("replay", "--model", str(models["eager"]), "call.wav", log=log, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    records = read_log(log)
    assert records
    assert {r["source"] for r in records} == {str(tmp_path / "call.wav")}
    assert {r["model"] for r in records} == {"eager"}
    assert all(len(r["model_sha256"]) == 64 for r in records)
    assert len({r["run_id"] for r in records}) == 2


def test_json_lines_and_log_agree_and_stay_valid(models, tmp_path):
    """Event lines while running, then the summary; everything printed was logged, in order."""
    sf.write(tmp_path / "call.wav", noise(4.0, seed=4), config.SAMPLE_RATE, subtype="PCM_16")
    log = tmp_path / "e.jsonl"
    out = run("replay", "--json", "--model", str(models["eager"]), str(tmp_path / "call.wav"), log=log)
    assert out.returncode == 0, out.stderr
    docs = [json.loads(l) for l in out.stdout.splitlines()]
    streamed = [d["event"] for d in docs[:-1]]
    assert streamed and streamed == docs[-1]["events"]
    assert [r["keyword"] for r in read_log(log)] == [e["keyword"] for e in streamed]

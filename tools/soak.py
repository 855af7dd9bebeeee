"""Soak test (issue 11): hours of replay at full speed, then real-time `listen` through a fake input device.

    python tools/soak.py                         # 1 h of audio replayed at maximum speed + 10 min of live listening
    python tools/soak.py --replay-hours 0.05 --listen-minutes 0.5 --interval 2      # a quick try

Both phases run the real command-line code paths in this process: `spotter replay` (cli.main, every file opened,
streamed and closed, events logged) and `spotter listen` (cli.listen on a MicSource whose PortAudio stream is
replaced by a fake that plays a synthesized call through the callback at the real-time rate, as in the tests).
Every --interval seconds a sampler records resident memory, thread count and open file descriptors. It fails (exit 1)
if, after warm-up, memory grows by more than --rss-growth-mb, or threads or descriptors are higher at the end of a
phase than at its start. Prints one line per sample and a JSON summary; --csv writes the samples.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALL_TEXTS = ("Allô, les pompiers ? Il y a un incendie dans mon immeuble.", "Ça sent le gaz dans l'escalier.",
              "Mon voisin a fait un malaise, il ne respire plus.", "On vient de subir un cambriolage.",
              "Je ne sais pas quoi faire, venez vite s'il vous plaît.")
FAKE_RATE = 44100
FAKE_BLOCK = 441                       # 10 ms callbacks, as a sound card would deliver
FAKE_DEVICES = [{"index": 0, "name": "soak fake input", "channels": 1, "default_samplerate": float(FAKE_RATE),
                 "default": True}]


# --- process figures ---------------------------------------------------------------------------------------------
def proc_figures() -> dict:
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1), "threads": int(fields["Threads"]),
            "fds": len(os.listdir("/proc/self/fd"))}


class Sampler:
    """Samples proc_figures() every `interval` s from its own thread, tagged with the current phase."""

    def __init__(self, interval: float):
        self.interval, self.samples, self.phase = interval, [], "start"
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def sample(self) -> dict:
        s = {"t_s": round(time.monotonic() - self._t0, 1), "phase": self.phase, **proc_figures()}
        self.samples.append(s)
        print(f"{s['t_s']:8.1f} s  {s['phase']:<7} rss {s['rss_mb']:7.1f} MB  threads {s['threads']:3d}  "
              f"fds {s['fds']:3d}", file=sys.stderr, flush=True)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- inputs --------------------------------------------------------------------------------------------------------
def make_call(folder: Path) -> Path:
    """About 25 s of espeak-ng French speech with keywords, over low noise, 8 kHz like a telephone recording."""
    from scipy.signal import resample_poly
    from spotter.audio import write_wav
    from spotter.demo import espeak
    rng = np.random.default_rng(0)
    gap = np.zeros(8000, np.float32)
    parts = []
    for i, text in enumerate(CALL_TEXTS):
        parts += [espeak(text, voice="fr", pitch=40 + 10 * i), gap]
    x = np.concatenate(parts)
    x = 0.5 * x / np.max(np.abs(x)) + 0.005 * rng.standard_normal(x.size).astype(np.float32)
    path = folder / "soak_call_8k.wav"
    write_wav(path, resample_poly(x, 1, 2).astype(np.float32), 8000)
    return path


def fake_input_stream(signal: np.ndarray):
    """A stand-in for sounddevice.InputStream: plays `signal` (looped) through the callback at the real-time rate."""

    class FakeInputStream:
        def __init__(self, *, device, samplerate, channels, dtype, callback, finished_callback=None, **_):
            self.callback, self.finished_callback = callback, finished_callback
            self.indata = np.zeros((FAKE_BLOCK, 1), np.float32)
            self._stop = threading.Event()
            self.thread = threading.Thread(target=self._run, name="fake-portaudio", daemon=True)

        def _run(self):
            i, k, t0 = 0, 0, time.monotonic()
            while not self._stop.is_set():
                if i + FAKE_BLOCK > len(signal):
                    i = 0
                self.indata[:, 0] = signal[i:i + FAKE_BLOCK]
                self.callback(self.indata, FAKE_BLOCK, None, None)
                i += FAKE_BLOCK
                k += 1
                delay = t0 + k * FAKE_BLOCK / FAKE_RATE - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

        def start(self):
            self.thread.start()

        def stop(self):
            self._stop.set()
            self.thread.join()
            if self.finished_callback:
                self.finished_callback()

        def close(self):
            pass

    return FakeInputStream


# --- phases --------------------------------------------------------------------------------------------------------
def replay_phase(call: Path, model: str, log: Path, hours: float) -> dict:
    from spotter import cli
    from spotter.audio import open_audio
    duration = open_audio(call).duration_s
    n = max(1, math.ceil(hours * 3600 / duration))
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        # the first stage's batch path, as issue 11 soaks it (with the verify extra the cascade is replay's default)
        code = cli.main(["replay", "--no-verify", "--model", model, "--log", str(log), *[str(call)] * n])
    wall = time.monotonic() - t0
    return {"files": n, "audio_s": round(n * duration, 1), "wall_s": round(wall, 1),
            "speed_x": round(n * duration / wall, 1), "exit": code}


def listen_phase(call: Path, model_path: str, log: Path, minutes: float) -> dict:
    import soundfile as sf
    from scipy.signal import resample_poly
    from spotter import cli
    from spotter.sources import MicSource
    x, rate = sf.read(call, dtype="float32")
    g = math.gcd(FAKE_RATE, rate)
    signal = resample_poly(x, FAKE_RATE // g, rate // g).astype(np.float32)
    source = MicSource(devices=FAKE_DEVICES, stream_factory=fake_input_stream(signal))
    model = cli._load(model_path)
    events_log = cli._open_log(log, model)
    stop = threading.Event()
    timer = threading.Timer(minutes * 60, stop.set)
    timer.daemon = True                 # never keeps the process alive after a failure
    timer.start()
    t0 = time.monotonic()
    try:
        with open(os.devnull, "w") as devnull:
            code = cli.listen(source, model, events_log, stop=stop, out=devnull)
    finally:
        timer.cancel()
    stats = source.stats
    return {"wall_s": round(time.monotonic() - t0, 1), "exit": code, "device_overflows": stats.device_overflows,
            "ring_overruns": stats.ring_overruns}


# --- verdict -------------------------------------------------------------------------------------------------------
def judge(samples: list[dict], phase: str, rss_growth_mb: float) -> dict:
    """Growth within one phase, after its first quarter (warm-up: model load, caches, first allocations)."""
    s = [x for x in samples if x["phase"] == phase]
    if len(s) < 4:
        return {"phase": phase, "samples": len(s), "ok": False, "why": "too few samples"}
    body = s[len(s) // 4:]
    head, tail = body[:max(1, len(body) // 4)], body[-max(1, len(body) // 4):]
    rss_start = float(np.median([x["rss_mb"] for x in head]))
    rss_end = float(np.max([x["rss_mb"] for x in tail]))
    t = np.array([x["t_s"] for x in body])
    slope = float(np.polyfit(t - t[0], [x["rss_mb"] for x in body], 1)[0] * 3600) if len(body) > 2 else 0.0
    out = {"phase": phase, "samples": len(s), "rss_mb_first": s[0]["rss_mb"], "rss_mb_after_warmup": rss_start,
           "rss_mb_end_max": rss_end, "rss_mb_peak": max(x["rss_mb"] for x in s), "rss_slope_mb_per_h": round(slope, 1),
           "threads_after_warmup": body[0]["threads"], "threads_end": s[-1]["threads"],
           "threads_max": max(x["threads"] for x in s), "fds_after_warmup": body[0]["fds"], "fds_end": s[-1]["fds"],
           "fds_max": max(x["fds"] for x in s)}
    why = []
    if rss_end - rss_start > rss_growth_mb:
        why.append(f"RSS grew {rss_end - rss_start:.1f} MB after warm-up")
    if s[-1]["threads"] > body[0]["threads"]:
        why.append(f"threads {body[0]['threads']} -> {s[-1]['threads']}")
    if s[-1]["fds"] > body[0]["fds"]:
        why.append(f"fds {body[0]['fds']} -> {s[-1]['fds']}")
    out["ok"], out["why"] = not why, "; ".join(why)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replay-hours", type=float, default=1.0, help="audio hours replayed at maximum speed")
    ap.add_argument("--listen-minutes", type=float, default=10.0, help="minutes of real-time listening")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--rss-growth-mb", type=float, default=25.0, help="allowed RSS growth after warm-up")
    ap.add_argument("--model", default=str(ROOT / "models" / "default.pt"))
    ap.add_argument("--csv", type=Path, help="write the samples here")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="spotter-soak-") as tmp:
        tmp = Path(tmp)
        call = make_call(tmp)
        sampler = Sampler(args.interval)
        sampler.sample()
        sampler.start()
        sampler.phase = "replay"
        replay = replay_phase(call, args.model, tmp / "replay.jsonl", args.replay_hours)
        sampler.sample()
        sampler.phase = "listen"
        listen = listen_phase(call, args.model, tmp / "listen.jsonl", args.listen_minutes)
        sampler.sample()
        sampler.stop()
        from spotter.eventlog import read_log
        logged = {"replay": len(read_log(tmp / "replay.jsonl")), "listen": len(read_log(tmp / "listen.jsonl"))}
    verdicts = [judge(sampler.samples, "replay", args.rss_growth_mb), judge(sampler.samples, "listen",
                                                                              args.rss_growth_mb)]
    if args.csv:
        keys = list(sampler.samples[0])
        args.csv.write_text("\n".join([",".join(keys)] + [",".join(str(s[k]) for k in keys)
                                                          for s in sampler.samples]) + "\n")
    ok = all(v["ok"] for v in verdicts) and replay["exit"] == 0 and listen["exit"] == 0
    print(json.dumps({"ok": ok, "replay": replay, "listen": listen, "events_logged": logged, "verdicts": verdicts},
                     indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

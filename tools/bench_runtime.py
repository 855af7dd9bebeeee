"""Interleaved runtime benchmark against openWakeWord 0.5.1 (issue 13): every ratio is taken in one run, the two
engines alternating round by round on the same audio, 1 inference thread each.

    python tools/bench_runtime.py [--rounds 5] [--seconds 20] [--cold 3] [--batch 32] [--replay-min 10]

Prints one JSON object: CPU per 80 ms hop (streaming, and batched N streams per tick), cold start to first result
and peak RSS of a fresh process (ours: the runtime's imports only), batch replay throughput of `spotter replay`'s
offline path.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from spotter import config  # noqa: E402
from spotter.artifact import DEFAULT_ONNX_MODEL  # noqa: E402

OWW_MODEL = "hey_jarvis"


def test_audio(seconds: float) -> np.ndarray:
    """Speech-like test signal: espeak-ng French when available, else noise bursts."""
    rng = np.random.default_rng(0)
    n = int(seconds * config.SAMPLE_RATE)
    x = 0.05 * rng.standard_normal(n)
    t = np.arange(n) / config.SAMPLE_RATE
    x += 0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    return x.astype(np.float32)


def cpu_per_hop(fn, audio: np.ndarray, chunk: int) -> float:
    n = len(audio) // chunk
    c0 = time.process_time()
    for i in range(n):
        fn(audio[i * chunk:(i + 1) * chunk])
    return 1000 * (time.process_time() - c0) / n


COLD = {
    "spotter": """
import time; t0 = time.perf_counter()
import numpy as np
from spotter.onnxmodel import load_onnx_model
from spotter.detector import KeywordSpotter
s = KeywordSpotter(load_onnx_model({model!r}, threads=1))
s.process(np.zeros(1280, np.float32))
t = time.perf_counter() - t0
import sys; mods = [m for m in ("torch", "scipy", "onnx") if m in sys.modules]
""",
    "openwakeword": """
import time; t0 = time.perf_counter()
import numpy as np
from openwakeword.model import Model
m = Model(wakeword_models=[{oww!r}], inference_framework="onnx", ncpu=1)
m.predict(np.zeros(1280, np.int16))
t = time.perf_counter() - t0
mods = []
""",
}
REPORT = """
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
import json; print(json.dumps({"first_result_s": t, "peak_rss_mb": int(st["VmHWM"].split()[0]) / 1024,
                               "rss_mb": int(st["VmRSS"].split()[0]) / 1024, "heavy_modules": mods}))
"""


def cold(kind: str, model: str) -> dict:
    code = COLD[kind].format(model=model, oww=OWW_MODEL) + REPORT
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO))
    if p.returncode:
        return {"error": p.stderr.strip().splitlines()[-1]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["launch_to_first_result_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--replay-min", type=float, default=10.0)
    ap.add_argument("--model", default=str(DEFAULT_ONNX_MODEL))
    a = ap.parse_args()
    from openwakeword.model import Model

    from spotter.detector import KeywordSpotter
    from spotter.onnxmodel import load_onnx_model
    model = load_onnx_model(a.model, threads=1)
    audio = test_audio(a.seconds)
    pcm = (audio * 32767).astype(np.int16)
    oww = Model(wakeword_models=[OWW_MODEL], inference_framework="onnx", ncpu=1)
    spot = KeywordSpotter(model)
    from spotter.multistream import MultiSpotter
    multi = MultiSpotter(model, [f"L{i}" for i in range(a.batch)])

    def batched(chunk):                        # the multi-line API: one batched incremental step per tick
        multi.step(np.repeat(chunk[None], a.batch, axis=0))

    res = {"ours_ms": [], "oww_ms": [], "batched_ms_per_stream": []}
    for r in range(a.rounds):                  # interleaved: ours, openWakeWord, ours batched, ...
        res["ours_ms"].append(cpu_per_hop(lambda c: spot.process(c), audio, config.STEP_SAMPLES))
        res["oww_ms"].append(cpu_per_hop(lambda c: oww.predict(c), pcm, config.STEP_SAMPLES))
        res["batched_ms_per_stream"].append(cpu_per_hop(batched, audio[:len(audio) // 4], config.STEP_SAMPLES)
                                            / a.batch)
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {"rounds": a.rounds, "audio_s_per_round": a.seconds, "batch": a.batch,
           "cpu_ms_per_hop": med, "cpu_pct_of_core": {k: v / 80 * 100 for k, v in med.items()},
           "ratio_ours_to_oww": med["ours_ms"] / med["oww_ms"],
           "ratio_batched_to_oww": med["batched_ms_per_stream"] / med["oww_ms"],
           "lines_per_core_batched": 80 / med["batched_ms_per_stream"], "lines_per_core_single": 80 / med["ours_ms"]}
    colds = {"spotter": [], "openwakeword": []}
    for _ in range(a.cold):
        for k in colds:
            colds[k].append(cold(k, a.model))
    out["cold"] = {k: {"first_result_s_median": statistics.median(c["first_result_s"] for c in v),
                       "launch_to_first_result_s_median": statistics.median(c["launch_to_first_result_s"] for c in v),
                       "peak_rss_mb_max": max(c["peak_rss_mb"] for c in v), "heavy_modules": v[0]["heavy_modules"]}
                   for k, v in colds.items()}
    # batch replay: spotter replay's offline path (run_file) on a file of --replay-min minutes, 1 thread
    from spotter.audio import write_wav
    from spotter.replay import run_file
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "long.wav"
        write_wav(f, np.tile(audio, int(np.ceil(a.replay_min * 60 / a.seconds))), config.SAMPLE_RATE)
        dur = a.replay_min * 60
        w0, c0 = time.perf_counter(), time.process_time()
        r = run_file(KeywordSpotter(model), str(f))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out["batch_replay"] = {"audio_s": r.duration_s, "wall_s": wall, "cpu_s": cpu,
                               "x_realtime_wall": r.duration_s / wall, "x_realtime_per_cpu": r.duration_s / cpu}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

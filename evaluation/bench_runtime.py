"""The runtime half of `spotter bench` (issue 13's targets): what the operator's install costs, measured against
openWakeWord 0.5.1 in the same run so that the ratios hold on a shared, noisy machine.

* CPU per 80 ms hop, in rounds that alternate the engines on the same audio: the runtime's single stream (the ONNX
  model in a KeywordSpotter), openWakeWord's own `Model.predict`, and N lines batched in one MultiSpotter tick.
  Lines per core = 80 ms / CPU per stream-hop.
* Cold start: a fresh interpreter to its first result, the runtime (onnxruntime + numpy, no torch) and
  openWakeWord alternated; peak RSS of that process.
* Install: the size on disk of the runtime's dependency closure (what `pip install .` adds, no extra), and whether
  it holds CUDA libraries.
* Archive scan: `spotter scan --workers 2` of files on disk, launch to end (start-up included).
* TARGETS: each figure beside issue 13's target.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from spotter import config
from spotter.audio import write_wav

HOP_MS = 1000 * config.STEP_S                     # 80 ms
OWW_MODEL = "hey_jarvis"                          # the openWakeWord model run beside ours (one wake word)
COLD_TIMEOUT_S = 300
SCAN_TIMEOUT_S = 1800
CUDA_PREFIXES = ("nvidia-", "torch", "triton")    # distributions that would mean GPU libraries in the install

# issue 13's targets: key -> (measure, target text, test on the measured value)
TARGETS = {
    "cpu_ratio_batched": ("CPU per stream, batched, to openWakeWord's", "<= 0.25x", lambda v: v <= 0.25),
    "lines_per_core": ("concurrent live lines per core", ">= 150", lambda v: v >= 150),
    "cold_start_s": ("cold start to first result", "<= 0.3 s", lambda v: v <= 0.3),
    "rss_mb": ("runtime peak RSS", "<= 120 MB", lambda v: v <= 120),
    "install_mb": ("operator install, no CUDA libraries", "<= 1 GB", lambda v: v <= 1024),
    "scan_x_realtime": ("archive scan / batch replay, 2 cores", ">= 300x real time", lambda v: v >= 300),
    "latency_p50_s": ("latency after keyword end, p50", "<= 0.20 s", lambda v: v <= 0.20),
    "latency_p95_s": ("latency after keyword end, p95", "<= 0.35 s", lambda v: v <= 0.35),
}


def _cpu_ms_per_hop(fn, frames: list) -> float:
    c0 = time.process_time()
    for f in frames:
        fn(f)
    return 1000 * (time.process_time() - c0) / len(frames)


def interleaved_cpu(onnx_path: Path, audio: np.ndarray, rounds: int, lines: int) -> dict:
    """CPU ms per 80 ms hop: ours (one stream), openWakeWord, ours batched over `lines` lines, round by round."""
    from openwakeword.model import Model

    from spotter.detector import KeywordSpotter
    from spotter.multistream import MultiSpotter
    from spotter.onnxmodel import load_onnx_model
    model = load_onnx_model(onnx_path, threads=1)
    frames = [audio[i:i + config.STEP_SAMPLES] for i in range(0, audio.size - config.STEP_SAMPLES + 1,
                                                                 config.STEP_SAMPLES)]
    pcm = [(np.clip(f, -1, 1) * 32767).astype(np.int16) for f in frames]
    batch = [np.repeat(f[None], lines, axis=0) for f in frames[:max(1, len(frames) // 4)]]
    single, multi = KeywordSpotter(model), MultiSpotter(model, [f"L{i}" for i in range(lines)])
    oww = Model(wakeword_models=[OWW_MODEL], inference_framework="onnx", ncpu=1)
    for f, p in zip(frames[:12], pcm[:12]):                       # warm-up, untimed
        single.process(f)
        oww.predict(p)
    multi.step(batch[0])
    got = {"ours": [], "openwakeword": [], "ours_batched_per_stream": []}
    for _ in range(rounds):
        got["ours"].append(_cpu_ms_per_hop(single.process, frames))
        got["openwakeword"].append(_cpu_ms_per_hop(oww.predict, pcm))
        got["ours_batched_per_stream"].append(_cpu_ms_per_hop(multi.step, batch) / lines)
    med = {k: statistics.median(v) for k, v in got.items()}
    return {"rounds": rounds, "audio_s_per_round": len(frames) * config.STEP_S, "lines": lines,
            "openwakeword_model": OWW_MODEL, "cpu_ms_per_hop": med, "per_round": got,
            "ratio_single_to_openwakeword": med["ours"] / med["openwakeword"],
            "ratio_batched_to_openwakeword": med["ours_batched_per_stream"] / med["openwakeword"],
            "lines_per_core_batched": HOP_MS / med["ours_batched_per_stream"],
            "lines_per_core_single": HOP_MS / med["ours"], "lines_per_core_openwakeword": HOP_MS / med["openwakeword"]}


COLD = {
    # the runtime's path: onnxruntime and numpy only, the stream primed as the live spotter primes it
    "ours": """
import time; t0 = time.perf_counter()
import numpy as np
from spotter.onnxmodel import load_onnx_model
from spotter.detector import KeywordSpotter
s = KeywordSpotter(load_onnx_model({onnx!r}, threads=1))
s.process(np.zeros(1280, np.float32))
t = time.perf_counter() - t0
import sys; heavy = [m for m in ("torch", "scipy", "onnx") if m in sys.modules]
""",
    "openwakeword": """
import time; t0 = time.perf_counter()
import numpy as np
from openwakeword.model import Model
m = Model(wakeword_models=[{oww!r}], inference_framework="onnx", ncpu=1)
m.predict(np.zeros(1280, np.int16))
t = time.perf_counter() - t0
heavy = []
""",
}
# VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the forking benchmark process's own peak
COLD_REPORT = """
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
import json; print(json.dumps({"first_result_s": t, "peak_rss_mb": int(st["VmHWM"].split()[0]) / 1024,
                               "heavy_modules": heavy}))
"""


def cold_once(kind: str, onnx_path: Path, pycache: Path) -> dict:
    """One fresh interpreter to its first result: the time inside it (interpreter start excluded), launch to exit,
    peak RSS. Bytecode goes to `pycache` (written by a first, untimed run), as an installed package has it."""
    code = COLD[kind].format(onnx=str(onnx_path), oww=OWW_MODEL) + COLD_REPORT
    repo = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(OMP_NUM_THREADS="1", PYTHONPYCACHEPREFIX=str(pycache),
               PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo,
                           timeout=COLD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {COLD_TIMEOUT_S} s"}
    if p.returncode:
        lines = p.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {p.returncode}"}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["launch_to_exit_s"] = time.perf_counter() - t0
    return out


def cold_starts(onnx_path: Path, repeats: int, work: Path) -> dict:
    runs = {"ours": [], "openwakeword": []}
    for kind in runs:                              # untimed: compiles the bytecode
        cold_once(kind, onnx_path, work / "pycache")
    for _ in range(repeats):                       # alternated
        for kind in runs:
            runs[kind].append(cold_once(kind, onnx_path, work / "pycache"))
    out = {}
    for kind, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out[kind] = {"error": rs[0]["error"]}
            continue
        out[kind] = {"first_result_s": statistics.median(r["first_result_s"] for r in ok),
                     "launch_to_exit_s": statistics.median(r["launch_to_exit_s"] for r in ok),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "heavy_modules": ok[0]["heavy_modules"],
                     "runs": len(ok)}
    return out


def _requirement_name(req: str) -> str | None:
    """The distribution a Requires-Dist line names, or None when it is only for an extra."""
    if re.search(r"""extra\s*==""", req):
        return None
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return m.group(1) if m else None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_size(dist_name: str = "spotter") -> dict:
    """Bytes on disk of `dist_name` and everything it requires without extras (recursively), from the installed
    distributions' file lists; the closure's names; whether any of them is a CUDA / torch distribution."""
    seen, todo, size, missing = set(), [dist_name], 0, []
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        for f in dist.files or ():
            p = Path(f.locate())
            if p.is_file() and not p.is_symlink():
                size += p.stat().st_size
        todo += [n for n in map(_requirement_name, dist.requires or ()) if n]
    cuda = sorted(n for n in seen if n.startswith(CUDA_PREFIXES))
    return {"distributions": sorted(seen - set(missing)), "not_installed": missing, "mb": size / 2 ** 20,
            "cuda_or_torch": cuda}


def _spotter_command() -> list[str]:
    script = Path(sys.executable).with_name("spotter")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from spotter.cli import main; main()"]


def scan_throughput(onnx_path: Path, audio: np.ndarray, work: Path, files: int, file_s: float,
                    workers: int = 2) -> dict:
    """`spotter scan DIR --workers N` on `files` files of `file_s` seconds (audio tiled), launch to end."""
    d = work / "scan_files"
    d.mkdir(parents=True, exist_ok=True)
    n = int(file_s * config.SAMPLE_RATE)
    tiled = np.tile(audio, -(-n // audio.size))[:n]
    for old in d.glob("*.wav"):                   # files of another size (a quick run's) are not part of this scan
        if not old.name.endswith(f"-{n}.wav"):
            old.unlink()
    for i in range(files):
        path = d / f"call{i:03d}-{n}.wav"
        if not path.is_file():
            write_wav(path, np.roll(tiled, i * config.STEP_SAMPLES * 7))
    results = work / "scan_results.jsonl"
    results.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPOTTER_LOG": str(work / "scan_events.jsonl")}
    cmd = _spotter_command() + ["scan", str(d), "--out", str(results), "--workers", str(workers), "--model",
                                str(onnx_path)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=SCAN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {SCAN_TIMEOUT_S} s"}
    wall = time.perf_counter() - t0
    if p.returncode:
        lines = p.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {p.returncode}"}
    recs = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    audio_s = sum(r.get("duration_s", 0.0) for r in recs)
    compute = sum(r.get("compute_s", 0.0) for r in recs)
    return {"files": len(recs), "errors": sum("error" in r for r in recs), "workers": workers, "audio_s": audio_s,
            "wall_s": wall, "x_realtime": audio_s / wall, "x_realtime_per_worker_compute": audio_s / compute
            if compute else None}


def run_runtime(onnx_path: Path, audio: np.ndarray, work: Path, quick: bool) -> dict:
    """Every runtime figure; `quick` is the CI size (seconds, not minutes)."""
    rounds, seconds, lines, cold_n, scan_files, scan_s = (1, 4.0, 4, 1, 2, 20.0) if quick else \
        (5, 20.0, 32, 3, 8, 120.0)
    cpu_audio = np.tile(audio, -(-int(seconds * config.SAMPLE_RATE) // audio.size))[:int(seconds * config.SAMPLE_RATE)]
    return {"cpu": interleaved_cpu(onnx_path, cpu_audio, rounds, lines),
            "cold_start": cold_starts(onnx_path, cold_n, work),
            "install": install_size(),
            "scan": scan_throughput(onnx_path, audio, work, scan_files, scan_s)}


def target_rows(runtime: dict, latency: dict) -> list[tuple[str, str, str, bool | None]]:
    """(measure, target, measured, met) for each of issue 13's targets (met is None when not measured)."""
    cpu, cold, inst, scan = runtime["cpu"], runtime["cold_start"].get("ours", {}), runtime["install"], runtime["scan"]
    lat = latency.get("total_s", {})
    values = {
        "cpu_ratio_batched": (cpu["ratio_batched_to_openwakeword"],
                              f"{cpu['ratio_batched_to_openwakeword']:.2f}x ({cpu['lines']} lines: "
                              f"{cpu['cpu_ms_per_hop']['ours_batched_per_stream']:.2f} ms per stream-hop against "
                              f"{cpu['cpu_ms_per_hop']['openwakeword']:.2f} ms)"),
        "lines_per_core": (cpu["lines_per_core_batched"],
                           f"{cpu['lines_per_core_batched']:.0f} batched, {cpu['lines_per_core_single']:.0f} one "
                           f"stream per call (openWakeWord {cpu['lines_per_core_openwakeword']:.0f})"),
        "cold_start_s": (cold.get("first_result_s"),
                         f"{cold.get('first_result_s', float('nan')):.2f} s (launch to exit "
                         f"{cold.get('launch_to_exit_s', float('nan')):.2f} s; openWakeWord "
                         f"{runtime['cold_start'].get('openwakeword', {}).get('first_result_s', float('nan')):.2f} s)"),
        "rss_mb": (cold.get("peak_rss_mb"), f"{cold.get('peak_rss_mb', float('nan')):.0f} MB, heavy modules "
                                           f"imported: {', '.join(cold.get('heavy_modules') or []) or 'none'}"),
        "install_mb": (inst["mb"] if not inst["cuda_or_torch"] else float("inf"),
                       f"{inst['mb']:.0f} MB in {len(inst['distributions'])} distributions; CUDA/torch: "
                       f"{', '.join(inst['cuda_or_torch']) or 'none'}"),
        "scan_x_realtime": (scan.get("x_realtime"),
                            f"{scan.get('x_realtime', float('nan')):.0f}x ({scan.get('audio_s', 0):.0f} s of audio in "
                            f"{scan.get('wall_s', float('nan')):.1f} s, {scan.get('workers')} workers, start-up "
                            f"included; {scan.get('x_realtime_per_worker_compute') or float('nan'):.0f}x per worker "
                            "while computing)"),
        "latency_p50_s": (lat.get("p50"), f"{lat['p50']:.2f} s" if lat.get("p50") is not None else "n/a"),
        "latency_p95_s": (lat.get("p95"), f"{lat['p95']:.2f} s" if lat.get("p95") is not None else "n/a"),
    }
    rows = []
    for key, (measure, target, test) in TARGETS.items():
        v, text = values[key]
        rows.append((measure, target, text, None if v is None else bool(test(v))))
    return rows


def targets_markdown(runtime: dict, latency: dict) -> str:
    out = ["| measure | target (issue 13) | measured | |", "|---|---|---|---|"]
    for measure, target, text, met in target_rows(runtime, latency):
        out.append(f"| {measure} | {target} | {text} | {'n/a' if met is None else 'met' if met else 'missed'} |")
    return "\n".join(out)

"""End-to-end benchmark (`spotter bench`): detection quality on synthetic calls and keyword-free hours, call-level
service suggestions, latency, and cost side by side with openWakeWord; writes bench.json, det.png and BENCH.md.

Data (evaluation/bench_data.py, seeded, clips cached): synthetic calls by held-out voices with keywords at known
times under channel conditions (clean, telephone GSM, telephone + background noise at 20/10/5 dB SNR), keyword-free
synthetic streams (2.5 h in the full run, about half of it speech), and the real non-keyword speech of
../shared/data/speech.

Event level: posteriors are computed once per stream in batch (streams.stream_posteriors, equal to the live
KeywordSpotter's), then the live decision rule (detector.Decider) runs per threshold. A detection is a hit when its
decision time (the stream time of the step that emits it, KeywordSpotter's Event.detected_s) falls inside
[keyword start, keyword end + streams.HIT_TOLERANCE_S], one hit per occurrence (streams.score_stream); any other
detection is a false alarm.
Call level: CallAssessment fed with the call's events; the suggestion at call end must be the call's true service
(bench_data.true_service), calls without keyword must end with no suggestion; delay = decision time of the first
event after which the suggestion is the true service, minus the end of the call's first keyword.
Latency: the real KeywordSpotter on a subset of calls: keyword end -> Event.detected_s (algorithmic), plus the
measured compute time of one 80 ms step.
Cost: CPU seconds per audio second of one live stream (1 thread) for the torch path, the ONNX export and
openWakeWord's own streaming pipeline on the same audio. Runtime (evaluation/bench_runtime.py): CPU interleaved with
openWakeWord, batched lines per core, cold start and peak RSS, install size, archive scan throughput, each beside
issue 13's target.
"""
from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from spotter import config
from spotter.detector import STEP_S, CallAssessment, Decider, Decision, Event, KeywordSpotter, decide_sequence
from spotter.model import default_model_path, file_sha256, load_model

from . import bench_data as bd
from . import bench_runtime
from .det import plot_det
from .evaluate import FA_POINTS, frr_at
from .streams import HIT_TOLERANCE_S, score_stream, stream_posteriors

log = logging.getLogger("evaluation.bench")

BENCH_VERSION = 1
OWW_MODEL = bench_runtime.OWW_MODEL  # openWakeWord bundled model run side by side (one wake word model)
OWW_CHUNK = config.STEP_SAMPLES     # 1280 samples, openWakeWord's native 80 ms frame
LATENCY_CONDITION = "tel"           # channel of the live latency runs and of the cost audio
WARMUP_STEPS = 12                   # steps run before timing a live stream
# Common thresholds of the DET sweep: dense near 1, where calibrated thresholds and <= 1 FA/h live (below 0.5 the
# false alarms run into the thousands per hour and only cost time).
SWEEP_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.993, 0.995,
              0.997, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 0.99995, 0.99999)
POSTERIOR_CHUNK_STEPS = 500         # stream_posteriors batch: bounded memory, small overlap overhead (15 / 500)


@dataclass(frozen=True)
class MeasureSize:
    latency_calls: int              # calls (with keywords) replayed through the live KeywordSpotter
    cost_audio_s: float             # audio per live cost measurement (>= 60 s in the full run)


FULL_MEASURE = MeasureSize(latency_calls=8, cost_audio_s=120.0)
QUICK_MEASURE = MeasureSize(latency_calls=1, cost_audio_s=8.0)


# --- small helpers ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _phase(timings: dict, name: str):
    t0 = time.perf_counter()
    log.info("bench: %s ...", name)
    yield
    timings[name] = round(time.perf_counter() - t0, 1)
    log.info("bench: %s done in %.1f s", name, timings[name])


def _pct(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def _round(x, nd: int = 6):
    """Floats to nd significant digits (recursively) for the JSON file (6: the sweep's thresholds go to 0.99999)."""
    if isinstance(x, float):
        return float(f"{x:.{nd}g}") if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, nd) for v in x]
    if isinstance(x, np.generic):
        return _round(x.item(), nd)
    return x


def detector_config(model, thresholds: dict) -> config.DetectorConfig:
    return config.DetectorConfig(**{**model.detector.to_dict(), "thresholds": dict(thresholds)})


def common_thresholds(th: float) -> dict:
    return {k: float(th) for k in config.KEYWORDS}


# --- decisions with their decision step -------------------------------------------------------------------
def timed_decisions(posteriors: np.ndarray, cfg: config.DetectorConfig, first_step: int = 1) -> list[tuple[Decision, int]]:
    """detector.decide_sequence, paired with the step at which each decision is taken (its time = step * STEP_S)."""
    return [(d, d.step) for d in decide_sequence(posteriors, cfg, first_step)]


def fast_decisions(posteriors: np.ndarray, cfg: config.DetectorConfig) -> list[tuple[Decision, int]]:
    """timed_decisions over a whole stream (detector.decide_sequence itself skips the steps that cannot change
    a decision, so this is the same call; kept as the benchmark's name for it)."""
    return timed_decisions(posteriors, cfg)


def score_decisions(decisions: list[tuple[Decision, int]], notes: list, tolerance_s: float = HIT_TOLERANCE_S) -> dict:
    """streams.score_stream, the one hit rule (it matches each decision's step, the live Event.detected_s)."""
    return score_stream([d for d, _ in decisions], notes, tolerance_s)


# --- batch posteriors (optionally in worker processes) ---------------------------------------------------
_WORKER: dict = {}


def _init_worker(model_path: str, data_dir: str | None) -> None:
    torch.set_num_threads(1)
    _WORKER["model"] = load_model(model_path)
    _WORKER["noise"] = bd.NoiseSource(Path(data_dir) / "noise" if data_dir else None)


def _posteriors_job(job: tuple) -> np.ndarray:
    audio, condition, seed, key = job
    x = bd.conditioned(audio, condition, _WORKER["noise"], seed, *key) if condition else audio
    return stream_posteriors(_WORKER["model"], x, chunk_steps=POSTERIOR_CHUNK_STEPS)


def compute_posteriors(jobs: list[tuple], model, noise: bd.NoiseSource, model_path: Path, data_dir: Path | None,
                       workers: int) -> list[np.ndarray]:
    """Posteriors of every (clean audio, condition, seed, key) job, in order; workers > 1 uses processes."""
    if workers <= 1:
        _WORKER.update(model=model, noise=noise)
        return [_posteriors_job(j) for j in jobs]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, _init_worker, (str(model_path), str(data_dir) if data_dir else None)) as pool:
        return pool.map(_posteriors_job, jobs, chunksize=1)


# --- event level ------------------------------------------------------------------------------------------
@dataclass
class Streams:
    """Everything the metrics need: posteriors per call and condition, negatives, real speech."""
    calls: list                       # bench_data.Call
    conditions: tuple
    call_post: dict                   # (call index, condition) -> posteriors
    neg_post: list                    # (posteriors, condition, hours)
    real_post: np.ndarray | None
    real_hours: float

    @property
    def neg_hours(self) -> float:
        return sum(h for _, _, h in self.neg_post)


def _zero() -> dict:
    return {k: 0 for k in config.KEYWORDS}


def event_counts(s: Streams, cfg: config.DetectorConfig) -> dict:
    """Hits, occurrences and false alarms per keyword: per condition in calls, per condition in negatives, in real
    speech; plus the calls' decisions (for the call-level metrics)."""
    out = {"calls": {}, "negatives": {c: _zero() for c in s.conditions}, "real": _zero(), "decisions": {}}
    for cond in s.conditions:
        hits, occ, fa = _zero(), _zero(), _zero()
        for call in s.calls:
            dets = fast_decisions(s.call_post[(call.index, cond)], cfg)
            out["decisions"][(call.index, cond)] = dets
            res = score_decisions(dets, call.notes)
            for n in call.notes:
                occ[n.keyword] += 1
            for kw, *_ in res["hits"]:
                hits[kw] += 1
            for kw, *_ in res["false_alarms"]:
                fa[kw] += 1
        out["calls"][cond] = {"hits": hits, "occurrences": occ, "false_alarms": fa}
    for post, cond, _ in s.neg_post:
        for d, _ in fast_decisions(post, cfg):
            out["negatives"][cond][d.keyword] += 1
    if s.real_post is not None:
        for d, _ in fast_decisions(s.real_post, cfg):
            out["real"][d.keyword] += 1
    return out


def summarize_events(counts: dict, s: Streams) -> dict:
    """Recall per keyword / condition / overall, FA/h on negatives (per keyword and condition) and real speech."""
    per_cond, tot_hits, tot_occ = {}, _zero(), _zero()
    call_hours = sum(c.duration_s for c in s.calls) / 3600
    for cond, c in counts["calls"].items():
        hits, occ = sum(c["hits"].values()), sum(c["occurrences"].values())
        per_cond[cond] = {"recall": _ratio(hits, occ), "hits": hits, "occurrences": occ,
                          "false_alarms_in_calls": sum(c["false_alarms"].values()),
                          "false_alarms_in_calls_per_hour": _ratio(sum(c["false_alarms"].values()), call_hours),
                          "recall_per_keyword": {k: _ratio(c["hits"][k], c["occurrences"][k]) for k in config.KEYWORDS}}
        for k in config.KEYWORDS:
            tot_hits[k] += c["hits"][k]
            tot_occ[k] += c["occurrences"][k]
    neg_fa = {k: sum(counts["negatives"][c][k] for c in counts["negatives"]) for k in config.KEYWORDS}
    neg_hours_by = {c: sum(h for _, cc, h in s.neg_post if cc == c) for c in counts["negatives"]}
    n_fa = sum(neg_fa.values())
    real_fa = sum(counts["real"].values())
    return {
        "recall": _ratio(sum(tot_hits.values()), sum(tot_occ.values())),
        "hits": sum(tot_hits.values()), "occurrences": sum(tot_occ.values()),
        "recall_per_keyword": {k: _ratio(tot_hits[k], tot_occ[k]) for k in config.KEYWORDS},
        "occurrences_per_keyword": tot_occ,
        "per_condition": per_cond,
        "negatives": {"false_alarms": n_fa, "hours": s.neg_hours, "fa_per_hour": _ratio(n_fa, s.neg_hours),
                      "fa_per_hour_per_keyword": {k: _ratio(neg_fa[k], s.neg_hours) for k in config.KEYWORDS},
                      "per_condition": {c: {"false_alarms": sum(v.values()), "hours": neg_hours_by[c],
                                            "fa_per_hour": _ratio(sum(v.values()), neg_hours_by[c])}
                                        for c, v in counts["negatives"].items()}},
        "real_speech": ({"false_alarms": real_fa, "hours": s.real_hours, "fa_per_hour": _ratio(real_fa, s.real_hours),
                         "false_alarms_per_keyword": {k: v for k, v in counts["real"].items() if v}}
                        if s.real_post is not None else None),
    }


def sweep(s: Streams, model, grid=SWEEP_GRID) -> dict:
    """Common-threshold sweep: FRR per condition and overall vs FA/h on the negative streams (and real speech)."""
    pts = {"overall": [], **{c: [] for c in s.conditions}}
    real = []
    for th in grid:
        summ = summarize_events(event_counts(s, detector_config(model, common_thresholds(th))), s)
        fa_h = summ["negatives"]["fa_per_hour"] or 0.0
        pts["overall"].append({"threshold": float(th), "fa_per_hour": fa_h,
                               "frr": 1 - summ["recall"] if summ["recall"] is not None else None})
        for c in s.conditions:
            r = summ["per_condition"][c]["recall"]
            pts[c].append({"threshold": float(th), "fa_per_hour": fa_h, "frr": 1 - r if r is not None else None})
        real.append(summ["real_speech"]["fa_per_hour"] if summ["real_speech"] else None)
    frr = {name: {str(f): frr_at([p for p in p_list if p["frr"] is not None], f) for f in FA_POINTS}
           for name, p_list in pts.items()}
    return {"grid": [float(g) for g in grid], "points": pts, "real_speech_fa_per_hour": real,
            "frr_at_fa_per_hour": frr}


# --- call level -------------------------------------------------------------------------------------------
def call_outcome(call: bd.Call, decisions: list[tuple[Decision, int]], min_evidence: float) -> dict:
    """Final suggestion of a call, and when the suggestion first became the true service."""
    ca = CallAssessment(min_evidence)
    first_correct = None
    for d, step in sorted(decisions, key=lambda x: x[1]):
        t = step * STEP_S
        ca.add(Event(d.keyword, config.KEYWORD_SERVICE[d.keyword], d.score, 0.0, 0.0, t, 0.0))
        sug = ca.suggestion()
        if first_correct is None and call.service and sug is not None and sug.service == call.service:
            first_correct = t
    final = ca.suggestion()
    final_service = final.service if final else None
    delay = first_correct - call.notes[0].end_s if first_correct is not None and call.notes else None
    return {"final": final_service, "correct": final_service == call.service, "delay_s": delay}


def call_metrics(s: Streams, decisions: dict, min_evidence: float) -> dict:
    out = {}
    for cond in s.conditions:
        outcomes = [(c, call_outcome(c, decisions[(c.index, cond)], min_evidence)) for c in s.calls]
        kw = [o for c, o in outcomes if c.service]
        mixed = [o for c, o in outcomes if c.mixed]
        none = [o for c, o in outcomes if not c.service]
        delays = [o["delay_s"] for o in kw if o["delay_s"] is not None]
        out[cond] = {"service_accuracy": _ratio(sum(o["correct"] for o in kw), len(kw)), "calls_with_keywords": len(kw),
                     "mixed_service_accuracy": _ratio(sum(o["correct"] for o in mixed), len(mixed)),
                     "mixed_service_calls": len(mixed),
                     "no_keyword_calls_without_suggestion": _ratio(sum(o["correct"] for o in none), len(none)),
                     "no_keyword_calls": len(none),
                     "delay_s": {"p50": _pct(delays, 50), "p95": _pct(delays, 95), "n": len(delays)}}
    kw_all = sum(out[c]["calls_with_keywords"] for c in out)
    correct = sum((out[c]["service_accuracy"] or 0) * out[c]["calls_with_keywords"] for c in out)
    out["overall"] = {"service_accuracy": _ratio(correct, kw_all)}
    return out


# --- live latency -----------------------------------------------------------------------------------------
def live_latency(model, items: list[tuple[np.ndarray, list, list]]) -> dict:
    """The real KeywordSpotter on (audio, notes, batch decisions) items, fed 80 ms at a time: keyword end ->
    Event.detected_s for every hit, compute time of each step, and whether the live events equal the batch
    decisions (compared before the end-of-stream flush, whose silence padding the batch streams do not have)."""
    spotter = KeywordSpotter(model)
    hop_ms, lat, n_events, agree = [], [], 0, True
    for audio, notes, batch in items:
        spotter.reset()
        events = []
        for i in range(0, len(audio) - config.STEP_SAMPLES + 1, config.STEP_SAMPLES):
            t0 = time.perf_counter()
            events += spotter.process(audio[i:i + config.STEP_SAMPLES]).events
            hop_ms.append(1000 * (time.perf_counter() - t0))
        live = [(e.keyword, int(round(e.detected_s / STEP_S))) for e in events]
        agree &= live == [(d.keyword, step) for d, step in batch if step <= spotter.step]
        events += spotter.flush()
        n_events += len(events)
        res = score_stream([Decision(e.keyword, e.score, int(round(e.detected_s / STEP_S))) for e in events], notes)
        lat += [h[3] for h in res["hits"]]
    algo50, algo95 = _pct(lat, 50), _pct(lat, 95)
    c50, c95 = _pct(hop_ms, 50), _pct(hop_ms, 95)
    return {"calls": len(items), "events": n_events, "hits": len(lat),
            "algorithmic_s": {"p50": algo50, "p95": algo95, "max": max(lat) if lat else None},
            "compute_per_step_ms": {"p50": c50, "p95": c95},
            "total_s": {"p50": algo50 + c50 / 1000 if algo50 is not None else None,
                        "p95": algo95 + c95 / 1000 if algo95 is not None else None},
            "live_equals_batch": agree}


# --- cost ---------------------------------------------------------------------------------------------------
def stream_cost(step, audio: np.ndarray, chunk: int = config.STEP_SAMPLES) -> dict:
    """Feed audio chunk by chunk to step(chunk); CPU seconds (process_time) per audio second and per-hop wall
    time, after WARMUP_STEPS untimed chunks."""
    chunks = [audio[i:i + chunk] for i in range(0, len(audio) - chunk + 1, chunk)]
    for c in chunks[:WARMUP_STEPS]:
        step(c)
    timed = chunks[WARMUP_STEPS:]
    hops = []
    cpu0 = time.process_time()
    for c in timed:
        t0 = time.perf_counter()
        step(c)
        hops.append(1000 * (time.perf_counter() - t0))
    cpu = time.process_time() - cpu0
    audio_s = len(timed) * chunk / config.SAMPLE_RATE
    return {"audio_s": audio_s, "cpu_s": cpu, "cpu_s_per_audio_s": cpu / audio_s,
            "hop_ms": {"p50": _pct(hops, 50), "p95": _pct(hops, 95), "max": max(hops)},
            "realtime_factor": audio_s / (sum(hops) / 1000)}


def openwakeword_model():
    """openWakeWord 0.5.1's own streaming Model with one bundled ONNX model; onnxruntime gets 1 thread (its
    AudioFeatures sets intra/inter-op threads from ncpu=1 and its model sessions use 1 thread)."""
    from openwakeword.model import Model
    return Model(wakeword_models=[OWW_MODEL], inference_framework="onnx", ncpu=1)


def live_costs(model, onnx_path: Path, audio: np.ndarray) -> dict:
    """CPU per audio second of one live stream: torch KeywordSpotter, ONNX step + Decider, openWakeWord."""
    from training.export import OnnxStepRunner
    torch.set_num_threads(1)
    spotter = KeywordSpotter(model)
    torch_post = []

    def torch_step(c):
        torch_post.extend(spotter.process(c).posteriors)

    out = {"torch": stream_cost(torch_step, audio)}
    runner, decider = OnnxStepRunner(onnx_path, threads=1), Decider(model.detector)
    onnx_post = []
    n = [0]

    def onnx_step(c):
        p = runner.step(c)
        n[0] += 1
        decider.update(p, n[0])
        onnx_post.append(p)

    out["onnx"] = stream_cost(onnx_step, audio)
    m = min(len(torch_post), len(onnx_post))
    out["onnx_vs_torch_max_abs_posterior_diff"] = float(np.max(np.abs(np.array(torch_post[:m]) - np.array(onnx_post[:m]))))
    try:
        oww = openwakeword_model()
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        out["openwakeword"] = stream_cost(lambda c: oww.predict(c), pcm, OWW_CHUNK)
        out["openwakeword"]["model"] = OWW_MODEL
    except Exception as exc:  # openWakeWord missing or broken: reported, the rest of the bench stands
        out["openwakeword"] = {"error": f"{type(exc).__name__}: {exc}"}
    oww_cpu = out["openwakeword"].get("cpu_s_per_audio_s")
    out["torch_to_openwakeword_cpu_ratio"] = _ratio(out["torch"]["cpu_s_per_audio_s"], oww_cpu)
    out["onnx_to_openwakeword_cpu_ratio"] = _ratio(out["onnx"]["cpu_s_per_audio_s"], oww_cpu)
    return out


def onnx_export(model_path: Path, cache: Path) -> Path:
    """The model's ONNX step graph (training.export), cached by the artifact's hash."""
    from training.export import export_onnx
    out = cache / "onnx" / f"{file_sha256(model_path)[:16]}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.onnx")
        export_onnx(model_path, tmp)
        os.replace(tmp, out)
    return out


# --- machine ------------------------------------------------------------------------------------------------
def machine_info() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 ** 2
    versions = {}
    for mod in ("numpy", "torch", "onnxruntime", "openwakeword"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            versions[mod] = version(mod)
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(mem_gb, 1) if mem_gb else None, "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


# --- plots and report --------------------------------------------------------------------------------------
def _f(x, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def _pc(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _frr_text(sw: dict, fa: str) -> str:
    """FRR at fa FA/h, or why there is none: the sweep's lowest false-alarm point."""
    frr = sw["frr_at_fa_per_hour"]["overall"][fa]
    if frr is not None:
        return _pc(frr)
    low = min(sw["points"]["overall"], key=lambda p: (p["fa_per_hour"], p["threshold"]))
    return (f"not reached: the highest threshold ({low['threshold']:g}) still gives {low['fa_per_hour']:.2f} FA/h "
            f"(FRR {_pc(low['frr'])})")


def readme_table(bench_json) -> str:
    """The headline Markdown table of a bench.json (a dict, or the path of the file), for README.md."""
    b = json.loads(Path(bench_json).read_text()) if isinstance(bench_json, (str, os.PathLike)) else bench_json
    m, d, ev, cl = b["machine"], b["data"], b["events"], b["calls"]
    cal, lat, cost = ev["calibrated"], b["latency"], b["cost"]
    neg, real = cal["negatives"], cal["real_speech"]
    t, o, w = cost["live"]["torch"], cost["live"]["onnx"], cost["live"]["openwakeword"]
    rt = b["runtime"]
    rcpu, cold, scan = rt["cpu"], rt["cold_start"], rt["scan"]
    delays = [cl[c]["delay_s"]["p50"] for c in d["conditions"] if cl[c]["delay_s"]["p50"] is not None]
    svc = ", ".join(f"{c} {_pc(cl[c]['service_accuracy'])}" for c in d["conditions"])
    rows = [
        ("date", b["date"]),
        ("machine", f"{m['cpu']}, {m['cores']} cores (load average at start {m['load_average_at_start'][0]})"),
        ("command", f"`{b['command']}`"),
        ("model", f"{b['model']['name']} (sha256 {b['model']['sha256'][:12]})"),
        ("data", f"{d['calls']} calls ({d['call_minutes']:.1f} min, {d['keyword_occurrences']} keywords) x "
                 f"{len(d['conditions'])} conditions; {neg['hours']:.2f} h keyword-free synthetic speech; "
                 + (f"{real['hours'] * 60:.1f} min real speech; " if real else "no real speech found; ")
                 + f"{len(d['voices'])} held-out voices"),
        ("event recall, calibrated thresholds", f"{_pc(cal['recall'])} overall; " + ", ".join(
            f"{c} {_pc(cal['per_condition'][c]['recall'])}" for c in d["conditions"])),
        ("FRR at 0.5 FA/h (common threshold)", _frr_text(ev["sweep"], "0.5")),
        ("FA/h, keyword-free synthetic speech", f"{_f(neg['fa_per_hour'])} ({neg['false_alarms']} in {neg['hours']:.2f} h)"),
        ("FA/h, real speech", "n/a" if not real else
         f"{_f(real['fa_per_hour'])} ({real['false_alarms']} in {real['hours'] * 60:.1f} min: 1 FA = "
         f"{1 / real['hours']:.1f} FA/h)"),
        ("service correct at call end", f"{_pc(cl['overall']['service_accuracy'])} ({svc})"),
        ("no-keyword calls without suggestion", ", ".join(
            f"{c} {_pc(cl[c]['no_keyword_calls_without_suggestion'])}" for c in d["conditions"])),
        ("delay to correct service, p50", "n/a" if not delays else
         f"{np.median(delays):.2f} s after the first keyword ends (median over conditions; "
         f"{min(delays):.2f} to {max(delays):.2f} s)"),
        ("latency keyword end -> event, p50 / p95", f"{_f(lat['total_s']['p50'])} / {_f(lat['total_s']['p95'])} s "
         f"(algorithmic {_f(lat['algorithmic_s']['p50'])} / {_f(lat['algorithmic_s']['p95'])} s + compute "
         f"{_f(lat['compute_per_step_ms']['p50'], '.1f')} / {_f(lat['compute_per_step_ms']['p95'], '.1f')} ms)"),
        ("CPU per live stream (1 thread)", f"torch {_pc(t['cpu_s_per_audio_s'])} of a core, ONNX "
         f"{_pc(o['cpu_s_per_audio_s'])}, openWakeWord {_pc(w.get('cpu_s_per_audio_s'))}"),
        ("ratio to openWakeWord (CPU)", f"torch x{_f(cost['live']['torch_to_openwakeword_cpu_ratio'])}, ONNX "
         f"x{_f(cost['live']['onnx_to_openwakeword_cpu_ratio'])}"),
        ("compute per 80 ms hop, p50 / p95", f"torch {_f(t['hop_ms']['p50'], '.1f')} / {_f(t['hop_ms']['p95'], '.1f')} ms, "
         f"ONNX {_f(o['hop_ms']['p50'], '.1f')} / {_f(o['hop_ms']['p95'], '.1f')} ms"),
        ("runtime CPU per stream, interleaved with openWakeWord (1 thread)",
         f"one stream {_f(rcpu['cpu_ms_per_hop']['ours'])} ms per hop, {rcpu['lines']} lines batched "
         f"{_f(rcpu['cpu_ms_per_hop']['ours_batched_per_stream'])} ms per stream-hop, openWakeWord "
         f"{_f(rcpu['cpu_ms_per_hop']['openwakeword'])} ms (ratios x{_f(rcpu['ratio_single_to_openwakeword'])}, "
         f"x{_f(rcpu['ratio_batched_to_openwakeword'])})"),
        ("concurrent live lines per core", f"{_f(rcpu['lines_per_core_batched'], '.0f')} batched, "
         f"{_f(rcpu['lines_per_core_single'], '.0f')} one stream per call, openWakeWord "
         f"{_f(rcpu['lines_per_core_openwakeword'], '.0f')}"),
        ("archive scan (`spotter scan`, 2 workers)", "n/a" if "error" in scan else
         f"{_f(scan['x_realtime'], '.0f')}x real time ({scan['audio_s']:.0f} s of audio in {scan['wall_s']:.1f} s, "
         "start-up included)"),
        ("cold start, interpreter to first result", ", ".join(
            f"{k} {_f(v.get('first_result_s'))} s" for k, v in cold.items())),
        ("peak RSS of that process", ", ".join(f"{k} {_f(v.get('peak_rss_mb'), '.0f')} MB" for k, v in cold.items())),
        ("operator install (runtime dependency closure)", f"{_f(rt['install']['mb'], '.0f')} MB, CUDA/torch: "
         f"{', '.join(rt['install']['cuda_or_torch']) or 'none'}"),
        ("ONNX vs torch", f"max posterior difference {_f(cost['live']['onnx_vs_torch_max_abs_posterior_diff'], '.1e')}; "
         f"CPU x{_f(_ratio(o['cpu_s_per_audio_s'], t['cpu_s_per_audio_s']))} of torch"),
    ]
    lines = ["| benchmark | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def bench_markdown(b: dict) -> str:
    """BENCH.md: the headline table, per-condition and per-keyword tables, and how it was measured."""
    d, ev, cl = b["data"], b["events"], b["calls"]
    cal, sw = ev["calibrated"], ev["sweep"]
    out = [f"# Benchmark — {b['model']['name']}", "", readme_table(b), "", "## Per condition (calibrated thresholds)", "",
           "| condition | recall | hits / keywords | false alarms in calls | FRR at 0.5 FA/h | service correct | "
           "no-keyword calls without suggestion | delay p50 / p95 |", "|---|---|---|---|---|---|---|---|"]
    for c in d["conditions"]:
        pc, cc = cal["per_condition"][c], cl[c]
        out.append(f"| {c} | {_pc(pc['recall'])} | {pc['hits']} / {pc['occurrences']} | {pc['false_alarms_in_calls']} | "
                   f"{_pc(sw['frr_at_fa_per_hour'][c]['0.5'])} | {_pc(cc['service_accuracy'])} | "
                   f"{_pc(cc['no_keyword_calls_without_suggestion'])} | {_f(cc['delay_s']['p50'])} / "
                   f"{_f(cc['delay_s']['p95'])} s |")
    out += ["", "## Per keyword (all conditions, calibrated thresholds)", "",
            "| keyword | service | threshold | occurrences | recall | FA/h keyword-free |", "|---|---|---|---|---|---|"]
    for k in config.KEYWORDS:
        out.append(f"| {k} | {config.KEYWORD_SERVICE[k]} | {b['model']['thresholds'][k]:.2f} | "
                   f"{cal['occurrences_per_keyword'][k]} | {_pc(cal['recall_per_keyword'][k])} | "
                   f"{_f(cal['negatives']['fa_per_hour_per_keyword'][k])} |")
    out += ["", "## FRR at fixed false-alarm rates (common threshold sweep)", "",
            "| curve | " + " | ".join(f"{f} FA/h" for f in FA_POINTS) + " |", "|---|" + "---|" * len(FA_POINTS)]
    for name, v in sw["frr_at_fa_per_hour"].items():
        out.append(f"| {name} | " + " | ".join("not reached" if v[str(f)] is None else _pc(v[str(f)])
                                               for f in FA_POINTS) + " |")
    neg = d["negative"]
    real = d["real_speech"]
    out += ["", "![DET](det.png)", "", "## Method", "",
            f"- Voices: {', '.join(d['voices'])} ({d['voice_source']}).",
            f"- Calls: {d['calls']} synthetic calls, {d['call_seconds']['min']:.0f}-{d['call_seconds']['max']:.0f} s, "
            f"{d['keyword_occurrences']} keywords, {d['no_keyword_calls']} without keyword, {d['mixed_service_calls']} "
            "with one keyword of another service. Keyword sentences are synthesized in parts (words before, the "
            "keyword, words after) and joined, so keyword times are exact, but each keyword is its own utterance "
            "(easier than fluent speech). True service = majority service of the call's keywords, ties to the first "
            "keyword's.",
            f"- Conditions: clean 16 kHz; `tel` = 8 kHz band-pass 300-3400 Hz + GSM 06.10 round trip; `tel+noiseN` = "
            f"background noise at N dB SNR (relative to the active speech level) before the channel. Noise: {d['noise']}.",
            f"- Keyword-free synthetic speech: {neg['hours']:.2f} h in {neg['streams']} streams, pauses and noise "
            f"segments included ({neg['unique_clips']} distinct clips = {neg['unique_speech_minutes']} min of speech; "
            f"segments {neg['segments']}), conditions cycled over the streams; near-miss words included.",
            ("- Real speech: " + (f"{real['speech_minutes']:.1f} min in {real['files']} files of {real['root']} "
                                  f"({real['minutes_by_folder']}): the only real speech here, so its FA/h is coarse "
                                  "(one false alarm is worth several FA/h)." if real else "not found (skipped).")),
            f"- Hit: decision time (stream time of the step emitting the event) inside [keyword start, keyword end + "
            f"{b['hit_tolerance_s']} s], one hit per occurrence; every other detection is a false alarm. Posteriors are "
            "computed once per stream in batch (equal to the live spotter's) and the live decision rule runs per "
            "threshold. DET / FRR at N FA/h: one threshold for all keywords swept over "
            f"{sw['grid'][0]:g}-{sw['grid'][-1]:g}; FA/h counted on all keyword-free synthetic streams together "
            f"(resolution {1 / max(neg['hours'], 1e-9):.2f} FA/h), FRR on the calls of each condition.",
            f"- Latency: the live KeywordSpotter on {b['latency']['calls']} `{b['latency']['condition']}` calls "
            f"(live events equal batch events: {b['latency']['live_equals_batch']}); compute = wall time of one "
            "80 ms step.",
            f"- Cost: {b['cost']['live']['torch']['audio_s']:.0f} s of `{b['cost']['live']['audio_condition']}` call "
            "audio per live "
            "stream, 1 thread, CPU = time.process_time; openWakeWord 0.5.1 `Model` with its bundled "
            f"`{OWW_MODEL}` ONNX model, 1280-sample int16 chunks, onnxruntime 1 thread.",
            f"- Runtime (issue 13): {b['runtime']['cpu']['rounds']} rounds of {b['runtime']['cpu']['audio_s_per_round']:.0f} s, "
            "each running the runtime's ONNX KeywordSpotter, openWakeWord and a MultiSpotter tick over "
            f"{b['runtime']['cpu']['lines']} lines in turn on the same audio (medians of CPU per hop; lines per core = "
            "80 ms / CPU per stream-hop). Cold start: a fresh `python` from its first statement to the first processed "
            "step (runtime: onnxruntime + numpy, no torch; bytecode compiled once beforehand, as `pip install` does), "
            "alternated with openWakeWord's, median; peak RSS = VmHWM. Install: bytes on disk of the `spotter` "
            "distribution and its requirements without extras, from the installed file lists. Scan: `spotter scan "
            "DIR --workers 2` over files of the call audio, launch to exit.",
            "",
            "## Issue 13's targets",
            "",
            bench_runtime.targets_markdown(b["runtime"], b["latency"]),
            "",
            f"- Timings depend on other load on the machine (load average {b['machine']['load_average_at_start']} at "
            f"start, {b['machine'].get('load_average_at_end')} at end). Phases (s): {b['timings_s']}.", ""]
    return "\n".join(out)


# --- the run --------------------------------------------------------------------------------------------------
def _default_command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "spotter":
        argv[0] = "spotter"
    return shlex.join(argv)


def run_bench(model_path=None, out_dir="bench_out", quick: bool = False, seed: int = 7, cache_dir=None,
              data_dir=None, workers: int | None = None, command: str | None = None, progress: bool = True) -> dict:
    """Generate (or reuse) the benchmark data, measure everything, write bench.json, det.png and BENCH.md."""
    started = datetime.now(timezone.utc)
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else out / "cache"
    data_dir = Path(data_dir) if data_dir else None
    model_path = Path(model_path) if model_path else default_model_path()
    model_sha = file_sha256(model_path)
    model = load_model(model_path)
    size, msize = (bd.QUICK, QUICK_MEASURE) if quick else (bd.FULL, FULL_MEASURE)
    workers = workers or (1 if quick else 2)
    machine = machine_info()
    timings: dict = {}

    with _phase(timings, "data"):
        data = bd.build_bench_data(model, size, seed, cache, data_dir, progress=progress)
    with _phase(timings, "posteriors"):
        jobs = [(c.audio, cond, seed, (0, c.index)) for c in data.calls for cond in size.conditions]
        jobs += [(a, cond, seed, (1, i)) for i, (a, cond) in enumerate(data.negatives)]
        if data.real is not None:
            jobs.append((data.real[0], None, seed, (2,)))
        posts = compute_posteriors(jobs, model, data.noise, model_path, data_dir, workers)
        n_call = len(data.calls) * len(size.conditions)
        streams = Streams(
            calls=data.calls, conditions=size.conditions,
            call_post={(c.index, cond): posts[i * len(size.conditions) + j]
                       for i, c in enumerate(data.calls) for j, cond in enumerate(size.conditions)},
            neg_post=[(posts[n_call + i], cond, a.size / config.SAMPLE_RATE / 3600)
                      for i, (a, cond) in enumerate(data.negatives)],
            real_post=posts[-1] if data.real is not None else None,
            real_hours=data.real[0].size / config.SAMPLE_RATE / 3600 if data.real is not None else 0.0)
    with _phase(timings, "events"):
        counts = event_counts(streams, model.detector)
        calibrated = summarize_events(counts, streams)
        sw = sweep(streams, model)
        calls = call_metrics(streams, counts["decisions"], model.detector.suggestion_min_evidence)
    with _phase(timings, "latency"):
        cond = LATENCY_CONDITION if LATENCY_CONDITION in size.conditions else size.conditions[-1]
        subset = [c for c in data.calls if c.notes][:msize.latency_calls]
        items = [(bd.conditioned(c.audio, cond, data.noise, seed, 0, c.index), c.notes,
                  counts["decisions"][(c.index, cond)]) for c in subset]
        latency = live_latency(model, items)
        latency["condition"] = cond
    with _phase(timings, "cost"):
        need = int((msize.cost_audio_s + WARMUP_STEPS * STEP_S) * config.SAMPLE_RATE)
        pool, have = [], 0
        for c in data.calls:
            if have >= need:
                break
            pool.append(bd.conditioned(c.audio, cond, data.noise, seed, 0, c.index))
            have += pool[-1].size
        cost_audio = np.concatenate(pool)
        cost_audio = np.tile(cost_audio, -(-need // cost_audio.size))[:need]
        onnx_path = onnx_export(model_path, cache)
        live = live_costs(model, onnx_path, cost_audio)
        live["audio_condition"] = cond
    with _phase(timings, "runtime"):
        runtime = bench_runtime.run_runtime(onnx_path, cost_audio, cache / "runtime", quick)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    timings["total"] = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
    result = _round({
        "bench_version": BENCH_VERSION, "date": started.isoformat(timespec="seconds"),
        "command": command or _default_command(), "seed": seed, "quick": quick, "machine": machine,
        "model": {"path": str(model_path), "name": model.name, "sha256": model_sha,
                  "thresholds": model.detector.thresholds, "detector": model.detector.to_dict()},
        "hit_tolerance_s": HIT_TOLERANCE_S, "data": {**data.info, "conditions": list(size.conditions),
                                                     "condition_details": data.info["conditions"]},
        "events": {"calibrated": calibrated, "sweep": sw}, "calls": calls, "latency": latency,
        "cost": {"live": live}, "runtime": runtime, "timings_s": timings,
    })
    (out / "bench.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    cal_miss = None if calibrated.get("recall") is None else 1 - calibrated["recall"]
    plot_det({name: [(p["fa_per_hour"], p["frr"]) for p in pts] for name, pts in sw["points"].items()},
             out / "det.png", "DET, held-out voices, common threshold sweep",
             (calibrated["negatives"]["fa_per_hour"] or 0, cal_miss),
             negatives="keyword-free streams", ylabel="false-reject rate (keywords in calls)")
    (out / "BENCH.md").write_text(bench_markdown(result), encoding="utf-8")
    log.info("bench: wrote %s, %s, %s", out / "bench.json", out / "det.png", out / "BENCH.md")
    print(readme_table(result))
    return result

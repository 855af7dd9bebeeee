"""End-to-end benchmark: `run_bench(quick=True)` on a real model, the benchmark data's keyword times, and the fast
path of the decision rule (must equal the live Decider exactly)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spotter import config
from spotter.model import KeywordModel
from evaluation import bench_data as bd
from evaluation.bench import SWEEP_GRID, fast_decisions, readme_table, run_bench, timed_decisions
from training.texts import keyword_in


@pytest.fixture
def model_path(request, tmp_path_factory) -> Path:
    """The trained test model (conftest's keyword_model_path) when there is one, else a random-head model."""
    try:
        return Path(request.getfixturevalue("keyword_model_path"))
    except pytest.FixtureLookupError:
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("model") / "random-head.pt"
        KeywordModel(meta={"name": "random-head"}).save(path)
        return path


def _unit(x) -> bool:
    return x is None or 0.0 <= x <= 1.0


@pytest.mark.slow
def test_quick_bench_runs_end_to_end_with_sane_numbers(model_path, tmp_path):
    out = tmp_path / "bench"
    result = run_bench(model_path, out, quick=True, seed=7, cache_dir=tmp_path / "cache",
                       command="pytest tests/test_bench.py", progress=False)
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    b = json.loads((out / "bench.json").read_text())
    assert b == json.loads(json.dumps(result))
    assert b["seed"] == 7 and b["quick"] and b["command"] == "pytest tests/test_bench.py"
    assert b["machine"]["cores"] >= 1 and b["machine"]["cpu"]

    d = b["data"]
    assert d["calls"] == 3 and d["conditions"] == ["clean", "tel+noise10"]
    assert d["keyword_occurrences"] >= 3 and d["no_keyword_calls"] == 1 and d["mixed_service_calls"] == 1
    assert d["negative"]["hours"] >= 120 / 3600

    cal = b["events"]["calibrated"]
    assert _unit(cal["recall"]) and cal["occurrences"] == 2 * d["keyword_occurrences"]
    for c in d["conditions"]:
        pc = cal["per_condition"][c]
        assert 0 <= pc["hits"] <= pc["occurrences"] and pc["false_alarms_in_calls"] >= 0
    assert cal["negatives"]["fa_per_hour"] >= 0
    sw = b["events"]["sweep"]
    assert sw["grid"] == list(SWEEP_GRID)
    assert all(_unit(p["frr"]) and p["fa_per_hour"] >= 0 for p in sw["points"]["overall"])
    assert all(_unit(v) for v in sw["frr_at_fa_per_hour"]["overall"].values())

    for c in d["conditions"]:
        calls = b["calls"][c]
        assert _unit(calls["service_accuracy"]) and _unit(calls["no_keyword_calls_without_suggestion"])
        assert calls["calls_with_keywords"] == 2 and calls["no_keyword_calls"] == 1

    lat = b["latency"]
    assert lat["live_equals_batch"] is True            # the live spotter decides exactly what the batch path does
    assert lat["compute_per_step_ms"]["p50"] > 0
    assert lat["algorithmic_s"]["p50"] is None or -0.5 < lat["algorithmic_s"]["p50"] <= 0.8 + 1e-6

    live = b["cost"]["live"]
    for engine in ("torch", "onnx", "openwakeword"):
        assert live[engine]["cpu_s_per_audio_s"] > 0 and live[engine]["hop_ms"]["p50"] > 0
    assert live["onnx_vs_torch_max_abs_posterior_diff"] < 1e-4
    assert live["torch_to_openwakeword_cpu_ratio"] > 0
    rt = b["runtime"]
    cpu = rt["cpu"]
    assert all(v > 0 for v in cpu["cpu_ms_per_hop"].values()) and cpu["lines_per_core_batched"] > 0
    for kind, cold in rt["cold_start"].items():
        assert "error" not in cold, (kind, cold)
        assert 0 < cold["first_result_s"] < cold["launch_to_exit_s"] and cold["peak_rss_mb"] > 0
    assert rt["cold_start"]["ours"]["heavy_modules"] == []          # the runtime imports no torch, scipy, onnx
    assert rt["install"]["mb"] > 0 and rt["install"]["cuda_or_torch"] == [] and "onnxruntime" in rt["install"][
        "distributions"]
    assert "error" not in rt["scan"] and rt["scan"]["errors"] == 0 and rt["scan"]["x_realtime"] > 0

    table = readme_table(out / "bench.json")
    assert table == readme_table(b) and table.startswith("| benchmark | result |")
    assert "FRR at 0.5 FA/h" in table and "openWakeWord" in table
    md = (out / "BENCH.md").read_text()
    assert table in md and "det.png" in md
    from evaluation.bench_runtime import TARGETS
    assert "## Issue 13's targets" in md and all(f"| {measure} | {target} |" in md for measure, target, _ in
                                                 TARGETS.values())


def _planned_call(tmp_path, seed=3):
    model = KeywordModel()
    voices, _ = bd.bench_voices(model, bd.QUICK)
    size = bd.BenchSize(calls=4, call_s=(8.0, 10.0), conditions=("clean",), negative_s=10.0, negative_stream_s=10.0,
                        real_speech_s=0.0, engine_caps={"kokoro": 0}, max_voices=1)
    budget = bd.VoiceBudget(voices[:1], size.engine_caps)
    plans = bd.plan_calls(size, budget, np.random.default_rng(seed))
    negs = bd.plan_negatives(size, voices[:1], budget, np.random.default_rng(seed))
    clips = bd.synthesize_plans(plans, negs, tmp_path / "clips", progress=False)
    return plans, negs, clips


def test_call_keywords_sit_exactly_at_their_annotations(tmp_path):
    plans, _, clips = _planned_call(tmp_path)
    calls = [bd.render_call(p, clips, 60.0, np.random.default_rng(p.index)) for p in plans]
    assert [len(c.notes) for c in calls] == list(bd.KEYWORD_COUNTS[:4])
    for plan, call in zip(plans, calls):
        kw_parts = [p for p in plan.parts if p.keyword]
        assert [n.keyword for n in call.notes] == [p.keyword for p in kw_parts]
        assert call.service == bd.true_service([n.keyword for n in call.notes])
        for note, part in zip(call.notes, kw_parts):
            clip = clips[bd._item(part, plan.voice, plan.speed, plan.pitch)]
            start = round(note.start_s * config.SAMPLE_RATE)
            assert np.array_equal(call.audio[start:start + clip.size], clip)
            assert note.end_s - note.start_s == pytest.approx(clip.size / config.SAMPLE_RATE, abs=1e-6)
    mixed = [c for c in calls if c.mixed]
    assert mixed and all(len({config.KEYWORD_SERVICE[n.keyword] for n in c.notes}) == 2 for c in mixed)
    # conditions keep the length and the timing; noise and channel change the samples
    noise = bd.NoiseSource()
    call = calls[0]
    tel = bd.conditioned(call.audio, "tel+noise5", noise, 7, 0, call.index)
    assert tel.shape == call.audio.shape and not np.array_equal(tel, call.audio)
    assert np.array_equal(tel, bd.conditioned(call.audio, "tel+noise5", noise, 7, 0, call.index))


def test_negative_texts_hold_no_keyword():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        kind, text = bd.negative_text(rng)
        assert keyword_in(text) is None, text
    for kw in config.KEYWORDS:
        for _ in range(20):
            head, spoken, tail = bd.keyword_parts(kw, rng)
            assert keyword_in(spoken) == kw
            assert keyword_in(head) is None and keyword_in(tail) is None, (head, tail)


def test_true_service_is_the_majority_then_the_first():
    assert bd.true_service([]) is None
    assert bd.true_service(["incendie"]) == "18"
    assert bd.true_service(["vol", "malaise"]) == "17"                 # tie -> first keyword
    assert bd.true_service(["gaz", "malaise", "brûlure"]) == "15"       # majority


def _bursty_posteriors(rng: np.random.Generator, steps: int) -> np.ndarray:
    """Posteriors mostly on OTHER, with keyword bursts of random height and length, some close together."""
    n = len(config.LABELS)
    p = rng.dirichlet(np.full(n, 0.3), steps) * 0.2
    p[:, config.LABELS.index(config.OTHER)] += 0.8
    t = 0
    while t < steps:
        t += int(rng.choice([2, 5, 12, 20, 60]))
        k = int(rng.integers(len(config.KEYWORDS)))
        length = int(rng.integers(1, 9))
        height = rng.uniform(0.2, 1.0)
        p[t:t + length, k] += height * 3
        if rng.random() < 0.3:                          # a rival keyword at the same time
            p[t:t + length, (k + 1) % len(config.KEYWORDS)] += rng.uniform(0.2, 1.0) * 3
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("smoothing,refractory", [(3, 1.0), (1, 0.0), (4, 0.5), (2, 2.0)])
def test_fast_decisions_equal_the_decision_rule(smoothing, refractory):
    rng = np.random.default_rng(smoothing)
    post = _bursty_posteriors(rng, 4000)
    counts = {}
    for th in (0.2, 0.35, 0.5, 0.8, 0.97):
        thresholds = {k: float(np.clip(th + rng.normal(0, 0.05), 0.05, 0.99)) for k in config.KEYWORDS}
        cfg = config.DetectorConfig(thresholds=thresholds, smoothing_steps=smoothing, refractory_s=refractory)
        slow = timed_decisions(post, cfg)
        assert fast_decisions(post, cfg) == slow
        assert all(d.peak_step <= step <= d.peak_step + 3 for d, step in slow)   # decided <= 3 steps after the peak
        counts[th] = len(slow)
    assert counts[0.2] > 50 and counts[0.2] >= counts[0.97]

"""Streaming detector: decision rule, incremental computation, event log, call-level suggestion."""
from __future__ import annotations

import json

import numpy as np
import torch

from spotter import config
from spotter.detector import STEP_S, CallAssessment, Event, KeywordSpotter, decide_sequence
from spotter.eventlog import EventLog, read_log
from spotter.model import KeywordModel
from evaluation.streams import stream_posteriors

KW = config.KEYWORDS


def posterior_track(n_steps: int, bumps: dict[int, tuple[str, float, int]]) -> np.ndarray:
    """(n, 14) posteriors: mostly `noise`, with keyword bumps {start_step: (keyword, height, length)}."""
    p = np.zeros((n_steps, len(config.LABELS)), np.float32)
    p[:, config.LABELS.index(config.NOISE)] = 1.0
    for start, (kw, height, length) in bumps.items():
        i = config.LABELS.index(kw)
        for j in range(start, start + length):
            p[j, i] = height
            p[j, config.LABELS.index(config.NOISE)] = 1 - height
    return p


def cfg(th: float = 0.5, **kw) -> config.DetectorConfig:
    return config.DetectorConfig(thresholds={k: th for k in KW}, **kw)


def test_one_utterance_gives_one_event():
    post = posterior_track(100, {20: ("incendie", 0.95, 8)})
    decisions = decide_sequence(post, cfg(smoothing_steps=1))
    assert [d.keyword for d in decisions] == ["incendie"]
    assert decisions[0].score >= 0.9


def test_refractory_merges_close_bumps_but_not_distant_ones():
    close = posterior_track(200, {20: ("gaz", 0.9, 3), 26: ("gaz", 0.9, 3)})
    far = posterior_track(200, {20: ("gaz", 0.9, 3), 80: ("gaz", 0.9, 3)})
    c = cfg(smoothing_steps=1, refractory_s=1.0)
    assert len(decide_sequence(close, c)) == 1
    assert len(decide_sequence(far, c)) == 2


def test_below_threshold_and_smoothing_reject_single_spikes():
    spike = posterior_track(60, {20: ("vol", 0.9, 1)})
    assert decide_sequence(spike, cfg(smoothing_steps=3, th=0.5)) == []
    low = posterior_track(60, {20: ("vol", 0.4, 10)})
    assert decide_sequence(low, cfg(smoothing_steps=1, th=0.5)) == []


def test_an_event_is_decided_within_max_hold_steps_of_crossing():
    post = posterior_track(100, {20: ("incendie", 0.95, 8)})           # above threshold from step 21 to 28
    for hold in (1, 3):
        (d,) = decide_sequence(post, cfg(smoothing_steps=1, max_hold_steps=hold))
        assert d.step == 21 + hold - 1                                  # decide_sequence's first step is 1
    (d,) = decide_sequence(post, cfg(smoothing_steps=1, max_hold_steps=20))
    assert d.step == 29                                                 # one step after it falls back


def test_only_the_top_keyword_fires():
    p = posterior_track(60, {20: ("vol", 0.55, 6)})
    p[20:26, config.LABELS.index("violences")] = 0.45
    p[20:26, config.LABELS.index(config.NOISE)] = 0.0
    decisions = decide_sequence(p, cfg(smoothing_steps=1, th=0.4))
    assert [d.keyword for d in decisions] == ["vol"]


def reference_decisions(post: np.ndarray, c: config.DetectorConfig) -> list:
    """The decision rule written out step by step, its moving average taken with np.mean over the last rows."""
    from collections import deque
    from spotter.detector import Decider
    dec, recent, kw_cols, out = Decider(c), deque(maxlen=c.smoothing_steps), [config.LABELS.index(k) for k in KW], []
    for j, row in enumerate(post):
        recent.append(row[kw_cols])
        out += dec.update_scores(np.mean(recent, axis=0), j + 1)
    return out + dec.finish(len(post) + 1)


def test_chunked_decisions_equal_the_step_by_step_rule():
    """Decider.update_many (batch replay's chunks, calibration's whole streams) decides exactly as one step at a
    time, whatever the chunking, on posteriors that hover around the thresholds."""
    from spotter.detector import Decider
    rng = np.random.default_rng(3)
    for trial in range(12):
        n = 400
        post = 0.2 * rng.dirichlet(np.full(len(config.LABELS), 0.3), size=n)
        for start in rng.integers(0, n - 8, 40):                      # keyword bursts, some overlapping
            post[start:start + rng.integers(1, 9), config.LABELS.index(str(rng.choice(KW)))] += rng.uniform(0.3, 1.0)
        post = (post / post.sum(axis=1, keepdims=True)).astype(np.float32)
        c = cfg(th=float(rng.uniform(0.3, 0.7)), smoothing_steps=int(rng.integers(1, 6)),
                max_hold_steps=int(rng.integers(1, 4)), refractory_s=float(rng.choice([0.0, 0.4, 1.0])))
        ref = reference_decisions(post, c)
        assert ref, "the test posteriors must cross the thresholds"
        assert decide_sequence(post, c) == ref
        dec, got, j = Decider(c), [], 0
        while j < n:
            k = int(rng.integers(1, 40))
            got += dec.update_many(post[j:j + k], j + 1)
            j += k
        assert got + dec.finish(n + 1) == ref


def test_call_assessment_accumulates_and_resets():
    ca = CallAssessment(min_evidence=0.5)
    assert ca.suggestion() is None
    ca.add(Event("incendie", "18", 0.9, 1, 2, 2.2, 0))
    ca.add(Event("gaz", "18", 0.8, 5, 5.4, 5.6, 0))
    ca.add(Event("vol", "17", 0.6, 8, 8.3, 8.5, 0))
    s = ca.suggestion()
    assert s.service == "18" and s.name == "Sapeurs-pompiers"
    assert {e.keyword for e in s.events} == {"incendie", "gaz"}
    assert 0 < s.confidence < 1
    ca.reset()
    assert ca.suggestion() is None


def test_streaming_equals_batch_and_is_chunk_size_independent(speech_wav):
    torch.manual_seed(0)
    model = KeywordModel().eval()
    audio = np.concatenate([speech_wav("Il y a un incendie au troisième étage."), np.zeros(8000, np.float32)])
    offline = stream_posteriors(model, audio)
    sp = KeywordSpotter(model)
    pos, rng, outs = 0, np.random.default_rng(0), []
    while pos < audio.size:                       # irregular chunk sizes, like a sound card
        n = int(rng.integers(100, 3000))
        outs.append(sp.process(audio[pos:pos + n]))
        pos += n
    steps = audio.size // config.STEP_SAMPLES
    assert sp.step == steps
    # each call returns the rows (and mel frames) of the steps it completed, none when it completed none
    posts = np.concatenate([o.posteriors for o in outs])
    assert posts.shape == (steps, len(config.LABELS))
    assert all(len(o.mel) == config.EMBED_STEP * len(o.posteriors) for o in outs)
    np.testing.assert_allclose(posts, offline[:steps], atol=1e-5)
    # one-step-at-a-time gives every row
    sp.reset()
    live = [sp.process(audio[i * config.STEP_SAMPLES:(i + 1) * config.STEP_SAMPLES]).posteriors[0]
            for i in range(steps)]
    np.testing.assert_allclose(np.array(live), offline[:steps], atol=1e-5)


def test_events_are_logged_durably_before_they_are_returned(tmp_path):
    log_path = tmp_path / "events.jsonl"
    log = EventLog(log_path)
    seen_on_disk = []

    def display(event):            # a later sink: the event must already be on disk
        seen_on_disk.append(len(read_log(log_path)))

    ev = Event("malaise", "15", 0.91, 1.0, 1.6, 1.9, 123.0)
    for sink in (log, display):
        sink(ev)
    log.close()
    records = read_log(log_path)
    assert seen_on_disk == [1]
    assert records[0]["keyword"] == "malaise" and records[0]["service"] == "15"
    # a torn last line (crash mid-write) does not hide earlier events
    with open(log_path, "a") as f:
        f.write('{"keyword": "gaz", "scor')
    assert len(read_log(log_path)) == 1
    json.loads(log_path.read_text().splitlines()[0])


def test_stream_times_follow_the_audio():
    torch.manual_seed(0)
    sp = KeywordSpotter(KeywordModel().eval())
    sp.process(np.zeros(16000 * 3, np.float32))
    assert abs(sp.stream_time_s - (16000 * 3 // config.STEP_SAMPLES) * STEP_S) < 1e-9

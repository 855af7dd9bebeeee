"""The Whisper proposer (spotter/whisper_proposer.py): live rows hop by hop equal the whole stream's, the union in
the cascade equals the offline union it was measured as, whatever the blocks the audio comes in.

Real Whisper base on espeak-ng French speech and the shipped Whisper head; skipped cleanly without the `verify`
extra (CI installs it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spotter import verify
from spotter import whisper_proposer as W
from spotter.errors import SpotterError

AVAILABLE, LINE = verify.status()
needs_extra = pytest.mark.skipif(not AVAILABLE, reason=LINE)
SR = W.SR
SENTENCES = ("Allô, il y a un incendie dans la cuisine.", "Mon voisin a fait un malaise dans l'escalier.",
             "Je sens une odeur de gaz chez moi.", "On a été victimes d'une agression dans la rue.")


@pytest.fixture(scope="module")
def call(speech_wav) -> np.ndarray:
    """About 14 s: four caller sentences with keywords, pauses between them (at factor 0.3 the Whisper head alone
    proposes a candidate in the fourth)."""
    gap = np.zeros(int(0.6 * SR), np.float32)
    parts = [np.zeros(int(0.4 * SR), np.float32)]
    for s in SENTENCES:
        parts += [np.asarray(speech_wav(s), np.float32), gap]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def wh() -> W.WhisperHead:
    head = W.default_whisper_head()
    assert head is not None, "models/default.whisper.npz is shipped"
    return head


@pytest.fixture(scope="module")
def verifier():
    return verify.shared_verifier()


def hop_by_hop(wh, enc, audio: np.ndarray, factor: float) -> list:
    live = W.LiveWhisperRows(wh, enc, factor)
    out, ring = [], int(W.RING_S * SR)
    for k in range(1, int(audio.size // SR) + 1):
        out += live.hop(float(k), audio[max(0, k * SR - ring):k * SR], k * SR // 1280)
    out += live.hop(audio.size / SR, audio[-ring:], audio.size // 1280, final=True)
    return out


@needs_extra
def test_live_rows_hop_by_hop_decide_as_the_whole_stream(verifier, wh, call):
    """The rows read one hop at a time (4 s encoded every 1 s, each row 1 s after its audio) and the whole
    stream's rows at once give the same posteriors, hence the same decisions, at a low and the shipped factor."""
    enc = W.open_encoder(verifier)
    for factor in (0.3, verify.CANDIDATE_FACTOR):
        whole = W.whole_stream_decisions(wh, call, enc, factor)
        live = hop_by_hop(wh, enc, call, factor)
        assert whole, "the proposer finds candidates in this call"
        assert [(d.keyword, d.peak_step, d.step) for d in live] == [(d.keyword, d.peak_step, d.step) for d in whole]
        assert [d.score for d in live] == pytest.approx([d.score for d in whole], abs=1e-4)


def test_rows_are_read_a_second_after_their_audio_ends():
    """A row is read off the first window that ends at least DELAY_S after its audio (it hears that much of what
    follows, never less), at least one hop in, and the last rows off the stream's end."""
    ends = np.array([-0.3, 0.0, 0.05, 1.0, 1.01, 2.5, 8.9])
    got = W.live_window_ends(ends, 9.4)
    assert list(got) == [1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 9.4]
    assert np.all(got[:-1] >= ends[:-1] + W.DELAY_S - 1e-9)
    assert list(W.row_ends(np.array([0, W.LEAD_ROWS - 1, W.LEAD_ROWS]))) == pytest.approx([-14 * 0.08, 0.0, 0.08])


def offline_union(model, cfg, wh, enc, audio, factor):
    """The union as tools/whisper_proposer.py measured it: the first stage's candidates over the whole stream, the
    Whisper head's over its whole-stream rows, each Whisper one joined to the first first-stage candidate of its
    keyword within UNION_TOLERANCE_S, else one of its own. (keyword, end, first score, Whisper score), by end."""
    from spotter.detector import KeywordSpotter
    sp = KeywordSpotter(model, detector=verify.candidate_config(cfg, factor))
    first = [[e.keyword, e.end_s, e.score, 0.0] for e in sp.process(audio).events + sp.flush()]
    out = [list(c) for c in first]
    for d in W.whole_stream_decisions(wh, audio, enc, factor):
        ev = W.decision_event(d, {})
        same = [c for c in out[:len(first)] if c[0] == ev.keyword and abs(c[1] - ev.end_s) <= W.UNION_TOLERANCE_S]
        if same:
            same[0][3] = max(same[0][3], ev.score)
        else:
            out.append([ev.keyword, ev.end_s, 0.0, ev.score])
    return sorted(map(tuple, out), key=lambda c: c[1])


@needs_extra
def test_union_cascade_in_any_blocks_is_the_offline_union(verifier, wh, call):
    """VerifiedSpotter with proposer="union", fed in steps, odd blocks or the whole call, verifies exactly the
    offline union's candidates, each once, with both proposers' scores, the verifier's, and the union combiner's
    decision; each comes after both proposers were done with it."""
    from spotter.model import DEFAULT_MODEL, load_model
    from dataclasses import replace
    model = load_model(DEFAULT_MODEL)
    factor = 0.3                                      # many candidates of both proposers
    # a first stage deaf to `gaz` (its candidate threshold above 1), so that the Whisper head proposes one alone
    cfg = replace(model.detector, thresholds={**model.detector.thresholds, "gaz": 1.1 / factor})
    want = offline_union(model, cfg, wh, W.open_encoder(verifier), call, factor)
    assert any(c[2] and c[3] for c in want) and ("gaz", 0.0) in [(c[0], c[2]) for c in want]
    runs = []
    for block in (1280, 7001, call.size):
        got = []
        vs = verify.VerifiedSpotter(model, sinks=[got.append], verifier=verifier, candidate_factor=factor,
                                    proposer="union", whisper_head=wh, detector=cfg)
        assert vs.whisper is wh and "Whisper head proposes" in vs.status_line
        for i in range(0, call.size, block):
            vs.process(call[i:i + block])
        res = vs.flush()
        vs.close()
        assert len(res) == len(got)
        got.sort(key=lambda ve: ve.end_s)
        assert [(ve.keyword, round(ve.end_s, 3)) for ve in got] == [(c[0], round(c[1], 3)) for c in want]
        assert [ve.first_score for ve in got] == pytest.approx([c[2] for c in want], abs=1e-4)
        for ve, c in zip(got, want):
            assert ve.verifier_score is not None and ve.verified in (True, False)
            assert ve.score == (ve.first_score if ve.first_score > 0 else ve.whisper_score)
            assert ve.end_s <= ve.released_s <= call.size / SR + 1e-6
            if ve.whisper_pending:      # released early: accepted whatever the Whisper head added after
                assert ve.verified is True and ve.first_score > 0 and ve.whisper_score <= c[3] + 1e-6
                assert ve.released_s < ve.end_s + W.DELAY_S   # before any Whisper row of its end was read
                assert ve.to_dict()["whisper_pending"] is True
            else:
                assert ve.whisper_score == pytest.approx(c[3], abs=1e-4)
            # the union's decision on both proposers' final scores, as offline
            x = W.union_features(ve.keyword, ve.first_score, c[3], ve.verifier_score, ve.probe_score,
                                 cfg.thresholds, wh.thresholds, vs.combiner.v0)
            assert ve.verified == (float(x @ np.asarray(wh.union_weights)) >= wh.union_threshold)
            assert {"whisper_score", "released_s"} <= ve.to_dict().keys()
        # the call's evidence: every detection at its event score, whenever it was released
        assert sorted(e.score for e in vs.assessment.events) == pytest.approx(
            sorted(c[2] if c[2] else c[3] for ve, c in zip(got, want) if ve.verified), abs=1e-4)
        runs.append([(ve.verifier_score, ve.verified, ve.whisper_pending) for ve in got])
    assert runs[0] == runs[1] == runs[2]
    assert any(p for *_, p in runs[0]), "no candidate released early"


@needs_extra
def test_several_lines_with_the_union_give_each_line_what_one_stream_gives(verifier, wh, call):
    """VerifiedLines with the union (`listen` with several lines): each line has its own Whisper proposer on the
    one Whisper model and gives exactly what VerifiedSpotter gives on that line's audio fed in 80 ms steps: the same
    candidates, scores, decisions, early releases and release times."""
    from dataclasses import replace
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from spotter.onnxmodel import load_onnx_model
    model = load_onnx_model(DEFAULT_ONNX_MODEL)
    factor = 0.3
    model.detector = replace(model.detector, thresholds={**model.detector.thresholds, "gaz": 1.1 / factor})
    other = np.concatenate([np.zeros(int(0.52 * SR), np.float32), call[:call.size // 2]])   # shifted, shorter
    n = max(call.size, other.size) // 1280 + 1
    lines = {"a": np.pad(call, (0, n * 1280 - call.size)), "b": np.pad(other, (0, n * 1280 - other.size))}

    def key(ve):
        return (ve.keyword, round(ve.end_s, 3), round(ve.first_score, 4), round(ve.whisper_score, 4),
                round(ve.verifier_score, 3), ve.verified, ve.whisper_pending, round(ve.released_s, 3))
    want = {}
    for line, audio in lines.items():
        vs = verify.VerifiedSpotter(model, verifier=verifier, candidate_factor=factor, proposer="union",
                                    whisper_head=wh)
        for i in range(0, audio.size, 1280):
            vs.process(audio[i:i + 1280])
        want[line] = sorted(map(key, vs.flush()))
        vs.close()
    vl = verify.VerifiedLines(model, list(lines), verifier=verifier, candidate_factor=factor, proposer="union",
                              whisper_head=wh)
    assert "each of the 2 lines" in vl.status_line
    frames = np.stack(list(lines.values())).reshape(2, n, 1280)
    for t in range(n):
        vl.step(frames[:, t])
    got = vl.flush()
    vl.close()
    for line in lines:
        assert sorted(key(ve) for g, ve in got if g == line) == want[line]
    assert want["a"] and want["b"]
    assert any(k[6] for k in want["a"]) and any(k[3] and not k[2] for k in want["a"])   # early, Whisper alone


def test_the_whisper_floor_is_the_lowest_the_head_can_add(wh):
    """A first-stage candidate is released early only on the union logit with the Whisper head's lowest possible
    feature: 0 if it never joins, else a score at least its candidate threshold; nothing is released early when
    the combiner weighs the Whisper head negatively."""
    cand = {k: 0.8 * t for k, t in wh.thresholds.items()}
    weights = np.asarray(wh.union_weights, float)
    floor = W.whisper_floor(wh, cand, weights)
    for k, t in cand.items():
        at_threshold = W.union_features(k, 0.9, float(np.float32(t)), 0.0, None, {k: 0.9}, wh.thresholds, {})[3]
        assert min(0.0, at_threshold) - 1e-5 < floor[k] <= min(0.0, at_threshold) < 0.0
    assert W.whisper_floor(wh, cand, weights * np.array([1, 1, 1, -1, 1, 1])) is None
    assert W.release_early(wh.union_threshold, wh.union_threshold)
    assert not W.release_early(wh.union_threshold - 1e-9, wh.union_threshold)


@needs_extra
def test_a_failing_whisper_proposer_loses_no_first_stage_candidate(verifier, wh, call, monkeypatch):
    """When Whisper's encoding of the live rows fails, every first-stage candidate still comes out verified (the
    Whisper head's score 0), and the worker says why."""
    from spotter.model import DEFAULT_MODEL, load_model
    model = load_model(DEFAULT_MODEL)

    def broken(_verifier):
        def enc(audio):
            raise RuntimeError("encoder gone")
        return enc
    monkeypatch.setattr(W, "open_encoder", broken)
    got = []
    vs = verify.VerifiedSpotter(model, sinks=[got.append], verifier=verifier, proposer="union", whisper_head=wh)
    for i in range(0, call.size, 4000):
        vs.process(call[i:i + 4000])
    vs.flush()
    error = vs._worker.error
    vs.close()
    first = verify.VerifiedSpotter(model, verifier=verifier, proposer="first")
    first.process(call)
    want = first.flush()
    first.close()
    assert "encoder gone" in error
    assert sorted((ve.keyword, round(ve.end_s, 3)) for ve in got) == sorted((ve.keyword, round(ve.end_s, 3))
                                                                              for ve in want)
    assert all(ve.whisper_score == 0.0 and ve.verifier_score is not None for ve in got)


@needs_extra
def test_union_without_a_whisper_head_is_the_first_stage_cascade(verifier, monkeypatch, tmp_path):
    """No Whisper head for the model (nor a shipped one for the active set): the cascade says so and the first
    stage proposes alone."""
    from spotter.model import DEFAULT_MODEL, load_model
    monkeypatch.setattr(W, "default_whisper_head", lambda *_: None)
    vs = verify.VerifiedSpotter(load_model(DEFAULT_MODEL), verifier=verifier, proposer="union")
    assert vs.whisper is None and "the first stage proposes alone" in vs.status_line
    assert isinstance(vs._worker, verify.VerifyWorker)
    vs.close()


def test_whisper_head_file_problems_are_one_line_errors(tmp_path):
    bad = tmp_path / "x.whisper.npz"
    bad.write_bytes(b"not an npz file")
    with pytest.raises(SpotterError, match=r"x\.whisper\.npz: not a readable Whisper head"):
        W.WhisperHead.load(bad)
    np.savez(bad, header=np.array('{"format": "something else"}'))
    with pytest.raises(SpotterError, match=r"x\.whisper\.npz: not a Whisper head"):
        W.WhisperHead.load(bad)
    np.savez(bad, header=np.array(f'{{"format": "{W.FORMAT}", "keywords": ["alexa"]}}'))
    with pytest.raises(SpotterError, match=r"x\.whisper\.npz: made for keywords \['alexa'\]"):
        W.WhisperHead.load(bad)


def test_the_numpy_head_is_the_trained_torch_head():
    """The runtime's head (numpy, batch norms folded) gives the torch KeywordHead's posteriors, and survives its
    file."""
    from spotter.model import KeywordHead
    torch.manual_seed(0)
    head = KeywordHead(dim=W.WHISPER_DIM)
    for m in head.modules():                         # batch norms with statistics of their own, as trained ones
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    head.eval()
    x = torch.randn(40, 16, W.WHISPER_DIM)
    with torch.no_grad():
        want = torch.softmax(head(x), 1).numpy()
    wh = W.WhisperHead.from_torch(head, {k: 0.5 for k in W.config.KEYWORDS}, 1, [0.0] * 6, 0.0)
    assert wh.posteriors(x.numpy()) == pytest.approx(want, abs=1e-5)


def test_the_proposer_default_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(verify.PROPOSER_ENV, raising=False)
    assert verify.proposer_default() == "union"
    monkeypatch.setenv(verify.PROPOSER_ENV, "first")
    assert verify.proposer_default() == "first"
    monkeypatch.setenv(verify.PROPOSER_ENV, "nonsense")
    assert verify.proposer_default() == "union"

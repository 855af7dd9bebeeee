"""The verifier's keyword probe (spotter/probe.py, trained by training/probe.py): numpy against torch, its file,
and the shipped probe on espeak-ng French speech through the real Whisper encoder."""
from __future__ import annotations

import numpy as np
import pytest

from spotter import config, verify
from spotter.errors import SpotterError
from spotter.probe import CROP_FRAMES, KeywordProbe, crop_frames, probe_path

AVAILABLE, LINE = verify.status()
needs_extra = pytest.mark.skipif(not AVAILABLE, reason=LINE)


def speech_end(a: np.ndarray, sr: int = 16000) -> float:
    n = sr // 100
    e = 10 * np.log10(np.array([np.mean(a[i:i + n] ** 2) + 1e-12 for i in range(0, a.size - n + 1, n)]))
    return float((np.nonzero(e > e.max() - 30)[0][-1] + 1) * n / sr)


def test_numpy_probe_is_the_torch_network():
    """KeywordProbe.logits (numpy, what the runtime runs) gives the trained torch module's logits."""
    torch = pytest.importorskip("torch")
    from training.probe import make_net, to_probe
    torch.manual_seed(3)
    net = make_net().eval()
    with torch.no_grad():                              # non-trivial LayerNorm and biases
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = np.random.default_rng(0).normal(0, 1, (2, CROP_FRAMES // 2, 512)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    probe = to_probe(net)
    got = np.stack([probe.logits(f) for f in x])
    assert np.abs(got - ref).max() < 1e-4


def test_crop_frames_skip_the_leading_silence_and_pool_pairs():
    enc = np.arange(117, dtype=np.float32)[None, :, None] * np.ones((1, 1, 512), np.float32)
    f = crop_frames(enc)
    assert f.shape == (CROP_FRAMES // 2, 512)
    assert f[0, 0] == pytest.approx(15.5) and f[-1, 0] == pytest.approx(15 + CROP_FRAMES - 1.5)


def test_probe_file_round_trip_and_a_bad_file_is_one_line(tmp_path):
    rng = np.random.default_rng(1)
    w = 8
    weights = {"norm_w": np.ones(512), "norm_b": np.zeros(512), "proj_w": rng.normal(0, 0.05, (w, 512)),
               "proj_b": np.zeros(w), "conv_w": rng.normal(0, 0.05, (w, w, 5)), "conv_b": np.zeros(w),
               "att_w": rng.normal(0, 0.1, (1, w)), "att_b": np.zeros(1), "out_w": rng.normal(0, 0.1, (3, w)),
               "out_b": np.zeros(3)}
    p = KeywordProbe(weights, ["alexa", "computer"])
    path = tmp_path / "x.probe.npz"
    p.save(path)
    q = KeywordProbe.load(path)
    x = rng.normal(0, 1, (43, 512)).astype(np.float32)
    assert np.allclose(p.logits(x), q.logits(x))
    assert not q.matches_active_set()                  # the French set is active: another set's probe
    bad = tmp_path / "bad.probe.npz"
    bad.write_bytes(b"not a probe")
    with pytest.raises(SpotterError, match=r"bad\.probe\.npz: not a keyword probe file") as e:
        KeywordProbe.load(bad)
    assert "\n" not in str(e.value)
    assert probe_path("models/default.onnx").name == "default.probe.npz"


def test_shipped_probe_is_the_active_sets_and_sets_the_combiner():
    """models/default.probe.npz holds the French keywords; with it the default combiner takes the probe's
    parameters and threshold, without it the two-opinion ones."""
    probe = verify.default_probe()
    assert probe is not None and probe.keywords == list(config.KEYWORDS)
    with_probe = verify.default_combiner({"gaz": 0.9})
    assert with_probe.probe is probe or with_probe.probe.source == probe.source
    assert with_probe.default_threshold == verify.PROBE_CASCADE_THRESHOLD
    without = verify.default_combiner({"gaz": 0.9}, probe=None)
    assert without.probe is None and without.default_threshold == verify.CASCADE_THRESHOLD
    v0 = verify.DEFAULT_V0["gaz"]
    assert with_probe.combine("gaz", 0.9, v0, 3.0) > with_probe.combine("gaz", 0.9, v0, -3.0)
    assert without.combine("gaz", 0.9, v0, 3.0) == without.combine("gaz", 0.9, v0)


@needs_extra
def test_shipped_probe_hears_the_keyword_in_its_sentence(speech_wav):
    """On espeak-ng's default French voice, each keyword's probe logit is higher on the sentence that says it
    than on sentences that do not (the probe never trained on this exact voice and channel-free take)."""
    ver = verify.shared_verifier()
    probe = verify.default_probe()
    sentences = {"électrocution": "Il y a eu une électrocution.", "effondrement": "Il y a eu un effondrement.",
                 "incendie": "Il y a un incendie.", None: "Il y a eu un accident."}
    audio = {k: np.array(speech_wav(t)) for k, t in sentences.items()}
    wins = 0
    for kw in ("électrocution", "effondrement", "incendie"):
        got = {k: ver.assess(a, [kw], end_s=speech_end(a), probe=probe) for k, a in audio.items()}
        assert all(np.isfinite(g[1][kw]) for g in got.values())
        said = got[kw][1][kw]
        wins += said > max(g[1][kw] for k, g in got.items() if k != kw)
        assert got[kw][0][kw] == pytest.approx(ver.score(audio[kw], [kw], end_s=speech_end(audio[kw]))[kw], abs=1e-4)
    assert wins >= 2


@needs_extra
def test_cascade_events_carry_the_probe_score(speech_wav):
    from spotter.model import DEFAULT_MODEL, load_model
    model = load_model(DEFAULT_MODEL)
    got = []
    # the first stage proposing alone: its combiner reads the probe (the union's: tests/test_whisper_proposer.py)
    vs = verify.VerifiedSpotter(model, sinks=[got.append], verifier=verify.shared_verifier(), candidate_factor=0.05,
                                proposer="first")
    assert vs.combiner.probe is not None
    a = np.concatenate([np.zeros(8000, np.float32), np.array(speech_wav("Il y a un incendie dans la cuisine.")),
                        np.zeros(16000, np.float32)])
    for i in range(0, a.size, 1280):
        vs.process(a[i:i + 1280])
    vs.flush()
    vs.close()
    assert got
    for ve in got:
        assert ve.probe_score is not None and np.isfinite(ve.probe_score)
        assert ve.to_dict()["probe_score"] == pytest.approx(ve.probe_score, abs=1e-3)
        assert ve.combined == pytest.approx(vs.combiner.combine(ve.keyword, ve.first_score, ve.verifier_score,
                                                                ve.probe_score))


@needs_extra
def test_probe_gate_skips_the_decoder_for_what_the_probe_rejects(speech_wav):
    """With the shipped probe and PROBE_GATE, a keyword the sentence does not say is not forced through Whisper's
    decoder (forced score None), while the keyword it says passes the gate with the same forced score as without
    one; the cascade turns a gated candidate into a logged rejection that names the gate."""
    ver, probe = verify.shared_verifier(), verify.default_probe()
    said = np.concatenate([np.array(speech_wav("Il y a un incendie.")), np.zeros(8000, np.float32)])
    other = np.concatenate([np.array(speech_wav("Il y a eu un accident.")), np.zeros(8000, np.float32)])
    forced, logits = ver.assess(said, ["incendie", "gaz"], end_s=speech_end(said), probe=probe,
                                gate=verify.PROBE_GATE)
    assert logits["incendie"] >= verify.PROBE_GATE > logits["gaz"]
    assert forced["gaz"] is None
    assert forced["incendie"] == pytest.approx(ver.score(said, ["incendie"], end_s=speech_end(said))["incendie"],
                                               abs=1e-4)
    forced, logits = ver.assess(other, ["incendie"], end_s=speech_end(other), probe=probe, gate=verify.PROBE_GATE)
    assert forced == {"incendie": None} and logits["incendie"] < verify.PROBE_GATE

    from spotter.detector import Event
    cb = verify.default_combiner({k: 0.9 for k in config.KEYWORDS})
    assert cb.gate == verify.PROBE_GATE
    got = []
    worker = verify.VerifyWorker(ver, cb, lambda tag, ve: got.append(ve))
    ev = Event("incendie", config.KEYWORD_SERVICE["incendie"], 0.95, speech_end(other) - 0.6, speech_end(other),
               speech_end(other), 0.0)
    worker.submit("a", ev, other, speech_end(other))
    worker.join()
    worker.close()
    (ve,) = got
    assert ve.verified is False and ve.verifier_score is None and ve.combined == 0.0
    assert "probe gate" in ve.note and ve.probe_score < verify.PROBE_GATE
    d = ve.to_dict()
    assert d["verifier_score"] is None and d["verified"] is False and "probe gate" in d["verify_note"]
    import io
    from spotter import cli
    buf = io.StringIO()
    cli._print_verified(ve, buf)
    assert "REJECTED" in buf.getvalue() and "not decoded (probe gate)" in buf.getvalue()


def test_combiner_gate_rejects_below_it_and_survives_a_round_trip():
    cb = verify.default_combiner({"gaz": 0.9}, probe=True)
    assert cb.gated(verify.PROBE_GATE - 0.1) and not cb.gated(verify.PROBE_GATE) and not cb.gated(None)
    assert cb.combine("gaz", 0.999, -1.0, verify.PROBE_GATE - 0.1) == 0.0
    assert not cb.accepts("gaz", cb.combine("gaz", 0.999, -1.0, verify.PROBE_GATE - 0.1))
    assert cb.combine("gaz", 0.999, -1.0, 5.0) > 0.5
    assert verify.Combiner.from_dict(cb.to_dict()).gate == verify.PROBE_GATE
    assert verify.default_combiner({"gaz": 0.9}, probe=None).gate is None      # two opinions: no gate


def test_stored_runs_with_probe_logits_are_read_with_the_probe_combiner():
    """training.verify_eval reads a stored run's candidates with the combiner they were measured for: the probe's
    parameters and threshold when they carry probe logits ("p"), the two opinions' otherwise."""
    from training.verify_eval import combined_scores, stored_combiner
    thr = {"gaz": 0.9}
    cands = [{"kw": "gaz", "first": 0.9, "v": -10.0, "y": 1, "p": p} for p in (-4.0, 0.0, 4.0)]
    d = {"cands": cands, "thresholds": thr}
    assert stored_combiner(d).default_threshold == verify.PROBE_CASCADE_THRESHOLD
    s = combined_scores(d)
    assert s[0] < s[1] < s[2]
    for c in cands:
        c.pop("p")
    assert stored_combiner(d).default_threshold == verify.CASCADE_THRESHOLD
    assert len(set(combined_scores(d))) == 1


def test_training_crops_sit_at_the_keyword_and_the_near_miss():
    """training.probe.crop_items: a keyword sentence gives a crop at its keyword's end (its class) and sometimes one
    away from it (none); a near-miss sentence one at the near miss's end claiming the keyword it imitates; other
    speech one anywhere (none)."""
    from training.probe import crop_items, other
    kw_sent = {"keyword": "incendie", "spans": [[1.0, 1.6]], "seconds": 3.0, "text": "Il y a un incendie chez moi."}
    near = {"keyword": None, "spans": [], "seconds": 2.0, "text": "Il y a un incident."}
    plain = {"keyword": None, "spans": [], "seconds": 2.0, "text": "Il fait beau."}
    items = crop_items([kw_sent] * 20 + [near, plain], 0, {"incident": "incendie"})
    pos = [it for it in items if it["kind"] == "positive"]
    assert len(pos) == 20 and all(it["y"] == list(config.KEYWORDS).index("incendie") for it in pos)
    assert all(1.5 <= it["end"] <= 1.75 for it in pos)
    away = [it for it in items if it["kind"] == "away"]
    assert away and all(it["y"] == other() and (it["end"] < 1.15 or it["end"] > 2.2) for it in away)
    nm = [it for it in items if it["kind"] == "near-miss"]
    assert len(nm) == 1 and nm[0]["claim"] == "incendie" and nm[0]["y"] == other()
    assert 0.9 * 2.0 - 0.1 <= nm[0]["end"] <= 2.0 + 0.15
    sp = [it for it in items if it["kind"] == "speech"]
    assert len(sp) == 1 and sp[0]["y"] == other()


def test_the_probe_beside_a_model_file_comes_first(tmp_path):
    """default_probe(model path): the probe `spotter train` wrote beside the model (<model>.probe.npz) when it has
    the active set's keywords, else the shipped one; the cascade's default combiner takes it from the model."""
    shipped = verify.default_probe()
    assert shipped is not None
    KeywordProbe(shipped.w, shipped.keywords).save(tmp_path / "centre.probe.npz")
    mine = verify.default_probe(tmp_path / "centre.pt")
    assert mine.source == str(tmp_path / "centre.probe.npz")
    assert verify.default_combiner({"gaz": 0.9}, model_path=tmp_path / "centre.onnx").probe.source == mine.source
    other = dict(shipped.w, out_w=shipped.w["out_w"][:3], out_b=shipped.w["out_b"][:3])
    KeywordProbe(other, ["alexa", "computer"]).save(tmp_path / "en.probe.npz")     # another set's: not used
    assert verify.default_probe(tmp_path / "en.pt").source == shipped.source
    assert verify.default_probe(tmp_path / "none.pt").source == shipped.source


def test_a_recording_gives_a_positive_crop_per_channel_at_its_speech_end(tmp_path, speech_wav):
    """`spotter train --recordings DIR`: each real clip DIR/<keyword>/*.wav becomes one probe crop per channel,
    the clip between LEAD_S of silence before it and 0.6 s after, the crop ending where its speech ends."""
    import soundfile as sf
    from spotter.probe import LEAD_S
    from training.probe import CHANNELS, item_audio, recording_items
    clip = np.concatenate([np.zeros(4000, np.float32), np.asarray(speech_wav("gaz"), np.float32),
                           np.zeros(8000, np.float32)])
    (tmp_path / "rec" / "gaz").mkdir(parents=True)
    sf.write(tmp_path / "rec" / "gaz" / "take1.wav", clip, 16000)
    items = recording_items([tmp_path / "rec"])
    assert [it["channel"] for it in items] == list(CHANNELS)
    assert all(it["y"] == list(config.KEYWORDS).index("gaz") and it["kind"] == "recording" for it in items)
    audio, end = item_audio(items[0])
    assert audio.size == int(LEAD_S * 16000) + clip.size + int(0.6 * 16000)
    assert abs(end - (LEAD_S + speech_end(clip))) < 0.05
    # the crops' fingerprint: the same files give the same one; a clip recorded again under its name changes it
    from training.probe import fingerprint
    before = fingerprint(items, 0, 0.0, CHANNELS)
    assert fingerprint(recording_items([tmp_path / "rec"]), 0, 0.0, CHANNELS) == before
    sf.write(tmp_path / "rec" / "gaz" / "take1.wav", clip[4000:], 16000)
    assert fingerprint(recording_items([tmp_path / "rec"]), 0, 0.0, CHANNELS) != before


def test_the_cascade_runs_the_probe_beside_its_model_file(tmp_path):
    """A model file with a probe beside it (as `spotter train` leaves them): the cascade around it, from the ONNX
    export or the torch artifact, combines with that probe, not the shipped one."""
    import shutil
    from spotter.model import DEFAULT_MODEL
    from spotter.onnxmodel import load_any
    shipped = verify.default_probe()
    mine = dict(shipped.w, out_b=shipped.w["out_b"] + 0.5)          # another probe of the same keywords
    KeywordProbe(mine, shipped.keywords).save(tmp_path / "centre.probe.npz")
    for suffix in (".onnx", ".pt"):
        shutil.copy(DEFAULT_MODEL.with_suffix(suffix), tmp_path / f"centre{suffix}")
        vs = verify.VerifiedSpotter(load_any(tmp_path / f"centre{suffix}"), verifier=False)
        assert vs.combiner.probe.source == str(tmp_path / "centre.probe.npz")
        vs.close()
    shutil.copy(DEFAULT_MODEL.with_suffix(".onnx"), tmp_path / "other.onnx")            # no probe beside it
    assert verify.VerifiedSpotter(load_any(tmp_path / "other.onnx"), verifier=False).combiner.probe.source == shipped.source

"""The torch-free runtime (issue 13): the exported ONNX model gives the torch model's posteriors and events, the
shipped models/default.onnx is the export of models/default.pt, and replay runs without importing torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spotter import config, frontend, protobuf
from spotter.artifact import DEFAULT_MODEL, DEFAULT_ONNX_MODEL, file_sha256
from spotter.onnxmodel import load_onnx_model, openwakeword_model_path, read_onnx_convs

REPO = Path(__file__).resolve().parent.parent
# onnxruntime and torch run the same float32 convolutions in different orders, and the runtime's numpy log-mel
# (rfft) differs from torch's (DFT matmul) by ~5e-6: posteriors differ by ~3e-6 at most here. Tolerance: 1e-4
# per class and step; events must be the same keywords decided at the same steps, scores within 1e-4.
POSTERIOR_TOLERANCE = 1e-4


def _low_thresholds(model) -> config.DetectorConfig:
    """The model's decision rule with every threshold at 0.15, so that this speech (a voice the weak shipped
    model mostly misses) gives events to compare."""
    d = model.detector.to_dict()
    d["thresholds"] = {k: 0.15 for k in d["thresholds"]}
    return config.DetectorConfig.from_dict(d)


def _events(evs):
    return [(e.keyword, e.detected_s, round(e.start_s, 3), round(e.end_s, 3)) for e in evs]


@pytest.fixture(scope="module")
def exported(keyword_model_path, tmp_path_factory):
    from training.export import export_onnx
    return export_onnx(keyword_model_path, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def call_audio(speech_wav, tone_noise):
    a = speech_wav("Allô, il y a un incendie au troisième étage, et ça sent le gaz, venez vite.")
    b = speech_wav("Au secours, une agression, il y a eu un vol, une hémorragie et un malaise.")
    return np.concatenate([a, 0.3 * tone_noise, b, np.zeros(3000, np.float32), a]).astype(np.float32)


def test_backbone_weights_read_without_onnx_equal_onnx_numpy_helper():
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    path = openwakeword_model_path("embedding_model.onnx")
    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ref = [(tensors[n.input[1]], tensors[n.input[2]] if len(n.input) > 2 else None)
           for n in graph.node if n.op_type == "Conv"]
    ours = read_onnx_convs(path)
    assert len(ours) == len(ref) == 20
    for (w, b), (rw, rb) in zip(ours, ref):
        assert np.array_equal(w, rw)
        assert (b is None and rb is None) or np.array_equal(b, rb)


def test_numpy_log_mel_equals_torch_log_mel(speech_wav):
    torch_features = pytest.importorskip("spotter.features")
    x = speech_wav("Il y a un incendie.")
    assert np.abs(frontend.log_mel(x) - torch_features.log_mel(x).numpy()).max() < 2e-5
    assert np.abs(frontend.mel_filterbank() - torch_features.mel_filterbank().double().numpy()).max() < 1e-6
    ms, tms = frontend.MelStream(), torch_features.MelStream()
    chunk = x[:config.STEP_SAMPLES]
    assert np.abs(ms.push(chunk) - tms.push(chunk).numpy()).max() < 2e-5


def test_many_streams_at_once_equal_one_at_a_time(speech_wav, tone_noise):
    """The multi-line tick's front end (one FFT for N lines) gives each line exactly its own MelStream frames."""
    x = speech_wav("Il y a un incendie.")
    rows = np.stack([x[:6 * config.STEP_SAMPLES], 0.3 * tone_noise[:6 * config.STEP_SAMPLES],
                     np.zeros(6 * config.STEP_SAMPLES, np.float32)])
    batched, single = [frontend.MelStream() for _ in rows], [frontend.MelStream() for _ in rows]
    for k in range(6):
        step = rows[:, k * config.STEP_SAMPLES:(k + 1) * config.STEP_SAMPLES]
        got = frontend.push_streams(batched, step)
        assert got.shape == (3, 8, config.N_MELS)
        for i, ms in enumerate(single):
            assert np.array_equal(got[i], ms.push(step[i]))


def test_onnx_spotter_equals_torch_spotter(keyword_model_path, exported, call_audio):
    from spotter.detector import KeywordSpotter
    from spotter.model import load_model
    onnx_model = load_onnx_model(exported)
    assert exported.stat().st_size < 2_000_000          # the head only: the backbone comes from openwakeword
    cfg = _low_thresholds(onnx_model)
    t, o = KeywordSpotter(load_model(keyword_model_path), detector=cfg), KeywordSpotter(onnx_model, detector=cfg)
    to, oo = t.process(call_audio), o.process(call_audio)
    assert to.posteriors.shape == oo.posteriors.shape
    assert np.abs(to.posteriors - oo.posteriors).max() < POSTERIOR_TOLERANCE
    assert np.abs(to.mel - oo.mel).max() < 1e-4
    te, oe = to.events + t.flush(), oo.events + o.flush()
    assert te and _events(te) == _events(oe)
    assert all(abs(a.score - b.score) < POSTERIOR_TOLERANCE for a, b in zip(te, oe))
    assert to.posteriors.max(axis=1).min() < to.posteriors.max() - 0.05   # the posteriors do move with the audio


@pytest.mark.parametrize("chunk_steps", [1, 7, 250])
def test_offline_chunks_equal_streaming(exported, call_audio, chunk_steps):
    """Batch replay's fully convolutional path in bounded chunks (any size, any split) = the streaming step."""
    from spotter.detector import KeywordSpotter
    model = load_onnx_model(exported)
    cfg = _low_thresholds(model)
    live, off = KeywordSpotter(model, detector=cfg), KeywordSpotter(model, detector=cfg)
    lo = live.process(call_audio)
    le = lo.events + live.flush()
    posts, oe, i = [], [], 0
    rng = np.random.default_rng(chunk_steps)
    while i < call_audio.size:
        n = chunk_steps * config.STEP_SAMPLES + int(rng.integers(0, 700))    # blocks not aligned to steps
        out = off.process_offline(call_audio[i:i + n])
        posts.append(out.posteriors)
        oe += out.events
        i += n
    oe += off.flush()
    assert le
    assert np.abs(np.concatenate(posts) - lo.posteriors).max() < 1e-5
    assert _events(le) == _events(oe)


def test_batched_streams_equal_single_streams(exported, call_audio):
    """B streams in one graph call (the multi-line step) give each stream's own posteriors."""
    model = load_onnx_model(exported)
    mel, emb = model.silence_state()
    mels = np.stack([mel, np.flip(mel, 0).copy(), mel + 0.5])
    embs = np.stack([emb, emb * 0.9, emb])
    post, last = model.run(mels, embs)
    for b in range(3):
        p1, l1 = model.run(mels[b:b + 1], embs[b:b + 1])
        assert np.abs(post[b] - p1[0]).max() < 1e-5 and np.abs(last[b] - l1[0]).max() < 1e-5


def test_shipped_onnx_is_the_export_of_the_shipped_pt(call_audio):
    """models/default.onnx must be regenerated whenever models/default.pt changes:
    spotter export --model models/default.pt --out models/default.onnx"""
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no models/default.pt")
    assert DEFAULT_ONNX_MODEL.is_file(), "run: spotter export --model models/default.pt --out models/default.onnx"
    model = load_onnx_model(DEFAULT_ONNX_MODEL)
    assert model.source_sha256 == file_sha256(DEFAULT_MODEL), (
        "models/default.onnx is stale: run spotter export --model models/default.pt --out models/default.onnx")
    pytest.importorskip("torch")
    from spotter.detector import KeywordSpotter
    from spotter.model import load_model
    to = KeywordSpotter(load_model(DEFAULT_MODEL)).process(call_audio)
    oo = KeywordSpotter(model).process(call_audio)
    assert np.abs(to.posteriors - oo.posteriors).max() < POSTERIOR_TOLERANCE


def test_replay_runs_without_torch(tmp_path, speech_wav):
    import soundfile as sf
    wav = tmp_path / "call.wav"
    sf.write(wav, speech_wav("Il y a un incendie, venez vite."), config.SAMPLE_RATE)
    code = ("import sys, json\nfrom spotter.cli import main\n"
            f"rc = main(['replay', {str(wav)!r}, '--json', '--log', {str(tmp_path / 'ev.jsonl')!r}])\n"
            "print(json.dumps({'rc': rc, 'mods': sorted(m for m in ('torch', 'torchaudio', 'scipy', 'onnx') "
            "if m in sys.modules)}))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "SPOTTER_MODEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"rc": 0, "mods": []}
    summary = json.loads(lines[-2])
    assert summary["file"] == str(wav) and "events" in summary


def test_protobuf_metadata_and_splice_roundtrip(exported):
    data = exported.read_bytes()
    meta = json.loads(protobuf.read_metadata(data)["spotter"])
    assert meta["labels"] == list(config.LABELS) and meta["backbone"].startswith("openwakeword")
    spliced = protobuf.with_initializers(data, {"bb.0.b": np.arange(24, dtype=np.float32)})
    _, tensors = protobuf.read_graph(spliced)
    assert np.array_equal(tensors["bb.0.b"], np.arange(24, dtype=np.float32))


def test_bad_onnx_model_is_one_line(tmp_path):
    from spotter.errors import SpotterError
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xff")
    with pytest.raises(SpotterError, match="bad.onnx"):
        load_onnx_model(bad)
    with pytest.raises(SpotterError, match="not found"):
        load_onnx_model(tmp_path / "missing.onnx")


def test_console_explains_with_occlusion_without_torch_model(exported, speech_wav):
    from gui.explain import GRADCAM, OCCLUSION, explain, occlusion
    model = load_onnx_model(exported)
    x = speech_wav("Il y a un incendie, venez vite.")
    mel = frontend.log_mel(np.concatenate([np.zeros(8000, np.float32), x]))[:config.WINDOW_FRAMES]
    label = config.LABELS.index("incendie")
    heat = occlusion(model, mel, label)
    assert heat.shape == (config.WINDOW_FRAMES, config.N_MELS) and np.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0) and heat.std() > 0.01
    _, method = explain(model, mel, label)                # no model.pt next to the export: occlusion
    assert method == OCCLUSION
    if DEFAULT_ONNX_MODEL.is_file() and DEFAULT_MODEL.is_file() and pytest.importorskip("torch"):
        shipped = load_onnx_model(DEFAULT_ONNX_MODEL)
        if shipped.source_sha256 == file_sha256(DEFAULT_MODEL):
            heat, method = explain(shipped, mel, label)    # torch present and the source artifact beside it
            assert method == GRADCAM and heat.shape == (config.WINDOW_FRAMES, config.N_MELS)


def test_incremental_step_equals_whole_window_step(exported, call_audio):
    """The live step's incremental graph (conv caches as state) gives the whole-window graph's posteriors."""
    model = load_onnx_model(exported)
    assert model.step_session is not None
    inc, full = model.new_stream(), model.new_stream()
    full.caches = None                                  # forces the whole-window graph
    step = config.STEP_SAMPLES
    a, b = [], []
    for i in range(0, call_audio.size - step + 1, step):
        a.append(inc.step(call_audio[i:i + step])[1])
        b.append(full.step(call_audio[i:i + step])[1])
    assert inc.caches is not None and full.caches is None
    assert np.abs(np.array(a) - np.array(b)).max() < 1e-5

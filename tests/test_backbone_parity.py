"""spotter.backbone.SpeechEmbedding vs openWakeWord's embedding_model.onnx (run by onnxruntime).

Tolerance: EMB_ATOL = 5e-4 absolute on embeddings whose values reach about +-60;
measured max error 2e-5 (float32 summation order).
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from spotter.backbone import (embed_windows, load_backbone, mel_windows, openwakeword_model_path)
from spotter.config import EMBED_DIM, EMBED_STEP, EMBED_WINDOW, N_MELS
from spotter.errors import SpotterError
from spotter.features import log_mel

EMB_ATOL = 5e-4
SENTENCE = "Il y a un incendie au troisième étage"


@pytest.fixture(scope="module")
def onnx_embedding() -> ort.InferenceSession:
    return ort.InferenceSession(str(openwakeword_model_path("embedding_model.onnx")),
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def backbone():
    return load_backbone()


@pytest.fixture(scope="module", params=["speech", "tone_noise"])
def mel(request, speech_wav, tone_noise) -> torch.Tensor:
    return log_mel(speech_wav(SENTENCE) if request.param == "speech" else tone_noise)


def test_embedding_matches_onnx(onnx_embedding, backbone, mel):
    windows = mel_windows(mel)
    ref = onnx_embedding.run(None, {"input_1": windows.numpy()[..., None]})[0].reshape(-1, EMBED_DIM)
    with torch.no_grad():
        ours = backbone.embed_windows(mel).numpy()
    assert ours.shape == ref.shape == ((mel.shape[0] - EMBED_WINDOW) // EMBED_STEP + 1, EMBED_DIM)
    err = np.abs(ours - ref).max()
    print(f"embedding max abs error = {err:.2e} (max |value| {np.abs(ref).max():.1f})")
    assert err < EMB_ATOL


def test_end_to_end_matches_openwakeword(speech_wav, backbone):
    """Audio -> embeddings equals openwakeword's own AudioFeatures._get_embeddings (with its 80 dB floor)."""
    from openwakeword.utils import AudioFeatures
    audio = speech_wav(SENTENCE)
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    ref = AudioFeatures(inference_framework="onnx", ncpu=1)._get_embeddings(pcm)
    with torch.no_grad():
        ours = embed_windows(log_mel(pcm.astype(np.float32) / 32768, top_db=80.0), backbone).numpy()
    assert np.abs(ours - ref).max() < EMB_ATOL


def test_windows_batch_shape(backbone, speech_wav, tone_noise):
    n = min(len(speech_wav(SENTENCE)), len(tone_noise))
    mel = log_mel(np.stack([speech_wav(SENTENCE)[:n], tone_noise[:n]]))
    with torch.no_grad():
        batch = backbone.embed_windows(mel)
        single = backbone.embed_windows(mel[1])
    assert batch.shape == (2, (mel.shape[1] - EMBED_WINDOW) // EMBED_STEP + 1, EMBED_DIM)
    # float32 summation order differs between batch sizes: ~5e-5 on values up to ~60 (1e-6 relative)
    assert torch.allclose(batch[1], single, atol=2e-4)


def test_frozen_by_default(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())


def test_unfreeze_last_trains_only_those_blocks(speech_wav):
    model = load_backbone().unfreeze_last(2)
    trainable = [i for i, block in enumerate(model.blocks) if all(p.requires_grad for p in block.parameters())]
    assert trainable == [18, 19]
    loss = model.embed_windows(log_mel(speech_wav(SENTENCE))).pow(2).mean()
    loss.backward()
    for i, block in enumerate(model.blocks):
        for p in block.parameters():
            if i in trainable:
                assert p.grad is not None and p.grad.abs().sum() > 0
            else:
                assert p.grad is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_backbone_exports_to_onnx(backbone, tmp_path):
    windows = torch.randn(3, EMBED_WINDOW, N_MELS)
    path = tmp_path / "backbone.onnx"
    torch.onnx.export(backbone, (windows,), str(path), input_names=["mel"], output_names=["embedding"],
                      dynamic_axes={"mel": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(session.run(None, {"mel": windows.numpy()})[0] - backbone(windows).numpy()).max() < EMB_ATOL


def test_bad_inputs_are_one_line_errors(backbone):
    with pytest.raises(SpotterError):
        mel_windows(torch.zeros(40, N_MELS))
    with pytest.raises(SpotterError):
        mel_windows(torch.zeros(100, 40))
    with pytest.raises(SpotterError):
        backbone.unfreeze_last(21)
    with pytest.raises(SpotterError):
        openwakeword_model_path("no_such_model.onnx")


def test_another_openwakeword_version_is_refused_in_one_line(tmp_path, monkeypatch):
    """The backbone is found beside the package's dist-info folder; a version other than 0.5.1 is named."""
    import sys
    (tmp_path / "openwakeword" / "resources" / "models").mkdir(parents=True)
    (tmp_path / "openwakeword" / "__init__.py").write_text("")
    (tmp_path / "openwakeword-0.6.0.dist-info").mkdir()
    monkeypatch.delitem(sys.modules, "openwakeword", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpotterError, match=r"openwakeword 0\.6\.0 is installed, 0\.5\.1 is required"):
        openwakeword_model_path("embedding_model.onnx")


def test_streaming_embedder_equals_window_embeddings(backbone, speech_wav):
    """Pushing 8 frames at a time gives the embedding of every 76-frame window (step 8), like embed_windows."""
    from spotter.backbone import StreamingEmbedder
    mel = log_mel(speech_wav(SENTENCE))
    n = (mel.shape[0] - EMBED_WINDOW) // EMBED_STEP + 1
    ref = backbone.embed_windows(mel)
    stream = StreamingEmbedder(backbone)
    got = [stream.push(mel[:EMBED_WINDOW])]
    for k in range(n - 1):
        start = EMBED_WINDOW + EMBED_STEP * k
        got.append(stream.push(mel[start:start + EMBED_STEP]))
    got = torch.cat(got)
    assert got.shape == ref.shape
    # same arithmetic, different float32 summation order: ~5e-5 on values up to ~60
    assert torch.allclose(got, ref, atol=2e-4)

"""spotter.features vs openWakeWord's melspectrogram.onnx (run by openwakeword itself), and streaming.

Tolerance: MEL_ATOL = 5e-4 on openWakeWord's scale (log10(mel power) + 2, values about -8..12);
measured max error 7e-5 on speech, all of it in low-energy bins (float32 rounding in the DFT).
"""
from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from spotter.config import N_MELS, STEP_SAMPLES
from spotter.errors import SpotterError
from spotter.features import STREAM_CONTEXT, LogMel, MelStream, log_mel, n_frames

MEL_ATOL = 5e-4
STREAM_ATOL = 1e-5
TOP_DB = 80.0
SENTENCE = "Il y a un incendie au troisième étage"


@pytest.fixture(scope="module")
def oww():
    """openwakeword's own feature extractor (ONNX runtime), the reference."""
    from openwakeword.utils import AudioFeatures
    return AudioFeatures(inference_framework="onnx", ncpu=1)


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def reference_mel(oww, pcm: np.ndarray) -> np.ndarray:
    """melspectrogram.onnx on int16 audio, with openwakeword's x / 10 + 2 transform."""
    return oww._get_melspectrogram(pcm)


@pytest.fixture(scope="module", params=["speech", "tone_noise"])
def pcm(request, speech_wav, tone_noise) -> np.ndarray:
    audio = speech_wav(SENTENCE) if request.param == "speech" else tone_noise
    return to_int16(audio)


def test_log_mel_with_floor_matches_onnx(oww, pcm):
    ref = reference_mel(oww, pcm)
    ours = log_mel(pcm.astype(np.float32) / 32768, top_db=TOP_DB).numpy()
    assert ours.shape == ref.shape == (n_frames(len(pcm)), N_MELS)
    err = np.abs(ours - ref).max()
    print(f"max abs error (top_db=80) = {err:.2e}")
    assert err < MEL_ATOL


def test_log_mel_default_differs_only_under_the_floor(oww, pcm):
    """Without the call-global 80 dB floor, values agree wherever the floor is not active."""
    ref = reference_mel(oww, pcm)
    ours = log_mel(pcm.astype(np.float32) / 32768).numpy()
    floored = ref <= ref.max() - TOP_DB / 10 + MEL_ATOL
    assert np.abs(ours - ref)[~floored].max() < MEL_ATOL
    assert np.all(ours[floored] <= ref[floored] + MEL_ATOL)


@pytest.mark.parametrize("n", [512, 671, 672, 1760, 16000, 16099])
def test_frame_count_matches_onnx(oww, tone_noise, n):
    ref = reference_mel(oww, to_int16(tone_noise[:n]))
    assert ref.reshape(-1, N_MELS).shape[0] == n_frames(n) == log_mel(tone_noise[:n]).shape[0]


def test_batch_equals_single(speech_wav, tone_noise):
    speech = speech_wav(SENTENCE)
    n = min(len(speech), len(tone_noise))
    batch = log_mel(np.stack([speech[:n], tone_noise[:n]]))
    assert batch.shape == (2, n_frames(n), N_MELS)
    assert torch.allclose(batch[0], log_mel(speech[:n]), atol=STREAM_ATOL)
    assert torch.allclose(batch[1], log_mel(tone_noise[:n]), atol=STREAM_ATOL)


def test_mel_stream_equals_offline(speech_wav):
    speech = speech_wav(SENTENCE)
    steps = len(speech) // STEP_SAMPLES
    audio = speech[: steps * STEP_SAMPLES]
    stream = MelStream()
    pushed = torch.cat([stream.push(chunk) for chunk in audio.reshape(steps, STEP_SAMPLES)])
    offline = log_mel(np.concatenate([np.zeros(STREAM_CONTEXT, np.float32), audio]))
    assert pushed.shape == offline.shape == (8 * steps, N_MELS)
    err = (pushed - offline).abs().max().item()
    print(f"streaming vs offline max abs error = {err:.2e}")
    assert err < STREAM_ATOL

    stream.reset()
    assert torch.equal(stream.push(audio[:STEP_SAMPLES]), pushed[:8])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_log_mel_exports_to_onnx(speech_wav):
    audio = torch.from_numpy(speech_wav(SENTENCE).copy())[None]
    buffer = io.BytesIO()
    torch.onnx.export(LogMel().eval(), (audio[:, :16000],), buffer, input_names=["audio"], output_names=["mel"],
                      dynamic_axes={"audio": {0: "batch", 1: "samples"}}, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"audio": audio.numpy()})[0]
    assert np.abs(exported - log_mel(audio).numpy()).max() < STREAM_ATOL


@pytest.mark.parametrize("bad", [np.zeros(16000, np.int16), np.zeros(100, np.float32), np.zeros((2, 2, 600))])
def test_log_mel_rejects_bad_audio(bad):
    with pytest.raises(SpotterError):
        log_mel(bad)


def test_mel_stream_rejects_wrong_chunk():
    with pytest.raises(SpotterError):
        MelStream().push(np.zeros(1000, np.float32))

"""Grad-CAM over the log-mel window behind a detection: shape, range, information, model left untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gui.gradcam import WINDOW_FRAMES, gradcam, saliency, split_forward
from spotter import config
from spotter.features import log_mel
from spotter.model import KeywordModel

torch.set_num_threads(1)
SR = config.SAMPLE_RATE


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return KeywordModel().eval()           # real backbone (openWakeWord weights), untrained head


def speech_window(speech_wav, text: str = "incendie", end_s: float = 1.7) -> np.ndarray:
    """(196, 32) log-mel window (1.96 s): near silence with the word ending at `end_s` (as the detector sees it)."""
    audio = np.zeros(int(2.6 * SR), dtype=np.float32)
    word = np.array(speech_wav(text))[: int(1.2 * SR)]
    start = max(0, int(end_s * SR) - len(word))
    audio[start:start + len(word)] = 0.5 * word / np.abs(word).max()
    audio += 1e-3 * np.random.default_rng(0).standard_normal(audio.size).astype(np.float32)
    return log_mel(audio).numpy()[:WINDOW_FRAMES]


def test_heat_has_the_window_shape_and_range_and_is_not_constant(model, speech_wav):
    mel = speech_window(speech_wav)
    heat = gradcam(model, mel, config.LABELS.index("incendie"))
    assert heat.shape == (WINDOW_FRAMES, config.N_MELS) == (196, 32)
    assert np.isfinite(heat).all()
    assert heat.min() == pytest.approx(0.0, abs=1e-6) and heat.max() == pytest.approx(1.0, abs=1e-6)
    assert heat.std() > 0.05


def test_heat_depends_on_the_class_explained(model, speech_wav):
    mel = speech_window(speech_wav)
    a = gradcam(model, mel, config.LABELS.index("incendie"))
    b = gradcam(model, mel, config.LABELS.index("vol"))
    assert np.abs(a - b).mean() > 1e-3


def test_rebuilt_forward_is_the_models_forward(model, speech_wav):
    """Grad-CAM explains exactly the network the detector runs."""
    mel = torch.from_numpy(speech_window(speech_wav))
    _, logits = split_forward(model, mel, block=10)
    with torch.no_grad():
        expected = model.logits_from_mel(mel[None])[0]
    torch.testing.assert_close(logits.detach(), expected, rtol=1e-4, atol=1e-4)


def test_model_is_left_untouched(model, speech_wav):
    mel = torch.from_numpy(speech_window(speech_wav))
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        before = model.logits_from_mel(mel[None])
    gradcam(model, mel.numpy(), 0)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model.logits_from_mel(mel[None]), before)


def test_saliency_fallback_shape_and_range(model, speech_wav):
    heat = saliency(model, speech_window(speech_wav), config.LABELS.index("gaz"))
    assert heat.shape == (196, 32) and heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)


def test_wrong_window_shape_is_refused(model):
    with pytest.raises(ValueError, match="196, 32"):
        gradcam(model, np.zeros((100, 32), dtype=np.float32), 0)


def test_trained_model_looks_at_the_keyword(request, speech_wav):
    """With the trained model, the heat of 'incendie' lies on the word, not on the silence around it."""
    try:
        from spotter.model import load_model
        trained = load_model(request.getfixturevalue("keyword_model_path"))
    except pytest.FixtureLookupError:
        pytest.skip("keyword_model_path fixture not provided yet (trained model)")
    mel = speech_window(speech_wav, "incendie")
    heat = gradcam(trained, mel, config.LABELS.index("incendie"))
    speech = mel.max(axis=1) > np.percentile(mel.max(axis=1), 60)
    assert heat[speech].mean() > heat[~speech].mean()

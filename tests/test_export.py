"""ONNX export of the streaming step: onnxruntime posteriors equal the torch KeywordSpotter's, step by step."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spotter import config
from spotter.detector import KeywordSpotter
from spotter.model import KeywordModel, load_model
from training.export import OnnxStepRunner, export_onnx

# onnxruntime and torch run the same float32 convolutions in different orders: the posteriors differ by ~3e-7
# at most here (random head with peaked posteriors); the test allows 1e-4 (absolute, per class and step).
POSTERIOR_TOLERANCE = 1e-4


@pytest.fixture
def model_path(request, tmp_path_factory) -> Path:
    """The trained test model (conftest's keyword_model_path) when there is one, else a random-head model whose
    logits are scaled up so that its posteriors are as peaked as a trained model's."""
    try:
        return Path(request.getfixturevalue("keyword_model_path"))
    except pytest.FixtureLookupError:
        torch.manual_seed(0)
        model = KeywordModel(meta={"name": "random-head"}).eval()
        with torch.no_grad():
            model.head.out.weight.mul_(20.0)
        path = tmp_path_factory.mktemp("model") / "random-head.pt"
        model.save(path)
        return path


def test_onnx_step_posteriors_equal_the_keyword_spotter(model_path, tmp_path, speech_wav, tone_noise):
    onnx_path = export_onnx(model_path, tmp_path / "step.onnx")
    assert onnx_path.is_file()
    runner = OnnxStepRunner(onnx_path, threads=1)
    spotter = KeywordSpotter(load_model(model_path))
    speech = speech_wav("Allô, il y a un incendie au troisième étage, et ça sent le gaz, venez vite.")
    audio = np.concatenate([speech, 0.3 * tone_noise, speech[::-1].copy()]).astype(np.float32)
    step = config.STEP_SAMPLES
    torch_post, onnx_post = [], []
    for i in range(0, audio.size - step + 1, step):
        chunk = audio[i:i + step]
        torch_post.append(spotter.process(chunk).posteriors[-1])
        onnx_post.append(runner.step(chunk))
    torch_post, onnx_post = np.array(torch_post), np.array(onnx_post)
    assert torch_post.shape == onnx_post.shape == (audio.size // step, len(config.LABELS))
    assert np.abs(onnx_post - torch_post).max() < POSTERIOR_TOLERANCE
    assert torch_post.max(axis=1).min() < torch_post.max() - 0.05      # the posteriors do move with the audio
    # after a reset both restart from the same silent state
    spotter.reset()
    runner.reset()
    first = spotter.process(speech[:step]).posteriors[-1]
    assert np.abs(runner.step(speech[:step]) - first).max() < POSTERIOR_TOLERANCE


def test_an_ensemble_head_round_trips_and_exports_with_the_same_posteriors(tmp_path, speech_wav):
    """A model whose head is an ensemble ([train] ensemble > 1) is saved with its member count, loads as the same
    ensemble, averages its members' posteriors, and its ONNX export gives the torch spotter's posteriors."""
    from spotter.model import EnsembleHead
    torch.manual_seed(0)
    model = KeywordModel(head=EnsembleHead(3), meta={"name": "ensemble"}).eval()
    with torch.no_grad():
        for m in model.head.members:
            m.out.weight.mul_(20.0)
    path = tmp_path / "ensemble.pt"
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded.head, EnsembleHead) and len(loaded.head.members) == 3
    x = torch.randn(2, config.HEAD_FRAMES, config.EMBED_DIM)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in loaded.head.members]).mean(0)
        assert torch.allclose(torch.softmax(loaded.head(x), 1), mean, atol=1e-6)
    runner = OnnxStepRunner(export_onnx(path, tmp_path / "ensemble.onnx"), threads=1)
    spotter = KeywordSpotter(loaded)
    audio = speech_wav("Il y a une agression dans la rue, venez vite.")
    step = config.STEP_SAMPLES
    diffs = [np.abs(spotter.process(audio[i:i + step]).posteriors[-1] - runner.step(audio[i:i + step])).max()
             for i in range(0, audio.size - step + 1, step)]
    assert max(diffs) < POSTERIOR_TOLERANCE

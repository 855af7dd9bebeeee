"""Model artifact: round trip, and every corrupt or mismatched artifact refused with one clear line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spotter import config
from spotter.errors import SpotterError
from spotter.model import ARTIFACT_FORMAT, KeywordModel, load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = KeywordModel(meta={"name": "unit"})
    model.detector.thresholds["gaz"] = 0.77
    path = tmp_path_factory.mktemp("art") / "m.pt"
    model.save(path)
    return model, path


def test_round_trip_keeps_weights_thresholds_and_meta(saved):
    model, path = saved
    loaded = load_model(path)
    assert loaded.name == "unit"
    assert loaded.detector.thresholds["gaz"] == pytest.approx(0.77)
    x = torch.randn(2, config.HEAD_FRAMES, config.EMBED_DIM)
    model.eval()
    torch.testing.assert_close(model.head(x), loaded.head(x))
    assert path.stat().st_size < 2_000_000          # the backbone is not stored unless fine-tuned


def _mutated(saved, tmp_path, **changes):
    blob = torch.load(saved[1], weights_only=True)
    blob.update(changes)
    out = tmp_path / "bad.pt"
    torch.save(blob, out)
    return out


@pytest.mark.parametrize("change, message", [
    ({"labels": list(config.LABELS[::-1])}, "label list"),
    ({"frontend": {**config.FrontEnd().to_dict(), "n_mels": 40}}, "front-end"),
    ({"format": "something-else"}, "not a spotter model artifact"),
    ({"services": {**config.KEYWORD_SERVICE, "gaz": "15"}}, "service"),
    ({"head": {"bogus": torch.zeros(3)}}, "do not fit"),
])
def test_mismatched_artifacts_are_refused(saved, tmp_path, change, message):
    path = _mutated(saved, tmp_path, **change)
    with pytest.raises(SpotterError) as err:
        load_model(path)
    text = str(err.value)
    assert str(path) in text and message in text and "\n" not in text


@pytest.mark.parametrize("content", [b"", b"hello, not a model", None])
def test_corrupt_files_are_refused(saved, tmp_path, content):
    path = tmp_path / "corrupt.pt"
    if content is None:                                   # truncated real artifact
        data = saved[1].read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(SpotterError, match="not a readable spotter model"):
        load_model(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(SpotterError, match="not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(SpotterError, match="directory"):
        load_model(tmp_path)


def test_artifact_needs_no_pickle(saved):
    blob = torch.load(saved[1], weights_only=True)       # would raise on arbitrary objects
    assert blob["format"] == ARTIFACT_FORMAT
    assert isinstance(np.asarray(blob["labels"]), np.ndarray)

"""Keyword sets are data: the French default reproduces the configuration; another set (English wake words, no
services) loads, drives the detector, and travels inside a model artifact."""
from pathlib import Path

import numpy as np
import pytest

from spotter import config, keywordset
from spotter.errors import SpotterError

ROOT = Path(__file__).resolve().parents[1]
EN = ROOT / "spotter" / "keywordsets" / "en_wake.toml"


@pytest.fixture
def english():
    previous = config.use_keyword_set(keywordset.load(EN))
    yield config.KEYWORD_SET
    config.use_keyword_set(previous)


def test_french_default_is_the_product_configuration():
    ks = keywordset.default()
    assert ks == config.KEYWORD_SET
    assert ks.labels == config.LABELS and len(ks.labels) == 14 and ks.labels[-2:] == ("other", "noise")
    assert ks.service["incendie"] == "18" and ks.services["15"] == "SAMU" and ks.ascii["électrocution"] == "electrocution"
    assert "violence" in ks.forms["violences"]
    assert keywordset.KeywordSet.from_dict(ks.to_dict()) == ks          # the artifact's round trip


def test_english_set_has_no_services(english):
    assert config.KEYWORDS == ("alexa", "computer") and config.LABELS == ("alexa", "computer", "other", "noise")
    assert config.SERVICES == {} and config.KEYWORD_SERVICE == {}
    assert config.DetectorConfig().thresholds == {"alexa": 0.5, "computer": 0.5}


def test_detector_runs_a_set_without_services(english):
    from spotter.detector import CallAssessment, Event
    ca = CallAssessment(0.5)
    ca.add(Event("alexa", None, 0.9, 0.0, 0.5, 0.5, 0.0))
    assert ca.evidence() == {} and ca.suggestion() is None


@pytest.mark.parametrize("text, problem", [
    ('name = "x"\nlanguage = "en"\n[keywords.a]\nfoo = 1\n', "keywords.a: unknown key(s) ['foo']"),
    ('name = "x"\nlanguage = "en"\nvoices = []\n[keywords.a]\n', "unknown key(s) ['voices']"),
    ('name = "x"\nlanguage = "en"\n', "keywords: expected at least one"),
    ('name = "x"\nlanguage = "en"\n[services.1]\nname = "A"\n[keywords.a]\nservice = "2"\n',
     "keywords.a.service: '2' is not one of the [services]"),
    ('name = "x"\nlanguage = "en"\n[keywords.other]\n', "'other' is a reserved class name"),
    ('name = "x"\nlanguage = "en"\n[keywords.a]\n[sentences]\nframes = ["no keyword here"]\n', "has no {K} or {k}"),
    ('name = "x"\nlanguage = "en"\n[keywords.a]\nascii = "É"\n', "is not a lower-case ASCII folder name"),
    ("name = [", "not valid TOML"),
])
def test_bad_keyword_set_is_one_line_naming_the_file(tmp_path, text, problem):
    p = tmp_path / "set.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(SpotterError) as e:
        keywordset.load(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and problem in msg and "\n" not in msg


def test_missing_keyword_set_file(tmp_path):
    with pytest.raises(SpotterError, match="keyword set file not found"):
        keywordset.load(tmp_path / "none.toml")


def test_artifact_carries_its_keyword_set(tmp_path, english):
    from spotter.model import KeywordModel, load_model
    m = KeywordModel()
    assert m.head.out.out_features == 4
    path = tmp_path / "en.pt"
    m.save(path)
    config.use_keyword_set(keywordset.default())               # a French process loads an English model ...
    loaded = load_model(path)
    assert config.KEYWORDS == ("alexa", "computer")            # ... and takes the set it was trained with
    assert loaded.labels == ("alexa", "computer", "other", "noise")
    post = np.zeros((3, 4), np.float32)
    post[:, 2] = 1.0
    assert loaded.head.out.out_features == post.shape[1]


def test_refused_artifact_leaves_the_active_set(tmp_path, english):
    import torch
    from spotter.model import KeywordModel, load_model
    path = tmp_path / "bad.pt"
    KeywordModel().save(path)
    blob = torch.load(path, weights_only=True)
    blob["detector"]["smoothing_steps"] = -1              # valid English set, refused detector section
    torch.save(blob, path)
    config.use_keyword_set(keywordset.default())
    with pytest.raises(SpotterError, match="smoothing_steps"):
        load_model(path)
    assert config.KEYWORDS == keywordset.default().keywords


@pytest.mark.parametrize("path", sorted((ROOT / "spotter" / "keywordsets").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_dialect_is_an_espeak_voice(path):
    import shutil
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from training.espeak_lib import speak
    for dialect in keywordset.load(path).espeak_dialects:     # a name espeak-ng cannot set drops every sentence
        audio, rate, _ = speak("un deux", dialect, 175, 50, 50)
        assert audio.size > rate // 10, dialect


def test_an_artifact_without_a_stored_set_is_french(english):
    from spotter.artifact import default_runtime_model_path
    from spotter.onnxmodel import load_onnx_model
    assert config.KEYWORDS == ("alexa", "computer")
    model = load_onnx_model(default_runtime_model_path())      # the shipped model predates stored sets
    assert config.KEYWORD_SET == keywordset.default() and len(model.labels) == 14

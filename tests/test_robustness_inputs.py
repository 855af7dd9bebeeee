"""Issue 11, defects 4, 5 and 11 (audio and model side): corrupt or doubtful audio is an error or a counted warning,
and every field of a model artifact is checked on load with one line naming it."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from spotter import cli, config
from spotter.audio import AudioStats, assess_input, iter_audio, open_audio
from spotter.detector import KeywordSpotter
from spotter.errors import SpotterError
from spotter.model import KeywordModel, load_model

SR = config.SAMPLE_RATE
CALL = "Allô les pompiers, il y a un incendie dans mon immeuble, venez vite."


@pytest.fixture(scope="module")
def speech(speech_wav):
    """About 4 s of espeak-ng French speech peaking at -6 dBFS."""
    x = np.array(speech_wav(CALL), dtype=np.float32)
    return 0.5 * x / np.max(np.abs(x))


def streamed(path) -> tuple[list[str], AudioStats]:
    """Stream a file the way replay does and assess it: (warnings, stats); SpotterError if unusable."""
    stats = AudioStats()
    for _ in iter_audio(path, stats=stats):
        pass
    return assess_input(open_audio(path), stats), stats


# --- 4: corrupt audio is an error ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_all_nonfinite_audio_is_an_error(tmp_path, fill):
    p = tmp_path / "bad.wav"
    sf.write(p, np.full((SR, 2), fill, np.float32), SR, subtype="FLOAT")
    with pytest.raises(SpotterError, match=r"bad.wav: no valid audio \(all 32000 samples are NaN or infinite\)"):
        streamed(p)


def test_wav_data_shorter_than_its_header_is_an_error(tmp_path, speech):
    good = tmp_path / "good.wav"
    sf.write(good, speech, SR, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = good.read_bytes()
    cut.write_bytes(data[:len(data) // 3])                      # a copy interrupted after a third
    with pytest.raises(SpotterError, match=r"cut.wav: truncated WAV data \(\d+ of the \d+ bytes"):
        open_audio(cut)
    streaming = tmp_path / "stream.wav"                          # a streaming writer's 0xFFFFFFFF size is fine
    raw = bytearray(data)
    raw[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    streaming.write_bytes(bytes(raw))
    assert open_audio(streaming).frames == len(speech)


# --- 4: doubtful audio gives counted warnings -------------------------------------------------------------------------
def test_partial_nan_is_counted(tmp_path, speech):
    x = speech.copy()
    idx = np.random.default_rng(0).choice(len(x), len(x) // 100, replace=False)
    x[idx] = np.nan
    p = tmp_path / "nan1pct.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    warnings, _ = streamed(p)
    assert warnings == [f"{len(idx)} of {len(x)} samples (1 %) are NaN or infinite, replaced by silence"]


def test_clipping_is_counted(tmp_path, speech):
    x = np.clip(speech * 4.0, -1.0, 1.0)                         # +12 dB into a hard limit
    p = tmp_path / "clipped.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    warnings, stats = streamed(p)
    assert stats.clipped > 0.001 * len(x)
    assert any(w.startswith(f"clipping: {stats.clipped} of {len(x)} samples") for w in warnings)


def test_too_quiet_and_too_loud_are_warned(tmp_path, speech):
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, speech * 10 ** (-24 / 20), SR, subtype="FLOAT")     # the probe's -24 dB demo
    warnings, _ = streamed(quiet)
    assert len(warnings) == 1 and warnings[0].startswith("level too low")
    normal = tmp_path / "normal.wav"
    sf.write(normal, speech, SR, subtype="PCM_16")
    assert streamed(normal)[0] == []
    loud = tmp_path / "square.wav"                              # saturated: a full-scale square wave
    t = np.arange(2 * SR) / SR
    sf.write(loud, np.sign(np.sin(2 * np.pi * 300 * t)).astype(np.float32) * 0.99, SR, subtype="FLOAT")
    assert any(w.startswith("level too high") for w in streamed(loud)[0])


def test_antiphase_stereo_is_warned(tmp_path, speech):
    p = tmp_path / "antiphase.wav"
    sf.write(p, np.stack([speech, -speech], axis=1), SR, subtype="PCM_16")
    warnings, _ = streamed(p)
    assert len(warnings) == 1 and "antiphase" in warnings[0]
    ok = tmp_path / "stereo.wav"
    sf.write(ok, np.stack([speech, 0.5 * speech], axis=1), SR, subtype="PCM_16")
    assert streamed(ok)[0] == []


def test_warnings_reach_text_and_json_output(tmp_path, speech, capsys):
    torch.manual_seed(0)
    model = tmp_path / "m.pt"
    KeywordModel(meta={"name": "random"}).save(model)
    x = speech.copy()
    x[::100] = np.nan
    p = tmp_path / "call.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    log = tmp_path / "e.jsonl"
    assert cli.main(["replay", "--model", str(model), "--log", str(log), str(p)]) == 0
    text = capsys.readouterr().out
    assert "  warning: " in text and "NaN or infinite" in text
    assert cli.main(["replay", "--json", "--model", str(model), "--log", str(log), str(p)]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith(f"{len(x[::100])} of {len(x)} samples")


# --- 5 and 11: model artifact validation -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "ok.pt"
    KeywordModel(meta={"name": "ok", "keyword_durations_s": {"gaz": 0.4}}).save(path)
    return torch.load(path, weights_only=True)


def _variant(blob, edit):
    import copy
    b = copy.deepcopy(blob)
    edit(b)
    return b


def _set(path_keys, value):
    def edit(b):
        d = b
        for k in path_keys[:-1]:
            d = d[k]
        d[path_keys[-1]] = value
    return edit


def _nan_weight(b):
    b["head"]["out.weight"][0, 0] = math.nan


def _drop_threshold(b):
    del b["detector"]["thresholds"]["vol"]


def _truncate_head(b):
    b["head"] = {k: v for i, (k, v) in enumerate(b["head"].items()) if i % 2 == 0}


BAD_MODELS = [
    ("thresholds as strings", _set(["detector", "thresholds", "gaz"], "0.5"), "detector.thresholds.gaz: expected a number"),
    ("thresholds table a string", _set(["detector", "thresholds"], "0.5"), "detector.thresholds: expected a table"),
    ("negative threshold", _set(["detector", "thresholds", "incendie"], -0.2),
     "detector.thresholds.incendie: -0.2 is out of range [0, 1]"),
    ("threshold a tensor", _set(["detector", "thresholds", "gaz"], torch.zeros(3, 4)),   # found by tools/fuzz.py
     "detector.thresholds.gaz: expected a number, got Tensor of shape (3, 4)"),
    ("NaN threshold", _set(["detector", "thresholds", "vol"], math.nan), "detector.thresholds.vol: expected a number"),
    ("smoothing 0", _set(["detector", "smoothing_steps"], 0), "detector.smoothing_steps: expected a whole number"),
    ("smoothing float", _set(["detector", "smoothing_steps"], 2.5), "detector.smoothing_steps"),
    ("refractory negative", _set(["detector", "refractory_s"], -1.0), "detector.refractory_s"),
    ("hold 0", _set(["detector", "max_hold_steps"], 0), "detector.max_hold_steps: expected a whole number"),
    ("detector a list", _set(["detector"], [1, 2]), "detector: expected a table"),
    ("durations a string", _set(["meta", "keyword_durations_s"], "0.5"),
     "meta.keyword_durations_s: expected a table"),
    ("duration a string", _set(["meta", "keyword_durations_s", "gaz"], "long"), "meta.keyword_durations_s.gaz"),
    ("meta a string", _set(["meta"], "fr-emergency"), "meta: expected a table"),
    ("name not text", _set(["meta", "name"], 42), "meta.name"),
    ("NaN weights", _nan_weight, "head: NaN or infinite weights in out.weight"),
    ("missing threshold", _drop_threshold, "detector.thresholds: missing for ['vol']"),
    ("head_kwargs huge", _set(["head_kwargs", "channels"], 10 ** 9), "head_kwargs.channels"),
    ("ensemble members huge", _set(["head_kwargs", "members"], 10 ** 6), "head_kwargs.members"),
    ("ensemble without member weights", _set(["head_kwargs", "members"], 2), "head: weights do not fit"),
    ("head weights halved", _truncate_head, "head: weights do not fit the network: 12 missing"),
    ("backbone not tensors", _set(["backbone"], {"conv.weight": "x"}), "backbone: 1 entries are not tensors"),
]


@pytest.mark.parametrize("name, edit, problem", BAD_MODELS, ids=[b[0] for b in BAD_MODELS])
def test_bad_artifact_field_is_named(blob, tmp_path, name, edit, problem):
    path = tmp_path / "bad.pt"
    torch.save(_variant(blob, edit), path)
    with pytest.raises(SpotterError) as err:
        load_model(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and problem in msg, msg
    assert "\n" not in msg and len(msg) < 400


def test_state_dict_mismatch_lists_every_problem_in_full(blob, tmp_path):
    """Before: 'weights do not fit' cut at 120 characters. Now: counts and the first names, whole."""
    b = _variant(blob, _truncate_head)
    b["head"]["extra.weight"] = torch.zeros(3)
    b["head"]["out.weight"] = torch.zeros(14, 5)
    path = tmp_path / "mixed.pt"
    torch.save(b, path)
    with pytest.raises(SpotterError) as err:
        load_model(path)
    msg = str(err.value)
    assert "11 missing (" in msg and "1 unexpected (extra.weight)" in msg
    assert "out.weight (14, 5) instead of (14, 192)" in msg


def test_valid_artifact_still_loads_and_runs(blob, tmp_path):
    path = tmp_path / "ok.pt"
    torch.save(blob, path)
    model = load_model(path)
    assert model.name == "ok" and len(model.artifact_sha256) == 64
    KeywordSpotter(model).process(np.zeros(2 * SR, np.float32))          # the loaded model runs
    assert model.detector.thresholds == blob["detector"]["thresholds"]


def test_bad_model_is_one_line_on_the_command_line(blob, tmp_path, capsys):
    path = tmp_path / "bad.pt"
    torch.save(_variant(blob, _set(["detector", "smoothing_steps"], 0)), path)
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(SR, np.float32), SR)
    assert cli.main(["replay", "--model", str(path), "--log", str(tmp_path / "e.jsonl"), str(wav)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "smoothing_steps" in err[0]

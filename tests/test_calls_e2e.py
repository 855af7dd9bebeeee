"""End to end on a tiny [calls] recipe: sentences synthesised whole, calls, head, calibration, evaluation on
held-out voices with the one scorer, artifact and model card; then `spotter evaluate` on the stored calls."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from spotter import config
from spotter.model import load_model

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_tiny_calls_recipe_end_to_end(tmp_path, speech_wav):
    from training.calltrain import evaluate_stored, train_from_calls
    from training.recipe import load_recipe
    recipe = load_recipe(REPO / "training/configs/calls_tiny.toml", overrides=[
        f"out={tmp_path / 'm.pt'}", f"work_dir={tmp_path / 'work'}", f"calls.cache_dir={tmp_path / 'sentences'}",
        "calls.loeo_negative_hours=0.06", "calls.mel_warp=true", "calls.mel_warp_copies=2",
        "calls.mel_warp_twins=true", "train.consistency=1",                 # the shipped recipe's warp and term
        "calibrate.common_threshold=0.95"])                                 # and its one common threshold
    out = train_from_calls(recipe)

    model = load_model(out)                                  # loads with weights_only: plain metadata
    assert model.meta["name"] == "calls-tiny-ci"
    assert set(model.detector.thresholds) == set(config.KEYWORDS)
    rep = model.meta["calls_report"]
    speakers = rep["info"]["speakers"]
    assert speakers["train"] and speakers["test"] and not set(speakers["train"]) & set(speakers["test"])
    final = rep["final"]
    assert final["keyword_occurrences"] > 0 and final["negative_hours"] > 0
    assert 0 <= final["calibrated"]["recall"]["recall"] <= 1
    assert set(final["calibrated"]["per_channel"]) <= {"wide", "tel"}
    assert (tmp_path / "work" / "final" / "det.png").stat().st_size > 0
    assert all(0 < d <= 3 for d in model.meta["keyword_durations_s"].values())
    card = out.with_suffix(".md").read_text()
    assert "keywords inside sentences" in card.lower() or "inside sentences" in card
    # smoothing: the best validation recall among the windows whose median latency meets the product target
    cal = final["calibration"]
    assert cal["max_latency_p50_s"] == config.LATENCY_TARGET_P50_S
    assert [t["smoothing_steps"] for t in cal["tried"]] == [1, 2, 3, 5]
    fast = [t for t in cal["tried"] if t["latency_p50_s"] is not None and t["latency_p50_s"] <= 0.2]
    if fast:
        assert model.detector.smoothing_steps == max(fast, key=lambda t: t["recall"])["smoothing_steps"]
    assert "median latency is at most 0.2 s" in card
    # the recipe's one common threshold ships; the validation thresholds stay in the calibration for the card
    assert set(model.detector.thresholds.values()) == {0.95} and set(cal["validation_thresholds"]) == set(config.KEYWORDS)
    assert "runs at the recipe's rule, the common threshold 0.95" in card

    res = evaluate_stored(model, tmp_path / "work")           # before/after comparisons reuse the stored calls
    assert res["held_out_voices"]["keyword_occurrences"] == final["keyword_occurrences"]
    json.dumps(res, default=float)
    assert "head seed 7, data seed 0" in card
    # the cascade's keyword probe, trained by the same run beside the model and found by the cascade
    from spotter import verify
    from spotter.probe import probe_path
    probe = model.meta["probe"]
    if verify.status()[0]:
        assert probe["file"] == "m.probe.npz" and probe["crops"] > 0 and probe["crops_s"] is not None
        assert verify.default_probe(out).source == str(probe_path(out))
        assert "## Keyword probe" in card and "`m.probe.npz` beside this file" in card
    else:
        assert "verify extra" in probe["skipped"] and "Not trained with this model" in card
    # the Whisper proposer's head, trained by the same run on Whisper rows of the same calls and found by the cascade
    from spotter import whisper_proposer as W
    wh = model.meta["whisper_head"]
    if verify.status()[0]:
        assert wh["file"] == "m.whisper.npz" and set(wh["rows_built"]) == {"train", "val"} and wh["training_calls"] > 0
        assert W.default_whisper_head(out).meta["trained_by"] == "spotter train"
        assert set(W.default_whisper_head(out).thresholds) == set(config.KEYWORDS)
        assert "## Whisper proposer's head" in card and "`m.whisper.npz` beside this file" in card
    else:
        assert "verify extra" in wh["skipped"]

    # the top-level seed draws the head's training, not the data: same stored calls, another head; without the
    # folds, their own keyword-free speech ('loeo_neg') is neither built nor read
    assert "loeo_neg" in rep["info"]["sets"]
    warp = rep["info"]["sets"]["train_warp"]            # the training calls themselves, twice each, warped log-mel
    train = rep["info"]["sets"]["train"]
    assert warp["sentences"] == train["sentences"] and warp["hours"] > 0
    assert warp["calls"] == train["calls"] // recipe.calls.train_copies * 2      # the same calls, each twice
    assert "train set's own calls" in card and "twice" in card
    assert "Jensen-Shannon term (weight 1)" in card and "a warped twin" in card
    (tmp_path / "work" / "calls_loeo_neg.npz").unlink()
    other = load_model(train_from_calls(load_recipe(REPO / "training/configs/calls_tiny.toml", overrides=[
        f"out={tmp_path / 'm8.pt'}", f"work_dir={tmp_path / 'work'}", f"calls.cache_dir={tmp_path / 'sentences'}",
        "seed=8", "calls.loeo_negative_hours=0.06"]), folds=False))
    assert not (tmp_path / "work" / "calls_loeo_neg.npz").exists()
    assert "loeo_neg" not in other.meta["calls_report"]["info"]["sets"]
    assert other.meta["calls_report"]["info"]["speakers"] == speakers
    assert other.meta["calls_report"]["final"]["keyword_occurrences"] == final["keyword_occurrences"]
    if verify.status()[0]:           # the same sentences and data seed: the crops are reused, the probe retrained
        assert other.meta["probe"]["crops_s"] is None and probe_path(tmp_path / "m8.pt").is_file()
        assert "reused from the work folder" in (tmp_path / "m8.md").read_text()
        assert not other.meta["whisper_head"]["rows_built"] and (tmp_path / "m8.whisper.npz").is_file()
        assert "Whisper rows reused from the work folder" in (tmp_path / "m8.md").read_text()
    a, b = model.head.state_dict(), other.head.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)

    # real recordings (--recordings DIR) join the probe's crops too, one per channel each: the crops are rebuilt
    if verify.status()[0]:
        import numpy as np
        import soundfile as sf
        (tmp_path / "rec" / "gaz").mkdir(parents=True)
        sf.write(tmp_path / "rec" / "gaz" / "1.wav", np.asarray(speech_wav("gaz"), np.float32), 16000)
        rec = load_model(train_from_calls(load_recipe(REPO / "training/configs/calls_tiny.toml", overrides=[
            f"out={tmp_path / 'rec.pt'}", f"work_dir={tmp_path / 'work'}", f"calls.cache_dir={tmp_path / 'sentences'}",
            f'data.recordings=["{tmp_path / "rec"}"]']), folds=False))
        assert rec.meta["probe"]["recording_crops"] == 3 and rec.meta["probe"]["crops_s"] is not None
        # and the Whisper head's training calls: each recording as recorded and through drawn channels
        n_rec = rec.meta["whisper_head"]["training_calls"] - other.meta["whisper_head"]["training_calls"]
        assert n_rec == load_recipe(REPO / "training/configs/calls_tiny.toml").train.recording_copies
        assert "3 of them from the real recordings" in (tmp_path / "rec.md").read_text()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_training_refuses_a_recipe_engine_that_is_not_installed(tmp_path):
    """A recipe trained without one of its engines would be another model: `spotter train` says so in one line."""
    import subprocess
    import sys
    from training.voices import available_voices
    if available_voices(("kokoro",), warn=False):
        pytest.skip("Kokoro is installed here")
    proc = subprocess.run([sys.executable, "-m", "spotter.cli", "train", "--config",
                           str(REPO / "training/configs/calls_tiny.toml"), "--set", 'calls.engines=["espeak","kokoro"]',
                           f"work_dir={tmp_path / 'work'}", f"out={tmp_path / 'm.pt'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "calls_tiny.toml" in proc.stderr and "kokoro not installed" in proc.stderr
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
@pytest.mark.parametrize("setting, says", [("calls.mel_tilt=-1.0", "mel_tilt >= 0"),
                                            ("calls.mel_time_warp_period=[1.0,0.5]", "0.1 <= lo <= hi"),
                                            ("calls.mel_time_mask=-0.1", "0 <= mel_time_mask <= 1")])
def test_training_refuses_a_bad_warp_setting_in_one_line(tmp_path, setting, says):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "spotter.cli", "train", "--config",
                           str(REPO / "training/configs/calls_tiny.toml"), "--set", "calls.mel_warp=true",
                           "--set", setting, "--set", f"work_dir={tmp_path / 'work'}",
                           "--set", f"out={tmp_path / 'm.pt'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "calls_tiny.toml" in proc.stderr and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_the_calls_built_twice_from_nothing_are_the_same(tmp_path):
    """Two engineers who build the tiny recipe's calls from an empty sentence cache get the same calls, bit for
    bit (libespeak-ng's state from earlier sentences no longer leaks into later ones, whatever the workers' order)."""
    import numpy as np
    from training import calltrain as T
    from training.recipe import real_audio_files
    from training.recipes import load_recipe

    def build(run: str) -> Path:
        recipe = load_recipe(REPO / "training/configs/calls_tiny.toml",
                             [f"calls.cache_dir={tmp_path / run / 'sentences'}"])
        T.build_callsets(recipe.calls, recipe.calls.cache_dir, tmp_path / run / "work",
                         T.noise_halves(real_audio_files(recipe.data)), skip=set(T.FOLD_ONLY_SETS))
        return tmp_path / run / "work"
    a, b = build("a"), build("b")
    names = sorted(p.name for p in a.glob("calls_*.npz"))
    assert names and names == sorted(p.name for p in b.glob("calls_*.npz"))
    for name in names:
        with np.load(a / name) as x, np.load(b / name) as y:
            assert all(np.array_equal(x[k], y[k]) for k in x.files), name

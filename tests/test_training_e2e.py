"""End to end on a tiny recipe: espeak-ng synthesis, augmentation, training, calibration, evaluation, model card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotter import config
from spotter.model import load_model

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_recipe_end_to_end(tmp_path):
    from training.recipe import load_recipe, run_training
    recipe = load_recipe(REPO / "training/configs/tiny.toml", overrides=[
        f"out={tmp_path / 'tiny.pt'}", f"work_dir={tmp_path / 'work'}", f"synth.cache_dir={tmp_path / 'clips'}",
        "synth.max_voices_per_engine=6", "train.epochs=3"])
    out = run_training(recipe)

    model = load_model(out)                                   # the artifact loads with weights_only
    assert model.meta["name"] == "tiny-ci"
    assert set(model.detector.thresholds) == set(config.KEYWORDS)
    assert all(0 < t < 1 for t in model.detector.thresholds.values())
    # provenance: voices are speaker-disjoint between splits
    voices = model.meta["synthesis"]["voices"]
    assert voices["train"] and voices["test"]
    assert not set(voices["train"]) & set(voices["test"])
    # synthesis went through the cache + manifest
    assert (tmp_path / "clips" / "manifest.csv").is_file()
    # evaluation artefacts and the model card
    ev_dir = tmp_path / "work" / "evaluation"
    result = json.loads((ev_dir / "evaluation.json").read_text())
    assert len(result["window_confusion"]) == len(config.LABELS)
    for name in ("confusion.png", "det.png", "confusion.txt"):
        assert (ev_dir / name).stat().st_size > 0
    assert 0 <= result["window_accuracy"] <= 1
    card = out.with_suffix(".md").read_text()
    assert "Evaluation on held-out voices" in card and "synthetic" in card
    # a second run re-uses the synthesized clips (nothing re-synthesized)
    from training.recipe import synthesize_clips
    before = sorted(p.stat().st_mtime for p in (tmp_path / "clips").rglob("*.wav"))
    synthesize_clips(recipe)
    after = sorted(p.stat().st_mtime for p in (tmp_path / "clips").rglob("*.wav"))
    assert before == after

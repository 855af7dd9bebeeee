"""The training recipe is typed (training/recipes.py): unknown sections and keys and wrong types are refused with
one line naming the file and the key, paths are relative to the recipe file (command-line values to the working
directory), every shipped recipe loads, and the artifact metadata stays plain JSON data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotter.errors import SpotterError
from training.recipes import (CallPlan, CallsRecipe, ClipRecipe, ClipTrainSection, load_recipe, recipe_meta)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "training" / "configs").glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / "recipes" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path, overrides=()) -> str:
    """The one-line message load_recipe refuses the recipe with."""
    with pytest.raises(SpotterError) as exc:
        load_recipe(path, overrides)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_an_unknown_key_is_refused_naming_the_file_and_the_key(tmp_path):
    path = write(tmp_path, 'name = "x"\n[train]\nepoch = 5\n')
    message = refusal(path)
    assert "[train] unknown key 'epoch'" in message and "epochs" in message        # the known keys are listed


def test_an_unknown_top_level_key_and_an_unknown_section_are_refused(tmp_path):
    assert "unknown key 'nmae'" in refusal(write(tmp_path, 'nmae = "x"\n'))
    message = refusal(write(tmp_path, "[trian]\nepochs = 5\n"))
    assert "unknown section [trian]" in message and "[train]" in message
    # a section of the other kind of recipe is not silently ignored either
    assert "unknown section [synth] for a [calls] recipe" in refusal(write(tmp_path, "[calls]\n[synth]\n"))
    assert "unknown section [calls] for a clip recipe" in refusal(write(tmp_path, "[train]\n"), ["calls.seed=1"])


@pytest.mark.parametrize("text, expected", [
    ('[train]\nepochs = "5"\n', "[train] epochs: expected an integer, got str '5'"),
    ("[train]\nepochs = 2.5\n", "[train] epochs: expected an integer, got float 2.5"),
    ("[augment]\nenabled = 1\n", "[augment] enabled: expected true or false"),
    ('[synth]\nengines = "espeak"\n', "[synth] engines: expected a list"),
    ('[synth]\nspeeds = [1.0, "fast"]\n', "[synth] speeds: expected a number for item 2 (got str 'fast')"),
    ("[calls]\nkw_sentences = {espeak = 1.5}\n", "[calls] kw_sentences: expected an integer for 'espeak'"),
    ("name = 3\n", "name: expected text, got int 3"),
    ("out = 3\n", "out: expected a path (text)"),
    ("train = 3\n", "[train] must be a table, got int 3"),
    ("[calls]\nkw_sentences = [1]\n", "[calls] kw_sentences: expected a table"),
    ("[calls]\nsentences_per_call = [3]\n", "[calls] sentences_per_call: expected a list of 2 values"),
])
def test_a_value_of_the_wrong_type_is_refused(tmp_path, text, expected):
    assert expected in refusal(write(tmp_path, text))


def test_paths_are_relative_to_the_recipe_file(tmp_path, monkeypatch):
    path = write(tmp_path, 'out = "../models/m.pt"\nwork_dir = "runs"\nkeywords = "/abs/kw.toml"\n'
                           '[data]\nnoise_dir = "../data/noise"\nrecordings = ["rec"]\n'
                           '[synth]\ncache_dir = "cache"\n[train]\ninit = "base.pt"\n')
    monkeypatch.chdir(tmp_path)                                # not the recipe's folder
    r = load_recipe(path)
    folder = (tmp_path / "recipes").resolve()
    assert isinstance(r, ClipRecipe) and r.path == path.absolute()
    assert r.out == folder.parent / "models" / "m.pt"
    assert r.work_dir == folder / "runs"
    assert r.keywords == Path("/abs/kw.toml")                   # absolute paths stay
    assert r.data.noise_dir == folder.parent / "data" / "noise" and r.data.speech_dir is None
    assert r.data.recordings == (folder / "rec",)
    assert r.synth.cache_dir == folder / "cache" and r.train.init == folder / "base.pt"
    calls = load_recipe(write(tmp_path, "[calls]\n", "c.toml"))  # defaults of path keys: the recipe's folder too
    assert isinstance(calls, CallsRecipe)
    assert calls.calls.cache_dir == folder / "cache" / "sentences" and calls.work_dir == folder / "runs" / "default"


def test_command_line_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path, 'out = "m.pt"\n')
    monkeypatch.chdir(tmp_path)
    r = load_recipe(path, [f"work_dir={tmp_path / 'abs'}", "out=here/m.pt", "train.init=base.pt",
                           'data.recordings=["a", "b"]'])
    assert r.work_dir == tmp_path / "abs"
    assert r.out == tmp_path.resolve() / "here" / "m.pt" and r.train.init == tmp_path.resolve() / "base.pt"
    assert r.data.recordings == (tmp_path.resolve() / "a", tmp_path.resolve() / "b")


def test_overrides_are_typed_like_the_file(tmp_path):
    path = write(tmp_path, '[train]\nepochs = 40\n[calibrate]\nsmoothing_candidates = [3, 5]\n')
    r = load_recipe(path, ["train.epochs=3", "train.lr=0.01", "seed=7", "name=123", "augment.enabled=false",
                           "calibrate.smoothing_candidates=[7]", "synth.engines=[\"espeak\", \"mbrola\"]"])
    assert r.train.epochs == 3 and r.train.lr == 0.01 and r.seed == 7
    assert r.name == "123"                                     # a text field keeps the text
    assert r.augment.enabled is False and r.calibrate.smoothing_candidates == (7,)
    assert r.synth.engines == ("espeak", "mbrola")
    assert "[train] unknown key 'epoch'" in refusal(path, ["train.epoch=3"])
    assert "[train] epochs: expected an integer" in refusal(path, ["train.epochs=many"])
    assert "expected KEY=VALUE" in refusal(path, ["train.epochs"])


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_every_set_option_is_kept(command):
    """`--set a=1 --set b=2` keeps both (a repeated option must not silently drop the earlier values)."""
    import argparse
    from training.cli import register_cli
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args([command, "--set", "train.epochs=3", "seed=1", "--set", "out=m.pt"])
    assert args.set == ["train.epochs=3", "seed=1", "out=m.pt"]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_the_default_recipe_is_the_shipped_models(command, tmp_path, monkeypatch):
    """Without --config, `spotter train` and `spotter evaluate` take the recipe that trained models/default.pt
    (a [calls] recipe), from any working directory."""
    import argparse
    from training.cli import register_cli
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(parser.parse_args([command]).config)
    assert isinstance(recipe, CallsRecipe) and recipe.path == (REPO / "training/configs/calls.toml").resolve()
    assert recipe_meta(recipe)["out"] == "models/default.pt"


@pytest.mark.parametrize("option", ["--init", "--calibrate-only"])
def test_clip_recipe_options_with_the_calls_recipe_are_refused_in_one_line(option, tmp_path):
    """--init and --calibrate-only belong to clip recipes: with the default [calls] recipe they are refused in one
    line that names the recipe and says what to do instead, before anything is built."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "spotter.cli", "train", option, str(REPO / "models/default.pt"),
                           "--set", f"work_dir={tmp_path / 'work'}", f"out={tmp_path / 'm.pt'}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "calls.toml" in proc.stderr and option in proc.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "m.pt").exists()


def test_defaults_come_from_the_dataclasses(tmp_path):
    r = load_recipe(write(tmp_path, ""))
    assert isinstance(r, ClipRecipe) and r.train == ClipTrainSection() and r.seed == 0 and r.name == "model"
    c = load_recipe(write(tmp_path, "[calls]\nengines = [\"espeak\"]\n", "c.toml"))
    assert c.calls.engines == ("espeak",) and c.calls.kw_sentences == CallPlan().kw_sentences
    assert c.train.negative_windows == 200000 and c.calibrate.budget_fa_per_hour == 0.5


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(config):
    r = load_recipe(config)
    assert isinstance(r, CallsRecipe) == config.name.startswith(("calls", "en_wake"))
    for p in (r.out, r.work_dir, r.data.noise_dir, r.data.speech_dir):
        assert p.is_absolute() and ".." not in p.parts
    assert REPO.resolve() in r.out.parents and REPO.resolve() in r.work_dir.parents
    assert r.data.noise_dir.resolve() == (REPO.resolve().parent / "shared" / "data" / "noise").resolve()   # a link too
    if r.keywords:
        assert r.keywords.is_file()
    meta = recipe_meta(r)
    assert json.loads(json.dumps(meta)) == meta and "path" not in meta     # plain JSON data for the artifact
    assert not Path(meta["out"]).is_absolute()                              # shown relative to the repository


def test_the_shipped_model_recipe_names_the_shipped_model():
    assert load_recipe(REPO / "training" / "configs" / "calls.toml").out == (REPO / "models" / "default.pt").resolve()
    assert recipe_meta(load_recipe(REPO / "training" / "configs" / "default.toml"))["out"] == "models/default.pt"


def test_a_missing_or_broken_recipe_is_one_line(tmp_path):
    assert "recipe not found" in refusal(tmp_path / "none.toml")
    assert "invalid TOML" in refusal(write(tmp_path, "[train\n"))

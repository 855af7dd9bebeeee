"""The training recipe file: typed sections with every default in one place, and the strict loader.

A recipe is a TOML file. Top-level keys: name, seed, out, work_dir, keywords; [data] for every recipe. A clip
recipe (training/recipe.py: isolated keyword clips in 2 s windows) also has [synth], [augment], [train],
[calibrate], [evaluate]; a [calls] recipe (training/calltrain.py: keywords inside whole sentences) has [calls],
[train], [calibrate]. A recipe is a [calls] recipe when it has a [calls] section; there the top-level seed draws the
head's training (windows, initial weights, mining) and [calls] seed the data, so a seed changes one without the other.

Loading is strict: an unknown section or key, or a value of the wrong type, is a one-line SpotterError naming the
file and the key (a typo is never silently ignored). Paths written in the file, and the defaults of path keys,
are relative to the file's folder; paths given on the command line (--set key=value, and the --out, --init,
--recordings, --keywords options) are relative to the working directory. Absolute paths stay as they are.
This module imports neither torch nor the training code.
"""
from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from spotter import config
from spotter.artifact import _short
from spotter.errors import SpotterError

REPO = Path(__file__).resolve().parent.parent      # the source tree, when this is a checkout (display only)
# the shipped model's recipe: `spotter train` and `spotter evaluate` use it when no --config is given (this source
# tree's; a plain, non-editable install carries no recipes, so there the working directory's)
SHIPPED_RECIPE = Path(__file__).resolve().parent / "configs" / "calls.toml"
if not SHIPPED_RECIPE.is_file():
    SHIPPED_RECIPE = Path("training/configs/calls.toml")


# --- sections -------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class DataSection:
    """[data]: real audio used beside the synthetic speech (every recipe)."""
    noise_dir: Path | None = None            # real noise recordings; split by file name hash into train / eval
    speech_dir: Path | None = None           # real keyword-free speech; split the same way
    recordings: tuple[Path, ...] = ()        # real keyword recordings laid out as <root>/<keyword>/*.wav


@dataclass(kw_only=True)
class SynthSection:
    """[synth] (clip recipes): which voices say the keyword clips, and how."""
    engines: tuple[str, ...] = ("espeak",)   # engines not installed are skipped with a warning
    cache_dir: Path = Path("cache/clips")    # synthesized clips and their manifest
    val_fraction: float = 0.15               # of speakers, per engine
    test_fraction: float = 0.2               # held-out speakers for `spotter evaluate`
    max_voices_per_engine: int = 0           # > 0: a few voices per engine (small recipes), every split kept
    speeds: tuple[float, ...] = (0.8, 0.9, 1.0, 1.15, 1.3)   # rate multipliers
    pitches: tuple[int, ...] = (30, 40, 50, 60, 70)         # espeak's 0..99 pitch scale (50 = normal)
    n_other_texts: int = 40                  # non-keyword words/phrases per voice


@dataclass(kw_only=True)
class AugmentSection:
    """[augment] (clip recipes)."""
    enabled: bool = True                     # room, noise, babble, pitch/tempo on every window
    spec_augment: bool = True                # time/frequency masks on the training features


@dataclass(kw_only=True)
class ClipTrainSection:
    """[train] of a clip recipe: the windows and the head's optimisation."""
    windows_per_keyword: int = 1000          # augmented training windows per keyword
    negative_windows: int = 10000            # other speech / noise training windows
    val_windows_per_keyword: int = 100       # validation windows (early stopping)
    val_negative_windows: int = 1000
    epochs: int = 40
    batch: int = 256
    lr: float = 2e-3
    patience: int = 6                        # epochs without validation improvement before stopping
    finetune_blocks: int = 0                 # > 0 unfreezes the last backbone blocks for a fine-tuning phase ...
    finetune_steps: int = 0                  # ... of this many steps (both must be > 0)
    init: Path | None = None                 # start from this artifact's head (retraining; also --init)


@dataclass(kw_only=True)
class ClipCalibrateSection:
    """[calibrate] of a clip recipe: thresholds and smoothing against the false-alarm budget."""
    budget_fa_per_hour: float = 0.5
    negative_hours: float = 1.0              # long negative audio from validation speakers' speech + noise
    positive_streams: int = 12               # keyword streams of validation speakers
    smoothing_candidates: tuple[int, ...] | None = None   # moving-average lengths tried (None: the model's own)
    max_latency_p50_s: float = config.LATENCY_TARGET_P50_S  # best recall among the windows this fast (0: any)


@dataclass(kw_only=True)
class EvaluateSection:
    """[evaluate] (clip recipes): the held-out evaluation run after training."""
    enabled: bool = True
    test_windows_per_keyword: int = 100
    test_negative_windows: int = 1000
    negative_hours: float = 0.5
    positive_streams: int = 12
    calls: int = 40                          # composed calls for the service-at-call-end accuracy


@dataclass(kw_only=True)
class CallPlan:
    """[calls]: sizes of one run of keywords inside whole sentences (training/calltrain.py)."""
    engines: tuple[str, ...] = ("espeak", "mbrola", "kokoro")
    # per engine: training/validation sentences per keyword and voice, keyword-free ones per voice, and the
    # evaluation sentences per keyword and voice
    kw_sentences: dict[str, int] = field(default_factory=lambda: {"espeak": 3, "mbrola": 14, "kokoro": 5})
    neg_sentences: dict[str, int] = field(default_factory=lambda: {"espeak": 40, "mbrola": 150, "kokoro": 40})
    eval_kw_sentences: dict[str, int] = field(default_factory=lambda: {"espeak": 1, "mbrola": 4, "kokoro": 2})
    eval_negative_hours: float = 5.0         # keyword-free running speech of test voices
    kokoro_eval_negatives: int = 20
    # leave-one-engine-out: a fold's false alarms are counted on the held-out engine's own keyword-free speech
    # ("eval_neg" by its test-split voices, then the "loeo_neg" set: test-frame sentences by its other voices, all
    # unheard by that fold) until each engine has about this many hours
    loeo_negative_hours: float = 0.0
    espeak_generated_speakers: int = 0       # drawn espeak-ng variants (training/speakers.py): new speakers
    cache_dir: Path = Path("cache/sentences")  # synthesized sentences and their index
    kokoro_random_blends: int = 8            # extra Kokoro speakers: random mixtures of the training styles
    # the "eval_kw_kokoro" set, for the Kokoro fold only: test-frame sentences per keyword by each Kokoro voice
    # that is not a test voice and by kokoro_fold_blends random mixtures of all its styles, with their own draws
    kokoro_fold_kw_sentences: int = 0
    kokoro_fold_blends: int = 0
    # the "_extra" sets, built and cached on their own (adding them rebuilds nothing else): more sentences by the
    # natural engines' training and validation voices, at new draws of rate, pitch and vocal tract, and new
    # Kokoro random mixtures that say only these sentences (training split)
    extra_kw_sentences: dict[str, int] = field(default_factory=dict)     # per engine: per keyword and voice
    extra_neg_sentences: dict[str, int] = field(default_factory=dict)    # per engine: keyword-free, per voice
    extra_kokoro_blends: int = 0
    # the "_accent" set, built and cached on its own: French said by MBROLA voices of other languages (training/
    # accent.py), training speakers only; "all" = accent.ACCENT_VOICES that are installed
    accent_voices: tuple[str, ...] = ()
    accent_kw_sentences: int = 0             # per keyword and voice
    accent_neg_sentences: int = 0            # keyword-free, per voice
    # the "_warp" set, built on its own: the "train" set's sentences (not the drawn espeak speakers') grouped into
    # calls again, each copy through a drawn channel, embedded from a log-mel whose frequency axis is warped by a
    # drawn factor (calls.WarpedEmbeddings: vocal-tract-length perturbation, and a frequency mask for half of them)
    mel_warp: bool = False
    mel_warp_copies: int = 1                 # warped copies of each of its calls, each with its own draws
    mel_warp_range: tuple[float, float] = (0.88, 1.12)   # the drawn factor's range
    mel_tilt: float = 0.0                    # spectral tilt drawn in -mel_tilt .. mel_tilt log10 units (0: none)
    mel_contrast: float = 0.0                # spectral contrast factor drawn in 1 -/+ mel_contrast (0: none)
    mel_tilt_centre: float = 0.0             # the drawn tilt's centre (> 0: brighter at the top, as real people's
                                             # speech is beside the synthetic voices': tools/spectra.py)
    mel_time_warp: float = 0.0               # a smooth local tempo change of the log-mel's time axis, drawn up to
                                             # this deviation (0.15: 0.85-1.15 x), the call's length and labels kept
    mel_time_warp_period: tuple[float, float] = (1.0, 2.0)   # the drawn range of its sine period (s)
    mel_time_mask: float = 0.0               # time masks of the warped log-mel, each up to this long (s; 0: none),
                                             # calls.TIME_MASKS_PER_S per second of a call
    mel_ripple: float = 0.0                  # the warped log-mel's fine structure across bands (calls.RIPPLE_FROM)
                                             # times a gain drawn log-uniform in 1/mel_ripple .. mel_ripple (0: none)
    mel_smooth: bool = False                 # every set (training and evaluation) embedded from a log-mel without
                                             # that fine structure (calls.SmoothedEmbeddings)
    mel_warp_twins: bool = False             # the warp set's calls are the training set's calls (the same sentences,
                                             # pauses and order), so a training window has warped twins (consistency)
    max_voices_per_engine: int = 0           # small runs: at most this many voices per engine and split
    sentences_per_call: tuple[int, int] = (3, 7)
    train_copies: int = 2                    # channels drawn per training call
    seed: int = 0                            # the data's draws: voice splits, sentences, calls (not the head's)


@dataclass(kw_only=True)
class CallsTrainSection:
    """[train] of a [calls] recipe: windows of the stored calls, the head, one round of hard-negative mining."""
    negative_windows: int = 200000
    val_negative_windows: int = 30000
    epochs: int = 20
    batch: int = 512
    lr: float = 2e-3
    patience: int = 4
    mining_windows: int = 0                  # hard negatives: the top-scoring negative windows of a first head ...
    mining_share: float = 1.0                # ... searched in this share of the training calls ...
    mining_repeats: int = 3                  # ... added this many times ...
    mining_epochs: int = 6                   # ... and trained on for this many epochs (lr / 3)
    recording_copies: int = 8                # channels drawn per real recording ([data] recordings)
    probe: bool = True                       # also train the verifier's keyword probe (training/probe.py) into
                                             # <out>.probe.npz beside the model, when the verify extra is installed
    whisper_head: bool = True                # also train the Whisper proposer's head (training/whisper_head.py) into
                                             # <out>.whisper.npz, with the verify extra and a shipped head for the set
    dim_dropout: float = 0.0                 # share of the 96 embedding dimensions zeroed per training window
    norm_dropout: float = 0.0                # the same after the head's LayerNorm, the others scaled up (inverted)
    norm_gain: float = 0.0                   # > 0: each normalised dimension times exp(N(0, this)) per window
    mixup: float = 0.0                       # > 0: training windows mixed in pairs, weight ~ Beta(this, this)
    logit_norm: float = 0.0                  # > 0: LogitNorm's temperature (train.normalised_logits) in training
    head_context: int = 0                    # > 0: the head sees only the last this many of its HEAD_FRAMES embeddings
    ensemble: int = 1                        # > 1: this many heads from seeds seed, seed + 1, ..., posteriors averaged
    engine_balance: float = 0.0              # > 0: each engine's calls repeated up to the largest's hours, at most
    #                                          this many times (calltrain.balance_engines); 0: as synthesised
    consistency: float = 0.0                 # > 0: weight of a Jensen-Shannon term between a window's posteriors and
    #                                          those of the same step of another rendering of its call (its other
    #                                          channel copy, or a warped twin: calltrain.sibling_calls)
    weight_average: int = 0                  # > 0: the head returned is the average of its weights after every step
    #                                          from this epoch on (1-based), BatchNorm statistics recomputed
    #                                          (train.train_head; the mining round averages all its steps); 0: the
    #                                          best epoch's weights
    max_pool: int = 0                        # > 0: from this epoch on (1-based), each keyword occurrence trains only
    #                                          its window where the head gives the keyword the highest posterior,
    #                                          chosen again every epoch (a max-pooling loss over the occurrence's
    #                                          keyword-end range; train.pooled_windows); 0: all of them
    dense: float = 0.0                       # > 0: weight of a per-position term: each position of the head's
    #                                          convolutions classifies the step whose window ends where its receptive
    #                                          field ends (calltrain.dense_labels); the saved head is the plain head
    phone_aux: float = 0.0                   # > 0: weight of the same per-position term with phone targets instead:
    #                                          each position names the phone said at its embedding's centre (from
    #                                          the synthesisers' timelines, calltrain.phone_labels); the plain head
    aux_block: int = 3                       # the per-position term reads this convolution block's output (1-3)


@dataclass(kw_only=True)
class CallsCalibrateSection:
    """[calibrate] of a [calls] recipe."""
    budget_fa_per_hour: float = 0.5
    max_latency_p50_s: float = config.LATENCY_TARGET_P50_S  # smoothing: best recall among the windows this fast
    # > 0: the shipped model's thresholds are this one value for every keyword instead of the per-keyword
    # thresholds calibrated on validation voices (which are too easy: see the README); the folds keep theirs
    common_threshold: float = 0.0


# --- recipes --------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Recipe:
    """What every recipe has: the top-level keys and [data]. `path` is the TOML file (not a key of it)."""
    path: Path | None = None
    name: str = "model"                      # the artifact's name
    seed: int = 0                            # a clip recipe's draws; a [calls] recipe's head training only
    out: Path = Path("models/model.pt")      # the artifact (its model card goes next to it)
    work_dir: Path = Path("runs/default")    # caches, stored calls, evaluation output
    keywords: Path | None = None             # keyword set TOML (None: the French default)
    data: DataSection = field(default_factory=DataSection)


@dataclass(kw_only=True)
class ClipRecipe(Recipe):
    """A clip recipe (training/configs/default.toml, tiny.toml)."""
    synth: SynthSection = field(default_factory=SynthSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    train: ClipTrainSection = field(default_factory=ClipTrainSection)
    calibrate: ClipCalibrateSection = field(default_factory=ClipCalibrateSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)


@dataclass(kw_only=True)
class CallsRecipe(Recipe):
    """A [calls] recipe (training/configs/calls.toml, calls_tiny.toml, en_wake.toml, en_wake_tiny.toml)."""
    calls: CallPlan = field(default_factory=CallPlan)
    train: CallsTrainSection = field(default_factory=CallsTrainSection)
    calibrate: CallsCalibrateSection = field(default_factory=CallsCalibrateSection)


# --- loading --------------------------------------------------------------------------------------------------
def load_recipe(path: str | os.PathLike, overrides=()) -> ClipRecipe | CallsRecipe:
    """Read the recipe TOML at `path`, apply `overrides` ("section.key=value" strings, as --set gives them) and
    return the typed recipe with every path absolute. Raises SpotterError (one line naming the file) when the file
    is missing or not TOML, or has an unknown section or key or a value of the wrong type."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpotterError(f"{path}: recipe not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpotterError(f"{path}: cannot read the recipe ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpotterError(f"{path}: invalid TOML ({exc})") from None
    cls = CallsRecipe if "calls" in table else ClipRecipe
    from_cli = apply_overrides(table, overrides, cls, path)
    recipe = _build(cls, table, _Where(path, (), from_cli))
    recipe.path = path.absolute()
    return recipe


def apply_overrides(table: dict, overrides, cls: type, path: Path) -> set[tuple[str, ...]]:
    """Set each "a.b=value" of `overrides` in `table`; the value is read as the field's type expects (text for
    text and path fields, else a number, true/false or a JSON list/table). Returns the keys set this way."""
    keys = set()
    for ov in overrides or ():
        key, sep, value = ov.partition("=")
        if not sep or not key:
            raise SpotterError(f"{path}: --set {ov!r}: expected KEY=VALUE, e.g. train.epochs=5")
        *parents, leaf = key.split(".")
        node = table
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpotterError(f"{path}: --set {key}: {p!r} is not a section")
        hint = _field_hint(cls, key.split("."))
        node[leaf] = value if hint is not None and _is_text(hint) else _coerce(value)
        keys.add(tuple(key.split(".")))
    return keys


def _coerce(value: str):
    """A command-line value as TOML would type it: int, float, true/false, JSON list or table, else text."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value.startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


@dataclass(frozen=True)
class _Where:
    """Where a table being read sits: the file, its key path, and the keys set on the command line."""
    file: Path
    keys: tuple[str, ...]
    from_cli: set

    def at(self, key: str) -> "_Where":
        return _Where(self.file, self.keys + (key,), self.from_cli)

    def section(self) -> str:
        """"[train] " inside a section, "" at the top level."""
        return f"[{'.'.join(self.keys)}] " if self.keys else ""

    def name(self) -> str:
        """The key being read as messages name it: "[train] epochs", or "seed" at the top level."""
        return f"[{'.'.join(self.keys[:-1])}] {self.keys[-1]}" if len(self.keys) > 1 else self.keys[-1]

    def fail(self, problem: str) -> SpotterError:
        return SpotterError(f"{self.file}: {problem}")


def _build(cls: type, table: dict, where: _Where):
    """An instance of the dataclass `cls` from a TOML table: unknown keys refused, values type-checked, paths made
    absolute (relative to the recipe's folder, or to the working directory for command-line values)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.name != "path"]
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            raise where.fail(_unknown(cls, key, value, known, where))
        hint = hints[key]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise where.fail(f"[{key}] must be a table, got {_short(value)}")
            kwargs[key] = _build(hint, value, where.at(key))
        else:
            kwargs[key] = _value(value, hint, where.at(key))
    for f in fields(cls):                  # path defaults are relative to the recipe's folder too
        if f.name not in kwargs and f.name != "path" and _is_path(hints[f.name]):
            kwargs[f.name] = _absolute(f.default, where.file.parent)
    return cls(**kwargs)


def _unknown(cls: type, key: str, value, known: list[str], where: _Where) -> str:
    """The one-line message for a key `cls` does not have."""
    if not where.keys and isinstance(value, dict):
        kind = "a [calls] recipe" if cls is CallsRecipe else "a clip recipe"
        sections = ", ".join(f"[{k}]" for k in known if is_dataclass(typing.get_type_hints(cls)[k]))
        return f"unknown section [{key}] for {kind} (known: {sections})"
    return f"{where.section()}unknown key {key!r} (known: {', '.join(sorted(known))})"


def _value(value, hint, where: _Where):
    """`value` checked against the field type `hint` (tuples from lists, floats from ints, paths absolute)."""
    try:
        checked = _check(value, hint)
    except TypeError as exc:
        raise where.fail(f"{where.name()}: expected {exc}, got {_short(value)}") from None
    if _is_path(hint) and checked is not None:
        base = Path.cwd() if where.keys in where.from_cli else where.file.parent
        checked = _absolute(checked, base)
    return checked


def _check(value, hint):
    """`value` converted to `hint` (Path, bool, int, float, str, tuple[...], dict[str, X] or an optional of one);
    raises TypeError(description of what was expected) when it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0])
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise TypeError("a path (text)")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("true or false")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and isinstance(value, float)):
            raise TypeError("an integer" if hint is int else "a number")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("text")
        return value
    if origin is tuple:
        return _check_sequence(value, args)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError("a table")
        return {k: _item(v, args[1], repr(k)) for k, v in value.items()}
    raise TypeError(f"a value of type {hint}")   # a field type this loader does not know (a bug here)


def _check_sequence(value, args: tuple):
    """A TOML list as the tuple type with `args` (tuple[X, ...] or a fixed tuple[X, Y])."""
    if not isinstance(value, list):
        raise TypeError("a list")
    if len(args) == 2 and args[1] is Ellipsis:
        kinds = [args[0]] * len(value)
    elif len(value) != len(args):
        raise TypeError(f"a list of {len(args)} values")
    else:
        kinds = list(args)
    return tuple(_item(v, k, f"item {i + 1}") for i, (v, k) in enumerate(zip(value, kinds)))


def _item(value, hint, name: str):
    """One item of a list or table checked against `hint`; the TypeError says which item."""
    try:
        return _check(value, hint)
    except TypeError as exc:
        raise TypeError(f"{exc} for {name} (got {_short(value)})") from None


def _field_hint(cls: type, keys: list[str]):
    """The type of the field at `keys` (e.g. ["train", "epochs"]) of the dataclass cls, None if there is none."""
    hint = cls
    for key in keys:
        if not is_dataclass(hint) or key == "path":
            return None
        hint = typing.get_type_hints(hint).get(key)
    return hint


def _is_text(hint) -> bool:
    """A field read as text from the command line (str or path, or a list of paths)."""
    return hint is str or (_is_path(hint) and typing.get_origin(hint) is not tuple)


def _is_path(hint) -> bool:
    """Path, Path | None or tuple[Path, ...]."""
    return hint is Path or Path in typing.get_args(hint)


def _absolute(p, base: Path):
    """p (a Path, a tuple of them or None) with relative paths joined to base (and resolved: no "..")."""
    if p is None:
        return None
    if isinstance(p, tuple):
        return tuple(_absolute(x, base) for x in p)
    p = Path(p)
    return p if p.is_absolute() else (base / p).resolve()


# --- as plain data --------------------------------------------------------------------------------------------
def display_path(p) -> str:
    """A path as a command line would name it: relative to the source tree when inside it, else absolute."""
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def recipe_meta(recipe: Recipe) -> dict:
    """The recipe as plain JSON data for an artifact's metadata: every section with its defaults, paths as
    display_path gives them, without the recipe file's own path."""
    def plain(x):
        if isinstance(x, Path):
            return display_path(x)
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x
    data = asdict(recipe)
    data.pop("path", None)
    return plain(data)

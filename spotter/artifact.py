"""Torch-free parts of the model artifact: validation helpers shared by the torch artifact (spotter/model.py)
and its ONNX export (spotter/onnxmodel.py), hashing, and the default model paths."""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

from . import config

MAX_HEAD_CHANNELS = 4096
MAX_KEYWORD_DURATION_S = 5.0
MAX_MODEL_NAME = 200


_short = config._describe        # a value's type and a one-line preview, for error messages


def keeping_keyword_set_on_error(load):
    """Decorator for artifact loaders: a refused artifact leaves the previously active keyword set active."""
    import functools

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        previous = config.KEYWORD_SET
        try:
            return load(*args, **kwargs)
        except BaseException:
            config.use_keyword_set(previous)
            raise
    return wrapper


def activate_keyword_set(stored, path) -> None:
    """Make the keyword set stored in an artifact the active one (config.use_keyword_set). An artifact without a
    stored set was made before sets were data, for the French default set; a malformed one is a SpotterError
    naming path."""
    from . import keywordset
    ks = keywordset.default() if stored is None else keywordset.KeywordSet.from_dict(stored, f"{path}: keyword_set")
    if ks != config.KEYWORD_SET:
        config.use_keyword_set(ks)


def _same(stored, expected) -> bool:
    """stored == expected for plain data; False (not an exception) when stored holds tensors or other objects."""
    try:
        return type(stored) is type(expected) and bool(stored == expected)
    except Exception:
        return False


def _meta_problem(meta) -> str | None:
    """Why the artifact's `meta` table is unusable (field named), None if it is fine."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        return f"meta: expected a table, got {_short(meta)}"
    name = meta.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_MODEL_NAME):
        return f"meta.name: expected a non-empty text of at most {MAX_MODEL_NAME} characters, got {_short(name)}"
    durations = meta.get("keyword_durations_s")
    if durations is None:
        return None
    if not isinstance(durations, dict):
        return f"meta.keyword_durations_s: expected a table keyword -> seconds, got {_short(durations)}"
    for k, v in durations.items():
        if k not in config.KEYWORDS:
            return f"meta.keyword_durations_s: unknown keyword {_short(k)}"
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or not 0 < v <= MAX_KEYWORD_DURATION_S):
            return (f"meta.keyword_durations_s.{k}: expected seconds in (0, {MAX_KEYWORD_DURATION_S:g}], "
                    f"got {_short(v)}")
    return None



def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _models_dir() -> Path:
    """The copy a plain `pip install .` puts in the package (spotter/models, package data: the ONNX export and its
    card; the torch artifact is not installed), else models/ of the source tree (a checkout or an editable
    install). An installed package never looks outside itself (site-packages/models is not ours)."""
    here = Path(__file__).resolve().parent
    packaged = here / "models"
    return packaged if (packaged / "default.onnx").is_file() else here.parent / "models"


MODELS_DIR = _models_dir()
DEFAULT_MODEL = MODELS_DIR / "default.pt"          # the torch artifact (training, evaluation, export)
DEFAULT_ONNX_MODEL = MODELS_DIR / "default.onnx"   # its export (`spotter export`): what the runtime runs


def default_model_path() -> Path:
    """The shipped torch artifact (models/default.pt), overridable with SPOTTER_MODEL."""
    return Path(os.environ.get("SPOTTER_MODEL", DEFAULT_MODEL))


def default_runtime_model_path() -> Path:
    """What replay/listen/console run by default: $SPOTTER_MODEL if set (.pt or .onnx), else models/default.onnx."""
    return Path(os.environ.get("SPOTTER_MODEL", DEFAULT_ONNX_MODEL))

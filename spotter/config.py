"""The one place for configuration: keywords, services, labels, front-end and detector parameters.

Everything that must agree between training and streaming lives here. A trained model artifact stores a
copy of the relevant parts (labels, front end, thresholds, services) and is refused if they do not match.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

from . import keywordset

# --- audio -------------------------------------------------------------------------------------------
SAMPLE_RATE = 16000          # Hz, everything inside the spotter runs at this rate
HOP_SAMPLES = 160            # 10 ms mel hop
WIN_SAMPLES = 400            # 25 ms mel window
N_FFT = 512
N_MELS = 32
EMBED_WINDOW = 76            # mel frames seen by one speech_embedding evaluation (0.76 s)
EMBED_STEP = 8               # mel frames between two embeddings (80 ms)
EMBED_DIM = 96
STEP_SAMPLES = HOP_SAMPLES * EMBED_STEP   # 1280 samples = 80 ms: one streaming step
HEAD_FRAMES = 16             # embeddings seen by the keyword head (16 x 80 ms = 1.28 s of steps, 1.96 s of audio)
FRAME_S = HOP_SAMPLES / SAMPLE_RATE       # 0.01 s per mel frame
STEP_S = STEP_SAMPLES / SAMPLE_RATE       # 0.08 s per streaming step
# A mel frame spans N_FFT samples (the 400-sample Hann window sits inside a 512-sample frame), so
# n_frames(n) = (n - N_FFT) // HOP + 1, and HEAD_FRAMES embeddings need 76 + 8 * 15 = 196 frames:
WINDOW_FRAMES = EMBED_WINDOW + EMBED_STEP * (HEAD_FRAMES - 1)   # 196 mel frames behind one head decision
CLIP_SAMPLES = N_FFT - HOP_SAMPLES + HOP_SAMPLES * WINDOW_FRAMES
# = 31712 samples (1.982 s): the audio that yields exactly HEAD_FRAMES embeddings

# --- stream priming ---------------------------------------------------------------------------------
# Every stream (live, replay, offline, ONNX) is processed as if preceded by digital silence, so that a keyword
# in its first two seconds is detected like anywhere else. PRIME_STEPS steps of zeros fill all streaming state:
# the mel window (EMBED_WINDOW // EMBED_STEP steps, + 2 for the front end's context and rounding) and then the
# head's HEAD_FRAMES embeddings. More silence changes nothing: the state is then stationary.
PRIME_STEPS = EMBED_WINDOW // EMBED_STEP + 2 + HEAD_FRAMES      # 27 steps
PRIME_S = PRIME_STEPS * STEP_S                                  # 2.16 s

# --- product vocabulary -------------------------------------------------------------------------------
# The keyword set is data (spotter/keywordset.py): the French emergency set is the default. The names below are
# the *active* set's, read as config.KEYWORDS etc. at call time; one process works with one set at a time, and
# loading a model artifact activates the set it was trained with (use_keyword_set).
OTHER = keywordset.OTHER
NOISE = keywordset.NOISE
KEYWORD_SET: keywordset.KeywordSet = keywordset.default()
KEYWORDS: tuple[str, ...] = ()
LABELS: tuple[str, ...] = ()            # the model classes: keywords, then other and noise
KEYWORD_SERVICE: dict = {}              # keyword -> service id ('15'); empty for a set without services
SERVICES: dict = {}                     # service id -> name ('SAMU')
SERVICE_SHORT: dict = {}                # where space is short
KEYWORD_ASCII: dict = {}                # ASCII folder names for recordings (<root>/<ascii>/...wav)


def use_keyword_set(ks: keywordset.KeywordSet) -> keywordset.KeywordSet:
    """Make ks the process's active keyword set; returns the previous one (to restore it)."""
    global KEYWORD_SET, KEYWORDS, LABELS, KEYWORD_SERVICE, SERVICES, SERVICE_SHORT, KEYWORD_ASCII
    previous = KEYWORD_SET
    KEYWORD_SET = ks
    KEYWORDS, LABELS = ks.keywords, ks.labels
    KEYWORD_SERVICE, SERVICES, SERVICE_SHORT = dict(ks.service), dict(ks.services), dict(ks.service_short)
    KEYWORD_ASCII = dict(ks.ascii)
    return previous


use_keyword_set(KEYWORD_SET)


@dataclass(frozen=True)
class FrontEnd:
    """Parameters of the log-mel front end; must match the speech_embedding model's melspectrogram."""
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_samples: int = WIN_SAMPLES
    hop_samples: int = HOP_SAMPLES
    n_mels: int = N_MELS
    embed_window: int = EMBED_WINDOW
    embed_step: int = EMBED_STEP
    head_frames: int = HEAD_FRAMES

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetectorConfig:
    """Streaming decision parameters (per-keyword thresholds are calibrated and stored in the artifact)."""
    thresholds: dict = field(default_factory=lambda: {k: 0.5 for k in KEYWORDS})
    smoothing_steps: int = 5          # moving average of posteriors over this many 80 ms steps (calibrated)
    refractory_s: float = 1.0         # after an event, the same keyword cannot fire again for this long
    max_hold_steps: int = 1           # an event is emitted at most this many steps after crossing its threshold
    #                                   (1: at the crossing; tools/latency_tradeoff.py measured 1-3 at equal recall)
    # call-level suggestion
    suggestion_min_evidence: float = 0.5   # summed event scores needed before a service is suggested

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        """Build from a stored table; ValueError('<field>: <problem>') if a value has a wrong type or range."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a table of detector parameters, got {type(d).__name__}")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError('<field>: <problem>') for the first parameter of a wrong type or out of range."""
        th = self.thresholds
        if not isinstance(th, dict):
            raise ValueError(f"thresholds: expected a table keyword -> number, got {_describe(th)}")
        missing = [k for k in KEYWORDS if k not in th]
        if missing:
            raise ValueError(f"thresholds: missing for {missing}")
        unknown = sorted(str(k) for k in th if k not in KEYWORDS)
        if unknown:
            raise ValueError(f"thresholds: unknown keyword(s) {unknown}")
        for k in KEYWORDS:
            _check_number(f"thresholds.{k}", th[k], 0.0, 1.0)
        if not _is_int(self.smoothing_steps) or not 1 <= self.smoothing_steps <= MAX_SMOOTHING_STEPS:
            raise ValueError(f"smoothing_steps: expected a whole number from 1 to {MAX_SMOOTHING_STEPS}, "
                             f"got {_describe(self.smoothing_steps)}")
        _check_number("refractory_s", self.refractory_s, 0.0, MAX_REFRACTORY_S)
        if not _is_int(self.max_hold_steps) or not 1 <= self.max_hold_steps <= MAX_SMOOTHING_STEPS:
            raise ValueError(f"max_hold_steps: expected a whole number from 1 to {MAX_SMOOTHING_STEPS}, "
                             f"got {_describe(self.max_hold_steps)}")
        _check_number("suggestion_min_evidence", self.suggestion_min_evidence, 0.0, MAX_MIN_EVIDENCE)


# Product target for the time from a keyword's end to its event (issue 13: p50 <= 0.20 s). Calibration keeps the
# smoothing window with the best validation recall among those that meet it (training/calibrate.py).
LATENCY_TARGET_P50_S = 0.20
MAX_SMOOTHING_STEPS = 100        # 8 s of 80 ms steps
MAX_REFRACTORY_S = 60.0
MAX_MIN_EVIDENCE = 100.0


def _describe(v) -> str:
    """A value's type and a short one-line preview (an array or tensor by its shape) for error messages."""
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"{type(v).__name__} of shape {tuple(v.shape)}"
    text = " ".join(repr(v).split())
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_number(name: str, v, lo: float, hi: float, low_open: bool = False) -> None:
    """ValueError unless v is a finite real number in [lo, hi] ((lo, hi] with low_open)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name}: expected a number, got {_describe(v)}")
    if v < lo or v > hi or (low_open and v == lo):
        raise ValueError(f"{name}: {v:g} is out of range {'(' if low_open else '['}{lo:g}, {hi:g}]")


def service_of(label: str) -> str | None:
    """Service number ('15', '17', '18') of a keyword, None for other/noise."""
    return KEYWORD_SERVICE.get(label)

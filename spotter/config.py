"""The one place for configuration: keywords, services, labels, front-end and detector parameters.

Everything that must agree between training and streaming lives here. A trained model artifact stores a
copy of the relevant parts (labels, front end, thresholds, services) and is refused if they do not match.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
# A mel frame spans N_FFT samples (the 400-sample Hann window sits inside a 512-sample frame), so
# n_frames(n) = (n - N_FFT) // HOP + 1, and HEAD_FRAMES embeddings need 76 + 8 * 15 = 196 frames:
CLIP_SAMPLES = N_FFT - HOP_SAMPLES + HOP_SAMPLES * (EMBED_WINDOW + EMBED_STEP * (HEAD_FRAMES - 1))
# = 31712 samples (1.982 s): the audio that yields exactly HEAD_FRAMES embeddings

# --- product vocabulary -------------------------------------------------------------------------------
SERVICES = {
    "15": "SAMU",
    "17": "Police secours",
    "18": "Sapeurs-pompiers",
}

KEYWORD_SERVICE = {
    "malaise": "15",
    "hémorragie": "15",
    "brûlure": "15",
    "intoxication": "15",
    "violences": "17",
    "agression": "17",
    "vol": "17",
    "cambriolage": "17",
    "incendie": "18",
    "gaz": "18",
    "effondrement": "18",
    "électrocution": "18",
}
KEYWORDS = tuple(KEYWORD_SERVICE)
OTHER = "other"
NOISE = "noise"
LABELS = KEYWORDS + (OTHER, NOISE)   # the 14 model classes, in this order

# ASCII folder names for recordings (<root>/<keyword>/...wav); both spellings are accepted when reading.
KEYWORD_ASCII = {
    "malaise": "malaise", "hémorragie": "hemorragie", "brûlure": "brulure", "intoxication": "intoxication",
    "violences": "violences", "agression": "agression", "vol": "vol", "cambriolage": "cambriolage",
    "incendie": "incendie", "gaz": "gaz", "effondrement": "effondrement", "électrocution": "electrocution",
}


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
    # call-level suggestion
    suggestion_min_evidence: float = 0.5   # summed event scores needed before a service is suggested

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        missing = set(KEYWORDS) - set(cfg.thresholds)
        if missing:
            raise ValueError(f"detector thresholds missing for {sorted(missing)}")
        return cfg


def service_of(label: str) -> str | None:
    """Service number ('15', '17', '18') of a keyword, None for other/noise."""
    return KEYWORD_SERVICE.get(label)

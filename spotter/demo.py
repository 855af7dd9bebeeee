"""The demo call: a short French emergency call synthesized with espeak-ng on first use (nothing shipped in git)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import config
from .errors import SpotterError

DEMO_VOICE = "fr+michel"     # an espeak-ng voice held out of the default model's training (its test split)
DEMO_SPEED = 150
DEMO_PARTS = (
    "Allô, les pompiers ? Venez vite s'il vous plaît.",
    "Il y a un incendie",
    "au troisième étage de mon immeuble, au douze rue des Lilas.",
    "Et ça sent le gaz",
    "dans tout l'escalier.",
)
GAP_S = 0.35


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spotter"


def espeak(text: str, voice: str = DEMO_VOICE, speed: int = DEMO_SPEED, pitch: int = 50) -> np.ndarray:
    """Synthesize French text with espeak-ng -> float32 16 kHz mono."""
    import soundfile as sf
    from scipy.signal import resample_poly
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpotterError("espeak-ng: not installed (apt-get install espeak-ng)")
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
                       check=True, capture_output=True)
        audio, sr = sf.read(tmp.name, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sr != config.SAMPLE_RATE:
        g = np.gcd(sr, config.SAMPLE_RATE)
        audio = resample_poly(audio, config.SAMPLE_RATE // g, sr // g).astype(np.float32)
    return audio


def demo_call_path(out: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Path of the demo call WAV, synthesizing it if needed."""
    import soundfile as sf
    path = Path(out) if out else cache_dir() / f"demo_call_{DEMO_VOICE}.wav"
    if path.exists() and not force:
        return path
    gap = np.zeros(int(GAP_S * config.SAMPLE_RATE), dtype=np.float32)
    parts = [gap]
    for text in DEMO_PARTS:
        parts += [espeak(text), gap]
    audio = np.concatenate(parts)
    audio = 0.5 * audio / max(1e-6, float(np.max(np.abs(audio))))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, config.SAMPLE_RATE, subtype="PCM_16")
    return path

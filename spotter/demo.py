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


ESPEAK_TIMEOUT_S = 60


def _first_line(stderr: bytes | None) -> str:
    text = (stderr or b"").decode("utf-8", "replace").strip()
    return f": {text.splitlines()[0][:200]}" if text else ""


def _usable(path: Path) -> bool:
    """A cached demo file that is a readable, non-empty audio file (an empty or torn one is regenerated)."""
    from .audio import open_audio
    try:
        open_audio(path)
    except SpotterError:
        return False
    return True


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
        try:
            subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
                           check=True, capture_output=True, timeout=ESPEAK_TIMEOUT_S)
            audio, sr = sf.read(tmp.name, dtype="float32")
        except subprocess.CalledProcessError as exc:
            raise SpotterError(f"espeak-ng: synthesis failed with voice {voice} (exit {exc.returncode}"
                               f"{_first_line(exc.stderr)})") from None
        except subprocess.TimeoutExpired:
            raise SpotterError(f"espeak-ng: synthesis took more than {ESPEAK_TIMEOUT_S} s") from None
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise SpotterError(f"espeak-ng: no usable audio from voice {voice} ({exc})") from None
    if audio.size == 0:
        raise SpotterError(f"espeak-ng: no audio from voice {voice}")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sr != config.SAMPLE_RATE:
        g = np.gcd(sr, config.SAMPLE_RATE)
        audio = resample_poly(audio, config.SAMPLE_RATE // g, sr // g).astype(np.float32)
    return audio


def demo_call_path(out: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Path of the demo call WAV, synthesizing it if needed."""
    from .audio import write_wav
    path = Path(out) if out else cache_dir() / f"demo_call_{DEMO_VOICE}.wav"
    if not force and _usable(path):
        return path
    gap = np.zeros(int(GAP_S * config.SAMPLE_RATE), dtype=np.float32)
    parts = [gap]
    for text in DEMO_PARTS:
        parts += [espeak(text), gap]
    audio = np.concatenate(parts)
    audio = 0.5 * audio / max(1e-6, float(np.max(np.abs(audio))))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, audio, config.SAMPLE_RATE)      # atomic: an interrupted run leaves no torn demo file
    except OSError as exc:
        raise SpotterError(f"{path}: cannot write the demo call ({exc.strerror or exc})") from None
    return path

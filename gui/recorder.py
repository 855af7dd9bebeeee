"""Keyword samples for retraining: record from the microphone or cut from a replayed call, listen, save.

Samples are saved as 16 kHz 16-bit WAV (spotter.audio.write_wav, atomic) under
``<root>/<keyword_ascii>/<YYYYmmdd-HHMMSS-mmm>.wav``; takes that were never classified go to
``<root>/_non_classes/``. Also: playback of takes and of the replayed call when an output device exists.
No Qt here: the console drives these objects from its widgets.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from spotter import config
from spotter.audio import StreamResampler, iter_audio, write_wav
from spotter.errors import SpotterError

DEFAULT_ROOT = Path.home() / "spotter-recordings"
UNSORTED_DIR = "_non_classes"        # takes saved without a keyword (or autosaved on close)
SEGMENT_MARGIN_S = 0.3               # context kept around a detection cut from a call
MAX_TAKE_S = 30.0                    # a microphone take stops by itself after this long


def default_root() -> Path:
    """$SPOTTER_RECORDINGS, else ~/spotter-recordings."""
    return Path(os.environ.get("SPOTTER_RECORDINGS", DEFAULT_ROOT))


def folder_for(keyword: str | None) -> str:
    """ASCII folder name of a keyword; the unsorted folder for None."""
    if keyword is None:
        return UNSORTED_DIR
    if keyword not in config.KEYWORD_ASCII:
        raise SpotterError(f"unknown keyword '{keyword}' (expected one of {', '.join(config.KEYWORDS)})")
    return config.KEYWORD_ASCII[keyword]


def sample_path(root: str | os.PathLike, keyword: str | None, when: datetime | None = None,
                prefix: str = "") -> Path:
    """A new, unused path <root>/<folder>/<prefix><timestamp>.wav (a suffix -2, -3... avoids collisions)."""
    when = when or datetime.now()
    folder = Path(root) / folder_for(keyword)
    stem = prefix + when.strftime("%Y%m%d-%H%M%S-") + f"{when.microsecond // 1000:03d}"
    path, n = folder / f"{stem}.wav", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.wav", n + 1
    return path


@dataclass
class Take:
    """One recorded or cut sample, waiting to be listened to and saved."""
    audio: np.ndarray          # float32 mono at SAMPLE_RATE
    keyword: str | None        # proposed class (None: not classified)
    origin: str                # where it came from, for display
    saved_to: Path | None = None

    @property
    def duration_s(self) -> float:
        return len(self.audio) / config.SAMPLE_RATE


def save_take(root: str | os.PathLike, take: Take, keyword: str | None = None, unsorted: bool = False) -> Path:
    """Write the take under root (in its keyword's folder, or the unsorted folder) and remember where."""
    kw = None if unsorted else (keyword if keyword is not None else take.keyword)
    prefix = f"{folder_for(take.keyword)}-" if unsorted and take.keyword else ""
    path = sample_path(root, kw, prefix=prefix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, take.audio, config.SAMPLE_RATE)
    except OSError as exc:
        raise SpotterError(f"{path}: cannot save the sample ({exc.strerror or exc})") from None
    take.saved_to = path
    return path


def detection_span(start_s: float, end_s: float, margin_s: float = SEGMENT_MARGIN_S) -> tuple[float, float]:
    return max(0.0, start_s - margin_s), end_s + margin_s


def cut_segment(path: str | os.PathLike, start_s: float, end_s: float) -> np.ndarray:
    """Samples [start_s, end_s) of an audio file, as float32 mono at SAMPLE_RATE (SpotterError if unreadable)."""
    if end_s <= start_s:
        raise SpotterError(f"{path}: empty segment {start_s:.2f}-{end_s:.2f} s")
    want = int(round((end_s - start_s) * config.SAMPLE_RATE))
    parts, got = [], 0
    for block in iter_audio(path, block_samples=config.SAMPLE_RATE // 2, start_s=start_s):
        parts.append(block[:want - got])
        got += len(parts[-1])
        if got >= want:
            break
    if not got:
        raise SpotterError(f"{path}: nothing to cut at {start_s:.2f} s (past the end of the file)")
    return np.concatenate(parts).astype(np.float32)


# --- audio devices -------------------------------------------------------------------------------------
def _close_stream(stream) -> None:
    """Stop and close a sounddevice stream; a device that vanished meanwhile is not an error here."""
    if stream is None:
        return
    try:
        stream.stop()
        stream.close()
    except Exception:
        pass


def _sd():
    try:
        import sounddevice as sd
    except OSError as exc:
        raise SpotterError(f"PortAudio unavailable ({exc})") from None
    return sd


def output_available() -> bool:
    """True if a default output device exists."""
    try:
        sd = _sd()
        dev = sd.query_devices(kind="output")
        return bool(dev) and dev.get("max_output_channels", 0) > 0
    except Exception:   # no device, no PortAudio, no default
        return False


def play(audio: np.ndarray, sr: int = config.SAMPLE_RATE) -> None:
    """Play a take on the default output (non-blocking); SpotterError when there is no output device."""
    if not output_available():
        raise SpotterError("no audio output device")
    try:
        _sd().play(np.asarray(audio, dtype=np.float32), sr)
    except Exception as exc:
        raise SpotterError(f"audio output failed: {exc}") from None


def stop_playback() -> None:
    try:
        _sd().stop()
    except Exception:
        pass


class MicRecorder:
    """Records one take from an input device into a preallocated buffer (the callback never allocates)."""

    def __init__(self, device: int | str | None = None, max_s: float = MAX_TAKE_S):
        from spotter.sources import list_input_devices, resolve_device
        self.device = resolve_device(device, list_input_devices())
        self.rate = int(round(self.device["default_samplerate"]))
        self._buf = np.zeros(int(max_s * self.rate), dtype=np.float32)
        self._n = 0
        self._lock = threading.Lock()
        self._stream = None

    def _callback(self, indata, frames, time_info, status) -> None:
        with self._lock:
            k = min(frames, len(self._buf) - self._n)
            self._buf[self._n:self._n + k] = indata[:k, 0]
            self._n += k

    def start(self) -> None:
        sd = _sd()
        try:
            self._stream = sd.InputStream(device=self.device["index"], samplerate=self.rate, channels=1,
                                          dtype="float32", callback=self._callback)
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise SpotterError(f"cannot open input device {self.device['name']}: {exc}") from None

    @property
    def recording(self) -> bool:
        return self._stream is not None

    @property
    def elapsed_s(self) -> float:
        return self._n / self.rate

    @property
    def full(self) -> bool:
        return self._n >= len(self._buf)

    def stop(self) -> np.ndarray:
        """Stop and return the take at SAMPLE_RATE."""
        _close_stream(self._stream)
        self._stream = None
        with self._lock:
            raw = self._buf[:self._n].copy()
        rs = StreamResampler(self.rate, config.SAMPLE_RATE)
        return np.concatenate([rs.process(raw), rs.flush()]).astype(np.float32)


class FileMonitor:
    """Plays the replayed call on the default output at 1x from a position (operator monitoring).

    The output callback pulls blocks from spotter.audio.iter_audio; it is a listening aid kept roughly in
    step with the detector (restarted on seek/pause), not a sample-accurate clock.
    """

    BLOCK = 1024

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._stream = None
        self._iter = None
        self._pending = np.zeros(0, dtype=np.float32)

    def start(self, position_s: float) -> None:
        self.stop()
        if not output_available():
            raise SpotterError("no audio output device")
        sd = _sd()
        self._iter = iter_audio(self.path, block_samples=self.BLOCK, start_s=position_s)
        self._pending = np.zeros(0, dtype=np.float32)
        try:
            self._stream = sd.OutputStream(samplerate=config.SAMPLE_RATE, channels=1, dtype="float32",
                                           blocksize=self.BLOCK, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise SpotterError(f"audio output failed: {exc}") from None

    def _callback(self, outdata, frames, time_info, status) -> None:
        while len(self._pending) < frames and self._iter is not None:
            block = next(self._iter, None)
            if block is None:
                self._iter = None
                break
            self._pending = np.concatenate([self._pending, block])
        k = min(frames, len(self._pending))
        outdata[:k, 0] = self._pending[:k]
        outdata[k:, 0] = 0.0
        self._pending = self._pending[k:]

    def stop(self) -> None:
        _close_stream(self._stream)
        self._stream = None
        if self._iter is not None:
            self._iter.close()
            self._iter = None

    @property
    def active(self) -> bool:
        return self._stream is not None

"""Where streaming audio comes from: a microphone or a file, behind one `AudioSource` interface.

Every source delivers float32 mono SAMPLE_RATE steps through `read_step(n)` (None = end of stream).
MicSource: the PortAudio callback only copies into a RingBuffer; resampling to 16 kHz happens on the
consumer side. FileSource: streams with iter_audio, optionally paced to the wall clock, with
seek/pause/resume callable from another thread (GUI replay).
"""
from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from math import ceil
from typing import Callable, Iterator

import numpy as np

from spotter.audio import AudioInfo, AudioStats, StreamResampler, iter_audio, open_audio, sanitize
from spotter.config import SAMPLE_RATE, STEP_SAMPLES
from spotter.errors import SpotterError
from spotter.ringbuffer import RingBuffer

# --- constants -----------------------------------------------------------------------------------------
RING_SECONDS = 10.0          # default microphone ring capacity
READ_TIMEOUT_S = 2.0         # a running microphone that delivers nothing for this long is an error
FILE_BLOCK_SAMPLES = STEP_SAMPLES


@dataclass
class SourceStats:
    """Problems seen so far by a source (all zero on a healthy stream)."""
    device_overflows: int = 0     # callbacks flagged input_overflow by the audio driver
    ring_overruns: int = 0        # times the consumer fell so far behind that unread samples were overwritten
    ring_lost_samples: int = 0    # native-rate samples lost to those overruns
    nonfinite: int = 0            # NaN/inf samples replaced by 0
    clipped: int = 0              # samples at full scale

    def to_dict(self) -> dict:
        return asdict(self)


class AudioSource(ABC):
    """A stream of float32 mono SAMPLE_RATE audio; use as a context manager (start on enter, stop on exit)."""

    @abstractmethod
    def start(self) -> None:
        """Begin capturing/reading."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release resources; wakes a blocked read_step, which then returns None. Idempotent."""

    @abstractmethod
    def read_step(self, n: int = STEP_SAMPLES) -> np.ndarray | None:
        """Next n samples at SAMPLE_RATE (blocking); None at end of stream. A file's last block may be shorter."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Native rate of the underlying device or file (Hz)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Device name or file name, for display."""

    @property
    @abstractmethod
    def stats(self) -> SourceStats:
        """Counters of problems seen so far."""

    @property
    @abstractmethod
    def position_s(self) -> float:
        """Stream time (s) of the next sample read_step will return."""

    def __enter__(self) -> "AudioSource":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- devices -------------------------------------------------------------------------------------------
def _sounddevice():
    """Import sounddevice lazily (file-only use must not need PortAudio)."""
    try:
        import sounddevice as sd
    except OSError as e:   # PortAudio shared library missing
        raise SpotterError(f"audio input unavailable: PortAudio library not found ({e})") from None
    return sd


def list_input_devices() -> list[dict]:
    """Input-capable devices: dicts with index, name, channels, default_samplerate, default (bool)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError:
        return []
    try:
        default_in = sd.query_devices(kind="input")["index"]
    except (sd.PortAudioError, KeyError, ValueError, TypeError):
        default_in = None
    return [{"index": i, "name": str(d["name"]), "channels": int(d["max_input_channels"]),
             "default_samplerate": float(d["default_samplerate"]), "default": i == default_in}
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def describe_devices() -> str:
    """Human-readable device list for `spotter devices`."""
    try:
        devices = list_input_devices()
    except SpotterError as e:
        return f"no input device ({e})"
    return format_devices(devices)


def format_devices(devices: list[dict]) -> str:
    """The device list as text ("no input device found" when empty)."""
    if not devices:
        return "no input device found"
    lines = ["input devices:"]
    for d in devices:
        mark = "  (default)" if d["default"] else ""
        lines.append(f"  [{d['index']}] {d['name']} - {d['channels']} ch, {d['default_samplerate']:.0f} Hz{mark}")
    return "\n".join(lines)


def resolve_device(device: int | str | None, devices: list[dict]) -> dict:
    """Pick an input device by index, by (case-insensitive sub)name, or the default; SpotterError if none fits."""
    if not devices:
        raise SpotterError("no input device found")
    listing = ", ".join(f"[{d['index']}] {d['name']}" for d in devices)
    if device is None:
        return next((d for d in devices if d.get("default")), devices[0])
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        device = int(device)
    if isinstance(device, int):
        for d in devices:
            if d["index"] == device:
                return d
        raise SpotterError(f"input device {device} not found (available: {listing})")
    wanted = str(device).strip().lower()
    exact = [d for d in devices if d["name"].lower() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in devices if wanted in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SpotterError(f"input device '{device}' not found (available: {listing})")
    names = ", ".join(f"[{d['index']}] {d['name']}" for d in matches)
    raise SpotterError(f"input device '{device}' is ambiguous: {names}")


# --- microphone ----------------------------------------------------------------------------------------
class _ChannelReader:
    """Consumer side of one captured channel: RingBuffer (device rate) -> StreamResampler -> 16 kHz steps."""

    def __init__(self, capacity: int, rate: int):
        self.rate = rate
        self.ring = RingBuffer(capacity)
        self.resampler = StreamResampler(rate, SAMPLE_RATE)
        self.audio_stats = AudioStats()
        self.pending = np.zeros(0, dtype=np.float32)
        self.out_samples = 0

    def read_step(self, n: int, timeout: float, where: str) -> np.ndarray | None:
        while len(self.pending) < n:
            need = min(self.ring.capacity, max(1, ceil((n - len(self.pending)) * self.rate / SAMPLE_RATE)))
            chunk = self.ring.read(need, timeout=timeout)
            if chunk is None:
                if self.ring.closed:
                    return None
                raise SpotterError(f"{where}: no audio for {timeout:g} s")
            out = self.resampler.process(sanitize(chunk, self.audio_stats))
            self.pending = np.concatenate([self.pending, out]) if len(self.pending) else out
        step, self.pending = self.pending[:n], self.pending[n:]
        self.out_samples += n
        return step

    @property
    def position_s(self) -> float:
        return self.out_samples / SAMPLE_RATE + self.ring.overrun_samples / self.rate


class MicSource(AudioSource):
    """Live input at the device's native rate; callback -> RingBuffer -> (consumer) Resampler -> 16 kHz.

    With channels=C > 1 the device is opened once with C channels and each channel gets its own ring: the
    MicSource reads channel 1, and `lines()` gives one AudioSource per channel (one telephone line each).
    `stream_factory` builds the stream (default sounddevice.InputStream) and is called with keyword
    arguments device, samplerate, channels, dtype='float32', callback, finished_callback; `devices`
    replaces the device list from list_input_devices() (both let tests run without audio hardware).
    """

    def __init__(self, device: int | str | None = None, ring_seconds: float = RING_SECONDS, *,
                 stream_factory: Callable | None = None, devices: list[dict] | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S, channels: int = 1):
        self._device = resolve_device(device, list_input_devices() if devices is None else list(devices))
        available = int(self._device.get("channels", 1))
        if not isinstance(channels, int) or not 1 <= channels <= available:
            raise SpotterError(f"input device [{self._device['index']}] {self._device['name']}: cannot capture "
                               f"{channels} channels (it has {available})")
        self._rate = int(round(self._device["default_samplerate"]))
        self._readers = [_ChannelReader(max(1, int(ring_seconds * self._rate)), self._rate) for _ in range(channels)]
        self._rings = [r.ring for r in self._readers]
        self._stream_factory = stream_factory
        self._stream = None
        self._started = False
        self.read_timeout_s = read_timeout_s
        self._overflows = 0

    # --- producer side (audio thread) ----------------------------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        """PortAudio callback: count overflow flags and copy each channel into its ring (no allocation)."""
        if status is not None and getattr(status, "input_overflow", False):
            self._overflows += 1
        for c, ring in enumerate(self._rings):
            ring.write(indata[:frames, c])

    def _finished(self) -> None:
        """Called by the stream when it becomes inactive (stopped, aborted or failed)."""
        for ring in self._rings:
            ring.close()

    # --- control -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open and start the input stream (a stopped MicSource cannot be restarted: make a new one)."""
        if self._started:
            if self._rings[0].closed:
                raise RuntimeError("MicSource cannot be restarted after stop(); create a new one")
            return
        factory = self._stream_factory
        if factory is None:
            factory = _sounddevice().InputStream
        try:
            self._stream = factory(device=self._device["index"], samplerate=self._rate, channels=len(self._rings),
                                   dtype="float32", callback=self._callback, finished_callback=self._finished)
            self._stream.start()
        except SpotterError:
            raise
        except Exception as e:   # sounddevice.PortAudioError and friends
            self._stream = None
            raise SpotterError(f"cannot open input device [{self._device['index']}] "
                               f"{self._device['name']}: {e}") from None
        self._started = True

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        try:
            if stream is not None:
                try:
                    stream.stop()
                finally:
                    stream.close()
        except Exception:   # a device that vanished cannot be stopped cleanly; nothing left to release
            pass
        finally:
            self._finished()

    def lines(self) -> list["AudioSource"]:
        """One AudioSource per captured channel; starting or stopping any of them starts or stops the device."""
        return [_ChannelLine(self, c) for c in range(len(self._readers))]

    # --- consumer side -------------------------------------------------------------------------------
    def read_step(self, n: int = STEP_SAMPLES) -> np.ndarray | None:
        return self._read_channel(0, n)

    def _read_channel(self, c: int, n: int) -> np.ndarray | None:
        if not self._started:
            raise RuntimeError("MicSource.read_step() called before start()")
        where = f"input device [{self._device['index']}] {self._device['name']}"
        return self._readers[c].read_step(n, self.read_timeout_s, where if c == 0 and len(self._readers) == 1
                                          else f"{where}, channel {c + 1}")

    # --- state ---------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def name(self) -> str:
        return self._device["name"]

    @property
    def device(self) -> dict:
        return dict(self._device)

    @property
    def ring(self) -> RingBuffer:
        return self._rings[0]

    def _channel_stats(self, c: int) -> SourceStats:
        r = self._readers[c]
        return SourceStats(device_overflows=self._overflows, ring_overruns=r.ring.overrun_events,
                           ring_lost_samples=r.ring.overrun_samples,
                           nonfinite=r.audio_stats.nonfinite, clipped=r.audio_stats.clipped)

    @property
    def stats(self) -> SourceStats:
        return self._channel_stats(0)

    @property
    def position_s(self) -> float:
        return self._readers[0].position_s


class _ChannelLine(AudioSource):
    """Channel c of a multi-channel MicSource, as a source of its own (one line of `spotter listen`)."""

    def __init__(self, mic: MicSource, channel: int):
        self._mic, self._c = mic, channel

    def start(self) -> None:
        self._mic.start()

    def stop(self) -> None:
        self._mic.stop()

    def read_step(self, n: int = STEP_SAMPLES) -> np.ndarray | None:
        return self._mic._read_channel(self._c, n)

    @property
    def sample_rate(self) -> int:
        return self._mic.sample_rate

    @property
    def name(self) -> str:
        return f"{self._mic.name}, channel {self._c + 1}"

    @property
    def stats(self) -> SourceStats:
        return self._mic._channel_stats(self._c)

    @property
    def position_s(self) -> float:
        return self._mic._readers[self._c].position_s


# --- file ----------------------------------------------------------------------------------------------
class FileSource(AudioSource):
    """A file streamed as 16 kHz steps; `realtime` paces steps to the wall clock at `speed` x.

    seek(), pause(), resume(), set_pacing() and stop() may be called from another thread while a
    consumer is blocked in read_step(); a step is released when its last sample would have been
    captured live (so a paused or slowed replay behaves like a microphone).
    """

    def __init__(self, path: str | os.PathLike, realtime: bool = False, speed: float = 1.0,
                 stats: AudioStats | None = None):
        self.info: AudioInfo = open_audio(path)
        self._check_speed(speed)
        self._realtime, self._speed = bool(realtime), float(speed)
        self._cond = threading.Condition()
        self._iter: Iterator[np.ndarray] | None = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._pos = 0                  # 16 kHz index of the next sample to return
        self._seek_to: float | None = None
        self._generation = 0           # bumped by seek(): a step read before a seek is discarded
        self._paused = False
        self._pause_started = 0.0
        self._stopped = False
        self._anchor = (0.0, 0)        # (wall time, position) pair defining the pacing clock
        self._audio_stats = stats if stats is not None else AudioStats()

    @staticmethod
    def _check_speed(speed: float) -> None:
        if not 0 < speed < float("inf"):
            raise ValueError(f"speed must be a positive finite number, got {speed}")

    # --- control -------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            self._stopped = False
            if self._iter is None:
                self._open(0.0)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            if self._iter is not None:
                self._iter.close()
            self._iter = None
            self._cond.notify_all()

    def seek(self, seconds: float) -> None:
        """Continue from `seconds` (clamped to the file); takes effect at the next step."""
        with self._cond:
            self._seek_to = min(max(0.0, float(seconds)), self.info.duration_s)
            self._generation += 1
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            if not self._paused:
                self._paused = True
                self._pause_started = time.monotonic()
                self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            if self._paused:
                self._paused = False
                wall, pos = self._anchor
                self._anchor = (wall + time.monotonic() - self._pause_started, pos)
                self._cond.notify_all()

    def set_pacing(self, realtime: bool, speed: float = 1.0) -> None:
        """Switch between wall-clock pacing at `speed` x and reading as fast as possible."""
        self._check_speed(speed)
        with self._cond:
            self._realtime, self._speed = bool(realtime), float(speed)
            self._anchor = (time.monotonic(), self._pos)
            self._cond.notify_all()

    # --- reading (consumer thread) -------------------------------------------------------------------
    def _open(self, start_s: float) -> None:
        """(Re)start the decoder at start_s; caller holds the lock."""
        if self._iter is not None:
            self._iter.close()
        self._iter = iter_audio(self.info.path, FILE_BLOCK_SAMPLES, start_s=start_s, stats=self._audio_stats)
        self._pending = np.zeros(0, dtype=np.float32)
        self._pos = int(round(start_s * SAMPLE_RATE))
        self._anchor = (time.monotonic(), self._pos)

    def _take(self, n: int) -> np.ndarray:
        """Up to n decoded samples (fewer only at end of file); caller holds the lock."""
        while len(self._pending) < n:
            block = next(self._iter, None)
            if block is None:
                break
            self._pending = np.concatenate([self._pending, block]) if len(self._pending) else block
        step, self._pending = self._pending[:n], self._pending[n:]
        return step

    def read_step(self, n: int = STEP_SAMPLES) -> np.ndarray | None:
        with self._cond:
            while True:
                while self._paused and not self._stopped:
                    self._cond.wait()
                if self._stopped or self._iter is None:
                    return None
                if self._seek_to is not None:
                    self._open(self._seek_to)
                    self._seek_to = None
                generation = self._generation
                step = self._take(n)
                if len(step) == 0:
                    return None
                end = self._pos + len(step)
                # wait until the step's last sample would have been captured live
                while self._realtime and not self._stopped and generation == self._generation:
                    if self._paused:
                        self._cond.wait()
                        continue
                    wall, pos = self._anchor
                    remaining = wall + (end - pos) / (SAMPLE_RATE * self._speed) - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopped:
                    return None
                if generation != self._generation:     # seek during the wait: drop this step
                    continue
                self._pos = end
                return step

    # --- state ---------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def name(self) -> str:
        return os.path.basename(self.info.path)

    @property
    def duration_s(self) -> float:
        return self.info.duration_s

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def position_s(self) -> float:
        with self._cond:
            if self._seek_to is not None:
                return self._seek_to
            return self._pos / SAMPLE_RATE

    @property
    def stats(self) -> SourceStats:
        return SourceStats(nonfinite=self._audio_stats.nonfinite, clipped=self._audio_stats.clipped)

    @property
    def audio_stats(self) -> AudioStats:
        """The input measurements of the decoder (see spotter.audio.assess_input)."""
        return self._audio_stats

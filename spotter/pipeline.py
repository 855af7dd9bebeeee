"""The detector thread: reads 80 ms steps from an AudioSource, runs the KeywordSpotter, publishes results.

Used by `spotter listen` and by the operator console. Results go out through a thread-safe queue of
`StepResult` / `Event` / `Finished` / `Failed` items; the console drains it with a Qt timer, the CLI prints.
Events are logged (fsynced) by the spotter's sinks before they are queued.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import config
from .detector import KeywordSpotter
from .errors import SpotterError


@dataclass
class StepResult:
    """What the console shows for one 80 ms step."""
    stream_s: float
    mel: np.ndarray            # (8, 32) new log-mel frames
    posteriors: np.ndarray     # (14,) latest head posteriors
    level_db: float            # RMS level of the step, dBFS
    load: float                # processing time / audio time of the step


@dataclass
class Finished:
    source: str
    stream_s: float


@dataclass
class Failed:
    source: str
    message: str


def level_dbfs(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-10))


class Pipeline:
    """Owns one detector thread for one source. start() / stop(); results in `self.results` (a Queue)."""

    def __init__(self, source, spotter: KeywordSpotter, results: queue.Queue | None = None,
                 publish_steps: bool = True):
        self.source = source
        self.spotter = spotter
        self.results = results if results is not None else queue.Queue()
        self.publish_steps = publish_steps
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Pipeline":
        self._thread = threading.Thread(target=self._run, name="spotter-detector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self.source.stop()
        finally:
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        name = getattr(self.source, "name", "audio")
        try:
            self.source.start()
            while not self._stop.is_set():
                chunk = self.source.read_step(config.STEP_SAMPLES)
                if chunk is None:
                    break
                if chunk.size == 0:
                    continue
                t0 = time.perf_counter()
                events = self.spotter.process(chunk)
                load = (time.perf_counter() - t0) / (chunk.size / config.SAMPLE_RATE)
                if self.publish_steps:
                    self.results.put(StepResult(self.spotter.stream_time_s, self.spotter.last_mel.numpy(),
                                                self.spotter.last_posteriors.copy(), level_dbfs(chunk), load))
                for e in events:
                    self.results.put(e)
            if not self._stop.is_set():
                for e in self.spotter.flush():
                    self.results.put(e)
            self.results.put(Finished(name, self.spotter.stream_time_s))
        except SpotterError as exc:
            self.results.put(Failed(name, str(exc)))
        except Exception as exc:  # a device unplugged mid-stream, etc.: keep the caller alive, say what happened
            self.results.put(Failed(name, f"{name}: {type(exc).__name__}: {exc}"))
        finally:
            try:
                self.source.stop()
            except Exception:
                pass

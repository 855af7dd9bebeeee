"""The detector thread: reads 80 ms steps from an AudioSource, runs the KeywordSpotter, publishes results.

Used by `spotter listen` and by the operator console. Results go out through a thread-safe queue of
`StepResult` / `Event` / `CallState` / `CallReset` / `Finished` / `Failed` items, in stream order; the console
drains it with a Qt timer, the CLI prints. Events are logged (fsynced) by the spotter's sinks before they are
queued. Commands come in through `send()` (another queue) and are applied by the detector thread between two
steps, so no other thread ever touches the KeywordSpotter while the pipeline runs.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import config
from .detector import CallState, KeywordSpotter
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
class CallReset:
    """The NewCall command was applied at stream time `stream_s`: later items belong to the new call."""
    stream_s: float


@dataclass
class NewCall:
    """Command: forget the call's evidence (KeywordSpotter.new_call); answered by CallReset + CallState."""


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
    """Owns one detector thread for one source. start() / send(command) / stop(); results in `self.results`.

    After every step that decided events, and after a NewCall, the call's CallState follows in the queue.
    Every command sent before stop() returns is applied exactly once: by the thread between two steps, or by
    stop() once the thread has ended.
    """

    def __init__(self, source, spotter: KeywordSpotter, results: queue.Queue | None = None,
                 publish_steps: bool = True):
        self.source = source
        self.spotter = spotter
        self.results = results if results is not None else queue.Queue()
        self.publish_steps = publish_steps
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Pipeline":
        self._thread = threading.Thread(target=self._run, name="spotter-detector", daemon=True)
        self._thread.start()
        return self

    def send(self, command: NewCall) -> None:
        """Queue a command for the detector thread (thread-safe)."""
        self._commands.put(command)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self.source.stop()
        finally:
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout)
            if not self.running:
                self._apply_commands()

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
                self._apply_commands()
                t0 = time.perf_counter()
                out = self.spotter.process(chunk)
                load = (time.perf_counter() - t0) / (chunk.size / config.SAMPLE_RATE)
                if self.publish_steps and len(out.posteriors):
                    self.results.put(StepResult(self.spotter.stream_time_s, out.mel, out.posteriors[-1],
                                                level_dbfs(chunk), load))
                self._publish(out.events)
            if not self._stop.is_set():
                self._apply_commands()
                self._publish(self.spotter.flush())
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

    def _publish(self, events: list) -> None:
        for e in events:
            self.results.put(e)
        if events:
            self.results.put(self.spotter.call_state())

    def _apply_commands(self) -> None:
        """Apply the queued commands in order (in the detector thread, or after it ended)."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, NewCall):
                self.spotter.new_call()
                self.results.put(CallReset(self.spotter.stream_time_s))
                self.results.put(self.spotter.call_state())

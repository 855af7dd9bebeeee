"""The console's session, without any widget: the sources, the call and its detections.

Data flow: a source (MicSource or FileSource) feeds one Pipeline (the detector thread); its result queue is
drained here, in the GUI thread, by `drain()`, which returns what the window has to draw (`Drained`). The
window (gui/console.py) only turns user actions into calls of the public methods below and draws.

Thread safety: nothing here touches the KeywordSpotter while its Pipeline runs. "Nouvel appel" is a NewCall
command sent to the Pipeline, applied by the detector thread between two steps and answered by a CallReset in
the queue; items queued before it belong to the old call and are discarded. The suggested service is the
detector's own CallState, received through the queue. A seek or a model swap stops the thread, drains the old
queue (same call) and starts a new Pipeline on the same call (KeywordSpotter.reset_stream / continue_call).

With verification on (`verify=True`, or None and spotter.verify.cascade_default says so; issue 9's cascade), the
spotter is a VerifiedSpotter: the first stage's candidates are checked by Whisper in its worker thread, which puts
each VerifiedEvent into the current Pipeline's queue. Detections are the verified candidates (and those the first
stage decided alone when the verifier was busy or failed); rejected ones are counted, and logged as such, never
shown as detections. A stop, a seek or a model swap waits for the candidates already submitted, so none lands in a
queue that is no longer drained.

What the session has to say goes to a `SessionView` (French text, shown by the window): messages, "the call
was cleared", "a new stream segment starts". `MessageLog` is the Qt-free one that tests read.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field

import numpy as np

from spotter import config
from spotter.config import FRAME_S, WINDOW_FRAMES
from spotter.detector import CallState, Event, KeywordSpotter
from spotter.errors import SpotterError
from spotter.features import MEL_FLOOR
from spotter.pipeline import CallReset, Failed, Finished, NewCall, Pipeline, StepResult
from spotter.verify import VerifiedEvent

from . import recorder

MEL_HISTORY_FRAMES = 4096        # ~41 s of mel frames kept for Grad-CAM windows
SPEEDS = (("1×", True, 1.0), ("2×", True, 2.0), ("Max", False, 1.0))   # label, realtime pacing, factor
NO_DEVICE_HELP = ("Aucun micro n'est disponible sur ce poste. Branchez un périphérique d'entrée audio, "
                  "ou rejouez un appel enregistré avec « Ouvrir un appel… ».")


# --- what the session tells its view -------------------------------------------------------------------
class SessionView:
    """What the session says to whoever shows it; the defaults do nothing."""

    def error(self, text: str) -> None: ...

    def info(self, text: str, level: str = "info") -> None: ...

    def note(self, text: str) -> None: ...

    def clear_message(self) -> None: ...

    def call_cleared(self, clear_signal: bool) -> None:
        """Detections and suggestion were forgotten; with clear_signal the signal history restarts at 0 too."""

    def segment_started(self, offset_s: float, input_text: str) -> None:
        """A new stream segment is about to start at call time offset_s, from the input described by input_text;
        what the previous one left undrawn is still available from drain()."""


class MessageLog(SessionView):
    """A SessionView that keeps what it was told: (kind, text) pairs, newest last."""

    def __init__(self):
        self.messages: list[tuple[str, str]] = []

    def error(self, text: str) -> None:
        self.messages.append(("error", text))

    def info(self, text: str, level: str = "info") -> None:
        self.messages.append((level, text))

    def note(self, text: str) -> None:
        self.messages.append(("note", text))


# --- the call's data -----------------------------------------------------------------------------------
class MelHistory:
    """Recent log-mel frames keyed by absolute frame index (stream time / 10 ms), in a preallocated ring."""

    def __init__(self, capacity: int = MEL_HISTORY_FRAMES):
        self._buf = np.full((capacity, config.N_MELS), MEL_FLOOR, dtype=np.float32)
        self.end = 0              # absolute index one past the newest frame

    def reset(self) -> None:
        self._buf.fill(MEL_FLOOR)
        self.end = 0

    def push(self, frames: np.ndarray, end_frame: int) -> None:
        cap = len(self._buf)
        if end_frame - len(frames) > self.end:                         # a gap: forget what lies in it
            for i in range(self.end, min(end_frame - len(frames), self.end + cap)):
                self._buf[i % cap] = MEL_FLOOR
        for j, f in enumerate(frames[-cap:]):
            self._buf[(end_frame - min(len(frames), cap) + j) % cap] = f
        self.end = max(self.end, end_frame)

    def window(self, end_frame: int, n: int = WINDOW_FRAMES) -> np.ndarray | None:
        """Frames [end_frame - n, end_frame); frames before the stream start are silence; None if forgotten."""
        cap = len(self._buf)
        end_frame = min(end_frame, self.end)
        if end_frame - n < self.end - cap:
            return None
        idx = np.arange(end_frame - n, end_frame)
        out = self._buf[idx % cap].copy()
        out[idx < 0] = MEL_FLOOR
        return out


@dataclass
class Detection:
    """An event as the console keeps it: call-time offset, the mel window behind it, its heat map once computed."""
    id: int
    event: Event
    offset_s: float                    # call time of stream time 0 of the segment it came from
    source_path: str | None            # replayed file (None when live)
    mel: np.ndarray | None             # (196, 32) log-mel window of the head decision
    window_end_s: float                # call time of the window's end
    heat: np.ndarray | None = None
    verified: bool | None = None       # True: checked by the verifier; None: first stage alone (verification off,
    #                                    verifier busy or failed)
    verification: VerifiedEvent | None = None

    @property
    def start_s(self) -> float:
        return self.offset_s + self.event.start_s

    @property
    def end_s(self) -> float:
        return self.offset_s + self.event.end_s


def no_call_state() -> CallState:
    """The call state of a call without evidence: no suggestion, zero per service."""
    return CallState(None, {s: 0.0 for s in config.SERVICES})


@dataclass
class Drained:
    """What one drain() consumed, for the window to draw."""
    items: int = 0
    frames: np.ndarray | None = None           # newest mel frames (about max_frames), ending at position_s
    peak_db: float | None = None               # loudest step level, dBFS
    detections: list = field(default_factory=list)   # new Detections, in order
    rejected: list = field(default_factory=list)     # VerifiedEvents the verifier rejected (not detections)
    call_changed: bool = False                 # the call state (suggestion, evidence) changed
    ended: bool = False                        # the pipeline finished or failed


# --- the session ---------------------------------------------------------------------------------------
class ConsoleSession:
    """Sources, call state and detections of the console; Qt-free, so tests drive it without widgets.

    Lifecycle: install_model() once (and again to swap models), then start_live() / open_file() / seek() /
    pause() / resume() / set_speed() / stop() / new_call() in any order, drain() periodically, shutdown() at
    the end. Every public action reports problems to the view and returns False instead of raising.
    """

    def __init__(self, log=None, detector: config.DetectorConfig | None = None, view: SessionView | None = None,
                 verify: bool | None = False):
        self.view = view if view is not None else MessageLog()
        self.verify = verify                    # the Whisper cascade (spotter.verify.VerifiedSpotter); None: its
        #                                         default for the installed model (spotter.verify.cascade_default)
        self.verifying = False                  # whether the installed model runs the cascade
        self.verify_status: str | None = None   # its one-line status once a model is installed
        self.rejected = 0                       # candidates of this call the verifier rejected
        self.log = log                          # EventLog (a sink: events are on disk before they are shown)
        self.detector_cfg = detector
        self.model = None
        self.spotter: KeywordSpotter | None = None
        # the stream
        self.pipe: Pipeline | None = None
        self.source = None
        self.results: queue.Queue | None = None
        self.mode: str | None = None            # "live" | "file" | None
        self.file_path: str | None = None
        self.file_duration = 0.0
        self.offset_s = 0.0                     # call time of the current segment's stream time 0
        self.position_s = 0.0
        self.running = False
        self.finished = False
        self.speed_index = 0
        self.load = 0.0
        self._stopping = False
        self._discard_until_reset = False       # a NewCall was sent and its CallReset has not come back yet
        self._monitor: recorder.FileMonitor | None = None
        # the call
        self.detections: dict[int, Detection] = {}
        self.call_state = no_call_state()
        self._next_id = 1
        self._mel_history = MelHistory()
        self._out = Drained()                   # consumed but not yet handed to the window (see drain)
        self._frames: list[np.ndarray] = []
        self._verified_to: queue.Queue | None = None     # where the verifier's worker puts VerifiedEvents

    # ==== model ========================================================================================
    def install_model(self, model, device=None) -> None:
        """Use `model` from now on; the call goes on, and a running stream restarts where it was (a live one on
        `device`)."""
        resume = self.mode if self.running else None
        position = self.position_s
        paused = bool(resume == "file" and self.source.paused)
        self._stop_pipeline(drain=True)
        self.model = model.eval()
        previous = self.spotter
        sinks = [self.log] if self.log is not None else []
        from spotter.verify import cascade_default
        self.verifying = self.verify if self.verify is not None else cascade_default(config.KEYWORD_SET.language)
        if self.verifying:
            from spotter.verify import VerifiedSpotter
            self.spotter = VerifiedSpotter(self.model, sinks=sinks + [self._queue_verified], collect=False,
                                           detector=self.detector_cfg, language=config.KEYWORD_SET.language)
            self.verify_status = self.spotter.status_line
        else:
            self.spotter = KeywordSpotter(self.model, sinks=sinks, detector=self.detector_cfg)
        if previous is not None:
            self.spotter.continue_call(previous)
            if hasattr(previous, "close"):
                previous.close()
        self.call_state = self.spotter.call_state()     # the new model's suggestion rule on the call so far
        if resume == "file":
            self._start_file_segment(position, paused=paused)
        elif resume == "live":
            self.start_live(device)

    def _queue_verified(self, ve: VerifiedEvent) -> None:
        """The verifier's sink (its worker thread): into the queue of the Pipeline that proposed the candidate."""
        target = self._verified_to
        if target is not None:
            target.put(ve)

    def _need_model(self) -> bool:
        if self.spotter is None:
            self.view.error("Aucun modèle chargé : chargez un modèle avec « Charger un modèle… » avant "
                            "d'écouter ou de rejouer un appel.")
            return False
        return True

    # ==== sources ======================================================================================
    def start_live(self, device=None) -> bool:
        """Monitor the input device (index, name or None for the default): a new call."""
        from spotter.sources import MicSource
        if not self._need_model():
            return False
        try:
            source = MicSource(device)          # resolves the device; nothing running is touched on failure
        except SpotterError as exc:
            msg = str(exc)
            self.view.error(NO_DEVICE_HELP if "no input device" in msg else f"Micro indisponible : {msg}")
            return False
        self._stop_pipeline()
        self._stop_monitor()
        self.view.clear_message()
        self._clear_call(clear_signal=True)
        self.mode, self.file_path = "live", None
        self.spotter.new_call()
        self._start_pipeline(source, 0.0, f"mic:{source.name}")
        return True

    def open_file(self, path: str | os.PathLike) -> bool:
        """Replay a recorded call from the start (a new call); False and a message if the file is unusable."""
        from spotter.audio import open_audio
        if not self._need_model():
            return False
        try:
            info = open_audio(path)             # checked first: a bad file does not stop what is running
        except SpotterError as exc:
            self.view.error(f"Impossible de lire l'enregistrement : {exc}")
            return False
        self._stop_pipeline()
        self._stop_monitor()
        self._clear_call(clear_signal=True)
        self.mode, self.file_path, self.file_duration = "file", info.path, info.duration_s
        self.view.clear_message()
        self.spotter.new_call()
        return self._start_file_segment(0.0)

    def _start_file_segment(self, start_s: float, paused: bool = False) -> bool:
        """Replay the current file from start_s, on the same call."""
        from spotter.sources import FileSource
        _, realtime, speed = SPEEDS[self.speed_index]
        try:
            source = FileSource(self.file_path, realtime=realtime, speed=speed)
        except SpotterError as exc:
            self.view.error(f"Impossible de lire l'enregistrement : {exc}")
            return False
        if start_s > 0:
            source.seek(start_s)
        if paused:
            source.pause()
        self._start_pipeline(source, start_s, str(self.file_path))
        if not paused:
            self._start_monitor(start_s)
        return True

    def _start_pipeline(self, source, offset_s: float, log_source: str) -> None:
        """Run `source` through the spotter from stream time 0 = call time offset_s (the call goes on)."""
        rate = getattr(source, "sample_rate", config.SAMPLE_RATE)
        kind = "micro " if self.mode == "live" else ""
        conv = "" if rate == config.SAMPLE_RATE else f" → {config.SAMPLE_RATE // 1000} kHz"
        self.view.segment_started(offset_s, f"Entrée : {kind}{source.name} · {rate} Hz{conv}")
        self.spotter.reset_stream()
        self._mel_history.reset()
        if self.log is not None:
            self.log.source = log_source
        self.results = queue.Queue()
        self._verified_to = self.results
        self.source = source
        self.offset_s = self.position_s = offset_s
        self.finished = False
        self.pipe = Pipeline(source, self.spotter, self.results).start()
        self.running = True

    def _stop_pipeline(self, drain: bool = False) -> None:
        """Stop the detector thread; with drain=True the queued results are consumed first (same call goes on).

        Commands still queued are applied by Pipeline.stop(), so a pending "Nouvel appel" is never lost."""
        pipe, self.pipe = self.pipe, None
        self._stopping = True
        try:
            if pipe is not None:
                pipe.stop()
                if hasattr(self.spotter, "join"):
                    self.spotter.join()           # the candidates already submitted reach this queue first
            if drain and self.results is not None:
                self._consume(budget_s=None)
        finally:
            self._stopping = False
        self.results = None
        self.running = False
        self._discard_until_reset = False      # the old queue is gone, and with it any late item of the old call

    def stop(self) -> None:
        """Stop listening/replaying (the detections of the call stay)."""
        self._stop_pipeline(drain=True)
        self._stop_monitor()

    @property
    def new_call_pending(self) -> bool:
        """A "Nouvel appel" was sent to the detector thread and its CallReset has not been drained yet."""
        return self._discard_until_reset

    @property
    def paused(self) -> bool:
        return bool(self.mode == "file" and self.running and self.source.paused)

    def toggle_play(self) -> None:
        """Pause/resume a running replay; replay from the start when it has ended or was stopped."""
        if self.mode != "file" or not self.running:
            if self.file_path:
                self.open_file(self.file_path)
            return
        if self.source.paused:
            self.source.resume()
            self._start_monitor(self.position_s)
        else:
            self.source.pause()
            self._stop_monitor()

    def pause(self) -> None:
        if self.mode == "file" and self.running and not self.source.paused:
            self.toggle_play()

    def seek(self, seconds: float) -> None:
        """Jump in the replayed call; the detections so far are kept (same call), a pause stays a pause."""
        if self.mode != "file" or not self.file_path:
            return
        seconds = min(max(0.0, seconds), self.file_duration)
        paused = self.paused
        self._stop_pipeline(drain=True)
        self._stop_monitor()
        self._start_file_segment(seconds, paused=paused)

    def set_speed(self, index: int) -> None:
        """Replay pacing SPEEDS[index]; applies to a running replay at once."""
        self.speed_index = int(index)
        _, realtime, speed = SPEEDS[self.speed_index]
        if self.mode == "file" and self.running:
            self.source.set_pacing(realtime, speed)
            if self.speed_index == 0 and not self.source.paused:
                self._start_monitor(self.position_s)
            else:
                self._stop_monitor()

    # -- replay audio (optional) ------------------------------------------------------------------------
    def _start_monitor(self, position_s: float) -> None:
        self._stop_monitor()
        if self.mode != "file" or self.speed_index != 0:
            return
        if not recorder.output_available():
            self.view.note("Aucune sortie audio : analyse sans écoute")
            return
        try:
            self._monitor = recorder.FileMonitor(self.file_path)
            self._monitor.start(position_s)
        except SpotterError as exc:
            self._monitor = None
            self.view.note(f"Écoute de l'appel impossible : {exc}")

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    # ==== the call =====================================================================================
    def new_call(self) -> None:
        """Forget the detections and the suggestion; the detector forgets its call evidence too."""
        if self.pipe is not None:
            self._discard_until_reset = True
            self.pipe.send(NewCall())
        elif self.spotter is not None:
            self.spotter.new_call()             # no thread runs: safe here
        self._clear_call(clear_signal=False)
        self.view.note("Nouvel appel")

    def _clear_call(self, clear_signal: bool) -> None:
        self.detections.clear()
        self.call_state = no_call_state()
        self.rejected = 0
        self._out.detections.clear()
        self._out.rejected.clear()
        if clear_signal:
            self._discard_until_reset = False
            self.position_s = 0.0
            self._frames.clear()
            self._out.peak_db = None
        self.view.call_cleared(clear_signal)

    # ==== draining results (GUI thread) ================================================================
    def drain(self, budget_s: float | None, max_frames: int = MEL_HISTORY_FRAMES) -> Drained:
        """Consume queued results in order within budget_s (None: everything; at least 32 items per call) and
        return everything consumed since the last drain() (stop, seek and model swaps consume too).

        No Event is ever dropped; of the mel frames, only the newest ~max_frames are handed on for display."""
        self._consume(budget_s)
        out, self._out = self._out, Drained()
        if self._frames:
            out.frames = np.concatenate(self._frames[-(max_frames // config.EMBED_STEP + 1):])
            self._frames = []
        return out

    def _consume(self, budget_s: float | None) -> None:
        """Take queued results in order into self._out (the step of drain that has no caller-visible result)."""
        out, frames = self._out, self._frames
        q = self.results
        if q is None:
            return
        t_end = None if budget_s is None else time.perf_counter() + budget_s
        last_step: StepResult | None = None
        n = 0
        while True:
            if t_end is not None and n and n % 32 == 0 and time.perf_counter() > t_end:
                break
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            n += 1
            out.items += 1
            if isinstance(item, StepResult):
                self._mel_history.push(item.mel, int(round(item.stream_s / FRAME_S)))
                frames.append(item.mel)
                if len(frames) > MEL_HISTORY_FRAMES // config.EMBED_STEP + 1:
                    del frames[0]
                last_step = item
                out.peak_db = item.level_db if out.peak_db is None else max(out.peak_db, item.level_db)
                self.load = 0.9 * self.load + 0.1 * item.load
            elif self._discard_until_reset and isinstance(item, (Event, CallState, VerifiedEvent)):
                continue                                  # the old call's: forgotten by "Nouvel appel"
            elif isinstance(item, VerifiedEvent):
                if item.is_detection:
                    out.detections.append(self._add_detection(item.event, item))
                    self.call_state = self.spotter.call_state()
                    out.call_changed = True
                else:
                    self.rejected += 1
                    out.rejected.append(item)
            elif isinstance(item, Event):
                out.detections.append(self._add_detection(item))
            elif isinstance(item, CallState):
                self.call_state = item
                out.call_changed = True
            elif isinstance(item, CallReset):
                self._discard_until_reset = False
            elif isinstance(item, (Finished, Failed)):
                self._end(item)
                out.ended = True
        if last_step is not None and not self.finished:    # the end of the file (_end) is the file's duration
            self.position_s = self.offset_s + last_step.stream_s

    def _add_detection(self, e: Event, verification: VerifiedEvent | None = None) -> Detection:
        mel = self._mel_history.window(int(round(e.window_end_s / FRAME_S)))
        det = Detection(self._next_id, e, self.offset_s, self.file_path if self.mode == "file" else None,
                        mel, self.offset_s + e.window_end_s,
                        verified=None if verification is None else verification.verified, verification=verification)
        self._next_id += 1
        self.detections[det.id] = det
        return det

    def _end(self, item: Finished | Failed) -> None:
        """The pipeline ended by itself (end of file, device gone, error)."""
        self.running = False
        self._discard_until_reset = False
        self._stop_monitor()
        if self.pipe is not None:
            self.pipe.stop()
            self.pipe = None
        if isinstance(item, Failed):
            if self.mode == "live":
                self.view.error(f"Micro en défaut : {item.message}. La surveillance est arrêtée ; "
                                f"vérifiez le branchement puis cliquez sur « Écouter ».")
            else:
                self.view.error(f"Lecture interrompue : {item.message}")
            return
        if self._stopping:
            return
        if self.mode == "file":
            self.finished = True
            self.position_s = self.file_duration
            self.view.note("Fin de l'enregistrement")
        elif self.mode == "live":
            self.view.error(f"Le micro « {item.source} » a cessé d'envoyer du son (débranché ?). "
                            f"Rebranchez-le puis cliquez sur « Écouter ».")

    # ==== lifetime =====================================================================================
    def shutdown(self) -> None:
        """Stop the stream (its queued events are consumed), the replay audio and the verifier's worker."""
        self._stop_pipeline(drain=True)
        self._stop_monitor()
        if hasattr(self.spotter, "close"):
            self.spotter.close()

"""The operator console: the window a French dispatcher keeps open beside the call.

The console is a view. Capture, features and detection run in the Pipeline thread (spotter.pipeline); a
QTimer drains its result queue every TICK_MS within a DRAIN_BUDGET_S time budget, so replaying a long file
at "max" speed keeps the window responsive: all queued items are consumed in order (no Event is ever
dropped), but the spectrogram, meter and panels are redrawn once per tick with the newest data.

Thread safety: the GUI never touches the KeywordSpotter while its thread runs. "Nouvel appel" is a request
that the detector thread applies between two steps (DetectorLink), announced by a CallReset item in the
queue; the GUI keeps its own CallAssessment fed with the events it drains, so what it shows is exactly what
it has received. Sources are swapped (seek, model change) by stopping the thread, draining the old queue
and starting a new Pipeline. Grad-CAM runs on demand in a worker thread and only reads the model.
"""
from __future__ import annotations

import concurrent.futures
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from spotter import config
from spotter import detector as _detector
from spotter.detector import CallAssessment, Event, KeywordSpotter
from spotter.errors import SpotterError
from spotter.pipeline import Failed, Finished, Pipeline, StepResult

from . import recorder, widgets
from .gradcam import WINDOW_FRAMES, gradcam

TICK_MS = 40                     # drain/redraw period
DRAIN_BUDGET_S = 0.025           # at most this long per tick consuming queued results
STATUS_PERIOD_S = 0.5            # status bar refresh
MEL_HISTORY_FRAMES = 4096        # ~41 s of mel frames kept for Grad-CAM windows
SPEEDS = (("1×", True, 1.0), ("2×", True, 2.0), ("Max", False, 1.0))   # label, realtime pacing, factor
KEYWORD_END_OFFSET_S = getattr(_detector, "KEYWORD_END_OFFSET_S", 0.2)   # keyword end -> head window end
NO_DEVICE_HELP = ("Aucun micro n'est disponible sur ce poste. Branchez un périphérique d'entrée audio, "
                  "ou rejouez un appel enregistré avec « Ouvrir un appel… ».")


# --- detector-thread side ------------------------------------------------------------------------------
@dataclass
class CallReset:
    """Queue marker: the detector thread started a new call at stream time `stream_s`."""
    stream_s: float


class DetectorLink:
    """The KeywordSpotter as the Pipeline sees it, plus requests from the GUI applied in the detector thread."""

    def __init__(self, spotter: KeywordSpotter, results: queue.Queue):
        self.spotter = spotter
        self.results = results
        self._new_call = threading.Event()

    def request_new_call(self) -> None:
        self._new_call.set()

    def cancel_requests(self) -> None:
        self._new_call.clear()

    def process(self, samples: np.ndarray) -> list[Event]:
        if self._new_call.is_set():
            self._new_call.clear()
            self.spotter.assessment.reset()
            self.results.put(CallReset(self.spotter.stream_time_s))
        return self.spotter.process(samples)

    def __getattr__(self, name):
        return getattr(self.spotter, name)


# --- GUI-side state ------------------------------------------------------------------------------------
class MelHistory:
    """Recent log-mel frames keyed by absolute frame index (stream time / 10 ms), in a preallocated ring."""

    def __init__(self, capacity: int = MEL_HISTORY_FRAMES):
        self._buf = np.full((capacity, config.N_MELS), widgets.MEL_FLOOR, dtype=np.float32)
        self.end = 0              # absolute index one past the newest frame

    def reset(self) -> None:
        self._buf.fill(widgets.MEL_FLOOR)
        self.end = 0

    def push(self, frames: np.ndarray, end_frame: int) -> None:
        cap = len(self._buf)
        if end_frame - len(frames) > self.end:                         # a gap: forget what lies in it
            for i in range(self.end, min(end_frame - len(frames), self.end + cap)):
                self._buf[i % cap] = widgets.MEL_FLOOR
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
        out[idx < 0] = widgets.MEL_FLOOR
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

    @property
    def start_s(self) -> float:
        return self.offset_s + self.event.start_s

    @property
    def end_s(self) -> float:
        return self.offset_s + self.event.end_s


def event_window_end_s(event: Event) -> float:
    """Stream time at which the head window that peaked for this event ended."""
    explicit = getattr(event, "window_end_s", None)
    return float(explicit) if explicit is not None else event.end_s + KEYWORD_END_OFFSET_S


# --- the window ----------------------------------------------------------------------------------------
class ConsoleWindow(QtWidgets.QMainWindow):
    """Operator console. Public methods are the actions of the buttons (also used by tests and the CLI)."""

    def __init__(self, model_path: str | os.PathLike | None = None, model=None, log_path=None,
                 recordings_root: str | os.PathLike | None = None, detector: config.DetectorConfig | None = None):
        super().__init__()
        self.setWindowTitle("Spotter — Console opérateur")
        self.resize(1480, 900)
        self._model = None
        self._model_label = "aucun"
        self._detector_cfg = detector
        self._spotter: KeywordSpotter | None = None
        self._log = None
        self._log_path = log_path
        # pipeline state
        self._pipe: Pipeline | None = None
        self._link: DetectorLink | None = None
        self._source = None
        self._results: queue.Queue | None = None
        self._mode: str | None = None          # "live" | "file" | None
        self._file_path: str | None = None
        self._file_duration = 0.0
        self._offset_s = 0.0                   # call time of the current segment's stream time 0
        self._position_s = 0.0
        self._running = False
        self._finished = False
        self._stopping = False
        self._discard_until_reset = False
        self._speed_index = 0
        self._load = 0.0
        self._monitor: recorder.FileMonitor | None = None
        # call state
        self._assessment = CallAssessment()
        self._detections: dict[int, Detection] = {}
        self._next_id = 1
        self._mel_history = MelHistory()
        self._suggestion_dirty = True
        # explanations and samples
        self._cam_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradcam")
        self._cam_job: tuple[int, concurrent.futures.Future] | None = None
        self.recordings_root = Path(recordings_root) if recordings_root else recorder.default_root()
        self._mic_recorder: recorder.MicRecorder | None = None
        self.take: recorder.Take | None = None
        self.last_saved: Path | None = None
        self._last_status = 0.0
        self._closed = False

        self._build_ui()
        self._open_log()
        if model is not None:
            self._install_model(model, getattr(model, "name", "modèle"))
        else:
            self._load_initial_model(model_path)
        self._refresh_controls()

        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self._tick)
        self._timer.start(TICK_MS)

    # ==== layout =======================================================================================
    def _build_ui(self) -> None:
        self.setStyleSheet(widgets.STYLE)
        central = QtWidgets.QWidget()
        central.setObjectName("central")
        root = QtWidgets.QVBoxLayout(central)
        root.setContentsMargins(10, 8, 10, 6)
        root.setSpacing(8)
        self.setCentralWidget(central)

        self.banner = widgets.MessageBanner()
        root.addWidget(self.banner)
        root.addWidget(self._build_toolbar())

        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.setHandleWidth(8)
        split.addWidget(self._build_left())
        split.addWidget(self._build_right())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([880, 580])
        root.addWidget(split, 1)
        self._build_status_bar()

        QtWidgets.QShortcut(QtGui.QKeySequence("Space"), self, activated=self.toggle_play)
        QtWidgets.QShortcut(QtGui.QKeySequence("Ctrl+O"), self, activated=self._ask_open_file)
        QtWidgets.QShortcut(QtGui.QKeySequence("Ctrl+N"), self, activated=self.new_call)

    def _build_toolbar(self) -> QtWidgets.QWidget:
        bar, lay = widgets.panel()
        lay.setContentsMargins(10, 6, 10, 6)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(8)
        lay.addLayout(row)

        row.addWidget(QtWidgets.QLabel("Micro :"))
        self.device_combo = QtWidgets.QComboBox()
        self.device_combo.setMinimumWidth(220)
        self._fill_devices()
        row.addWidget(self.device_combo)
        self.live_button = QtWidgets.QPushButton("● Écouter")
        self.live_button.setToolTip("Surveiller l'appel en direct depuis le micro choisi")
        self.live_button.clicked.connect(self._toggle_live)
        row.addWidget(self.live_button)
        row.addWidget(self._separator())

        self.open_button = QtWidgets.QPushButton("Ouvrir un appel…")
        self.open_button.setToolTip("Rejouer un appel enregistré (wav, flac, ogg… ; 8 kHz accepté)  — Ctrl+O")
        self.open_button.clicked.connect(self._ask_open_file)
        row.addWidget(self.open_button)
        self.play_button = QtWidgets.QPushButton("▶ Lecture")
        self.play_button.setMinimumWidth(100)
        self.play_button.setToolTip("Lecture / pause (Espace)")
        self.play_button.clicked.connect(self.toggle_play)
        row.addWidget(self.play_button)
        self.seek_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.seek_slider.setRange(0, 1000)
        self.seek_slider.setMinimumWidth(160)
        self.seek_slider.sliderReleased.connect(lambda: self._seek_to_slider())
        self.seek_slider.actionTriggered.connect(self._slider_action)
        row.addWidget(self.seek_slider, 1)
        self.position_label = QtWidgets.QLabel("00:00.0 / 00:00.0")
        self.position_label.setObjectName("dim")
        self.position_label.setMinimumWidth(120)
        row.addWidget(self.position_label)
        row.addWidget(QtWidgets.QLabel("Vitesse :"))
        self.speed_combo = QtWidgets.QComboBox()
        for label, _, _ in SPEEDS:
            self.speed_combo.addItem(label)
        self.speed_combo.setToolTip("1× et 2× : au rythme de l'appel ; Max : aussi vite que possible")
        self.speed_combo.currentIndexChanged.connect(self.set_speed)
        row.addWidget(self.speed_combo)
        row.addWidget(self._separator())

        self.new_call_button = QtWidgets.QPushButton("Nouvel appel")
        self.new_call_button.setObjectName("primary")
        self.new_call_button.setToolTip("Effacer les détections et la suggestion (Ctrl+N)")
        self.new_call_button.clicked.connect(self.new_call)
        row.addWidget(self.new_call_button)
        self.model_button = QtWidgets.QPushButton("Charger un modèle…")
        self.model_button.setToolTip("Remplacer le modèle (par exemple un modèle réentraîné) sans redémarrer")
        self.model_button.clicked.connect(self._ask_load_model)
        row.addWidget(self.model_button)
        return bar

    @staticmethod
    def _separator() -> QtWidgets.QFrame:
        line = QtWidgets.QFrame()
        line.setFrameShape(QtWidgets.QFrame.VLine)
        line.setStyleSheet(f"color: {widgets.BORDER};")
        return line

    def _build_left(self) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        frame, flay = widgets.panel("Signal — spectrogramme log-mel (8 s) et niveau d'entrée")
        row = QtWidgets.QHBoxLayout()
        self.spectrogram = widgets.SpectrogramView()
        self.spectrogram.setMinimumHeight(250)
        self.level_meter = widgets.LevelMeter()
        row.addWidget(self.spectrogram, 1)
        row.addWidget(self.level_meter)
        flay.addLayout(row)
        lay.addWidget(frame, 5)

        frame, flay = widgets.panel("Détections de l'appel")
        self.table = widgets.DetectionTable()
        self.table.itemSelectionChanged.connect(self._on_selection)
        flay.addWidget(self.table)
        lay.addWidget(frame, 4)
        return box

    def _build_right(self) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        self.service_panel = widgets.ServicePanel()
        lay.addWidget(self.service_panel, 0)

        frame, flay = widgets.panel("Explication — Grad-CAM de la détection sélectionnée")
        self.cam_view = widgets.GradCamView()
        flay.addWidget(self.cam_view)
        lay.addWidget(frame, 3)
        lay.addWidget(self._build_recorder(), 0)
        return box

    def _build_recorder(self) -> QtWidgets.QWidget:
        frame, lay = widgets.panel("Échantillons pour le réentraînement")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Mot-clé :"))
        self.keyword_combo = QtWidgets.QComboBox()
        for kw in config.KEYWORDS:
            self.keyword_combo.addItem(f"{kw}  ({config.KEYWORD_SERVICE[kw]})", kw)
        self.keyword_combo.addItem("— non classé —", None)
        row.addWidget(self.keyword_combo, 1)
        self.folder_button = QtWidgets.QPushButton("Dossier…")
        self.folder_button.clicked.connect(self._ask_root)
        row.addWidget(self.folder_button)
        lay.addLayout(row)

        row = QtWidgets.QHBoxLayout()
        self.mic_button = QtWidgets.QPushButton("● Enregistrer au micro")
        self.mic_button.setObjectName("record")
        self.mic_button.setCheckable(True)
        self.mic_button.clicked.connect(self.toggle_mic_recording)
        self.cut_button = QtWidgets.QPushButton("✂ Extraire la détection")
        self.cut_button.setToolTip("Découper dans l'appel rejoué la détection sélectionnée (± 0,3 s)")
        self.cut_button.clicked.connect(self.cut_selected_detection)
        self.listen_button = QtWidgets.QPushButton("▶ Écouter")
        self.listen_button.clicked.connect(self.listen_take)
        self.save_button = QtWidgets.QPushButton("Sauvegarder")
        self.save_button.setObjectName("primary")
        self.save_button.clicked.connect(self.save_take)
        for b in (self.mic_button, self.cut_button, self.listen_button, self.save_button):
            row.addWidget(b)
        lay.addLayout(row)
        self.take_label = QtWidgets.QLabel()
        self.take_label.setObjectName("dim")
        self.take_label.setWordWrap(True)
        lay.addWidget(self.take_label)
        self._update_take_label()
        return frame

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_note = QtWidgets.QLabel("Prêt")
        self.status_input = QtWidgets.QLabel("Entrée : aucune")
        self.status_drops = QtWidgets.QLabel("Audio perdu : 0 débordement · 0 saturation")
        self.status_load = QtWidgets.QLabel("Charge : –")
        self.status_model = QtWidgets.QLabel("Modèle : aucun")
        sb.addWidget(self.status_note, 1)
        for w in (self.status_input, self.status_drops, self.status_load, self.status_model):
            sb.addPermanentWidget(w)

    def _fill_devices(self) -> None:
        from spotter.sources import list_input_devices
        self.device_combo.clear()
        try:
            devices = list_input_devices()
        except SpotterError:
            devices = []
        for d in devices:
            self.device_combo.addItem(f"{d['name']} ({d['default_samplerate']:.0f} Hz)", d["index"])
        if not devices:
            self.device_combo.addItem("Aucun micro détecté", None)

    # ==== messages =====================================================================================
    def show_error(self, text: str) -> None:
        self.banner.show_message(text, "error")

    def show_info(self, text: str, level: str = "info") -> None:
        self.banner.show_message(text, level)

    def note(self, text: str) -> None:
        self.status_note.setText(text)

    # ==== model ========================================================================================
    def _open_log(self) -> None:
        from spotter.eventlog import EventLog
        try:
            self._log = EventLog(self._log_path)
        except SpotterError as exc:
            self._log = None
            self.show_error(f"Journal des détections inaccessible : {exc}. Les détections s'affichent mais "
                            f"ne sont pas journalisées.")

    def _load_initial_model(self, model_path) -> None:
        from spotter.model import default_model_path
        path = Path(model_path) if model_path else default_model_path()
        self.load_model_file(path)

    def load_model_file(self, path: str | os.PathLike) -> bool:
        """Load an artifact and use it from now on (the replay/live stream restarts); False + message if refused."""
        from spotter.model import load_model
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.WaitCursor)
        try:
            model = load_model(path)
        except SpotterError as exc:
            self.show_error(f"Modèle refusé : {exc}. "
                            + ("Le modèle actuel reste en service." if self._model is not None
                               else "Chargez un modèle compatible avec « Charger un modèle… »."))
            return False
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        self._install_model(model, model.name)
        self.status_model.setToolTip(str(Path(path).resolve()))
        self.note(f"Modèle chargé : {model.name}")
        return True

    def _install_model(self, model, label: str) -> None:
        resume = self._mode if self._running else None
        position = self._position_s
        paused = bool(resume == "file" and self._source.paused)
        self._stop_pipeline(drain=True)
        self._model = model.eval()
        self._model_label = label
        sinks = [self._log] if self._log is not None else []
        self._spotter = KeywordSpotter(self._model, sinks=sinks, detector=self._detector_cfg)
        self._assessment.min_evidence = self._spotter.cfg.suggestion_min_evidence
        self._suggestion_dirty = True
        self.status_model.setText(f"Modèle : {label}")
        if resume == "file":
            self._start_file_segment(position, paused=paused)
        elif resume == "live":
            self.start_live(self.device_combo.currentData())
        self._refresh_controls()

    # ==== sources and pipeline =========================================================================
    def _need_model(self) -> bool:
        if self._spotter is None:
            self.show_error("Aucun modèle chargé : chargez un modèle avec « Charger un modèle… » avant "
                            "d'écouter ou de rejouer un appel.")
            return False
        return True

    def start_live(self, device=None) -> bool:
        """Monitor the input device (index, name or None for the default); message in the window on failure."""
        from spotter.sources import MicSource
        if not self._need_model():
            return False
        try:
            source = MicSource(device)          # resolves the device; nothing running is touched on failure
        except SpotterError as exc:
            msg = str(exc)
            self.show_error(NO_DEVICE_HELP if "no input device" in msg else f"Micro indisponible : {msg}")
            self._refresh_controls()
            return False
        self._stop_pipeline()
        self._stop_monitor()
        self.banner.hide()
        self._reset_call(clear_signal=True)
        self._mode, self._file_path = "live", None
        if not self._start_pipeline(source, 0.0, f"mic:{source.name}"):
            self._mode = None
        self._refresh_controls()
        return self._mode == "live"

    def _toggle_live(self) -> None:
        if self._mode == "live" and self._running:
            self.stop()
        else:
            self.start_live(self.device_combo.currentData())

    def open_file(self, path: str | os.PathLike) -> bool:
        """Replay a recorded call from the start (a new call); message in the window if the file is unusable."""
        from spotter.audio import open_audio
        if not self._need_model():
            return False
        try:
            info = open_audio(path)             # checked first: a bad file does not stop what is running
        except SpotterError as exc:
            self.show_error(f"Impossible de lire l'enregistrement : {exc}")
            self._refresh_controls()
            return False
        self._stop_pipeline()
        self._stop_monitor()
        self._reset_call(clear_signal=True)
        self._mode, self._file_path, self._file_duration = "file", info.path, info.duration_s
        self.banner.hide()
        ok = self._start_file_segment(0.0)
        self._refresh_controls()
        return ok

    def _start_file_segment(self, start_s: float, paused: bool = False) -> bool:
        from spotter.sources import FileSource
        _, realtime, speed = SPEEDS[self._speed_index]
        try:
            source = FileSource(self._file_path, realtime=realtime, speed=speed)
        except SpotterError as exc:
            self.show_error(f"Impossible de lire l'enregistrement : {exc}")
            return False
        if start_s > 0:
            source.seek(start_s)
        if paused:
            source.pause()
        ok = self._start_pipeline(source, start_s, str(self._file_path))
        if ok and not paused:
            self._start_monitor(start_s)
        return ok

    def _start_pipeline(self, source, offset_s: float, log_source: str) -> bool:
        self._spotter.reset()
        self._mel_history.reset()
        self.spectrogram.clear_history(offset_s)
        if self._log is not None:
            self._log.source = log_source
        self._results = queue.Queue()
        self._link = DetectorLink(self._spotter, self._results)
        self._source = source
        self._offset_s = self._position_s = offset_s
        self._finished = False
        self._pipe = Pipeline(source, self._link, self._results).start()
        self._running = True
        rate = getattr(source, "sample_rate", config.SAMPLE_RATE)
        kind = "micro " if self._mode == "live" else ""
        conv = "" if rate == config.SAMPLE_RATE else f" → {config.SAMPLE_RATE // 1000} kHz"
        self.status_input.setText(f"Entrée : {kind}{source.name} · {rate} Hz{conv}")
        return True

    def _stop_pipeline(self, drain: bool = False) -> None:
        """Stop the detector thread; with drain=True the queued results are consumed first (same call goes on)."""
        pipe, self._pipe = self._pipe, None
        self._stopping = True
        try:
            if pipe is not None:
                pipe.stop()
            if drain and self._results is not None:
                self._drain(budget_s=None)
        finally:
            self._stopping = False
        self._results = None
        self._running = False
        self._discard_until_reset = False      # a pending "Nouvel appel" is complete: the old queue is gone

    def stop(self) -> None:
        """Stop listening/replaying (the detections of the call stay)."""
        self._stop_pipeline(drain=True)
        self._stop_monitor()
        self._refresh_controls()

    def toggle_play(self) -> None:
        if self._mode != "file":
            if self._file_path:
                self.open_file(self._file_path)
            return
        if not self._running:                      # finished or stopped: replay from the start
            self.open_file(self._file_path)
            return
        if self._source.paused:
            self._source.resume()
            self._start_monitor(self._position_s)
        else:
            self._source.pause()
            self._stop_monitor()
        self._refresh_controls()

    def pause(self) -> None:
        if self._mode == "file" and self._running and not self._source.paused:
            self.toggle_play()

    def seek(self, seconds: float) -> None:
        """Jump in the replayed call; the detections so far are kept (same call)."""
        if self._mode != "file" or not self._file_path:
            return
        seconds = min(max(0.0, seconds), self._file_duration)
        paused = bool(self._running and self._source.paused)
        self._stop_pipeline(drain=True)
        self._stop_monitor()
        self._start_file_segment(seconds, paused=paused)
        self._refresh_controls()

    def _seek_to_slider(self) -> None:
        self.seek(self.seek_slider.value() / 1000.0 * self._file_duration)

    def _slider_action(self, action: int) -> None:
        if action != QtWidgets.QAbstractSlider.SliderMove:
            QtCore.QTimer.singleShot(0, self._seek_to_slider)

    def set_speed(self, index: int) -> None:
        self._speed_index = int(index)
        if self.speed_combo.currentIndex() != index:
            self.speed_combo.setCurrentIndex(index)
        _, realtime, speed = SPEEDS[self._speed_index]
        if self._mode == "file" and self._running:
            self._source.set_pacing(realtime, speed)
            if self._speed_index == 0 and not self._source.paused:
                self._start_monitor(self._position_s)
            else:
                self._stop_monitor()

    # -- replay audio (optional) ------------------------------------------------------------------------
    def _start_monitor(self, position_s: float) -> None:
        self._stop_monitor()
        if self._mode != "file" or self._speed_index != 0:
            return
        if not recorder.output_available():
            self.note("Aucune sortie audio : analyse sans écoute")
            return
        try:
            self._monitor = recorder.FileMonitor(self._file_path)
            self._monitor.start(position_s)
        except SpotterError as exc:
            self._monitor = None
            self.note(f"Écoute de l'appel impossible : {exc}")

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    # ==== call =========================================================================================
    def new_call(self) -> None:
        """Forget the detections and the suggestion; the detector thread resets its call evidence too."""
        if self._running and self._link is not None:
            self._discard_until_reset = True
            self._link.request_new_call()
        elif self._spotter is not None:
            self._spotter.assessment.reset()
        self._reset_call(clear_signal=False)
        self.note("Nouvel appel")

    def _reset_call(self, clear_signal: bool) -> None:
        self._assessment.reset()
        self._detections.clear()
        self._cam_job = None
        self.table.setRowCount(0)
        self.cam_view.clear()
        self.service_panel.show_suggestion(None, self._assessment.evidence())
        self._suggestion_dirty = False
        if clear_signal:
            self._discard_until_reset = False
            self.spectrogram.clear_history(0.0)
            self._position_s = 0.0

    # ==== draining results (GUI thread) ================================================================
    def _tick(self) -> None:
        self._drain(DRAIN_BUDGET_S)
        self._poll_gradcam()
        self._poll_mic()
        now = time.monotonic()
        if now - self._last_status > STATUS_PERIOD_S:
            self._last_status = now
            self._update_status()

    def _drain(self, budget_s: float | None) -> int:
        """Consume queued results in order within budget_s (None: everything); redraw once at the end."""
        q = self._results
        if q is None:
            return 0
        t_end = None if budget_s is None else time.perf_counter() + budget_s
        spectro_frames: list[np.ndarray] = []
        last_step: StepResult | None = None
        peak_db = -200.0
        n = 0
        while True:
            if t_end is not None and n and n % 32 == 0 and time.perf_counter() > t_end:   # >= 32 items a tick
                break
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            n += 1
            if isinstance(item, StepResult):
                end_frame = int(round(item.stream_s / widgets.FRAME_S))
                self._mel_history.push(item.mel, end_frame)
                spectro_frames.append(item.mel)
                if len(spectro_frames) > widgets.HISTORY_FRAMES // config.EMBED_STEP + 1:
                    del spectro_frames[0]
                last_step = item
                peak_db = max(peak_db, item.level_db)
                self._load = 0.9 * self._load + 0.1 * item.load
            elif isinstance(item, Event):
                self._handle_event(item)
            elif isinstance(item, CallReset):
                self._discard_until_reset = False
            elif isinstance(item, Finished):
                self._handle_finished(item)
            elif isinstance(item, Failed):
                self._handle_failed(item)
        if last_step is not None:
            self._position_s = self._offset_s + last_step.stream_s
            self.spectrogram.append(np.concatenate(spectro_frames), self._position_s)
            self.level_meter.set_level(peak_db)
        self.spectrogram.refresh()
        if self._suggestion_dirty:
            self._suggestion_dirty = False
            self.service_panel.show_suggestion(self._assessment.suggestion(), self._assessment.evidence())
        self._update_position()
        return n

    def _handle_event(self, e: Event) -> None:
        if self._discard_until_reset:
            return
        window_end = event_window_end_s(e)
        mel = self._mel_history.window(int(round(window_end / widgets.FRAME_S)))
        det = Detection(self._next_id, e, self._offset_s, self._file_path if self._mode == "file" else None,
                        mel, self._offset_s + window_end)
        self._next_id += 1
        self._detections[det.id] = det
        self._assessment.add(e)
        self._suggestion_dirty = True
        self.table.add_detection(det.id, e, det.start_s)
        self.spectrogram.add_marker(det.start_s, det.end_s, e.keyword, widgets.SERVICE_COLORS[e.service])

    def _handle_finished(self, item: Finished) -> None:
        self._running = False
        self._discard_until_reset = False
        self._stop_monitor()
        if self._pipe is not None:
            self._pipe.stop()
            self._pipe = None
        if self._stopping:
            return
        if self._mode == "file":
            self._finished = True
            self._position_s = self._file_duration
            self.note("Fin de l'enregistrement")
        elif self._mode == "live":
            self.show_error(f"Le micro « {item.source} » a cessé d'envoyer du son (débranché ?). "
                            f"Rebranchez-le puis cliquez sur « Écouter ».")
        self._refresh_controls()

    def _handle_failed(self, item: Failed) -> None:
        self._running = False
        self._discard_until_reset = False
        self._stop_monitor()
        if self._pipe is not None:
            self._pipe.stop()
            self._pipe = None
        if self._mode == "live":
            self.show_error(f"Micro en défaut : {item.message}. La surveillance est arrêtée ; "
                            f"vérifiez le branchement puis cliquez sur « Écouter ».")
        else:
            self.show_error(f"Lecture interrompue : {item.message}")
        self._refresh_controls()

    # ==== Grad-CAM =====================================================================================
    def selected_detection(self) -> Detection | None:
        det_id = self.table.selected_id()
        return self._detections.get(det_id) if det_id is not None else None

    def _on_selection(self) -> None:
        det = self.selected_detection()
        self._refresh_controls()
        if det is None:
            return
        if det.mel is None:
            self.cam_view.clear()
            self.cam_view.show_message("Signal de cette détection indisponible (trop ancien) : pas d'explication.")
            return
        if self.take is None or self.take.saved_to is not None:
            i = self.keyword_combo.findData(det.event.keyword)
            if i >= 0:
                self.keyword_combo.setCurrentIndex(i)
        if det.heat is not None:
            self._show_heat(det)
            return
        self.cam_view.show_message(f"Calcul de l'explication de « {det.event.keyword} »…")
        label = config.LABELS.index(det.event.keyword)
        self._cam_job = (det.id, self._cam_pool.submit(gradcam, self._model, det.mel, label))

    def _poll_gradcam(self) -> None:
        if self._cam_job is None or not self._cam_job[1].done():
            return
        det_id, fut = self._cam_job
        self._cam_job = None
        det = self._detections.get(det_id)
        if det is None:
            return
        try:
            det.heat = fut.result()
        except Exception as exc:   # an explanation must never take the console down
            self.cam_view.show_message(f"Explication impossible : {type(exc).__name__}: {exc}")
            return
        if self.table.selected_id() == det_id:
            self._show_heat(det)

    def _show_heat(self, det: Detection) -> None:
        t0 = det.window_end_s - WINDOW_FRAMES * widgets.FRAME_S
        self.cam_view.show_heat(det.mel, det.heat, t0, (det.start_s, det.end_s),
                                f"« {det.event.keyword} » à {widgets.fmt_position(det.start_s)} — score "
                                f"{widgets.fr_num(det.event.score)}. Zones chaudes : ce qui a le plus pesé "
                                f"dans la décision ; pointillés : mot-clé estimé.")

    def explain(self, det_id: int, timeout_s: float = 30.0) -> np.ndarray | None:
        """Select a detection and wait for its heat map (used by tests and scripts)."""
        self.table.select_id(det_id)
        t_end = time.monotonic() + timeout_s
        while self._detections[det_id].heat is None and time.monotonic() < t_end:
            QtWidgets.QApplication.processEvents()
            self._poll_gradcam()
            time.sleep(0.01)
        return self._detections[det_id].heat

    @property
    def detections(self) -> list[Detection]:
        return list(self._detections.values())

    # ==== recording samples ============================================================================
    def _selected_keyword(self) -> str | None:
        return self.keyword_combo.currentData()

    def toggle_mic_recording(self) -> None:
        if self._mic_recorder is not None:
            self._finish_mic_take()
            return
        self._autosave_unsaved_take()
        try:
            rec = recorder.MicRecorder(self.device_combo.currentData())
            rec.start()
        except SpotterError as exc:
            self.mic_button.setChecked(False)
            if "no input device" in str(exc):
                self.show_error("Aucun micro disponible pour enregistrer un échantillon : branchez un "
                                "périphérique d'entrée, ou extrayez la détection d'un appel rejoué.")
            else:
                self.show_error(f"Enregistrement au micro impossible : {exc}")
            return
        self._mic_recorder = rec
        self.mic_button.setChecked(True)
        self.mic_button.setText("■ Arrêter l'enregistrement")
        self.note("Enregistrement au micro…")

    def _poll_mic(self) -> None:
        rec = self._mic_recorder
        if rec is None:
            return
        self.take_label.setText(f"Enregistrement en cours : {rec.elapsed_s:.1f} s")
        if rec.full:
            self._finish_mic_take()

    def _finish_mic_take(self) -> None:
        rec, self._mic_recorder = self._mic_recorder, None
        audio = rec.stop()
        self.mic_button.setChecked(False)
        self.mic_button.setText("● Enregistrer au micro")
        self.set_take(recorder.Take(audio, self._selected_keyword(), f"micro {rec.device['name']}"))

    def cut_selected_detection(self) -> bool:
        """Make a take of the selected detection's segment of the replayed call ([start-0.3, end+0.3] s)."""
        det = self.selected_detection()
        if det is None or det.source_path is None:
            self.show_info("Sélectionnez une détection d'un appel rejoué pour en extraire le segment.", "warning")
            return False
        a, b = recorder.detection_span(det.start_s, det.end_s)
        try:
            audio = recorder.cut_segment(det.source_path, a, b)
        except SpotterError as exc:
            self.show_error(f"Extraction impossible : {exc}")
            return False
        self._autosave_unsaved_take()
        name = Path(det.source_path).name
        self.set_take(recorder.Take(audio, det.event.keyword,
                                    f"{name} {widgets.fmt_position(a)}–{widgets.fmt_position(b)}"))
        return True

    def set_take(self, take: recorder.Take) -> None:
        self.take = take
        if take.keyword is not None:
            i = self.keyword_combo.findData(take.keyword)
            if i >= 0:
                self.keyword_combo.setCurrentIndex(i)
        self._update_take_label()
        self._refresh_controls()

    def listen_take(self) -> None:
        if self.take is None:
            return
        try:
            recorder.play(self.take.audio)
        except SpotterError:
            self.note("Écoute impossible : aucune sortie audio sur ce poste")

    def save_take(self) -> Path | None:
        """Save the pending take under <dossier>/<mot-clé>/<horodatage>.wav."""
        if self.take is None:
            return None
        keyword = self._selected_keyword()
        try:
            path = recorder.save_take(self.recordings_root, self.take, keyword=keyword, unsorted=keyword is None)
        except SpotterError as exc:
            self.show_error(f"Sauvegarde impossible : {exc}")
            return None
        self.last_saved = path
        self.note(f"Échantillon sauvegardé : {path}")
        self.take = None
        self._update_take_label()
        self._refresh_controls()
        return path

    def _autosave_unsaved_take(self) -> Path | None:
        """Nothing recorded is lost: an unsaved take goes to <dossier>/_non_classes/."""
        if self.take is None or self.take.saved_to is not None:
            return None
        try:
            path = recorder.save_take(self.recordings_root, self.take, unsorted=True)
        except SpotterError as exc:
            self.show_error(f"Sauvegarde automatique impossible : {exc}")
            return None
        self.last_saved = path
        self.take = None
        return path

    def set_recordings_root(self, path: str | os.PathLike) -> None:
        self.recordings_root = Path(path)
        self._update_take_label()

    def _update_take_label(self) -> None:
        lines = [f"Dossier : {self.recordings_root}"]
        if self.take is not None:
            kw = self.take.keyword or "non classé"
            lines.insert(0, f"Prise en attente : {self.take.duration_s:.1f} s — {self.take.origin} ({kw})")
        elif self.last_saved is not None:
            lines.insert(0, f"Dernier échantillon : {self.last_saved}")
        else:
            lines.insert(0, "Aucune prise en attente.")
        self.take_label.setText("\n".join(lines))

    # ==== dialogs ======================================================================================
    def _ask_open_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Ouvrir un appel enregistré", str(Path.home()),
            "Audio (*.wav *.flac *.ogg *.mp3 *.aiff *.au);;Tous les fichiers (*)")
        if path:
            self.open_file(path)

    def _ask_load_model(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Charger un modèle", str(Path.cwd()),
                                                        "Modèle spotter (*.pt);;Tous les fichiers (*)")
        if path:
            self.load_model_file(path)

    def _ask_root(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Dossier des échantillons",
                                                          str(self.recordings_root))
        if path:
            self.set_recordings_root(path)

    # ==== state display ================================================================================
    def _refresh_controls(self) -> None:
        has_model = self._spotter is not None
        live = self._mode == "live" and self._running
        self.live_button.setText("■ Arrêter" if live else "● Écouter")
        self.live_button.setEnabled(has_model)
        self.open_button.setEnabled(has_model)
        is_file = self._mode == "file" and self._file_path is not None
        self.play_button.setEnabled(is_file)
        self.seek_slider.setEnabled(is_file)
        if is_file and self._running and not self._source.paused:
            self.play_button.setText("❚❚ Pause")
        elif is_file and not self._running:
            self.play_button.setText("↻ Rejouer")
        else:
            self.play_button.setText("▶ Lecture")
        det = self.selected_detection()
        self.cut_button.setEnabled(det is not None and det.source_path is not None)
        self.listen_button.setEnabled(self.take is not None)
        self.save_button.setEnabled(self.take is not None)

    def _update_position(self) -> None:
        if self._mode == "file" and self._file_duration > 0:
            pos = min(self._position_s, self._file_duration)
            self.position_label.setText(f"{widgets.fmt_position(pos)} / {widgets.fmt_position(self._file_duration)}")
            if not self.seek_slider.isSliderDown():
                self.seek_slider.blockSignals(True)
                self.seek_slider.setValue(int(1000 * pos / self._file_duration))
                self.seek_slider.blockSignals(False)
        elif self._mode == "live":
            self.position_label.setText(f"{widgets.fmt_position(self._position_s)} en direct")

    def _update_status(self) -> None:
        if self._source is not None:
            st = self._source.stats
            s1 = "" if st.device_overflows == 1 else "s"
            s2 = "" if st.ring_overruns == 1 else "s"
            self.status_drops.setText(f"Audio perdu : {st.device_overflows} débordement{s1} · "
                                      f"{st.ring_overruns} saturation{s2}")
            self.status_drops.setToolTip("Débordements signalés par le pilote audio · saturations du tampon "
                                         "circulaire (le traitement n'a pas suivi)")
            lost = st.device_overflows + st.ring_overruns
            self.status_drops.setStyleSheet("color: #d6a531;" if lost else "")
        if self._running:
            self.status_load.setText(f"Charge : {100 * self._load:.0f} %")
        if self._running and self._mode == "file" and self._source.paused:
            self.note("En pause")
        self._refresh_controls()

    # ==== lifetime =====================================================================================
    @property
    def running(self) -> bool:
        return self._running

    @property
    def finished(self) -> bool:
        return self._finished

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop everything; pending takes are saved (nothing recorded is lost); the event log is closed."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        self._stop_pipeline(drain=True)
        self._stop_monitor()
        if self._mic_recorder is not None:
            self._finish_mic_take()
        self._autosave_unsaved_take()
        self._cam_pool.shutdown(wait=False)
        if self._log is not None:
            self._log.close()
            self._log = None


# --- entry point ---------------------------------------------------------------------------------------
def _needs_offscreen() -> bool:
    import sys
    return (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"))


def _headless() -> bool:
    """True when the window is rendered off screen (QT_QPA_PLATFORM offscreen/minimal): no one sees it."""
    return os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal")


def run_console(model: str | None = None, file: str | None = None, device: str | None = None,
                log: str | None = None, recordings: str | None = None, speed: str = "1",
                screenshot: str | None = None, screenshot_after: float = 5.0) -> int:
    """Open the console (blocking until it is closed); with `screenshot`, save the window after N s and exit."""
    import torch
    if _needs_offscreen():
        if not screenshot:
            raise SpotterError("console: no display (DISPLAY/WAYLAND_DISPLAY unset); "
                               "use --screenshot with QT_QPA_PLATFORM=offscreen to render without one")
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    torch.set_num_threads(max(1, int(os.environ.get("SPOTTER_THREADS", "1"))))
    pg.setConfigOptions(antialias=True)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["spotter console"])
    app.setApplicationName("Spotter")
    font = app.font()
    font.setPointSize(10)
    app.setFont(font)
    win = ConsoleWindow(model_path=model, log_path=log, recordings_root=recordings)
    win.set_speed({"1": 0, "2": 1, "max": 2}[speed])
    win.show()
    problems = []
    if device is not None and not win.start_live(device):
        problems.append(win.banner.text())
    if file and not win.open_file(file):
        problems.append(win.banner.text())
    result = {"code": 0}
    if problems and _headless():
        # nobody can see the window's message: say it on stderr and do not wait for a user who is not there
        from spotter.errors import printable
        for text in problems:
            print(f"spotter: error: {printable(text)}", file=sys.stderr, flush=True)
        result["code"] = 2
        if not screenshot:
            win.close()
            win.shutdown()
            return result["code"]
    if screenshot:
        def grab() -> None:
            win._drain(None)
            if win.detections and win.table.selected_id() is None:
                win.explain(win.detections[-1].id)
                win._drain(DRAIN_BUDGET_S)
            app.processEvents()
            if not win.grab().save(str(screenshot)):
                result["code"] = 2
                print(f"spotter: error: {screenshot}: cannot write the screenshot")
            win.close()
            app.quit()
        QtCore.QTimer.singleShot(int(screenshot_after * 1000), grab)
    app.exec_()
    win.shutdown()
    return result["code"]

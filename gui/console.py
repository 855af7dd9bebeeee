"""The operator console: the window a French dispatcher keeps open beside the call.

The window is a view over a ConsoleSession (gui/session.py: sources, call state, detections, no Qt), plus the
samples panel (gui/samples.py) and Grad-CAM on demand. A QTimer drains the session every TICK_MS within a
DRAIN_BUDGET_S time budget, so replaying a long file at "max" speed keeps the window responsive: all queued
items are consumed in order (no Event is ever dropped), but the spectrogram, meter and panels are redrawn once
per tick with the newest data. Grad-CAM runs in a worker thread and only reads the model.
"""
from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from spotter import config
from spotter.config import FRAME_S, WINDOW_FRAMES
from spotter.errors import SpotterError

from . import collector, widgets
from .explain import METHOD_FR, explain
from .samples import SamplesPanel
from .session import SPEEDS, ConsoleSession, Detection, Drained, SessionView

TICK_MS = 40                     # drain/redraw period
DRAIN_BUDGET_S = 0.025           # at most this long per tick consuming queued results
STATUS_PERIOD_S = 0.5            # status bar refresh


# --- the window ----------------------------------------------------------------------------------------
class ConsoleWindow(QtWidgets.QMainWindow, SessionView):
    """Operator console. Public methods are the actions of the buttons (also used by tests and the CLI).

    Delete the window when done with it (deleteLater, as run_console does): until it is destroyed, Python's
    automatic cycle collection stays off and only the window's tick collects, in the GUI thread (gui/collector.py).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, model=None, log_path=None,
                 recordings_root: str | os.PathLike | None = None, detector: config.DetectorConfig | None = None,
                 verify: bool | None = None):
        super().__init__()
        self.setWindowTitle("Spotter — Console opérateur")
        self.resize(1480, 900)
        self._model_label = "aucun"
        self.explanation_methods: dict[int, str] = {}     # detection id -> GRADCAM / OCCLUSION
        self._cam_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradcam")
        self._cam_job: tuple[int, concurrent.futures.Future] | None = None
        self._last_status = 0.0
        self._closed = False
        self.session = ConsoleSession(detector=detector, view=self, verify=verify)
        self.samples = SamplesPanel(recordings_root, self, self.device_combo_data, self.selected_detection)

        self._build_ui()
        self.session.log = self._open_log(log_path)
        if model is not None:
            self._install_model(model, getattr(model, "name", "modèle"))
        else:
            self._load_initial_model(model_path)
        self._refresh_controls()

        # cycles are collected by the tick, in this thread, until the window is destroyed (gui/collector.py)
        collector.hold()
        self.destroyed.connect(lambda *_: collector.release())
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

        frame, flay = widgets.panel("Explication de la détection sélectionnée")
        self.cam_view = widgets.GradCamView()
        flay.addWidget(self.cam_view)
        lay.addWidget(frame, 3)
        lay.addWidget(self.samples, 0)
        return box

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_note = QtWidgets.QLabel("Prêt")
        self.status_input = QtWidgets.QLabel("Entrée : aucune")
        self.status_drops = QtWidgets.QLabel("Audio perdu : 0 débordement · 0 saturation")
        self.status_load = QtWidgets.QLabel("Charge : –")
        self.status_model = QtWidgets.QLabel("Modèle : aucun")
        self.status_verify = QtWidgets.QLabel("")
        self.status_verify.setVisible(False)
        sb.addWidget(self.status_note, 1)
        for w in (self.status_input, self.status_drops, self.status_load, self.status_verify, self.status_model):
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

    def device_combo_data(self):
        """The input device chosen in the toolbar (None: the default one)."""
        return self.device_combo.currentData()

    # ==== what the session says (SessionView) ==========================================================
    def error(self, text: str) -> None:
        self.show_error(text)

    def info(self, text: str, level: str = "info") -> None:
        self.show_info(text, level)

    def clear_message(self) -> None:
        self.banner.hide()

    def call_cleared(self, clear_signal: bool) -> None:
        self._cam_job = None
        self.table.setRowCount(0)
        self.cam_view.clear()
        self._show_call()
        if clear_signal:
            self.spectrogram.clear_history(0.0)

    def segment_started(self, offset_s: float, input_text: str) -> None:
        self._drain(None)                              # the previous segment's last results, before they are cleared
        self.spectrogram.clear_history(offset_s)
        self.status_input.setText(input_text)

    # ==== model ========================================================================================
    def _open_log(self, log_path):
        from spotter.eventlog import EventLog
        try:
            return EventLog(log_path)
        except SpotterError as exc:
            self.show_error(f"Journal des détections inaccessible : {exc}. Les détections s'affichent mais "
                            f"ne sont pas journalisées.")
            return None

    def _load_initial_model(self, model_path) -> None:
        from spotter.artifact import default_runtime_model_path
        path = Path(model_path) if model_path else default_runtime_model_path()
        self.load_model_file(path)

    def load_model_file(self, path: str | os.PathLike) -> bool:
        """Load an artifact and use it from now on (the replay/live stream restarts); False + message if refused."""
        from spotter.onnxmodel import load_any
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.WaitCursor)
        try:
            model = load_any(path)
        except SpotterError as exc:
            self.show_error(f"Modèle refusé : {exc}. "
                            + ("Le modèle actuel reste en service." if self.session.model is not None
                               else "Chargez un modèle compatible avec « Charger un modèle… »."))
            return False
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        self._install_model(model, model.name)
        self.status_model.setToolTip(str(Path(path).resolve()))
        self.note(f"Modèle chargé : {model.name}")
        return True

    def _install_model(self, model, label: str) -> None:
        self.session.install_model(model, device=self.device_combo_data())
        self.samples.set_keywords()             # the model's keyword set is now the active one
        self._model_label = label
        self.table.setColumnHidden(widgets.DetectionTable.VERIFIED_COLUMN, not self.session.verifying)
        self._show_verification()
        self._show_call()
        self.status_model.setText(f"Modèle : {label}")
        self._refresh_controls()

    # ==== sources (actions of the toolbar) =============================================================
    def start_live(self, device=None) -> bool:
        """Monitor the input device (index, name or None for the default); message in the window on failure."""
        ok = self.session.start_live(device)
        self._refresh_controls()
        return ok

    def _toggle_live(self) -> None:
        if self.session.mode == "live" and self.session.running:
            self.stop()
        else:
            self.start_live(self.device_combo_data())

    def open_file(self, path: str | os.PathLike) -> bool:
        """Replay a recorded call from the start (a new call); message in the window if the file is unusable."""
        ok = self.session.open_file(path)
        self._refresh_controls()
        return ok

    def stop(self) -> None:
        """Stop listening/replaying (the detections of the call stay)."""
        self.session.stop()
        self._drain(None)
        self._refresh_controls()

    def toggle_play(self) -> None:
        self.session.toggle_play()
        self._refresh_controls()

    def pause(self) -> None:
        self.session.pause()
        self._refresh_controls()

    def seek(self, seconds: float) -> None:
        """Jump in the replayed call; the detections so far are kept (same call)."""
        self.session.seek(seconds)
        self._refresh_controls()

    def _seek_to_slider(self) -> None:
        self.seek(self.seek_slider.value() / 1000.0 * self.session.file_duration)

    def _slider_action(self, action: int) -> None:
        if action != QtWidgets.QAbstractSlider.SliderMove:
            QtCore.QTimer.singleShot(0, self._seek_to_slider)

    def set_speed(self, index: int) -> None:
        if self.speed_combo.currentIndex() != index:
            self.speed_combo.setCurrentIndex(index)
        self.session.set_speed(index)

    def new_call(self) -> None:
        """Forget the detections and the suggestion; the detector thread resets its call evidence too."""
        self.session.new_call()

    # ==== drawing what the session drained ============================================================
    def _tick(self) -> None:
        self._drain(DRAIN_BUDGET_S)
        self._poll_gradcam()
        self.samples.poll()
        now = time.monotonic()
        if now - self._last_status > STATUS_PERIOD_S:
            self._last_status = now
            self._update_status()
        collector.collect_if_due()

    def _drain(self, budget_s: float | None) -> int:
        """Drain the session within budget_s (None: everything) and redraw once; returns the items consumed."""
        drained = self.session.drain(budget_s, max_frames=widgets.HISTORY_FRAMES)
        self._show_drained(drained)
        return drained.items

    def _show_drained(self, d: Drained) -> None:
        for det in d.detections:
            self.table.add_detection(det.id, det.event, det.start_s, det.verified,
                                     widgets.proposer_evidence(det.verification))
            self.spectrogram.add_marker(det.start_s, det.end_s, det.event.keyword,
                                        widgets.service_color(det.event.service))
        if d.frames is not None:
            self.spectrogram.append(d.frames, self.session.position_s)
            self.level_meter.set_level(d.peak_db)
        self.spectrogram.refresh()
        if d.call_changed:
            self._show_call()
        if d.rejected:
            self._show_verification()
        self._update_position()
        if d.ended:
            self._refresh_controls()

    def _show_verification(self) -> None:
        """Status bar: whether Whisper checks the detections, and how many candidates it rejected in this call."""
        s = self.session
        self.status_verify.setVisible(s.verifying)
        if not s.verifying:
            return
        if s.verify_status and s.verify_status.startswith("verification is on"):
            n = s.rejected
            self.status_verify.setText(f"Vérification : active · {n} candidat{'s' if n > 1 else ''} "
                                       f"rejeté{'s' if n > 1 else ''}")
            self.status_verify.setToolTip("Chaque détection est confirmée par un second avis (Whisper base). "
                                          "Les candidats rejetés sont consignés dans le journal, sans être "
                                          "affichés comme détections.")
            self.status_verify.setStyleSheet("")
        else:
            self.status_verify.setText("Vérification : indisponible")
            self.status_verify.setToolTip(f"{s.verify_status} — le premier étage décide seul.")
            self.status_verify.setStyleSheet("color: #d6a531;")

    def _show_call(self) -> None:
        state = self.session.call_state
        self.service_panel.show_suggestion(state.suggestion, state.evidence)

    # ==== Grad-CAM =====================================================================================
    @property
    def detections(self) -> list[Detection]:
        return list(self.session.detections.values())

    def selected_detection(self) -> Detection | None:
        det_id = self.table.selected_id()
        return self.session.detections.get(det_id) if det_id is not None else None

    def cut_selected_detection(self) -> bool:
        """Make a take of the selected detection's segment of the replayed call (samples panel)."""
        return self.samples.cut_selected_detection()

    def _on_selection(self) -> None:
        det = self.selected_detection()
        self._refresh_controls()
        if det is None:
            return
        if det.mel is None:
            self.cam_view.clear()
            self.cam_view.show_message("Signal de cette détection indisponible (trop ancien) : pas d'explication.")
            return
        self.samples.suggest_keyword(det.event.keyword)
        if det.heat is not None:
            self._show_heat(det)
            return
        self.cam_view.show_message(f"Calcul de l'explication de « {det.event.keyword} »…")
        label = config.LABELS.index(det.event.keyword)
        self._cam_job = (det.id, self._cam_pool.submit(explain, self.session.model, det.mel, label))

    def _poll_gradcam(self) -> None:
        if self._cam_job is None or not self._cam_job[1].done():
            return
        det_id, fut = self._cam_job
        self._cam_job = None
        det = self.session.detections.get(det_id)
        if det is None:
            return
        try:
            det.heat, self.explanation_methods[det_id] = fut.result()
        except Exception as exc:   # an explanation must never take the console down
            self.cam_view.show_message(f"Explication impossible : {type(exc).__name__}: {exc}")
            return
        if self.table.selected_id() == det_id:
            self._show_heat(det)

    def _show_heat(self, det: Detection) -> None:
        t0 = det.window_end_s - WINDOW_FRAMES * FRAME_S
        method = METHOD_FR.get(self.explanation_methods.get(det.id, ""), "")
        self.cam_view.show_heat(det.mel, det.heat, t0, (det.start_s, det.end_s),
                                f"« {det.event.keyword} » à {widgets.fmt_position(det.start_s)} — score "
                                f"{widgets.fr_num(det.event.score)}. Zones chaudes : ce qui a le plus pesé "
                                f"dans la décision ; pointillés : mot-clé estimé. Méthode : {method}.")

    def explain(self, det_id: int, timeout_s: float = 30.0) -> np.ndarray | None:
        """Select a detection and wait for its heat map (used by tests and scripts)."""
        self.table.select_id(det_id)
        t_end = time.monotonic() + timeout_s
        while self.session.detections[det_id].heat is None and time.monotonic() < t_end:
            QtWidgets.QApplication.processEvents()
            self._poll_gradcam()
            time.sleep(0.01)
        return self.session.detections[det_id].heat

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

    # ==== state display ================================================================================
    def _refresh_controls(self) -> None:
        s = self.session
        has_model = s.spotter is not None
        live = s.mode == "live" and s.running
        self.live_button.setText("■ Arrêter" if live else "● Écouter")
        self.live_button.setEnabled(has_model)
        self.open_button.setEnabled(has_model)
        is_file = s.mode == "file" and s.file_path is not None
        self.play_button.setEnabled(is_file)
        self.seek_slider.setEnabled(is_file)
        if is_file and s.running and not s.source.paused:
            self.play_button.setText("❚❚ Pause")
        elif is_file and not s.running:
            self.play_button.setText("↻ Rejouer")
        else:
            self.play_button.setText("▶ Lecture")
        self.samples.refresh()

    def _update_position(self) -> None:
        s = self.session
        if s.mode == "file" and s.file_duration > 0:
            pos = min(s.position_s, s.file_duration)
            self.position_label.setText(f"{widgets.fmt_position(pos)} / {widgets.fmt_position(s.file_duration)}")
            if not self.seek_slider.isSliderDown():
                self.seek_slider.blockSignals(True)
                self.seek_slider.setValue(int(1000 * pos / s.file_duration))
                self.seek_slider.blockSignals(False)
        elif s.mode == "live":
            self.position_label.setText(f"{widgets.fmt_position(s.position_s)} en direct")

    def _update_status(self) -> None:
        s = self.session
        if s.source is not None:
            st = s.source.stats
            s1 = "" if st.device_overflows == 1 else "s"
            s2 = "" if st.ring_overruns == 1 else "s"
            self.status_drops.setText(f"Audio perdu : {st.device_overflows} débordement{s1} · "
                                      f"{st.ring_overruns} saturation{s2}")
            self.status_drops.setToolTip("Débordements signalés par le pilote audio · saturations du tampon "
                                         "circulaire (le traitement n'a pas suivi)")
            lost = st.device_overflows + st.ring_overruns
            self.status_drops.setStyleSheet("color: #d6a531;" if lost else "")
        if s.running:
            self.status_load.setText(f"Charge : {100 * s.load:.0f} %")
        if s.running and s.mode == "file" and s.source.paused:
            self.note("En pause")
        self._refresh_controls()

    # ==== lifetime =====================================================================================
    @property
    def running(self) -> bool:
        return self.session.running

    @property
    def finished(self) -> bool:
        return self.session.finished

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop everything; pending takes are saved (nothing recorded is lost); the event log is closed."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        self.session.shutdown()
        self._drain(None)
        self.samples.shutdown()
        self._cam_pool.shutdown(wait=False)
        if self.session.log is not None:
            self.session.log.close()
            self.session.log = None


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
                screenshot: str | None = None, screenshot_after: float = 5.0, verify: bool | None = None) -> int:
    """Open the console (blocking until it is closed); with `screenshot`, save the window after N s and exit."""
    if _needs_offscreen():
        if not screenshot:
            raise SpotterError("console: no display (DISPLAY/WAYLAND_DISPLAY unset); "
                               "use --screenshot with QT_QPA_PLATFORM=offscreen to render without one")
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from spotter.onnxmodel import torch_available
    if torch_available():                  # only a torch model (.pt, or Grad-CAM's twin) uses it
        import torch
        torch.set_num_threads(max(1, int(os.environ.get("SPOTTER_THREADS", "1"))))
    pg.setConfigOptions(antialias=True)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["spotter console"])
    app.setApplicationName("Spotter")
    font = app.font()
    font.setPointSize(10)
    app.setFont(font)
    win = ConsoleWindow(model_path=model, log_path=log, recordings_root=recordings, verify=verify)
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
            _dispose(win)
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
            loop.quit()
        # a local event loop, not app.exec_() + app.quit(): after QApplication.quit() every later event loop of
        # this process returns at once (Qt keeps its quit flag), so a caller's Qt code could no longer wait
        loop = QtCore.QEventLoop()
        QtCore.QTimer.singleShot(int(screenshot_after * 1000), grab)
        loop.exec_()
    else:
        app.exec_()
    _dispose(win)
    return result["code"]


def _dispose(win: ConsoleWindow) -> None:
    """Shut the window down and delete its Qt objects now, not whenever Python's garbage collector reaches them:
    a caller that goes on with Qt (the tests do) would otherwise have pyqtgraph items destroyed in the middle of its
    own events; automatic cycle collection comes back with the deletion (gui/collector.py)."""
    win.shutdown()
    win.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)

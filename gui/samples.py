"""The samples panel: keyword takes for retraining, recorded at the microphone or cut from a replayed call.

One pending take at a time; nothing recorded is lost: a take that is replaced or left unsaved when the window
closes is saved under <dossier>/_non_classes/. The files themselves are written by gui/recorder.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from PyQt5 import QtWidgets

from spotter import config
from spotter.errors import SpotterError

from . import recorder, widgets
from .session import Detection, SessionView


class SamplesPanel(QtWidgets.QWidget):
    """« Échantillons pour le réentraînement »: keyword choice, folder, record / cut / listen / save.

    `device()` gives the input device to record from; `selected()` the detection selected in the call (or
    None); messages go to `view`. The window calls poll() on its timer, refresh() when the selection changes,
    and shutdown() when it closes.
    """

    def __init__(self, recordings_root: str | os.PathLike | None, view: SessionView,
                 device: Callable[[], object], selected: Callable[[], Detection | None], parent=None):
        super().__init__(parent)
        self.view = view
        self._device = device
        self._selected = selected
        self.recordings_root = Path(recordings_root) if recordings_root else recorder.default_root()
        self._mic_recorder: recorder.MicRecorder | None = None
        self.take: recorder.Take | None = None
        self.last_saved: Path | None = None
        self._build()

    def set_keywords(self) -> None:
        """Fill the keyword list from the active keyword set (the loaded model's)."""
        self.keyword_combo.clear()
        for kw in config.KEYWORDS:
            service = config.KEYWORD_SERVICE.get(kw)
            self.keyword_combo.addItem(f"{kw}  ({service})" if service else kw, kw)
        self.keyword_combo.addItem("— non classé —", None)

    def _build(self) -> None:
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        frame, lay = widgets.panel("Échantillons pour le réentraînement")
        outer.addWidget(frame)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Mot-clé :"))
        self.keyword_combo = QtWidgets.QComboBox()
        self.set_keywords()
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

    # ==== keyword ======================================================================================
    def selected_keyword(self) -> str | None:
        return self.keyword_combo.currentData()

    def _select_keyword(self, keyword: str | None) -> None:
        i = self.keyword_combo.findData(keyword)
        if i >= 0:
            self.keyword_combo.setCurrentIndex(i)

    def suggest_keyword(self, keyword: str) -> None:
        """Preselect the keyword of a selected detection, unless a pending take already has its own."""
        if self.take is None or self.take.saved_to is not None:
            self._select_keyword(keyword)

    # ==== takes ========================================================================================
    def toggle_mic_recording(self) -> None:
        if self._mic_recorder is not None:
            self._finish_mic_take()
            return
        self._autosave_unsaved_take()
        try:
            rec = recorder.MicRecorder(self._device())
            rec.start()
        except SpotterError as exc:
            self.mic_button.setChecked(False)
            if "no input device" in str(exc):
                self.view.error("Aucun micro disponible pour enregistrer un échantillon : branchez un "
                                "périphérique d'entrée, ou extrayez la détection d'un appel rejoué.")
            else:
                self.view.error(f"Enregistrement au micro impossible : {exc}")
            return
        self._mic_recorder = rec
        self.mic_button.setChecked(True)
        self.mic_button.setText("■ Arrêter l'enregistrement")
        self.view.note("Enregistrement au micro…")

    def poll(self) -> None:
        """Show a running microphone take's length; end it when it is full."""
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
        self.set_take(recorder.Take(audio, self.selected_keyword(), f"micro {rec.device['name']}"))

    def cut_selected_detection(self) -> bool:
        """Make a take of the selected detection's segment of the replayed call ([start-0.3, end+0.3] s)."""
        det = self._selected()
        if det is None or det.source_path is None:
            self.view.info("Sélectionnez une détection d'un appel rejoué pour en extraire le segment.", "warning")
            return False
        a, b = recorder.detection_span(det.start_s, det.end_s)
        try:
            audio = recorder.cut_segment(det.source_path, a, b)
        except SpotterError as exc:
            self.view.error(f"Extraction impossible : {exc}")
            return False
        self._autosave_unsaved_take()
        name = Path(det.source_path).name
        self.set_take(recorder.Take(audio, det.event.keyword,
                                    f"{name} {widgets.fmt_position(a)}–{widgets.fmt_position(b)}"))
        return True

    def set_take(self, take: recorder.Take) -> None:
        self.take = take
        if take.keyword is not None:
            self._select_keyword(take.keyword)
        self._update_take_label()
        self.refresh()

    def listen_take(self) -> None:
        if self.take is None:
            return
        try:
            recorder.play(self.take.audio)
        except SpotterError:
            self.view.note("Écoute impossible : aucune sortie audio sur ce poste")

    def save_take(self) -> Path | None:
        """Save the pending take under <dossier>/<mot-clé>/<horodatage>.wav."""
        if self.take is None:
            return None
        keyword = self.selected_keyword()
        try:
            path = recorder.save_take(self.recordings_root, self.take, keyword=keyword, unsorted=keyword is None)
        except SpotterError as exc:
            self.view.error(f"Sauvegarde impossible : {exc}")
            return None
        self.last_saved = path
        self.view.note(f"Échantillon sauvegardé : {path}")
        self.take = None
        self._update_take_label()
        self.refresh()
        return path

    def _autosave_unsaved_take(self) -> Path | None:
        """Nothing recorded is lost: an unsaved take goes to <dossier>/_non_classes/."""
        if self.take is None or self.take.saved_to is not None:
            return None
        try:
            path = recorder.save_take(self.recordings_root, self.take, unsorted=True)
        except SpotterError as exc:
            self.view.error(f"Sauvegarde automatique impossible : {exc}")
            return None
        self.last_saved = path
        self.take = None
        return path

    # ==== folder =======================================================================================
    def set_recordings_root(self, path: str | os.PathLike) -> None:
        self.recordings_root = Path(path)
        self._update_take_label()

    def _ask_root(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Dossier des échantillons",
                                                          str(self.recordings_root))
        if path:
            self.set_recordings_root(path)

    # ==== display ======================================================================================
    def refresh(self) -> None:
        """Enable the buttons that can act now."""
        det = self._selected()
        self.cut_button.setEnabled(det is not None and det.source_path is not None)
        self.listen_button.setEnabled(self.take is not None)
        self.save_button.setEnabled(self.take is not None)

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

    # ==== lifetime =====================================================================================
    def shutdown(self) -> None:
        """End a microphone take and save any pending take (nothing recorded is lost)."""
        if self._mic_recorder is not None:
            self._finish_mic_take()
        self._autosave_unsaved_take()

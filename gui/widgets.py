"""Widgets of the operator console: spectrogram, level meter, service panel, detection list, Grad-CAM view, banner.

Widgets only display what they are given (log-mel frames, levels, events, heat maps); no signal processing
happens here. All user-visible text is French.
"""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from spotter import config
from spotter.config import FRAME_S
from spotter.features import MEL_FLOOR

# --- look ----------------------------------------------------------------------------------------------
BG = "#171b20"
PANEL = "#20252c"
PANEL_2 = "#272d35"
BORDER = "#343c47"
TEXT = "#e8ebef"
TEXT_DIM = "#98a2ae"
ACCENT = "#4f8cc9"

SERVICE_COLORS = {"15": "#c0392b", "17": "#1f5fae", "18": "#d9531e"}      # SAMU red, Police blue, pompiers orange-red
OTHER_COLOR = "#5d6d7e"                    # keywords of a set without these services (wake words)


def service_color(service: str | None) -> str:
    return SERVICE_COLORS.get(service, OTHER_COLOR)
IDLE_COLOR = "#2b323b"

SPECTRO_CMAP = "inferno"
HEAT_CMAP = "inferno"
HISTORY_S = 8.0                                             # seconds of spectrogram shown
HISTORY_FRAMES = int(round(HISTORY_S / FRAME_S))            # 800
DISPLAY_RANGE = 6.5                                         # log-mel units shown below the running peak (65 dB)
METER_MIN_DB, METER_MAX_DB = -60.0, 0.0
LABEL_BAND = 4                                              # mel-band units above the image for keyword labels

STYLE = f"""
QMainWindow, QWidget#central {{ background: {BG}; }}
QWidget {{ color: {TEXT}; font-size: 10pt; }}
QFrame#panel {{ background: {PANEL}; border: 1px solid {BORDER}; border-radius: 6px; }}
QLabel#panelTitle {{ color: {TEXT_DIM}; font-size: 9pt; font-weight: bold; letter-spacing: 1px; }}
QLabel#dim {{ color: {TEXT_DIM}; }}
QPushButton {{ background: {PANEL_2}; border: 1px solid {BORDER}; border-radius: 4px; padding: 5px 12px; }}
QPushButton:hover {{ background: #313946; }}
QPushButton:pressed {{ background: #3a4453; }}
QPushButton:disabled {{ color: #5f6873; }}
QPushButton#primary {{ background: #2c4d6f; border-color: #3d6791; font-weight: bold; }}
QPushButton#primary:hover {{ background: #35597f; }}
QPushButton#record:checked {{ background: #8e2a22; border-color: #b3362c; }}
QComboBox {{ background: {PANEL_2}; border: 1px solid {BORDER}; border-radius: 4px; padding: 4px 8px; }}
QComboBox QAbstractItemView {{ background: {PANEL_2}; selection-background-color: #35597f; }}
QTableWidget {{ background: {PANEL}; alternate-background-color: #242a32; gridline-color: {BORDER};
               border: none; selection-background-color: #35597f; }}
QHeaderView::section {{ background: {PANEL_2}; color: {TEXT_DIM}; border: none; border-bottom: 1px solid {BORDER};
                        padding: 4px 6px; font-weight: bold; }}
QSlider::groove:horizontal {{ height: 6px; background: {PANEL_2}; border-radius: 3px; }}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 3px; }}
QSlider::handle:horizontal {{ background: {TEXT}; width: 12px; margin: -4px 0; border-radius: 6px; }}
QStatusBar {{ background: {PANEL}; border-top: 1px solid {BORDER}; color: {TEXT_DIM}; }}
QStatusBar QLabel {{ color: {TEXT_DIM}; padding: 0 8px; }}
QToolTip {{ background: {PANEL_2}; color: {TEXT}; border: 1px solid {BORDER}; }}
"""


def fmt_position(s: float) -> str:
    """Call position as mm:ss.d (h:mm:ss beyond an hour)."""
    s = max(0.0, s)
    if s >= 3600:
        return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"
    return f"{int(s // 60):02d}:{s % 60:04.1f}".replace(".", ",")


def fr_num(x: float, digits: int = 2) -> str:
    """A number the French way (decimal comma)."""
    return f"{x:.{digits}f}".replace(".", ",")


def fmt_clock(wall_time: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall_time))


def service_label(service: str | None) -> str:
    return f"{service} — {config.SERVICES[service]}" if service else "—"


def panel(title: str | None = None) -> tuple[QtWidgets.QFrame, QtWidgets.QVBoxLayout]:
    """A rounded dark frame with an optional small upper-case title; returns (frame, its layout)."""
    frame = QtWidgets.QFrame()
    frame.setObjectName("panel")
    lay = QtWidgets.QVBoxLayout(frame)
    lay.setContentsMargins(10, 8, 10, 10)
    lay.setSpacing(6)
    if title:
        t = QtWidgets.QLabel(title.upper())
        t.setObjectName("panelTitle")
        lay.addWidget(t)
    return frame, lay


def _lookup_table(name: str, alpha_ramp: bool = False) -> np.ndarray:
    lut = pg.colormap.get(name).getLookupTable(0.0, 1.0, 256, alpha=True)
    if alpha_ramp:                       # transparent where the heat is low, opaque where it is high
        lut = lut.copy()
        ramp = np.clip((np.linspace(0, 1, 256) - 0.12) / 0.6, 0, 1)
        lut[:, 3] = (ramp ** 0.8 * 235).astype(lut.dtype)
    return lut


def _style_plot(plot: pg.PlotItem) -> None:
    for name in ("left", "bottom"):
        ax = plot.getAxis(name)
        ax.setPen(pg.mkPen(BORDER))
        ax.setTextPen(pg.mkPen(TEXT_DIM))
    plot.getViewBox().setBackgroundColor(pg.mkColor("#000004"))


# --- spectrogram ---------------------------------------------------------------------------------------
class SpectrogramView(pg.PlotWidget):
    """Scrolling log-mel spectrogram of the last HISTORY_S seconds, with keyword markers on the time axis.

    Frames are copied into a preallocated (HISTORY_FRAMES, 32) image that is shifted in place; the image is
    redrawn at most once per `refresh()` (one console tick), however many frames arrived.
    """

    def __init__(self, parent=None):
        super().__init__(parent, background=PANEL)
        self._buf = np.full((HISTORY_FRAMES, config.N_MELS), MEL_FLOOR, dtype=np.float32)
        self._end_s = 0.0
        self._peak = 8.0
        self._dirty = True
        self._markers: list[tuple[float, list]] = []
        plot = self.getPlotItem()
        _style_plot(plot)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setMouseEnabled(False, False)
        plot.setLabel("bottom", "temps de l'appel (s)", color=TEXT_DIM)
        plot.setLabel("left", "bandes mel 60 Hz – 3,8 kHz", color=TEXT_DIM)
        plot.getAxis("left").setTicks([[(0, ""), (16, ""), (32, "")]])
        self.image = pg.ImageItem()
        self.image.setLookupTable(_lookup_table(SPECTRO_CMAP))
        plot.addItem(self.image)
        plot.setYRange(0, config.N_MELS + LABEL_BAND, padding=0)
        self.refresh()

    def clear_history(self, start_s: float = 0.0) -> None:
        self._buf.fill(MEL_FLOOR)
        self._end_s = start_s
        for _, items in self._markers:
            for it in items:
                self.getPlotItem().removeItem(it)
        self._markers.clear()
        self._dirty = True

    def append(self, frames: np.ndarray, end_s: float) -> None:
        """Add new log-mel frames (k, 32) ending at stream time end_s (seconds)."""
        k = min(len(frames), HISTORY_FRAMES)
        if k:
            self._buf[:-k] = self._buf[k:]                 # shift in place (numpy handles the overlap)
            self._buf[-k:] = frames[-k:]
        self._end_s = end_s
        self._dirty = True

    def add_marker(self, start_s: float, end_s: float, text: str, color: str) -> None:
        c = QtGui.QColor(color)
        fill = QtGui.QColor(c)
        fill.setAlpha(70)
        region = pg.LinearRegionItem((start_s, end_s), movable=False, brush=pg.mkBrush(fill),
                                     pen=pg.mkPen(c, width=2))
        label = pg.TextItem(text, color=TEXT, fill=pg.mkBrush(c), anchor=(0, 0))
        label.setFont(QtGui.QFont(self.font().family(), 9, QtGui.QFont.Bold))
        label.setPos(start_s, config.N_MELS + LABEL_BAND)
        plot = self.getPlotItem()
        plot.addItem(region)
        plot.addItem(label)
        self._markers.append((end_s, [region, label]))

    def refresh(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        filled = self._buf[self._buf > MEL_FLOOR + 0.5]
        if filled.size > 64:
            self._peak = 0.8 * self._peak + 0.2 * float(np.percentile(filled, 99.5))
        self.image.setImage(self._buf, autoLevels=False, levels=(self._peak - DISPLAY_RANGE, self._peak + 0.3))
        t0 = self._end_s - HISTORY_S
        self.image.setRect(QtCore.QRectF(t0, 0, HISTORY_S, config.N_MELS))
        self.getPlotItem().setXRange(t0, self._end_s, padding=0)
        while self._markers and self._markers[0][0] < t0:
            for it in self._markers.pop(0)[1]:
                self.getPlotItem().removeItem(it)


# --- level meter ---------------------------------------------------------------------------------------
class LevelMeter(QtWidgets.QWidget):
    """Vertical input level meter in dBFS with a slowly falling peak marker."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumWidth(34)
        self.setMaximumWidth(40)
        self.level = METER_MIN_DB
        self.peak = METER_MIN_DB
        self._peak_time = 0.0
        self.setToolTip("Niveau d'entrée (dBFS)")

    def set_level(self, db: float) -> None:
        self.level = max(METER_MIN_DB, min(METER_MAX_DB, db))
        now = time.monotonic()
        if self.level >= self.peak or now - self._peak_time > 1.5:
            self.peak, self._peak_time = self.level, now
        self.update()

    def _y(self, db: float, top: int, height: int) -> int:
        frac = (db - METER_MIN_DB) / (METER_MAX_DB - METER_MIN_DB)
        return int(top + height * (1.0 - frac))

    def paintEvent(self, _event) -> None:
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.Antialiasing)
        r = self.rect().adjusted(8, 6, -8, -18)
        p.fillRect(r, QtGui.QColor("#0d1013"))
        y = self._y(self.level, r.top(), r.height())
        for lo, hi, col in ((METER_MIN_DB, -18, "#3fa66b"), (-18, -6, "#d6a531"), (-6, 0, "#d2463a")):
            y_lo, y_hi = self._y(lo, r.top(), r.height()), self._y(hi, r.top(), r.height())
            top = max(y, y_hi)
            if top < y_lo:
                p.fillRect(QtCore.QRect(r.left(), top, r.width(), y_lo - top), QtGui.QColor(col))
        yp = self._y(self.peak, r.top(), r.height())
        p.fillRect(QtCore.QRect(r.left(), yp - 1, r.width(), 2), QtGui.QColor(TEXT))
        p.setPen(QtGui.QColor(TEXT_DIM))
        f = p.font()
        f.setPointSize(7)
        p.setFont(f)
        p.drawText(QtCore.QRect(0, self.height() - 16, self.width(), 14), QtCore.Qt.AlignCenter,
                   f"{self.level:.0f}")
        p.end()


# --- suggested service ---------------------------------------------------------------------------------
class ServicePanel(QtWidgets.QFrame):
    """The most visible element: the service the call should go to, its confidence and the supporting keywords."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("service")
        self.setMinimumHeight(210)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(18, 12, 18, 14)
        lay.setSpacing(4)
        self.caption = QtWidgets.QLabel("SERVICE SUGGÉRÉ")
        self.title = QtWidgets.QLabel()
        self.confidence = QtWidgets.QLabel()
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(8)
        self.keywords = QtWidgets.QLabel()
        self.keywords.setWordWrap(True)
        self.evidence = QtWidgets.QLabel()
        for w in (self.caption, self.title, self.confidence, self.bar, self.keywords):
            lay.addWidget(w)
        lay.addStretch(1)
        lay.addWidget(self.evidence)
        self.service: str | None = None
        self.show_suggestion(None, {})

    def _paint(self, color: str) -> None:
        self.setStyleSheet(f"""
            QFrame#service {{ background: {color}; border-radius: 8px; }}
            QLabel {{ color: white; background: transparent; }}
            QProgressBar {{ background: rgba(0,0,0,0.30); border: none; border-radius: 4px; }}
            QProgressBar::chunk {{ background: rgba(255,255,255,0.90); border-radius: 4px; }}""")
        self.caption.setStyleSheet("font-size: 9pt; font-weight: bold; letter-spacing: 1px; color: rgba(255,255,255,0.75);")

    def show_suggestion(self, suggestion, evidence: dict) -> None:
        """suggestion: detector.Suggestion or None; evidence: service -> summed score (for the small line)."""
        ev_text = "   ".join(f"{s} : {fr_num(evidence.get(s, 0.0), 1)}" for s in config.SERVICES)
        self.evidence.setText(f"Indices cumulés  ·  {ev_text}")
        self.evidence.setStyleSheet("font-size: 9pt; color: rgba(255,255,255,0.70);")
        if suggestion is None:
            self.service = None
            self._paint(IDLE_COLOR)
            self.title.setText("En attente d'indices…")
            self.title.setStyleSheet("font-size: 22pt; font-weight: bold; color: #c5ccd4;")
            self.confidence.setText("Aucun mot-clé suffisant pour orienter l'appel")
            self.confidence.setStyleSheet("font-size: 11pt; color: #98a2ae;")
            self.bar.setValue(0)
            self.keywords.setText("")
            return
        self.service = suggestion.service
        self._paint(service_color(suggestion.service))
        self.title.setText(service_label(suggestion.service))
        self.title.setStyleSheet("font-size: 30pt; font-weight: bold;")
        pct = int(round(100 * suggestion.confidence))
        self.confidence.setText(f"Confiance {pct} %")
        self.confidence.setStyleSheet("font-size: 15pt; font-weight: bold;")
        self.bar.setValue(pct)
        counts: dict[str, int] = {}
        for e in suggestion.events:
            counts[e.keyword] = counts.get(e.keyword, 0) + 1
        kws = ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in counts.items())
        self.keywords.setText(f"Mots-clés : {kws}")
        self.keywords.setStyleSheet("font-size: 12pt;")


def proposer_evidence(ve) -> str:
    """The Vérif. cell's tooltip for a verified candidate (spotter.verify.VerifiedEvent): who proposed it (with the
    Whisper proposer: the first stage, the Whisper head or both) and each opinion's score; "" without one."""
    if ve is None or ve.verifier_score is None:
        return ""
    parts = []
    if ve.whisper_score is not None:
        first, whisper = ve.first_score > 0, ve.whisper_score > 0
        who = ("premier étage et Whisper" if first and whisper else "Whisper seul" if whisper else
               "premier étage (Whisper pas encore entendu)" if ve.whisper_pending else "premier étage seul")
        parts.append(f"Proposé par : {who}")
        if whisper:
            parts.append(f"score Whisper {fr_num(ve.whisper_score)}")
        if ve.whisper_pending:
            parts.append("confirmé sans attendre Whisper, qui ne pouvait plus l'écarter")
    if ve.first_score > 0:
        parts.append(f"score premier étage {fr_num(ve.first_score)}")
    parts.append(f"avis Whisper {fr_num(ve.verifier_score)}")
    return " · ".join(parts)


# --- detection list ------------------------------------------------------------------------------------
class DetectionTable(QtWidgets.QTableWidget):
    """Detections of the current call, newest first. Each row carries the detection id (Qt.UserRole)."""

    HEADERS = ("Heure", "Position", "Mot-clé", "Score", "Service", "Vérif.")
    VERIFIED_COLUMN = 5                # shown only with verification on (`spotter console --verify`)

    def __init__(self, parent=None):
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.verticalHeader().setVisible(False)
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        self.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setFocusPolicy(QtCore.Qt.NoFocus)
        h = self.horizontalHeader()
        h.setDefaultAlignment(QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter)
        for i, mode in enumerate((QtWidgets.QHeaderView.ResizeToContents,) * 4 + (QtWidgets.QHeaderView.Stretch,)
                                 + (QtWidgets.QHeaderView.ResizeToContents,)):
            h.setSectionResizeMode(i, mode)
        self.setColumnHidden(self.VERIFIED_COLUMN, True)
        self.verticalHeader().setDefaultSectionSize(26)

    def add_detection(self, det_id: int, event, position_s: float, verified: bool | None = None,
                      evidence: str = "") -> None:
        """`verified`: True once the second stage confirmed it; None when the first stage decided alone.
        `evidence`: the verification's tooltip (who proposed it, each opinion; proposer_evidence)."""
        self.insertRow(0)
        color = QtGui.QColor(service_color(event.service))
        cells = (fmt_clock(event.wall_time), fmt_position(position_s), event.keyword, fr_num(event.score),
                 service_label(event.service), "✓ vérifié" if verified else "non vérifié")
        for col, text in enumerate(cells):
            item = QtWidgets.QTableWidgetItem(text)
            item.setData(QtCore.Qt.UserRole, det_id)
            if col == self.VERIFIED_COLUMN and evidence:
                item.setToolTip(evidence)
            if col == 2:
                f = item.font()
                f.setBold(True)
                item.setFont(f)
            if col == 4:
                tint = QtGui.QColor(color)
                tint.setAlpha(120)
                item.setForeground(QtGui.QBrush(QtGui.QColor("white")))
                item.setBackground(QtGui.QBrush(tint))
            self.setItem(0, col, item)

    def keywords(self) -> list[str]:
        return [self.item(r, 2).text() for r in range(self.rowCount())]

    def evidence(self) -> list[str]:
        return [self.item(r, self.VERIFIED_COLUMN).toolTip() for r in range(self.rowCount())]

    def services(self) -> list[str]:
        return [self.item(r, 4).text().split(" ")[0] for r in range(self.rowCount())]

    def verified(self) -> list[str]:
        return [self.item(r, self.VERIFIED_COLUMN).text() for r in range(self.rowCount())]

    def selected_id(self) -> int | None:
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        return self.item(rows[0].row(), 0).data(QtCore.Qt.UserRole)

    def select_id(self, det_id: int) -> None:
        for r in range(self.rowCount()):
            if self.item(r, 0).data(QtCore.Qt.UserRole) == det_id:
                self.selectRow(r)
                return


# --- Grad-CAM view -------------------------------------------------------------------------------------
class GradCamView(QtWidgets.QWidget):
    """The log-mel window behind a detection (grey) with its Grad-CAM heat overlaid, keyword span marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.caption = QtWidgets.QLabel("Sélectionnez une détection pour voir ce qui l'a déclenchée.")
        self.caption.setObjectName("dim")
        self.caption.setWordWrap(True)
        self.plot_widget = pg.PlotWidget(background=PANEL)
        self.plot_widget.setMinimumHeight(150)
        plot = self.plot_widget.getPlotItem()
        _style_plot(plot)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setMouseEnabled(False, False)
        plot.setLabel("bottom", "temps de l'appel (s)", color=TEXT_DIM)
        plot.getAxis("left").setTicks([[(0, ""), (32, "")]])
        self.mel_image = pg.ImageItem()
        self.mel_image.setLookupTable(_lookup_table("CET-L1"))
        self.heat_image = pg.ImageItem()
        self.heat_image.setLookupTable(_lookup_table(HEAT_CMAP, alpha_ramp=True))
        plot.addItem(self.mel_image)
        plot.addItem(self.heat_image)
        self.span = pg.LinearRegionItem((0, 0), movable=False, brush=pg.mkBrush(0, 0, 0, 0),
                                        pen=pg.mkPen("#ffffff", width=1, style=QtCore.Qt.DashLine))
        plot.addItem(self.span)
        self.span.hide()
        lay.addWidget(self.caption)
        lay.addWidget(self.plot_widget, 1)
        self.heat: np.ndarray | None = None

    def show_message(self, text: str) -> None:
        self.caption.setText(text)

    def clear(self) -> None:
        self.heat = None
        self.mel_image.clear()
        self.heat_image.clear()
        self.span.hide()
        self.caption.setText("Sélectionnez une détection pour voir ce qui l'a déclenchée.")

    def show_heat(self, mel: np.ndarray, heat: np.ndarray, t0: float, span: tuple[float, float], text: str) -> None:
        """mel, heat: (frames, 32); t0: call time of the first frame; span: keyword (start, end) in call time."""
        self.heat = heat
        width = len(mel) * FRAME_S
        rect = QtCore.QRectF(t0, 0, width, config.N_MELS)
        hi = float(np.percentile(mel, 99.5))
        self.mel_image.setImage(mel, autoLevels=False, levels=(hi - DISPLAY_RANGE, hi + 5.0))   # dim grey
        self.mel_image.setRect(rect)
        self.heat_image.setImage(heat, autoLevels=False, levels=(0.0, 1.0))
        self.heat_image.setRect(rect)
        self.span.setRegion(span)
        self.span.show()
        plot = self.plot_widget.getPlotItem()
        plot.setXRange(t0, t0 + width, padding=0)
        plot.setYRange(0, config.N_MELS, padding=0)
        self.caption.setText(text)


# --- message banner ------------------------------------------------------------------------------------
class MessageBanner(QtWidgets.QFrame):
    """A dismissible message strip at the top of the window (errors, warnings, information)."""

    COLORS = {"error": ("#5c1f1b", "#d2463a"), "warning": ("#5a4716", "#d6a531"), "info": ("#1d3a55", "#4f8cc9")}

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(12, 6, 6, 6)
        self.label = QtWidgets.QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        close = QtWidgets.QPushButton("Fermer")
        close.setCursor(QtCore.Qt.PointingHandCursor)
        close.clicked.connect(self.hide)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        self.level = ""
        self.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        bg, edge = self.COLORS.get(level, self.COLORS["info"])
        self.setStyleSheet(f"MessageBanner {{ background: {bg}; border: 1px solid {edge}; border-radius: 6px; }}"
                           f"QLabel {{ background: transparent; font-size: 11pt; }}")
        self.label.setText(text)
        self.level = level
        self.show()

    def text(self) -> str:
        return "" if self.isHidden() else self.label.text()

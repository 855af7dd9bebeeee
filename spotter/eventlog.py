"""Durable detection log: one JSON object per line, flushed and fsynced per event before anything displays it."""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from .errors import SpotterError


def default_log_path() -> Path:
    """$SPOTTER_LOG, else $XDG_DATA_HOME/spotter/events.jsonl (~/.local/share/spotter/events.jsonl)."""
    if os.environ.get("SPOTTER_LOG"):
        return Path(os.environ["SPOTTER_LOG"])
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "spotter" / "events.jsonl"


class EventLog:
    """Append-only JSON Lines log. `write(event, source=...)` returns only once the line is on disk."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_log_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise SpotterError(f"{self.path}: cannot open the event log ({exc.strerror})") from None
        self._lock = threading.Lock()
        self.source = ""

    def write(self, event, source: str | None = None) -> None:
        record = {"logged_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "source": self.source if source is None else source, **event.to_dict()}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())

    __call__ = write

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


def read_log(path: str | os.PathLike) -> list[dict]:
    """All records of a log (a torn last line from a crash is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out

"""Durable detection log: one JSON object per line, written and fsynced per event before anything displays it.

Opening a log checks that it can be written (before any audio is processed) and fences a torn last line left by a
crash, so the next record starts on a line of its own. New log files are created 0600 (call metadata is personal
data). Each record names its run (`run_id`, one per EventLog), the model that decided it and the absolute source.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import threading
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .errors import LogWriteError, SpotterError, json_line

LOG_MODE = 0o600                 # new log files: owner read/write only
LOG_DIR_MODE = 0o700             # a log folder created here: owner only
MIN_FREE_BYTES = 1 << 20         # refuse to start a run with less free space than this on the log's file system
_SYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EROFS}   # fsync on /dev/null, a pipe, a tty...


def default_log_path() -> Path:
    """$SPOTTER_LOG, else $XDG_DATA_HOME/spotter/events.jsonl (~/.local/share/spotter/events.jsonl)."""
    if os.environ.get("SPOTTER_LOG"):
        return Path(os.environ["SPOTTER_LOG"])
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "spotter" / "events.jsonl"


# --- low-level writing ---------------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _sync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _SYNC_UNSUPPORTED:
            raise


def _ends_with_newline(path: Path) -> bool:
    """True if the regular file at `path` is empty or its last byte is a newline (unreadable: assume torn)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except OSError:
        return False


def _prepare(fd: int, path: Path) -> None:
    """Prove the log can take a record: fence a torn tail, check free space, or probe a device/pipe with a newline."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        if st.st_size and not _ends_with_newline(path):
            _write_all(fd, b"\n")          # the torn fragment stays on its own line; the next record is intact
            _sync(fd)
        vfs = os.fstatvfs(fd)
        if vfs.f_bavail * vfs.f_frsize < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    else:
        _write_all(fd, b"\n")              # /dev/full refuses this; /dev/null, a pipe or a tty take it
        _sync(fd)


def _open_log(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=LOG_DIR_MODE)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), LOG_MODE)
    except OSError as exc:
        raise SpotterError(f"{path}: cannot open the event log ({exc.strerror or exc})") from None
    try:
        _prepare(fd, path)
    except OSError as exc:
        os.close(fd)
        raise SpotterError(f"{path}: cannot write the event log ({exc.strerror or exc})") from None
    return fd


# --- the log -------------------------------------------------------------------------------------------
class EventLog:
    """Append-only JSON Lines log. `write(event, source=...)` returns only once the line is on disk.

    Set `source` (absolute path or "mic:<device>") and `model` / `model_sha256` before events arrive; a failed
    write raises LogWriteError naming the event that could not be logged.
    """

    def __init__(self, path: str | os.PathLike | None = None, model: str | None = None,
                 model_sha256: str | None = None):
        self.path = Path(path) if path else default_log_path()
        self._fd: int | None = _open_log(self.path)
        self._lock = threading.Lock()
        self.run_id = uuid.uuid4().hex
        self.source = ""
        self.model = model
        self.model_sha256 = model_sha256

    def record(self, event, source: str | None = None, line: str | None = None) -> dict:
        """The JSON object written for `event` (`line`: the line id when one process spots several lines)."""
        rec = {"logged_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "run_id": self.run_id}
        if self.model is not None:
            rec["model"] = self.model
        if self.model_sha256 is not None:
            rec["model_sha256"] = self.model_sha256
        rec["source"] = self.source if source is None else source
        if line is not None:
            rec["line"] = line
        rec.update(event.to_dict())
        return rec

    def write(self, event, source: str | None = None, line: str | None = None) -> None:
        data = (json_line(self.record(event, source, line)) + "\n").encode("utf-8")
        with self._lock:
            try:
                if self._fd is None:
                    raise OSError(errno.EBADF, "log already closed")
                _write_all(self._fd, data)
                _sync(self._fd)
            except OSError as exc:
                raise LogWriteError(f"{self.path}: cannot write the event log ({exc.strerror or exc}); event not "
                                    f"logged: {event.keyword} at {event.start_s:.2f} s") from None

    __call__ = write

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    @property
    def closed(self) -> bool:
        return self._fd is None


# --- reading -------------------------------------------------------------------------------------------
class TornLineWarning(UserWarning):
    """A log line that is not a complete JSON object (a crash mid-write)."""


def read_log(path: str | os.PathLike, torn: list | None = None) -> list[dict]:
    """All records of a log. Blank lines are skipped; a torn line (crash mid-write) is reported, never silently
    dropped: appended to `torn` as (line_number, text) when a list is given, else a TornLineWarning."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if isinstance(rec, dict):
                out.append(rec)
                continue
            fragment = line.rstrip("\n")
            if torn is not None:
                torn.append((n, fragment))
            else:
                warnings.warn(f"{path}:{n}: torn log line skipped: {fragment[:80]!r}", TornLineWarning,
                              stacklevel=2)
    return out

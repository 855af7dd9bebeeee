"""Errors the spotter reports to users as one clear line (never a traceback), and safe text for terminals."""
from __future__ import annotations

import json
import unicodedata

# Categories never printed raw: controls (ESC, CR, LF, C1 CSI...), format characters (bidi overrides, zero-width),
# lone surrogates (undecodable bytes of a non-UTF-8 file name) and line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class SpotterError(Exception):
    """A problem with user input (file, device, model artifact) that is reported as one line."""


class LogWriteError(SpotterError):
    """The durable event log could not be written: the run must stop (nothing may be shown unlogged)."""


def _escape(ch: str) -> str:
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:          # os.fsdecode's surrogateescape of an undecodable byte: show the byte
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def printable(text) -> str:
    """`text` with every control/format/separator character escaped (\\x1b, \\n, \\u202e...), safe on a terminal.

    A file name or model name can then neither move the cursor, recolour, nor start a fake line of output.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def json_line(obj) -> str:
    """One JSON document on one line, UTF-8 text kept readable, every unsafe character as a \\u escape.

    Lone surrogates (bytes of a non-UTF-8 file name) become \\udcXX escapes, which Python's json reads back to the
    same str (and os.fsencode to the same bytes) instead of failing to encode.
    """
    text = json.dumps(obj, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(_json_escape(ch) if _unsafe(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    o = ord(ch)
    if o < 0x10000:
        return f"\\u{o:04x}"
    o -= 0x10000
    return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"

"""Phone timelines from the synthesisers themselves: which phone is said when, in a synthesised sentence.

Every engine's French phones come from espeak-ng's front end, so one inventory (espeak-ng's IPA names) serves all
three:
  espeak  libespeak-ng's PHONEME events (training/espeak_lib.py), named in IPA by the library itself
  mbrola  the .pho file that drives MBROLA: its phone names (espeak-ng's MBROLA names, SAMPA-like) mapped by
          MBROLA_IPA, its durations exactly what MBROLA renders
  kokoro  the model's own predicted per-token durations (training/kokoro_spans.py); its tokens are espeak-ng's
          IPA characters, a diacritic, stress mark or word space joined to the phone before it

A timeline is a tuple of (phone, start_s, end_s), contiguous, in the time base of the clip it describes; PAUSE is
silence. training/calls.say_full shifts it with the clip (tract factor, trimmed silence) as it does the keyword spans.
"""
from __future__ import annotations

import unicodedata

import numpy as np

PAUSE = "_"
# espeak-ng's MBROLA phone names for French (its mbrola/fr translation) -> the IPA names libespeak-ng gives
MBROLA_IPA = {
    "a": "a", "A": "ɑ", "e": "e", "E": "ɛ", "i": "i", "o": "o", "O": "ɔ", "u": "u", "y": "y", "2": "ø", "9": "œ",
    "@": "ə", "a~": "ɑ̃", "A~": "ɑ̃", "e~": "ɛ̃", "E~": "ɛ̃", "o~": "ɔ̃", "O~": "ɔ̃", "9~": "œ̃",
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "ɡ", "f": "f", "v": "v", "s": "s", "z": "z", "S": "ʃ",
    "Z": "ʒ", "m": "m", "n": "n", "J": "ɲ", "N": "ŋ", "l": "l", "R": "ʁ", "r": "ʁ", "j": "j", "w": "w", "H": "ɥ",
    "_": PAUSE,
}
MARKS = "ˈˌː-"                     # stress, length and espeak-ng's reduced-vowel suffix: not phones of their own


def phone_name(raw: str) -> str:
    """One inventory: espeak-ng's IPA name without stress, length or reduction marks; '' and pauses -> PAUSE."""
    name = "".join(ch for ch in raw.strip() if ch not in MARKS).replace("g", "ɡ")
    return unicodedata.normalize("NFC", name) or PAUSE


def mbrola_phone(name: str) -> str:
    """The IPA name of an MBROLA phone of espeak-ng's French .pho (unknown names kept as they are)."""
    base = name.rstrip(":")
    return MBROLA_IPA.get(base, phone_name(base))


def is_attached(ch: str) -> bool:
    """A Kokoro token that is no phone of its own: a combining diacritic or a stress / length mark."""
    return unicodedata.combining(ch) > 0 or ch in MARKS


def timeline(names: list[str], starts: list[float], end: float) -> tuple[tuple[str, float, float], ...]:
    """Contiguous (phone, start, end) from phone names and start times; the last phone ends at `end`. Successive
    pauses are merged; zero-length phones are dropped."""
    out: list[list] = []
    bounds = list(starts[1:]) + [end]
    for name, a, b in zip(names, starts, bounds):
        if b <= a:
            continue
        if out and name == PAUSE and out[-1][0] == PAUSE:
            out[-1][2] = b
        else:
            out.append([name, a, b])
    return tuple((n, float(a), float(b)) for n, a, b in out)


def shifted(phones, scale: float, cut: float, length: float) -> tuple[tuple[str, float, float], ...]:
    """The timeline of a clip replayed `scale` times as long, with `cut` seconds trimmed at its start and `length`
    seconds long: times scaled, shifted and clipped to the clip; phones wholly outside it dropped."""
    out = []
    for n, a, b in phones:
        a, b = max(0.0, a * scale - cut), min(length, b * scale - cut)
        if b > a:
            out.append((n, round(a, 3), round(b, 3)))
    return tuple(out)


# The phone inventory of per-row targets: every French phone espeak-ng's front end says, then the pause
INVENTORY = tuple(sorted(set(MBROLA_IPA.values()) - {PAUSE})) + (PAUSE,)
EMBEDDING_SPAN_S = 0.775      # audio one speech_embedding row sees (76 log-mel frames of 10 ms, 25 ms window)


def row_centres(n_rows: int, lead_rows: int, step_s: float) -> np.ndarray:
    """(n_rows,) seconds: the centre of each embedding row's audio (row r ends at (r - lead_rows + 1) x step_s, as
    calls.window_end_s; negative before the call starts)."""
    return (np.arange(n_rows) - lead_rows + 1) * step_s - EMBEDDING_SPAN_S / 2


def row_phones(phones, n_rows: int, lead_rows: int, step_s: float) -> np.ndarray:
    """(n_rows,) int16: the INVENTORY index of the phone said at the centre of each embedding row's audio (row r
    ends at (r - lead_rows + 1) x step_s, as calls.window_end_s), PAUSE where none is, -1 before the call starts or
    for a phone outside the inventory."""
    centre = row_centres(n_rows, lead_rows, step_s)
    out = np.where(centre >= 0, INVENTORY.index(PAUSE), -1).astype(np.int16)
    if not phones:
        return out
    index = {n: i for i, n in enumerate(INVENTORY)}
    ids = np.array([index.get(n, -1) for n, _, _ in phones], np.int16)
    starts = np.array([a for _, a, _ in phones])
    ends = np.array([b for _, _, b in phones])
    k = np.searchsorted(starts, centre, side="right") - 1
    inside = (k >= 0) & (centre >= 0)
    inside[inside] &= centre[inside] < ends[k[inside]]
    out[inside] = ids[k[inside]]
    return out


def phones_in(phones, start: float, end: float) -> list[str]:
    """The non-pause phones whose middle lies in [start, end]."""
    return [n for n, a, b in phones if n != PAUSE and start <= (a + b) / 2 <= end]

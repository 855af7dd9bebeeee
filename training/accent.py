"""French sentences said by MBROLA diphone voices of other languages: more real speakers' voices, with an accent.

Each MBROLA voice is a diphone set recorded by one real person. Only 8 of them speak French; dozens more speak
other languages. Here espeak-ng's French MBROLA front end (FRONT_END) makes the sentence's .pho (French phonemes,
durations, pitch), and each French phoneme is replaced one for one by the nearest phoneme the foreign voice has
(FRENCH_TO_FOREIGN: preference lists, checked against the voice's database). Durations, and the keyword spans
taken from them, are unchanged. The result is French said by a German, Dutch, Portuguese, ... speaker's voice
with a foreign accent: new timbres for training, as callers with an accent are. English keyword sets (the
real-people check) work the same way from espeak-ng's US MBROLA front end (ENGLISH_TO_FOREIGN).

These voices are training speakers only (never in validation or test): the recipe's held-out sets stay the same.
The reserved voice (ca2) is refused like everywhere else.
"""
from __future__ import annotations

import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from spotter.errors import SpotterError

from .voices import MBROLA_DIR, Voice, refuse_reserved

PREFIX = "acc-"                # Voice("mbrola", "acc-de4"): French through the de4 diphones
# per language family of the keyword set: the espeak-ng voice whose .pho is mapped
FRONT_ENDS = {"fr": "mb-fr1", "en": "mb-us1"}
FRONT_END = FRONT_ENDS["fr"]
# Installed with training/install_tts.sh; chosen for their phoneme coverage (26 or more of the probed SAMPA
# phonemes between vowels). it1/it2, es1/es4 and mx1/mx2 cover too few.
ACCENT_VOICES = ("de1", "de2", "de3", "de4", "de5", "de8", "nl2", "nl3", "lt2", "pt1", "hu1", "sw1", "sw2", "it3",
                 "it4", "ro1", "pl1", "cz2", "tr1", "tr2", "br1", "br3", "es2", "es3", "gr2", "ic1", "en1", "us1",
                 "us2", "us3")
# French SAMPA (espeak-ng's mb-fr* output) -> the phonemes tried, nearest first
FRENCH_TO_FOREIGN = {
    "i": ("i", "i:", "I"), "e": ("e", "e:", "E", "I"), "E": ("E", "E:", "e", "e:"), "a": ("a", "a:", "A", "A:"),
    "A": ("A", "a", "a:", "A:"), "O": ("O", "O:", "o", "o:"), "o": ("o", "o:", "O", "O:"),
    "u": ("u", "u:", "U"), "y": ("y", "y:", "Y", "i", "u"), "2": ("2", "2:", "9", "9:", "e", "e:", "@"),
    "9": ("9", "9:", "2", "2:", "E", "@"), "@": ("@", "9", "2", "2:", "6", "e", "E"),
    "e~": ("e~", "E~", "E", "e", "a"), "a~": ("a~", "A~", "a", "A", "a:"), "o~": ("o~", "O~", "O", "o", "o:"),
    "9~": ("9~", "e~", "E~", "9", "E", "a"),
    "p": ("p",), "b": ("b", "p"), "t": ("t",), "d": ("d", "t"), "k": ("k",), "g": ("g", "k"), "f": ("f",),
    "v": ("v", "f", "B", "w"), "s": ("s",), "z": ("z", "s"), "S": ("S", "s"), "Z": ("Z", "z", "jj", "S", "s"),
    "m": ("m",), "n": ("n",), "J": ("J", "n"), "N": ("N", "n"), "l": ("l", "L"),
    "R": ("R", "r", "rr", "x", "h"), "j": ("j", "i", "I"), "w": ("w", "u", "u:", "U"),
    "H": ("H", "w", "j", "y", "y:", "u"),
}
# US English SAMPA (espeak-ng's mb-us* output; diphthongs to their nearest single vowel) -> the phonemes tried
ENGLISH_TO_FOREIGN = {
    "i": ("i", "i:", "I"), "I": ("I", "i", "e"), "E": ("E", "e", "E:"), "{": ("{", "E", "a", "e"),
    "A": ("A", "a", "a:", "A:"), "O": ("O", "O:", "o", "o:"), "U": ("U", "u", "u:"), "u": ("u", "u:", "U"),
    "V": ("V", "a", "6", "@", "A"), "@": ("@", "6", "e", "E"), "r=": ("3", "@", "9", "6", "e"),
    "EI": ("e", "e:", "E"), "AI": ("a", "A", "a:"), "OI": ("O", "o", "o:"), "aU": ("a", "A", "a:"),
    "@U": ("o", "o:", "O"), "p": ("p",), "b": ("b", "p"), "t": ("t",), "d": ("d", "t"), "k": ("k",),
    "g": ("g", "k"), "p_h": ("p",), "t_h": ("t",), "k_h": ("k",), "4": ("4", "d", "t", "r"),
    "f": ("f",), "v": ("v", "f", "B", "w"), "T": ("T", "t", "s", "f"), "D": ("D", "d", "z"), "s": ("s",),
    "z": ("z", "s"), "S": ("S", "s"), "Z": ("Z", "z", "jj", "S", "s"), "tS": ("tS", "ts", "S", "t"),
    "dZ": ("dZ", "dz", "Z", "jj", "d"), "h": ("h", "x", "C"), "m": ("m",), "n": ("n",), "N": ("N", "n"),
    "l": ("l", "L"), "r": ("r", "R", "rr", "x"), "j": ("j", "i", "I"), "w": ("w", "u", "u:", "U"),
}
TABLES = {"fr": FRENCH_TO_FOREIGN, "en": ENGLISH_TO_FOREIGN}
_CONTEXT = ("a", "a:", "A", "e", "i")     # vowels a probe puts the phoneme between


def database(name: str) -> Path:
    return MBROLA_DIR / name / name


def is_accent(v: Voice) -> bool:
    return v.engine == "mbrola" and v.id.startswith(PREFIX)


def family(lang: str) -> str:
    """'en-us' -> 'en': the TABLES / FRONT_ENDS key of a keyword set's language."""
    return lang.split("-")[0]


def accent_voices(names=ACCENT_VOICES, lang: str = "fr") -> list[Voice]:
    """The accent voices whose MBROLA database is installed (reserved ones refused), saying `lang`."""
    if family(lang) not in TABLES:
        raise SpotterError(f"accent voices: no phoneme table for language {lang!r} (known: {', '.join(TABLES)})")
    out = []
    for n in names:
        refuse_reserved("mbrola", n)
        if database(n).is_file():
            out.append(Voice("mbrola", PREFIX + n, lang=lang))
    return out


@lru_cache(maxsize=None)
def has_phoneme(name: str, ph: str) -> bool:
    """Whether MBROLA voice `name` can say `ph` between two of its vowels (one short synthesis per try)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "p.pho", Path(tmp) / "p.wav"
        for v in _CONTEXT:
            src.write_text(f"_ 60\n{v} 80\n{ph} 90\n{v} 80\n_ 60\n")
            r = subprocess.run(["mbrola", str(database(name)), str(src), str(dst)], capture_output=True, timeout=30)
            if r.returncode == 0 and dst.is_file() and dst.stat().st_size > 1000:
                return True
    return False


@lru_cache(maxsize=None)
def phoneme_map(name: str, lang: str = "fr") -> dict[str, str]:
    """Phoneme of `lang` -> the first of its TABLES choices that voice `name` has ('_' if none)."""
    return {ph: next((c for c in choices if has_phoneme(name, c)), "_")
            for ph, choices in TABLES[family(lang)].items()}


def map_pho(pho_text: str, name: str, lang: str = "fr") -> str:
    """A .pho of `lang` with every phoneme replaced by voice `name`'s nearest (durations and pitch kept)."""
    table = phoneme_map(name, family(lang))
    out = []
    for line in pho_text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(";") or parts[0] == "_":
            out.append(line)
            continue
        if parts[0] not in table:
            raise SpotterError(f"accent voice {name}: no mapping for {lang} phoneme {parts[0]!r}")
        out.append(" ".join([table[parts[0]], *parts[1:]]))
    return "\n".join(out) + "\n"

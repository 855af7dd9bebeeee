"""libespeak-ng through ctypes: speech of a whole sentence *and* the time at which each word starts.

The espeak-ng command line gives audio only. The library also reports synthesis events: a WORD event carries
the word's character position in the text and its start time in the audio it produced (for MBROLA voices too,
since espeak-ng's own front end schedules the phonemes). That is how a keyword said inside a sentence that was
synthesised in one piece gets its time span, without splicing separately synthesised pieces. PHONEME events,
named in IPA, give every phone's start the same way (speak_phonemes; training/phones.py).

libespeak-ng keeps global state and is not thread-safe: one process uses it from one thread (the synthesis
pool runs worker processes, each with its own library instance). That state also carries from one sentence to the
next: the same sentence with the same settings comes out a little longer or shorter, its words up to ~0.1 s later,
depending on what the process said before it. So a process initialises the library once and never speaks itself:
each sentence is said by a child forked from it, which starts from the same state every time (the same job gives
the same audio and word times, whatever was synthesised before it and whichever worker says it). Breathy and
Klatt variants (fr+f3, klatt*) also draw noise from libc's rand(), whose state a child inherits from whatever its
process drew before: the child seeds it from the job (text, voice, settings) before speaking.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import pickle
import threading
import zlib
from dataclasses import dataclass

import numpy as np

from spotter.errors import SpotterError

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
EVENT_WORD = 1
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
INITIALIZE_PHONEME_EVENTS = 0x0001       # PHONEME events (the same audio: only events are added) ...
INITIALIZE_PHONEME_IPA = 0x0002          # ... named in IPA
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4
BUFFER_MS = 200


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Word:
    """A word event: character offset and length in the text (0-based, in characters), start time in seconds."""
    char_start: int
    char_len: int
    start_s: float


class _Engine:
    """One initialised libespeak-ng; `speak` returns (int16 samples, rate, words)."""

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError:
            raise SpotterError("libespeak-ng is not installed (apt-get install espeak-ng)") from None
        self.rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, None,
                                               INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA)
        if self.rate <= 0:
            raise SpotterError("libespeak-ng failed to initialise (espeak-ng-data missing?)")
        self._chunks: list[np.ndarray] = []
        self._words: list[Word] = []
        self._phonemes: list[tuple[str, float]] = []
        self._cb = _CALLBACK(self._on_audio)       # kept referenced: the library calls it
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.libc = ctypes.CDLL(None)             # rand(): the noise of breathy and Klatt voices
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            if e.type == EVENT_WORD:
                self._words.append(Word(e.text_position - 1, e.length, e.audio_position / 1000.0))
            elif e.type == EVENT_PHONEME:
                self._phonemes.append((e.id.string.decode("utf-8", "replace"), e.audio_position / 1000.0))
            i += 1
        return 0

    def speak(self, text: str, voice: str, wpm: int, pitch: int, pitch_range: int = 50):
        # each call runs in a fresh child of a never-used library (speak): the voice is set every time
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpotterError(f"espeak-ng voice {voice!r} is not installed")
        for param, value in ((PARAM_RATE, wpm), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range),
                             (PARAM_VOLUME, 100)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._words, self._phonemes = [], [], []
        self.libc.srand(zlib.crc32(repr((text, voice, int(wpm), int(pitch), int(pitch_range))).encode()))
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        err = self.lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
            raise SpotterError(f"espeak-ng -v {voice} failed on {text!r} (error {err})")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, self.rate, list(self._words), list(self._phonemes)


_LOCAL = threading.local()


@functools.lru_cache(maxsize=1)
def _lock() -> threading.Lock:
    return threading.Lock()


def speak(text: str, voice: str, wpm: int = 175, pitch: int = 50, pitch_range: int = 50
          ) -> tuple[np.ndarray, int, list[Word]]:
    """(float32 samples, rate, word events) of text said by an espeak-ng voice ('fr+m3', 'mb-fr1', ...).

    Character positions refer to `text` as given. Calls are serialised: the library is not re-entrant. Said by a
    child forked from this process's never-used library (module docstring): history-independent."""
    return speak_phonemes(text, voice, wpm, pitch, pitch_range)[:3]


def speak_phonemes(text: str, voice: str, wpm: int = 175, pitch: int = 50, pitch_range: int = 50
                   ) -> tuple[np.ndarray, int, list[Word], list[tuple[str, float]]]:
    """speak()'s result and the PHONEME events: (IPA name, start in seconds) of every phone ('' for a pause)."""
    with _lock():
        eng = getattr(_LOCAL, "engine", None)
        if eng is None:
            eng = _LOCAL.engine = _Engine()
        audio, rate, words, phonemes = _in_child(eng, text, voice, wpm, pitch, pitch_range)
    return audio.astype(np.float32) / 32768.0, rate, words, phonemes


def _in_child(eng: _Engine, *args):
    """eng.speak(*args) in a forked child; its result (or its SpotterError) comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child: speak, send, leave without running any cleanup
        try:
            os.close(r)
            try:
                result = eng.speak(*args)
            except SpotterError as e:
                result = e
            with os.fdopen(w, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise SpotterError(f"espeak-ng -v {args[1]} crashed on {args[0]!r} (exit status {status})")
    result = pickle.loads(data)
    if isinstance(result, SpotterError):
        raise result
    return result

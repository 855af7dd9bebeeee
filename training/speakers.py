"""New espeak-ng speakers: voice variants with drawn vocal-tract (formant), pitch and voice-quality settings.

espeak-ng's built-in French variants are a few dozen speakers. A variant file (espeak-ng-data/voices/!v/NAME) sets
the formant frequencies, heights and widths, the pitch base and range, roughness and breathiness, so drawing
those draws a new speaker. Speaker variety is what carries a synthetic-trained model over to voices it never
heard, so the calls recipe adds `espeak_generated_speakers` of them.

espeak-ng reads its data from $ESPEAK_DATA_PATH (the library and the command line alike): `install_speakers`
builds a private data folder (links to the system's files, a copy of its small voices folder plus the drawn
variants) in the cache and points $ESPEAK_DATA_PATH at it for this process and its workers.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from spotter.errors import SpotterError

PREFIX = "gen"
DIALECTS = ("fr", "fr-be", "fr-ch")


def variant_text(name: str, rng: random.Random) -> str:
    """An espeak-ng variant file for one drawn speaker."""
    female = rng.random() < 0.5
    tract = rng.uniform(1.02, 1.20) if female else rng.uniform(0.84, 1.02)     # formant scale ~ 1 / tract length
    base = rng.uniform(150, 230) if female else rng.uniform(70, 130)
    lines = ["language variant", f"name {name}", f"gender {'female' if female else 'male'}", "",
             f"pitch {round(base)} {round(base * rng.uniform(1.25, 1.8))}"]
    for f in range(9):
        freq = 100 if f == 0 or f > 5 else round(100 * tract * rng.uniform(0.95, 1.05))
        height = round(rng.uniform(75, 120)) if f else 100
        width = round(rng.uniform(80, 160)) if f else 100
        lines.append(f"formant {f} {freq} {height} {width}")
    if rng.random() < 0.4:
        lines.append(f"roughness {rng.randint(1, 4)}")
    if rng.random() < 0.25:
        lines.append("breath " + " ".join(str(rng.randint(0, 4)) for _ in range(8)))
    lines.append(f"consonants {rng.randint(80, 130)}")
    return "\n".join(lines) + "\n"


def system_data_dir() -> Path:
    from training.voices import espeak_data_dir
    d = espeak_data_dir()
    if d is None:
        raise SpotterError("espeak-ng is not installed (apt-get install espeak-ng)")
    return d


def install_speakers(n: int, seed: int, root: Path) -> list[str]:
    """Write n drawn variants into a private espeak-ng data folder under root, point $ESPEAK_DATA_PATH at it,
    and return the variant names (use them as 'fr+gen07'). Deterministic for a given seed."""
    src = system_data_dir()
    data = Path(root) / "espeak-ng-data"
    voices = data / "voices"
    if not voices.is_dir():
        data.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if entry.name != "voices" and not (data / entry.name).exists():
                (data / entry.name).symlink_to(entry)
        # espeak-ng lists at most 349 voices: keep the variants and the keyword set's MBROLA voices only
        keep = {f"mb-{v}" for v in _mbrola_names()}
        shutil.copytree(src / "voices", voices,
                        ignore=lambda d, names: [n for n in names if Path(d).name == "mb" and n not in keep])
    rng = random.Random(seed)
    names = []
    for i in range(n):
        name = f"{PREFIX}{i:02d}"
        (voices / "!v" / name).write_text(variant_text(name, rng), encoding="utf-8")
        names.append(name)
    os.environ["ESPEAK_DATA_PATH"] = str(Path(root).resolve())
    return names


def _mbrola_names() -> tuple[str, ...]:
    from training.voices import MBROLA_VOICES, _set_value
    return _set_value("mbrola_voices", MBROLA_VOICES)


def generated_voices(names: list[str], seed: int):
    """One Voice per drawn speaker, each in a drawn dialect of the active keyword set (French: fr, fr-be, fr-ch)."""
    from training.voices import Voice, _set_value
    dialects = _set_value("espeak_dialects", DIALECTS)
    rng = random.Random(seed + 1)
    return [Voice("espeak", f"{rng.choice(dialects)}+{name}") for name in names]

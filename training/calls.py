"""Calls: caller sentences synthesised whole, joined into call-like streams, put through a channel, embedded once.

Data flow:
  Sentence (sentences.py) --say()--> Utterance (16 kHz audio + keyword spans from the synthesiser), cached
      (say_full: and the sentence's phone timeline, phones.py, kept in the cache beside the spans)
  Utterances of one voice --make_call()--> one stream with pauses, then one channel for the whole call
      (wideband: room + noise; telephone: band-limited codec + noise) at a drawn SNR
  stream --stream_embeddings()--> (steps, 96) embeddings, computed once (the backbone is frozen)
  spans --step_labels()--> one label per 80 ms step, relative to the keyword's END:
      window ends KEYWORD_END_RANGE_S after a keyword end        -> that keyword
      window ends inside a keyword or just after it / long after -> ignored (IGNORE)
      anything else with speech in the window                    -> other; no speech at all -> noise

Every window of every call is then a training example, the head sees keywords inside running speech exactly as
the streaming detector will, and leave-one-engine-out folds only retrain the head on stored embeddings.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spotter import config
from spotter.audio import Resampler, load_audio, write_wav
from spotter.errors import SpotterError
from training.sentences import Sentence, espeak_span, refine_span
from training.voices import Voice

SR = config.SAMPLE_RATE
STEP_S = config.STEP_SAMPLES / SR
KEYWORD_END_RANGE_S = (0.04, 0.40)     # as training/dataset.py: where the window end sits after the keyword end
IGNORE_BEFORE_END_S = 0.12             # windows ending this close before a keyword end are neither yes nor no
IGNORE_AFTER_S = 0.85                  # ... nor those ending between the keyword range and this after the end
IGNORE = -1
UTTERANCE_VERSION = 2
PAUSE_S = (0.25, 1.4)                  # pause between two sentences of a call
TARGET_DBFS = -20.0


@dataclass(frozen=True)
class Utterance:
    """A synthesised sentence on disk: path to 16 kHz audio, keyword spans in seconds."""
    path: str
    text: str
    keyword: str | None
    spans: tuple[tuple[float, float], ...]
    voice: str
    engine: str
    speaker: str
    seconds: float
    phones: tuple = ()        # (phone, start_s, end_s) from the synthesiser (training/phones.py); () in a cache
    #                           written before 2026-12-06 night


@dataclass(frozen=True)
class SayJob:
    sentence: Sentence
    voice: Voice
    speed: float = 1.0
    pitch: int = 50
    pitch_range: int = 50
    tract: float = 1.0        # vocal-tract factor: the engine's output is replayed this much faster (formants up)


def _job_hash(job: SayJob) -> str:
    key = json.dumps([UTTERANCE_VERSION, job.voice.key, job.voice.blend, job.sentence.text, job.sentence.keyword,
                      round(job.speed, 3), job.pitch, job.pitch_range, round(job.tract, 3)], ensure_ascii=False)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SR:
        return audio.astype(np.float32)
    r = Resampler(rate, SR)
    return np.concatenate([r.process(audio), r.flush()]).astype(np.float32)


def _normalise(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """Trim leading/trailing silence (keeping 30 ms) and scale to TARGET_DBFS RMS. Returns audio and the
    number of seconds cut at the start (to shift spans)."""
    from training.synth import trim_silence, normalize_loudness
    trimmed = trim_silence(audio)            # a slice (view) of audio
    if trimmed.size == 0:
        return trimmed, 0.0
    return normalize_loudness(trimmed, TARGET_DBFS), _slice_start(audio, trimmed) / SR


def _slice_start(audio: np.ndarray, part: np.ndarray) -> int:
    """Index at which `part` (a slice of audio) starts inside audio."""
    if part.base is not None and np.shares_memory(part, audio):
        return (part.__array_interface__["data"][0] - audio.__array_interface__["data"][0]) // audio.itemsize
    return 0


def say(job: SayJob) -> tuple[np.ndarray, tuple[tuple[float, float], ...]]:
    """Synthesise a sentence whole; returns 16 kHz float32 audio and the keyword spans (seconds) in it."""
    return say_full(job)[:2]


def say_full(job: SayJob) -> tuple[np.ndarray, tuple[tuple[float, float], ...], tuple]:
    """say() and the sentence's phone timeline in the clip (training/phones.py), from the synthesiser itself."""
    from training import phones as P
    s, v = job.sentence, job.voice
    if v.engine == "mbrola":
        raw, rate, spans, phones = _mbrola_say(s, v, round(175 * job.speed), job.pitch)
        audio = _to_16k(raw, max(1000, round(rate * job.tract / 100) * 100))
        spans = [(a / job.tract, b / job.tract) for a, b in spans]
        phones = P.shifted(phones, 1 / job.tract, 0.0, len(audio) / SR)
    elif v.engine == "espeak":
        from training.espeak_lib import speak_phonemes
        raw, rate, words, events = speak_phonemes(s.text, v.espeak_name, round(175 * job.speed), job.pitch,
                                                  job.pitch_range)
        dur = len(raw) / rate
        spans = [espeak_span(words, c0, dur) for c0, _ in s.spans]
        audio = _to_16k(raw, max(1000, round(rate * job.tract / 100) * 100))
        spans = [(a / job.tract, b / job.tract) for a, b in spans]
        phones = P.timeline([P.phone_name(n) for n, _ in events], [t for _, t in events], dur)
        phones = P.shifted(phones, 1 / job.tract, 0.0, len(audio) / SR)
    elif v.engine == "kokoro":
        from training.kokoro_spans import kokoro_say
        audio, spans, phones = kokoro_say(s, v, job.speed, job.pitch, job.tract)
    else:
        raise SpotterError(f"unknown engine {v.engine}")
    audio = np.asarray(audio, np.float32)
    spans = [refine_span(audio, a, b) for a, b in spans]
    clip, cut = _normalise(audio)
    spans = tuple((round(max(0.0, a - cut), 3), round(min(len(clip) / SR, b - cut), 3)) for a, b in spans)
    return clip, spans, P.shifted(phones, 1.0, cut, len(clip) / SR)


def _espeak_cli(args: list[str], text: str) -> bytes:
    import shutil
    import subprocess
    exe = shutil.which("espeak-ng") or "espeak-ng"
    proc = subprocess.run([exe, *args, "--stdin"], input=text.encode("utf-8"), capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise SpotterError(f"espeak-ng {' '.join(args)} failed on {text!r}")
    return proc.stdout


def _mbrola_say(s: Sentence, v: Voice, wpm: int, pitch: int):
    """MBROLA speech of the whole sentence from espeak-ng's .pho, the keyword spans from the .pho's own
    phoneme durations (the keyword's phonemes located by matching the keyword said alone), and the .pho's phone
    timeline (French phones, also for an accent voice: what its diphones were asked to say)."""
    import subprocess
    import tempfile
    from training import phones as P
    from training.sentences import parse_pho, pho_span
    from training.voices import MBROLA_DIR
    from training import accent
    voice, name = v.espeak_name, v.id
    front = accent.FRONT_ENDS[accent.family(v.lang)] if accent.is_accent(v) else voice
    pho_text = _espeak_cli(["-v", front, "-q", "--pho", "-s", str(wpm), "-p", str(pitch)], s.text).decode()
    pho = parse_pho(pho_text)
    starts = np.concatenate([[0.0], np.cumsum([d for _, d in pho])])
    phones = P.timeline([P.mbrola_phone(p) for p, _ in pho], list(starts[:-1]), float(starts[-1]))
    spans = []
    for c0, c1 in s.spans:
        word = [p for p, _ in parse_pho(_espeak_cli(["-v", front, "-q", "--pho"], s.text[c0:c1]).decode())
                if p != "_"]
        spans.append(pho_span(pho, word, c0 / max(1, len(s.text))))
    if accent.is_accent(v):                 # the front end's phonemes said by another language's diphones
        name = name.removeprefix(accent.PREFIX)
        pho_text = accent.map_pho(pho_text, name, v.lang)
    db = MBROLA_DIR / name / name
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pho", Path(tmp) / "out.wav"
        src.write_text(pho_text)
        proc = subprocess.run(["mbrola", "-e", str(db), str(src), str(dst)], capture_output=True, timeout=60)
        if proc.returncode != 0 or not dst.is_file():
            raise SpotterError(f"mbrola {voice} failed on {s.text!r}")
        import soundfile as sf
        audio, rate = sf.read(dst, dtype="float32")
    return audio, rate, spans, phones


def _render(args) -> dict | str:
    job, path = args
    try:
        clip, spans, phones = say_full(job)
        if clip.size < SR // 5:
            return f"{job.voice.key} {job.sentence.text!r}: silent output"
        if job.sentence.keyword and any(b - a < 0.08 for a, b in spans):
            return f"{job.voice.key} {job.sentence.text!r}: keyword span too short {spans}"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, clip)
        return {"spans": spans, "seconds": round(clip.size / SR, 3),
                "phones": [[n, round(a * 1000), round(b * 1000)] for n, a, b in phones]}
    except SpotterError as e:
        return str(e)
    except Exception as e:     # an engine crash must not stop a long batch: counted and reported
        return f"{job.voice.key} {job.sentence.text!r}: {type(e).__name__}: {e}"


def _cache_index(cache_dir: Path) -> dict[str, dict]:
    """The sentence cache's records by job hash (cache_dir/utterances.jsonl; unreadable lines skipped)."""
    index: dict[str, dict] = {}
    index_path = Path(cache_dir) / "utterances.jsonl"
    if index_path.is_file():
        for line in index_path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
                index[r["hash"]] = r
            except (json.JSONDecodeError, KeyError):
                continue
    return index


def uncached(jobs: list[SayJob], cache_dir: Path) -> list[SayJob]:
    """The jobs the sentence cache does not hold (synthesize_utterances would render them)."""
    index = _cache_index(cache_dir)
    return [j for j in jobs if _job_hash(j) not in index]


def synthesize_utterances(jobs: list[SayJob], cache_dir: Path, workers: int = 2, progress: str | None = None,
                          phones: bool = False) -> list[Utterance]:
    """Render every job not yet cached (worker processes: libespeak-ng is not re-entrant); returns the
    utterances in job order, failed ones left out (counted in one warning). With phones, a job cached without
    its phone timeline (a cache written before timelines were kept) is rendered again: the same audio, and its
    record gains the timeline."""
    from tqdm import tqdm
    cache_dir = Path(cache_dir)
    index_path = cache_dir / "utterances.jsonl"
    index = _cache_index(cache_dir)
    todo = []
    for job in jobs:
        h = _job_hash(job)
        if h not in index or (phones and "phones" not in index[h]):
            todo.append((job, str(cache_dir / job.voice.engine / job.voice.key / f"{h}.wav")))
    errors = []
    if todo:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Kokoro jobs first, interleaved, so the slow engine is spread over the workers
        todo.sort(key=lambda t: t[0].voice.engine != "kokoro")
        if todo[0][0].voice.engine == "kokoro":
            from .synth import kokoro_model_file
            kokoro_model_file()              # assembled here, once, not by two workers racing on it
        with ProcessPoolExecutor(workers) as pool, open(index_path, "a", encoding="utf-8") as out, \
                tqdm(total=len(todo), desc=progress or "sentences", disable=progress is None, mininterval=5) as bar:
            for (job, path), res in zip(todo, pool.map(_render, todo, chunksize=8)):
                bar.update(1)
                if isinstance(res, str):
                    errors.append(res)
                    continue
                rec = {"hash": _job_hash(job), "path": os.path.relpath(path, cache_dir), **res}
                index[rec["hash"]] = rec
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if errors:
        print(f"warning: {len(errors)} of {len(todo)} sentences failed and are left out (first: {errors[0]})")
    result = []
    for job in jobs:
        r = index.get(_job_hash(job))
        if r is None:
            continue
        result.append(Utterance(str(cache_dir / r["path"]), job.sentence.text, job.sentence.keyword,
                                tuple(tuple(s) for s in r["spans"]), job.voice.key, job.voice.engine,
                                "+".join(job.voice.speakers), r["seconds"],
                                tuple((n, a / 1000, b / 1000) for n, a, b in r.get("phones", ()))))
    return result


# --- calls ----------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One stream: audio, keyword annotations (keyword, start_s, end_s), and where it came from."""
    audio: np.ndarray
    notes: list[tuple[str, float, float]]
    speech: list[tuple[float, float]]         # (start, end) of every sentence (for noise labels)
    voice: str
    engine: str
    channel: str
    service: str | None = None
    meta: dict = field(default_factory=dict)


def make_call(utts: list[Utterance], rng: np.random.Generator, lead_s: float = 0.6) -> Call:
    """Join the sentences of one voice with pauses (a -70 dBFS floor, not digital silence)."""
    parts = [np.zeros(int(lead_s * SR), np.float32)]
    t = lead_s
    notes, speech, phones = [], [], []
    for u in utts:
        a = load_audio(u.path)
        for s0, s1 in u.spans:
            notes.append((u.keyword, round(t + s0, 3), round(t + s1, 3)))
        speech.append((t, t + a.size / SR))
        phones += [(n, t + p0, t + p1) for n, p0, p1 in u.phones]
        parts.append(a)
        t += a.size / SR
        gap = int(rng.uniform(*PAUSE_S) * SR)
        parts.append(rng.normal(0, 10 ** (-70 / 20), gap).astype(np.float32))
        t += gap / SR
    kws = {n[0] for n in notes}
    services = {config.KEYWORD_SERVICE.get(k) for k in kws}
    return Call(np.concatenate(parts), notes, speech, utts[0].voice, utts[0].engine, "clean",
                services.pop() if len(services) == 1 else None, {"phones": phones} if phones else {})


class Channel:
    """The acoustic path of a call: 'wide' (room + background noise) or 'tel' (that, then a telephone band and
    codec). Noise comes from real recordings at a drawn SNR relative to the speech level."""

    def __init__(self, noise_files: list[Path], seed: int, snr_db: tuple[float, float] = (5.0, 20.0)):
        from training.augment import NoiseBank, make_rir
        self.noise = NoiseBank(list(noise_files))
        self.snr_db = snr_db
        rr = np.random.default_rng([seed, 7])
        self.rirs = [make_rir(rr.uniform(0.2, 0.7), SR, rr, rr.uniform(0, 12)) for _ in range(24)]

    def __call__(self, call: Call, kind: str, rng: np.random.Generator) -> Call:
        from training.augment import active_rms, colored_noise, reverberate, scaled_noise, telephone_channel
        x = call.audio
        if rng.random() < 0.5:
            x = reverberate(x, self.rirs[rng.integers(len(self.rirs))])
        ref = active_rms(x)
        snr = float(rng.uniform(*self.snr_db))
        seg = self.noise.segment(x.size, rng) if len(self.noise) else None
        if seg is None:
            seg = colored_noise(x.size, rng.uniform(0, 2), rng)
        x = x + scaled_noise(seg, x.size, ref, snr)
        x = x * 10 ** (rng.uniform(-32, -18) / 20) / max(active_rms(x), 1e-6)
        if kind == "tel":
            codec = ["alaw", "ulaw", "gsm", None][int(rng.integers(4))]
            x = telephone_channel(x, codec)
        peak = float(np.max(np.abs(x)))
        if peak > 0.99:
            x = x * 0.99 / peak
        return Call(x.astype(np.float32), call.notes, call.speech, call.voice, call.engine, kind, call.service,
                    {**call.meta, "snr_db": round(snr, 1)})


# --- embeddings and labels ---------------------------------------------------------------------------------
def window_end_s(n_steps: int) -> np.ndarray:
    """Audio time (s, in the un-primed stream) of the last sample each step's head window sees: row j of
    stream_posteriors/stream_embeddings is the state after step j + 1 of the stream."""
    return (np.arange(n_steps) + 1) * STEP_S


def step_labels(n_steps: int, notes, speech) -> np.ndarray:
    """Label index (config.LABELS) or IGNORE for every step, relative to keyword ends (see module doc)."""
    t = window_end_s(n_steps)
    win_s = config.CLIP_SAMPLES / SR
    has_speech = np.zeros(n_steps, bool)
    for a, b in speech:
        has_speech |= (t > a + 0.05) & (t - win_s < b)
    y = np.where(has_speech, config.LABELS.index(config.OTHER), config.LABELS.index(config.NOISE))
    for kw, a, b in notes:
        d = t - b
        y[(t > a) & (d > -IGNORE_BEFORE_END_S) & (d < IGNORE_AFTER_S)] = IGNORE
    for kw, a, b in notes:
        d = t - b
        y[(d >= KEYWORD_END_RANGE_S[0]) & (d <= KEYWORD_END_RANGE_S[1])] = config.LABELS.index(kw)
    return y.astype(np.int16)


def stream_embeddings(model, audio: np.ndarray, chunk_steps: int = 1500) -> np.ndarray:
    """evaluation.streams.stream_embeddings stored as float16 (calls are kept for hours of audio)."""
    from evaluation.streams import stream_embeddings as embeddings
    return embeddings(model, audio, chunk_steps, dtype=np.float16)


MEL_WARP = (0.88, 1.12)       # drawn factor of the warped log-mel's frequency axis (vocal-tract-length perturbation)
MEL_MASK_BANDS = (1, 3)       # width of the frequency mask drawn for half the warped calls
MEL_MASK_SHARE = 0.5
TEMPO_PERIOD_S = (1.0, 2.0)   # the time warp's local tempo changes: one sine period of the frame shift, drawn
                              # (the default of WarpedEmbeddings' period)
TEMPO_MAX_SHIFT_S = 0.04      # the most a frame moves (half a step: the step labels stay where they are)
TIME_MASKS_PER_S = 0.5        # time masks drawn per second of a call (Poisson), when the recipe asks for them
RIPPLE_FROM = 12              # the log-mel's fine structure: its cepstral coefficients (DCT-II over the 32 bands)
                              # from this one up, the harmonics' ripple across bands rather than the envelope
MEL_FRAME_S = config.HOP_SAMPLES / config.SAMPLE_RATE


def time_warp(mel, shift: float, period: float, phase: float):
    """mel (..., T, bands) read at frame t + shift sin(2 pi t / period + phase) (linear interpolation, ends held):
    the local tempo goes smoothly from 1 - 2 pi shift / period to 1 + 2 pi shift / period and back, no frame moves
    more than `shift` frames, and the length is kept."""
    import torch
    t = torch.arange(mel.shape[-2], dtype=torch.float32)
    src = (t + shift * torch.sin(2 * torch.pi * t / period + phase)).clamp(0, mel.shape[-2] - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=mel.shape[-2] - 1)
    frac = (src - lo)[:, None]
    return mel[..., lo, :] * (1 - frac) + mel[..., hi, :] * frac


def time_mask(mel, masks: tuple[tuple[float, int], ...]):
    """mel (..., T, bands) with, for each (position, frames) of masks, `frames` frames from frame
    int(position * T) on replaced by each band's mean over all T frames (a time mask that keeps the loudness)."""
    mel = mel.clone()
    mean = mel.mean(dim=-2, keepdim=True)
    n = mel.shape[-2]
    for pos, frames in masks:
        a = min(int(pos * n), n)
        mel[..., a:a + frames, :] = mean
    return mel


def draw_time_masks(rng: np.random.Generator, seconds: float, most_s: float) -> tuple[tuple[float, int], ...]:
    """Time masks for a call of `seconds`: a Poisson number (TIME_MASKS_PER_S per second), each (position as a
    fraction of the call, 1 .. most_s / MEL_FRAME_S frames)."""
    most = max(1, round(most_s / MEL_FRAME_S))
    return tuple((float(rng.uniform()), int(rng.integers(1, most + 1)))
                 for _ in range(int(rng.poisson(TIME_MASKS_PER_S * seconds))))


@functools.lru_cache(maxsize=None)
def ripple_projector(bands: int = config.N_MELS, first: int = RIPPLE_FROM) -> np.ndarray:
    """(bands, bands) matrix P such that frames @ P is a log-mel's fine structure: its orthonormal DCT-II across
    bands with the coefficients below `first` (the envelope) set to 0, transformed back (symmetric, P @ P = P).
    Made once per (bands, first) and shared: read it, do not write it."""
    from scipy.fft import dct
    d = dct(np.eye(bands), type=2, norm="ortho", axis=0)       # rows: the cosine basis
    keep = (np.arange(bands) >= first).astype(np.float64)
    return (d.T @ np.diag(keep) @ d).astype(np.float32)


class WarpedMel:
    """The backbone with a fixed change of its log-mel input (training only): the frequency axis read at band
    i / warp (linear interpolation, the top band repeated: warp > 1 moves every formant up), a spectral tilt
    (tilt log10 units added from the bottom band to the top one, centred: tilt 1.0 = 10 dB brighter at the top than
    at the bottom), a spectral contrast (each frame's bands moved from the frame's mean by that factor: peaks and
    valleys sharper above 1, flatter below), bands mask[0] .. mask[1] - 1 replaced by each frame's mean (a
    frequency mask) and, after the time warp, time masks: for each (position, frames) of time_masks, that many
    frames from that fraction of the log-mel's length replaced by each band's mean over the whole log-mel; ripple
    multiplies the log-mel's fine structure (ripple_projector) by that gain before the frequency mask: below 1
    smoother across bands, above 1 more ripple (the engines differ in it: MBROLA's is smooth, Kokoro's rough)."""

    def __init__(self, model, warp: float, mask: tuple[int, int] | None = None, tilt: float = 0.0,
                 contrast: float = 1.0, tempo: tuple[float, float, float] | None = None,
                 time_masks: tuple[tuple[float, int], ...] = (), ripple: float = 1.0):
        import torch
        self.tempo, self.time_masks = tempo, tuple(time_masks)
        self.ripple = float(ripple)
        self.fine = torch.from_numpy(ripple_projector()) if self.ripple != 1.0 else None
        bands = torch.arange(config.N_MELS, dtype=torch.float32) / warp
        self.lo = bands.floor().long().clamp(max=config.N_MELS - 1)
        self.hi = (self.lo + 1).clamp(max=config.N_MELS - 1)
        self.frac = (bands - self.lo).clamp(0, 1)
        self.tilt = tilt * (torch.arange(config.N_MELS, dtype=torch.float32) / (config.N_MELS - 1) - 0.5)
        self.model, self.mask, self.contrast = model, mask, contrast

    def embeddings_from_mel(self, mel):
        return self.model.embeddings_from_mel(self.change(mel))

    def change(self, mel):
        """The changed log-mel (..., T, bands)."""
        if self.tempo:
            mel = time_warp(mel, *self.tempo)
        if self.time_masks:
            mel = time_mask(mel, self.time_masks)
        mel = mel[..., self.lo] * (1 - self.frac) + mel[..., self.hi] * self.frac + self.tilt
        if self.contrast != 1.0:
            mean = mel.mean(dim=-1, keepdim=True)
            mel = mean + self.contrast * (mel - mean)
        if self.fine is not None:
            mel = mel + (self.ripple - 1.0) * (mel @ self.fine)
        if self.mask:
            mel = mel.clone()
            mel[..., self.mask[0]:self.mask[1]] = mel.mean(dim=-1, keepdim=True)
        return mel


class SmoothedEmbeddings:
    """A call's embeddings from its log-mel without the fine structure across bands (ripple_projector): the
    harmonics' ripple, in which the synthesis engines differ most, removed before the backbone."""

    def __call__(self, model, audio: np.ndarray) -> np.ndarray:
        return stream_embeddings(WarpedMel(model, 1.0, ripple=0.0), audio)


class WarpedEmbeddings:
    """A call's embeddings through WarpedMel, its warp (drawn in `warp`), mask, tilt (tilt_centre plus a draw in
    -tilt .. tilt when tilt > 0; no draw otherwise) and contrast (drawn in 1 - contrast .. 1 + contrast when
    contrast > 0; likewise) and, when tempo > 0, a time warp (time_warp: one sine period drawn in `period` (s),
    a frame shift drawn up to TEMPO_MAX_SHIFT_S and up to a local tempo deviation of `tempo`, a phase) drawn from
    the call's own generator (a features function of calltrain.embed_calls that draws: called as
    f(model, audio, rng)). With time_mask > 0, time masks too (a Poisson number, TIME_MASKS_PER_S per second of
    the call, each up to time_mask seconds long at a drawn place). With ripple > 1, the fine structure's gain is
    drawn log-uniform in 1 / ripple .. ripple. The time warp's draws come after the others, then the time masks',
    the ripple's last, so tempo 0, time_mask 0 and ripple 0 keep the draws of the recipes before them. fine_gain
    multiplies the fine structure of every call (0: SmoothedEmbeddings' front end)."""
    draws = True

    def __init__(self, warp: tuple[float, float] = MEL_WARP, tilt: float = 0.0, contrast: float = 0.0,
                 tilt_centre: float = 0.0, tempo: float = 0.0, period: tuple[float, float] = TEMPO_PERIOD_S,
                 time_mask: float = 0.0, ripple: float = 0.0, fine_gain: float = 1.0):
        self.warp, self.tilt, self.contrast = tuple(warp), float(tilt), float(contrast)
        self.tilt_centre, self.tempo, self.period = float(tilt_centre), float(tempo), tuple(period)
        self.time_mask, self.ripple, self.fine_gain = float(time_mask), float(ripple), float(fine_gain)

    def __call__(self, model, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        warp = float(rng.uniform(*self.warp))
        width = int(rng.integers(MEL_MASK_BANDS[0], MEL_MASK_BANDS[1] + 1))
        start = int(rng.integers(0, config.N_MELS - width + 1))
        mask = (start, start + width) if rng.random() < MEL_MASK_SHARE else None
        tilt = self.tilt_centre + (float(rng.uniform(-self.tilt, self.tilt)) if self.tilt > 0 else 0.0)
        contrast = float(rng.uniform(1 - self.contrast, 1 + self.contrast)) if self.contrast > 0 else 1.0
        tempo, chunk = None, {}
        if self.tempo > 0:
            period = float(rng.uniform(*self.period)) / MEL_FRAME_S
            most = min(TEMPO_MAX_SHIFT_S / MEL_FRAME_S, self.tempo * period / (2 * np.pi))
            tempo = (float(rng.uniform(0, most)), period, float(rng.uniform(0, 2 * np.pi)))
        masks = draw_time_masks(rng, audio.size / config.SAMPLE_RATE, self.time_mask) if self.time_mask > 0 else ()
        gain = float(np.exp(rng.uniform(-np.log(self.ripple), np.log(self.ripple)))) if self.ripple > 1 else 1.0
        gain *= self.fine_gain
        if tempo or masks:                 # one chunk: one phase and one set of masks for the call
            chunk = {"chunk_steps": audio.size // config.STEP_SAMPLES + 100}
        return stream_embeddings(WarpedMel(model, warp, mask, tilt, contrast, tempo, masks, gain), audio, **chunk)

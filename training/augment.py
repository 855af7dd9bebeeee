"""Training-time augmentation: waveform effects on 16 kHz clips, then SpecAugment on log-mel features.

The waveform chain follows the path of a real emergency call, in this order: the talker (pitch, tempo),
the room (reverberation), the scene (background recordings, babble, hiss), the microphone (level, clipping)
and the network (telephone band, 8 kHz, narrowband codec). Every probability and range lives in ONE
table, `AUGMENT_SPEC`, which the code reads and `describe_augmentation` prints for the model card.

Randomness comes only from the numpy Generator handed to `Augmenter.__call__` (or the Augmenter's own,
seeded at construction), so results are reproducible. There is no time shift: placing a clip in its
window is the caller's job (training/dataset.py). audiomentations' transforms are not used directly:
they draw from the global `random`/`np.random` state, and `AddBackgroundNoise` re-reads each file through
librosa (~0.4 s per call here). Pitch and tempo use the same engine audiomentations uses (Signalsmith
Stretch, package `python-stretch`) in a single pass.
"""
from __future__ import annotations

import functools
import io
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import python_stretch
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy.fft import irfft, next_fast_len, rfft
from scipy.signal import butter, fftconvolve, firwin, resample_poly, sosfilt

from spotter.config import N_MELS, SAMPLE_RATE
from spotter.errors import SpotterError

# --- constants -----------------------------------------------------------------------------------------
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SILENCE_RMS = 1e-4              # below this (-80 dBFS) a clip counts as silent: SNRs refer to NOMINAL_RMS
NOMINAL_RMS = 10 ** (-30 / 20)  # reference speech level for noise added to a silent clip
GAIN_MAX_PEAK = 0.9             # the gain step never drives the peak above this (clipping is its own effect)
ACTIVE_FRAME = 160              # 10 ms frames for the active-speech level
ACTIVE_RANGE_DB = 40.0          # frames within this many dB of the loudest frame count as active
STRETCH_MARGIN = 800            # samples (50 ms) kept around the active span when stretching
STRETCH_CHEAPER = True          # Signalsmith's cheaper preset (shorter blocks): ~25% less CPU
SPEED_STEPS = 50                # speed factors are rounded to 1/SPEED_STEPS (resampling ratio SPEED_STEPS:k)
NOISE_TRIES = 4                 # attempts to draw a non-silent noise segment before giving up
BABBLE_TALKERS = (1, 3)         # talkers summed into one babble signal (inclusive)

RIR_BANK_SIZE = 50              # impulse responses generated per Augmenter
SPEED_OF_SOUND = 343.0          # m/s
ROOM_SIDE_M = (3.0, 10.0)       # floor dimensions of the simulated rooms
ROOM_HEIGHT_M = (2.4, 3.5)
RIR_EARLY_TAPS = 6              # sparse early reflections before the diffuse tail
RIR_CROSSOVER_HZ = 2000.0       # above this the tail decays faster (absorption)
RIR_HIGH_RT60_RATIO = 0.6       # RT60 above the crossover relative to the nominal (mid-band) RT60
RIR_DRR_DB = (-3.0, 12.0)       # direct-to-reverberant energy ratio of generated RIRs
RIR_EARLY_SHARE = 0.3           # share of the reverberant energy in the early reflections

TELEPHONE_RATE = 8000           # Hz, narrowband telephony
TELEPHONE_BAND = (300.0, 3400.0)
TELEPHONE_ORDER = 4             # Butterworth band-pass order
SNDFILE_CODECS = {"ulaw": "ULAW", "alaw": "ALAW", "gsm": "GSM610"}   # in-memory round trips (libsndfile)
AMR_SOX_TYPE = "amr-nb"         # AMR-NB goes through sox (no in-memory codec available)
AMR_MODES = 8                   # sox -C 0..7: 4.75 ... 12.2 kbit/s
AMR_DELAY = 40                  # samples at 8 kHz that the sox AMR-NB round trip delays the signal
RESAMPLE_ZEROS = 10             # resample_poly's default filter: half length in zero crossings ...
RESAMPLE_BETA = 5.0             # ... and Kaiser beta
PCM_SCALE = 32767.0


@dataclass(frozen=True)
class Effect:
    """One augmentation: probability per clip, uniform ranges of its parameters, weighted choices."""
    p: float
    ranges: dict = field(default_factory=dict)    # name -> (low, high), drawn uniformly
    choices: dict = field(default_factory=dict)   # option -> weight
    what: str = ""


AUGMENT_SPEC: dict[str, Effect] = {
    "speed": Effect(0.3, {"factor": (0.9, 1.1)},
                    what="resampling: tempo and pitch together (Kaldi-style speed perturbation), speech centre kept"),
    "pitch_shift": Effect(0.08, {"semitones": (-2.0, 2.0)},
                          what="Signalsmith Stretch, tempo kept; shares one pass with time_stretch"),
    "time_stretch": Effect(0.08, {"rate": (0.85, 1.15)},
                           what="tempo factor (>1 faster), pitch kept, centred on the speech"),
    "reverb": Effect(0.3, {"rt60_s": (0.2, 0.8), "drr_db": RIR_DRR_DB},
                     what=f"convolution with one of {RIR_BANK_SIZE} generated room impulse responses"),
    "background_noise": Effect(0.6, {"snr_db": (-5.0, 20.0)},
                               what="real noise recordings (generated coloured noise when none are given)"),
    "babble": Effect(0.15, {"snr_db": (5.0, 20.0)},
                     what=f"{BABBLE_TALKERS[0]}-{BABBLE_TALKERS[1]} real speech recordings summed"),
    "colored_noise": Effect(0.3, {"snr_db": (10.0, 40.0), "exponent": (0.0, 2.0)},
                            what="1/f^exponent noise (0 white, 1 pink, 2 brown)"),
    "gain": Effect(1.0, {"level_dbfs": (-40.0, -15.0)},
                   what=f"active level of the mixture set to this, peak kept below {GAIN_MAX_PEAK:g}"),
    "clipping": Effect(0.05, {"drive_db": (3.0, 18.0)}, {"hard": 0.5, "tanh": 0.5},
                       what="peak driven this far over full scale, level restored"),
    "telephone": Effect(0.5, what=f"band-pass {TELEPHONE_BAND[0]:.0f}-{TELEPHONE_BAND[1]:.0f} Hz "
                                  f"(order {TELEPHONE_ORDER}) at {TELEPHONE_RATE} Hz, back to {SAMPLE_RATE}"),
    "codec": Effect(0.6, choices={"alaw": 0.4, "ulaw": 0.3, "gsm": 0.2, "amr": 0.1},
                    what="given telephone: G.711 u/A-law and GSM 06.10 (libsndfile, in memory), AMR-NB any mode (sox)"),
    "freq_mask": Effect(0.5, {"count": (2, 2), "bands": (0, 4)},
                        what="SpecAugment on the log-mel, filled with the utterance mean"),
    "time_mask": Effect(0.5, {"count": (2, 2), "frames": (0, 10)},
                        what="SpecAugment on the log-mel, filled with the utterance mean"),
}


def describe_augmentation(spec: dict[str, Effect] = AUGMENT_SPEC) -> str:
    """The augmentation table as Markdown, for the model card."""
    lines = ["| effect | p | parameters | choices | notes |", "|---|---|---|---|---|"]
    for name, e in spec.items():
        params = "; ".join(f"{k} {lo:g}" if lo == hi else f"{k} {lo:g} to {hi:g}" for k, (lo, hi) in e.ranges.items())
        choices = ", ".join(f"{k} {w:g}" for k, w in e.choices.items())
        lines.append(f"| {name} | {e.p:g} | {params or '-'} | {choices or '-'} | {e.what} |")
    return "\n".join(lines)


# --- levels and noise ----------------------------------------------------------------------------------
def rms(audio: np.ndarray) -> float:
    """Root mean square of a signal."""
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def active_rms(audio: np.ndarray, range_db: float = ACTIVE_RANGE_DB) -> float:
    """RMS over the 10 ms frames within range_db of the loudest one (the level of the speech, not the pauses)."""
    n = audio.size // ACTIVE_FRAME * ACTIVE_FRAME
    if n == 0:
        return rms(audio)
    power = np.mean(np.square(audio[:n].reshape(-1, ACTIVE_FRAME), dtype=np.float64), axis=1)
    active = power >= power.max() * 10 ** (-range_db / 10)
    return float(np.sqrt(power[active].mean()))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float, signal_rms: float | None = None) -> np.ndarray:
    """signal + noise scaled to snr_db below signal_rms (default: the signal's RMS); noise is tiled/cropped."""
    ref = rms(signal) if signal_rms is None else signal_rms
    return (signal + scaled_noise(noise, signal.size, ref, snr_db)).astype(np.float32)


def scaled_noise(noise: np.ndarray, n: int, ref_rms: float, snr_db: float) -> np.ndarray:
    """noise tiled/cropped to n samples with RMS snr_db below ref_rms (zeros if the noise is silent)."""
    noise = np.resize(noise, n)
    level = rms(noise)
    if level < 1e-12:
        return np.zeros(n, np.float32)
    return (noise * (ref_rms * 10 ** (-snr_db / 20) / level)).astype(np.float32)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """n samples of unit-RMS noise with power spectral density 1/f^exponent (0 white, 1 pink, 2 brown)."""
    m = next_fast_len(max(n, 2), real=True)
    f = np.fft.rfftfreq(m).astype(np.float32)
    f[0] = f[1]
    x = irfft(rfft(rng.standard_normal(m, dtype=np.float32)) * f ** np.float32(-exponent / 2), m)[:n]
    x -= x.mean()
    return (x / max(rms(x), 1e-12)).astype(np.float32)


def find_noise_files(root: str | Path) -> list[Path]:
    """Audio files under root (recursively, sorted); [] if root does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


class NoiseBank:
    """Random segments of a list of recordings, read on demand (only the needed frames)."""

    def __init__(self, paths: list[Path]):
        self.files = []
        for path in paths:
            try:
                info = sf.info(str(path))
            except (RuntimeError, sf.LibsndfileError) as e:
                raise SpotterError(f"{path}: unreadable noise recording ({e})") from None
            if info.frames > 0:
                self.files.append((str(path), info.frames, info.samplerate))

    def __len__(self) -> int:
        return len(self.files)

    def segment(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """A non-silent random n-sample segment at SAMPLE_RATE (tiled if the file is short), or None."""
        for _ in range(NOISE_TRIES):
            path, frames, rate = self.files[rng.integers(len(self.files))]
            need = int(np.ceil(n * rate / SAMPLE_RATE)) + 1
            start = int(rng.integers(0, max(frames - need, 0) + 1))
            seg, _ = sf.read(path, start=start, frames=need, dtype="float32", always_2d=True)
            seg = seg.mean(axis=1)
            if rate != SAMPLE_RATE:
                seg = resample(seg, SAMPLE_RATE, rate)
            seg = np.resize(seg, n)
            if rms(seg) > SILENCE_RMS:
                return seg.astype(np.float32)
        return None


# --- talker: pitch and tempo ---------------------------------------------------------------------------
def active_span(audio: np.ndarray, range_db: float = ACTIVE_RANGE_DB) -> tuple[int, int]:
    """[start, end) sample span from the first to the last 10 ms frame within range_db of the loudest."""
    n = audio.size // ACTIVE_FRAME * ACTIVE_FRAME
    if n == 0:
        return 0, audio.size
    power = np.mean(np.square(audio[:n].reshape(-1, ACTIVE_FRAME), dtype=np.float64), axis=1)
    idx = np.flatnonzero(power >= power.max() * 10 ** (-range_db / 10))
    return int(idx[0]) * ACTIVE_FRAME, min(audio.size, (int(idx[-1]) + 1) * ACTIVE_FRAME)


def _replace_centred(audio: np.ndarray, start: int, end: int, part: np.ndarray) -> np.ndarray:
    """audio with [start, end) replaced by part centred on the same point (overlap adds, outside is cut)."""
    out = audio.astype(np.float32, copy=True)
    out[start:end] = 0.0
    at = (start + end) // 2 - part.size // 2
    lo, hi = max(at, 0), min(at + part.size, audio.size)
    out[lo:hi] += part[lo - at:hi - at]
    return out


def _speech_span(audio: np.ndarray) -> tuple[int, int]:
    start, end = active_span(audio)
    return max(0, start - STRETCH_MARGIN), min(audio.size, end + STRETCH_MARGIN)


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play the active span factor times faster (pitch rises with it) by resampling; same length, centre kept."""
    start, end = _speech_span(audio)
    down = max(1, round(factor * SPEED_STEPS))
    return _replace_centred(audio, start, end, resample(audio[start:end], SPEED_STEPS, down))


def pitch_tempo(audio: np.ndarray, semitones: float = 0.0, rate: float = 1.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Shift pitch by semitones and tempo by rate (>1 faster) independently (Signalsmith Stretch) around the
    active span; same length, centre kept."""
    start, end = _speech_span(audio)
    stretch = python_stretch.Signalsmith.Stretch()
    stretch.preset(1, sr, STRETCH_CHEAPER)
    stretch.setTransposeSemitones(float(semitones))
    stretch.setTimeFactor(float(rate))
    part = stretch.process(np.ascontiguousarray(audio[None, start:end], dtype=np.float32))[0]
    return _replace_centred(audio, start, end, part)


# --- room: reverberation -------------------------------------------------------------------------------
def make_rir(rt60: float, sr: int, rng: np.random.Generator, drr_db: float | None = None) -> np.ndarray:
    """A room impulse response: direct path, sparse early reflections, exponentially decaying noise tail.

    rt60 is the mid-band decay time (s); above RIR_CROSSOVER_HZ the tail decays RIR_HIGH_RT60_RATIO times
    faster. The room's floor and height (random) set the first-reflection delay; drr_db (random in
    RIR_DRR_DB if None) the direct-to-reverberant energy ratio. Direct path at sample 0, peak 1.
    """
    dims = np.array([rng.uniform(*ROOM_SIDE_M), rng.uniform(*ROOM_SIDE_M), rng.uniform(*ROOM_HEIGHT_M)])
    volume, surface = dims.prod(), 2 * (dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    mean_free_path = 4 * volume / surface
    first = max(1, int(rng.uniform(0.3, 1.0) * mean_free_path / SPEED_OF_SOUND * sr))
    n = max(first + 2, int(rt60 * sr))
    t = np.arange(n) / sr
    low_sos = butter(2, RIR_CROSSOVER_HZ, "lowpass", fs=sr, output="sos")
    high_sos = butter(2, RIR_CROSSOVER_HZ, "highpass", fs=sr, output="sos")
    decay = np.log(1000.0)                             # amplitude factor of 60 dB
    tail = (sosfilt(low_sos, rng.standard_normal(n)) * np.exp(-decay * t / rt60)
            + sosfilt(high_sos, rng.standard_normal(n)) * np.exp(-decay * t / (rt60 * RIR_HIGH_RT60_RATIO)))
    tail[:first] = 0.0
    early = np.zeros(n)
    taps = rng.integers(first, min(n, 4 * first + 1), RIR_EARLY_TAPS)
    np.add.at(early, taps, rng.choice([-1.0, 1.0], RIR_EARLY_TAPS) * rng.uniform(0.2, 0.7, RIR_EARLY_TAPS)
              * np.exp(-decay * t[taps] / rt60))
    reverberant = (early * np.sqrt(RIR_EARLY_SHARE / np.sum(early ** 2))
                   + tail * np.sqrt((1 - RIR_EARLY_SHARE) / np.sum(tail ** 2)))
    drr = rng.uniform(*RIR_DRR_DB) if drr_db is None else drr_db
    reverberant *= 10 ** (-drr / 20)                   # reverberant energy relative to the direct path (1)
    reverberant[0] = 1.0
    return reverberant.astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """audio convolved with rir, cut to the input length (the direct path at rir[0] keeps it aligned)."""
    return fftconvolve(audio, rir)[: audio.size].astype(np.float32)


# --- network: telephone channel ------------------------------------------------------------------------
@functools.cache
def _band_sos() -> np.ndarray:
    return butter(TELEPHONE_ORDER, TELEPHONE_BAND, "bandpass", fs=TELEPHONE_RATE, output="sos")


@functools.cache
def _lowpass(up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly's default anti-aliasing filter, designed once per ratio (float32)."""
    rate = max(up, down)
    return firwin(2 * RESAMPLE_ZEROS * rate + 1, 1.0 / rate, window=("kaiser", RESAMPLE_BETA)).astype(np.float32)


def resample(audio: np.ndarray, up: int, down: int) -> np.ndarray:
    """resample_poly(audio, up, down) in float32 with a cached filter."""
    g = gcd(up, down)
    up, down = up // g, down // g
    if up == down:
        return np.array(audio, np.float32)
    return resample_poly(np.asarray(audio, np.float32), up, down, window=_lowpass(up, down))


@functools.cache
def sox_has_amr() -> bool:
    """Whether sox is installed with AMR-NB support; warns once when it is not."""
    sox = shutil.which("sox")
    if sox is not None:
        help_text = subprocess.run([sox, "-h"], capture_output=True, text=True).stdout
        formats = help_text.split("AUDIO FILE FORMATS:")[-1].split("\n")[0].split()
        if AMR_SOX_TYPE in formats:
            return True
    warnings.warn("sox with AMR-NB support not found: the amr codec step is skipped", stacklevel=2)
    return False


def sndfile_codec(audio8k: np.ndarray, codec: str) -> np.ndarray:
    """Encode and decode 8 kHz audio in memory with libsndfile ("ulaw", "alaw": G.711; "gsm": GSM 06.10)."""
    subtype = SNDFILE_CODECS[codec]
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio8k, -1.0, 1.0), TELEPHONE_RATE, format="RAW", subtype=subtype)
    buf.seek(0)
    out, _ = sf.read(buf, samplerate=TELEPHONE_RATE, channels=1, format="RAW", subtype=subtype, dtype="float32")
    return np.pad(out[: audio8k.size], (0, max(0, audio8k.size - out.size)))


def amr_codec(audio8k: np.ndarray, mode: int = AMR_MODES - 1) -> np.ndarray:
    """Encode and decode 8 kHz audio with AMR-NB (mode 0..7 = 4.75..12.2 kbit/s) through sox; same length, aligned."""
    raw = ["-t", "raw", "-r", str(TELEPHONE_RATE), "-e", "signed-integer", "-b", "16", "-c", "1"]
    pcm = (np.clip(audio8k, -1.0, 1.0) * PCM_SCALE).astype("<i2").tobytes()
    encoded = subprocess.run(["sox", *raw, "-", "-t", AMR_SOX_TYPE, "-C", str(mode), "-"], input=pcm,
                             capture_output=True, check=True).stdout
    decoded = subprocess.run(["sox", "-t", AMR_SOX_TYPE, "-", *raw, "-"], input=encoded,
                             capture_output=True, check=True).stdout
    out = np.frombuffer(decoded, "<i2").astype(np.float32)[AMR_DELAY:] / PCM_SCALE
    return np.pad(out[: audio8k.size], (0, max(0, audio8k.size - out.size)))


def telephone_channel(audio: np.ndarray, codec: str | None = "gsm", sr: int = SAMPLE_RATE,
                      amr_mode: int = AMR_MODES - 1) -> np.ndarray:
    """Narrowband call: to 8 kHz, band-pass 300-3400 Hz, codec round trip, back to sr; same length.

    codec: None, "ulaw"/"alaw" (G.711), "gsm" (GSM 06.10), both in memory with libsndfile, or "amr"
    (AMR-NB, mode amr_mode) through sox, skipped with one warning when sox cannot write it.
    """
    if codec not in (None, "amr", *SNDFILE_CODECS):
        raise ValueError(f"unknown telephone codec {codec!r}")
    x = sosfilt(_band_sos(), resample(audio, TELEPHONE_RATE, sr)).astype(np.float32)
    if codec in SNDFILE_CODECS:
        x = sndfile_codec(x, codec)
    elif codec == "amr" and sox_has_amr():
        x = amr_codec(x, amr_mode)
    y = resample(x, sr, TELEPHONE_RATE)
    return np.pad(y[: audio.size], (0, max(0, audio.size - y.size))).astype(np.float32)


# --- microphone: saturation ----------------------------------------------------------------------------
def saturate(audio: np.ndarray, drive_db: float, kind: str = "hard") -> np.ndarray:
    """Drive the peak drive_db over full scale into a hard clipper or tanh, then restore the RMS."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-12:
        return audio.astype(np.float32)
    driven = audio * (10 ** (drive_db / 20) / peak)
    out = np.clip(driven, -1.0, 1.0) if kind == "hard" else np.tanh(driven)
    return (out * (rms(audio) / max(rms(out), 1e-12))).astype(np.float32)


# --- the chain -----------------------------------------------------------------------------------------
def _check_audio(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"augment expects a non-empty 1-D clip, got shape {x.shape}")
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return x


class Augmenter:
    """Random waveform augmentation of 16 kHz float32 clips; output has the input's length.

    `augmenter(clip, rng)` draws everything from rng (default: the Augmenter's own Generator, seeded), so a
    given seed and call sequence, or a given per-clip rng, always yields the same output.
    """

    def __init__(self, noise_paths: list[Path] | None, babble_paths: list[Path] | None = None, seed: int = 0,
                 spec: dict[str, Effect] = AUGMENT_SPEC):
        self.spec = spec
        self.noise = NoiseBank(list(noise_paths or []))
        self.babble = NoiseBank(list(babble_paths or []))
        self.rng = np.random.default_rng(seed)
        rir_rng = np.random.default_rng([seed, 1])
        self.rirs = [make_rir(rir_rng.uniform(*spec["reverb"].ranges["rt60_s"]), SAMPLE_RATE, rir_rng,
                              rir_rng.uniform(*spec["reverb"].ranges["drr_db"])) for _ in range(RIR_BANK_SIZE)]

    def _on(self, name: str, rng: np.random.Generator) -> bool:
        return rng.random() < self.spec[name].p

    def _draw(self, name: str, param: str, rng: np.random.Generator) -> float:
        return float(rng.uniform(*self.spec[name].ranges[param]))

    def _choose(self, name: str, rng: np.random.Generator) -> str:
        options = self.spec[name].choices
        w = np.array(list(options.values()), np.float64)
        return list(options)[rng.choice(len(w), p=w / w.sum())]

    def _noise(self, n: int, ref: float, rng: np.random.Generator) -> np.ndarray:
        """Scene noise to add to a clip whose speech level is ref: recordings, babble, coloured hiss."""
        total = np.zeros(n, np.float32)
        if self._on("background_noise", rng):
            seg = self.noise.segment(n, rng) if len(self.noise) else None
            if seg is None:                            # generated stand-in: coloured noise, slowly modulated
                envelope = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * np.arange(n) / SAMPLE_RATE
                                              + rng.uniform(0, 2 * np.pi))
                seg = colored_noise(n, rng.uniform(0.0, 2.0), rng) * envelope
            total += scaled_noise(seg, n, ref, self._draw("background_noise", "snr_db", rng))
        if len(self.babble) and self._on("babble", rng):
            count = rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)
            talkers = [t / rms(t) for t in (self.babble.segment(n, rng) for _ in range(count)) if t is not None]
            if talkers:
                total += scaled_noise(np.sum(talkers, axis=0), n, ref, self._draw("babble", "snr_db", rng))
        if self._on("colored_noise", rng):
            hiss = colored_noise(n, self._draw("colored_noise", "exponent", rng), rng)
            total += scaled_noise(hiss, n, ref, self._draw("colored_noise", "snr_db", rng))
        return total

    def __call__(self, audio: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """One augmented copy of a 16 kHz clip (float32, same length, within [-1, 1])."""
        rng = self.rng if rng is None else rng
        x = _check_audio(audio)
        if self._on("speed", rng):
            x = speed_perturb(x, self._draw("speed", "factor", rng))
        shift, stretch = self._on("pitch_shift", rng), self._on("time_stretch", rng)
        if shift or stretch:
            semitones = self._draw("pitch_shift", "semitones", rng) if shift else 0.0
            rate = self._draw("time_stretch", "rate", rng) if stretch else 1.0
            x = pitch_tempo(x, semitones, rate)
        if self._on("reverb", rng):
            x = reverberate(x, self.rirs[rng.integers(len(self.rirs))])
        speech = active_rms(x)
        x = x + self._noise(x.size, speech if speech > SILENCE_RMS else NOMINAL_RMS, rng)
        level, peak = active_rms(x), float(np.max(np.abs(x)))
        if self._on("gain", rng) and level > SILENCE_RMS:
            x = x * min(10 ** (self._draw("gain", "level_dbfs", rng) / 20) / level, GAIN_MAX_PEAK / peak)
        if self._on("clipping", rng):
            x = saturate(x, self._draw("clipping", "drive_db", rng), self._choose("clipping", rng))
        if self._on("telephone", rng):
            codec = self._choose("codec", rng) if self._on("codec", rng) else None
            x = telephone_channel(x, codec, amr_mode=int(rng.integers(AMR_MODES)))
        return np.clip(x, -1.0, 1.0).astype(np.float32)


# --- features: SpecAugment -----------------------------------------------------------------------------
def spec_augment(mel: torch.Tensor, generator: torch.Generator | None = None,
                 spec: dict[str, Effect] = AUGMENT_SPEC) -> torch.Tensor:
    """Frequency and time masks on (B, T, N_MELS) log-mel features, filled with each utterance's mean.

    Each utterance gets the frequency masks with probability spec["freq_mask"].p and the time masks with
    spec["time_mask"].p. Masks come from torchaudio's mask_along_axis_iid (widths uniform in 0..max, the
    range's high end);
    the global torch RNG is left untouched: everything is drawn from `generator`.
    """
    if mel.dim() != 3 or mel.shape[-1] != N_MELS:
        raise ValueError(f"spec_augment expects (batch, frames, {N_MELS}) features, got {tuple(mel.shape)}")
    b, frames, bands = mel.shape
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    keep = torch.ones(b, bands, frames)                # (batch, freq, time) as torchaudio wants
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, axis, width in (("freq_mask", 1, "bands"), ("time_mask", 2, "frames")):
            e = spec[name]
            masked = keep
            low, high = e.ranges["count"]
            for _ in range(int(torch.randint(int(low), int(high) + 1, (1,)))):
                # mask_param m gives widths floor(U[0, m)) -> pass max + 1 to allow the max width
                masked = AF.mask_along_axis_iid(masked, int(e.ranges[width][1]) + 1, 0.0, axis)
            chosen = (torch.rand(b) < e.p)[:, None, None]
            keep = torch.where(chosen, masked, keep)
    keep = keep.transpose(1, 2).to(device=mel.device, dtype=torch.bool)
    mean = mel.mean(dim=(1, 2), keepdim=True)
    return torch.where(keep, mel, mean.expand_as(mel))


# --- a parametric vocoder: the same words through another synthesiser's signature ---------------------------
VOCODER_ORDER = 18              # all-pole (LPC) envelope order at 16 kHz
VOCODER_FRAME = 400             # 25 ms analysis window ...
VOCODER_HOP = 160               # ... every 10 ms (the envelope and excitation change at this rate)
VOCODER_PITCH_FRAME = 768       # 48 ms for the pitch (two periods at 60 Hz)
VOCODER_F0_RANGE = (60.0, 400.0)
VOCODER_VOICED = 0.3            # normalised autocorrelation peak above which a frame counts as voiced
VOCODER_PREEMPHASIS = 0.97


def lpc_vocode(audio: np.ndarray, rng: np.random.Generator, f0_scale: float | None = None,
               breathiness: float | None = None) -> np.ndarray:
    """Resynthesise speech through a pulse/noise-excited all-pole vocoder, as parametric synthesisers do.

    Every 10 ms: the spectral envelope (order-18 LPC of the pre-emphasised signal), the level, and a pitch and
    voicing from the autocorrelation; the excitation is a pulse train at the pitch x f0_scale (drawn in
    [0.8, 1.25] when None) mixed with noise by voicing (plus `breathiness`, drawn in [0, 0.3]). Timing is kept
    sample for sample, so keyword spans stay valid. Output has the input's RMS."""
    from scipy.linalg import solve_toeplitz
    from scipy.signal import lfilter
    x = np.asarray(audio, np.float64).reshape(-1)
    if x.size < VOCODER_FRAME:
        return np.asarray(audio, np.float32).copy()
    f0_scale = float(rng.uniform(0.8, 1.25)) if f0_scale is None else float(f0_scale)
    breathiness = float(rng.uniform(0.0, 0.3)) if breathiness is None else float(breathiness)
    y = lfilter([1.0, -VOCODER_PREEMPHASIS], [1.0], x)
    n_hops = int(np.ceil(x.size / VOCODER_HOP))
    pad = np.pad(y, (VOCODER_FRAME // 2, VOCODER_PITCH_FRAME))
    win, pwin = np.hanning(VOCODER_FRAME), np.hanning(VOCODER_PITCH_FRAME)
    lag_lo, lag_hi = int(SAMPLE_RATE / VOCODER_F0_RANGE[1]), int(SAMPLE_RATE / VOCODER_F0_RANGE[0])
    rw = np.correlate(pwin, pwin, "full")[pwin.size - 1:]
    wcorr = rw[lag_lo:lag_hi] / rw[0]
    out = np.zeros(n_hops * VOCODER_HOP)
    zi = np.zeros(VOCODER_ORDER)
    phase = 0.0
    noise = rng.standard_normal(out.size)
    for h in range(n_hops):
        fr = pad[h * VOCODER_HOP:h * VOCODER_HOP + VOCODER_FRAME] * win
        rr = np.array([fr[:fr.size - k] @ fr[k:] for k in range(VOCODER_ORDER + 1)])   # the lags LPC needs
        if rr[0] <= 1e-10:
            a, gain, voicing, period = np.zeros(VOCODER_ORDER), 0.0, 0.0, SAMPLE_RATE / 100.0
        else:
            rr[0] *= 1.0 + 1e-6                          # white-noise floor: a stable filter
            a = solve_toeplitz(rr[:-1], -rr[1:])
            gain = float(np.sqrt(max(rr[0] + rr[1:] @ a, 1e-12) / VOCODER_FRAME))
            # pitch and voicing from the autocorrelation of the whitened (inverse-filtered) signal over 48 ms
            e = lfilter(np.r_[1.0, a], [1.0], pad[h * VOCODER_HOP:h * VOCODER_HOP + VOCODER_PITCH_FRAME] * pwin)
            re = irfft(np.abs(rfft(e, 2 * e.size)) ** 2)[:lag_hi]                   # autocorrelation by FFT
            seg = re[lag_lo:lag_hi] / max(re[0], 1e-12) / wcorr      # corrected for the window (Boersma 1993)
            k = int(np.argmax(seg))
            voicing = float(np.clip((seg[k] - VOCODER_VOICED) / (1 - VOCODER_VOICED), 0, 1))
            period = (lag_lo + k) / f0_scale
        # excitation of this hop: unit-power pulses at the period, mixed with unit-power noise
        exc = np.zeros(VOCODER_HOP)
        if voicing > 0:
            while phase < VOCODER_HOP:
                exc[int(phase)] = np.sqrt(period)
                phase += period
            phase -= VOCODER_HOP
        else:
            phase = 0.0
        v = voicing * (1 - breathiness)
        exc = np.sqrt(v) * exc + np.sqrt(1 - v) * noise[h * VOCODER_HOP:(h + 1) * VOCODER_HOP]
        seg_out, zi = lfilter([gain], np.r_[1.0, a], exc, zi=zi)
        out[h * VOCODER_HOP:(h + 1) * VOCODER_HOP] = seg_out
    out = lfilter([1.0], [1.0, -VOCODER_PREEMPHASIS], out[:x.size])
    scale = rms(x) / max(rms(out), 1e-9)
    return (out * scale).astype(np.float32)

"""The log-mel front end in numpy (the runtime's; spotter/features.py has the torch twin used for training).

Same computation as features.LogMel, i.e. openWakeWord's melspectrogram.onnx without its call-global floor:
float64 windowed DFT (an rfft of the 512-sample frame) of each 400-sample window (frame t reads samples [160 t + 56, 160 t + 456)), power,
32-band Slaney mel filterbank (60-3800 Hz) in float64, then log10(max(mel, 1e-10)) + 2 in float32.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .config import HOP_SAMPLES, N_FFT, N_MELS, SAMPLE_RATE, STEP_SAMPLES, WIN_SAMPLES
from .errors import SpotterError

INT16_SCALE = 32768.0
F_MIN, F_MAX = 60.0, 3800.0
POWER_FLOOR = 1e-10
LOG_OFFSET = 2.0
MEL_FLOOR = math.log10(POWER_FLOOR) + LOG_OFFSET          # -8.0
N_BINS = N_FFT // 2 + 1
WIN_OFFSET = (N_FFT - WIN_SAMPLES) // 2                    # 56
STREAM_CONTEXT = HOP_SAMPLES * math.ceil((N_FFT - HOP_SAMPLES) / HOP_SAMPLES)   # 480
FRAMES_PER_STEP = STEP_SAMPLES // HOP_SAMPLES               # 8


def n_frames(n_samples: int) -> int:
    return 0 if n_samples < N_FFT else (n_samples - N_FFT) // HOP_SAMPLES + 1


@functools.lru_cache(maxsize=1)
def dft_basis() -> np.ndarray:
    """(400, 514) float64: Hann-windowed cos then -sin columns (features.dft_basis)."""
    n = np.arange(WIN_SAMPLES, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN_SAMPLES)
    phase = 2 * np.pi * (n[:, None] + WIN_OFFSET) * np.arange(N_BINS) / N_FFT
    return np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None]


@functools.lru_cache(maxsize=1)
def _window512() -> np.ndarray:
    """The periodic 400-tap Hann window at taps 56..455 of the 512-sample frame (zeros elsewhere)."""
    w = np.zeros(N_FFT)
    n = np.arange(WIN_SAMPLES, dtype=np.float64)
    w[WIN_OFFSET:WIN_OFFSET + WIN_SAMPLES] = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN_SAMPLES)
    return w


def _hz_to_mel(f):
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    logstep = math.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / logstep, mel)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(257, 32) Slaney-normalised Slaney-scale filterbank, 60-3800 Hz (torchaudio.functional.melscale_fbanks
    with norm='slaney', mel_scale='slaney', computed here in float32 like torchaudio, returned as float64)."""
    f32 = np.float32
    all_freqs = np.linspace(0, SAMPLE_RATE // 2, N_BINS, dtype=f32)
    m_pts = np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2).astype(f32)
    f_pts = _mel_to_hz(m_pts).astype(f32)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(f32(0), np.minimum(down, up))
    fb = fb * (f32(2.0) / (f_pts[2:N_MELS + 2] - f_pts[:N_MELS]))
    return fb.astype(np.float64)


@functools.lru_cache(maxsize=1)
def _mel_bins() -> tuple[slice, np.ndarray]:
    """The DFT bins the filterbank reads (60-3800 Hz: the others have zero weight) and its rows for them."""
    fb = mel_filterbank()
    used = np.flatnonzero(fb.any(axis=1))
    bins = slice(int(used[0]), int(used[-1]) + 1)
    return bins, np.ascontiguousarray(fb[bins])


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Float audio (n,) at 16 kHz in [-1, 1] -> (n_frames(n), 32) float32 log-mel; (N, n) -> (N, n_frames(n), 32)
    for N streams at once."""
    x = np.asarray(audio)
    if x.ndim not in (1, 2) or not np.issubdtype(x.dtype, np.floating):
        raise SpotterError(f"log-mel: expected 1-D float audio, got {x.dtype} of shape {x.shape}")
    t = n_frames(x.shape[-1])
    if t == 0:
        return np.zeros((*x.shape[:-1], 0, N_MELS), np.float32)
    x = x.astype(np.float64) * INT16_SCALE
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=-1)[..., ::HOP_SAMPLES, :][..., :t, :]
    bins, fb = _mel_bins()
    spec = np.fft.rfft(frames * _window512(), axis=-1)[..., bins]   # = frames' 400 windowed taps @ dft_basis()
    power = spec.real ** 2 + spec.imag ** 2
    mel = (power @ fb).astype(np.float32)
    return np.log10(np.maximum(mel, np.float32(POWER_FLOOR))) + np.float32(LOG_OFFSET)


def push_streams(streams: list["MelStream"], frames: np.ndarray) -> np.ndarray:
    """One 80 ms step of N streams at once (the multi-line tick): frames (N, 1280) -> (N, 8, 32), exactly what N
    MelStream.push calls give, in one FFT and one matmul."""
    frames = np.asarray(frames, np.float32)
    if frames.shape != (len(streams), STEP_SAMPLES):
        raise SpotterError(f"push_streams: expected frames of shape ({len(streams)}, {STEP_SAMPLES}), got "
                           f"{frames.shape}")
    x = np.concatenate([np.stack([s.context for s in streams]), frames], axis=1)
    for s, row in zip(streams, x):
        s.context = row[-STREAM_CONTEXT:].copy()
    return log_mel(x)


class MelStream:
    """Streaming log-mel in numpy: each 1280-sample push yields the 8 frames the offline front end gives
    (the stream starts with 480 samples of silence, as features.MelStream)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.context = np.zeros(STREAM_CONTEXT, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples)
        if samples.shape != (STEP_SAMPLES,):
            raise SpotterError(f"MelStream.push: expected {STEP_SAMPLES} samples, got shape {samples.shape}")
        x = np.concatenate([self.context, samples.astype(np.float32, copy=False)])
        self.context = x[-STREAM_CONTEXT:]
        return log_mel(x)

    def push_many(self, samples: np.ndarray) -> np.ndarray:
        """Any multiple of 1280 samples -> their 8 frames per 1280 (one matmul for the whole block)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size % STEP_SAMPLES:
            raise SpotterError(f"MelStream.push_many: expected a multiple of {STEP_SAMPLES} samples")
        if samples.size == 0:
            return np.zeros((0, N_MELS), np.float32)
        x = np.concatenate([self.context, samples])
        self.context = x[-STREAM_CONTEXT:]
        return log_mel(x)[:FRAMES_PER_STEP * (samples.size // STEP_SAMPLES)]

"""Log-mel front end matching openWakeWord's melspectrogram.onnx, plus its streaming state.

What melspectrogram.onnx (openwakeword 0.5.1, a torchlibrosa export) computes, reproduced here:
  * input: int16-valued samples as float32 (we take float audio in [-1, 1] and scale it by 32768);
  * STFT as a strided conv: n_fft 512, hop 160, no centering or padding; the window is a periodic
    Hann of 400 samples zero-padded to 512 (taps 56..455), so frame t reads samples [160 t, 160 t + 512)
    and only [160 t + 56, 160 t + 456) matter;
  * power spectrum |X|^2 of the 257 bins, then a 32-band Slaney mel filterbank (Slaney-normalised,
    60-3800 Hz, i.e. librosa.filters.mel(sr=16000, n_fft=512, n_mels=32, fmin=60, fmax=3800));
  * 10 * log10(max(mel, 1e-10)), then a global floor at (max over the whole call) - 80 dB;
  * openWakeWord then applies ``x / 10 + 2``: our output is log10(max(mel, 1e-10)) + 2.
The call-global 80 dB floor is the one step we leave out by default (``top_db=None``): it makes a frame
depend on the rest of the call, so streaming could never equal offline. It only acts on frames more than
80 dB under the loudest one (digital silence next to speech); ``top_db=80`` restores it, per clip.

Frames: ``n_frames(n) = (n - 512) // 160 + 1`` (0 when n < 512). Here the STFT is a float64 matmul of
the framed audio with a fixed windowed-DFT matrix: exportable to ONNX, and a frame's value does not
depend on the surrounding audio, so streaming equals offline.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio

from spotter.config import HOP_SAMPLES, N_FFT, N_MELS, SAMPLE_RATE, STEP_SAMPLES, WIN_SAMPLES
from spotter.errors import SpotterError

INT16_SCALE = 32768.0        # float [-1, 1] -> the int16 scale melspectrogram.onnx was fed
F_MIN, F_MAX = 60.0, 3800.0  # mel filterbank edges (Hz), as in melspectrogram.onnx
POWER_FLOOR = 1e-10          # clip before the log, as in melspectrogram.onnx
LOG_OFFSET = 2.0             # openWakeWord's post transform: dB / 10 + 2 == log10(power) + 2
MEL_FLOOR = math.log10(POWER_FLOOR) + LOG_OFFSET   # -8.0: the log-mel of digital silence
N_BINS = N_FFT // 2 + 1
WIN_OFFSET = (N_FFT - WIN_SAMPLES) // 2   # 56: first tap of the 400-sample window inside the 512 frame

# Trailing samples kept between streaming steps: the smallest multiple of the hop covering a frame's
# overhang past the hop. [480 old + 1280 new] = 1760 samples -> exactly 8 frames, on the offline grid.
STREAM_CONTEXT = HOP_SAMPLES * math.ceil((N_FFT - HOP_SAMPLES) / HOP_SAMPLES)   # 480
FRAMES_PER_STEP = STEP_SAMPLES // HOP_SAMPLES                                    # 8


def n_frames(n_samples: int) -> int:
    """Mel frames produced from n_samples of audio: (n - 512) // 160 + 1, or 0 if n < 512."""
    return 0 if n_samples < N_FFT else (n_samples - N_FFT) // HOP_SAMPLES + 1


def dft_basis() -> torch.Tensor:
    """(400, 2 * 257) float64 DFT matrix: Hann-windowed cos (real) then -sin (imaginary) columns."""
    n = np.arange(WIN_SAMPLES, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN_SAMPLES)          # periodic Hann
    phase = 2 * np.pi * (n[:, None] + WIN_OFFSET) * np.arange(N_BINS) / N_FFT
    return torch.from_numpy(np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None])


def mel_filterbank() -> torch.Tensor:
    """(257, 32) Slaney mel filterbank, 60-3800 Hz (equal to melspectrogram.onnx's to ~2e-8)."""
    return torchaudio.functional.melscale_fbanks(
        N_BINS, F_MIN, F_MAX, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney")


def frame_audio(audio: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, n_frames(n), 400): the window's samples [160 t + 56, 160 t + 456) of each frame.

    Built from 160-sample blocks with slices and a concat (exact copies; exports to ONNX, unlike unfold).
    """
    frames = (audio.shape[-1] - N_FFT) // HOP_SAMPLES + 1
    padded = torch.nn.functional.pad(audio, (0, HOP_SAMPLES))   # the last block may overrun; only its head is used
    blocks = padded[:, WIN_OFFSET:WIN_OFFSET + HOP_SAMPLES * (frames + 2)].reshape(audio.shape[0], -1, HOP_SAMPLES)
    tail = WIN_SAMPLES - 2 * HOP_SAMPLES
    return torch.cat([blocks[:, :frames], blocks[:, 1:frames + 1], blocks[:, 2:frames + 2, :tail]], dim=-1)


class LogMel(torch.nn.Module):
    """Float audio (B, n) in [-1, 1] -> (B, n_frames(n), 32) openWakeWord-scaled log-mel.

    The DFT and mel projections run in float64, so a frame's value does not depend on how much audio
    surrounds it (streaming equals offline); the log runs in float32.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("basis", dft_basis(), persistent=False)
        self.register_buffer("melw", mel_filterbank().double(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.matmul(frame_audio(audio * INT16_SCALE).double(), self.basis)   # (B, T, 514)
        power = spec[..., :N_BINS] ** 2 + spec[..., N_BINS:] ** 2
        mel = torch.matmul(power, self.melw).float()                                  # (B, T, 32)
        return torch.log10(torch.clamp(mel, min=POWER_FLOOR)) + LOG_OFFSET


@functools.lru_cache(maxsize=1)
def _log_mel_module() -> LogMel:
    return LogMel().eval()


def as_audio_tensor(audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Check and convert audio (n,) or (B, n) to a float32 tensor; SpotterError if unusable."""
    if isinstance(audio, np.ndarray):
        if not np.issubdtype(audio.dtype, np.floating):
            raise SpotterError(f"log-mel: audio must be float in [-1, 1], got dtype {audio.dtype}")
        audio = torch.from_numpy(np.array(audio, dtype=np.float32))
    elif not torch.is_tensor(audio) or not torch.is_floating_point(audio):
        raise SpotterError(f"log-mel: audio must be a float array or tensor, got {type(audio).__name__}")
    if audio.dim() not in (1, 2):
        raise SpotterError(f"log-mel: audio must have shape (n,) or (B, n), got {tuple(audio.shape)}")
    if audio.shape[-1] < N_FFT:
        raise SpotterError(f"log-mel: need at least {N_FFT} samples, got {audio.shape[-1]}")
    return audio.float()


def apply_top_db(mel: torch.Tensor, top_db: float) -> torch.Tensor:
    """melspectrogram.onnx's floor: clamp each clip at (its max - top_db dB), on the log-mel scale."""
    peak = mel.amax(dim=(-2, -1), keepdim=True)
    return torch.maximum(mel, peak - top_db / 10.0)


def log_mel(audio: torch.Tensor | np.ndarray, top_db: float | None = None) -> torch.Tensor:
    """Audio (n,) or (B, n) float at 16 kHz -> log-mel (n_frames(n), 32) or (B, n_frames(n), 32).

    top_db=80 adds melspectrogram.onnx's per-call floor (per clip here); None (default) omits it.
    """
    x = as_audio_tensor(audio)
    single = x.dim() == 1
    with torch.no_grad():
        mel = _log_mel_module()(x[None] if single else x)
    if top_db is not None:
        mel = apply_top_db(mel, top_db)
    return mel[0] if single else mel


class MelStream:
    """Streaming log-mel: each 1280-sample push yields the 8 frames the offline front end would give.

    The stream starts with STREAM_CONTEXT (480) samples of silence, so the concatenated outputs equal
    ``log_mel(np.concatenate([np.zeros(480), audio]))`` (bit-exact in our tests). The window of a push's
    last frame ends 184 samples (11.5 ms) before the end of the pushed audio; the next push uses them.
    """

    def __init__(self) -> None:
        self.context = np.zeros(STREAM_CONTEXT, dtype=np.float32)

    def reset(self) -> None:
        """Forget the past audio (back to the initial silence)."""
        self.context = np.zeros(STREAM_CONTEXT, dtype=np.float32)

    def push(self, samples: np.ndarray) -> torch.Tensor:
        """Add 1280 new float samples; return the (8, 32) new log-mel frames."""
        samples = np.asarray(samples)
        if samples.shape != (STEP_SAMPLES,):
            raise SpotterError(f"MelStream.push: expected {STEP_SAMPLES} samples, got shape {samples.shape}")
        if not np.issubdtype(samples.dtype, np.floating):
            raise SpotterError(f"MelStream.push: samples must be float in [-1, 1], got dtype {samples.dtype}")
        x = np.concatenate([self.context, samples.astype(np.float32, copy=False)])
        self.context = x[-STREAM_CONTEXT:]
        return log_mel(x)

"""Audio files in, 16 kHz float32 mono out: validation, block-wise streaming, resampling, atomic writing.

Everything here reads with soundfile (libsndfile) and never loads a whole file unless asked to
(`load_audio`). `iter_audio` streams any file in bounded memory: it mixes channels down, maps every
sample format to float32 in [-1, 1], replaces NaN/inf with 0 and resamples to SAMPLE_RATE with
libsoxr's streaming resampler (StreamResampler). `Resampler`, a polyphase filter whose block-wise output equals
scipy.signal.resample_poly on the whole signal, is kept for training's synthesis (it imports scipy when used).
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass, field
from math import gcd
from typing import Iterator

import numpy as np
import soundfile as sf

from spotter.config import SAMPLE_RATE, STEP_SAMPLES
from spotter.errors import SpotterError

# --- constants -----------------------------------------------------------------------------------------
MIN_INPUT_RATE = 4000           # Hz, below this a file is refused (nothing useful for speech)
MAX_INPUT_RATE = 384000         # Hz, above this a file is refused
MAX_RATIO_TERM = 20000          # refuse rates whose reduced ratio to 16 kHz needs a huge filter (e.g. 44101 Hz)
READ_SECONDS = 1.0              # iter_audio reads this much input per libsndfile call (bounds memory and overhead)
CLIP_LEVEL = 0.999              # a sample at or beyond this magnitude counts as clipped
KAISER_BETA = 5.0               # same anti-aliasing filter as scipy.signal.resample_poly's default
ZERO_CROSSINGS = 10             # filter half length, in units of the slower rate's period (resample_poly: 10)
WAV_HEADER_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"BW64")
SNIFF_BYTES = 1 << 16           # how much of a refused file is inspected to explain the refusal
# WAV format tags libsndfile decodes: PCM, MS ADPCM, float, A-law, mu-law, IMA ADPCM, GSM 6.10, G721, MP3, extensible
SUPPORTED_WAV_TAGS = {0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0055, 0xFFFE}
WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)   # data sizes streaming writers leave in the header ("until the end of file")
# input quality checks (warnings): level measured as the RMS of LEVEL_WINDOW_S windows of the mono input
LEVEL_WINDOW_S = 0.05
LEVEL_FLOOR_DB = -120.0         # histogram range of window levels, dBFS, 1 dB bins
SPEECH_PERCENTILE = 95          # "speech level" = this percentile of window levels (the loud parts of the call)
LOW_LEVEL_DBFS = -40.0          # speech level below this: too quiet to be heard reliably
HIGH_LEVEL_DBFS = -3.0          # speech level above this: saturated
CLIP_WARN_FRACTION = 1e-3       # warn when at least this fraction of samples is clipped
ANTIPHASE_DB = -10.0            # mono mixdown this far below the channels' own level: channels cancel


@dataclass(frozen=True)
class AudioInfo:
    """What `open_audio` found in a file (native rate and layout, before any conversion)."""
    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str       # libsndfile major format, e.g. "WAV", "FLAC"
    subtype: str      # sample encoding, e.g. "PCM_16", "FLOAT"


@dataclass
class AudioStats:
    """Counters filled while streaming a file; pass one to `iter_audio` to observe problems without crashing."""
    frames_read: int = 0       # native-rate frames read from the file
    samples_out: int = 0       # 16 kHz samples produced
    nonfinite: int = 0         # NaN/inf input samples replaced by 0 (counted per channel value)
    clipped: int = 0           # mono input samples at or beyond CLIP_LEVEL (values beyond 1 are clipped to 1)
    values_in: int = 0         # native channel values read (frames x channels)
    channel_energy: float = 0.0   # sum over frames of the mean squared channel value (before mixdown)
    mono_energy: float = 0.0      # sum of squared mono samples (after mixdown)
    peak: float = 0.0             # largest finite mono magnitude
    level_hist: np.ndarray = field(default_factory=lambda: np.zeros(int(-LEVEL_FLOOR_DB) + 1, dtype=np.int64))
    _level_tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)

    def speech_level_dbfs(self) -> float | None:
        """Level of the loud parts (SPEECH_PERCENTILE of window levels), None before a full window was seen."""
        total = int(self.level_hist.sum())
        if total == 0:
            return None
        k = int(np.searchsorted(np.cumsum(self.level_hist), SPEECH_PERCENTILE / 100 * total))
        return LEVEL_FLOOR_DB + min(k, len(self.level_hist) - 1)


# --- validation ----------------------------------------------------------------------------------------
def _wav_problem(head: bytes) -> str:
    """Describe why a RIFF/WAVE file (first bytes `head`) is unreadable: truncated header or unsupported encoding."""
    pos, fmt_tag = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 10 <= len(head):
            fmt_tag = int.from_bytes(head[pos + 8:pos + 10], "little")
        if chunk == b"data":
            break
        pos += 8 + size + (size & 1)
    else:
        return f"truncated WAV header (file ends after {len(head)} bytes, before the audio data)"
    if fmt_tag is not None and fmt_tag not in SUPPORTED_WAV_TAGS:
        return f"unsupported WAV encoding (format tag 0x{fmt_tag:04x})"
    return "corrupt or unsupported WAV header"


def _sniff_problem(path: str, error: Exception) -> str:
    """Name the problem of a file libsndfile refused, from its first bytes (and libsndfile's reason)."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    reason = str(error).split(": ", 1)[-1].strip()   # drop libsndfile's "Error opening '<path>'" prefix
    if head[:4] in WAV_HEADER_MAGIC:
        problem = _wav_problem(head)
        return f"{problem} (libsndfile: {reason})" if problem.startswith("corrupt") else problem
    if not any(b < 0x20 and b not in b"\t\n\r\f" for b in head[:512]):
        return "not an audio file (looks like text)"
    return f"not an audio file or unsupported audio format (libsndfile: {reason})"


def _path_problem(path: str) -> str | None:
    """Why `path` is not a readable regular, non-empty file (None if it is one)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        if e.errno == errno.ENOENT:
            return "file not found"
        if e.errno == errno.EACCES:
            return "permission denied"
        return f"cannot read file ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not an audio file"
    if stat.S_ISFIFO(st.st_mode):
        return "is a named pipe (FIFO), not a regular file; save the audio to a file first"
    if stat.S_ISSOCK(st.st_mode):
        return "is a socket, not an audio file"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "is a device, not an audio file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _wav_data_shortfall(path: str, size: int) -> str | None:
    """For a RIFF/WAVE file whose data chunk announces more bytes than the file holds: the problem, else None."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, n = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"data":
            have = size - (pos + 8)
            if n in WAV_UNKNOWN_SIZES or have >= n:
                return None
            return f"truncated WAV data ({have} of the {n} bytes its header announces)"
        pos += 8 + n + (n & 1)
    return None


def sf_path(path: str | os.PathLike) -> bytes:
    """The path as bytes for libsndfile: soundfile cannot encode a non-UTF-8 name (surrogate-escaped str)."""
    return os.fsencode(path)


def open_audio(path: str | os.PathLike) -> AudioInfo:
    """Validate an audio file and describe it; raise SpotterError('<path>: <problem>') if it is unusable."""
    path = os.fsdecode(os.fspath(path))
    problem = _path_problem(path)
    if problem:
        raise SpotterError(f"{path}: {problem}")
    try:
        info = sf.info(sf_path(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise SpotterError(f"{path}: {_sniff_problem(path, e)}") from None
    if info.channels < 1:
        raise SpotterError(f"{path}: no audio channels")
    if not MIN_INPUT_RATE <= info.samplerate <= MAX_INPUT_RATE:
        raise SpotterError(f"{path}: unsupported sample rate {info.samplerate} Hz "
                           f"(expected {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz)")
    g = gcd(info.samplerate, SAMPLE_RATE)
    if max(info.samplerate // g, SAMPLE_RATE // g) > MAX_RATIO_TERM:
        raise SpotterError(f"{path}: unsupported sample rate {info.samplerate} Hz "
                           f"(no practical ratio to {SAMPLE_RATE} Hz)")
    if info.frames <= 0:
        raise SpotterError(f"{path}: no audio (0 frames)")
    if info.format == "WAV":
        shortfall = _wav_data_shortfall(path, os.path.getsize(path))
        if shortfall:
            raise SpotterError(f"{path}: {shortfall}")
    return AudioInfo(path=path, sample_rate=int(info.samplerate), channels=int(info.channels),
                     frames=int(info.frames), duration_s=info.frames / info.samplerate,
                     format=info.format, subtype=info.subtype)


# --- resampling ----------------------------------------------------------------------------------------
def design_filter(up: int, down: int) -> np.ndarray:
    """Anti-aliasing low-pass FIR for rational resampling by up/down (identical to resample_poly's default)."""
    from scipy.signal import firwin      # training only: the runtime resamples with soxr (StreamResampler)
    max_rate = max(up, down)
    half_len = ZERO_CROSSINGS * max_rate
    return firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", KAISER_BETA)) * up


class StreamResampler:
    """The runtime's streaming resampler: soxr.ResampleStream (libsoxr, 'HQ'), any rate -> 16 kHz, float32.

    Same interface as Resampler (process / flush / reset / samples_in): blocks in, the samples that are ready out;
    flush() ends the stream and makes the total exactly ceil(n_in * out_rate / in_rate) samples (padding or
    trimming libsoxr's last few), then resets. At equal rates samples pass through unchanged.
    """

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE, quality: str = "HQ"):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate, self.out_rate, self.quality = int(in_rate), int(out_rate), quality
        self.passthrough = self.in_rate == self.out_rate
        self.reset()

    def reset(self) -> None:
        self._n_in = 0
        self._n_out = 0
        self._stream = None
        if not self.passthrough:
            import soxr
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32",
                                               quality=self.quality)

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.ndim != 1:
            raise ValueError(f"StreamResampler expects a 1-D block, got shape {block.shape}")
        self._n_in += len(block)
        if self.passthrough:
            return block.astype(np.float32, copy=True)
        out = self._stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32), last=False)
        out = np.asarray(out, dtype=np.float32).reshape(-1)
        self._n_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        if self.passthrough:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        out = np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), np.float32).reshape(-1)
        total = -((-self._n_in * self.out_rate) // self.in_rate)          # ceil(n_in * out / in)
        want = max(0, total - self._n_out)
        out = out[:want] if len(out) >= want else np.concatenate([out, np.zeros(want - len(out), np.float32)])
        self.reset()
        return out

    @property
    def samples_in(self) -> int:
        return self._n_in


class Resampler:
    """Stateful polyphase resampler (training's: its output equals scipy.signal.resample_poly on the whole
    signal; the runtime uses StreamResampler, so scipy is imported only when this one is used).

    Output sample m is the filtered value at input time m*in_rate/out_rate, i.e.
    y[m] = sum_i x[i] * h[half_len + m*down - i*up]; it is emitted as soon as the inputs it depends on
    have arrived (a latency of about half the filter), and `flush()` emits the rest, treating the signal
    as zero after its end. Over a whole stream exactly ceil(n_in * out_rate / in_rate) samples come out.
    """

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        g = gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        self.passthrough = self.up == self.down == 1
        self._h = np.zeros(1)
        self._half_len = 0
        if not self.passthrough:
            h = design_filter(self.up, self.down)
            self._half_len = (len(h) - 1) // 2
            # Pre-pad so that a segment starting at a multiple of `down` lands outputs on upfirdn's grid.
            self._pre_pad = (-self._half_len) % self.down
            self._h = np.concatenate([np.zeros(self._pre_pad), h])
        self.reset()

    def reset(self) -> None:
        """Forget the stream; the next block starts a new signal at time zero."""
        self._n_in = 0            # input samples received
        self._m = 0               # next output index
        start = self._segment_start(0) if not self.passthrough else 0
        self._buf = np.zeros(-start, dtype=np.float64)   # zeros before the signal start
        self._buf_start = start   # absolute input index of _buf[0]

    def _segment_start(self, m: int) -> int:
        """First input index output m depends on, rounded down to a multiple of `down`."""
        i_lo = -((self._half_len - m * self.down) // self.up)      # ceil((m*down - half_len) / up)
        return (i_lo // self.down) * self.down

    def _emit(self, m_end: int) -> np.ndarray:
        """Compute outputs self._m .. m_end-1 from the buffered input (zeros assumed after it)."""
        count = m_end - self._m
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        s = self._segment_start(self._m)
        seg = self._buf[s - self._buf_start:]
        from scipy.signal import upfirdn
        y = upfirdn(self._h, seg, self.up, self.down)
        k0 = self._m + (self._half_len + self._pre_pad - s * self.up) // self.down
        out = y[k0:k0 + count].astype(np.float32)
        self._m = m_end
        keep = self._segment_start(m_end)
        self._buf = self._buf[keep - self._buf_start:]
        self._buf_start = keep
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed 1-D input samples; return the float32 output samples that are now complete (may be empty)."""
        block = np.asarray(block)
        if block.ndim != 1:
            raise ValueError(f"Resampler expects a 1-D block, got shape {block.shape}")
        if self.passthrough:
            self._n_in += len(block)
            return block.astype(np.float32, copy=True)
        self._buf = np.concatenate([self._buf, block.astype(np.float64, copy=False)])
        self._n_in += len(block)
        # output m is complete when its last input floor((m*down + half_len)/up) has arrived
        m_end = -((self._half_len - self._n_in * self.up) // self.down)   # ceil((n_in*up - half_len)/down)
        return self._emit(max(m_end, self._m))

    def flush(self) -> np.ndarray:
        """Emit the remaining outputs (signal assumed silent after the last block) and reset for a new stream."""
        if self.passthrough:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        n_total = -((-self._n_in * self.up) // self.down)     # ceil(n_in * up / down)
        out = self._emit(max(n_total, self._m))
        self.reset()
        return out

    @property
    def samples_in(self) -> int:
        return self._n_in


# --- sample conditioning -------------------------------------------------------------------------------
def to_mono(frames: np.ndarray) -> np.ndarray:
    """(n, channels) or (n,) float array -> (n,) float32, channels averaged."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    if frames.shape[1] == 1:
        return frames[:, 0].astype(np.float32, copy=False)
    return frames.mean(axis=1, dtype=np.float64).astype(np.float32)   # float64: huge float samples do not overflow


def sanitize(x: np.ndarray, stats: AudioStats | None = None) -> np.ndarray:
    """Replace NaN/inf by 0 and clip to [-1, 1] in place; count both in `stats`."""
    bad = ~np.isfinite(x)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        x[bad] = 0.0
    n_clip = int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
    if n_clip:
        np.clip(x, -1.0, 1.0, out=x)
    if stats is not None:
        stats.nonfinite += n_bad
        stats.clipped += n_clip
    return x


# --- streaming reader ----------------------------------------------------------------------------------
def _convert_frames(frames: np.ndarray, stats: AudioStats | None, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Native frames (float32, any channel count) -> clean mono float32; measures the input into `stats`."""
    if stats is not None:
        stats.values_in += int(frames.size)
    if not np.isfinite(frames).all():
        # count per channel value, then mix the cleaned channels
        frames = np.array(frames, dtype=np.float32)
        bad = ~np.isfinite(frames)
        if stats is not None:
            stats.nonfinite += int(np.count_nonzero(bad))
        frames[bad] = 0.0
    mono = np.array(to_mono(frames), dtype=np.float32)   # own copy, safe to modify
    mono = sanitize(mono, stats)
    if stats is not None:
        measure_input(frames, mono, rate, stats)
    return mono


def measure_input(frames: np.ndarray, mono: np.ndarray, rate: int, stats: AudioStats) -> None:
    """Accumulate peak, window levels and (for several channels) channel vs mixdown energy into `stats`."""
    if mono.size == 0:
        return
    stats.peak = max(stats.peak, float(np.max(np.abs(mono))))
    if frames.ndim == 2 and frames.shape[1] > 1:
        stats.channel_energy += float(np.square(np.clip(frames, -1.0, 1.0), dtype=np.float64).mean(axis=1).sum())
        stats.mono_energy += float(np.square(mono, dtype=np.float64).sum())
    win = max(1, int(LEVEL_WINDOW_S * rate))
    x = np.concatenate([stats._level_tail, mono]) if stats._level_tail.size else mono
    n = len(x) // win
    if n:
        ms = np.square(x[:n * win].reshape(n, win), dtype=np.float64).mean(axis=1)
        ms = ms[ms > 1e-14]                                   # digital silence is no level
        db = 10.0 * np.log10(ms) if ms.size else ms
        bins = np.clip(np.round(db - LEVEL_FLOOR_DB), 0, len(stats.level_hist) - 1).astype(np.int64)
        stats.level_hist += np.bincount(bins, minlength=len(stats.level_hist))
    stats._level_tail = np.array(x[n * win:], dtype=np.float32)


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / max(1, total):.2g} %"


def assess_input(info: AudioInfo, stats: AudioStats) -> list[str]:
    """After a whole file was streamed: raise SpotterError if its audio is unusable (all samples NaN/inf, fewer
    frames than announced); return warnings (partial NaN, clipping, level far too low/high, antiphase channels)."""
    path = info.path
    if stats.values_in and stats.nonfinite >= stats.values_in:
        raise SpotterError(f"{path}: no valid audio (all {stats.values_in} samples are NaN or infinite)")
    if stats.frames_read < info.frames:
        raise SpotterError(f"{path}: truncated audio (data ends after {stats.frames_read / info.sample_rate:.2f} s "
                           f"of the {info.duration_s:.2f} s announced)")
    warnings = []
    if stats.nonfinite:
        warnings.append(f"{stats.nonfinite} of {stats.values_in} samples ({_pct(stats.nonfinite, stats.values_in)})"
                        f" are NaN or infinite, replaced by silence")
    mono_total = max(1, stats.frames_read)
    if stats.clipped >= CLIP_WARN_FRACTION * mono_total:
        warnings.append(f"clipping: {stats.clipped} of {stats.frames_read} samples "
                        f"({_pct(stats.clipped, mono_total)}) at full scale")
    level = stats.speech_level_dbfs()
    if info.channels > 1 and stats.channel_energy > 1e-6 * max(1, stats.frames_read):
        ratio_db = 10.0 * np.log10(max(stats.mono_energy, 1e-30) / stats.channel_energy)
        if ratio_db < ANTIPHASE_DB:
            warnings.append(f"channels cancel when mixed to mono (antiphase stereo?): the mix is {-ratio_db:.0f} dB "
                            f"below the channels; keywords are likely missed")
            level = None                   # the low level of the mix is this problem, not a quiet recording
    if level is not None and level < LOW_LEVEL_DBFS:
        warnings.append(f"level too low: speech at about {level:.0f} dBFS (expected above {LOW_LEVEL_DBFS:.0f}); "
                        f"keywords are likely missed")
    elif level is not None and level > HIGH_LEVEL_DBFS:
        warnings.append(f"level too high: speech at about {level:.0f} dBFS (saturated); keywords may be missed")
    return warnings


def iter_audio(path: str | os.PathLike, block_samples: int = STEP_SAMPLES, start_s: float = 0.0,
               stats: AudioStats | None = None) -> Iterator[np.ndarray]:
    """Stream a file as float32 mono SAMPLE_RATE blocks of exactly `block_samples` (the last one may be shorter).

    The file is validated now (SpotterError before the first block); memory stays bounded by
    READ_SECONDS of input whatever the file length. `start_s` starts reading at that time (the
    resampler restarts there). NaN/inf samples become 0 and are counted in `stats`.
    """
    info = open_audio(path)
    if block_samples <= 0:
        raise ValueError(f"block_samples must be positive, got {block_samples}")
    try:
        f = sf.SoundFile(sf_path(info.path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise SpotterError(f"{info.path}: cannot read audio ({e})") from None
    start = min(max(0, int(round(start_s * info.sample_rate))), info.frames)
    if start:
        try:
            f.seek(start)
        except (sf.LibsndfileError, RuntimeError) as e:
            f.close()
            raise SpotterError(f"{info.path}: cannot seek to {start_s:g} s ({e})") from None
    return _stream_blocks(f, info, block_samples, stats)


def _stream_blocks(f: sf.SoundFile, info: AudioInfo, block_samples: int,
                   stats: AudioStats | None) -> Iterator[np.ndarray]:
    """The generator behind iter_audio: read, clean, resample, re-block; closes `f` when done or closed."""
    resampler = StreamResampler(info.sample_rate, SAMPLE_RATE)
    read_frames = max(1, int(READ_SECONDS * info.sample_rate))
    pending: list[np.ndarray] = []
    n_pending = 0
    with f:
        while True:
            try:
                frames = f.read(read_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise SpotterError(f"{info.path}: read error after {f.tell()} frames ({e})") from None
            last = len(frames) < read_frames
            if stats is not None:
                stats.frames_read += len(frames)
            out = resampler.process(_convert_frames(frames, stats, info.sample_rate)) if len(frames) else np.zeros(0, np.float32)
            if last:
                out = np.concatenate([out, resampler.flush()])
            # outputs of a clean input can overshoot [-1, 1] slightly (Gibbs); keep the promise of the range
            np.clip(out, -1.0, 1.0, out=out)
            if stats is not None:
                stats.samples_out += len(out)
            pending.append(out)
            n_pending += len(out)
            if n_pending >= block_samples or last:
                joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                n_full = (len(joined) // block_samples) * block_samples
                for i in range(0, n_full, block_samples):
                    yield joined[i:i + block_samples]
                rest = joined[n_full:]
                pending, n_pending = [rest], len(rest)
            if last:
                break
    if n_pending:
        yield pending[0]


def load_audio(path: str | os.PathLike, stats: AudioStats | None = None) -> np.ndarray:
    """Whole file as float32 mono SAMPLE_RATE (for short files and training; long files: use iter_audio)."""
    blocks = list(iter_audio(path, block_samples=SAMPLE_RATE * 10, stats=stats))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


# --- writing -------------------------------------------------------------------------------------------
def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically (temp file in the same folder, fsync, then rename)."""
    path = os.fspath(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {audio.shape}")
    audio = np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, audio, sr, format="WAV", subtype="PCM_16")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:   # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass

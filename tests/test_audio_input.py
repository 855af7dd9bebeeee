"""Audio file input: validation of bad files, format/rate/channel conversion, streaming resampler, bounded memory."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tracemalloc
from math import gcd

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from spotter.audio import (AudioStats, Resampler, StreamResampler, iter_audio, load_audio, open_audio, write_wav)
from spotter.config import SAMPLE_RATE, STEP_SAMPLES
from spotter.errors import SpotterError

SPEECH_TEXT = "Au secours, il y a un incendie dans l'immeuble, venez vite"
needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                 reason="espeak-ng and sox are needed to make speech test files")


# --- real signals ----------------------------------------------------------------------------------
def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, sr: int, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).uniform(-1, 1, int(seconds * sr))).astype(np.float32)


def peak_frequency(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def offline_resample(x: np.ndarray, sr: int) -> np.ndarray:
    """What the runtime's streaming resampler (libsoxr, StreamResampler) gives for the whole signal at once."""
    if sr == SAMPLE_RATE:
        return x.astype(np.float64)
    import soxr
    y = soxr.resample(x.astype(np.float32), sr, SAMPLE_RATE, quality="HQ").astype(np.float64)
    n = -((-len(x) * SAMPLE_RATE) // sr)
    return y[:n] if len(y) >= n else np.concatenate([y, np.zeros(n - len(y))])


def sox(src, dst, *effects_and_opts, out_opts=()) -> str:
    subprocess.run(["sox", str(src), *out_opts, str(dst), *effects_and_opts], check=True, capture_output=True)
    return str(dst)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    """French speech from espeak-ng (22050 Hz, 16-bit mono)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "fr", "-w", str(path), SPEECH_TEXT], check=True, capture_output=True)
    return str(path)


# --- bad inputs: one clear line naming the file ------------------------------------------------------
def _make_bad(kind: str, tmp_path, speech: str) -> str:
    p = tmp_path / f"{kind}.wav"
    header = open(speech, "rb").read()
    if kind == "missing":
        pass
    elif kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated_header":
        p.write_bytes(header[:30])
    elif kind == "text":
        p.write_text("Ceci n'est pas un fichier audio.\nJuste du texte.\n" * 20, encoding="utf-8")
    elif kind == "zero_length":
        sf.write(p, np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    elif kind == "unsupported_encoding":   # valid RIFF layout, codec tag libsndfile does not know
        data = np.zeros(1000, np.int16).tobytes()
        fmt = struct.pack("<HHIIHH", 0x9999, 1, 16000, 32000, 2, 16)
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
        p.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    elif kind == "binary_garbage":
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "rate_too_low":
        sf.write(p, noise(1.0, 1000), 1000, subtype="PCM_16")
    return str(p)


@pytest.mark.parametrize("kind, words", [
    ("missing", "not found"),
    ("directory", "directory"),
    ("empty", "empty file"),
    ("truncated_header", "truncated WAV header"),
    ("text", "not an audio file"),
    ("zero_length", "no audio (0 frames)"),
    ("unsupported_encoding", "unsupported WAV encoding"),
    ("binary_garbage", "unsupported audio format"),
    ("rate_too_low", "unsupported sample rate"),
])
def test_bad_file_gives_one_clear_line(kind, words, tmp_path, speech):
    path = _make_bad(kind, tmp_path, speech)
    for reader in (open_audio, load_audio, lambda p: iter_audio(p)):
        with pytest.raises(SpotterError) as err:
            reader(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: "), msg
        assert words in msg, msg
        assert "\n" not in msg and "Traceback" not in msg


def test_open_audio_describes_speech(speech):
    info = open_audio(speech)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (22050, 1, "WAV", "PCM_16")
    assert info.frames > 22050 and info.duration_s == pytest.approx(info.frames / 22050)


# --- formats, channels, rates ----------------------------------------------------------------------
@needs_tools
@pytest.mark.parametrize("opts, tol", [
    (["-b", "8"], 2e-2),                                  # 8-bit unsigned PCM
    (["-b", "24"], 1e-4),
    (["-e", "floating-point", "-b", "32"], 1e-4),
    (["-e", "floating-point", "-b", "64"], 1e-4),
    (["-e", "signed-integer", "-b", "32"], 1e-4),
])
def test_sample_formats_decode_to_same_signal(opts, tol, speech, tmp_path):
    ref = load_audio(speech)
    variant = sox(speech, tmp_path / "variant.wav", out_opts=opts)
    assert open_audio(variant).subtype != "PCM_16"
    x = load_audio(variant)
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) == len(ref)
    assert np.abs(x - ref).max() < tol
    assert np.abs(x).max() <= 1.0


@needs_tools
def test_stereo_is_mixed_down(speech, tmp_path):
    ref = load_audio(speech)
    both = load_audio(sox(speech, tmp_path / "stereo.wav", "remix", "1", "1"))
    assert open_audio(tmp_path / "stereo.wav").channels == 2
    np.testing.assert_allclose(both, ref, atol=1e-6)
    # left = speech, right = 1 kHz tone: the mix is their mean
    sp = sf.read(speech, dtype="float32")[0]
    st = np.stack([sp, tone(1000, len(sp) / 22050, 22050)[:len(sp)]], axis=1)
    sf.write(tmp_path / "lr.wav", st, 22050, subtype="FLOAT")
    mixed = load_audio(tmp_path / "lr.wav")
    np.testing.assert_allclose(mixed, offline_resample(st.mean(axis=1), 22050).astype(np.float32), atol=1e-5)


def test_multichannel_is_mixed_down(tmp_path):
    sr = 16000
    chans = np.stack([tone(500, 1, sr), tone(1000, 1, sr), noise(1, sr), np.zeros(sr, np.float32)], axis=1)
    sf.write(tmp_path / "quad.wav", chans, sr, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "quad.wav"), chans.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 32000, 44100, 48000])
def test_tone_keeps_its_pitch_and_duration_at_any_rate(sr, tmp_path):
    path = tmp_path / f"tone_{sr}.wav"
    sf.write(path, tone(1000, 2.0, sr), sr, subtype="PCM_16")
    x = load_audio(path)
    assert abs(len(x) - 2.0 * SAMPLE_RATE) <= 1
    assert peak_frequency(x[1000:-1000], SAMPLE_RATE) == pytest.approx(1000, abs=2)
    # amplitude preserved away from the edges (no gain error, no clicks)
    assert np.abs(x[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)


@needs_tools
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_speech_at_other_rates_has_same_duration(rate, speech, tmp_path):
    ref = load_audio(speech)
    x = load_audio(sox(speech, tmp_path / f"speech_{rate}.wav", out_opts=["-r", str(rate)]))
    assert abs(len(x) - len(ref)) <= 2
    # same content: strong correlation with the original (8 kHz loses the band above 4 kHz)
    n = min(len(x), len(ref))
    corr = np.dot(x[:n], ref[:n]) / np.sqrt(np.dot(x[:n], x[:n]) * np.dot(ref[:n], ref[:n]))
    assert corr > (0.8 if rate == 8000 else 0.98)


@needs_tools
def test_clipped_speech_stays_in_range_and_is_counted(speech, tmp_path):
    clipped = sox(speech, tmp_path / "clipped.wav", "gain", "20")
    stats = AudioStats()
    x = load_audio(clipped, stats=stats)
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0
    assert stats.clipped > 100
    clean = AudioStats()
    load_audio(speech, stats=clean)
    assert clean.clipped == 0


def test_float_beyond_full_scale_is_clipped(tmp_path):
    x = tone(440, 1.0, SAMPLE_RATE, amp=1.8)
    sf.write(tmp_path / "hot.wav", x, SAMPLE_RATE, subtype="FLOAT")
    stats = AudioStats()
    y = load_audio(tmp_path / "hot.wav", stats=stats)
    assert np.abs(y).max() == pytest.approx(1.0)
    assert stats.clipped > 0
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1e-6)


def test_nan_and_inf_samples_become_zero_and_are_counted(tmp_path):
    sr = 22050
    x = tone(1000, 1.5, sr)
    bad = np.zeros(len(x), bool)
    bad[[100, 5000, 5001, 20000]] = True
    x[[100, 5000]] = np.nan
    x[5001] = np.inf
    x[20000] = -np.inf
    sf.write(tmp_path / "nan.wav", x, sr, subtype="FLOAT")
    stats = AudioStats()
    y = load_audio(tmp_path / "nan.wav", stats=stats)
    assert np.isfinite(y).all()
    assert stats.nonfinite == 4
    clean = np.where(bad, 0.0, x)
    np.testing.assert_allclose(y, np.clip(offline_resample(clean, sr), -1, 1), atol=1e-4)


# --- streaming equals offline -----------------------------------------------------------------------
@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 48000])
def test_resampler_blockwise_equals_offline(sr):
    rng = np.random.default_rng(sr)
    x = np.concatenate([noise(0.7, sr, seed=sr), tone(1000, 0.8, sr)])
    r = StreamResampler(sr, SAMPLE_RATE)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 4000))
        out.append(r.process(x[i:i + n]))
        i += n
    out.append(r.flush())
    y = np.concatenate(out)
    ref = offline_resample(x, sr)
    assert abs(len(y) - round(len(x) * SAMPLE_RATE / sr)) <= 1
    assert len(y) == len(ref)
    assert np.abs(y - ref).max() < 1e-4


@pytest.mark.parametrize("sr", [8000, 44100])
def test_training_resampler_equals_resample_poly(sr):
    """training's polyphase Resampler (synthesis) still equals scipy.signal.resample_poly block-wise."""
    x = np.concatenate([noise(0.7, sr, seed=sr), tone(1000, 0.8, sr)])
    r = Resampler(sr, SAMPLE_RATE)
    y = np.concatenate([r.process(x[:3001]), r.process(x[3001:]), r.flush()])
    g = gcd(sr, SAMPLE_RATE)
    assert np.abs(y - resample_poly(x.astype(np.float64), SAMPLE_RATE // g, sr // g)).max() < 1e-4


def test_resampler_is_reusable_after_flush():
    r = StreamResampler(48000)
    x = tone(1000, 0.5, 48000)
    a = np.concatenate([r.process(x), r.flush()])
    b = np.concatenate([r.process(x), r.flush()])
    np.testing.assert_array_equal(a, b)


@needs_tools
@pytest.mark.parametrize("block", [1, 333, STEP_SAMPLES, 50000])
def test_iter_audio_blocks_equal_offline_resampling(block, speech, tmp_path):
    path = sox(speech, tmp_path / "s44.wav", out_opts=["-r", "44100"])
    blocks = list(iter_audio(path, block_samples=block))
    assert all(len(b) == block for b in blocks[:-1]) and 0 < len(blocks[-1]) <= block
    y = np.concatenate(blocks)
    native = sf.read(path, dtype="float32")[0]
    ref = np.clip(offline_resample(native, 44100), -1, 1)
    assert len(y) == len(ref)
    assert np.abs(y - ref).max() < 1e-4


def test_iter_audio_start_offset(tmp_path):
    sr = 8000
    x = noise(3.0, sr)
    sf.write(tmp_path / "n.wav", x, sr, subtype="FLOAT")
    y = np.concatenate(list(iter_audio(tmp_path / "n.wav", start_s=1.0)))
    ref = offline_resample(x[sr:], sr)
    assert len(y) == len(ref) and np.abs(y - ref).max() < 1e-4


# --- long file in bounded memory --------------------------------------------------------------------
@pytest.mark.slow
def test_two_hour_file_streams_in_bounded_memory(tmp_path):
    """A 2-hour 8 kHz file (~110 MB, 460 MB as 16 kHz float32) must stream without being loaded whole."""
    sr, hours = 8000, 2.0
    total = int(hours * 3600 * sr)
    path = tmp_path / "long.wav"
    second = np.concatenate([tone(1000, 0.5, sr), noise(0.5, sr)])
    second_i16 = (second * 32767).astype(np.int16)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        chunk = np.tile(second_i16, 60)                       # one minute
        for _ in range(total // len(chunk)):
            f.write(chunk)
    assert open_audio(path).duration_s == pytest.approx(hours * 3600)

    tracemalloc.start()
    try:
        n_out, peak_abs = 0, 0.0
        stats = AudioStats()
        for block in iter_audio(path, block_samples=SAMPLE_RATE * 4, stats=stats):
            n_out += len(block)
            peak_abs = max(peak_abs, float(np.abs(block).max()))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n_out == total * 2
    assert stats.frames_read == total
    assert peak_abs <= 1.0
    assert peak_bytes < 16 * 2**20, f"peak traced memory {peak_bytes / 2**20:.1f} MiB"


# --- writing ----------------------------------------------------------------------------------------
def test_write_wav_round_trip_is_atomic_16bit(tmp_path, speech):
    x = load_audio(speech)
    out = tmp_path / "out.wav"
    write_wav(out, x)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]          # no temp file left behind
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    y = load_audio(out)
    assert np.abs(y - x).max() < 1e-4
    # overwriting replaces the file; out-of-range and NaN input is written clipped/zeroed
    loud = np.array([0.0, 2.0, -3.0, np.nan, 0.25], np.float32)
    write_wav(out, loud)
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], [0, 32767 / 32768, -1, 0, 0.25], atol=1e-4)

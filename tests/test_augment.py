"""Augmentation on real signals: espeak-ng speech, tones and noise (training/augment.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import butter, sosfiltfilt

from spotter.config import CLIP_SAMPLES, N_MELS, SAMPLE_RATE
from spotter.errors import SpotterError
from training import augment as A

SR = SAMPLE_RATE
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"   # real recordings, when present


def tone(freq: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def level_at(audio: np.ndarray, freq: float) -> float:
    """Hann-windowed spectrum magnitude (dB) at freq."""
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    k = int(round(freq * audio.size / SR))
    return 20 * np.log10(spec[k - 2:k + 3].max() + 1e-12)


def peak_freq(audio: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.argmax(spec) * SR / audio.size)


def duration(audio: np.ndarray) -> float:
    """Seconds of 10 ms frames louder than half the loudest frame."""
    n = audio.size // 160 * 160
    frames = np.sqrt(np.mean(audio[:n].reshape(-1, 160) ** 2, axis=1))
    return float(np.sum(frames > 0.5 * frames.max()) * 0.01)


def centroid(audio: np.ndarray) -> float:
    """Energy-weighted mean sample index."""
    e = audio.astype(np.float64) ** 2
    return float(np.sum(np.arange(audio.size) * e) / np.sum(e))


@pytest.fixture(scope="module")
def clip(speech_wav) -> np.ndarray:
    """A training-size window: French speech in the middle over faint noise."""
    speech = speech_wav("il y a un incendie")
    win = np.zeros(CLIP_SAMPLES, np.float32)
    start = (CLIP_SAMPLES - speech.size) // 2
    win[start:start + speech.size] = 0.5 * speech[:CLIP_SAMPLES]
    win += 1e-3 * np.random.default_rng(0).standard_normal(CLIP_SAMPLES).astype(np.float32)
    return win


def always(spec: dict, **overrides) -> dict:
    """spec with every waveform effect forced on (p=1), optionally overriding some entries."""
    forced = {k: dataclasses.replace(e, p=1.0) for k, e in spec.items()}
    forced.update(overrides)
    return forced


# --- the Augmenter -------------------------------------------------------------------------------------
def test_augmenter_keeps_length_and_range_and_is_deterministic(clip):
    aug_a, aug_b = A.Augmenter(None, seed=7), A.Augmenter(None, seed=7)
    outs_a = [aug_a(clip) for _ in range(12)]
    outs_b = [aug_b(clip) for _ in range(12)]
    for a, b in zip(outs_a, outs_b):
        assert a.shape == clip.shape and a.dtype == np.float32
        assert np.isfinite(a).all() and np.abs(a).max() <= 1.0
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(outs_a[0], outs_a[1])                       # random, not constant
    other = A.Augmenter(None, seed=8)(clip, np.random.default_rng(0))
    same = A.Augmenter(None, seed=9)(clip, np.random.default_rng(0))   # per-clip rng decides, not the seed
    np.testing.assert_array_equal(other, same)


@pytest.mark.parametrize("rate, factor", [(0.85, 0.9), (1.15, 1.1)])
def test_every_effect_at_once_keeps_length(clip, tmp_path, rate, factor):
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(1).standard_normal(SR // 2) * 0.1, SR)   # shorter than a clip: tiled
    spec = always(A.AUGMENT_SPEC,
                  time_stretch=dataclasses.replace(A.AUGMENT_SPEC["time_stretch"], p=1.0,
                                                   ranges={"rate": (rate, rate)}),
                  speed=dataclasses.replace(A.AUGMENT_SPEC["speed"], p=1.0, ranges={"factor": (factor, factor)}),
                  codec=dataclasses.replace(A.AUGMENT_SPEC["codec"], p=1.0, choices={"gsm": 1.0}))
    aug = A.Augmenter([noise], babble_paths=[noise], seed=0, spec=spec)
    out = aug(clip, np.random.default_rng(3))
    assert out.shape == clip.shape and np.isfinite(out).all()
    assert A.active_rms(out) > 1e-3


def test_real_recordings_as_noise_and_babble_when_present(clip):
    noise, speech = A.find_noise_files(SHARED_DATA / "noise"), A.find_noise_files(SHARED_DATA / "speech")
    if not noise or not speech:
        pytest.skip("no shared recordings (../shared/data)")
    spec = {k: dataclasses.replace(e, p=1.0 if k in ("background_noise", "babble") else 0.0)
            for k, e in A.AUGMENT_SPEC.items()}
    aug = A.Augmenter(noise[::20], speech[::10], seed=0, spec=spec)
    outs = [aug(clip, np.random.default_rng(i)) for i in range(4)]
    for out in outs:
        assert out.shape == clip.shape and np.isfinite(out).all()
        assert A.rms(out - clip) > 1e-3                                 # something was mixed in
    assert not np.allclose(outs[0], outs[1])


def test_silent_clip_gets_noise_not_nan():
    aug = A.Augmenter(None, seed=0, spec=always(A.AUGMENT_SPEC))
    out = aug(np.zeros(CLIP_SAMPLES, np.float32), np.random.default_rng(0))
    assert np.isfinite(out).all() and A.rms(out) > 1e-4


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        A.Augmenter(None)(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="codec"):
        A.telephone_channel(tone(1000), codec="mp3")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises(SpotterError, match="broken.wav"):
        A.Augmenter([broken])


# --- talker ----------------------------------------------------------------------------------------------
def test_pitch_shift_moves_a_tone_and_keeps_its_place():
    x = np.zeros(CLIP_SAMPLES, np.float32)
    x[12000:20000] = tone(1000, 0.5) * np.hanning(8000)
    up = A.pitch_tempo(x, semitones=2.0)
    assert up.shape == x.shape
    assert peak_freq(up) == pytest.approx(1000 * 2 ** (2 / 12), rel=0.02)
    assert centroid(up) == pytest.approx(centroid(x), abs=0.01 * SR)


@pytest.mark.parametrize("rate", [0.85, 1.15])
def test_time_stretch_changes_duration_not_pitch_and_keeps_the_centre(rate):
    x = np.zeros(CLIP_SAMPLES, np.float32)
    x[12000:20000] = tone(1000, 0.5)
    y = A.pitch_tempo(x, rate=rate)
    assert y.shape == x.shape
    assert peak_freq(y) == pytest.approx(1000, rel=0.01)
    assert duration(y) == pytest.approx(0.5 / rate, abs=0.021)
    assert centroid(y) == pytest.approx(centroid(x), abs=0.01 * SR)


def test_speed_perturbation_scales_pitch_and_duration_together():
    x = np.zeros(CLIP_SAMPLES, np.float32)
    x[12000:20000] = tone(1000, 0.5)
    y = A.speed_perturb(x, 1.1)
    assert y.shape == x.shape
    assert peak_freq(y) == pytest.approx(1100, rel=0.01)
    assert duration(y) == pytest.approx(0.5 / 1.1, abs=0.021)
    assert centroid(y) == pytest.approx(centroid(x), abs=0.005 * SR)


# --- room ------------------------------------------------------------------------------------------------
def schroeder_rt60(rir: np.ndarray, band: tuple[float, float] = (500.0, 1000.0)) -> float:
    """RT60 from the Schroeder decay curve of the band-passed RIR (T20: -5 to -25 dB, times 3)."""
    h = sosfiltfilt(butter(3, band, "bandpass", fs=SR, output="sos"), rir.astype(np.float64))
    edc = np.cumsum(h[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    i5, i25 = np.argmax(edc_db <= -5), np.argmax(edc_db <= -25)
    slope = np.polyfit(np.arange(i5, i25) / SR, edc_db[i5:i25], 1)[0]   # dB per second
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.25, 0.5, 0.8])
def test_rir_decays_at_the_requested_rt60(rt60):
    rir = A.make_rir(rt60, SR, np.random.default_rng(int(rt60 * 100)), drr_db=-6.0)
    assert rir[0] == pytest.approx(1.0) and np.abs(rir).max() == pytest.approx(1.0)
    assert schroeder_rt60(rir) == pytest.approx(rt60, rel=0.25)


def test_rir_direct_to_reverberant_ratio():
    rir = A.make_rir(0.5, SR, np.random.default_rng(0), drr_db=6.0)
    drr = 10 * np.log10(rir[0] ** 2 / np.sum(rir[1:].astype(np.float64) ** 2))
    assert drr == pytest.approx(6.0, abs=0.1)


def test_reverberation_keeps_length_and_alignment(clip):
    wet = A.reverberate(clip, A.make_rir(0.6, SR, np.random.default_rng(0), drr_db=3.0))
    assert wet.shape == clip.shape and np.isfinite(wet).all()
    xc = np.correlate(wet[8000:24000], clip[8000:24000], "full")
    assert abs(int(np.argmax(xc)) - (16000 - 1)) <= 1


# --- scene -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_mix_at_snr_reaches_the_requested_snr(snr_db):
    signal = tone(440, 2.0)
    noise = np.random.default_rng(0).standard_normal(SR // 3).astype(np.float32)   # shorter: tiled
    mixed = A.mix_at_snr(signal, noise, snr_db)
    assert mixed.shape == signal.shape
    measured = 10 * np.log10(A.rms(signal) ** 2 / A.rms(mixed - signal) ** 2)
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_active_rms_ignores_pauses(speech_wav):
    speech = 0.5 * speech_wav("il y a un incendie")
    padded = np.concatenate([np.zeros(2 * SR), speech, np.zeros(2 * SR)]).astype(np.float32)
    padded += 1e-4 * np.random.default_rng(0).standard_normal(padded.size).astype(np.float32)
    assert A.active_rms(padded) > 2 * A.rms(padded)
    assert A.active_rms(padded) == pytest.approx(A.active_rms(speech), rel=0.1)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_colored_noise_has_the_requested_spectral_slope(exponent):
    x = A.colored_noise(4 * SR, exponent, np.random.default_rng(0))
    assert x.dtype == np.float32 and A.rms(x) == pytest.approx(1.0, rel=1e-3)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    band = (f > 50) & (f < 5000)
    slope = np.polyfit(np.log10(f[band]), np.log10(power[band]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_find_noise_files(tmp_path):
    assert A.find_noise_files(tmp_path / "absent") == []
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/z.wav", "a/y.flac", "x.WAV"):
        sf.write(tmp_path / name, np.zeros(100), SR)
    (tmp_path / "notes.txt").write_text("not audio")
    found = A.find_noise_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/b/z.wav", "a/y.flac", "x.WAV"]


def test_noise_bank_reads_other_rates_and_channels_and_skips_silence(tmp_path):
    stereo8k = tmp_path / "stereo8k.wav"
    sf.write(stereo8k, np.stack([tone(500, 3.0), tone(500, 3.0)], axis=1)[::2], 8000)   # 500 Hz at 8 kHz
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR), SR)
    seg = A.NoiseBank([stereo8k]).segment(CLIP_SAMPLES, np.random.default_rng(0))
    assert seg.shape == (CLIP_SAMPLES,) and peak_freq(seg) == pytest.approx(500, rel=0.01)
    assert A.NoiseBank([silent]).segment(CLIP_SAMPLES, np.random.default_rng(0)) is None


# --- network ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", [None, "ulaw", "alaw", "gsm"])
def test_telephone_channel_keeps_the_voice_band_only(codec):
    for freq, kept in ((100, False), (1000, True), (6000, False)):
        x = tone(freq)
        y = A.telephone_channel(x, codec)
        assert y.shape == x.shape and y.dtype == np.float32
        loss = level_at(x, freq) - level_at(y, freq)
        if kept:
            assert abs(loss) < 3.0, f"{codec}: 1 kHz changed by {loss:.1f} dB"
        else:
            assert loss > 25.0, f"{codec}: {freq} Hz only {loss:.1f} dB down"


@pytest.mark.parametrize("codec", ["gsm", "amr"])
def test_narrowband_codecs_are_lossy_but_aligned(clip, codec):
    if codec == "amr" and not A.sox_has_amr():
        pytest.skip("sox without AMR-NB support")
    clean = A.telephone_channel(clip, None)
    coded = A.telephone_channel(clip, codec)
    assert coded.shape == clip.shape and np.isfinite(coded).all()
    assert not np.allclose(coded, clean, atol=1e-3)
    xc = np.correlate(coded[8000:24000], clean[8000:24000], "full")
    assert abs(int(np.argmax(xc)) - (16000 - 1)) <= 1
    assert np.corrcoef(coded, clean)[0, 1] > 0.6


# --- microphone ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hard", "tanh"])
def test_saturation_flattens_peaks_and_keeps_level(clip, kind):
    y = A.saturate(clip, 12.0, kind)
    assert A.rms(y) == pytest.approx(A.rms(clip), rel=1e-3)
    crest = lambda a: np.abs(a).max() / A.rms(a)   # noqa: E731
    assert crest(y) < 0.6 * crest(clip)


# --- features --------------------------------------------------------------------------------------------
def test_spec_augment_masks_with_the_utterance_mean():
    mel = torch.rand(6, 196, N_MELS, generator=torch.Generator().manual_seed(0)) + 2.0
    spec = always(A.AUGMENT_SPEC)
    before = torch.get_rng_state()
    out = A.spec_augment(mel, torch.Generator().manual_seed(1), spec)
    assert torch.equal(torch.get_rng_state(), before)               # global RNG untouched
    assert out.shape == mel.shape
    again = A.spec_augment(mel, torch.Generator().manual_seed(1), spec)
    assert torch.equal(out, again)
    changed = out != mel
    assert changed.any(dim=(1, 2)).sum() >= 4                        # most utterances got a mask
    for i in range(mel.shape[0]):
        mean = mel[i].mean()
        assert torch.allclose(out[i][changed[i]], mean.expand(int(changed[i].sum())))
        full_bands = changed[i].all(dim=0).sum()                      # masked across all frames
        full_frames = changed[i].all(dim=1).sum()                     # masked across all bands
        assert full_bands <= 2 * 4 and full_frames <= 2 * 10


def test_spec_augment_off_is_identity_and_shape_is_checked():
    mel = torch.rand(3, 50, N_MELS)
    off = {k: dataclasses.replace(e, p=0.0) for k, e in A.AUGMENT_SPEC.items()}
    assert torch.equal(A.spec_augment(mel, torch.Generator().manual_seed(0), off), mel)
    with pytest.raises(ValueError, match="frames"):
        A.spec_augment(torch.rand(3, 50, 40))


# --- documentation ---------------------------------------------------------------------------------------
def test_describe_augmentation_lists_every_effect():
    table = A.describe_augmentation()
    rows = table.splitlines()
    assert len(rows) == len(A.AUGMENT_SPEC) + 2
    for name, effect in A.AUGMENT_SPEC.items():
        row = next(r for r in rows if r.startswith(f"| {name} |"))
        assert f"| {effect.p:g} |" in row


def _vowel(f0: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A buzzy vowel: a pulse train at f0 through two formant resonances, with a little noise."""
    from scipy.signal import lfilter
    n = int(seconds * SAMPLE_RATE)
    x = np.zeros(n)
    x[::int(round(SAMPLE_RATE / f0))] = 1.0
    for fc, bw in ((700.0, 90.0), (1200.0, 110.0)):
        r = np.exp(-np.pi * bw / SAMPLE_RATE)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * fc / SAMPLE_RATE), r * r], x)
    return (x / np.abs(x).max() * 0.3 + rng.normal(0, 1e-4, n)).astype(np.float32)


def _pitch(x: np.ndarray) -> float:
    r = np.correlate(x, x, "full")[x.size - 1:]
    lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    return SAMPLE_RATE / (lo + int(np.argmax(r[lo:hi])))


def test_vocoder_keeps_timing_and_level_and_moves_the_pitch():
    rng = np.random.default_rng(0)
    silence = rng.normal(0, 1e-4, SAMPLE_RATE).astype(np.float32)
    x = np.concatenate([silence, _vowel(120.0, 0.5, rng), silence])          # the vowel at 1.0-1.5 s
    for scale in (1.0, 1.25):
        y = A.lpc_vocode(x, np.random.default_rng(1), f0_scale=scale, breathiness=0.0)
        assert y.shape == x.shape and y.dtype == np.float32
        assert abs(A.rms(y) / A.rms(x) - 1) < 1e-3
        env = np.sqrt(np.mean(y[:y.size // 160 * 160].reshape(-1, 160) ** 2, 1))   # 10 ms frames
        loud = np.flatnonzero(env > 0.1 * env.max()) * 0.01
        assert 0.98 <= loud.min() and loud.max() <= 1.52                       # where the vowel was, and only there
        mid = y[int(1.1 * SAMPLE_RATE):int(1.4 * SAMPLE_RATE)]
        assert _pitch(mid) == pytest.approx(120.0 * scale, rel=0.05)
    assert not np.allclose(A.lpc_vocode(x, np.random.default_rng(1)), x, atol=1e-2)    # another signal

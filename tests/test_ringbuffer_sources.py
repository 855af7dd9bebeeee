"""Ring buffer, microphone source (driven through a fake PortAudio stream) and file source, on real signals."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from math import gcd

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from spotter.audio import iter_audio, load_audio
from spotter.config import SAMPLE_RATE, STEP_SAMPLES
from spotter.errors import SpotterError
from spotter.ringbuffer import RingBuffer
from spotter.sources import (AudioSource, FileSource, MicSource, describe_devices, list_input_devices,
                             resolve_device)

SPEECH_TEXT = "Il y a une fuite de gaz et une personne a fait un malaise"
FAKE_DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC3246 Analog", "channels": 2, "default_samplerate": 48000.0,
     "default": False},
    {"index": 3, "name": "USB Headset Mic", "channels": 1, "default_samplerate": 44100.0, "default": True},
    {"index": 5, "name": "Webcam C920 Mic", "channels": 2, "default_samplerate": 32000.0, "default": False},
]


# --- real signals ----------------------------------------------------------------------------------
def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, sr: int, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).uniform(-1, 1, int(seconds * sr))).astype(np.float32)


def offline_resample(x: np.ndarray, sr: int) -> np.ndarray:
    """What the runtime's streaming resampler (libsoxr, StreamResampler) gives for the whole signal at once."""
    if sr == SAMPLE_RATE:
        return x.astype(np.float64)
    import soxr
    y = soxr.resample(x.astype(np.float32), sr, SAMPLE_RATE, quality="HQ").astype(np.float64)
    n = -((-len(x) * SAMPLE_RATE) // sr)
    return y[:n] if len(y) >= n else np.concatenate([y, np.zeros(n - len(y))])


@pytest.fixture(scope="module")
def speech_path(tmp_path_factory) -> str:
    """espeak-ng French speech at 22050 Hz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "fr", "-w", str(path), SPEECH_TEXT], check=True, capture_output=True)
    return str(path)


@pytest.fixture(scope="module")
def speech_44k(speech_path) -> np.ndarray:
    """The same speech as a 44.1 kHz microphone would deliver it, with room noise."""
    if shutil.which("sox") is None:
        pytest.skip("sox not installed")
    out = speech_path.replace(".wav", "_44k.wav")
    subprocess.run(["sox", speech_path, "-r", "44100", out], check=True, capture_output=True)
    x = sf.read(out, dtype="float32")[0]
    return (x + noise(len(x) / 44100, 44100, amp=0.01, seed=3)[:len(x)]).astype(np.float32)


# --- ring buffer -----------------------------------------------------------------------------------
def test_ring_passes_samples_in_order_across_wraparound():
    x = noise(2.0, SAMPLE_RATE)
    ring = RingBuffer(1000)
    rng = np.random.default_rng(0)
    got, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 700))
        ring.write(x[i:i + n])
        i += n
        while ring.available >= 300:
            got.append(ring.read(300, timeout=0))
    ring.close()
    tail = ring.read(300, timeout=0)              # after close: whatever is left, then None
    if tail is not None:
        got.append(tail)
    assert ring.read(300, timeout=0) is None
    np.testing.assert_array_equal(np.concatenate(got), x)
    assert ring.total_written == ring.total_read == len(x)
    assert ring.overrun_samples == ring.overrun_events == 0


def test_ring_overrun_keeps_newest_and_counts_losses():
    x = tone(440, 0.25, SAMPLE_RATE)          # 4000 samples
    ring = RingBuffer(1000)
    for block in np.split(x, 8):              # 500-sample writes, nobody reading
        ring.write(block)
    assert ring.overrun_samples == 3000
    assert ring.overrun_events == 6           # writes 3..8 each overwrote unread samples
    out = np.empty(1000, np.float32)
    assert ring.read_into(out, timeout=0) == 1000
    assert ring.last_read_pos == 3000
    np.testing.assert_array_equal(out, x[3000:])
    assert ring.total_written == ring.total_read == 4000


def test_ring_write_longer_than_capacity():
    x = noise(0.2, SAMPLE_RATE)
    ring = RingBuffer(777)
    ring.write(x)
    assert ring.overrun_samples == len(x) - 777 and ring.overrun_events == 1
    np.testing.assert_array_equal(ring.read(777, timeout=0), x[-777:])


def test_ring_concurrent_reads_match_stream_positions_even_with_overruns():
    """Producer thread writes speech-like noise; every block read equals the stream at its reported position."""
    x = noise(4.0, SAMPLE_RATE, seed=7)
    ring = RingBuffer(2048)
    rng = np.random.default_rng(1)
    sizes = rng.integers(64, 1024, 1000)

    def produce():
        i = 0
        for n in sizes:
            if i >= len(x):
                break
            ring.write(x[i:i + n])
            i += n
        ring.close()

    producer = threading.Thread(target=produce)
    producer.start()
    out = np.empty(512, np.float32)
    checked = 0
    while True:
        got = ring.read_into(out, timeout=5)
        if got == 0:
            break
        pos = ring.last_read_pos
        np.testing.assert_array_equal(out[:got], x[pos:pos + got])
        checked += got
    producer.join()
    assert checked + ring.overrun_samples == len(x)
    assert ring.total_read == len(x)


def test_ring_read_times_out_and_close_wakes_reader():
    ring = RingBuffer(100)
    assert ring.read(10, timeout=0.01) is None
    result = {}
    reader = threading.Thread(target=lambda: result.setdefault("r", ring.read(10)))   # no timeout: blocks
    reader.start()
    ring.write(tone(100, 0.0003, SAMPLE_RATE)[:3])
    ring.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert len(result["r"]) == 3                  # the rest is drained after close
    assert ring.read(10) is None


# --- fake PortAudio stream ------------------------------------------------------------------------
class FakeFlags:
    def __init__(self, overflow: bool):
        self.input_overflow = overflow

    def __bool__(self):
        return self.input_overflow


def fake_stream(signal: np.ndarray, block: int = 512, overflow_every: int = 0, pace_s: float = 0.0,
                loop: bool = False):
    """A stand-in for sounddevice.InputStream that plays `signal` ((n,) or (n, channels)) through the callback
    from its own thread."""
    signal = signal if signal.ndim == 2 else signal[:, None]

    class FakeInputStream:
        instances: list = []

        def __init__(self, *, device, samplerate, channels, dtype, callback, finished_callback=None, **_):
            assert channels == signal.shape[1] and dtype == "float32"
            self.device, self.samplerate = device, samplerate
            self.callback, self.finished_callback = callback, finished_callback
            self.indata = np.zeros((block, channels), np.float32)   # PortAudio reuses its buffer
            self.done = threading.Event()
            self._stop = threading.Event()
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.closed = False
            FakeInputStream.instances.append(self)

        def _run(self):
            i, k = 0, 0
            while not self._stop.is_set():
                if i + block > len(signal):
                    if not loop:
                        break
                    i = 0
                self.indata[:] = signal[i:i + block]
                k += 1
                self.callback(self.indata, block, None, FakeFlags(bool(overflow_every) and k % overflow_every == 0))
                self.indata[:] = np.nan      # the buffer is garbage after the callback returns
                i += block
                if pace_s:
                    time.sleep(pace_s)
            self.done.set()

        def start(self):
            self.thread.start()

        def stop(self):
            self._stop.set()
            self.thread.join()
            if self.finished_callback:
                self.finished_callback()

        def close(self):
            self.closed = True

    return FakeInputStream


# --- microphone ----------------------------------------------------------------------------------
def test_mic_delivers_speech_intact_at_16k(speech_44k):
    factory = fake_stream(speech_44k, block=441)
    mic = MicSource(devices=FAKE_DEVICES, stream_factory=factory)
    assert (mic.name, mic.sample_rate) == ("USB Headset Mic", 44100)
    usable = len(speech_44k) // 441 * 441
    expected = offline_resample(speech_44k[:usable], 44100)
    n_steps = (len(expected) - 1280) // STEP_SAMPLES      # libsoxr HQ holds back 150-500 samples (blocks of 441)
    with mic:
        steps = [mic.read_step() for _ in range(n_steps)]
    stream = factory.instances[0]
    assert stream.device == 3 and stream.samplerate == 44100
    assert not stream.thread.is_alive() and stream.closed
    got = np.concatenate(steps)
    assert all(len(s) == STEP_SAMPLES and s.dtype == np.float32 for s in steps)
    assert np.abs(got - expected[:len(got)]).max() < 1e-4
    assert mic.stats.to_dict() == {"device_overflows": 0, "ring_overruns": 0, "ring_lost_samples": 0,
                                   "nonfinite": 0, "clipped": 0}
    assert mic.position_s == pytest.approx(len(got) / SAMPLE_RATE)
    left = 0                                                    # stopped: what the resampler still held, then the end
    while mic.read_step() is not None:
        left += 1
    assert left <= 1


def test_each_channel_of_one_device_is_a_line_of_its_own(speech_44k):
    """A 2-channel device opened once: each line delivers its own channel, intact, at 16 kHz."""
    t = np.arange(len(speech_44k)) / 44100
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    factory = fake_stream(np.stack([speech_44k, tone], axis=1), block=441)
    devices = [{**d, "channels": 2} for d in FAKE_DEVICES]
    mic = MicSource(devices=devices, stream_factory=factory, channels=2)
    lines = mic.lines()
    assert [ln.name for ln in lines] == ["USB Headset Mic, channel 1", "USB Headset Mic, channel 2"]
    usable = len(speech_44k) // 441 * 441
    n_steps = (usable * SAMPLE_RATE // 44100 - 1280) // STEP_SAMPLES
    for ln in lines:
        ln.start()
    got = [[], []]
    for _ in range(n_steps):
        for c, ln in enumerate(lines):
            got[c].append(ln.read_step())
    lines[1].stop()                                             # stopping a line stops the device: every line ends
    assert len(factory.instances) == 1 and factory.instances[0].closed
    for c, x in enumerate((speech_44k, tone)):
        y = np.concatenate(got[c])
        assert np.abs(y - offline_resample(x[:usable], 44100)[:len(y)]).max() < 1e-4
        assert lines[c].position_s == pytest.approx(len(y) / SAMPLE_RATE)
        assert lines[c].stats.ring_overruns == 0
    for ln in lines:
        while ln.read_step() is not None:
            pass


def test_a_device_refuses_more_channels_than_it_has():
    with pytest.raises(SpotterError, match=r"cannot capture 3 channels \(it has 2\)"):
        MicSource(devices=[{**d, "channels": 2} for d in FAKE_DEVICES], stream_factory=fake_stream(np.zeros(10)),
                  channels=3)


def test_mic_counts_overflow_flags(speech_44k):
    n_blocks = len(speech_44k) // 441
    factory = fake_stream(speech_44k, block=441, overflow_every=5)
    with MicSource(devices=FAKE_DEVICES, stream_factory=factory) as mic:
        factory.instances[0].done.wait(30)                     # all blocks delivered
        assert mic.stats.device_overflows == n_blocks // 5
        assert mic.read_step() is not None


def test_mic_counts_ring_overruns_when_consumer_stalls(speech_44k):
    factory = fake_stream(speech_44k, block=441)
    mic = MicSource(devices=FAKE_DEVICES, stream_factory=factory, ring_seconds=0.5)
    cap = mic.ring.capacity
    mic.start()
    factory.instances[0].done.wait(30)                         # consumer stalled during the whole stream
    delivered = len(speech_44k) // 441 * 441
    stats = mic.stats
    assert stats.ring_overruns > 0
    assert stats.ring_lost_samples == delivered - cap
    # what survives is the newest half second, resampled as if the stream started there
    expected = offline_resample(speech_44k[delivered - cap:delivered], 44100)
    got = np.concatenate([mic.read_step() for _ in range(4)])
    assert np.abs(got - expected[:len(got)]).max() < 1e-4
    mic.stop()
    assert not factory.instances[0].thread.is_alive()


def test_mic_stop_from_another_thread_wakes_blocked_reader():
    sig = tone(1000, 1.0, 48000)
    factory = fake_stream(sig, block=480, pace_s=0.002, loop=True)      # a live, never-ending stream
    mic = MicSource(device="hda", devices=FAKE_DEVICES, stream_factory=factory)
    assert mic.sample_rate == 48000
    mic.start()
    results = []

    def consume():
        while (step := mic.read_step()) is not None:
            results.append(step)

    consumer = threading.Thread(target=consume)
    consumer.start()
    while len(results) < 3:
        time.sleep(0.01)
    mic.stop()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert not factory.instances[0].thread.is_alive()
    got = np.concatenate(results[:3])
    expected = offline_resample(sig, 48000)[:len(got)]                 # the tone survives the trip
    assert np.abs(got - expected).max() < 1e-4
    mic.stop()                                                          # idempotent


def test_mic_nan_samples_are_zeroed_and_counted():
    sig = tone(1000, 0.5, 32000)
    sig[[10, 2000, 9000]] = np.nan
    factory = fake_stream(sig, block=320)
    with MicSource(device=5, devices=FAKE_DEVICES, stream_factory=factory) as mic:
        steps = [mic.read_step() for _ in range(5)]
    assert all(np.isfinite(s).all() for s in steps)
    assert mic.stats.nonfinite == 3


def test_mic_reports_stalled_device():
    factory = fake_stream(tone(1000, 0.01, 44100), block=441)          # delivers 10 ms then nothing
    mic = MicSource(devices=FAKE_DEVICES, stream_factory=factory, read_timeout_s=0.05)
    with mic, pytest.raises(SpotterError, match="no audio for"):
        mic.read_step()


def test_device_selection_by_index_name_and_default():
    assert resolve_device(None, FAKE_DEVICES)["index"] == 3
    assert resolve_device(5, FAKE_DEVICES)["name"] == "Webcam C920 Mic"
    assert resolve_device("5", FAKE_DEVICES)["index"] == 5
    assert resolve_device("webcam", FAKE_DEVICES)["index"] == 5
    assert resolve_device("USB Headset Mic", FAKE_DEVICES)["index"] == 3
    with pytest.raises(SpotterError, match=r"input device 9 not found \(available: \[0\]"):
        resolve_device(9, FAKE_DEVICES)
    with pytest.raises(SpotterError, match="'casque' not found"):
        resolve_device("casque", FAKE_DEVICES)
    with pytest.raises(SpotterError, match="ambiguous"):
        resolve_device("mic", FAKE_DEVICES)
    with pytest.raises(SpotterError, match="^no input device found$"):
        resolve_device(None, [])


def test_real_devices_or_clear_error():
    """On a machine without audio input (CI, this container) both entry points say so in one line."""
    devices = list_input_devices()
    text = describe_devices()
    if devices:
        assert all(d["channels"] > 0 for d in devices)
        assert devices[0]["name"] in text
    else:
        assert "no input device" in text
        with pytest.raises(SpotterError, match="no input device found"):
            MicSource()


def test_sources_share_the_interface(tmp_path):
    sf.write(tmp_path / "t.wav", tone(1000, 0.1, 16000), 16000)
    assert issubclass(MicSource, AudioSource) and issubclass(FileSource, AudioSource)
    with FileSource(tmp_path / "t.wav") as src:
        assert src.name == "t.wav" and src.sample_rate == 16000
        assert src.read_step() is not None


# --- file source ---------------------------------------------------------------------------------
def test_file_source_equals_whole_file(speech_path):
    ref = load_audio(speech_path)
    with FileSource(speech_path) as src:
        assert src.sample_rate == 22050
        steps = []
        while (s := src.read_step()) is not None:
            steps.append(s)
    assert all(len(s) == STEP_SAMPLES for s in steps[:-1]) and 0 < len(steps[-1]) <= STEP_SAMPLES
    np.testing.assert_array_equal(np.concatenate(steps), ref)
    assert src.position_s == pytest.approx(len(ref) / SAMPLE_RATE)


def test_file_source_odd_step_sizes(speech_path):
    ref = load_audio(speech_path)
    with FileSource(speech_path) as src:
        got = []
        for n in [1, 1000, 4097, 160] * 100:
            s = src.read_step(n)
            if s is None:
                break
            got.append(s)
    np.testing.assert_array_equal(np.concatenate(got), ref)


def test_file_source_seek(speech_path):
    with FileSource(speech_path) as src:
        src.read_step()
        src.seek(1.0)
        assert src.position_s == pytest.approx(1.0)
        step = src.read_step()
        expected = next(iter_audio(speech_path, STEP_SAMPLES, start_s=1.0))
        np.testing.assert_array_equal(step, expected)
        assert src.position_s == pytest.approx(1.0 + STEP_SAMPLES / SAMPLE_RATE)
        src.seek(1e6)                                   # clamped to the end
        assert src.read_step() is None
        src.seek(0)                                     # replay after the end
        np.testing.assert_array_equal(src.read_step(), load_audio(speech_path)[:STEP_SAMPLES])


def test_file_source_pause_resume_and_stop_from_another_thread(speech_path):
    ref = load_audio(speech_path)
    src = FileSource(speech_path, realtime=True, speed=20.0)
    src.start()
    first = src.read_step()
    src.pause()
    box = []
    consumer = threading.Thread(target=lambda: box.append(src.read_step()))
    consumer.start()
    consumer.join(timeout=0.2)
    assert consumer.is_alive() and not box              # paused: the consumer waits
    src.resume()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    np.testing.assert_array_equal(np.concatenate([first, box[0]]), ref[:2 * STEP_SAMPLES])
    # a seek while the consumer waits for the clock drops the stale step
    src.set_pacing(realtime=True, speed=0.05)           # 1.6 s per step: the consumer will be waiting
    box.clear()
    consumer = threading.Thread(target=lambda: box.append(src.read_step()))
    consumer.start()
    time.sleep(0.05)
    src.seek(0.5)
    src.set_pacing(realtime=False)
    consumer.join(timeout=10)
    np.testing.assert_array_equal(box[0], next(iter_audio(speech_path, STEP_SAMPLES, start_s=0.5)))
    # stop wakes a paused consumer, which sees the end of the stream
    src.pause()
    box.clear()
    consumer = threading.Thread(target=lambda: box.append(src.read_step()))
    consumer.start()
    src.stop()
    consumer.join(timeout=10)
    assert not consumer.is_alive() and box == [None]


def test_file_source_realtime_never_runs_ahead_of_the_clock(speech_path):
    speed = 8.0
    with FileSource(speech_path, realtime=True, speed=speed) as src:
        t0 = time.monotonic()
        got = []
        while (s := src.read_step()) is not None:
            got.append(s)
        elapsed = time.monotonic() - t0
    audio_s = sum(map(len, got)) / SAMPLE_RATE
    assert elapsed >= audio_s / speed * 0.95          # lower bound only: pacing may be late, never early
    np.testing.assert_array_equal(np.concatenate(got), load_audio(speech_path))


def test_file_source_rejects_bad_file_at_construction(tmp_path):
    (tmp_path / "notes.wav").write_text("pas de son ici\n")
    with pytest.raises(SpotterError, match=r"notes\.wav: not an audio file"):
        FileSource(tmp_path / "notes.wav")

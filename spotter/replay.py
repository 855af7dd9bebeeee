"""Offline replay of one audio file through a KeywordSpotter (`spotter replay`, `spotter scan`, the benchmark's
batch-replay throughput): events as they are decided, the call's suggestion, and warnings about the input."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import config


@dataclass
class FileResult:
    duration_s: float
    events: list
    suggestion: object
    warnings: list = field(default_factory=list)


OFFLINE_CHUNK_STEPS = 250          # 20 s of audio per offline graph call in batch replay


def run_file(spotter, path, realtime: bool = False, speed: float = 1.0, on_event=None) -> FileResult:
    """Run one file through the spotter; `on_event(event)` is called as soon as each event is decided (and
    logged by the spotter's sinks). SpotterError if the file is unusable, also when that shows only at its end
    (all samples NaN/inf, data shorter than announced); input problems that still let it be heard are warnings."""
    from .audio import AudioStats, assess_input, iter_audio, open_audio
    info = open_audio(path)
    spotter.reset()
    stats = AudioStats()
    events = []

    def take(new) -> None:
        for e in new:
            events.append(e)
            if on_event is not None:
                on_event(e)

    if realtime:
        from .sources import FileSource
        with FileSource(path, realtime=True, speed=speed, stats=stats) as src:
            while (chunk := src.read_step(config.STEP_SAMPLES)) is not None:
                take(spotter.process(chunk).events)
    elif getattr(spotter, "offline_capable", False):
        # batch: the fully convolutional path, OFFLINE_CHUNK_STEPS steps per graph call, streamed from the file
        # (memory stays flat: one chunk of audio and mel at a time; the 68-frame overlap is the stream's state)
        for block in iter_audio(path, block_samples=OFFLINE_CHUNK_STEPS * config.STEP_SAMPLES, stats=stats):
            take(spotter.process_offline(block).events)
    else:
        for block in iter_audio(path, stats=stats):
            take(spotter.process(block).events)
    take(spotter.flush())
    warnings = assess_input(info, stats)
    return FileResult(info.duration_s, events, spotter.suggestion(), warnings)


def replay_file(spotter, path, realtime: bool = False, speed: float = 1.0):
    """Run one file through the spotter; returns (duration_s, events, suggestion)."""
    r = run_file(spotter, path, realtime=realtime, speed=speed)
    return r.duration_s, r.events, r.suggestion

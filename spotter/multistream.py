"""Many lines, one process: one batched graph call per 80 ms tick for N concurrent streams (issue 13, item 2).

    from spotter.multistream import MultiSpotter
    from spotter.onnxmodel import load_onnx_model
    ms = MultiSpotter(load_onnx_model("models/default.onnx"), ["line-1", "line-2"], log=EventLog(path))
    outputs = ms.step(frames)      # frames: (N, 1280) float32 at 16 kHz, one row per line, in `lines` order
    # or ms.process({"line-1": samples, ...}) with any number of samples per line (a telephony gateway's frames)

Each line keeps its own state (log-mel, mel window, embeddings, decisions, call evidence / suggested service) in a
KeywordSpotter; only the network evaluation is shared: the N windows go through the ONNX graph as one batch, which
costs far less per stream than N single calls. Events go to the log with the line id (`line` field) before
step() returns them. Posteriors equal the single-stream KeywordSpotter's (tests/test_multistream.py).
"""
from __future__ import annotations

import functools

import numpy as np

from . import config
from .detector import KeywordSpotter, StepOutput
from .errors import SpotterError
from .frontend import push_streams


class MultiSpotter:
    def __init__(self, model, lines, log=None, sinks=(), detector: config.DetectorConfig | None = None):
        if not hasattr(model, "new_stream"):
            raise SpotterError("MultiSpotter runs the exported ONNX model (spotter export), not a torch artifact")
        self.model = model
        self.lines = [str(x) for x in lines]
        if len(set(self.lines)) != len(self.lines) or not self.lines:
            raise SpotterError(f"MultiSpotter: line ids must be distinct and at least one, got {self.lines}")
        self.spotters: dict[str, KeywordSpotter] = {}
        for line in self.lines:
            line_sinks = [functools.partial(s, line=line) for s in sinks]
            if log is not None:
                line_sinks.insert(0, functools.partial(log.write, source=f"line:{line}", line=line))
            self.spotters[line] = KeywordSpotter(model, sinks=line_sinks, detector=detector)
        self._pending = {line: np.zeros(0, np.float32) for line in self.lines}
        self._batched = None        # (the step graph's batched cache outputs, the per-line lists made from them)

    def step(self, frames: np.ndarray) -> dict[str, StepOutput]:
        """One 80 ms tick: frames (N, 1280), row i for lines[i] -> {line: StepOutput of that step}."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.shape != (len(self.lines), config.STEP_SAMPLES):
            raise SpotterError(f"MultiSpotter.step: expected frames of shape ({len(self.lines)}, "
                               f"{config.STEP_SAMPLES}), got {frames.shape}")
        streams = [self.spotters[line].stream for line in self.lines]
        new = push_streams([s.mel_stream for s in streams], frames)      # (N, 8, 32)
        for s, m in zip(streams, new):
            s.window = np.concatenate([s.window[len(m):], m])
        if all(s.caches is not None for s in streams):          # the incremental graph, batched
            if self._batched is not None and all(s.caches is g for s, g in zip(streams, self._batched[1])):
                batched = self._batched[0]                      # no line was reset: last tick's outputs as they are
            else:
                batched = [np.stack(c) for c in zip(*(s.caches for s in streams))]
            post, emb, caches = self.model.run_step(new, np.stack([s.emb for s in streams]), batched)
            for i, s in enumerate(streams):
                s.caches = [c[i] for c in caches]               # views: each line still owns its state
            self._batched = (caches, [s.caches for s in streams])
        else:
            post, emb = self.model.run(np.stack([s.window for s in streams]), np.stack([s.emb for s in streams]))
            post = post[:, -1]
        out = {}
        for i, (line, s) in enumerate(zip(self.lines, streams)):
            s.emb = emb[i]
            sp = self.spotters[line]
            sp.step += 1
            p = post[i]
            events = sp._publish(sp.decider.update(p, sp.step))
            out[line] = StepOutput(new[i], p[None], events)
        return out

    def process(self, samples: dict) -> dict[str, list]:
        """Any number of new samples per line (missing lines: none); runs every tick all lines have audio for and
        returns {line: events}. Lines that run ahead wait (buffered) for the others."""
        for line, x in samples.items():
            if line not in self._pending:
                raise SpotterError(f"MultiSpotter.process: unknown line {line!r}")
            self._pending[line] = np.concatenate([self._pending[line], np.asarray(x, np.float32).reshape(-1)])
        ticks = min(len(p) for p in self._pending.values()) // config.STEP_SAMPLES
        events: dict[str, list] = {line: [] for line in self.lines}
        for t in range(ticks):
            a = t * config.STEP_SAMPLES
            frames = np.stack([self._pending[line][a:a + config.STEP_SAMPLES] for line in self.lines])
            for line, o in self.step(frames).items():
                events[line].extend(o.events)
        used = ticks * config.STEP_SAMPLES
        self._pending = {line: p[used:] for line, p in self._pending.items()}
        return events

    def suggestion(self, line: str):
        return self.spotters[line].suggestion()

    def new_call(self, line: str) -> None:
        self.spotters[line].new_call()

    def flush(self) -> dict[str, list]:
        """End of all streams: every line's last decisions."""
        return {line: sp.flush() for line, sp in self.spotters.items()}

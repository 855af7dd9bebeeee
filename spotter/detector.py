"""Streaming detection: audio -> log-mel -> embeddings -> head posteriors -> keyword events -> service suggestion.

`KeywordSpotter` owns all streaming state. Each new 80 ms step of audio costs one MelStream push (8 mel frames),
one incremental speech_embedding update (StreamingEmbedder: only the new frames are convolved) and one head
evaluation over the newest 16 embeddings; nothing is recomputed over the window.

Decision rule per keyword k (thresholds from the model artifact):
  s_k(t) = mean of the last `smoothing_steps` posteriors of k
  while s_k is above its threshold and k is the top keyword, track the peak; the event is emitted when s_k
  falls back (one step after the peak) or after `max_hold_steps` above threshold, whichever comes first.
  A keyword cannot fire again within `refractory_s` of its previous event.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from . import config

STEP_S = config.STEP_S                                   # 0.08 s
DEFAULT_KEYWORD_DURATION_S = 0.6
KEYWORD_END_OFFSET_S = 0.25                              # keyword end ~ this before the window end (training placement)


@dataclass
class Event:
    keyword: str
    service: str
    score: float
    start_s: float            # estimated keyword start, seconds of stream audio
    end_s: float              # estimated keyword end
    detected_s: float         # stream time at which the event was decided
    wall_time: float          # time.time() when decided
    window_end_s: float | None = None   # stream time at which the head window that peaked ends (the last audio
    #                                     it saw); set by KeywordSpotter, None for events built offline

    def to_dict(self) -> dict:
        """The record that is logged and printed (--json); window_end_s, a display detail, is not part of it."""
        d = asdict(self)
        del d["window_end_s"]
        for k in ("score", "start_s", "end_s", "detected_s"):
            d[k] = round(d[k], 3)
        return d


@dataclass
class StepOutput:
    """What one KeywordSpotter.process() call produced, for the n 80 ms steps its samples completed (n may be 0)."""
    mel: np.ndarray           # (8 n, 32) the new log-mel frames, oldest first
    posteriors: np.ndarray    # (n, 14) head posteriors after each step
    events: list              # Events decided by these steps (already given to the sinks)


@dataclass(frozen=True)
class CallState:
    """A snapshot of the call-level assessment, safe to hand to another thread."""
    suggestion: "Suggestion | None"
    evidence: dict            # service -> summed score


@dataclass
class Suggestion:
    service: str
    name: str
    confidence: float
    evidence: dict            # service -> summed score
    events: list              # supporting events (of the suggested service)


class CallAssessment:
    """Call-level evidence: which service the call belongs to, how confident, which events support it.

    Evidence for a service is the sum of its events' scores. Confidence is the suggested service's share of all
    evidence, discounted while little evidence has been seen: share * (1 - exp(-evidence / EVIDENCE_SCALE)).
    """

    EVIDENCE_SCALE = 1.0

    def __init__(self, min_evidence: float = 0.5):
        self.min_evidence = min_evidence
        self.reset()

    def reset(self) -> None:
        self.events: list[Event] = []

    def add(self, event: Event) -> None:
        self.events.append(event)

    def evidence(self) -> dict:
        ev = {s: 0.0 for s in config.SERVICES}
        for e in self.events:
            if e.service in ev:            # a keyword set without services (wake words) gives no evidence
                ev[e.service] += e.score
        return ev

    def state(self) -> CallState:
        return CallState(self.suggestion(), self.evidence())

    def suggestion(self) -> Suggestion | None:
        ev = self.evidence()
        total = sum(ev.values())
        if not ev:
            return None
        best = max(ev, key=ev.get)
        if ev[best] < self.min_evidence or total <= 0:
            return None
        share = ev[best] / total
        confidence = share * (1.0 - np.exp(-ev[best] / self.EVIDENCE_SCALE))
        support = [e for e in self.events if e.service == best]
        return Suggestion(best, config.SERVICES[best], float(confidence), ev, support)


@dataclass
class _Track:
    """Per-keyword decision state."""
    active_steps: int = 0
    peak: float = 0.0
    peak_step: int = -1
    last_event_step: int = -10 ** 9


@dataclass
class Decision:
    keyword: str
    score: float
    peak_step: int            # step (1-based count of 80 ms steps) at which the smoothed score peaked
    step: int = -1            # step at which the decision was taken (the live Event.detected_s / STEP_S)


class Decider:
    """Posteriors -> keyword decisions. Pure streaming logic, shared by the live spotter and calibration."""

    def __init__(self, cfg: config.DetectorConfig):
        self.cfg = cfg
        self.kw_cols = [config.LABELS.index(k) for k in config.KEYWORDS]
        self.thresholds = np.array([cfg.thresholds[k] for k in config.KEYWORDS], dtype=np.float32)
        self.refractory_steps = int(round(cfg.refractory_s / STEP_S))
        self.reset()

    def reset(self) -> None:
        self._recent = deque(maxlen=self.cfg.smoothing_steps)
        self.tracks = [_Track() for _ in config.KEYWORDS]

    def update(self, posteriors: np.ndarray, step: int) -> list[Decision]:
        """Feed the head posteriors (14,) of `step`; returns the decisions taken at this step (update_many's rule
        for one row: a step with no score at or above its threshold and no open track changes nothing)."""
        self._recent.append(np.asarray(posteriors, np.float32)[self.kw_cols])
        scores = np.mean(self._recent, axis=0)
        if (scores >= self.thresholds).any() or any(tr.active_steps for tr in self.tracks):
            return self.update_scores(scores, step)
        return []

    def update_many(self, posteriors: np.ndarray, first_step: int) -> list[Decision]:
        """Feed the posteriors (k, 14) of k consecutive steps, the first being `first_step`; returns the decisions
        taken at them, each with its own step. The same arithmetic as k update() calls, so the live (step by step)
        and batch (chunk) paths decide alike; only steps that can change the state are visited: a score at or
        above its threshold, or the step after one (where an open track is closed)."""
        kw = np.asarray(posteriors, np.float32)[:, self.kw_cols]
        if len(kw) == 0:
            return []
        smooth = self._smooth(kw)
        above = (smooth >= self.thresholds).any(axis=1)
        visit = above.copy()
        visit[1:] |= above[:-1]
        visit[0] |= any(tr.active_steps for tr in self.tracks)
        out = []
        for j in np.flatnonzero(visit):
            out += self.update_scores(smooth[j], first_step + int(j))
        return out

    def _smooth(self, kw: np.ndarray) -> np.ndarray:
        """Moving average over the last smoothing_steps rows (fewer after a reset) of every new row, summed row by
        row in float32 and divided in float64 as np.mean does; keeps the last rows for the next call."""
        s = self.cfg.smoothing_steps
        ext = np.concatenate([np.asarray(self._recent, np.float32).reshape(-1, kw.shape[1]), kw])
        end = np.arange(len(self._recent), len(ext))
        start = np.maximum(0, end - s + 1)
        count = end - start + 1
        acc = ext[start].copy()
        for d in range(1, s):
            sel = count > d
            acc[sel] += ext[start[sel] + d]
        self._recent.extend(kw[-s:])
        return (acc.astype(np.float64) / count[:, None]).astype(np.float32)

    def update_scores(self, scores: np.ndarray, step: int) -> list[Decision]:
        """The decision rule on already smoothed keyword scores (12,) of `step`."""
        top = int(np.argmax(scores - self.thresholds))
        out = []
        for i, tr in enumerate(self.tracks):
            s = float(scores[i])
            if s >= self.thresholds[i] and i == top and step - tr.last_event_step > self.refractory_steps:
                tr.active_steps += 1
                if s > tr.peak:
                    tr.peak, tr.peak_step = s, step
                if tr.active_steps >= self.cfg.max_hold_steps:
                    out.append(self._take(i, step))
            elif tr.active_steps:
                out.append(self._take(i, step))
        return out

    def finish(self, step: int) -> list[Decision]:
        return [self._take(i, step) for i, tr in enumerate(self.tracks) if tr.active_steps]

    def _take(self, i: int, step: int) -> Decision:
        tr = self.tracks[i]
        d = Decision(config.KEYWORDS[i], tr.peak, tr.peak_step, step)
        tr.last_event_step, tr.active_steps, tr.peak, tr.peak_step = step, 0, 0.0, -1
        return d


def decide_sequence(posteriors: np.ndarray, cfg: config.DetectorConfig, first_step: int = 1) -> list[Decision]:
    """Run the decision rule over a whole (steps, 14) posterior sequence (offline calibration/evaluation)."""
    dec = Decider(cfg)
    return dec.update_many(posteriors, first_step) + dec.finish(first_step + len(posteriors))


class _TorchStream:
    """One stream's state for a torch KeywordModel (training installs): MelStream, StreamingEmbedder, the last 16
    embeddings. Same contract as spotter.onnxmodel.OnnxStream: reset(), step(chunk) -> (mel (8, 32), post (14,))."""

    def __init__(self, model):
        import torch
        from .backbone import StreamingEmbedder
        from .features import MelStream
        self.torch = torch
        self.model = model
        self.mel_stream = MelStream()
        self.embedder = StreamingEmbedder(model.backbone)
        with torch.inference_mode():
            self._silence_mel, self._silence_emb = self._silence_state()
        self.reset()

    def _silence_state(self):
        """Mel and embedding buffers as if the stream had been preceded by config.PRIME_STEPS steps of digital
        silence, so that a keyword in the first two seconds of a file can be detected like anywhere else."""
        ms = type(self.mel_stream)()
        frames = self.torch.cat([ms.push(np.zeros(config.STEP_SAMPLES, np.float32))
                                 for _ in range(config.PRIME_STEPS)])
        mel = frames[-config.EMBED_WINDOW:].clone()
        emb = self.model.backbone(mel.unsqueeze(0))
        return mel, emb.repeat(config.HEAD_FRAMES, 1)

    def reset(self) -> None:
        self.mel_stream.reset()
        self.embedder.reset()
        self.embedder.push(self._silence_mel)     # windows now start where the live spotter's always have
        self._emb = self._silence_emb.clone()

    def step(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            new_mel = self.mel_stream.push(chunk)                      # (8, 32)
            emb = self.embedder.push(new_mel)                          # (1, 96): the window ending now
            self._emb = torch.cat([self._emb[1:], emb])
            post = torch.softmax(self.model.head(self._emb.unsqueeze(0)), dim=1)[0].numpy()
        return new_mel.numpy(), post


def stream_for(model):
    """The per-stream state for `model`: an exported OnnxKeywordModel (no torch) or a torch KeywordModel."""
    return model.new_stream() if hasattr(model, "new_stream") else _TorchStream(model)


class KeywordSpotter:
    """Incremental keyword spotting on a 16 kHz float32 stream.

    process(samples) accepts any number of samples and returns a StepOutput: the mel frames, posteriors and events
    of the steps they completed. `sinks` are called with each event before it is returned (the durable event log
    is one), so nothing is displayed before logged. Two kinds of state: the stream (audio buffers, decisions;
    reset_stream) and the call (the evidence behind the suggested service; new_call). reset() forgets both.

    `model` is the exported ONNX model (spotter.onnxmodel, what the runtime runs: onnxruntime + numpy) or the torch
    KeywordModel (training, evaluation); both give the same posteriors (tests/test_onnx_runtime.py).
    process_offline() runs whole blocks of steps through one graph call (ONNX model; batch replay).
    """

    def __init__(self, model, sinks=(), detector: config.DetectorConfig | None = None):
        self.model = model.eval()
        self.cfg = detector or model.detector
        self.sinks = list(sinks)
        self.labels = list(config.LABELS)
        self.decider = Decider(self.cfg)
        self.durations = dict(model.meta.get("keyword_durations_s", {}))
        self.assessment = CallAssessment(self.cfg.suggestion_min_evidence)
        self.stream = stream_for(model)
        self.reset()

    # -- state -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream and the call (a new file or a new call)."""
        self.reset_stream()
        self.new_call()

    def reset_stream(self) -> None:
        """Forget the stream (stream time restarts at 0, as after PRIME_STEPS of silence); the call goes on."""
        self.stream.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self.decider.reset()
        self.step = 0                      # number of 80 ms steps consumed

    def new_call(self) -> None:
        """Forget the call's evidence (no suggestion until new events); the stream goes on."""
        self.assessment.reset()

    def continue_call(self, previous: "KeywordSpotter") -> None:
        """Take over `previous`'s call evidence (a model swapped mid-call). Neither may be in use by a thread."""
        self.assessment.events = list(previous.assessment.events)

    def call_state(self) -> CallState:
        return self.assessment.state()

    @property
    def stream_time_s(self) -> float:
        return self.step * STEP_S

    # -- streaming ---------------------------------------------------------------------------------
    def process(self, samples: np.ndarray) -> StepOutput:
        """Consume any number of samples; the remainder of the last incomplete step waits for the next call."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n_steps = samples.size // config.STEP_SAMPLES
        mels, posts, events = [], [], []
        for i in range(n_steps):
            mel, post, new = self._step(samples[i * config.STEP_SAMPLES:(i + 1) * config.STEP_SAMPLES])
            mels.append(mel)
            posts.append(post)
            events.extend(new)
        self._pending = samples[n_steps * config.STEP_SAMPLES:].copy()
        return StepOutput(np.concatenate(mels) if mels else np.zeros((0, config.N_MELS), np.float32),
                          np.stack(posts) if posts else np.zeros((0, len(self.labels)), np.float32), events)

    def flush(self) -> list[Event]:
        """End of stream: pad with silence so the last keyword can still be decided; returns those events."""
        tail = -self._pending.size % config.STEP_SAMPLES
        events = self.process(np.zeros(tail + 4 * config.STEP_SAMPLES, dtype=np.float32)).events
        return events + self._publish(self.decider.finish(self.step))

    def _step(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Event]]:
        """One 80 ms step: (its 8 new mel frames, the head posteriors (14,), the events it decided)."""
        new_mel, post = self.stream.step(chunk)
        self.step += 1
        return new_mel, post, self._publish(self.decider.update(post, self.step))

    @property
    def offline_capable(self) -> bool:
        return hasattr(self.stream, "steps")

    def process_offline(self, samples: np.ndarray) -> StepOutput:
        """Like process(), but the steps' posteriors come from one graph call over all of them (the fully
        convolutional path; same posteriors, same decisions). Needs the ONNX model."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n_steps = samples.size // config.STEP_SAMPLES
        used = n_steps * config.STEP_SAMPLES
        mel, posts = self.stream.steps(samples[:used])
        self._pending = samples[used:].copy()
        events = self._publish(self.decider.update_many(posts, self.step + 1))
        self.step += len(posts)
        return StepOutput(mel, posts.astype(np.float32, copy=False), events)

    def _publish(self, decisions: list[Decision]) -> list[Event]:
        events = []
        for d in decisions:
            # The head was trained with the keyword ending ~KEYWORD_END_OFFSET_S before its window's end.
            window_end_s = d.peak_step * STEP_S
            end_s = max(0.0, window_end_s - KEYWORD_END_OFFSET_S)
            start_s = max(0.0, end_s - self.durations.get(d.keyword, DEFAULT_KEYWORD_DURATION_S))
            event = Event(d.keyword, config.KEYWORD_SERVICE.get(d.keyword), d.score, start_s, end_s,
                          d.step * STEP_S, time.time(), window_end_s)
            for sink in self.sinks:
                sink(event)
            self.assessment.add(event)
            events.append(event)
        return events

    def suggestion(self) -> Suggestion | None:
        return self.assessment.suggestion()

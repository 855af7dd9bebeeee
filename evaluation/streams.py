"""Long audio streams with known keyword times, their offline posteriors, and event-level scoring.

Offline posteriors are computed in batch (whole-stream log-mel, all embeddings, all head windows) and are the
same numbers the streaming KeywordSpotter computes step by step (the front end's streaming parity test
guarantees the mel frames agree; the decision rule is the same `Decider`). That makes calibration and threshold
sweeps over hours of audio affordable on 2 cores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spotter import config
from spotter.config import PRIME_S      # digital silence before a stream, as the live spotter assumes at start
from spotter.detector import STEP_S, Decision, decide_sequence

HIT_TOLERANCE_S = 0.8      # a detection decided up to this long after a keyword's end still counts as its hit
GAP_NOISE = 10 ** (-70 / 20)   # pauses between segments carry a -70 dBFS noise floor, not digital silence


@dataclass
class Annotation:
    keyword: str
    start_s: float
    end_s: float


def compose(segments: list[tuple[np.ndarray, str | None]], gap_s: tuple[float, float], rng: np.random.Generator,
            lead_s: float = 0.5) -> tuple[np.ndarray, list[Annotation]]:
    """Join (audio, keyword-or-None) segments with random gaps; returns audio and keyword annotations."""
    parts, notes, t = [np.zeros(int(lead_s * config.SAMPLE_RATE), np.float32)], [], lead_s
    for audio, kw in segments:
        if kw is not None:
            notes.append(Annotation(kw, t, t + len(audio) / config.SAMPLE_RATE))
        parts.append(audio.astype(np.float32))
        t += len(audio) / config.SAMPLE_RATE
        gap = rng.normal(0, GAP_NOISE, int(rng.uniform(*gap_s) * config.SAMPLE_RATE)).astype(np.float32)
        parts.append(gap)
        t += len(gap) / config.SAMPLE_RATE
    return np.concatenate(parts), notes


@torch.inference_mode()
def stream_embeddings(model, audio: np.ndarray, chunk_steps: int = 2000, dtype=np.float32) -> np.ndarray:
    """Embeddings E of a whole stream, as the live spotter computes them: the head window of step j (0-based, the
    state after j + 1 steps of 80 ms) is E[j : j + HEAD_FRAMES], so len(E) = steps + HEAD_FRAMES - 1.

    Like the live spotter, the stream is primed with PRIME_S of digital silence and the mel grid starts
    STREAM_CONTEXT samples before the audio (MelStream's initial context); chunks overlap by exactly what the
    head window needs, so memory stays bounded for hours of audio.
    """
    from spotter.features import log_mel
    x, first, n_steps = primed_stream(audio)
    keep = config.HEAD_FRAMES - 1
    out = []
    for s0 in range(first, n_steps, chunk_steps):
        s1 = min(n_steps, s0 + chunk_steps)
        seg = step_samples(x, s0, s1)
        emb = model.embeddings_from_mel(log_mel(torch.from_numpy(seg)).unsqueeze(0))[0]   # steps s0-15 .. s1-1
        out.append((emb if not out else emb[keep:]).numpy().astype(dtype))
    return np.concatenate(out) if out else np.zeros((0, config.EMBED_DIM), dtype)


def primed_stream(audio: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(x, first, n_steps): the stream as the live spotter sees it, PRIME_S of digital silence and the mel grid's
    STREAM_CONTEXT before the audio; its steps first .. n_steps - 1 are the audio's (the ones before, the priming)."""
    from spotter.features import STREAM_CONTEXT
    step = config.STEP_SAMPLES
    first = int(round(PRIME_S / STEP_S))
    x = np.concatenate([np.zeros(STREAM_CONTEXT + first * step, np.float32), np.asarray(audio, np.float32)])
    return x, first, (len(x) - STREAM_CONTEXT) // step


def step_samples(x: np.ndarray, s0: int, s1: int) -> np.ndarray:
    """The samples of primed_stream's x whose log-mel gives the embeddings of steps s0 - 15 .. s1 - 1.

    The frames after step s (0-based) are 8 (s + 1); the head window is the last 196 of them, which span
    x[step * (s + 1) - LEAD : step * (s + 1) + TAIL] (frame j spans x[160 j : 160 j + 512])."""
    step = config.STEP_SAMPLES
    tail = config.N_FFT - config.HOP_SAMPLES                            # 352
    lead = config.CLIP_SAMPLES - tail                                   # 31360
    return x[step * (s0 + 1) - lead: step * s1 + tail]


@torch.inference_mode()
def head_posteriors(head, emb: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(steps, 14) posteriors of the head over every window of stream_embeddings' output."""
    e = torch.from_numpy(np.asarray(emb, np.float32))
    if len(e) < config.HEAD_FRAMES:
        return np.zeros((0, len(config.LABELS)), np.float32)
    win = e.unfold(0, config.HEAD_FRAMES, 1).permute(0, 2, 1)          # (steps, 16, 96), a view
    return torch.cat([torch.softmax(head(win[i:i + batch]), dim=1) for i in range(0, len(win), batch)]).numpy()


def stream_posteriors(model, audio: np.ndarray, chunk_steps: int = 2000) -> np.ndarray:
    """(steps, 14) head posteriors for a whole stream; row j is what the live spotter computes after its
    (j+1)-th 80 ms step."""
    return head_posteriors(model.head, stream_embeddings(model, audio, chunk_steps))


def decisions_times(decisions: list[Decision]) -> list[tuple[str, float, float]]:
    """(keyword, time_s, score): the time at which each decision is taken (the live Event.detected_s, what the
    operator sees), in stream time of the un-primed audio; the peak step when a decision carries no step."""
    return [(d.keyword, (d.step if d.step >= 0 else d.peak_step) * STEP_S, d.score) for d in decisions]


def score_stream(decisions: list[Decision], notes: list[Annotation], tolerance_s: float = HIT_TOLERANCE_S) -> dict:
    """The one hit rule of calibration, evaluation and the benchmark: a hit is a detection of the right keyword
    decided inside [start, end + tolerance]; one hit per occurrence; everything else is a false alarm."""
    times = decisions_times(decisions)
    matched = match_detections([(kw, t) for kw, t, _ in times], notes, tolerance_s)
    hits, fas = [], []
    for (kw, t, score), i in zip(times, matched):
        if i is None:
            fas.append((kw, t, score))
        else:
            hits.append((kw, t, score, t - notes[i].end_s))
    used = set(i for i in matched if i is not None)
    return {"hits": hits, "false_alarms": fas, "missed": [n for i, n in enumerate(notes) if i not in used]}


def match_detections(detections: list[tuple[str, float]], notes: list[Annotation],
                     tolerance_s: float = HIT_TOLERANCE_S) -> list[int | None]:
    """score_stream's rule for (keyword, decided time) detections in time order: the index of the occurrence each
    one hits, or None for a false alarm (it falls in no unused occurrence's span, or in another keyword's)."""
    used = [False] * len(notes)
    out = []
    for kw, t in detections:
        match = None
        for i, n in enumerate(notes):
            if not used[i] and n.start_s <= t <= n.end_s + tolerance_s:
                match = i
                break
        if match is not None and notes[match].keyword == kw:
            used[match] = True
            out.append(match)
        else:
            out.append(None)
    return out


def detect(model, posteriors: np.ndarray, thresholds: dict) -> list[Decision]:
    cfg = config.DetectorConfig(**{**model.detector.to_dict(), "thresholds": thresholds})
    return decide_sequence(posteriors, cfg)

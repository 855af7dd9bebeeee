"""Real people, heard through Whisper's live rows: does a head on Whisper's encoder, trained on synthetic voices
only, find real people's keywords better than the first stage on the speech embedding?

    spotter train --config training/configs/en_wake.toml --no-folds --set train.probe=false \
        --set work_dir=runs/en --set out=runs/en/en.pt
    python tools/whisper_rows.py --config training/configs/en_wake.toml --sets-from runs/en --work runs/enl \
        --live 4,1 --delays 0,1 --sets val,train,eval_neg
    python tools/whisper_real.py --model runs/en/en.pt --emb-work runs/en --work runs/enl --delays 0,1 --seed 0

The English check of "Another keyword set, and real people" (README), with two heads side by side on the same
streams, negatives and scorer:
- the first stage: --model (its head on the speech embedding, its own smoothing);
- for each delay D of --delays, the recipe's head trained on the Whisper rows of --work/d<D> (tools/whisper_rows.py
  --live W,H: the rows a live stream gets, each read off the window ending at the first H s boundary at least D s
  after the row's audio ends; one encoding of the streams serves every delay), its
  training, mining and calibration as `spotter train`'s (calltrain.train_fold, calltrain.calibrate_head);
  no warped copies, which are copies of the embedding's log-mel.
Streams: every real "alexa" / "computer" clip of --real as a stream of its own (condition `clean`) or cut to its
speech and said between two real English phrases of other people (`context`, verify_eval.in_context), then 1 s of
-70 dBFS floor; negatives: the 151 real speech files (each a stream) and the run's stored held-out synthetic
keyword-free calls (calls_eval_neg of --emb-work and --work/d<D>: the same calls). Scorer: calltrain.evaluate_posteriors,
recall at 0.5 and 1 FA/h on a common threshold swept on the negatives. One JSON line per head and condition to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.whisper_rows import LiveRows, delay_rows         # noqa: E402
from training import calls as C                  # noqa: E402
from training import calltrain as T              # noqa: E402

SR = C.SR


def real_streams(real: Path, speech_dir: Path, condition: str, seed: int):
    """(audio, notes, meta) of every real keyword clip (clean or in context) and every real speech file, as
    training.verify_eval.real_cascade makes them."""
    from evaluation import realeval as R
    from training import verify_eval as V
    clips = R.keyword_recordings(real)
    speech = R.real_speech_files(speech_dir, real)
    phrases = [R.load_clip(f) for f in speech if f.parent.name.endswith("_en")] if condition == "context" else []
    for audio, notes, path in V.real_streams(clips + [(None, f) for f in speech], phrases, None, seed):
        kw = notes[0][0] if notes else None
        yield audio, notes, {"voice": str(path), "keyword": kw, "engine": "real", "channel": condition,
                             "service": None, "split": "real"}


def stream_sets(model, streams, live: LiveRows) -> tuple[T.CallSet, list[T.CallSet]]:
    """The streams as CallSets of the same steps and labels: speech-embedding rows, and Whisper's live rows for
    each of live's delays."""
    emb, whisper = T.CallSet(), [T.CallSet() for _ in live.delays]
    for audio, notes, meta in streams:
        e = C.stream_embeddings(model, audio)
        w = live(model, audio)
        if len(w) != len(e):
            raise SystemExit(f"{meta['voice']}: {len(w)} Whisper rows for {len(e)} embedding rows")
        labels = C.step_labels(len(e) - T.config.HEAD_FRAMES + 1, notes, [(0.0, audio.size / SR)])
        emb.add(e, labels, notes, meta)
        for k, cs in enumerate(whisper):
            cs.add(delay_rows(w, k), labels, notes, meta)
    return emb, whisper


def whisper_head(work: Path, recipe, seed: int, ensemble: int = 1, without: str | None = None):
    """The recipe's head trained and calibrated on a run's Whisper rows (train, val), as head_sweep's folds; with
    ensemble n > 1, n heads from seeds seed .. seed + n - 1, their posteriors averaged (spotter.model.EnsembleHead).
    without: an engine whose calls are left out of training and calibration (a leave-one-engine-out fold).
    Returns (head, thresholds, smoothing, the run's eval_neg set or None)."""
    sets, _ = T.load_callsets(work, extra=False)
    keep = lambda m: m["engine"] != without
    train, val = (sets[n].select(keep) if without else sets[n] for n in ("train", "val"))
    if without and len(train.emb) == len(sets["train"].emb):
        raise SystemExit(f"{work}: no training call is spoken by engine {without!r}")
    from training.whisper_head import train_head
    head, thr, sm = train_head(train, val, recipe, seed, ensemble)
    return head, thr, sm, sets.get("eval_neg")


def score(head, thr, sm, kw: T.CallSet, neg_real: T.CallSet, neg_synth: T.CallSet) -> dict:
    neg = T._concat(neg_synth, neg_real)
    res = T.evaluate_posteriors([T.call_posteriors(head, e) for e in kw.emb],
                                [T.call_posteriors(head, e) for e in neg.emb], kw, neg, thr, sm)
    pick = lambda a: None if a is None else {k: a.get(k) for k in ("recall", "threshold", "per_keyword")}
    return {"at_0.5": pick(res["at_0.5_fa_h"]), "at_1": pick(res["at_1.0_fa_h"]),
            "calibrated": {"recall": res["calibrated"]["recall"], "fa_per_hour": res["calibrated"]["fa_per_hour"]},
            "negative_hours": res["negative_hours"], "smoothing": sm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/en_wake.toml"))
    ap.add_argument("--model", type=Path, required=True, help="the English first stage (spotter train's .pt)")
    ap.add_argument("--emb-work", type=Path, required=True, help="its run (calls_eval_neg.npz)")
    ap.add_argument("--work", type=Path, required=True,
                    help="Whisper live rows of the same run (whisper_rows --live): <work>/d<D> for each delay")
    ap.add_argument("--window", type=float, default=4.0)
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--delays", default="0,1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=int, default=1, help="heads per delay (seeds --seed ..), posteriors averaged")
    ap.add_argument("--conditions", default="clean,context")
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/speech/real_kws_en")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/enl/real.jsonl")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from spotter.model import load_model
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    recipe = load_recipe(args.config, [f"seed={args.seed}"])
    use_recipe_keywords(recipe, None)
    model = load_model(args.model)
    delays = [float(d) for d in args.delays.split(",")]
    neg_e = T.CallSet.load(args.emb_work / "calls_eval_neg.npz")
    heads = []
    for d in delays:
        t0 = time.time()
        work = args.work / f"d{d:g}"
        head, thr, sm, neg_w = whisper_head(work, recipe, args.seed, args.ensemble)
        if len(neg_e.emb) != len(neg_w.emb) or any(len(a) != len(b) for a, b in zip(neg_e.emb, neg_w.emb)):
            raise SystemExit(f"{args.emb_work} and {work}: calls_eval_neg holds other calls")
        heads.append((head, thr, sm, neg_w))
        print(f"Whisper head trained on {work} (seed {args.seed}): smoothing {sm} [{time.time() - t0:.0f} s]",
              flush=True)
    live = LiveRows(args.window, args.hop, delays)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for cond in args.conditions.split(","):
        t = time.time()
        streams = list(real_streams(args.real, recipe.data.speech_dir, cond, args.seed))
        emb, whisper = stream_sets(model, streams, live)
        is_kw = lambda m: bool(m["keyword"])
        rows = {"first stage (speech embedding)": score(
            model.head, model.detector.thresholds, model.detector.smoothing_steps, emb.select(is_kw),
            emb.select(lambda m: not is_kw(m)), neg_e)}
        for d, cs, (head, thr, sm, neg_w) in zip(delays, whisper, heads):
            rows[f"Whisper live rows, delay {d:g} s"] = score(head, thr, sm, cs.select(is_kw),
                                                               cs.select(lambda m: not is_kw(m)), neg_w)
        with args.out.open("a") as f:
            for name, r in rows.items():
                f.write(json.dumps({"head": name, "condition": cond, "seed": args.seed, "ensemble": args.ensemble,
                                    "work": str(args.work),
                                    **r}, default=float) + "\n")
                a5, a1 = r["at_0.5"] or {}, r["at_1"] or {}
                print(f"{cond:8s} {name:34s} found at 0.5 / 1 FA/h: {(a5.get('recall') or {}).get('found')} / "
                      f"{(a1.get('recall') or {}).get('found')} of {(a5.get('recall') or {}).get('of')} "
                      f"({r['negative_hours']} h of negatives) [{time.time() - t:.0f} s]", flush=True)


if __name__ == "__main__":
    main()

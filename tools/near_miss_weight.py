"""Leave-one-engine-out folds trained with the near-miss sentences of their training calls repeated.

    python tools/near_miss_weight.py --repeats 2 --seed 0

tools/fa_sentences.py found most false alarms at 0.5-2 FA/h in near-miss sentences ("Il y a cambrioleur ici."):
on held-out voices and on the unheard MBROLA and Kokoro engines. Here each fold's training calls get, besides
themselves, --repeats more copies of every near-miss sentence's stretch (the steps whose window ends 0.2 s after
the sentence starts to 0.6 s after it ends, as calls of their own: keyword-free windows the sampler and the hard-
negative mining draw from like any other), so the head sees near misses more often; validation calls are unchanged.
The folds are trained and calibrated as `spotter train` does (fa_keywords' fold_posteriors, stored under
--store/k<repeats>/s<seed>) and read as tools/fa_sentences.py reads them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def with_near_misses(cs, sentences, repeats: int):
    """cs plus `repeats` copies of each near-miss sentence's stretch of its call (sentences: call_sentences of cs)."""
    from spotter import config
    from training.calltrain import CallSet
    from training.sentences import near_miss_of
    from fa_sentences import sentence_steps
    out = CallSet()
    for call in zip(cs.emb, cs.labels, cs.notes, cs.meta):
        out.add(*call)
    for emb, y, meta, sents in zip(cs.emb, cs.labels, cs.meta, sentences):
        for a, b, text in sents:
            steps = sentence_steps(len(y), a, b)
            if near_miss_of(text) is None or len(steps) < 2:
                continue
            j0, j1 = steps[0], steps[-1]
            for _ in range(repeats):
                out.add(emb[j0:j1 + config.HEAD_FRAMES], y[j0:j1 + 1], [], meta)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", default="mbrola,kokoro,espeak")
    ap.add_argument("--store", type=Path, default=ROOT / "runs/near_miss_weight")
    args = ap.parse_args()
    from training import calltrain as T
    from fa_keywords import fold_posteriors
    from fa_sentences import engine_sentences, fold_training_sentences, split_det, stored_sentences
    parts = stored_sentences(args.work, names=("train", "train_gen", "train_warp", "eval_neg", "loeo_neg"))
    sets, _ = T.load_callsets(args.work, extra=False)
    for held in args.folds.split(","):
        kept = fold_training_sentences(parts, sets, held)
        f = fold_posteriors(args.work, held, args.seed, args.store / f"k{args.repeats}" / f"s{args.seed}",
                            prepare=lambda train, val, kept=kept: (with_near_misses(train, kept, args.repeats), val))
        split_det(f["posts"]["kw"], f["sets"]["kw"], f["posts"]["neg"], f["sets"]["neg"],
                  engine_sentences(parts, sets, held), f["smoothing"],
                  f"near misses x{args.repeats + 1}, seed {args.seed}, fold without {held}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

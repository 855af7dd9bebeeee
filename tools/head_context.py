"""How much of its 1.96 s window the keyword head should see: the last n of its 16 embeddings.

    python tools/head_context.py --context 16,10,8 --seed 0

The head sees HEAD_FRAMES = 16 embeddings (1.28 s of 80 ms steps, 1.96 s of audio); a keyword ends 0.04-0.40 s
before the window's end and lasts 0.3-0.9 s, so most of the window is the speech before it. Hypothesis: that
context is where a head learns its training engines' sentences rather than the keyword, and a shorter view carries
over better to an engine it never heard. For each n, each leave-one-engine-out fold's head (the recipe's, trained and
calibrated as `spotter train` does with `--set train.head_context=n`, head seed --seed; n = 16 is the recipe's fold,
stored by tools/fa_keywords.py under runs/fa_kw) is scored on the engine it never heard and on the trained engines'
held-out voices: keywords found at 0.5 / 1 / 2 FA/h (fine threshold grid, every decision on keyword-free speech
counted, as tools/fa_sentences.py reads them). The English check on real people: `spotter train --config
training/configs/en_wake.toml --no-folds --set train.norm_dropout=0.5 --set train.head_context=n ...` then
`python tools/score_rule.py --real-model ...` (the p_k column).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--context", default="16,8", help="embeddings the head sees, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", default="mbrola,kokoro,espeak")
    ap.add_argument("--store", type=Path, default=ROOT / "runs/head_context")
    args = ap.parse_args()
    from spotter import config
    from fa_keywords import fold_posteriors
    from fa_sentences import found_at, sweep
    for n in map(int, args.context.split(",")):
        recipe_folds = n == config.HEAD_FRAMES and args.work.resolve() == (ROOT / "runs/calls").resolve()
        store = ROOT / "runs/fa_kw" if recipe_folds else args.store / f"c{n}"
        total = np.zeros(6, int)
        for held in args.folds.split(","):
            f = fold_posteriors(args.work, held, args.seed, store / f"s{args.seed}",
                                overrides=[f"train.head_context={n}"])
            P, S = f["posts"], f["sets"]
            row = []
            for kw, neg in (("kw", "neg"), ("srckw", "src")):
                found = found_at(sweep(P[kw], S[kw], P[neg], S[neg], f["smoothing"]))
                n_kw = sum(len(x) for x in S[kw].notes)
                what = f"unheard {held}" if kw == "kw" else "trained engines' held-out voices"
                print(f"context {n}, seed {args.seed}, fold without {held}, {what}: found at 0.5 / 1 / 2 FA/h "
                      f"{' / '.join(map(str, found))} of {n_kw} (smoothing {f['smoothing']})", flush=True)
                row += found
            total += row
        print(f"context {n}, seed {args.seed}, sum of the folds: unheard engines {' / '.join(map(str, total[:3]))}, "
              f"trained engines' held-out voices {' / '.join(map(str, total[3:]))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

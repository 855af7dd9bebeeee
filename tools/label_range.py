"""Leave-one-engine-out folds trained with the keyword label moved later after the keyword's end.

    python tools/label_range.py --range 0.12 0.48 --seed 0

The recipe labels a window with keyword k when its end lies calls.KEYWORD_END_RANGE_S (0.04-0.40 s) after k's end.
A short keyword's near misses differ from it only after its end ("vol" / "volé", "incendie" / "incendié"), so a
window ending 0.04 s after "vol" cannot tell them apart yet. Here the training and validation calls are relabelled
from their stored keyword spans with another range (steps of the old range left out of it become ignored, as the
recipe ignores windows around a keyword); the folds are trained and calibrated as `spotter train` does (fa_keywords'
fold_posteriors, stored under --store/r<lo>_<hi>/s<seed>) and read like the DET on the engine each never heard: found
at 0.5 / 1 / 2 FA/h on the fine grid of tools/fa_sentences.py, and the hits' latency p50 at the 1 FA/h point.
--range 0.04 0.40 gives the recipe's own folds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def relabel(cs, lo: float, hi: float):
    """cs with each keyword's label on the steps whose window ends lo-hi s after the keyword's end."""
    from spotter import config
    from training import calls as C
    from training.calltrain import CallSet
    out = CallSet()
    for emb, y, notes, meta in zip(cs.emb, cs.labels, cs.notes, cs.meta):
        y, t = y.copy(), C.window_end_s(len(y))
        for kw, a, b in notes:
            d, k = t - b, config.LABELS.index(kw)
            y[(y == k) & ((d < lo) | (d > hi)) & (d > -C.IGNORE_BEFORE_END_S) & (d < C.IGNORE_AFTER_S)] = C.IGNORE
        for kw, a, b in notes:
            d = t - b
            y[(d >= lo) & (d <= hi)] = config.LABELS.index(kw)
        out.add(emb, y, notes, meta)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--range", type=float, nargs=2, default=(0.12, 0.48), metavar=("LO", "HI"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", default="mbrola,kokoro,espeak")
    ap.add_argument("--store", type=Path, default=ROOT / "runs/label_range")
    args = ap.parse_args()
    from fa_keywords import fold_posteriors
    from fa_sentences import found_at, sweep
    lo, hi = args.range
    total = np.zeros(3, int)
    for held in args.folds.split(","):
        f = fold_posteriors(args.work, held, args.seed, args.store / f"r{lo:g}_{hi:g}" / f"s{args.seed}",
                            prepare=lambda train, val: (relabel(train, lo, hi), relabel(val, lo, hi)))
        P, S, sm = f["posts"], f["sets"], f["smoothing"]
        rows = sweep(P["kw"], S["kw"], P["neg"], S["neg"], sm)
        found = found_at(rows)
        total += found
        at1 = next((r for _, fa, r in rows if fa <= 1.0), None)
        lat = f"{np.percentile(at1['latencies'], 50):.3f} s" if at1 and at1["latencies"] else "-"
        print(f"range {lo:g}-{hi:g} s, seed {args.seed}, fold without {held}: smoothing {sm}, found at 0.5 / 1 / 2 "
              f"FA/h: {' / '.join(map(str, found))} of {sum(len(n) for n in S['kw'].notes)}; latency p50 at the "
              f"1 FA/h point {lat}", flush=True)
    print(f"range {lo:g}-{hi:g} s, seed {args.seed}, sum of the folds: {' / '.join(map(str, total))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

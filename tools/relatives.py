"""The keywords' own word family among the near misses: how many false alarms it makes, and what rejecting it costs.

    python tools/relatives.py --seed 0                      # the recipe's folds (stored by tools/fa_keywords.py)
    python tools/relatives.py --seed 0 --ignore             # folds trained without the relatives as negatives

A fifth of the keyword set's near-miss words (19 of 94) are the keywords' own family: "électrocuté" for électrocution,
"cambrioleur" for cambriolage, "volé" for vol (RELATIVES). A caller who says "il s'est électrocuté" gives the
dispatcher the same evidence, for the same service, as one who says "électrocution"; the recipe trains the head
to reject these words, and the evaluation counts a keyword found on its own relative as a false alarm.

Printed per fold (each leave-one-engine-out fold on the engine it never heard, fine threshold grid, as
tools/fa_sentences.py reads them): keywords found at 0.5 / 1 / 2 FA/h with false alarms counted as the evaluation
counts them (every decision on keyword-free speech), and with a keyword's decisions in its own relatives'
sentences left out (those sentences' share of the speech time left out too); and the decisions on relatives at the
2 FA/h point of the evaluation's count. --ignore: each fold's head trained with the windows of its training calls'
relative sentences ignored (neither keyword nor "other"; the steps whose window ends 0.2 s after the sentence
starts to 0.6 s after it ends), stored under --store/s<seed>.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

RELATIVES = {w: k for k, words in {
    "brûlure": ("brûlé", "brûler", "brûlant"),
    "intoxication": ("intoxiqué",),
    "violences": ("violent", "violemment"),
    "agression": ("agressé", "agressif", "agresseur"),
    "vol": ("volé", "voler", "voleur"),
    "cambriolage": ("cambrioleur", "cambriolé", "cambrioler"),
    "incendie": ("incendié",),
    "effondrement": ("effondré", "s'effondrer"),
    "électrocution": ("électrocuté",),
}.items() for w in words}


def relative_of(text: str) -> str | None:
    """The keyword whose relative the near-miss sentence `text` says, or None."""
    from training.sentences import near_miss_of
    return RELATIVES.get(near_miss_of(text) or "")


def ignoring_relatives(cs, sentences):
    """A copy of cs whose steps inside its relative sentences are labelled IGNORE (sentences: call_sentences of cs)."""
    from training import calls as C
    from training.calltrain import CallSet
    from fa_sentences import sentence_steps
    out = CallSet()
    for emb, y, notes, meta, sents in zip(cs.emb, cs.labels, cs.notes, cs.meta, sentences):
        y = y.copy()
        for a, b, text in sents:
            if relative_of(text):
                y[sentence_steps(len(y), a, b)] = C.IGNORE
        out.add(emb, y, notes, meta)
    return out


def read(kw_posts, kw, neg_posts, neg, sentences, smoothing: int, label: str) -> list[int]:
    """Print and return keywords found at the BUDGETS, counted both ways (see the module doc)."""
    from spotter import config
    from training import calltrain as T
    from fa_sentences import BUDGETS, false_alarms, fine_grid, speech_hours
    hours, r_hours = neg.hours(), speech_hours(neg, sentences, relative_of)
    rows = []
    for th in fine_grid():
        fas = false_alarms(neg_posts, sentences, neg.meta, th, smoothing)
        own = [f for f in fas if f[3] is not None and RELATIVES.get(f[3]) == f[0]]
        hits = len(T.score_calls(kw_posts, kw, {k: float(th) for k in config.KEYWORDS}, smoothing)["hits"])
        rows.append((float(th), len(fas), own, hits))
    n_kw = sum(len(n) for n in kw.notes)
    out = []
    for name, rate in (("every decision (the evaluation)", lambda n, own: n / hours),
                       ("a keyword on its own relatives left out", lambda n, own: (n - len(own)) / (hours - r_hours))):
        found = [max([h for _, n, own, h in rows if rate(n, own) <= b], default=0) for b in BUDGETS]
        out += found
        print(f"{label}: found at {' / '.join(f'{b:g}' for b in BUDGETS)} FA/h, {name}: "
              f"{' / '.join(map(str, found))} of {n_kw}", flush=True)
    th, n, own, _ = next((r for r in rows if r[1] / hours <= BUDGETS[-1]), rows[-1])
    print(f"{label}: at the {BUDGETS[-1]:g} FA/h point (threshold {th:g}): {len(own)} of {n} false alarms are a "
          f"keyword on its own relative ({r_hours:.2f} of {hours:.2f} h): "
          f"{dict(collections.Counter(f[3] for f in own))}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", default="mbrola,kokoro,espeak")
    ap.add_argument("--ignore", action="store_true", help="train the folds with the relatives' windows ignored")
    ap.add_argument("--store", type=Path, default=None,
                    help="fold posteriors (default runs/fa_kw, the recipe's; runs/relatives with --ignore)")
    args = ap.parse_args()
    from training import calltrain as T
    from fa_keywords import fold_posteriors
    from fa_sentences import engine_sentences, fold_training_sentences, stored_sentences
    store = args.store or ROOT / ("runs/relatives" if args.ignore else "runs/fa_kw")
    parts = stored_sentences(args.work, names=("train", "train_gen", "train_warp", "eval_neg", "loeo_neg") if args.ignore else
                             ("eval_neg", "loeo_neg"))
    sets, _ = T.load_callsets(args.work, extra=False)
    total = np.zeros(6, int)
    what = "relatives ignored in training" if args.ignore else "the recipe"
    for held in args.folds.split(","):
        prepare = None
        if args.ignore:
            kept = fold_training_sentences(parts, sets, held)
            prepare = lambda train, val, kept=kept: (ignoring_relatives(train, kept), val)
        f = fold_posteriors(args.work, held, args.seed, store / f"s{args.seed}", prepare=prepare)
        total += read(f["posts"]["kw"], f["sets"]["kw"], f["posts"]["neg"], f["sets"]["neg"],
                      engine_sentences(parts, sets, held), f["smoothing"],
                      f"{what}, seed {args.seed}, fold without {held}")
    print(f"{what}, seed {args.seed}, sum of the folds: found at 0.5 / 1 / 2 FA/h: {' / '.join(map(str, total[:3]))}"
          f" (every decision), {' / '.join(map(str, total[3:]))} (a keyword on its own relatives left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

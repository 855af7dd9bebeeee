"""One cascade threshold per channel (clean / telephone) on stored cascade runs, against the one shipped (experiment).

    python tools/channel_thresholds.py runs/probe/rt_heldout.json runs/probe/rt_fold_espeak.json ...

Per run: each channel's recall and false alarms at the shipped threshold and at the run's own 0.5 FA/h threshold,
then the best split of the run's 0.5 FA/h false-alarm budget between the two channels (a threshold each, chosen on
the run itself: an oracle, an upper bound on what per-channel thresholds could add), and the top false alarms.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
CHANNELS = ("clean", "tel")


def report(path: Path, budget: float = 0.5, top: int = 5) -> None:
    from training.verify_eval import combined_scores, stored_candidates, stored_combiner, threshold_at
    d = stored_candidates(path)
    s = combined_scores(d)
    y = np.array([c["y"] for c in d["cands"]])
    kind = np.array([c["kind"] for c in d["cands"]])
    kws = {ch: sum(c["keywords"] for c in d["calls"] if c["kind"] == ch) for ch in CHANNELS}
    n_fa = int(budget * d["hours"])
    print(f"\n{path} ({d['hours']:.2f} h, {d['keywords']} keywords: clean {kws['clean']}, tel {kws['tel']}; "
          f"{budget:g} FA/h = {n_fa} false alarms)")
    for name, t in (("shipped threshold", stored_combiner(d).default_threshold),
                    (f"{budget:g} FA/h", threshold_at(s, y, 1.0, n_fa))):
        print(f"  {name:18s} {t:6.3f}: " + "; ".join(
            f"{ch} {np.sum((s >= t) & (y == 1) & (kind == ch))}/{kws[ch]} found, "
            f"{np.sum((s >= t) & (y == 0) & (kind == ch))} FA" for ch in CHANNELS))
    best = (-1, None)
    for fa_clean in range(n_fa + 1):
        ts = {ch: threshold_at(s[kind == ch], y[kind == ch], 1.0, fa)
              for ch, fa in (("clean", fa_clean), ("tel", n_fa - fa_clean))}
        hits = sum(int(np.sum((s >= ts[ch]) & (y == 1) & (kind == ch))) for ch in CHANNELS)
        if hits > best[0]:
            best = (hits, ts)
    one = int(np.sum((s >= threshold_at(s, y, 1.0, n_fa)) & (y == 1)))
    print(f"  a threshold per channel (oracle): {best[0] / d['keywords']:.1%} against {one / d['keywords']:.1%} "
          f"with one ({', '.join(f'{ch} {t:.3f}' for ch, t in best[1].items())})")
    for i in [i for i in np.argsort(-s) if y[i] == 0][:top]:
        c = d["cands"][i]
        print(f"    false alarm {s[i]:.3f} {c['kw']:14s} {c['voice']} ({c['kind']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="stored cascade runs (.json)")
    ap.add_argument("--budget", type=float, default=0.5)
    a = ap.parse_args(argv)
    from training.recipe import use_recipe_keywords
    from training.verify_eval import calls_recipe
    use_recipe_keywords(calls_recipe())
    for r in a.runs:
        report(r, a.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

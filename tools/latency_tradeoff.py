"""Recall / false alarms / latency of the decision rule, for each hold and smoothing, on a run's stored calls.

    python tools/latency_tradeoff.py --model models/default.pt --work runs/calls2 [--fine] [--holds 1]

The model's head scores the held-out voices' keyword calls and the held-out negatives once (training/calltrain.py's
stored calls, half telephone); then, for each (max_hold_steps, smoothing_steps), a common threshold is swept on the
negatives (calltrain.GRID from 0.5 up) and the lowest one within each false-alarm budget is kept. Latency is the
decision's stream time minus the keyword's end (the synthesiser's span), for the hits at that threshold: what the
operator waits after the caller finished the word, compute time excluded. The hit rule is
evaluation.streams.score_stream's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotter import config                      # noqa: E402
from spotter.detector import decide_sequence    # noqa: E402
from evaluation.streams import score_stream     # noqa: E402
from training import calltrain as T             # noqa: E402

HOLDS = (1, 2, 3)
SMOOTHINGS = (1, 2, 3, 5)
BUDGETS = (0.5, 1.0)


def outcomes(posts, cs, thr: float, hold: int, smoothing: int) -> tuple[list[float], int, int]:
    """(latencies of the hits, misses, false alarms) of every call at a common threshold."""
    cfg = config.DetectorConfig(thresholds={k: thr for k in config.KEYWORDS}, smoothing_steps=smoothing,
                                max_hold_steps=hold)
    lat, missed, fas = [], 0, 0
    for post, notes in zip(posts, cs.notes):
        res = score_stream(decide_sequence(post, cfg), T._annotations(notes))
        lat += [h[3] for h in res["hits"]]
        missed += len(res["missed"])
        fas += len(res["false_alarms"])
    return lat, missed, fas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/default.pt"))
    ap.add_argument("--work", default=str(ROOT / "runs/calls2"))
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    ap.add_argument("--fine", action="store_true", help="thresholds every 0.001 from 0.95 up (calltrain.GRID has "
                                                        "0.01 steps there)")
    ap.add_argument("--holds", default=",".join(map(str, HOLDS)), help="holds to try (default 1,2,3)")
    args = ap.parse_args()
    grid = sorted({float(t) for t in T.GRID if t >= 0.5} | ({round(float(t), 4) for t in np.arange(0.95, 0.9995, 0.001)}
                                                            if args.fine else set()))
    torch.set_num_threads(1)
    from spotter.model import load_model
    model = load_model(args.model)
    work = Path(args.work)
    sets, info = T.load_callsets(work, extra=False)    # the evaluation sets (and their '_gen' parts)
    kw = T.held_out_voices(sets["eval_kw"], info)
    neg = sets["eval_neg"]
    kw_posts = [T.call_posteriors(model.head, e) for e in kw.emb]
    neg_posts = [T.call_posteriors(model.head, e) for e in neg.emb]
    hours = neg.hours()
    n_kw = sum(len(n) for n in kw.notes)
    print(f"{args.model}: {n_kw} keywords by held-out voices, {hours:.2f} h of held-out negatives")
    print("| hold | smoothing | budget | threshold | FA/h | recall | latency p50 | latency p95 |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for hold in (int(h) for h in args.holds.split(",")):
        for sm in SMOOTHINGS:
            fa_at = {}
            for th in grid:                                       # ascending: stop within the smallest budget
                fa_at[th] = outcomes(neg_posts, neg, th, hold, sm)[2] / hours
                if fa_at[th] <= min(BUDGETS):
                    break
            for budget in BUDGETS:
                ok = [th for th in sorted(fa_at) if fa_at[th] <= budget]
                if not ok:
                    continue
                th = ok[0]
                lat, missed, _ = outcomes(kw_posts, kw, th, hold, sm)
                p50, p95 = (np.percentile(lat, [50, 95]) if lat else (np.nan, np.nan))
                row = {"hold": hold, "smoothing": sm, "budget": budget, "threshold": th, "fa_per_hour": fa_at[th],
                       "recall": len(lat) / n_kw, "found": len(lat), "of": n_kw,
                       "latency_p50_s": float(p50), "latency_p95_s": float(p95)}
                rows.append(row)
                print(f"| {hold} | {sm} | {budget} | {th:.6g} | {fa_at[th]:.2f} | "
                      f"{row['recall']:.1%} ({len(lat)}/{n_kw}) "
                      f"| {p50:.2f} s | {p95:.2f} s |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Per-keyword thresholds from a false-alarm budget on long negative audio.

1. Sweep a common threshold over THRESHOLD_GRID with the real decision rule (`Decider`) on the negative streams
   (other speech + noise, `hours` long) and on validation streams with embedded keywords.
2. Start every keyword at its lowest threshold with no false alarm on the negatives.
3. While the summed false alarms stay within budget_fa_per_hour * hours, lower the threshold of the keyword
   whose recall gains most per added false alarm.
The joint result is then re-measured (keywords interact through the top-keyword rule) and reported.
"""
from __future__ import annotations

import numpy as np

from spotter import config

from evaluation.streams import detect, score_stream

THRESHOLD_GRID = tuple(np.round(np.concatenate([np.arange(0.20, 0.90, 0.05), np.arange(0.90, 0.995, 0.01)]), 3))


def sweep(model, negatives: list[np.ndarray], positives: list[tuple[np.ndarray, list]],
          grid=THRESHOLD_GRID) -> dict:
    """For each grid value: per-keyword false alarms on negatives and hits/occurrences on positives."""
    out = {"grid": list(map(float, grid)), "fa": [], "fa_pos": [], "hits": [],
           "occurrences": {k: 0 for k in config.KEYWORDS}}
    for _, notes in positives:
        for n in notes:
            out["occurrences"][n.keyword] += 1
    for th in grid:
        thr = {k: float(th) for k in config.KEYWORDS}
        fa = {k: 0 for k in config.KEYWORDS}
        hits = {k: 0 for k in config.KEYWORDS}
        fa_pos = {k: 0 for k in config.KEYWORDS}
        for post in negatives:
            for d in detect(model, post, thr):
                fa[d.keyword] += 1
        for post, notes in positives:
            res = score_stream(detect(model, post, thr), notes)
            for kw, *_ in res["hits"]:
                hits[kw] += 1
            for kw, *_ in res["false_alarms"]:
                fa_pos[kw] += 1      # wrong or duplicate detections inside keyword streams, reported apart
        out["fa"].append(fa)
        out["fa_pos"].append(fa_pos)
        out["hits"].append(hits)
    return out


def choose_thresholds(sw: dict, hours: float, budget_fa_per_hour: float) -> dict:
    grid = sw["grid"]
    allowed = int(np.floor(budget_fa_per_hour * hours))
    idx = {}
    for k in config.KEYWORDS:
        zero = [i for i, fa in enumerate(sw["fa"]) if fa[k] == 0]
        idx[k] = zero[0] if zero else len(grid) - 1
    used = sum(sw["fa"][idx[k]][k] for k in config.KEYWORDS)
    while True:
        best, best_gain = None, 0.0
        for k in config.KEYWORDS:
            if idx[k] == 0:
                continue
            j = idx[k] - 1
            extra = sw["fa"][j][k] - sw["fa"][idx[k]][k]
            gain = sw["hits"][j][k] - sw["hits"][idx[k]][k]
            if gain > 0 and used + extra <= allowed:
                ratio = gain / (extra + 0.5)
                if ratio > best_gain:
                    best, best_gain = k, ratio
        if best is None:
            break
        j = idx[best] - 1
        used += sw["fa"][j][best] - sw["fa"][idx[best]][best]
        idx[best] = j
    return {k: float(grid[idx[k]]) for k in config.KEYWORDS}


def measure(model, thresholds: dict, negatives, positives, hours: float) -> dict:
    """Joint false alarms per hour on the negatives and recall on the positives at the given thresholds."""
    fa = sum(len(detect(model, post, thresholds)) for post in negatives)
    hits = occ = fa_pos = 0
    latencies = []
    for post, notes in positives:
        res = score_stream(detect(model, post, thresholds), notes)
        hits += len(res["hits"])
        latencies += [h[3] for h in res["hits"]]
        fa_pos += len(res["false_alarms"])
        occ += len(notes)
    return {"fa_per_hour": fa / hours if hours else float("nan"), "negative_hours": hours,
            "false_alarms": fa, "recall": hits / occ if occ else float("nan"), "occurrences": occ,
            "false_alarms_in_positive_streams": fa_pos, "latency_p50_s": latency_p50(latencies)}


def latency_percentiles(latencies: list[float]) -> dict | None:
    """p50 / p95 of the hits' times from keyword end to event, in seconds to the millisecond (None without hits)."""
    if not latencies:
        return None
    p50, p95 = np.percentile(latencies, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def latency_p50(latencies: list[float]) -> float | None:
    """The median of latency_percentiles (None without hits)."""
    p = latency_percentiles(latencies)
    return p["p50"] if p else None


# A longer smoothing window is kept only where it finds more than this share of the validation keywords beyond the
# shortest one that meets the latency target. Validation voices score high sooner than unheard ones: on 2026-12-05
# 2 steps (68.7 % against 68.0 % for 1 on validation) came 0.202 s after the keyword on held-out voices, over the
# 0.20 s target, and found no more keywords at 0.5 FA/h there or on five head seeds' unheard-engine folds (README,
# "Warped twins and a consistency term, shipped").
SMOOTHING_RECALL_MARGIN = 0.01


def choose_smoothing(results: list[dict], max_latency_p50_s: float, margin: float = SMOOTHING_RECALL_MARGIN) -> int:
    """Index of the smoothing window to keep, from one validation result per window ({"recall", "latency_p50_s"},
    shortest window first): among the windows whose median latency meets max_latency_p50_s (<= 0: no limit), the
    shortest whose recall is within `margin` of the best of them; if none meets it, the fastest."""
    def fast_enough(r):
        return max_latency_p50_s <= 0 or (r["latency_p50_s"] is not None and r["latency_p50_s"] <= max_latency_p50_s)
    ok = [i for i, r in enumerate(results) if fast_enough(r)]
    if not ok:
        timed = [i for i, r in enumerate(results) if r["latency_p50_s"] is not None]
        return min(timed, key=lambda i: results[i]["latency_p50_s"]) if timed else 0
    best = max(results[i]["recall"] for i in ok)
    return min(i for i in ok if results[i]["recall"] >= best - margin - 1e-9)

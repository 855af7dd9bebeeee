"""Where a model's false alarms come from: the held-out negatives' calls, grouped by the engine that said them.

    python tools/fa_by_engine.py --calls runs/calls/calls_eval_neg.npz \
        runs/calls/fold_espeak/first_stage.pt runs/acc2_work/fold_espeak/first_stage.pt models/default.pt

For each model: per engine, the hours of keyword-free calls and the calls per hour whose best keyword score
(smoothed over SMOOTHING steps, the same for every model, so that models compare) reaches 0.9 and 0.97. A leave-one-engine-out fold that fires on the
engine it never heard, and not on the others, is failing on that engine's voices, not on running speech as such.
--threshold T also counts the evaluation's own false alarms per engine at a common threshold T.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVELS = (0.9, 0.97)
SMOOTHING = 3          # steps of the moving average (the shipped model's own)


def peaks_by_engine(posts, calls) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(hours per engine, each call's best smoothed keyword score per engine) from the calls' posteriors."""
    from spotter import config
    cols = [config.LABELS.index(k) for k in config.KEYWORDS]
    hours: dict[str, float] = {}
    peaks: dict[str, list[float]] = {}
    for post, meta in zip(posts, calls.meta):
        s = post[:, cols].max(1)
        s = np.convolve(s, np.ones(SMOOTHING) / SMOOTHING, mode="same")
        hours[meta["engine"]] = hours.get(meta["engine"], 0.0) + s.size * config.STEP_S / 3600
        peaks.setdefault(meta["engine"], []).append(float(s.max()))
    return hours, peaks


def false_alarms_by_engine(posts, calls, threshold: float, smoothing: int) -> dict[str, int]:
    """The evaluation's false alarms (calltrain.score_calls, the one scorer) at a common threshold, per engine."""
    from spotter import config
    from training.calltrain import score_calls
    res = score_calls(posts, calls, {k: threshold for k in config.KEYWORDS}, smoothing)
    count: dict[str, int] = {}
    for _, meta in res["false_alarms"]:
        count[meta["engine"]] = count.get(meta["engine"], 0) + 1
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="torch artifacts (.pt)")
    ap.add_argument("--calls", default=str(ROOT / "runs/calls/calls_eval_neg.npz"), help="a stored call set")
    ap.add_argument("--threshold", type=float, action="append", default=[],
                    help="also count the evaluation's false alarms per engine at this common threshold (the one "
                         "scorer, the model's own smoothing); repeatable")
    args = ap.parse_args(argv)
    import torch
    from spotter.model import load_model
    from training.calltrain import CallSet, call_posteriors
    torch.set_num_threads(1)
    calls = CallSet.load(Path(args.calls))
    for path in args.models:
        model = load_model(path)
        posts = [call_posteriors(model.head, e) for e in calls.emb]          # once per model
        hours, peaks = peaks_by_engine(posts, calls)
        cells = [f"{e} ({hours[e]:.2f} h): " + ", ".join(
            f">={t} {sum(p >= t for p in peaks[e]) / hours[e]:.1f}/h" for t in LEVELS) for e in sorted(hours)]
        print(f"{path}\n  calls per hour whose keyword score peaks: " + " | ".join(cells), flush=True)
        for t in args.threshold:
            count = false_alarms_by_engine(posts, calls, t, model.detector.smoothing_steps)
            print(f"  false alarms at a common threshold of {t}: " + ", ".join(
                f"{e} {count.get(e, 0)}" for e in sorted(hours)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

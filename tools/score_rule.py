"""Another keyword score for the detector, tried on stored posteriors: each keyword against the non-keyword classes.

    python tools/score_rule.py --folds mbrola,kokoro,espeak --seed 0
    python tools/score_rule.py --model models/default.pt
    python tools/score_rule.py --real-model runs/en_wake/lat_s0.pt     # the English check, real people

The detector thresholds p_k, the head's posterior of keyword k. On an engine the head never heard, the right keyword is
usually the top keyword but its posterior is spread over rival keywords too (fa_keywords' folds). `share` scores
p_k / (p_k + p_other + p_noise) instead: the keyword against non-keyword speech alone. Both scores go through the same
detector and hit rule (calltrain.score_calls, smoothing as calibrated), read at 0.5 / 1 / 2 FA/h on a grid finer than
calltrain.GRID (fa_sentences.fine_grid). --folds: the leave-one-engine-out heads of tools/fa_keywords.py (stored
under --store/s<seed>), scored on the engine each never heard; --model: held-out voices of the stored calls; --real-model:
an English model on the 726 real clips (evaluation.realeval.compare_on_real, clean and at 10 dB).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

RULES = ("posterior", "share")


def rescore(post: np.ndarray, rule: str) -> np.ndarray:
    """Posteriors (steps, labels) with the keyword columns replaced by the rule's scores."""
    from spotter import config
    if rule == "posterior":
        return post
    kw = [config.LABELS.index(k) for k in config.KEYWORDS]
    rest = [i for i in range(len(config.LABELS)) if i not in kw]
    out = post.copy()
    out[:, kw] = post[:, kw] / (post[:, kw] + post[:, rest].sum(1, keepdims=True) + 1e-12)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, default=ROOT / "runs/fa_kw")
    ap.add_argument("--model")
    ap.add_argument("--real-model")
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/speech/real_kws_en")
    ap.add_argument("--real-rules", default=",".join(RULES),
                    help="with --real-model: the rules scored (comma-separated; the product's is posterior)")
    ap.add_argument("--real-work", type=Path, help="with --real-model: the English run whose stored keyword-free calls "
                    "are the synthetic negatives (default: training/configs/en_wake.toml's work_dir)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from training import calltrain as T
    from fa_sentences import BUDGETS, found_at, sweep
    head = f"found at {' / '.join(f'{b:g}' for b in BUDGETS)} FA/h"
    total = {r: np.zeros(len(BUDGETS), int) for r in RULES}
    for held in (args.folds.split(",") if args.folds else []):
        from fa_keywords import fold_posteriors
        f = fold_posteriors(args.work, held, args.seed, args.store / f"s{args.seed}")
        for r in RULES:
            v = found_at(sweep([rescore(p, r) for p in f["posts"]["kw"]], f["sets"]["kw"],
                               [rescore(p, r) for p in f["posts"]["neg"]], f["sets"]["neg"], f["smoothing"]))
            total[r] += v
            print(f"fold without {held} (seed {args.seed}), {r:9s}: {head}: {' / '.join(map(str, v))} of "
                  f"{sum(len(n) for n in f['sets']['kw'].notes)}", flush=True)
    if args.folds:
        for r in RULES:
            print(f"sum of the folds, {r:9s}: {' / '.join(map(str, total[r]))}")
    if args.model:
        from spotter.model import load_model
        model = load_model(args.model)
        sets, info = T.load_callsets(args.work, extra=False)
        kw, neg = T.held_out_voices(sets["eval_kw"], info), sets["eval_neg"]
        kp = [T.call_posteriors(model.head, e) for e in kw.emb]
        npo = [T.call_posteriors(model.head, e) for e in neg.emb]
        for r in RULES:
            v = found_at(sweep([rescore(p, r) for p in kp], kw, [rescore(p, r) for p in npo], neg,
                               model.detector.smoothing_steps))
            print(f"{args.model}, held-out voices, {r:9s}: {head}: {' / '.join(map(str, v))} of "
                  f"{sum(len(n) for n in kw.notes)}", flush=True)
    if args.real_model:
        real_check(Path(args.real_model), args.real, args.real_work, tuple(args.real_rules.split(",")))
    return 0


def real_check(model_path: Path, real: Path, work: Path | None = None, rules: tuple[str, ...] = RULES) -> None:
    """compare_on_real (clean and 10 dB) with each rule applied to every posterior, on the fine grid."""
    from evaluation import realeval as R
    from spotter.model import load_model
    from training import calltrain as T
    from training.recipe import load_recipe, real_audio_files, use_recipe_keywords
    from fa_sentences import fine_grid
    recipe = load_recipe(ROOT / "training/configs/en_wake.toml", overrides=[])
    use_recipe_keywords(recipe, None)
    grid, posteriors, model = T.GRID, R.call_posteriors, load_model(model_path)
    T.GRID = tuple(float(x) for x in fine_grid())
    for r in rules:
        R.call_posteriors = lambda head, emb, r=r: rescore(posteriors(head, emb), r)
        res = R.compare_on_real(model, real, work or recipe.work_dir, recipe.data.speech_dir,
                                real_audio_files(recipe.data)["noise_eval"], None, with_openwakeword=False)
        for cond, rows in res["conditions"].items():
            got = [rows["spotter"].get(f"at_{b}") for b in (0.5, 1.0)]
            print(f"{model_path.name}, real clips {cond}, {r:9s}: found at 0.5 / 1 FA/h: "
                  f"{' / '.join(str(g['recall']['found']) if g else '-' for g in got)} of "
                  f"{sum(res['keyword_clips'].values())}", flush=True)
    R.call_posteriors, T.GRID = posteriors, grid


if __name__ == "__main__":
    sys.exit(main())

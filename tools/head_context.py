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

The warp set's settings on the same calls as the recipe's stored run (README, "The log-mel warp"):

    python tools/head_context.py --work runs/warp_c2 --sets-from runs/calls --build calls.mel_warp_copies=2 \
        --context 16 --store runs/warp_c2_int --seed 0

A warp setting on sets that hold the recipe's warp set already (built from nothing since 2026-12-04), without the
Kokoro fold's 40 min of keyword-free synthesis: the linked warp set is built again into --work's own file (the
linked one is left as it is) and the MBROLA and espeak folds read the same calls with or without 'loeo_neg':

    python tools/head_context.py --work runs/warp_X --sets-from runs/calls --build calls.mel_warp_copies=2 \
        calls.mel_tilt=0.25 --only train_warp --context 16 --folds mbrola,espeak --store runs/warp_X_int --seed 0

A training setting on the recipe's stored sets (its folds' heads trained with it, stored apart):

    python tools/head_context.py --work runs/calls --train train.consistency=1 --context 16 --folds mbrola,espeak \
        --store runs/cons1 --seed 0

The decision rule's smoothing on stored fold heads (each also scored with the window its calibration chose):

    python tools/head_context.py --work runs/twins_w3 --train train.consistency=3 --context 16 --folds mbrola,espeak \
        --store runs/twins3 --seed 0 --smoothing 1,2,3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def link_sets(src: Path, work: Path) -> None:
    """work gets links to src's stored call sets and a copy of its calls_info.json (kept if work has them)."""
    import shutil
    work.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("calls_*.npz")):
        if not (work / p.name).exists():
            (work / p.name).symlink_to(p.resolve())
    if not (work / "calls_info.json").exists():
        shutil.copy(src / "calls_info.json", work / "calls_info.json")


def build_sets(work: Path, overrides: list[str], only: set[str] | None = None) -> None:
    """The recipe's call sets (training/configs/calls.toml with overrides) that work does not hold yet, or holds
    with other settings (those in `only` when given), built as `spotter train` builds them (deterministic: the same
    settings give the same calls)."""
    import torch
    from training import calltrain as T
    from training.recipe import real_audio_files
    from training.recipes import load_recipe
    torch.set_num_threads(1)
    recipe = load_recipe(ROOT / "training/configs/calls.toml", overrides)
    T.build_callsets(recipe.calls, recipe.calls.cache_dir, work, T.noise_halves(real_audio_files(recipe.data)),
                     only=only)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--context", default="16,8", help="embeddings the head sees, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", default="mbrola,kokoro,espeak")
    ap.add_argument("--store", type=Path, default=ROOT / "runs/head_context")
    ap.add_argument("--build", nargs="*", metavar="KEY=VALUE",
                    help="first build the recipe's sets missing from --work, with these settings (e.g. "
                         "calls.mel_warp_copies=2); with --sets-from, only the sets that run does not have")
    ap.add_argument("--only", help="with --build: build only these sets (comma-separated, e.g. train_warp; "
                    "without it, every missing set, the Kokoro fold's 'loeo_neg' included: about 40 min)")
    ap.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE",
                    help="training settings for the folds' heads (e.g. train.consistency=1; store them elsewhere)")
    ap.add_argument("--sets-from", type=Path, help="link this run's stored sets into --work (and copy its "
                    "calls_info.json) first: both score the same calls")
    ap.add_argument("--smoothing", help="score with each of these smoothing windows (comma-separated) instead of "
                                        "the one the fold's calibration chose; totals per window")
    args = ap.parse_args()
    from spotter import config
    from fa_keywords import fold_posteriors
    from fa_sentences import found_at, sweep
    if args.sets_from:
        link_sets(args.sets_from, args.work)
    if args.build is not None:
        build_sets(args.work, args.build, set(args.only.split(",")) if args.only else None)
    for n in map(int, args.context.split(",")):
        recipe_folds = (n == config.HEAD_FRAMES and args.work.resolve() == (ROOT / "runs/calls").resolve()
                        and not args.train)
        store = ROOT / "runs/fa_kw" if recipe_folds else args.store / f"c{n}"
        windows = [int(x) for x in args.smoothing.split(",")] if args.smoothing else [None]
        totals = {w: np.zeros(6, int) for w in windows}
        for held in args.folds.split(","):
            f = fold_posteriors(args.work, held, args.seed, store / f"s{args.seed}",
                                overrides=[f"train.head_context={n}", *args.train])
            P, S = f["posts"], f["sets"]
            for w in windows:
                sm, chosen = (f["smoothing"], "") if w is None else (w, f", calibration chose {f['smoothing']}")
                row = []
                for kw, neg in (("kw", "neg"), ("srckw", "src")):
                    found = found_at(sweep(P[kw], S[kw], P[neg], S[neg], sm))
                    n_kw = sum(len(x) for x in S[kw].notes)
                    what = f"unheard {held}" if kw == "kw" else "trained engines' held-out voices"
                    print(f"context {n}, seed {args.seed}, fold without {held}, {what}: found at 0.5 / 1 / 2 FA/h "
                          f"{' / '.join(map(str, found))} of {n_kw} (smoothing {sm}{chosen})", flush=True)
                    row += found
                totals[w] += row
        for w, total in totals.items():
            label = "" if w is None else f", smoothing {w}"
            print(f"context {n}, seed {args.seed}{label}, sum of the folds: unheard engines "
                  f"{' / '.join(map(str, total[:3]))}, trained engines' held-out voices "
                  f"{' / '.join(map(str, total[3:]))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

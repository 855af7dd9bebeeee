"""The recipe's training call sets built again with phone timelines, beside another run's evaluation sets.

    python tools/phone_sets.py --from runs/full/work --work runs/ph/work

Renders the recipe's training sentences (train, val, train_gen, val_gen; train_warp holds train's sentences) again
where the sentence cache has them without their phone timeline (the same audio: calls.synthesize_utterances with
phones=True), builds those sets into --work (each call with its `phone_rows`, the phones train.phone_aux trains on),
and links every other set from --from, so that the folds are scored on the same calls. Then, for example:

    python tools/head_sweep.py --work runs/ph/work --variant phone05 --folds mbrola,espeak,kokoro --set seed=0
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import calls as C                  # noqa: E402
from training import calltrain as T              # noqa: E402
from training.recipe import real_audio_files     # noqa: E402
from training.recipes import load_recipe         # noqa: E402

SENTENCE_SETS = ("train", "val", "train_gen", "val_gen")       # the training sentences (train_warp says train's)
TRAINING_SETS = SENTENCE_SETS + ("train_warp",)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--from", dest="src", type=Path, required=True, help="the run whose evaluation sets are linked")
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    recipe = load_recipe(args.config)
    plan = recipe.calls
    voices, splits = T.plan_voices(plan)
    jobs = T.plan_jobs(plan, voices, splits)
    for name in SENTENCE_SETS:
        t = time.time()
        utts = C.synthesize_utterances(jobs[name], Path(plan.cache_dir), workers=2, progress=name, phones=True)
        print(f"{name}: {len(jobs[name])} sentences, {sum(bool(u.phones) for u in utts)} with their phones "
              f"({time.time() - t:.0f} s)", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    info_path = args.work / "calls_info.json"
    if not info_path.is_file():                 # a first run: the other sets' records, the training sets to build
        info = json.loads((args.src / "calls_info.json").read_text())
        for name in list(info["sets"]):
            if name in TRAINING_SETS:
                del info["sets"][name]
            elif not (args.work / f"calls_{name}.npz").exists():
                os.symlink((args.src / f"calls_{name}.npz").resolve(), args.work / f"calls_{name}.npz")
        info_path.write_text(json.dumps(info, ensure_ascii=False, indent=1))
    t = time.time()
    T.build_callsets(plan, plan.cache_dir, args.work, T.noise_halves(real_audio_files(recipe.data)),
                     only=set(TRAINING_SETS))
    print(f"training sets built into {args.work} in {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()

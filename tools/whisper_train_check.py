"""Does `spotter train` make the shipped Whisper head? training.whisper_head's rows of a run's stored training sets
against the rows tools/whisper_rows.py made for the measurements, and the head it trains on them against
models/default.whisper.npz.

    python tools/whisper_train_check.py --work runs/fr --rows runs/frw

(runs/fr: `spotter train --config training/configs/calls.toml --set work_dir=runs/fr`; runs/frw: `python
tools/whisper_rows.py --sets-from runs/fr --work runs/frw`.) The rows are made in <work>/whisper, as spotter train
makes them (kept: a later spotter train on the same work dir reuses them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--work", type=Path, required=True, help="the spotter train run whose stored sets are encoded")
    ap.add_argument("--rows", type=Path, required=True, help="tools/whisper_rows.py's rows of the same run")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from spotter import whisper_proposer as W
    from training import calltrain as T, whisper_head as WH
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    recipe = load_recipe(args.config, [f"work_dir={args.work}"])
    use_recipe_keywords(recipe, None)
    t0 = time.time()
    took = WH.build_rows(recipe, Path(recipe.work_dir) / WH.ROWS_DIR)
    print(f"rows made (s): {took or 'none, reused'} [{time.time() - t0:.0f} s]", flush=True)
    sets = {}
    for n in WH.SETS:
        a = T.CallSet.load(Path(recipe.work_dir) / WH.ROWS_DIR / f"calls_{n}.npz")
        b = T.CallSet.load(args.rows / f"calls_{n}.npz")
        same = len(a.emb) == len(b.emb) and all(np.array_equal(x, y) for x, y in zip(a.emb, b.emb))
        print(f"{n}: {len(a.emb)} calls, rows {'identical to' if same else 'DIFFERENT from'} {args.rows}", flush=True)
        sets[n] = a
    sets = T.merge_parts(sets)
    t1 = time.time()
    head, thr, sm = WH.train_head(sets["train"], sets["val"], recipe, recipe.seed)
    shipped = W.default_whisper_head()
    new = W.WhisperHead.from_torch(head, thr, sm, shipped.union_weights, shipped.union_threshold)
    diff = max(float(np.abs(new.params[k] - shipped.params[k]).max()) for k in shipped.params)
    print(f"head trained in {time.time() - t1:.0f} s: thresholds {'equal' if thr == shipped.thresholds else 'differ'}, "
          f"smoothing {'equal' if sm == shipped.smoothing else 'differs'}, largest weight difference from the shipped "
          f"head {diff:g}", flush=True)


if __name__ == "__main__":
    main()

"""Does fine-tuning the backbone's last blocks carry over to an unheard engine? The recipe's leave-one-engine-out
folds and scorer, with a fine-tuning phase (training/finetail.py) after the recipe's head.

    python tools/tail_finetune.py --work runs/calls --build                 # trunk features of every stored set
    python tools/tail_finetune.py --work runs/calls --folds espeak,kokoro,mbrola --blocks 5 --epochs 3

--build makes the calls of every call set stored in --work again (the same sentences, groups and channel draws as
`spotter train`; checked against the stored embeddings) and stores their trunk features as trunk_<set>.npz.
Each fold prints the recipe's head and the fine-tuned model on the same calls, with the same scorer: the recipe's
head is trained exactly as `spotter train` trains its folds, then the tail (its last --blocks blocks) and the head
train together for --epochs on the recipe's windows, early stopping on validation loss; thresholds are calibrated
again on the validation calls through the fine-tuned tail. One JSON line per model and fold goes to --out.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import calltrain as T            # noqa: E402
from training import finetail as F             # noqa: E402
from training.recipes import load_recipe        # noqa: E402


def build(recipe, work: Path) -> None:
    """trunk_<set>.npz for every calls_<set>.npz in work, the calls made again from the recipe's plan."""
    from training import calls as C
    from training.recipe import real_audio_files
    from spotter.model import KeywordHead, KeywordModel
    real = real_audio_files(recipe.data)
    noise = T.noise_halves(real)
    plan = recipe.calls
    voices, splits = T.plan_voices(plan)
    jobs = T.plan_jobs(plan, voices, splits)
    info = json.loads((work / "calls_info.json").read_text())
    tail = F.Tail(KeywordModel(head=KeywordHead()).backbone).eval()
    for path in sorted(work.glob("calls_*.npz")):
        name = path.stem.removeprefix("calls_")
        out = work / f"trunk_{name}.npz"
        if out.is_file():
            continue
        if name not in jobs or info["sets"].get(name, {}).get("jobs") not in (T.jobs_fingerprint(jobs[name]), None):
            print(f"{path}: not planned by this recipe as stored; skipped", flush=True)
            continue
        t0 = time.time()
        utts = C.synthesize_utterances(jobs[name], plan.cache_dir, workers=2)
        trunk = T.embed_set(plan, name, utts, noise, features=F.trunk_features, lead=F.ROW_LEAD)
        stored = T.CallSet.load(path)
        if len(stored.emb) != len(trunk.emb):
            raise SystemExit(f"{name}: {len(trunk.emb)} calls made again, {len(stored.emb)} stored")
        worst = 0.0
        for i in np.linspace(0, len(stored.emb) - 1, 8).astype(int):
            with torch.no_grad():
                e = tail(torch.from_numpy(trunk.emb[i])[None])[0].numpy()
            if e.shape != stored.emb[i].shape:
                raise SystemExit(f"{name}: call {i} gives {e.shape} embeddings, {stored.emb[i].shape} stored")
            worst = max(worst, float(np.abs(e - stored.emb[i].astype(np.float32)).max()))
        if worst > 0.1:
            raise SystemExit(f"{name}: the calls made again differ from the stored ones (max embedding error {worst})")
        F.save_trunk(trunk, out)
        print(f"{out}: {len(trunk.emb)} calls, max embedding error {worst:.3f}, {time.time() - t0:.0f} s", flush=True)


def fold_sets(held: str, sets: dict, info: dict):
    """(keep-for-training predicate, keyword calls, negative calls) of one fold, as spotter train makes them."""
    if held == "final":
        return (lambda m: True), T.held_out_voices(sets["eval_kw"], info), sets["eval_neg"]
    return ((lambda m: m["engine"] != held), sets["eval_kw"].select(lambda m: m["engine"] == held),
            T.engine_negatives(sets, held))


def summary(res: dict) -> dict:
    a = res["at_0.5_fa_h"] or {}
    return {"at_0.5": a.get("recall"), "interval_0.5": a.get("recall_interval_90"), "threshold_0.5": a.get("threshold"),
            "at_1": (res["at_1.0_fa_h"] or {}).get("recall"), "clip": res["clip"]["accuracy"],
            "service": res["service"]["service_correct"], "negative_hours": res["negative_hours"],
            "calibrated": {"recall": res["calibrated"]["recall"]["recall"],
                           "fa_per_hour": res["calibrated"]["fa_per_hour"]}, "det": res["det"]}


def report(row: dict, out: Path) -> None:
    with out.open("a") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=float) + "\n")
    a = row["at_0.5"] or {}
    print(f"{row['model']:24s} {row['fold']:7s} recall@0.5FA/h {a.get('recall')} ({a.get('found')}/{a.get('of')}) "
          f"thr {row['threshold_0.5']} 90% {row['interval_0.5']} @1 {(row['at_1'] or {}).get('recall')} "
          f"clip {row['clip']} service {row['service']} calibrated {row['calibrated']} [{row['seconds']} s]",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--work", default=str(ROOT / "runs/calls"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, as spotter train")
    ap.add_argument("--build", action="store_true", help="store the trunk features of the stored call sets")
    ap.add_argument("--folds", default="")
    ap.add_argument("--blocks", type=int, default=5, help="the last N backbone blocks train (1-5)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", default=str(ROOT / "runs/sweep/tail_finetune.jsonl"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    recipe = load_recipe(args.config, args.set)
    work = Path(args.work)
    if args.build:
        build(recipe, work)
    folds = [f for f in args.folds.split(",") if f]
    if not folds:
        return
    from spotter.model import KeywordHead, KeywordModel
    backbone = KeywordModel(head=KeywordHead()).backbone
    parts = T.load_parts(work, extra=False)                  # each stored set read once, for both
    sets = T.merge_parts(parts)
    trunk = T.merge_parts({name: F.load_trunk(work, name, cs) for name, cs in parts.items()})
    info = json.loads((work / "calls_info.json").read_text())
    cfg, budget, seed = recipe.train, recipe.calibrate.budget_fa_per_hour, recipe.seed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for held in folds:
        t0 = time.time()
        keep, kw, neg = fold_sets(held, sets, info)
        head, _ = T.train_fold(sets["train"].select(keep), sets["val"].select(keep), cfg, seed)
        thr, sm, _ = T.calibrate_head(head, sets["val"].select(keep), budget)
        base = {"fold": held, "seconds": round(time.time() - t0, 1)}
        report({"model": "recipe", **base, **summary(T.evaluate_head(head, kw, neg, thr, sm))}, out)
        t0 = time.time()
        tail, head2, hist = F.finetune_tail(copy.deepcopy(head), backbone, trunk["train"].select(keep),
                                            trunk["val"].select(keep), cfg, seed, args.blocks, args.epochs, args.lr)
        _, tkw, tneg = fold_sets(held, trunk, info)
        val2 = F.tail_embeddings(tail, trunk["val"].select(keep))
        thr2, sm2, _ = T.calibrate_head(head2, val2, budget)
        res = T.evaluate_head(head2, F.tail_embeddings(tail, tkw), F.tail_embeddings(tail, tneg), thr2, sm2)
        report({"model": f"tail{args.blocks}_e{args.epochs}_lr{args.lr:g}", "fold": held,
                "seconds": round(time.time() - t0, 1), "history": hist, **summary(res)}, out)


if __name__ == "__main__":
    main()

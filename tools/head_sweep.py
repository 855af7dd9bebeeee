"""Compare head-training variants on a run's stored call embeddings, with the recipe's own folds and scorer.

    python tools/head_sweep.py --work runs/calls2 --variant all_negatives --folds mbrola,espeak,kokoro,final
    python tools/head_sweep.py --work runs/calls2 --build --extra --variant recipe --folds mbrola,espeak \
        --set 'calls.extra_kw_sentences={"mbrola": 8, "kokoro": 1}' \
        --set 'calls.extra_neg_sentences={"mbrola": 40, "kokoro": 3}' --set calls.extra_kokoro_blends=16

Each variant changes the [train] section or the head's training in training/configs/calls.toml's recipe; the data, the
leave-one-engine-out folds, the calibration and the scorer are exactly those of `spotter train` (training/calltrain.py).
One JSON line per fold is appended to --out, and one summary line is printed.

    python tools/head_sweep.py --summary runs/dense/results.jsonl

sums each variant's keywords found over its folds, per seed and over all its seeds, at 0.5 / 1 FA/h (the fold's
operating points) and at 2 / 5 FA/h (read off the fold's DET grid, calltrain.GRID: a lower bound), with the
keyword-clip accuracy per fold.

    python tools/head_sweep.py --work runs/phw/work --score-work runs/phl/d1 --variant recipe --folds mbrola

trains and calibrates on --work's rows and scores the same calls' rows from --score-work: here a head trained on
Whisper rows of whole calls, scored on the rows a live stream gets (tools/whisper_rows.py --live).
"""
from __future__ import annotations

import argparse
import dataclasses
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
from training.recipes import load_recipe        # noqa: E402

VARIANTS = {
    "recipe": {},                                                   # training/configs/calls.toml as it is
    # every negative window of the training calls (not 30,000), and 20,000 mined ones searched in all of them
    "all_negatives": {"negative_windows": 10 ** 7, "mining_windows": 20000, "mining_share": 1.0},
    # embeddings minus their causal running mean (time constant 60 steps, 4.8 s): a speaker's and a channel's offset
    "recipe_ema": {"ema_steps": 60},
    # an engine classifier behind a gradient reversal on the head's pooled features (no mining round)
    "dann": {"mining_windows": 0, "dann": 0.3},
    # the recipe's head trained from 3 seeds, posteriors averaged ([train] ensemble = 3)
    "ensemble3": {"ensemble": 3},
    # a larger head: 256 channels in each of its three temporal convolutions instead of 96 (5.9x the weights)
    "wide_head": {"head_channels": 256},
    # a share of the embedding's 96 dimensions zeroed in every training window (the same ones at every step)
    "dim_dropout": {"dim_dropout": 0.25},
    "dim_dropout50": {"dim_dropout": 0.5},
    "dim_dropout70": {"dim_dropout": 0.7},
    # the dimensions dropped after the head's LayerNorm instead, the others scaled by 1 / (1 - p) (inverted dropout,
    # so that the eval-time head sees what it saw in training on average)
    "norm_dropout50": {"norm_dropout": 0.5, "dim_dropout": 0.0},
    "norm_dropout70": {"norm_dropout": 0.7, "dim_dropout": 0.0},
    # each engine's training calls repeated up to the largest engine's hours, at most 12 times (Kokoro: 0.16 h of
    # 11.5 h on runs/calls; 2026-12-03)
    "engine_balance12": {"engine_balance": 12.0},
    # each normalised dimension of a training window times exp(N(0, s)) on top of the recipe's dropout (2026-12-03)
    "norm_gain30": {"norm_gain": 0.3},
    # training windows mixed in pairs (mixup, Beta(0.4, 0.4)), labels likewise
    "mixup": {"mixup": 0.4},
    # LogitNorm (train.normalised_logits): the loss on logits scaled to a fixed norm, against over-confidence
    "logit_norm": {"logit_norm": 0.04},
    # a per-position term (train.dense): each position of the head's convolutions classifies the window ending where
    # its receptive field ends, weight 0.5 / 1 (2026-12-06 night)
    "dense05": {"dense": 0.5},
    "dense1": {"dense": 1.0},
    # the per-position term with phone targets (train.phone_aux): the phone said at each embedding's centre, from the
    # synthesisers' own timelines (training/phones.py); needs call sets built from a sentence cache with timelines
    "phone05": {"phone_aux": 0.5},
    "phone1": {"phone_aux": 1.0},
    # the phone term on the first convolution block's output (its own 3-embedding view), not the last
    "phone05_b1": {"phone_aux": 0.5, "aux_block": 1},
}



def ema_normalise(emb: np.ndarray, steps: int, prior: np.ndarray) -> np.ndarray:
    """Subtract a causal running mean (time constant `steps` embeddings, starting from `prior`) from each
    embedding: a speaker's and a channel's constant offset, removed as a stream goes."""
    from scipy.signal import lfilter
    x = emb.astype(np.float32)
    a = 1.0 / steps
    m = lfilter([a], [1, -(1 - a)], x, axis=0, zi=((1 - a) * prior)[None, :].repeat(1, 0))[0]
    return (x - m).astype(np.float16)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.lam * g, None


def train_dann(train, val, cfg, seed: int, lam: float):
    """The head trained as train_fold's first stage, plus an engine classifier on its pooled features behind a
    gradient reversal: features that tell the keyword but not the synthesis engine (domain-adversarial training)."""
    import copy
    from spotter.model import KeywordHead
    from training.train import class_weights, evaluate_head, seed_everything
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    engines = sorted({m["engine"] for m in train.meta})
    xs, ys, ds = [], [], []
    for i, e in enumerate(engines):
        x, y = T.windows(train.select(lambda m, e=e: m["engine"] == e), cfg.negative_windows // len(engines), rng)
        xs.append(x), ys.append(y), ds.append(torch.full((len(y),), i))
    xtr, ytr, dtr = torch.cat(xs), torch.cat(ys), torch.cat(ds)
    xva, yva = T.windows(val, cfg.val_negative_windows, rng)
    head = KeywordHead()
    feats = {}
    head.out.register_forward_pre_hook(lambda mod, inp: feats.__setitem__("z", inp[0]))
    dom = torch.nn.Sequential(torch.nn.Linear(head.out.in_features, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, len(engines)))
    w = class_weights(ytr)
    dw = 1.0 / torch.bincount(dtr).float()
    dw = dw / (dw * torch.bincount(dtr)).sum() * len(dtr)
    params = list(head.parameters()) + list(dom.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=5e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    ce = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.05)
    dce = torch.nn.CrossEntropyLoss(weight=dw)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, bad = float("inf"), None, 0
    for epoch in range(cfg.epochs):
        head.train(), dom.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), cfg.batch):
            idx = perm[i:i + cfg.batch]
            xb = xtr[idx].float()
            xb = xb + 0.05 * xb.std() * torch.randn(xb.shape, generator=gen)
            loss = ce(head(xb), ytr[idx]) + dce(dom(_Reverse.apply(feats["z"], lam)), dtr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        m = evaluate_head(head, xva, yva, w)
        print(f"  dann epoch {epoch + 1}: val loss {m['loss']:.3f} bal.acc {m['balanced_acc']:.3f}", flush=True)
        if m["loss"] < best - 1e-4:
            best, best_state, bad = m["loss"], copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return head, {"windows": int(len(ytr))}


def run_fold(held: str, sets: dict, info: dict, cfg, budget: float, seed: int, dann: float = 0.0,
             fold_negatives: str = "engine", head_channels: int = 0,
             max_latency_p50_s: float = T.config.LATENCY_TARGET_P50_S) -> dict:
    t0 = time.time()
    if held == "final":
        keep = lambda m: True
        kw, neg = T.held_out_voices(sets["eval_kw"], info), sets["eval_neg"]
    else:
        keep = lambda m: m["engine"] != held
        kw = sets["eval_kw"].select(lambda m: m["engine"] == held)
        # "test-voices": the rule before 2026-12-02 (every engine's test-split voices), kept to compare with
        rules = {"engine": T.engine_negatives(sets, held), "test-voices": sets["eval_neg"]}
        neg = rules if fold_negatives == "both" else rules[fold_negatives]
    train, val = sets["train"].select(keep), sets["val"].select(keep)
    if dann:
        head, tinfo = train_dann(train, val, cfg, seed, dann)
    else:
        dim = train.emb[0].shape[1]     # another representation's rows (tools/whisper_rows.py) than the embedding's
        make = None
        if head_channels or dim != T.config.EMBED_DIM:
            make = lambda: T.training_head(cfg.norm_dropout, cfg.norm_gain, dim=dim, channels=head_channels or 96,
                                           context=cfg.head_context or T.config.HEAD_FRAMES)
        head, tinfo = T.train_fold(train, val, cfg, seed, make)
    thr, sm, cal = T.calibrate_head(head, val, budget, max_latency_p50_s=max_latency_p50_s)
    if isinstance(neg, dict):        # the same head under each rule
        return [{**fold_result(T.evaluate_head(head, kw, n, thr, sm), held, t0, tinfo), "fold_negatives": rule}
                for rule, n in neg.items()]
    return fold_result(T.evaluate_head(head, kw, neg, thr, sm), held, t0, tinfo)


def fold_result(res: dict, held: str, t0: float, tinfo: dict) -> dict:
    return {"fold": held, "seconds": round(time.time() - t0, 1), "windows": tinfo["windows"],
            "smoothing": res["smoothing_steps"], "latency_0.5": (res["at_0.5_fa_h"] or {}).get("latency_s"),
            "calibrated": {"recall": res["calibrated"]["recall"]["recall"],
                           "fa_per_hour": res["calibrated"]["fa_per_hour"]},
            "at_0.5": (res["at_0.5_fa_h"] or {}).get("recall"), "at_1": (res["at_1.0_fa_h"] or {}).get("recall"),
            "interval_0.5": (res["at_0.5_fa_h"] or {}).get("recall_interval_90"),
            "negative_hours": res["negative_hours"], "threshold_0.5": (res["at_0.5_fa_h"] or {}).get("threshold"),
            "per_keyword_0.5": (res["at_0.5_fa_h"] or {}).get("per_keyword"),
            "clip": res["clip"]["accuracy"], "service": res["service"]["service_correct"],
            "det": res["det"]}


def found_at(det: list[dict], fa_per_hour: float, n: int) -> int:
    """Keywords found at the DET grid's best point within fa_per_hour (of n keywords)."""
    ok = [d["recall"] for d in det if d["fa_per_hour"] <= fa_per_hour]
    return round(max(ok) * n) if ok else 0


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs: dict = {}
    for r in rows:
        a5, a1 = r["at_0.5"] or {}, r["at_1"] or {}
        n = a5.get("of") or 0
        runs.setdefault((r["variant"], r["seed"]), {})[r["fold"]] = (
            a5.get("found", 0), a1.get("found", 0), found_at(r["det"], 2.0, n), found_at(r["det"], 5.0, n), r["clip"])
    totals: dict = {}
    for (variant, seed), folds in sorted(runs.items()):
        sums = [sum(f[i] for f in folds.values()) for i in range(4)]
        t = totals.setdefault(variant, {"seeds": [], "sums": [0] * 4, "clip": {}})
        t["seeds"].append(seed)
        t["sums"] = [a + b for a, b in zip(t["sums"], sums)]
        for fold, f in folds.items():
            t["clip"].setdefault(fold, []).append(f[4])
        print(f"{variant:16s} seed {seed}: " + "  ".join(f"{k} {f[0]} / {f[1]} / {f[2]} / {f[3]}"
                                                      for k, f in sorted(folds.items()))
              + f"  | folds summed at 0.5 / 1 / 2 / 5 FA/h: {' / '.join(map(str, sums))}")
    for variant, t in totals.items():
        clip = ", ".join(f"{k} {100 * sum(v) / len(v):.1f} %" for k, v in sorted(t["clip"].items()))
        print(f"{variant:16s} seeds {t['seeds']}: {' / '.join(map(str, t['sums']))} at 0.5 / 1 / 2 / 5 FA/h; "
              f"keyword-clip accuracy (mean of seeds) {clip}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, metavar="RESULTS",
                    help="only sum a results file (--out) per variant and seed")
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--work", default=str(ROOT / "runs/calls2"))
    ap.add_argument("--variant", choices=sorted(VARIANTS))
    ap.add_argument("--folds", default="mbrola,espeak,kokoro,final")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, as spotter train")
    ap.add_argument("--build", action="store_true", help="first build the recipe's call sets missing from --work")
    ap.add_argument("--extra", action="store_true", help="train with the run's _extra sets too")
    ap.add_argument("--score-work", help="score on this run's evaluation sets instead (the same calls with other "
                    "rows, e.g. tools/whisper_rows.py --live): train and calibrate on --work, score on these")
    ap.add_argument("--out", default=str(ROOT / "runs/sweep/results.jsonl"))
    ap.add_argument("--fold-negatives", choices=("engine", "test-voices", "both"), default="engine",
                    help="a fold's false alarms on the held-out engine's own speech (the recipe), on every "
                         "engine's test-split voices (the rule before 2026-12-02), or both for the same head")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary)
        return
    if not args.variant:
        ap.error("--variant is required (or --summary RESULTS)")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    recipe = load_recipe(args.config, args.set)
    if args.build:
        from training.recipe import real_audio_files
        real = real_audio_files(recipe.data)
        T.build_callsets(recipe.calls, recipe.calls.cache_dir, Path(args.work),
                         T.noise_halves(real))
    change = dict(VARIANTS[args.variant])
    ema = change.pop("ema_steps", 0)
    dann = change.pop("dann", 0.0)
    head_channels = change.pop("head_channels", 0)
    cfg = dataclasses.replace(recipe.train, **change)
    sets, info = T.load_callsets(Path(args.work), args.extra)
    if args.score_work:
        sets.update(scored_sets(sets, Path(args.score_work)))
    if ema:
        prior = np.concatenate(sets["train"].emb).astype(np.float32).mean(0)
        for cs in sets.values():
            cs.emb = [ema_normalise(e, ema, prior) for e in cs.emb]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for held in [f for f in args.folds.split(",") if f]:          # --folds "": only --build
        rs = run_fold(held, sets, info, cfg, recipe.calibrate.budget_fa_per_hour, recipe.seed, dann,
                      args.fold_negatives, head_channels, recipe.calibrate.max_latency_p50_s)
        for r in rs if isinstance(rs, list) else [{**rs, "fold_negatives": args.fold_negatives}]:
            r["variant"] = args.variant + ("+extra" if args.extra else "")
            r["seed"] = recipe.seed
            if args.score_work:
                r["scored_on"] = args.score_work
            print_fold(r, held, out)


def scored_sets(sets: dict, score_work: Path) -> dict:
    """score_work's evaluation sets (all but train and val), checked to be the same calls as the run's."""
    other, _ = T.load_callsets(score_work)
    out = {}
    for name, cs in sets.items():
        if name in ("train", "val"):
            continue
        o = other[name]
        if len(o.emb) != len(cs.emb) or any(len(a) != len(b) or not np.array_equal(y, z)
                                            for a, b, y, z in zip(o.emb, cs.emb, o.labels, cs.labels)):
            raise SystemExit(f"{score_work}: {name} holds other calls than --work's")
        out[name] = o
    return out


def print_fold(r: dict, held: str, out: Path) -> None:
    with out.open("a") as f:
        f.write(json.dumps(r, ensure_ascii=False, default=float) + "\n")
    a5 = r["at_0.5"] or {}
    print(f"{r['variant']:22s} {held:7s} {r['fold_negatives']:11s} negatives {r['negative_hours']} h; "
          f"recall@0.5FA/h {a5.get('recall')} ({a5.get('found')}/{a5.get('of')}) thr {r['threshold_0.5']} "
          f"90% {r['interval_0.5']} "
          f"@1 {(r['at_1'] or {}).get('recall')} clip {r['clip']} service {r['service']} "
          f"smoothing {r.get('smoothing')} latency {r.get('latency_0.5')} "
          f"calibrated {r['calibrated']} [{r['seconds']} s]", flush=True)


if __name__ == "__main__":
    main()

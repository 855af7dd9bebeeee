"""Which keywords raise the false alarms on an engine a fold never heard, which are found, and whether per-keyword
thresholds chosen where a fold can choose them carry over to that engine.

    python tools/fa_keywords.py --work runs/calls --folds mbrola,kokoro,espeak --seed 0 --store runs/fa_kw

For each leave-one-engine-out fold (the recipe's head, trained and calibrated as `spotter train` does on the stored
calls of --work, head seed --seed) this stores the head's posteriors on the left-out engine's keyword calls and
keyword-free calls, and on the trained engines' held-out (test-split) keyword and keyword-free calls, with the
fold's validation thresholds, in --store/sS/fold_E.npz (reused when present). It prints:
- at common thresholds giving 0.5 / 2 / 10 FA/h on the left-out engine, hits and false alarms per keyword;
- per-keyword thresholds chosen on the left-out engine's own calls (calibrate.choose_thresholds): an upper bound,
  not a method;
- three families of per-keyword thresholds, each swept and read at the left-out engine's 0.5 / 1 / 2 / 5 FA/h like
  the common threshold's DET: choose_thresholds on the trained engines' held-out voices at a swept budget; the same
  at a budget of 0.5 FA/h, none below a swept common floor; the fold's validation thresholds (what `spotter train`
  calibrates) below a swept common floor.

    python tools/fa_keywords.py --work runs/calls --voices models/default.pt

does the same across voices instead of engines for one model: per-keyword thresholds chosen on half the held-out
voices and applied to the other half (voice_split).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATES = (0.5, 2.0, 10.0)


def fold_posteriors(work: Path, held: str, seed: int, store: Path, prepare=None, overrides=()) -> dict:
    """The fold without `held`: {'posts': {part: [per-call posteriors]}, 'sets': {part: CallSet}, 'smoothing',
    'val_thresholds'} for the parts kw / neg (the unheard engine's keyword and keyword-free calls) and srckw / src
    (the trained engines' held-out voices' keyword and keyword-free calls). prepare(train, val) -> (train, val),
    when given, changes the fold's training and validation calls before its head is trained; overrides are recipe
    settings ("train.head_context=8") on top of the recipe's (store the results of either elsewhere)."""
    import torch
    from training import calltrain as T
    from training.recipes import load_recipe
    path = store / f"fold_{held}.npz"
    sets, info = T.load_callsets(work, extra=False)
    keep = lambda m: m["engine"] != held
    parts = {"kw": sets["eval_kw"].select(lambda m: m["engine"] == held), "neg": T.engine_negatives(sets, held),
             "src": T.held_out_voices(sets["eval_neg"], info).select(keep),
             "srckw": T.held_out_voices(sets["eval_kw"], info).select(keep)}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if all(k in meta["lengths"] for k in parts) and "val_thresholds" in meta:
                posts = {k: np.split(z[k], np.cumsum(meta["lengths"][k])[:-1]) for k in parts}
                return {"posts": posts, "sets": parts, "smoothing": meta["smoothing"],
                        "val_thresholds": meta["val_thresholds"]}
    torch.set_num_threads(1)
    recipe = load_recipe(ROOT / "training/configs/calls.toml", [f"seed={seed}", *overrides])
    train, val = sets["train"].select(keep), sets["val"].select(keep)
    if prepare is not None:
        train, val = prepare(train, val)
    head, _ = T.train_fold(train, val, recipe.train, seed)
    val_thr, sm, _ = T.calibrate_head(head, val, recipe.calibrate.budget_fa_per_hour,
                                      max_latency_p50_s=recipe.calibrate.max_latency_p50_s)
    posts = {k: [T.call_posteriors(head, e) for e in cs.emb] for k, cs in parts.items()}
    store.mkdir(parents=True, exist_ok=True)
    meta = {"smoothing": sm, "val_thresholds": val_thr, "lengths": {k: [len(p) for p in v] for k, v in posts.items()}}
    np.savez(path, meta=np.array(json.dumps(meta)), **{k: np.concatenate(v) for k, v in posts.items()})
    return {"posts": posts, "sets": parts, "smoothing": sm, "val_thresholds": val_thr}


BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)


def transfer(P, S, sm, hours, n_kw, held, rows, src_fa, val_thr) -> None:
    """Per-keyword thresholds chosen where a fold can choose them (the trained engines' held-out voices: their
    keyword calls and keyword-free calls, calibrate.choose_thresholds at a budget), applied to the unheard engine.
    The budget is swept like the common threshold, and each family is read at the unheard engine's 0.5 / 1 / 2 FA/h."""
    from spotter import config
    from training import calltrain as T
    from training.calibrate import choose_thresholds
    sw = {"grid": list(map(float, T.GRID)), "fa": src_fa, "hits": T.keyword_sweep(P["srckw"], S["srckw"], sm)[1]}
    common_on_src = [(sum(fa.values()) / hours["src"], len(kw["hits"]), len(neg["false_alarms"]))
                     for fa, (_, kw, neg) in zip(src_fa, rows)]

    def on_unheard(thr: dict) -> tuple[int, float]:
        """(keywords found, FA/h) on the unheard engine's calls at per-keyword thresholds."""
        kw = T.score_calls(P["kw"], S["kw"], thr, sm)
        return len(kw["hits"]), len(T.score_calls(P["neg"], S["neg"], thr, sm)["false_alarms"]) / hours["neg"]

    fam = [(b, *on_unheard(choose_thresholds(sw, hours["src"], b))) for b in BUDGETS]
    common = [(len(r[1]["hits"]), len(r[2]["false_alarms"]) / hours["neg"]) for r in rows]
    # the same per-keyword thresholds (budget 0.5 on the trained engines' voices), none below a common floor swept
    # like the common threshold: the family holds the common threshold (high floors) and the greedy choice (low)
    g = choose_thresholds(sw, hours["src"], 0.5)
    floor = [on_unheard({k: max(float(c), g[k]) for k in config.KEYWORDS}) for c in T.GRID]
    print("  floor -> found, FA/h on the unheard engine: " + "; ".join(
        f"{c}: {h} at {f:.2f}" for c, (h, f) in zip(T.GRID, floor) if c >= 0.9))
    vfloor = [on_unheard({k: max(float(c), val_thr[k]) for k in config.KEYWORDS}) for c in T.GRID]
    print("  validation thresholds: " + ", ".join(f"{k} {v}" for k, v in val_thr.items()))
    print("  greedy thresholds at 0.5 FA/h on the trained engines' voices: " +
          ", ".join(f"{k} {v}" for k, v in g.items()))
    print("  budget on the trained engines' voices -> found on the unheard engine, its FA/h: " +
          "; ".join(f"{b}: {h} at {f:.2f}" for b, h, f in fam))
    for rate in (0.5, 1.0, 2.0, 5.0):
        c = max([h for h, f in common if f <= rate], default=0)
        p = max([h for _, h, f in fam if f <= rate], default=0)
        fl = max([h for h, f in floor if f <= rate], default=0)
        vf = max([h for h, f in vfloor if f <= rate], default=0)
        print(f"  at {rate} FA/h on {held}: the fold's validation thresholds above a common floor {vf}/{n_kw}")
        print(f"  at {rate} FA/h on {held}: common threshold {c}/{n_kw}, per-keyword thresholds from the trained "
              f"engines' voices {p}/{n_kw}, the same above a common floor {fl}/{n_kw}")
    for b in (0.5, 1.0):
        ok = [c for c in common_on_src if c[0] <= b]
        if ok:
            print(f"  chosen on the trained engines' voices at {b} FA/h: common threshold -> {ok[0][1]}/{n_kw} at "
                  f"{ok[0][2] / hours['neg']:.2f} FA/h on {held}; per-keyword -> "
                  + next(f"{h}/{n_kw} at {f:.2f} FA/h" for bb, h, f in fam if bb == b))


def voice_split(model_path: Path, work: Path) -> None:
    """Per-keyword thresholds across voices of the engines a model trained on: the held-out (test-split) voices in
    two halves (alternate voices in name order); thresholds are chosen on one half's keyword and keyword-free calls
    and applied to the other's, both ways, and the two halves' counts are added."""
    from spotter import config
    from spotter.model import load_model
    from training import calltrain as T
    from training.calibrate import choose_thresholds
    model = load_model(str(model_path))
    sm = model.detector.smoothing_steps
    sets, info = T.load_callsets(work, extra=False)
    kw_all, neg_all = T.held_out_voices(sets["eval_kw"], info), sets["eval_neg"]
    voices = sorted({m["voice"] for m in kw_all.meta + neg_all.meta})
    half = [set(voices[0::2]), set(voices[1::2])]
    parts = []
    for h in half:
        kw, neg = (cs.select(lambda m, h=h: m["voice"] in h) for cs in (kw_all, neg_all))
        parts.append({"kw": kw, "neg": neg, "pk": [T.call_posteriors(model.head, e) for e in kw.emb],
                      "pn": [T.call_posteriors(model.head, e) for e in neg.emb], "hours": neg.hours()})
    total = {"common": [0, 0], "per_keyword": [0, 0]}
    det = {"common": {}, "floor": {}}
    for fit, test in ((parts[0], parts[1]), (parts[1], parts[0])):
        grid = list(map(float, T.GRID))
        sw = {"grid": grid, "fa": T.keyword_sweep(fit["pn"], fit["neg"], sm)[0],
              "hits": T.keyword_sweep(fit["pk"], fit["kw"], sm)[1]}
        g = choose_thresholds(sw, fit["hours"], 0.5)
        fa_fit = [sum(f.values()) / fit["hours"] for f in sw["fa"]]
        c = next((th for th, f in zip(grid, fa_fit) if f <= 0.5), grid[-1])

        def on_test(thr):
            hits = len(T.score_calls(test["pk"], test["kw"], thr, sm)["hits"])
            return hits, len(T.score_calls(test["pn"], test["neg"], thr, sm)["false_alarms"])

        for name, thr in (("common", {k: c for k in config.KEYWORDS}), ("per_keyword", g)):
            h, f = on_test(thr)
            total[name][0] += h
            total[name][1] += f
        for th in grid:
            for name, thr in (("common", {k: th for k in config.KEYWORDS}),
                              ("floor", {k: max(th, g[k]) for k in config.KEYWORDS})):
                h, f = on_test(thr)
                det[name].setdefault(th, []).append((h, f))
    n_kw = sum(len(n) for n in kw_all.notes)
    hours = neg_all.hours()
    print(f"== {model_path}: held-out voices in two halves ({len(voices)} voices, {n_kw} keywords, {hours:.2f} h "
          f"of keyword-free calls); smoothing {sm}")
    for name, (h, f) in total.items():
        print(f"  thresholds chosen on the other half at 0.5 FA/h, {name}: {h}/{n_kw} found at {f / hours:.2f} FA/h")
    for rate in (0.5, 1.0, 2.0):
        # read like the DET: both halves at one swept value, their false alarms added
        best = {name: max([sum(x[0] for x in v) for v in d.values() if sum(x[1] for x in v) / hours <= rate],
                          default=0) for name, d in det.items()}
        print(f"  at {rate} FA/h: common threshold {best['common']}/{n_kw}, per-keyword thresholds from the other "
              f"half above a common floor {best['floor']}/{n_kw}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs/calls"))
    ap.add_argument("--folds", default="espeak,kokoro,mbrola")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=str(ROOT / "runs/fa_kw"))
    ap.add_argument("--threshold", type=float, action="append", default=[],
                    help="also print each fold's keywords found and FA/h at this common threshold (a value of the "
                         "evaluation's grid, e.g. the shipped 0.995); repeatable")
    ap.add_argument("--voices", metavar="MODEL", help="instead of the folds: per-keyword thresholds across the "
                    "held-out voices' two halves for this model (.pt), on --work's stored calls")
    args = ap.parse_args(argv)
    if args.voices:
        voice_split(Path(args.voices), Path(args.work))
        return 0
    from spotter import config
    from training import calltrain as T
    from training.calibrate import choose_thresholds
    for held in args.folds.split(","):
        f = fold_posteriors(Path(args.work), held, args.seed, Path(args.store) / f"s{args.seed}")
        P, S, sm = f["posts"], f["sets"], f["smoothing"]
        hours = {k: S[k].hours() for k in ("neg", "src")}
        n_kw = sum(len(n) for n in S["kw"].notes)
        print(f"== trained without {held}: {n_kw} keywords, {hours['neg']:.2f} h of its keyword-free calls, "
              f"{hours['src']:.2f} h of the trained engines' held-out voices; smoothing {sm}")
        rows = []
        for th in T.GRID:
            thr = {k: float(th) for k in config.KEYWORDS}
            rows.append((th, T.score_calls(P["kw"], S["kw"], thr, sm), T.score_calls(P["neg"], S["neg"], thr, sm)))
        src_fa = T.keyword_sweep(P["src"], S["src"], sm)[0]          # false alarms per keyword on the trained engines
        for th, kw, neg in rows:
            if th in args.threshold:
                print(f"  at a common threshold of {th}: {len(kw['hits'])}/{n_kw} found, "
                      f"{len(neg['false_alarms']) / hours['neg']:.2f} FA/h on {held}")
        for rate in RATES:
            ok = [i for i, r in enumerate(rows) if len(r[2]["false_alarms"]) / hours["neg"] <= rate]
            if not ok:
                continue
            th, kw, neg = rows[ok[0]]
            fa, hits, sfa = T.keyword_counts(neg["false_alarms"]), T.keyword_counts(kw["hits"]), src_fa[ok[0]]
            tot = T.keyword_counts(kw["hits"] + kw["missed"])
            print(f"  at {rate} FA/h (threshold {th}): {len(kw['hits'])}/{n_kw} found, "
                  f"{len(neg['false_alarms'])} false alarms on {held}, {sum(sfa.values())} on the others")
            print("    keyword: found/of, false alarms on the unheard engine | on the trained engines' voices")
            print("    " + "; ".join(f"{k} {hits[k]}/{tot[k]}, {fa[k]}|{sfa[k]}" for k in config.KEYWORDS))
        # per-keyword thresholds chosen on the unheard engine's own calls: what any per-keyword rule could reach
        sw = {"grid": list(map(float, T.GRID)), "fa": [T.keyword_counts(r[2]["false_alarms"]) for r in rows],
              "hits": [T.keyword_counts(r[1]["hits"]) for r in rows]}
        for rate in RATES:
            thr = choose_thresholds(sw, hours["neg"], rate)
            kw = T.score_calls(P["kw"], S["kw"], thr, sm)
            neg = T.score_calls(P["neg"], S["neg"], thr, sm)
            print(f"  per-keyword thresholds fitted on {held} itself (upper bound) at {rate} FA/h: "
                  f"{len(kw['hits'])}/{n_kw} found at {len(neg['false_alarms']) / hours['neg']:.2f} FA/h")
        transfer(P, S, sm, hours, n_kw, held, rows, src_fa, f["val_thresholds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

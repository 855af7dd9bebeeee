"""A keyword probe on Whisper base's encoder: a third opinion for the cascade's second stage (experiment).

The shipped verifier forces each keyword's tokens through Whisper's decoder (spotter.verify.Verifier.score); its
encoder already runs once per crop (about 40 ms of the ~330 ms per candidate). This tool trains a small classifier
on that encoding, (43 x 512) frames of the verifier's first crop (1.4 s before the estimated keyword end to 0.35 s
after it) -> which keyword ends there, or none, and measures what it adds to the cascade on stored candidates.

    # 1. crops of the recipe's sentences by train- and val-split voices (all engines), through the channels
    #    (clean, wideband, telephone; the training noise), encoded once
    python tools/whisper_probe.py build --out runs/probe/train_crops.npz
    # 2. the candidates of stored cascade runs (training.verify_eval --cascade ... --json R.json --crops R.npz),
    #    encoded the same way
    python tools/whisper_probe.py encode-cands --runs runs/probe/fold_kokoro,runs/probe/fold_mbrola
    # 3. per run: a probe trained without the run's engine (a fold; or without its test voices: the held-out
    #    run), its score combined with the first stage and the verifier, recall at 0.5 / 1 FA/h
    python tools/whisper_probe.py score --crops runs/probe/train_crops.npz --runs runs/probe/fold_kokoro,...

The probe never sees the engine it is scored on (a fold run) or the voices it is scored on (a held-out run).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shift_suffix(shift: float) -> str:
    """The stored encodings of a run's candidates, their crops ending `shift` s after the estimated end."""
    return ".probe.npz" if shift == 0 else f".probe{shift:+.3f}.npz"


def encode_cands(run: Path, shift: float = 0.0) -> None:
    """run.json's candidates (their windows in run.npz) -> run.probe.npz, the probe's input for each (shift: the
    crop ending that much after the estimated end, run.probe<shift>.npz)."""
    from spotter.verify import Verifier
    from training.probe import encoded
    from training.verify_eval import stored_candidates
    d = stored_candidates(run.with_suffix(".json"))
    z = np.load(run.with_suffix(".npz"))
    audio, off = z["audio"], z["offsets"]
    ver = Verifier()
    feats = None
    t0 = time.time()
    for i, c in enumerate(d["cands"]):
        f = encoded(ver, audio[off[i]:off[i + 1]].astype(np.float32), c["end"] + shift)
        if feats is None:
            feats = np.zeros((len(d["cands"]), *f.shape), np.float16)
        feats[i] = f
    np.savez(run.with_suffix(shift_suffix(shift)), feats=feats)
    print(f"{run}: {len(d['cands'])} candidates encoded ({time.time() - t0:.0f} s)")


def two_fold_by_voice(X: np.ndarray, y: np.ndarray, voices: list[str], l2: float = 1e-2) -> np.ndarray:
    """Logistic combiner of the columns of X fitted on one half of the voices and scored on the other."""
    from spotter.verify import fit_logistic
    vs = sorted(set(voices))
    fold = np.array([vs.index(v) % 2 for v in voices])
    out = np.zeros(len(y))
    A = np.c_[np.ones(len(y)), X]
    for f in (0, 1):
        tr, te = fold != f, fold == f
        w = fit_logistic(A[tr], y[tr], l2)
        out[te] = A[te] @ w
    return out


def cached_probe(crops: list[Path], saved: Path, engine: str | None = None, seed: int = 0, epochs: int = 12):
    """The probe trained on `crops` (without `engine`'s), from `saved` when an earlier run left it there."""
    from spotter.probe import KeywordProbe
    from training.probe import train_probe
    return KeywordProbe.load(saved) if saved.is_file() else train_probe(crops, saved, engine, seed, epochs)


def per_channel_at(score: np.ndarray, y: np.ndarray, kinds: list[str], calls: list[dict], hours: float,
                   fa: float) -> dict[str, float]:
    """Recall per channel (clean / tel) at the run's `fa` FA/h threshold on `score` (one threshold for both)."""
    from training.verify_eval import threshold_at
    t = threshold_at(score, y, hours, fa)
    out = {}
    for ch in sorted({c["kind"] for c in calls}):
        n = sum(c["keywords"] for c in calls if c["kind"] == ch)
        hit = sum(1 for s_, y_, k in zip(score, y, kinds) if y_ == 1 and k == ch and s_ >= t)
        out[ch] = hit / n if n else 0.0
    return out


FEATURES = ("kw", "kw-none", "any")


def probe_feature(probe, frames: np.ndarray, kw: str, feature: str = "kw") -> float:
    """The probe's opinion of a candidate: "kw" the logit of P(kw) against everything else (what the cascade
    uses); "kw-none" the keyword's logit minus none's (another keyword's mass ignored); "any" the logit of
    P(some keyword) against none."""
    if feature == "kw":
        return probe.frames_logit(frames, kw)
    z = probe.logits(frames)
    if feature == "kw-none":
        return float(z[probe.keywords.index(kw)] - z[-1])
    z = z - z.max()
    e = np.exp(z)
    return float(np.log(e[:-1].sum() + 1e-12) - np.log(e[-1] + 1e-12))


def score(crops: list[Path], runs: list[Path], seeds: list[int], epochs: int, weights=None,
          shifts=(0.0,), feature: str = "kw") -> dict:
    """Per run: the probes (one per seed; several: their logits averaged) trained without the run's engine, scored
    alone and combined with the first stage and the forced score (2-fold by voice, across folds, pooled). `shifts`:
    the probe read on crops ending at each of these offsets from the estimated end (encode-cands --shift), the
    highest logit kept."""
    from training.verify_eval import (auc, candidate_features, combined_scores, det_curve, recall_at,
                                      stored_candidates)
    res, kept, kinds, calls = {}, {}, {}, {}
    nets: dict = {}
    for run in runs:
        d = stored_candidates(run.with_suffix(".json"))
        engine = d.get("engine")                   # a fold: its probe never hears it; held-out: test voices are
        key = engine or "all"                      # never in the crops (training.probe.SPLITS)
        if key not in nets:
            stem = "+".join(c.stem for c in crops)           # probes cached beside the first crops file
            nets[key] = []
            for seed in seeds:
                saved = crops[0].with_name(f"{stem}.probe_{key}_s{seed}_e{epochs}.npz")
                nets[key].append(cached_probe(crops, saved, engine, seed, epochs))
        cands = d["cands"]
        p = np.max([[np.mean([probe_feature(n, f, c["kw"], feature) for n in nets[key]]) for f, c in
                     zip(np.load(run.with_suffix(shift_suffix(sh)))["feats"], cands)] for sh in shifts], axis=0)
        f2, yy, _ = candidate_features(d)
        voices = [c["voice"] for c in cands]
        hours, n = d["hours"], d["keywords"]
        rows = {"first": f2[:, :1], "first+v": f2, "probe": p[:, None], "first+probe": np.c_[f2[:, :1], p],
                "first+v+probe": np.c_[f2, p]}
        out = {}
        print(f"\n{run.name} ({engine or 'held-out voices'}): {len(cands)} candidates, {int(yy.sum())} true, "
              f"{n} keywords, {hours:.2f} h; AUC first {auc(f2[yy == 1, 0], f2[yy == 0, 0]):.3f}, verifier "
              f"{auc(f2[yy == 1, 1], f2[yy == 0, 1]):.3f}, probe {auc(p[yy == 1], p[yy == 0]):.3f}")
        shipped = combined_scores(d)
        curve = det_curve(shipped, yy, hours, n)
        out["shipped cascade"] = [recall_at(curve, fa) for fa in (0.5, 1, 2)]
        print(f"  {'shipped cascade':22s} recall at 0.5 / 1 / 2 FA/h: " + " / ".join(f"{r:5.1%}" for r in out["shipped cascade"]))
        if weights is not None:                # fixed (a, b, c, d) on (1, first, forced, probe)
            curve = det_curve(np.c_[np.ones(len(yy)), f2, p] @ np.asarray(weights), yy, hours, n)
            out["fixed weights"] = [recall_at(curve, fa) for fa in (0.5, 1, 2)]
            print(f"  {'weights ' + ','.join(f'{w:g}' for w in weights):22s} recall at 0.5 / 1 / 2 FA/h: "
                  + " / ".join(f"{r:5.1%}" for r in out["fixed weights"]))
        for name, X in rows.items():
            sc = two_fold_by_voice(X, yy, voices) if X.shape[1] > 1 else X[:, 0]
            curve = det_curve(sc, yy, hours, n)
            out[name] = [recall_at(curve, fa) for fa in (0.5, 1, 2)]
            print(f"  {name + ' (2-fold)' if X.shape[1] > 1 else name:22s} recall at 0.5 / 1 / 2 FA/h: "
                  + " / ".join(f"{r:5.1%}" for r in out[name]))
        res[run.name] = out
        kept[run.name] = (rows, yy, hours, n, engine)
        kinds[run.name] = [c["kind"] for c in cands]
        calls[run.name] = d.get("calls", [])
    folds = [k for k, v in kept.items() if v[4]]
    if len(folds) > 1:      # combiner fitted on the other folds' candidates (across engines; all folds for others)
        from spotter.verify import fit_logistic
        print("\ncombiner fitted on the other folds' candidates:")
        for name, (rows, yy, hours, n, _) in kept.items():
            for feat in ("first+v", "first+v+probe"):
                others = [k for k in folds if k != name]
                A = np.concatenate([np.c_[np.ones(len(kept[k][1])), kept[k][0][feat]] for k in others])
                w = fit_logistic(A, np.concatenate([kept[k][1] for k in others]))
                sc = np.c_[np.ones(len(yy)), rows[feat]] @ w
                curve = det_curve(sc, yy, hours, n)
                r = [recall_at(curve, fa) for fa in (0.5, 1, 2)]
                res[name][feat + " (across)"] = r
                ch = per_channel_at(sc, yy, kinds[name], calls[name], hours, 0.5)
                res[name][feat + " (across) per channel at 0.5"] = ch
                print(f"  {name:18s} {feat:15s} w {np.round(w, 2)}: " + " / ".join(f"{x:5.1%}" for x in r)
                      + "; at 0.5 FA/h " + ", ".join(f"{k} {v:.1%}" for k, v in ch.items()))
        feat = "first+v+probe"             # fitted on every fold pooled: the weights a cascade would ship
        A = np.concatenate([np.c_[np.ones(len(kept[k][1])), kept[k][0][feat]] for k in folds])
        w = fit_logistic(A, np.concatenate([kept[k][1] for k in folds]))
        res["pooled_weights"] = [float(x) for x in w]
        print(f"\n{feat} fitted on every fold pooled: (a, b, c, d) = {np.round(w, 3)}; recall at 0.5 / 1 / 2 FA/h:")
        for name in folds:
            rows, yy, hours, n, _ = kept[name]
            curve = det_curve(np.c_[np.ones(len(yy)), rows[feat]] @ w, yy, hours, n)
            print(f"  {name:18s} " + " / ".join(f"{recall_at(curve, fa):5.1%}" for fa in (0.5, 1, 2)))
    return res


def recordings(run: Path, real: Path, crops: Path, n: int, seed: int = 0, out: Path | None = None) -> dict:
    """The retraining use case for the probe, on real people: a probe trained on the recipe's synthetic crops plus
    the first `n` real clips of each keyword (from the first half of its files in numeric order: the clips carry
    no speaker labels, as tools/recordings_curve.py splits them), against the synthetic-only probe, both scored on a
    stored real cascade run's candidates (training.verify_eval --real-cascade ... --crops; encode-cands) without
    any candidate of a first-half clip. Combiners are fitted 2-fold by voice on those candidates."""
    from evaluation.realeval import keyword_recordings
    from training.probe import build_crops, recording_items
    from training.verify_eval import auc, candidate_features, det_curve, recall_at, stored_candidates
    clips = keyword_recordings(real)
    first = {}
    for kw in {k for k, _ in clips}:
        files = [f for k, f in clips if k == kw]
        first[kw] = files[:len(files) // 2]
    trained = {str(f.resolve()) for kw in first for f in first[kw][:n]}
    held = {str(f.resolve()) for kw in first for f in first[kw]}
    rec = crops.with_name(f"{crops.stem}_rec{n}.npz")
    out = out or crops.with_name(f"{crops.stem}+rec{n}.probe_s{seed}.npz")
    if not rec.is_file():
        items = [it for it in recording_items([real]) if str(Path(it["s"]["path"]).resolve()) in trained]
        build_crops("en_wake", rec, seed, items=items)
    probes = {"synthetic": cached_probe([crops], crops.with_name(f"{crops.stem}.probe_all_s{seed}_e12.npz"), seed=seed),
              f"+ {n} real clips per keyword": cached_probe([crops, rec], out, seed=seed)}
    d = stored_candidates(run.with_suffix(".json"))
    keep = np.array([str(Path(c["voice"]).resolve()) not in held for c in d["cands"]])
    cands = [c for c, k in zip(d["cands"], keep) if k]
    cx = np.load(run.with_suffix(".probe.npz"))["feats"][keep]
    f2, yy, _ = candidate_features(d)
    f2, yy = f2[keep], yy[keep]
    n_kw = len(clips) - len(held)
    voices = [c["voice"] for c in cands]
    res = {}
    print(f"\n{run.name}: {len(cands)} candidates ({int(yy.sum())} true) of {n_kw} second-half clips and the "
          f"keyword-free speech ({d['hours']:.2f} h); {len(trained)} first-half clips in the probe's crops")
    sc = two_fold_by_voice(f2, yy, voices)
    res["first+v"] = [recall_at(det_curve(sc, yy, d["hours"], n_kw), fa) for fa in (0.5, 1, 2)]
    print(f"  {'first+v (2-fold)':44s} " + " / ".join(f"{r:5.1%}" for r in res["first+v"]))
    for name, pr in probes.items():
        p = np.array([pr.frames_logit(f, c["kw"]) for f, c in zip(cx, cands)])
        for feat, X in (("probe", p[:, None]), ("first+v+probe (2-fold)", np.c_[f2, p])):
            sc = X[:, 0] if X.shape[1] == 1 else two_fold_by_voice(X, yy, voices)
            r = [recall_at(det_curve(sc, yy, d["hours"], n_kw), fa) for fa in (0.5, 1, 2)]
            res[f"{name}: {feat}"] = r
            print(f"  {name + ': ' + feat:44s} " + " / ".join(f"{x:5.1%}" for x in r)
                  + (f"  (AUC {auc(p[yy == 1], p[yy == 0]):.3f})" if feat == "probe" else ""))
    return res


B_GRID = (0.0, 0.15, 0.3, 0.45, 0.6, 0.9, 1.27)
C_GRID = (0.1, 0.232, 0.35, 0.5)


def operating(folds: list[Path], calib: Path, d_weight: float = 0.688, budget: float = 0.5, extra=()) -> dict:
    """How much the cascade should trust each opinion so that a threshold chosen on the held-out voices of the
    trained engines (calib, as the shipped one is) carries over to engines the first stage never heard. For every
    (b, c) of B_GRID x C_GRID, with d fixed: the threshold at `budget` FA/h on calib, then recall and FA/h at it on
    each fold. The weights are chosen leave-one-fold-out: on the other folds (the most keywords found with every
    one of them within the budget), scored on the fold left out. `extra` runs (e.g. another head seed's folds) are
    scored at the weights chosen on all folds."""
    from training.verify_eval import candidate_features, probe_logits, stored_candidates, threshold_at

    def feats(p):
        d = stored_candidates(p)
        x, y, _ = candidate_features(d)
        return d, np.c_[x, probe_logits(d)], y
    dc, Xc, yc = feats(calib)
    runs = {p.stem: feats(p) for p in list(folds) + list(extra)}
    names = [p.stem for p in folds]
    table = {}
    print(f"{'b':>5s} {'c':>6s}  " + "  ".join(f"{n:>22s}" for n in runs) + f"   (recall, FA/h at the {budget:g} FA/h "
          f"threshold of {calib.stem}; d = {d_weight:g})")
    for b in B_GRID:
        for c in C_GRID:
            w = np.array([b, c, d_weight])
            t = threshold_at(Xc @ w, yc, dc["hours"], budget)
            row = {}
            for n, (d, X, y) in runs.items():
                acc = X @ w >= t
                row[n] = (float(np.sum(acc & (y == 1)) / d["keywords"]), float(np.sum(acc & (y == 0)) / d["hours"]))
            table[(b, c)] = (t, row)
            print(f"{b:5.2f} {c:6.3f}  " + "  ".join(f"{r:6.1%} at {f:4.2f} FA/h" for r, f in row.values()))

    def choose(on):
        ok = [(sum(table[k][1][n][0] for n in on), k) for k in table
              if all(table[k][1][n][1] <= budget for n in on)]
        return max(ok)[1] if ok else None
    out = {"lofo": {}}
    print("\nweights chosen on the other folds, scored on the one left out:")
    for n in names:
        k = choose([m for m in names if m != n])
        r, f = table[k][1][n]
        out["lofo"][n] = {"b": k[0], "c": k[1], "recall": r, "fa_per_hour": f}
        print(f"  {n:24s} b {k[0]:.2f}, c {k[1]:.3f}: {r:6.1%} at {f:.2f} FA/h")
    k = choose(names)
    t = table[k][0]
    out["all"] = {"b": k[0], "c": k[1], "d": d_weight, "threshold_logit": float(t)}
    print(f"chosen on all folds: b {k[0]:.2f}, c {k[1]:.3f}, d {d_weight:g}; threshold {t:.3f} (on b x1 + c x2 + d p)")
    for n in runs:
        r, f = table[k][1][n]
        print(f"  {n:24s} {r:6.1%} at {f:.2f} FA/h")
    return out


def cost(n: int = 20) -> None:
    """Process time per candidate, interleaved in one run on a noise window: the shipped probe's forward pass, the
    two-crop verifier, and a candidate the probe gate rejects (the first crop's encoding and the probe only)."""
    from spotter.verify import PROBE_GATE, default_probe, shared_verifier
    ver, probe = shared_verifier(), default_probe()
    a = np.random.default_rng(0).normal(0, 0.05, 16000 * 4).astype(np.float32)
    enc = np.asarray(ver.encode(a, 3.0, 1.4)[0])
    tp, tv, tg = [], [], []
    for i in range(n + 3):
        t = time.process_time()
        probe.logit(enc, "gaz")
        t1 = time.process_time()
        ver.score(a, ["gaz"], 3.0)
        t2 = time.process_time()
        forced, logits = ver.assess(a, ["gaz"], 3.0, probe=probe, gate=PROBE_GATE)
        if i >= 3:                                  # the first calls warm up
            tp.append(t1 - t)
            tv.append(t2 - t1)
            tg.append(time.process_time() - t2)
    assert forced["gaz"] is None, f"the noise window passed the gate (probe logit {logits['gaz']:.1f})"
    print(f"probe p50 {1000 * np.median(tp):.1f} ms, verifier (two crops) p50 {1000 * np.median(tv):.0f} ms of "
          f"process time per candidate: the probe adds {np.median(tp) / np.median(tv):.1%}")
    print(f"a candidate rejected by the probe gate (logit {logits['gaz']:.1f} < {PROBE_GATE:g}): p50 "
          f"{1000 * np.median(tg):.0f} ms, {np.median(tg) / np.median(tv):.1%} of the verifier's")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, default=ROOT / "runs" / "probe" / "train_crops.npz")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--limit", type=int)
    b.add_argument("--recipe", default="calls", help="calls (French) or en_wake (English wake words)")
    b.add_argument("--speed", type=float, default=0.0, help="speed perturbation: each sentence played up to this "
                   "much faster or slower (e.g. 0.12) before its crop is encoded")
    b.add_argument("--channels", default="clean,wide,tel", help="the channels the crops take in turn")
    e = sub.add_parser("encode-cands")
    e.add_argument("--runs", required=True, help="comma-separated stored runs (R for R.json + R.npz)")
    e.add_argument("--shift", type=float, default=0.0, help="crops ending this long (s) after the estimated end")
    s = sub.add_parser("score")
    s.add_argument("--crops", default=str(ROOT / "runs" / "probe" / "train_crops.npz"),
                   help="crops file(s) the probes train on, comma-separated")
    s.add_argument("--runs", required=True)
    s.add_argument("--seed", default="0", help="the probes' seed; several, comma-separated: their logits averaged")
    s.add_argument("--epochs", type=int, default=12)
    s.add_argument("--feature", choices=FEATURES, default="kw", help="the probe's opinion (probe_feature)")
    s.add_argument("--shifts", default="0", help="comma-separated crop-end offsets (s; encode-cands --shift): the "
                   "highest probe logit over them")
    s.add_argument("--json", type=Path)
    s.add_argument("--recipe", default="calls", help="the recipe whose keyword set the runs use")
    s.add_argument("--weights", help="a,b,c,d: also rank by a + b first + c forced + d probe (e.g. the shipped "
                   "spotter.verify.PROBE_PARAMS)")
    o = sub.add_parser("operating", help="the opinions' weights whose held-out threshold carries over to unheard "
                       "engines (stored runs with probe logits)")
    o.add_argument("--runs", required=True, help="comma-separated fold runs' .json files")
    o.add_argument("--calib", type=Path, required=True, help="the held-out voices' run (.json)")
    o.add_argument("--extra", default="", help="comma-separated runs scored at the weights chosen on all folds")
    o.add_argument("--json", type=Path)
    sub.add_parser("cost")
    r = sub.add_parser("recordings", help="a probe retrained with real clips, on the other real clips")
    r.add_argument("--runs", required=True, help="comma-separated stored real cascade runs (R: R.json, R.probe.npz)")
    r.add_argument("--real", type=Path, required=True, help="the real recordings, DIR/<keyword>/*")
    r.add_argument("--crops", type=Path, default=ROOT / "runs" / "probe" / "en_crops.npz")
    r.add_argument("--n", type=int, default=100, help="real clips per keyword in the probe's crops")
    r.add_argument("--seed", type=int, default=0, help="the probes' seed")
    r.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "build":
        from training.probe import build_crops
        from training.recipe import use_recipe_keywords
        from training.verify_eval import calls_recipe
        use_recipe_keywords(calls_recipe(a.recipe))
        build_crops(a.recipe, a.out, a.seed, a.limit, a.speed, tuple(a.channels.split(",")))
    elif a.cmd == "cost":
        cost()
    elif a.cmd == "recordings":
        from training.recipe import use_recipe_keywords
        from training.verify_eval import calls_recipe
        use_recipe_keywords(calls_recipe("en_wake"))
        res = {r: recordings(Path(r), a.real, a.crops, a.n, a.seed) for r in a.runs.split(",")}
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
    elif a.cmd == "operating":
        from training.recipe import use_recipe_keywords
        from training.verify_eval import calls_recipe
        use_recipe_keywords(calls_recipe())
        res = operating([Path(x) for x in a.runs.split(",")], a.calib,
                        extra=[Path(x) for x in a.extra.split(",") if x])
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
    elif a.cmd == "encode-cands":
        for r in a.runs.split(","):
            encode_cands(Path(r), a.shift)
    else:
        from training.recipe import use_recipe_keywords
        from training.verify_eval import calls_recipe
        use_recipe_keywords(calls_recipe(a.recipe))
        res = score([Path(c) for c in a.crops.split(",")], [Path(r) for r in a.runs.split(",")],
                    [int(x) for x in a.seed.split(",")], a.epochs,
                    [float(x) for x in a.weights.split(",")] if a.weights else None,
                    tuple(float(x) for x in a.shifts.split(",")), a.feature)
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

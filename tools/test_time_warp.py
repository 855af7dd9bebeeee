"""Test-time warps: score each call through the backbone at a few fixed log-mel warps and average the posteriors.

    python tools/test_time_warp.py --work runs/tw --warps 0.9,1.1 --out runs/tta embed
    python tools/test_time_warp.py --work runs/tw --warps 0.9,1.1 --out runs/tta score

Training hears every sentence again through a warped log-mel (the frequency axis stretched by a factor drawn in
0.88-1.12: calls.WarpedMel). Hypothesis: a voice the model never heard sounds more like one it did through one of a
few fixed warps, so the mean of the head's posteriors over the unwarped log-mel and a few warped copies (at 1 + n
times the first stage's cost) finds more of an unheard engine's keywords at the same false-alarm rate.

`embed` re-makes the stored evaluation calls of --work (eval_kw, eval_kw_gen, eval_neg, loeo_neg: the same
sentences, pauses, channels and noise, drawn from the same seeds) and embeds them through each fixed warp, stored
as --out/w<warp>_<set>.npz. `score` takes each leave-one-engine-out fold head (--work/fold_E/first_stage.pt, scored
on engine E's keyword calls and E's own keyword-free calls) and the all-engine head (--head, scored on the
held-out voices), and prints recall at 0.5 / 1 FA/h (common threshold swept on the negatives, as the model card
counts it) and keyword-clip accuracy, unwarped and with the posteriors averaged over the warps.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ("eval_kw", "eval_kw_gen", "eval_neg", "loeo_neg")


class FixedWarp:
    """A call's embeddings through a log-mel warped by one fixed factor (calltrain.embed_calls' features)."""
    draws = False

    def __init__(self, warp: float):
        self.warp = float(warp)

    def __call__(self, model, audio: np.ndarray) -> np.ndarray:
        from training import calls as C
        return C.stream_embeddings(C.WarpedMel(model, self.warp), audio)


def embed(recipe, warps: list[float], out: Path) -> None:
    from training import calls as C
    from training import calltrain as T
    from training.recipe import real_audio_files
    plan = recipe.calls
    voices, splits = T.plan_voices(plan)
    jobs = T.plan_jobs(plan, voices, splits)
    noise = T.noise_halves(real_audio_files(recipe.data))
    out.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        utts = C.synthesize_utterances(jobs[name], plan.cache_dir, workers=2)
        for w in warps:
            path = out / f"w{w:g}_{name}.npz"
            if path.is_file():
                continue
            t0 = time.time()
            T.embed_set(plan, name, utts, noise, features=FixedWarp(w)).save(path)
            print(f"{path}: {time.time() - t0:.0f} s", flush=True)


def score(work: Path, head_path: Path, warps: list[float], out: Path) -> None:
    from spotter.model import load_model
    from training import calltrain as T
    sets, info = T.load_callsets(work)
    warped = {w: T.merge_parts({n: T.CallSet.load(out / f"w{w:g}_{n}.npz") for n in SETS}) for w in warps}
    folds = sorted(p.parent.name.removeprefix("fold_") for p in work.glob("fold_*/first_stage.pt"))
    jobs = [(f"fold {e}", work / f"fold_{e}" / "first_stage.pt", lambda m, e=e: m["engine"] == e, e)
            for e in folds] + [("all engines, held-out voices", head_path, None, None)]
    print(f"warps {warps}; posteriors averaged with the unwarped ones (equal weights)")
    for title, path, keep, engine in jobs:
        model = load_model(path)
        head, thr, sm = model.head.eval(), model.detector.thresholds, model.detector.smoothing_steps

        def pick(s):
            if engine is not None:
                return s["eval_kw"].select(keep), T.engine_negatives(s, engine)
            return T.held_out_voices(s["eval_kw"], info), s["eval_neg"]
        kw0, neg0 = pick(sets)
        post = {1.0: ([T.call_posteriors(head, e) for e in kw0.emb], [T.call_posteriors(head, e) for e in neg0.emb])}
        for w in warps:
            kw, neg = pick(warped[w])
            assert [m["voice"] for m in kw.meta] == [m["voice"] for m in kw0.meta] and len(neg.emb) == len(neg0.emb)
            post[w] = ([T.call_posteriors(head, e) for e in kw.emb], [T.call_posteriors(head, e) for e in neg.emb])
        rows = {"unwarped": [1.0], **{f"warp {w:g} alone": [w] for w in warps}, "mean of all": [1.0, *warps]}
        print(f"\n{title}: {sum(len(n) for n in kw0.notes)} keywords, {neg0.hours():.2f} h of keyword-free calls")
        for label, ws in rows.items():
            def mean(i):
                return [np.mean([post[w][i][j] for w in ws], axis=0) for j in range(len(post[1.0][i]))]
            r = T.evaluate_posteriors(mean(0), mean(1), kw0, neg0, thr, sm)
            at = [r.get(f"at_{t}_fa_h") for t in (0.5, 1.0)]
            rec = " / ".join(f"{a['recall']['recall']:.1%} ({a['recall']['found']})" if a else "-" for a in at)
            print(f"  {label:16s} recall at 0.5 / 1 FA/h {rec}; keyword-clip accuracy "
                  f"{r['clip']['accuracy']:.1%}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("embed", "score"))
    ap.add_argument("--config", default="training/configs/calls.toml")
    ap.add_argument("--work", default="runs/tw", help="the run whose stored calls and fold heads are scored")
    ap.add_argument("--head", default="", help="the all-engine model (default: <work>/nofold.pt)")
    ap.add_argument("--warps", default="0.9,1.1")
    ap.add_argument("--out", default="runs/tta")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    warps = [float(x) for x in args.warps.split(",")]
    work, out = Path(args.work), Path(args.out)
    if args.what == "embed":
        from training.recipes import load_recipe
        embed(load_recipe(args.config, [f"work_dir={work}"]), warps, out)
    else:
        score(work, Path(args.head) if args.head else work / "nofold.pt", warps, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

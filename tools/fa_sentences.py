"""Which sentences the false alarms come from: near-miss sentences or ordinary running speech.

    python tools/fa_sentences.py --work runs/calls --model models/default.pt --threshold 0.99 0.995
    python tools/fa_sentences.py --work runs/calls --folds mbrola,kokoro,espeak --seed 0

A quarter of the keyword-free sentences that calibration and evaluation count false alarms on are near-miss
sentences ("Il y a cambrioleur ici.", sentences.NEAR_MISS_FRAMES), the rest caller clauses. The stored call sets keep
no text; calltrain.call_sentences replays how each call was assembled, so each false alarm is given the sentence it
fell in (decision time - 0.25 s, the keyword-end offset, inside [start - 0.3, end + 0.5] s of a sentence).

--model: the model on the stored held-out negatives (test-split voices of every engine, `eval_neg`) and held-out
keyword calls. --folds: each leave-one-engine-out fold's head (trained and calibrated as `spotter train` does, with
head seed --seed; posteriors stored as tools/fa_keywords.py stores them, under --store/s<seed>) on the engine it never heard:
its keyword calls, and its keyword-free calls (`eval_neg` + `loeo_neg` of that engine).

Printed per model or fold: keywords found at 0.5 / 1 / 2 FA/h with false alarms counted on all the keyword-free
speech (as the evaluation counts them) and on its caller clauses alone (their share of the speech time), on a grid
finer than calltrain.GRID (FINE_GRID); the false alarms at the mixed 2 FA/h point by sentence kind; and with
--threshold, every false alarm at that common threshold with its sentence.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS = (0.5, 1.0, 2.0)
KEYWORD_END_OFFSET_S = 0.25      # a decision's window ends about this long after the keyword it heard
SENTENCE_SLACK_S = (0.3, 0.5)    # a false alarm belongs to a sentence from this long before it to this long after
STRETCH_S = (0.2, 0.6)           # a sentence's windows end from this long after its start to this long after its end


def fine_grid() -> np.ndarray:
    """calltrain.GRID with 160 thresholds added from 0.9 to 0.99999, evenly spaced in log(1 - threshold) (steps
    of 6 % in 1 - threshold): 0.5 FA/h points can lie between GRID's values."""
    from training import calltrain as T
    return np.unique(np.round(np.concatenate([T.GRID, 1 - np.logspace(-5, -1, 160)]), 7))


def sweep(kw_posts, kw, neg_posts, neg, smoothing: int) -> list[tuple[float, float, dict]]:
    """(threshold, false alarms per hour, the keyword calls' score_calls result) at every threshold of fine_grid."""
    from spotter import config
    from training import calltrain as T
    rows = []
    for th in fine_grid():
        thr = {k: float(th) for k in config.KEYWORDS}
        fa = len(T.score_calls(neg_posts, neg, thr, smoothing)["false_alarms"]) / neg.hours()
        rows.append((float(th), fa, T.score_calls(kw_posts, kw, thr, smoothing)))
    return rows


def found_at(rows, budgets=BUDGETS) -> list[int]:
    """The most keywords sweep's rows find within each false-alarm budget."""
    return [max([len(r["hits"]) for _, fa, r in rows if fa <= b], default=0) for b in budgets]


def engine_sentences(sentences: dict[str, list], sets: dict, engine: str) -> list:
    """The sentences of T.engine_negatives(sets, engine)'s calls, in its order (eval_neg, then loeo_neg)."""
    both = sets["eval_neg"].meta + sets["loeo_neg"].meta
    return [s for s, m in zip(sentences["eval_neg"] + sentences["loeo_neg"], both) if m["engine"] == engine]


def stored_sentences(work: Path, names=("eval_neg", "loeo_neg")) -> dict[str, list]:
    """{set: each stored call's [(start_s, end_s, text)]} of the recipe's one-copy sets (sentences from the cache)."""
    from training import calls as C
    from training import calltrain as T
    from training.recipes import load_recipe
    base_set_of = T.base_set                     # a separately built part is replayed only where it is stored
    plan = load_recipe(ROOT / "training/configs/calls.toml", [f"work_dir={work}"]).calls
    voices, splits = T.plan_voices(plan)
    jobs = T.plan_jobs(plan, voices, splits)
    out = {}
    for name in names:
        if name in jobs and (name == base_set_of(name) or (work / f"calls_{name}.npz").is_file()):
            missing = C.uncached(jobs[name], plan.cache_dir)
            if len(missing) > 0.01 * len(jobs[name]):   # a few are sentences that failed when the set was built;
                # more means the set was never synthesised here: this tool does not synthesise hours of speech
                sys.exit(f"{plan.cache_dir}: {len(missing)} of {len(jobs[name])} sentences of set {name} are not in "
                         f"the sentence cache (run `spotter train --config training/configs/calls.toml` first)")
            utts = C.synthesize_utterances(jobs[name], plan.cache_dir, workers=2)
            out[name] = T.call_sentences(plan, name, utts)
            stored = T.CallSet.load(work / f"calls_{name}.npz")
            if len(stored.emb) != len(out[name]):
                sys.exit(f"{work}/calls_{name}.npz: {len(stored.emb)} calls stored, the recipe makes "
                         f"{len(out[name])}: stored by another recipe")
    return out


def sentence_at(sentences, t: float) -> str | None:
    hit = [s for s in sentences if s[0] - SENTENCE_SLACK_S[0] <= t <= s[1] + SENTENCE_SLACK_S[1]]
    return hit[-1][2] if hit else None


def false_alarms(posts, sentences, meta, threshold: float, smoothing: int) -> list[tuple]:
    """(keyword, engine, voice, near-miss word or None, sentence) of every decision at a common threshold on
    keyword-free calls."""
    from spotter import config
    from training import calltrain as T
    from training.sentences import near_miss_of
    thr = {k: float(threshold) for k in config.KEYWORDS}
    out = []
    for post, sents, m in zip(posts, sentences, meta):
        for d in T._decide(post, thr, smoothing):
            text = sentence_at(sents, (d.step if d.step >= 0 else d.peak_step) * config.STEP_S - KEYWORD_END_OFFSET_S)
            out.append((d.keyword, m["engine"], m["voice"], near_miss_of(text) if text else None, text or "(pause)"))
    return out


def speech_hours(cs, sentences, kind) -> float:
    """Hours of cs's calls in proportion to the speech time of the sentences whose text `kind` accepts."""
    t = collections.Counter()
    for sents in sentences:
        for a, b, text in sents:
            t[bool(kind(text))] += b - a
    return cs.hours() * t[True] / max(1e-9, t[True] + t[False])


def ordinary_hours(cs, sentences) -> float:
    """Hours of cs's calls in proportion to the speech time of their caller clauses (not near-miss sentences)."""
    from training.sentences import near_miss_of
    return speech_hours(cs, sentences, lambda text: near_miss_of(text) is None)


def sentence_steps(n_steps: int, a: float, b: float) -> np.ndarray:
    """The steps of a call of n_steps whose window ends inside the stretch of a sentence said from a to b s."""
    from training import calls as C
    t = C.window_end_s(n_steps)
    return np.flatnonzero((t >= a + STRETCH_S[0]) & (t <= b + STRETCH_S[1]))


def fold_training_sentences(parts: dict[str, list], sets: dict, held: str) -> list:
    """The sentences of the training calls of the fold without `held` (parts: stored_sentences of 'train' and
    'train_gen'), in the order of load_callsets' merged 'train' set."""
    train = parts["train"] + parts.get("train_gen", []) + parts.get("train_warp", [])
    if len(train) != len(sets["train"].meta):
        sys.exit(f"{len(train)} training calls replayed, {len(sets['train'].meta)} stored: pass every stored part")
    return [s for s, m in zip(train, sets["train"].meta) if m["engine"] != held]


def split_det(kw_posts, kw, neg_posts, neg, sentences, smoothing: int, label: str) -> None:
    """Found at BUDGETS with false alarms counted on all the keyword-free speech and on its caller clauses."""
    from spotter import config
    from training import calltrain as T
    hours, o_hours = neg.hours(), ordinary_hours(neg, sentences)
    rows = []
    for th in fine_grid():
        fas = false_alarms(neg_posts, sentences, neg.meta, th, smoothing)
        near = sum(1 for f in fas if f[3] is not None)
        hits = len(T.score_calls(kw_posts, kw, {k: float(th) for k in config.KEYWORDS}, smoothing)["hits"])
        rows.append((float(th), len(fas) - near, near, hits))
    n_kw = sum(len(n) for n in kw.notes)
    for name, rate in (("all keyword-free speech", lambda o, n: (o + n) / hours),
                       ("caller clauses only", lambda o, n: o / o_hours)):
        found = [max([h for _, o, n, h in rows if rate(o, n) <= b], default=0) for b in BUDGETS]
        print(f"{label}: found at {' / '.join(f'{b:g}' for b in BUDGETS)} FA/h of {name}: "
              f"{' / '.join(map(str, found))} of {n_kw}", flush=True)
    th, o, n, _ = next((r for r in rows if (r[1] + r[2]) / hours <= BUDGETS[-1]), rows[-1])
    print(f"{label}: at the {BUDGETS[-1]:g} FA/h point (threshold {th:g}): {o} false alarms in caller clauses "
          f"({o_hours:.2f} h), {n} in near-miss sentences ({hours - o_hours:.2f} h)", flush=True)


def list_false_alarms(posts, sentences, meta, thresholds, smoothing: int, label: str) -> None:
    for th in thresholds:
        fas = false_alarms(posts, sentences, meta, th, smoothing)
        kinds = collections.Counter((f[1], "near-miss" if f[3] else "clause") for f in fas)
        print(f"{label}: threshold {th:g}: {len(fas)} false alarms {dict(sorted(kinds.items()))}")
        for f in fas:
            print(f"    {f[0]:13s} {f[2]:28s} {f[4]!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/calls")
    ap.add_argument("--model", help="a model artifact (.pt): its false alarms on the held-out negatives")
    ap.add_argument("--folds", help="engines whose leave-one-engine-out folds to read, e.g. mbrola,kokoro,espeak")
    ap.add_argument("--seed", type=int, default=0, help="the folds' head seed (default 0)")
    ap.add_argument("--store", type=Path, default=ROOT / "runs/fa_kw", help="tools/fa_keywords.py's fold posteriors")
    ap.add_argument("--threshold", type=float, nargs="*", default=[], help="list every false alarm at these")
    args = ap.parse_args()
    import torch
    from training import calltrain as T
    torch.set_num_threads(1)
    sents = stored_sentences(args.work)
    sets, info = T.load_callsets(args.work, extra=False)
    if args.model:
        from spotter.model import load_model
        model = load_model(args.model)
        kw, neg = T.held_out_voices(sets["eval_kw"], info), sets["eval_neg"]
        kp = [T.call_posteriors(model.head, e) for e in kw.emb]
        npo = [T.call_posteriors(model.head, e) for e in neg.emb]
        sm = model.detector.smoothing_steps
        split_det(kp, kw, npo, neg, sents["eval_neg"], sm, f"{Path(args.model).name}, held-out voices")
        list_false_alarms(npo, sents["eval_neg"], neg.meta, args.threshold, sm, Path(args.model).name)
    for held in (args.folds.split(",") if args.folds else []):
        sys.path.insert(0, str(ROOT / "tools"))
        from fa_keywords import fold_posteriors
        r = fold_posteriors(args.work, held, args.seed, args.store / f"s{args.seed}")
        fold_sents = engine_sentences(sents, sets, held)
        label = f"fold without {held} (seed {args.seed})"
        split_det(r["posts"]["kw"], r["sets"]["kw"], r["posts"]["neg"], r["sets"]["neg"], fold_sents,
                  r["smoothing"], label)
        list_false_alarms(r["posts"]["neg"], fold_sents, r["sets"]["neg"].meta, args.threshold, r["smoothing"], label)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whisper's live rows as the cascade's proposer, on real people: does a head on Whisper's encoder rows, trained on
synthetic voices only, propose real people's keywords that the verifier then accepts, where the first stage on the
speech embedding does not propose them?

    python tools/whisper_proposer.py --model runs/en/en.pt --work runs/enl --delays 0,1 --seeds 0,1,2 \
        --condition clean --out runs/wp/clean.json

(runs/en and runs/enl as tools/whisper_real.py's docstring makes them.) The streams are exactly
`python -m training.verify_eval --only-real --real-cascade MODEL --conditions C`'s (verify_eval.real_cascade): every
real "alexa" / "computer" clip (clean, or between two real English phrases: `context`), the 151 real speech files,
and the en_wake recipe's held-out synthetic keyword-free sentences as calls, half telephone. Proposers, side by side
on those streams:
- `first stage`: the model at CANDIDATE_FACTOR x its thresholds, as the shipped cascade runs it (VerifiedSpotter),
  and `first stage xF` at F x its thresholds for any other F of --first-factors (the control: a lower threshold
  proposes more too);
- `whisper dD sS xF`: for each delay D of --delays and seed S of --seeds, the recipe's head trained on the live rows
  of --work/d<D> (whisper_real.whisper_head), over each stream's live rows (LiveRows: 4 s encoded every 1 s, each
  row read D s later; one encoding serves every delay), at F x its calibrated thresholds for each F of --factors,
  the same decision rule;
- `union dD sS`: the first stage's candidates and whisper dD sS x<first factor>'s together.
Every candidate is labelled by the one hit rule (evaluation.streams.match_detections) and scored by the shipped
English verifier (two crops, no probe) on its window, once per distinct (stream, keyword, estimated end): proposers
that find the same candidate share its score. Each proposer's candidates go through verify_eval.cascade_report (the
proposer alone, the shipped combiner, a combiner fitted 2-fold by voice), plus the verifier's score alone; the
union ranks by the verifier alone and by a 2-fold fitted logistic on (first stage, Whisper head, verifier).
Latency: a Whisper candidate is decided D to D + 1 s after its row (the hop), before the verifier.

    python tools/whisper_proposer.py --top-false 25 --out runs/wp/context.json

prints the stored run's false candidates (of any proposer) that the verifier scores highest, with the sentences of
the synthetic call each falls in (the calls made again, as the run made them): what decides recall at 0.5 FA/h.
With --plain-negatives instead, every proposer's candidates are ranked again by the verifier alone with the negatives
cut to the real speech files and the synthetic calls made of caller clauses only (no near-miss sentence).

    spotter train --config training/configs/calls.toml --set work_dir=runs/fr --set out=runs/fr/default.pt
    python tools/whisper_rows.py --sets-from runs/fr --work runs/frw          # whole-call rows of the training sets
    python tools/whisper_proposer.py --fold mbrola --calls-work runs/fr --work runs/frw --delays 0,1 --seeds 0 \
        --out runs/wpf/mbrola.json

The same on French voices of an engine the proposers never heard (--fold E): the streams are exactly `python -m
training.verify_eval --only-real --cascade 100000,100000 --fold E --work runs/fr`'s (every keyword sentence and
keyword-free sentence of E's voices, as calls of one voice, half telephone), the first stage is that command's
(fold_first_stage: trained without E, at the rule that ships) and the verifier is French with the keyword probe
trained without E (fold_probe). `first stage` streams that first stage's .pt (verify_eval runs its ONNX export
offline, which the tests hold equal to streaming); that command was not run beside it here. The Whisper heads are trained and
calibrated without E's calls, on whole-call rows (--work without d<D> folders: heads trained on whole-call rows and
on live rows found as many on live rows, README "Whisper's rows heard live"), and run on each stream's live rows at
each delay. The shipped combiner reads a Whisper candidate's head score in the first stage's place.

    python tools/whisper_proposer.py --across runs/wpf/espeak_half.json,runs/wpf/mbrola.json

prints, for each proposer of stored --fold runs, the combiner threshold at --budget FA/h chosen on the other runs'
engines and what it gives on the engine left out: an operating point chosen without the engine it is scored on
(with --apply R, also on stored runs R at the threshold chosen on every fold).

    python tools/whisper_proposer.py --heldout --work runs/frw --delays 0,1 --seeds 0 --out runs/wpf/heldout.json
    python tools/whisper_proposer.py --merge runs/wpf/espeak_half.json,runs/wpf/espeak_tel.json --out runs/wpf/espeak.json

    python tools/whisper_proposer.py --union-across runs/wpf/espeak.json,runs/wpf/kokoro.json,runs/wpf/mbrola.json \
        --apply runs/wpf/heldout.json

--union-across: the first stage and a Whisper head proposing together (each stored run's union), with a combiner
that reads both fitted, and its threshold chosen, on the other runs' engines (verify_eval.fitted_across), beside
each proposer alone fitted the same way. --heldout: the same proposers on `verify_eval --cascade 100000,100000`'s calls of the held-out voices of the engines
the shipped model trained on (its first stage, verifier and probe; Whisper heads trained on every engine). --merge
joins the parts of one measurement run with --limit n --offset k (calls alternate clean and telephone: with n = 2,
offset 0 is the clean calls, 1 the telephone ones).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotter.whisper_proposer import _logit, event_score     # noqa: E402  (the runtime's union features and event scores)
from tools.whisper_real import whisper_head     # noqa: E402
from tools.whisper_rows import LiveRows, delay_rows   # noqa: E402
from training import calltrain as T              # noqa: E402
from training import verify_eval as V            # noqa: E402

SR = V.SR
UNION_TOLERANCE_S = 0.5          # a first-stage and a Whisper candidate of one keyword this close are one candidate


def candidates_of(decisions, step_s: float, end_offset_s: float) -> list[tuple[str, float, float, float]]:
    """(keyword, score, decided_s, estimated end_s) of decide_sequence's decisions, as KeywordSpotter publishes."""
    return [(d.keyword, d.score, d.step * step_s, max(0.0, d.peak_step * step_s - end_offset_s)) for d in decisions]


def union(a: list[dict], b: list[dict]) -> list[dict]:
    """One stream's candidates of two proposers merged: a candidate of b within UNION_TOLERANCE_S of one of a (same
    keyword) joins it; each merged candidate keeps both proposers' scores ("first", "w"; 0 where one did not
    propose it), the verifier's score and the label of the earlier decision."""
    out = [{**c, "w": 0.0} for c in a]
    for c in b:
        same = [o for o in out if o["kw"] == c["kw"] and abs(o["end"] - c["end"]) <= UNION_TOLERANCE_S]
        if same:
            same[0]["w"] = max(same[0]["w"], c["first"])
            same[0]["y"] = max(same[0]["y"], c["y"])
        else:
            out.append({**c, "first": 0.0, "w": c["first"]})
    return out


@functools.lru_cache(maxsize=1)
def _combiner():
    """One Combiner for verifier_feature (built after the recipe's keyword set is active)."""
    from spotter.verify import Combiner
    return Combiner()


def verifier_feature(c: dict) -> float:
    """A stored candidate's verifier score with its keyword's offset removed (the combiner's second feature)."""
    return _combiner().features(c["kw"], 0.5, c["v"])[1]


def verifier_alone(d: dict) -> dict:
    """Recall at 0.5 / 1 / 2 / 5 FA/h of the candidates ranked by the verifier's score alone (verifier_feature)."""
    y = np.array([c["y"] for c in d["cands"]])
    s = np.array([verifier_feature(c) for c in d["cands"]])
    curve = V.det_curve(s, y, d["hours"], d["keywords"])
    return {f"recall_at_{fa:g}": V.recall_at(curve, fa) for fa in (0.5, 1, 2, 5)}


def union_report(d: dict) -> dict:
    """The union's candidates ranked by a logistic on (logit first stage, logit Whisper head, verifier), fitted on
    half the voices and scored on the other half (2-fold by voice, as cascade_report's fitted combiner)."""
    from spotter.verify import fit_logistic
    c = d["cands"]
    X = np.column_stack([np.ones(len(c)), _logit(np.array([x["first"] for x in c])),
                         _logit(np.array([x["w"] for x in c])),
                         np.array([verifier_feature(x) for x in c])])
    y = np.array([x["y"] for x in c])
    voices = sorted({x["voice"] for x in c})
    fold = np.array([voices.index(x["voice"]) % 2 for x in c])
    score = np.zeros(len(c))
    for f in (0, 1):
        tr, te = fold != f, fold == f
        if tr.any() and len(set(y[tr])) == 2:
            w = fit_logistic(X[tr], y[tr])
            score[te] = X[te] @ w
    curve = V.det_curve(score, y, d["hours"], d["keywords"])
    return {f"recall_at_{fa:g}": V.recall_at(curve, fa) for fa in (0.5, 1, 2, 5)}


def streams_again(run: dict, seed: int) -> list[tuple[list[str] | None, float]]:
    """(sentence texts, or None for a real stream; seconds) of each stream of a stored run (made without --limit),
    in its order: verify_eval.real_cascade_streams made again with the run's condition and seed (the same draws, so
    the same streams), each synthetic call's sentences caught as cascade_calls loads them."""
    text_of = {s["path"]: s["text"] for s in V.real_negatives(V.calls_recipe("en_wake"))}
    loaded, out = [], []
    load = V.load_audio
    V.load_audio = lambda path: (loaded.append(path), load(path))[1]
    try:
        _, streams = V.real_cascade_streams(Path(run.get("real", ROOT.parent / "shared/data/speech/real_kws_en")),
                                            run["condition"], seed)
        for audio, _, _, engine, _ in streams:
            out.append(([text_of[p] for p in loaded] if engine != "real" else None, audio.size / SR))
            loaded.clear()
    finally:
        V.load_audio = load
    return out


def top_false(run: dict, n: int, seed: int) -> None:
    """The run's n false candidates with the highest verifier score (offset removed), over every proposer, each
    with the number of proposers that made it and the sentences of its synthetic call."""
    streams = streams_again(run, seed)
    best: dict = {}
    for name, r in run["runs"].items():
        for c in r["cands"]:
            if not c["y"]:
                key = (c.get("stream", c["call"]), c["voice"], c["kw"], round(c["end"], 1))
                s, names = best.get(key, (verifier_feature(c), set()))
                best[key] = (s, names | {name})
    for (call, voice, kw, end), (s, names) in sorted(best.items(), key=lambda kv: -kv[1][0])[:n]:
        texts = streams[call][0]
        where = " | ".join(texts) if texts is not None else "(a real recording)"
        print(f"{s:6.2f} {kw} at {end:.1f} s, {voice}, {len(names)} proposers"
              f"{' (the first stage among them)' if 'first stage' in names else ''}: {where[:300]}")


def plain_negatives(run: dict, seed: int) -> None:
    """Each proposer's candidates ranked by the verifier alone, with the negatives cut to the real speech files and
    the synthetic calls made of caller clauses only (no sentence of the keyword set's near_miss_frames): recall at
    0.5 / 1 / 2 / 5 FA/h over those hours. What 0.5 FA/h would say without the synthetic near misses."""
    from spotter import config
    streams = streams_again(run, seed)
    clauses = config.KEYWORD_SET.clauses

    def plain(texts):
        for t in texts:
            for c in clauses:
                t = t.replace(c, "")
            if t.strip():
                return False
        return True
    synth = [i for i, (texts, _) in enumerate(streams) if texts is not None]
    keep = {i for i, (texts, _) in enumerate(streams) if texts is None or plain(texts)}
    hours_of = lambda ids: sum(streams[i][1] for i in ids) / 3600
    real_h, synth_h = hours_of(set(range(len(streams))) - set(synth)), hours_of(keep & set(synth))
    hours = real_h + synth_h
    print(f"negatives: the real streams ({real_h:.2f} h, the keyword clips' own included) and "
          f"{len(keep & set(synth))} of {len(synth)} synthetic calls (clauses only, {synth_h:.2f} h of "
          f"{hours_of(synth):.2f} h): {hours:.2f} h of {run['hours']:.2f} h")
    for name, r in run["runs"].items():
        cs = [c for c in r["cands"] if c["y"] or c.get("stream", c["call"]) in keep]
        y = np.array([c["y"] for c in cs])
        sc = np.array([verifier_feature(c) for c in cs])
        curve = V.det_curve(sc, y, hours, run["keywords"])
        print(f"{name:24s} verifier alone at 0.5 / 1 / 2 / 5 FA/h: "
              + " / ".join(f"{100 * V.recall_at(curve, fa):5.1f}" for fa in (0.5, 1, 2, 5)) + " %")


def across(paths: list[Path], budget: float = 0.5, apply: list[Path] = ()) -> None:
    """For each proposer of stored --fold runs (one per engine): the shipped combiner's threshold at `budget` FA/h
    chosen on the other runs' candidates pooled (and the one that holds it on each of them alone), scored on the
    run left out, and the ones chosen on them all scored on each `apply` run (verify_eval.threshold_across, as
    `verify_eval --threshold-across` does for the first stage's runs)."""
    runs = {p.stem: json.loads(p.read_text()) for p in list(paths) + list(apply)}
    names = [n for n in next(iter(runs.values()))["runs"] if not n.startswith("union")
             and all(n in r["runs"] for r in runs.values())]
    for name in names:
        print(f"\n{name}:", end="")
        V.threshold_across({k: proposer_run(r, r["runs"][name]) for k, r in runs.items()},
                           [p.stem for p in paths], [p.stem for p in apply], budget, each=True)


UNION_FEATURES = ("proposed", "both", "first", "whisper", "verifier", "probe")


def proposer_features(run: dict, union_of: tuple[dict, dict] | None = None,
                      keep: tuple = ("proposed", "first", "whisper", "verifier", "probe")) -> np.ndarray:
    """A row per stored candidate of one proposer's `run` for verify_eval.fitted_across: (1, its score's logit
    against its keyword's threshold (the shipped combiner's first feature), the verifier's score against its
    keyword's offset, the probe's logit). A union run (union_of: the first stage's and the Whisper head's runs, for
    their thresholds): 1 and the columns of UNION_FEATURES named in `keep`: proposed by the first stage, proposed by
    both, the first stage's feature, the Whisper head's (each 0 where that proposer did not propose the candidate),
    verifier, probe."""
    rows = []
    for c in run["cands"]:
        v, p = verifier_feature(c), c.get("p", 0.0)
        if union_of is None:
            rows.append((1.0, _logit(c["first"]) - _logit(run["thresholds"][c["kw"]]), v, p))
            continue
        f, w = c["first"] > 0, c["w"] > 0
        cols = {"proposed": float(f), "both": float(f and w),
                "first": _logit(c["first"]) - _logit(union_of[0]["thresholds"][c["kw"]]) if f else 0.0,
                "whisper": _logit(c["w"]) - _logit(union_of[1]["thresholds"][c["kw"]]) if w else 0.0,
                "verifier": v, "probe": p}
        rows.append((1.0, *(cols[k] for k in UNION_FEATURES if k in keep)))
    return np.array(rows, float).reshape(len(rows), -1)


def union_across(paths: list[Path], budget: float = 0.5, apply: list[Path] = (),
                 keep: tuple = ("proposed", "first", "whisper", "verifier", "probe")) -> dict:
    """The first stage and a Whisper head proposing together: for each delay, each stored --fold run's union (its
    first one of that delay: runs made with other head seeds may be read together) with the union's combiner
    (proposer_features with `keep`) fitted and its threshold at `budget` FA/h chosen on the other runs' engines,
    scored on the engine left out (verify_eval.fitted_across), and, fitted and chosen on every fold, on each `apply`
    run; beside it each proposer alone with a combiner fitted the same way (its own features). A union candidate
    counts for the service at call end with its event score (spotter.whisper_proposer.event_score: the first
    stage's score when it proposed it, else the Whisper head's)."""
    runs = {p.stem: json.loads(p.read_text()) for p in list(paths) + list(apply)}
    folds, applied = [p.stem for p in paths], [p.stem for p in apply]
    unions = {k: {n.split()[1]: n for n in reversed(list(r["runs"])) if n.startswith("union")} for k, r in runs.items()}
    out = {}
    for delay in sorted(d for d in next(iter(unions.values())) if all(d in u for u in unions.values())):
        union = {k: unions[k][delay] for k in runs}
        whisper = {k: next(n for n in r["runs"] if n.startswith(f"whisper {union[k].removeprefix('union ')} x"))
                   for k, r in runs.items()}
        print(f"\nunion {delay} ({', '.join(f'{k}: {n}' for k, n in union.items())}): combiners fitted and thresholds "
              f"at {budget:g} FA/h chosen on the other engines (recall, FA/h [, service]; own: recall at 0.5 / 1 / "
              f"2 FA/h on the run's own curve); union features {', '.join(keep)}")
        res = {}
        for prop in ("first stage", "whisper", "union"):
            data, feats = {}, {}
            for k, r in runs.items():
                name = {"first stage": "first stage", "whisper": whisper[k], "union": union[k]}[prop]
                d = {**proposer_run(r, r["runs"][name]), "keywords_by_kw": keywords_by_kw(r)}
                if prop == "union":
                    d = {**d, "cands": [{**c, "first": event_score(c["first"], c["w"])} for c in d["cands"]]}
                    feats[k] = proposer_features(r["runs"][name], (r["runs"]["first stage"], r["runs"][whisper[k]]),
                                                 keep)
                else:
                    feats[k] = proposer_features(d)
                data[k] = d
            res[prop] = V.fitted_across(data, feats, folds, applied, budget)
            for k, row in res[prop].items():
                ch, own = row["chosen"], row["own"]
                sv = f", service {ch['service']:.1%}" if "service" in ch else ""
                print(f"  {prop:12s} {k:10s} {ch['recall']:6.1%} at {ch['fa_per_hour']:4.2f} FA/h{sv:16s} own "
                      + " / ".join(f"{100 * x:4.1f}" for x in own.values()) + " %")
                if prop == "union" and ch.get("per_keyword"):
                    print("      per keyword: " + ", ".join(f"{kw} {f}/{n}" for kw, (f, n) in
                                                          sorted(ch["per_keyword"].items())))
        out[delay] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="the keyword set's recipe (default en_wake.toml; with --fold, calls.toml)")
    ap.add_argument("--model", type=Path, help="the English first stage (spotter train's .pt)")
    ap.add_argument("--work", type=Path, help="Whisper rows (whisper_rows): live ones in <work>/d<D> for each "
                    "delay, or, where <work>/d<D> is missing, whole-call rows in <work> itself for every delay")
    ap.add_argument("--fold", metavar="ENGINE", help="French instead of real English people: verify_eval --fold "
                    "ENGINE --cascade's calls (every keyword and keyword-free sentence of ENGINE's voices, half "
                    "telephone), its first stage trained without ENGINE (fold_first_stage) and its verifier with "
                    "the probe trained without ENGINE (fold_probe); Whisper heads trained without ENGINE")
    ap.add_argument("--heldout", action="store_true", help="French instead of real English people: verify_eval "
                    "--cascade's calls (every keyword and keyword-free sentence of the test-split voices of the "
                    "engines it trained on, half telephone), the shipped first stage (--model, default "
                    "models/default.pt) and the shipped verifier and probe; Whisper heads trained on every engine")
    ap.add_argument("--calls-work", type=Path, default=ROOT / "runs" / "calls", help="with --fold: the French run "
                    "whose stored call sets train the fold's first stage and probe (verify_eval --work)")
    ap.add_argument("--delays", default="0,1", help="a head per delay D of <work>/d<D> (one encoding serves all)")
    ap.add_argument("--seeds", default="0,1,2", help="Whisper head seeds; empty: no Whisper proposer (no rows made)")
    ap.add_argument("--first-factors", default=f"{0.8:g}", help="the first stage at F x its thresholds, for each F "
                    "(the runtime's CANDIDATE_FACTOR is `first stage`, any other `first stage xF`)")
    ap.add_argument("--factors", default="0.8,0.5", help="Whisper candidates at F x the head's thresholds")
    ap.add_argument("--condition", default="clean", choices=V.REAL_CONDITIONS)
    ap.add_argument("--seed", type=int, default=0, help="the streams' draws (verify_eval --seed)")
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/speech/real_kws_en")
    ap.add_argument("--out", type=Path, help="the run's JSON (written, or read by --top-false / --plain-negatives)")
    ap.add_argument("--limit", type=int, default=0, help="only every n-th stream (a quick check); calls alternate "
                    "clean and telephone, so an even n keeps one channel: --offset 0 the clean calls, 1 the "
                    "telephone ones (--merge joins such parts into the whole)")
    ap.add_argument("--offset", type=int, default=0, help="with --limit n: the streams whose index is this modulo n")
    ap.add_argument("--top-false", type=int, default=0, help="print the stored --out run's N false candidates that "
                    "the verifier scores highest, with their call's sentences, and stop")
    ap.add_argument("--across", help="comma-separated stored --fold runs: each proposer's combiner threshold at "
                    "--budget FA/h chosen on the other runs, scored on each run left out, and stop")
    ap.add_argument("--union-across", help="comma-separated stored --fold runs: the first stage and a Whisper head "
                    "proposing together, with a combiner fitted and a threshold chosen on the other engines "
                    "(union_across); --apply as with --across")
    ap.add_argument("--union-features", default="proposed,first,whisper,verifier,probe", help="with --union-across: "
                    "the union combiner's features, among proposed (by the first stage), both (proposed by both), "
                    "first, whisper (each proposer's score), verifier, probe")
    ap.add_argument("--apply", help="with --across: comma-separated stored runs (e.g. --heldout) scored at the "
                    "threshold chosen on every --across run pooled")
    ap.add_argument("--budget", type=float, default=0.5, help="with --across: false alarms per hour")
    ap.add_argument("--export", type=Path, help="write the runtime's Whisper head (spotter.whisper_proposer."
                    "WhisperHead) here: the recipe's head trained with the first of --seeds on --work's whole-call "
                    "rows of every engine, and the union combiner fitted, with its threshold at --budget FA/h, on "
                    "every --union-across run (delay 1), and stop")
    ap.add_argument("--merge", help="comma-separated stored parts of one measurement (--limit n --offset k): "
                    "written as one run to --out, and stop")
    ap.add_argument("--plain-negatives", action="store_true", help="re-rank the stored --out run with the negatives "
                    "cut to the real speech files and the synthetic calls without near-miss sentences, and stop")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from evaluation.streams import Annotation, match_detections
    from spotter import config
    from spotter.detector import KEYWORD_END_OFFSET_S, KeywordSpotter, decide_sequence
    from spotter.model import load_model
    from spotter.verify import CANDIDATE_FACTOR, Verifier, VerifierConfig, candidate_config
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    if args.export:
        return export(args.export, args.work, [Path(x) for x in (args.union_across or "").split(",") if x],
                      int(args.seeds.split(",")[0]), args.config or str(ROOT / "training/configs/calls.toml"),
                      args.budget)
    if args.union_across:
        keep = tuple(args.union_features.split(","))
        if not set(keep) <= set(UNION_FEATURES):
            ap.error(f"--union-features: choose among {', '.join(UNION_FEATURES)}")
        return union_across([Path(x) for x in args.union_across.split(",")], args.budget,
                            [Path(x) for x in args.apply.split(",")] if args.apply else [], keep)
    if args.across:
        return across([Path(x) for x in args.across.split(",")], args.budget,
                      [Path(x) for x in args.apply.split(",")] if args.apply else [])
    if not args.out:
        ap.error("--out is needed")
    if args.merge:
        use_recipe_keywords(load_recipe(args.config or str(ROOT / "training/configs/calls.toml"), []), None)
        return merge([Path(x) for x in args.merge.split(",")], args.out)
    french = bool(args.fold or args.heldout)
    if args.fold and args.heldout:
        ap.error("--fold and --heldout are two kinds of calls: give one")
    args.config = args.config or str(ROOT / "training/configs" / ("calls.toml" if french else "en_wake.toml"))
    recipe = load_recipe(args.config, [])
    use_recipe_keywords(recipe, None)
    if (args.top_false or args.plain_negatives) and french:
        ap.error("--top-false and --plain-negatives read real-people runs (no --fold)")
    if args.top_false:
        return top_false(json.loads(args.out.read_text()), args.top_false, args.seed)
    if args.plain_negatives:
        return plain_negatives(json.loads(args.out.read_text()), args.seed)
    if not (args.model or french) or (args.seeds and not args.work):
        ap.error("--model, --fold or --heldout (and --work, for Whisper heads) are needed to run the proposers")
    probe = None
    if args.fold:                     # verify_eval --fold's first stage, probe and calls
        args.model = V.fold_first_stage(args.calls_work, args.fold).with_suffix(".pt")
        probe = V.fold_probe(args.calls_work, args.fold)
    elif args.heldout:                # verify_eval --cascade's: the shipped model, verifier and probe
        from spotter.artifact import DEFAULT_MODEL
        from spotter.verify import default_probe
        args.model = args.model or DEFAULT_MODEL
        probe = default_probe()
    model = load_model(args.model)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    first_names = {("first stage" if float(f) == CANDIDATE_FACTOR else f"first stage x{float(f):g}"): float(f)
                   for f in args.first_factors.split(",")}
    factors = [float(f) for f in args.factors.split(",")]
    delays = [float(d) for d in args.delays.split(",")]
    heads, trained = {}, {}           # "dD sS" -> (head, thresholds, smoothing, index of its delay)
    for k, d in enumerate(delays):
        for s in seeds:
            t0 = time.time()
            rows = args.work / f"d{d:g}" if (args.work / f"d{d:g}").is_dir() else args.work
            if (rows, s) not in trained:          # whole-call rows: one head serves every delay
                trained[rows, s] = whisper_head(rows, recipe, s, without=args.fold)[:3]
            head, thr, sm = trained[rows, s]
            heads[f"d{d:g} s{s}"] = (head.eval(), thr, sm, k)
            print(f"Whisper head delay {d:g} s, seed {s}: smoothing {sm}, thresholds {min(thr.values()):.3f}-"
                  f"{max(thr.values()):.3f} [{time.time() - t0:.0f} s]", flush=True)
    ver = Verifier(VerifierConfig(language="fr" if french else "en"))
    live = LiveRows(4.0, 1.0, delays)

    if french:
        from training.calltrain import KOKORO_FOLD_SUFFIX
        sents = V.cached_sentences(Path(recipe.calls.cache_dir),
                                   ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg", "loeo_neg"))
        streams = V.cascade_calls(*V.call_sentences(sents, 100000, 100000, args.seed, args.fold), args.seed)
        args.condition = f"fold {args.fold}" if args.fold else "held-out voices"
    else:
        _, streams = V.real_cascade_streams(args.real, args.condition, args.seed)
    names = (list(first_names) + [f"whisper {h} x{f:g}" for h in heads for f in factors]
             + [f"union {h}" for h in heads if "first stage" in first_names])
    runs = {n: {"cands": [], "thresholds": dict(model.detector.thresholds)} for n in names}
    for h in heads:
        for f in factors:
            runs[f"whisper {h} x{f:g}"]["thresholds"] = dict(heads[h][1])
    seconds, n_notes, by_kw, calls = 0.0, 0, {}, []
    t_start, cpu = time.time(), {"first": 0.0, "rows": 0.0, "heads": 0.0, "verifier": 0.0}
    for n_call, (audio, notes, voice, eng, kind) in enumerate(streams):
        if args.limit and n_call % args.limit != args.offset:
            continue
        seconds += audio.size / SR
        n_notes += len(notes)
        for n in notes:
            by_kw[n[0]] = by_kw.get(n[0], 0) + 1
        calls.append({"service": V.call_service(notes), "keywords": len(notes), "engine": eng, "kind": kind})
        c0 = time.process_time()
        props = {}
        for name, f in first_names.items():
            sp = KeywordSpotter(model, detector=candidate_config(model.detector, f))
            evs = sp.process(audio).events + sp.flush()
            props[name] = [(e.keyword, e.score, e.detected_s, e.end_s) for e in evs]
        c1 = time.process_time()
        rows = live(model, audio) if heads else None
        c2 = time.process_time()
        for h, (head, thr, sm, k) in heads.items():
            post = T.call_posteriors(head, delay_rows(rows, k).astype(np.float32))
            for f in factors:
                cfg = candidate_config(config.DetectorConfig(thresholds=thr, smoothing_steps=sm), f)
                props[f"whisper {h} x{f:g}"] = candidates_of(decide_sequence(post, cfg), config.STEP_S,
                                                            KEYWORD_END_OFFSET_S)
        c3 = time.process_time()
        cpu["first"] += c1 - c0
        cpu["rows"] += c2 - c1
        cpu["heads"] += c3 - c2
        ann = [Annotation(*n) for n in notes]
        per_call, verified = {}, {}          # a verified key is one stream's own
        for name, cands in props.items():
            matched = match_detections([(k, t) for k, _, t, _ in cands], ann)
            per_call[name] = []
            for (kw, score, t, end), m in zip(cands, matched):
                key = (kw, round(end, 2))
                if key not in verified:
                    w0 = max(0.0, end - V.WINDOW_BEFORE_S)
                    win = audio[int(w0 * SR):int((end + 0.4) * SR)]
                    c0, w0_ = time.process_time(), time.perf_counter()
                    vs, ps = ver.assess(win, [kw], end_s=end - w0, probe=probe)
                    verified[key] = (vs[kw], None if probe is None else float(ps[kw]),
                                     1000 * (time.perf_counter() - w0_), 1000 * (time.process_time() - c0))
                    cpu["verifier"] += time.process_time() - c0
                v, p, ms, cpu_ms = verified[key]
                per_call[name].append({"kw": kw, "first": float(score), "v": float(v), "y": int(m is not None),
                                       "voice": voice, "kind": kind, "engine": eng, "ms": ms, "cpu_ms": cpu_ms,
                                       "call": len(calls), "stream": n_call, "end": end, "decided": t})
                if p is not None:
                    per_call[name][-1]["p"] = p
            runs[name]["cands"] += per_call[name]
        for h in (heads if "first stage" in first_names else ()):
            runs[f"union {h}"]["cands"] += union(per_call["first stage"], per_call[f"whisper {h} x{factors[0]:g}"])
        if n_call % 500 == 0:
            print(f"{n_call} streams, {seconds / 3600:.2f} h [{time.time() - t_start:.0f} s]", flush=True)
    hours = seconds / 3600
    print(f"\n{n_call + 1} streams, {hours:.2f} h, {n_notes} keywords ({args.condition}); CPU per second of audio: "
          + ", ".join(f"{k} {100 * v / seconds:.1f} % of a core" for k, v in cpu.items()), flush=True)
    out = {"condition": args.condition, "real": str(args.real), "delays": delays, "hours": hours, "keywords": n_notes, "cpu": cpu,
           "model": str(args.model), "work": str(args.work), "limit": [args.limit, args.offset], "calls": calls,
           "keywords_by_kw": by_kw, "min_evidence": model.detector.suggestion_min_evidence, "runs": {}}
    for name, r in runs.items():
        d = proposer_run(out, r)
        print(f"\n===== {name} ({args.condition}) =====", flush=True)
        rep = report_of(name, d)
        print(f"{name}: {len(r['cands'])} candidates ({rep['candidates_per_hour']:.0f}/h), {rep['true_candidates']} "
              f"true of {n_notes}; verifier alone at 0.5 / 1 FA/h: {rep['verifier alone']['recall_at_0.5']:.1%} / "
              f"{rep['verifier alone']['recall_at_1']:.1%}", flush=True)
        out["runs"][name] = {"report": rep, "cands": r["cands"], "thresholds": r["thresholds"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, default=float))


def export(out: Path, work: Path, runs: list[Path], seed: int, config_path: str, budget: float) -> None:
    """The runtime's artifact (--export): a Whisper head trained on `work`'s rows of every engine with `seed`, and the
    union combiner (UNION_FEATURES) fitted on every stored leave-one-engine-out run of `runs` pooled, its threshold
    at `budget` FA/h chosen on their fitted scores pooled (verify_eval.fitted_across's "apply" fit)."""
    from spotter import whisper_proposer as SW
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    if not runs or not work:
        raise SystemExit("--export needs --work (the rows) and --union-across (the fold runs to fit the combiner)")
    keep = SW.UNION_FEATURES                     # the runtime's features, in the tool's order
    if [k for k in UNION_FEATURES if k in keep] != list(keep):
        raise SystemExit(f"the runtime's union features {keep} are not among the tool's {UNION_FEATURES} in order")
    recipe = load_recipe(config_path, [])
    use_recipe_keywords(recipe, None)
    res = union_across(runs, budget, keep=keep)["d1"]["union"]
    # every fold's fit sees the other folds only; the artifact's fit sees them all: fitted_across's apply row
    from training import verify_eval as V
    data, feats = {}, {}
    for p in runs:
        r = json.loads(p.read_text())
        union_name = next(n for n in r["runs"] if n.startswith("union d1"))
        whisper_name = next(n for n in r["runs"] if n.startswith(f"whisper {union_name.removeprefix('union ')} x"))
        data[p.stem] = {**proposer_run(r, r["runs"][union_name]), "keywords_by_kw": keywords_by_kw(r)}
        feats[p.stem] = proposer_features(r["runs"][union_name], (r["runs"]["first stage"], r["runs"][whisper_name]),
                                          keep)
    all_fit = V.fitted_across({**data, "all": next(iter(data.values()))},
                              {**feats, "all": next(iter(feats.values()))}, list(data), ["all"], budget)["all"]
    t0 = time.time()
    head, thr, sm, _ = whisper_head(work, recipe, seed)
    wh = SW.WhisperHead.from_torch(head.eval(), thr, sm, all_fit["params"], all_fit["chosen"]["threshold"],
                                   meta={"rows": str(work), "seed": seed, "union_fitted_on": [str(p) for p in runs],
                              "union_budget_fa_per_hour": budget,
                              "union_across": {k: v["chosen"] for k, v in res.items()}})
    wh.save(out)
    print(f"{out}: head seed {seed} ({time.time() - t0:.0f} s; smoothing {sm}, thresholds {min(thr.values()):.3f}-"
          f"{max(thr.values()):.3f}); union weights {', '.join(f'{x:.3f}' for x in all_fit['params'])}, threshold "
          f"{all_fit['chosen']['threshold']:.3f} at {budget:g} FA/h on the {len(runs)} runs pooled")


def proposer_run(top: dict, run: dict) -> dict:
    """One proposer's candidates (`run`: cands, thresholds) with what its stored run (`top`) says of all of them:
    hours, keywords, calls and the evidence rule (the input of cascade_report and threshold_across)."""
    return {"hours": top["hours"], "keywords": top["keywords"], "keywords_by_kw": top.get("keywords_by_kw"),
            "factor": None, "min_evidence": top.get("min_evidence", 0.5), "calls": top.get("calls"), **run}


def report_of(name: str, d: dict) -> dict:
    """A proposer's report on its candidates `d` (hours, keywords, thresholds, cands; calls for the service)."""
    if name.startswith("union"):
        rep = {"verifier alone": verifier_alone(d), "fitted (first, whisper, verifier), 2-fold": union_report(d)}
    else:
        rep = {**V.cascade_report(d), "verifier alone": verifier_alone(d)}
    rep["candidates_per_hour"] = len(d["cands"]) / d["hours"]
    rep["true_candidates"] = int(sum(c["y"] for c in d["cands"]))
    return rep


def keywords_by_kw(run: dict) -> dict:
    """A stored run's keyword count per keyword (stored since --merge; before, the denominators of its first
    proposer's per-keyword report)."""
    if run.get("keywords_by_kw"):
        return run["keywords_by_kw"]
    per_kw = next(iter(run["runs"].values()))["report"].get("per_keyword_at_0.5", {})
    return {k: n for k, (_, n) in next(iter(per_kw.values()), {}).items()}


def merge(paths: list[Path], out: Path) -> None:
    """Stored parts of one measurement (--limit n --offset k for each k) as one run: every proposer's candidates
    together over the parts' hours and keywords, its report made again. Parts stored without their calls give a
    run without the service at call end."""
    parts = [json.loads(p.read_text()) for p in paths]
    if len({p["condition"] for p in parts}) != 1:
        raise SystemExit(f"{', '.join(map(str, paths))}: parts of different measurements")
    with_calls = all(p.get("calls") for p in parts)
    by_kw: dict = {}
    for p in parts:
        for k, n in keywords_by_kw(p).items():
            by_kw[k] = by_kw.get(k, 0) + n
    m = {**parts[0], "hours": sum(p["hours"] for p in parts), "keywords": sum(p["keywords"] for p in parts),
         "cpu": {k: sum(p["cpu"][k] for p in parts) for k in parts[0]["cpu"]}, "parts": [str(p) for p in paths],
         "limit": [p.get("limit") for p in parts], "keywords_by_kw": by_kw,
         "calls": [c for p in parts for c in p["calls"]] if with_calls else None, "runs": {}}
    for name in parts[0]["runs"]:
        cands, offset = [], 0
        for p in parts:
            cands += [{**c, "call": c["call"] + offset} for c in p["runs"][name]["cands"]]
            offset += len(p["calls"]) if with_calls else 0
        d = proposer_run(m, {"cands": cands, "thresholds": parts[0]["runs"][name]["thresholds"]})
        print(f"\n===== {name} ({m['condition']}, {len(parts)} parts) =====", flush=True)
        m["runs"][name] = {"report": report_of(name, d), "cands": cands, "thresholds": d["thresholds"]}
    out.write_text(json.dumps(m, default=float))
    print(f"\n{out}: {m['hours']:.2f} h, {m['keywords']} keywords from {len(parts)} parts")


if __name__ == "__main__":
    main()

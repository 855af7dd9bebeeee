"""Whisper's forced score of the keyword against its near misses: does contrasting the keyword with close words
(the recipe's near-miss list, training.texts.NEAR_MISSES) separate the union's false alarms, which are near-miss
words ("pression" for agression, "cambrioleur" for cambriolage: tools/union_false.py), from the keywords?

    python tools/contrast_verifier.py runs/wpf/heldout.json --out runs/cv/heldout.json [--every 2 --offset 0]
    python tools/contrast_verifier.py --analyse runs/cv/espeak.json,runs/cv/kokoro.json,runs/cv/mbrola.json --apply runs/cv/heldout.json

Measure: the stored run's calls are made again (verify_eval.cascade_calls with the run's draws) and each union
candidate's window is cut as the run cut it; on each of the verifier's crops, the keyword's spoken forms and every
near-miss word of its group are forced at the same transcript positions (spotter.verify.Verifier.forced_items,
one batched `align`), each scored by its best position; each word's score is the mean over the crops, as the
verifier's. The keyword's own score must equal the run's stored verifier score (checked: the calls are the run's).

Analyse: the union's combiner as tools/whisper_proposer.py --union-across fits it (verify_eval.fitted_across: fitted
and its threshold at 0.5 FA/h chosen on the other engines), with the contrast (the keyword's score less the best
near miss's) as one more feature, against the same combiner without it. The near-miss words are the ones the
recipe's evaluation calls use (its near-miss sentences draw from the same list, in train and test frames alike),
so with --half the contrast uses only every other word of each group and the false alarms are counted on the
words it never contrasted with, separately.
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
sys.path.insert(0, str(ROOT / "tools"))

# texts.NEAR_MISSES in its order: the number of near-miss words listed for each keyword (its comments' groups)
GROUP_SIZES = {"malaise": 8, "hémorragie": 7, "brûlure": 8, "intoxication": 6, "violences": 7, "agression": 7,
               "vol": 11, "cambriolage": 7, "incendie": 8, "gaz": 11, "effondrement": 7, "électrocution": 7}


def near_miss_groups() -> dict[str, list[str]]:
    """Each keyword's near-miss words (training.texts.NEAR_MISSES cut by GROUP_SIZES)."""
    from training.texts import NEAR_MISSES
    assert sum(GROUP_SIZES.values()) == len(NEAR_MISSES), "texts.NEAR_MISSES changed: update GROUP_SIZES"
    out, i = {}, 0
    for kw, n in GROUP_SIZES.items():
        out[kw] = list(NEAR_MISSES[i:i + n])
        i += n
    return out


def contrast_scores(ver, window: np.ndarray, end_s: float, kw: str, words: list[str]) -> dict[str, float]:
    """{kw and each near-miss word: its best forced score at the crop's transcript positions, mean over crops}."""
    total = {w: 0.0 for w in [kw, *words]}
    for lead in ver.cfg.lead_s:
        enc, n_frames = ver.encode(window, end_s, lead)
        prefix = ver._decode(enc)
        total[kw] += max(ver._forced(enc, n_frames, prefix, kw))     # exactly the verifier's (its own batch)
        items, owner = [], []
        for w in words:
            got = ver.forced_items(prefix, w, forms=ver.word_tokens(w))
            items += got
            owner += [w] * len(got)
        best: dict[str, float] = {}
        for w, lp in zip(owner, ver.align_logprobs(enc, n_frames, items) if items else []):
            best[w] = max(best.get(w, -np.inf), float(lp.sum()))
        for w in words:
            total[w] += best[w]
    return {w: t / len(ver.cfg.lead_s) for w, t in total.items()}


def measure(run_path: Path, out: Path, every: int, offset: int, seed: int) -> None:
    from spotter.verify import Verifier, VerifierConfig
    from training import verify_eval as V
    from training.calltrain import KOKORO_FOLD_SUFFIX
    run = json.loads(run_path.read_text())
    union = next(n for n in run["runs"] if n.startswith("union d1"))
    by_stream: dict = {}
    for i, c in enumerate(run["runs"][union]["cands"]):
        by_stream.setdefault(c["stream"], []).append(i)
    engine = run["condition"].split()[1] if run["condition"].startswith("fold") else None
    recipe = V.calls_recipe("calls")
    sents = V.cached_sentences(Path(recipe.calls.cache_dir),
                               ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg", "loeo_neg"))
    streams = V.cascade_calls(*V.call_sentences(sents, 100000, 100000, seed, engine), seed)
    ver = Verifier(VerifierConfig(language="fr"))
    groups = near_miss_groups()
    res, worst, t0 = {}, 0.0, time.time()
    for n_call, (audio, *_rest) in enumerate(streams):
        if n_call % every != offset or n_call not in by_stream:
            continue
        for i in by_stream[n_call]:
            c = run["runs"][union]["cands"][i]
            end = c["end"]
            w0 = max(0.0, end - V.WINDOW_BEFORE_S)
            win = audio[int(w0 * V.SR):int((end + 0.4) * V.SR)]
            s = contrast_scores(ver, win, end - w0, c["kw"], groups[c["kw"]])
            worst = max(worst, abs(s[c["kw"]] - c["v"]))
            res[i] = s
        if n_call % 100 == 0:
            print(f"{n_call} calls, {len(res)} candidates, largest difference from the stored verifier score "
                  f"{worst:.2e} [{time.time() - t0:.0f} s]", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(run_path), "union": union, "max_diff_from_stored_v": worst,
                               "scores": {str(k): v for k, v in res.items()}}))
    print(f"{run_path}: {len(res)} candidates; largest difference from the stored verifier score {worst:.2e}")


def contrast(scores: dict, kw: str, words: list[str]) -> float:
    """The keyword's forced score less the best of `words`' (0 without words), clipped to [-30, 30]."""
    best = max((scores[w] for w in words), default=None)
    return 0.0 if best is None else float(np.clip(scores[kw] - best, -30.0, 30.0))


def per_token(scores: dict, kw: str, words: list[str], n_tokens) -> float:
    """contrast() on mean log-probabilities per token (each word's sum over its written form's token count): a
    short near miss ("gare", "sol") sums to a higher log-probability than a long keyword whatever was said."""
    best = max((scores[w] / n_tokens(w) for w in words), default=None)
    return 0.0 if best is None else float(np.clip(scores[kw] / n_tokens(kw) - best, -30.0, 30.0))


def _says(text: str, word: str) -> bool:
    """Whether lower-case `text` holds `word` as whole words."""
    import re
    return re.search(r"(?<![\w'])" + re.escape(word.lower()) + r"(?![\w'])", text) is not None


def analyse(paths: list[Path], apply: list[Path], budget: float, seed: int) -> None:
    """The union combiner fitted across engines without and with the contrast (all near-miss words of the
    keyword's group, or every other one: 'half'), and the false alarms at the chosen threshold by whether their call
    holds a near-miss word of that half (the words 'half' contrasts with) or only of the other half (never
    contrasted with by 'half')."""
    import whisper_proposer as WP
    from training import verify_eval as V
    from training.calltrain import KOKORO_FOLD_SUFFIX
    from union_false import call_texts
    groups = near_miss_groups()
    half = {k: v[::2] for k, v in groups.items()}
    other = {k: v[1::2] for k, v in groups.items()}
    from spotter.verify import Verifier, VerifierConfig
    ver = Verifier(VerifierConfig(language="fr"))

    def n_tokens(w: str) -> int:
        return len((ver.keyword_tokens(w) if w in groups else ver.word_tokens(w))[0])
    names = [p.stem for p in paths + apply]
    data, base, extra, runs = {}, {}, {}, {}
    for p in paths + apply:
        cv = json.loads(p.read_text())
        r = json.loads(Path(cv["run"]).read_text())
        runs[p.stem] = r
        union = cv["union"]
        whisper = next(n for n in r["runs"] if n.startswith(f"whisper {union.removeprefix('union ')} x"))
        d = {**WP.proposer_run(r, r["runs"][union]), "keywords_by_kw": WP.keywords_by_kw(r)}
        cands = r["runs"][union]["cands"]
        if len(cv["scores"]) != len(cands):
            raise SystemExit(f"{p}: {len(cv['scores'])} of {len(cands)} candidates measured: measure them all")
        data[p.stem] = {**d, "cands": [{**c, "first": WP.event_score(c["first"], c["w"])} for c in d["cands"]]}
        base[p.stem] = WP.proposer_features(r["runs"][union], (r["runs"]["first stage"], r["runs"][whisper]))
        sc = [(cv["scores"][str(i)], c["kw"]) for i, c in enumerate(cands)]
        extra[p.stem] = {"all": np.array([contrast(s, kw, groups[kw]) for s, kw in sc]),
                         "half": np.array([contrast(s, kw, half[kw]) for s, kw in sc]),
                         "per token": np.array([per_token(s, kw, groups[kw], n_tokens) for s, kw in sc]),
                         "per token, half": np.array([per_token(s, kw, half[kw], n_tokens) for s, kw in sc])}
    folds, applied = [p.stem for p in paths], [p.stem for p in apply]
    recipe = V.calls_recipe("calls")
    sents = V.cached_sentences(Path(recipe.calls.cache_dir),
                               ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg", "loeo_neg"))
    texts = {k: call_texts(sents, r["condition"].split()[1] if r["condition"].startswith("fold") else None, seed)
             for k, r in runs.items()}
    for tag in ("without", "all", "half", "per token", "per token, half"):
        feats = {k: base[k] if tag == "without" else np.column_stack([base[k], extra[k][tag]]) for k in names}
        res = V.fitted_across(data, feats, folds, applied, budget)
        print(f"\ncontrast {tag}: combiner fitted and threshold at {budget:g} FA/h chosen on the other engines "
              f"(recall, FA/h; own: recall at 0.5 / 1 / 2 FA/h)")
        for k, row in res.items():
            ch, own = row["chosen"], row["own"]
            sv = f", service {ch['service']:.1%}" if "service" in ch else ""
            line = (f"  {k:10s} {ch['recall']:6.1%} at {ch['fa_per_hour']:4.2f} FA/h{sv}; own "
                    + " / ".join(f"{100 * x:4.1f}" for x in own.values()) + " %")
            # the false alarms by the near misses of their calls
            s_ = feats[k] @ np.array(row["params"])
            n = {"A": 0, "B": 0, "neither": 0}
            for c, z in zip(data[k]["cands"], s_):
                if z >= ch["threshold"] and not c["y"]:
                    said = " ".join(texts[k][c["stream"]]).lower()
                    n["A" if any(_says(said, w) for w in half[c["kw"]]) else
                      "B" if any(_says(said, w) for w in other[c["kw"]]) else "neither"] += 1
            line += f"; false alarms in calls with a near miss of the half {n['A']}, of the other half {n['B']}, none {n['neither']}"
            print(line, flush=True)
            if ch.get("per_keyword"):
                print("      per keyword: " + ", ".join(f"{kw} {f}/{m}" for kw, (f, m) in
                                                      sorted(ch["per_keyword"].items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--analyse", help="comma-separated measured fold files (this tool's --out)")
    ap.add_argument("--apply", default="", help="comma-separated measured files scored with every fold's fit")
    ap.add_argument("--budget", type=float, default=0.5)
    args = ap.parse_args()
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    use_recipe_keywords(load_recipe(str(ROOT / "training/configs/calls.toml"), []), None)
    if args.analyse:
        return analyse([Path(x) for x in args.analyse.split(",")],
                       [Path(x) for x in args.apply.split(",") if x], args.budget, args.seed)
    if not (args.run and args.out):
        ap.error("a stored run and --out are needed to measure")
    measure(args.run, args.out, args.every, args.offset, args.seed)


if __name__ == "__main__":
    main()

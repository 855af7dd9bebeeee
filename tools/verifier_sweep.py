"""Compare second-stage verifier scores on stored cascade candidates, across engines.

    python -m training.verify_eval --only-real --cascade 100000,100000 --fold mbrola --factor 0.4 \
        --json runs/vsweep/fold_mbrola.json --crops runs/vsweep/fold_mbrola.npz        # (and espeak, kokoro)
    python tools/verifier_sweep.py --runs runs/vsweep/fold_espeak,runs/vsweep/fold_kokoro,runs/vsweep/fold_mbrola \
        --apply runs/vsweep/shipped --out runs/vsweep/features.json

Each run's candidates (the first stage at --factor x its thresholds; their windows kept by --crops) are re-scored
by Whisper base once, and every verifier feature below is taken from that one pass:
  v      the shipped score: the keyword's tokens forced at a few positions of a short greedy transcript, the best
         sum of log-probabilities (spotter.verify.Verifier.score), less the keyword's offset v0;
  lr     the same forced tokens' mean log-probability less that of the greedy transcript's own tokens over the
         same positions (how far the keyword is from what Whisper would write there; <= about 0; with several
         crops, the mean of theirs);
  text   how well the keyword's letters match the greedy transcript's (1 - edit distance / length, best substring).
The first stage's feature is the logit of its peak less the logit of its threshold. A logistic combiner of each
feature set is fitted across engines (on the other runs' candidates) and scored on each run: recall at 0.5 and
1 false alarms per hour, as training.verify_eval's --cross-engine does for the shipped pair (--within: 2-fold by
voice inside each run).

Measured (2026-12-02), greedy transcripts of 12 tokens, candidates at 0.4 x thresholds of the leave-one-engine-out
first stages (runs/vsweep/fold_E: `verify_eval --fold E --factor 0.4 --crops`) and of the shipped model:
`python tools/verifier_sweep.py --runs runs/vsweep/fold_mbrola,runs/vsweep/fold_espeak,runs/vsweep/fold_kokoro
--apply runs/vsweep/shipped`. Recall at 0.5 / 1 FA/h, combiner fitted across engines:

  features          MBROLA (308 kw)   espeak (821)    Kokoro (63)     shipped, held-out voices (162)
  first               3.2 /  4.2 %    2.1 / 5.8 %     3.2 /  3.2 %    23.5 / 32.7 %
  first+v (shipped)  15.3 / 17.2 %    3.2 / 4.8 %    17.5 / 17.5 %    14.8 / 19.1 %
  first+lr           11.7 / 14.6 %    4.0 / 6.7 %    14.3 / 17.5 %    25.3 / 28.4 %
  first+v+lr         16.6 / 16.9 %    4.8 / 5.7 %    17.5 / 17.5 %    17.3 / 19.1 %
  first+v+lr+text    16.6 / 18.5 %    4.9 / 5.7 %    15.9 / 17.5 %    15.4 / 17.9 %

The text match is weak: Whisper base writes the keyword in 2-11 % of the true candidates' crops. Adding lr to the
shipped pair gains 4, 13, 0 and 4 keywords at 0.5 FA/h, each within the noise of 2-3 false alarms, for 12 decoded
tokens instead of 6 (verifier CPU p50 170-200 ms here, on a loaded machine). The shipped verifier is unchanged;
v + lr is the candidate to measure end to end next.

Other crops and a keyword prompt (--lead, --decode, --prompt; 2026-12-05, with each run's per-keyword AUC of the
verifier): README, "The verifier's crop and a keyword prompt". None was kept.
Two crops, their scores averaged (--lead 1.4,1.1: each crop scored and cached on its own, v their mean), shipped, and
a word-boundary term (--boundary), not kept: README, "Two crops for the verifier". Each run also prints the recall
of the shipped combiner (spotter.verify defaults, nothing fitted) on its scores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 16000
FEATURE_SETS = {
    "first": ("first",),
    "first+v (shipped pair)": ("first", "v"),
    "first+lr": ("first", "lr"),
    "first+text": ("first", "text"),
    "first+v+lr": ("first", "v", "lr"),
    "first+v+text": ("first", "v", "text"),
    "first+v+lr+text": ("first", "v", "lr", "text"),
}


def letters(s: str) -> str:
    """Lower-case letters only, accents removed."""
    s = unicodedata.normalize("NFD", s.lower())
    return "".join(c for c in s if "a" <= c <= "z")


def substring_match(word: str, text: str) -> float:
    """1 - (smallest edit distance between `word` and any substring of `text`) / len(word), at least 0."""
    if not word:
        return 0.0
    prev = np.zeros(len(text) + 1)                       # a match may start anywhere in text
    for i, c in enumerate(word, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, t in enumerate(text, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (c != t))
        prev = cur
    return max(0.0, 1.0 - float(prev.min()) / len(word))


def crop_features(ver, window: np.ndarray, end_s: float, kw: str) -> dict:
    """Every feature of one candidate from one encode, one greedy decode and one batched align."""
    enc, n_frames = ver.encode(np.asarray(window, np.float32), end_s, ver.cfg.lead_s[0])
    prefix = ver._decode(enc)
    items = ver.forced_items(prefix, kw)
    own, *forced = ver.align_logprobs(enc, n_frames, [([], list(prefix))] + items)   # + the transcript's own
    v, lr = -np.inf, -np.inf
    for (pre, toks), lp in zip(items, forced):
        v = max(v, float(lp.sum()))
        ref = own[len(pre):len(pre) + len(toks)]
        lr = max(lr, float(lp.mean() - (ref.mean() if ref.size else 0.0)))
    transcript = ver.tokenizer.decode(prefix)
    best = max(substring_match(letters(f), letters(transcript)) for f in _forms(kw))
    return {"v": v, "lr": lr, "text": best, "transcript": transcript}


def _forms(kw: str):
    from spotter.verify import KEYWORD_FORMS
    return KEYWORD_FORMS.get(kw, (kw,))


def keyword_prompt(language: str) -> str:
    """The keyword list of the shipped keyword set of `language`, as Whisper's previous text ("malaise, ...")."""
    from spotter import keywordset
    path = next(p for p in sorted(keywordset.DEFAULT_PATH.parent.glob("*.toml"))
                if keywordset.load(p).language.split("-")[0] == language)
    return ", ".join(keywordset.load(path).keywords) + "."


def variant_tag(cfg) -> str:
    """The verifier setting's part of a cache name: greedy tokens, crop lead, prompt or not."""
    from spotter.verify import VerifierConfig
    shipped_lead = VerifierConfig().lead_s[0]               # the shipped crop keeps the older cache names
    return f"{cfg.decode_tokens}" + (f"_lead{cfg.lead_s[0]:g}" if cfg.lead_s[0] != shipped_lead else "") + \
        ("_prompt" if cfg.prompt else "")


KEPT = ("kw", "first", "y", "voice", "kind", "engine")       # a stored candidate's fields every re-scoring keeps


def rescore_run(run: Path, cache: Path, features) -> dict:
    """`features(window, end_s, keyword)` of every candidate of a stored run (<run>.json and its windows in
    <run>.npz), beside the candidate's own fields and the process CPU it took; cached as `cache`."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from training.verify_eval import stored_candidates
    d = stored_candidates(run.with_suffix(".json"))
    z = np.load(run.with_suffix(".npz"))
    audio, off = z["audio"], z["offsets"]
    out, t0 = [], time.time()
    for i, c in enumerate(d["cands"]):
        c0 = time.process_time()
        f = features(audio[off[i]:off[i + 1]].astype(np.float32), c["end"], c["kw"])
        out.append({**{k: c[k] for k in KEPT}, "v_shipped": c["v"], **f, "cpu_ms": 1000 * (time.process_time() - c0)})
    meta = {"hours": d["hours"], "keywords": d["keywords"], "thresholds": d["thresholds"], "factor": d["factor"]}
    cache.write_text(json.dumps({"meta": meta, "cands": out}, ensure_ascii=False))
    print(f"{run.name}: {len(out)} candidates scored in {time.time() - t0:.0f} s", flush=True)
    return json.loads(cache.read_text())


def score_run(ver, run: Path) -> dict:
    """crop_features of every candidate of a stored run (cached beside it as <run>.features<variant_tag>.json)."""
    return rescore_run(run, run.with_suffix(f".features{variant_tag(ver.cfg)}.json"),
                       lambda window, end_s, kw: crop_features(ver, window, end_s, kw))


def continuation_ids(ver) -> np.ndarray:
    """Token ids that continue the word before them (no leading space, starting with a letter or an apostrophe)."""
    return np.array([i for i in range(ver.eot) if (t := ver.tokenizer.decode([i])) and (t[0].isalpha() or t[0] == "'")
                     and not ver.tokenizer.id_to_token(i).startswith("\u0120")])


def boundary_features(ver, cont: np.ndarray, window: np.ndarray, end_s: float, kw: str) -> dict:
    """v as the shipped verifier takes it, and vb: the best over the forced positions of the keyword's tokens'
    log-probability plus log P(the next token starts a new word), so that "volé" stops counting as "vol"."""
    enc, n_frames = ver.encode(np.asarray(window, np.float32), end_s, ver.cfg.lead_s[0])
    prefix = ver._decode(enc)
    items = ver.forced_items(prefix, kw)
    v = [float(lp.sum()) for lp in ver.align_logprobs(enc, n_frames, items)]
    prompts = [ver.prompt + pre + toks for pre, toks in items]
    e = np.asarray(enc)
    res = ver.model.generate(ver._sv.from_array(np.ascontiguousarray(np.repeat(e, len(items), 0))), prompts,
                             beam_size=1, max_length=max(map(len, prompts)) + 1, return_logits_vocab=True,
                             suppress_blank=False, suppress_tokens=[])
    b = []
    for r in res:
        logits = np.asarray(r.logits[0][0], np.float64)
        p = np.exp(logits - logits.max())
        b.append(float(np.log(max(1.0 - p[cont].sum() / p.sum(), 1e-30))))
    return {"v": max(v), "vb": max(x + y for x, y in zip(v, b)), "b_at_v": b[int(np.argmax(v))]}


def boundary_run(ver, cont: np.ndarray, run: Path) -> list[dict]:
    """boundary_features of every candidate of a stored run (cached as <run>.boundary<decode tokens>.json)."""
    return rescore_run(run, run.with_suffix(f".boundary{ver.cfg.decode_tokens}.json"),
                       lambda window, end_s, kw: boundary_features(ver, cont, window, end_s, kw))["cands"]


def mean_over_crops(runs: list[dict]) -> dict:
    """One run's candidates scored with one crop each (score_run per lead): the first crop's features, with v and
    lr the mean of the crops' (and `v_crops` each crop's v)."""
    out = {"meta": runs[0]["meta"], "cands": []}
    for cs in zip(*(r["cands"] for r in runs)):
        vs = [c["v"] for c in cs]
        out["cands"].append({**cs[0], "v": float(np.mean(vs)), "v_crops": vs,
                             "lr": float(np.mean([max(c["lr"], -30.0) for c in cs])),
                             "cpu_ms": float(sum(c["cpu_ms"] for c in cs))})
    return out


def keyword_auc(cands: list[dict], key: str) -> float:
    """The verifier's AUC of true against false candidates within each keyword, averaged weighted by true
    candidates: how well it ranks a keyword's candidates, whatever its per-keyword offset."""
    from training.verify_eval import auc
    by: dict = {}
    for c in cands:
        by.setdefault(c["kw"], ([], []))[0 if c["y"] else 1].append(c[key])
    pairs = [(auc(p, n), len(p)) for p, n in by.values() if p and n]
    return sum(a * n for a, n in pairs) / sum(n for _, n in pairs) if pairs else float("nan")


def shipped_combiner_recall(d: dict) -> list[float]:
    """Recall at 0.5 and 1 FA/h of the candidates ranked by the shipped combiner (spotter.verify defaults) on v."""
    from spotter.verify import Combiner
    from training.verify_eval import det_curve, recall_at
    cb = Combiner()
    cb.set_first_thresholds(d["meta"]["thresholds"])
    s = np.array([cb.combine(c["kw"], c["first"], c["v"]) for c in d["cands"]])
    curve = det_curve(s, np.array([c["y"] for c in d["cands"]]), d["meta"]["hours"], d["meta"]["keywords"])
    return [recall_at(curve, fa) for fa in (0.5, 1)]


def design(d: dict, names) -> tuple[np.ndarray, np.ndarray]:
    from spotter.verify import Combiner
    cb = Combiner()
    cb.set_first_thresholds(d["meta"]["thresholds"])
    rows, y = [], []
    for c in d["cands"]:
        x1, xv = cb.features(c["kw"], c["first"], c["v"])
        f = {"first": x1, "v": xv, "lr": max(c["lr"], -30.0), "text": c["text"]}
        rows.append([1.0] + [f[n] for n in names])
        y.append(c["y"])
    return np.array(rows), np.array(y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="comma-separated leave-one-engine-out runs (path without suffix)")
    ap.add_argument("--apply", default="", help="comma-separated other runs, scored with the fit on all --runs")
    ap.add_argument("--language", default="fr")
    ap.add_argument("--factor", type=float, default=0.0, help="keep candidates whose peak >= factor x threshold")
    ap.add_argument("--decode", type=int, default=12, help="greedy tokens decoded per crop")
    ap.add_argument("--lead", default="1.4", help="crop start, seconds before the keyword end (the stored windows "
                    "hold training.verify_eval.WINDOW_BEFORE_S); several, comma-separated: v is the mean over the "
                    "crops, as spotter.verify.Verifier.score takes it, the other features the first crop's")
    ap.add_argument("--prompt", action="store_true", help="give Whisper the keyword list as previous text")
    ap.add_argument("--boundary", action="store_true", help="only the word-boundary probe: each run's per-keyword "
                    "AUC of the verifier with and without log P(a new word starts after the keyword) added")
    ap.add_argument("--score-only", action="store_true", help="score and cache the runs' candidates, then stop")
    ap.add_argument("--within", action="store_true", help="fit 2-fold by voice inside each run instead (one run is "
                    "enough)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from spotter.verify import Verifier, VerifierConfig, fit_logistic
    from training.verify_eval import det_curve, recall_at
    folds = [Path(x) for x in args.runs.split(",")]
    apply = [Path(x) for x in args.apply.split(",") if x]
    if args.boundary:
        for r in folds + apply:
            lang = "en" if r.name.startswith("real") else args.language
            ver = Verifier(VerifierConfig(decode_tokens=args.decode, language=lang, lead_s=(float(args.lead),)))
            c = boundary_run(ver, continuation_ids(ver), r)
            print(f"{r.name}: per-keyword AUC of the verifier {keyword_auc(c, 'v'):.3f}, with the word boundary "
                  f"{keyword_auc(c, 'vb'):.3f}, the boundary term alone {keyword_auc(c, 'b_at_v'):.3f}; CPU p50 "
                  f"{np.median([x['cpu_ms'] for x in c]):.0f} ms", flush=True)
        return 0
    leads = [float(x) for x in args.lead.split(",")]
    vers = {}
    data = {}
    for r in folds + apply:
        lang = "en" if r.name.startswith("real") else args.language
        for lead in leads:
            if (lang, lead) not in vers:
                vers[lang, lead] = Verifier(VerifierConfig(decode_tokens=args.decode, language=lang, lead_s=(lead,),
                                                           prompt=keyword_prompt(lang) if args.prompt else ""))
        data[r.name] = mean_over_crops([score_run(vers[lang, lead], r) for lead in leads])
    if args.score_only:
        return 0
    for d in data.values():
        thr = d["meta"]["thresholds"]
        d["cands"] = [c for c in d["cands"] if c["first"] >= args.factor * thr[c["kw"]] - 1e-9]
    results = {}
    names = [r.name for r in folds] + [r.name for r in apply]
    how = "2-fold by voice inside each run" if args.within else "across engines (on the other runs)"
    print(f"\nrecall at 0.5 / 1 FA/h; combiner fitted {how}, candidates at "
          f">= {args.factor or 'their run'}'s factor")
    print(f"{'features':26s} " + " ".join(f"{n:>22s}" for n in names))
    for fs, cols in FEATURE_SETS.items():
        line, results[fs] = [], {}
        designs = {n: design(data[n], cols) for n in names}
        for n in names:
            Xt, yt = designs[n]
            if args.within:                    # 2-fold by voice inside the run
                voices = sorted({c["voice"] for c in data[n]["cands"]})
                half = np.array([voices.index(c["voice"]) % 2 for c in data[n]["cands"]])
                s, w = np.zeros(len(yt)), np.zeros(Xt.shape[1])
                for h in (0, 1):
                    w = fit_logistic(Xt[half != h], yt[half != h])
                    s[half == h] = Xt[half == h] @ w
            else:
                train = [designs[f.name] for f in folds if f.name != n]
                w = fit_logistic(np.concatenate([X for X, _ in train]), np.concatenate([y for _, y in train]))
                s = Xt @ w
            meta = data[n]["meta"]
            curve = det_curve(s, yt, meta["hours"], meta["keywords"])
            r = [recall_at(curve, fa) for fa in (0.5, 1)]
            results[fs][n] = {"w": [float(x) for x in w], "recall_0.5": r[0], "recall_1": r[1]}
            line.append(f"{r[0]:9.1%} / {r[1]:6.1%}   ")
        print(f"{fs:26s} " + " ".join(line))
    for n in names:
        d = data[n]
        y = np.array([c["y"] for c in d["cands"]])
        cpu = np.array([c["cpu_ms"] for c in d["cands"]])
        print(f"{n}: {len(y)} candidates ({int(y.sum())} true), {d['meta']['keywords']} keywords, "
              f"{d['meta']['hours']:.2f} h; verifier CPU p50 {np.median(cpu):.0f} ms; per-keyword AUC of the "
              f"verifier {keyword_auc(d['cands'], 'v'):.3f} (as stored, the shipped setting: "
              f"{keyword_auc(d['cands'], 'v_shipped'):.3f}); text match = 1 on "
              f"{np.mean([c['text'] >= 0.999 for c, t in zip(d['cands'], y) if t]):.0%} of true and "
              f"{np.mean([c['text'] >= 0.999 for c, t in zip(d['cands'], y) if not t]):.1%} of false candidates")
        v2lr = [{**c, "v2lr": c["v"] + 2 * c["lr"]} for c in d["cands"]]
        print(f"  per-keyword AUC of lr alone {keyword_auc(d['cands'], 'lr'):.3f}, of v + 2 lr "
              f"{keyword_auc(v2lr, 'v2lr'):.3f}")
        r = shipped_combiner_recall(d)
        print(f"  the shipped combiner (its weights and per-keyword offsets) on these scores: recall at 0.5 / 1 FA/h "
              f"{r[0]:.1%} / {r[1]:.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The keyword probe run densely over calls, not only at the first stage's candidates (experiment).

The cascade's first stage proposes 32-66 % of an unheard engine's keywords (README, "A probe gate before the
decoder, and where the missing keywords are"); whatever it does not propose, the second stage never sees. This tool
reads Whisper's encoding of a crop ending every HOP seconds of a fold's calls (the same calls as `training.verify_eval
--fold E`, every Nth from --offset: the calls alternate clean and telephone) with the fold's probe (trained without
engine E), or the held-out voices' calls with the shipped first stage and probe (--fold heldout).

    python tools/probe_scan.py scan --fold kokoro --every 2 [--offset 1] --out runs/scan/kokoro.npy
    python tools/probe_scan.py report runs/scan/kokoro.npy          # proposals and the scan alone
    python tools/probe_scan.py combine runs/scan/kokoro.npy --out runs/scan/kokoro_comb.json
    python tools/probe_scan.py merge A_comb.json,B_comb.json --out AB_comb.json
    python tools/probe_scan.py proposers runs/scan/kokoro_comb.json  # the cascade with and without the scan
    python tools/probe_scan.py union-rule --calib H_comb.json R_comb.json,...
    python tools/probe_scan.py cost                                  # the scan's CPU against the first stage's

report: per keyword, the peaks of the probe's log-probability (non-maximum suppression over NMS_S), labelled by
the evaluation's one hit rule (evaluation.streams.match_detections), recall at 0.5 / 1 / 2 / 5 FA/h and how many
keywords have a peak at all. combine: every candidate of the first stage and of the scan through the shipped
cascade, written as a stored cascade run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SR = 16000
NMS_S = 0.8
HELDOUT = "heldout"        # --fold heldout: the held-out voices' calls, the shipped first stage and probe


def sentences_of(fold: str, seed: int):
    """The keyword and keyword-free sentences of a fold's calls (verify_eval --fold E), or of the held-out voices'."""
    from training.calltrain import KOKORO_FOLD_SUFFIX
    from training.verify_eval import call_sentences, cached_sentences
    sents = cached_sentences(ROOT / "cache" / "sentences", ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg",
                                                            "loeo_neg"))
    return call_sentences(sents, 100000, 100000, seed, None if fold == HELDOUT else fold)


def fold_probe(fold: str):
    from spotter.probe import KeywordProbe
    from spotter.verify import default_probe
    if fold == HELDOUT:
        return default_probe()
    return KeywordProbe.load(ROOT / "runs" / "probe" / f"train_crops.probe_{fold}_s0_e12.npz")


def fold_model(fold: str):
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from spotter.onnxmodel import load_any
    from training.verify_eval import fold_first_stage
    return load_any(DEFAULT_ONNX_MODEL if fold == HELDOUT else fold_first_stage(ROOT / "runs" / "calls", fold),
                    threads=1)


def scan_logits(ver, probe, audio: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(len(ends), keywords + 1) probe logits of the crops ending at `ends` (seconds): the verifier's first-crop
    encoding at each, as the cascade computes it for a candidate."""
    from spotter.probe import LEAD_S, crop_frames
    return np.array([probe.logits(crop_frames(np.asarray(ver.encode(audio, t, LEAD_S)[0]))) for t in ends])


def scan(fold: str, hop: float, every: int, out: Path, probe_file: Path | None, seed: int = 0,
         offset: int = 0) -> None:
    from spotter.probe import KeywordProbe
    from spotter.verify import Verifier
    from training.verify_eval import cascade_calls
    kw, neg = sentences_of(fold, seed)
    probe = KeywordProbe.load(probe_file) if probe_file else fold_probe(fold)
    ver = Verifier()
    calls, t0, cpu, secs = [], time.time(), 0.0, 0.0
    for i, (audio, notes, voice, eng, kind) in enumerate(cascade_calls(kw, neg, seed)):
        if i % every != offset:
            continue
        ts = np.arange(0.8, audio.size / SR - 0.05, hop)
        c0 = time.process_time()
        z = scan_logits(ver, probe, audio, ts)
        cpu += time.process_time() - c0
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        calls.append({"t": ts, "logp": logp.astype(np.float32), "notes": notes, "kind": kind, "voice": voice,
                      "seconds": audio.size / SR})
        secs += audio.size / SR
        if len(calls) % 20 == 0:
            print(f"  {len(calls)} calls, {secs / 60:.1f} min of audio, {time.time() - t0:.0f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.array({"calls": calls, "keywords": probe.keywords, "hop": hop, "fold": fold, "every": every, "offset": offset,
                           "cpu_per_audio_s": cpu / max(secs, 1e-9)}, dtype=object), allow_pickle=True)
    print(f"wrote {out}: {len(calls)} calls, {secs / 3600:.2f} h, process time {100 * cpu / secs:.1f} % of a core "
          f"(every {hop} s; encoding and probe only, other jobs beside it: `cost` measures it interleaved)")


def scan_cost(hop: float = 0.2, rounds: int = 3, seed: int = 0) -> None:
    """Process time per second of audio, interleaved in one run on the same minute of cached keyword sentences:
    the shipped first stage streaming in 80 ms steps (the runtime's path) against the probe scan (a crop encoded
    and probed every `hop` s)."""
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from spotter.audio import load_audio
    from spotter.detector import KeywordSpotter
    from spotter.onnxmodel import load_any
    from spotter.verify import default_probe, shared_verifier
    from training.verify_eval import cached_sentences
    sents = [x for x in cached_sentences(ROOT / "cache" / "sentences", ("eval_kw",)) if x["keyword"]][:400:20]
    audio = np.concatenate([load_audio(x["path"]) for x in sents])[:60 * SR]
    model, ver, probe = load_any(DEFAULT_ONNX_MODEL, threads=1), shared_verifier(), default_probe()
    first, dense = [], []
    for r in range(rounds + 1):
        t = time.process_time()
        sp = KeywordSpotter(model)
        for i in range(0, audio.size, 1280):
            sp.process(audio[i:i + 1280])
        t1 = time.process_time()
        scan_logits(ver, probe, audio, np.arange(0.8, audio.size / SR - 0.05, hop))
        if r:                                       # the first round warms up
            first.append(t1 - t)
            dense.append(time.process_time() - t1)
    secs = audio.size / SR
    f, d = np.median(first) / secs, np.median(dense) / secs
    print(f"{secs:.0f} s of speech, {rounds} interleaved rounds: first stage {100 * f:.2f} % of a core, probe scan "
          f"every {hop:g} s {100 * d:.1f} % ({d / f:.0f} x the first stage)")


def first_stage(fold: str, every: int, out: Path, factor: float = 0.8, seed: int = 0, offset: int = 0) -> None:
    """The fold's first stage (never heard `fold`) at factor x its thresholds over the same calls: its candidates
    [(keyword, decided time, score)] per call, beside the scan (out)."""
    from spotter.detector import KeywordSpotter
    from spotter.verify import candidate_config
    from training.verify_eval import cascade_calls
    kw, neg = sentences_of(fold, seed)
    model = fold_model(fold)
    cfg = candidate_config(model.detector, factor)
    calls = []
    for i, (audio, notes, voice, eng, kind) in enumerate(cascade_calls(kw, neg, seed)):
        if i % every != offset:
            continue
        sp = KeywordSpotter(model, detector=cfg)
        evs = (sp.process_offline(audio) if sp.offline_capable else sp.process(audio)).events + sp.flush()
        calls.append([(ev.keyword, float(ev.detected_s), float(ev.score)) for ev in evs])
    np.save(out, np.array(calls, dtype=object), allow_pickle=True)
    print(f"wrote {out}: first-stage candidates of {len(calls)} calls")


MERGE_S = 0.6


def combine(path: Path, out: Path, floor: float = -2.0, factor: float = 0.8, seed: int = 0) -> None:
    """The cascade with two proposers on a scan's calls: the fold's first stage at 0.8 x its thresholds and the
    probe scan's peaks above `floor`. A peak within MERGE_S of a first-stage candidate of its keyword joins it; any
    other peak is a candidate of its own, with the first stage's best smoothed score near it as its first-stage
    score. Every candidate is verified (forced score and the fold's probe at its estimated end, as the cascade
    does) and labelled by the hit rule (in descending probe order); written as a stored cascade run (out .json,
    verify_eval --cascade-json / --cross-engine read it)."""
    import json
    from spotter.detector import KEYWORD_END_OFFSET_S, STEP_S, KeywordSpotter
    from spotter.verify import Verifier, candidate_config
    from evaluation.streams import Annotation
    from training.verify_eval import WINDOW_BEFORE_S, call_service, cascade_calls
    d = np.load(path, allow_pickle=True).item()
    fold, every, kws, offset = d["fold"], d["every"], d["keywords"], d.get("offset", 0)
    kw, neg = sentences_of(fold, seed)
    model = fold_model(fold)
    cfg = candidate_config(model.detector, factor)
    probe = fold_probe(fold)
    ver = Verifier()
    cands, calls, n_notes, hours, n_call = [], [], 0, 0.0, 0
    scan_calls = iter(d["calls"])
    for i, (audio, notes, voice, eng, kind) in enumerate(cascade_calls(kw, neg, seed)):
        if i % every != offset:
            continue
        n_call += 1
        c = next(scan_calls)
        sp = KeywordSpotter(model, detector=cfg)
        res = sp.process_offline(audio) if sp.offline_capable else sp.process(audio)
        evs = res.events + sp.flush()
        post = res.posteriors
        labels = list(sp.labels)
        sm = cfg.smoothing_steps
        own = []                               # (keyword, end_s, first score, scan logp or None, source)
        for ev in evs:
            own.append([ev.keyword, ev.end_s, ev.score, None, "first"])
        for k, kwd in enumerate(kws):
            for t, lp in peaks(c["t"], c["logp"][:, k], floor):
                near = [o for o in own if o[0] == kwd and o[4] != "probe" and abs(o[1] - t) < MERGE_S]
                if near:
                    near[0][3] = lp if near[0][3] is None else max(near[0][3], lp)
                    near[0][4] = "both"
                    continue
                col = labels.index(kwd)
                lo = max(0, int((t + KEYWORD_END_OFFSET_S - 0.4) / STEP_S))
                hi = min(len(post), int((t + KEYWORD_END_OFFSET_S + 0.4) / STEP_S) + 1)
                x = post[max(0, lo - sm + 1):hi, col]
                s_best = float(np.convolve(x, np.ones(sm) / sm, "valid").max()) if x.size >= sm else 0.0
                own.append([kwd, t, s_best, lp, "probe"])
        ann = [Annotation(*n) for n in notes]
        m = match_by_score([(o[1], o[0], o[3] if o[3] is not None else -99 + o[2]) for o in own], ann)
        for o, hit in zip(own, m):
            w0 = max(0.0, o[1] - WINDOW_BEFORE_S)
            win = audio[int(w0 * SR):int((o[1] + 0.4) * SR)]
            t0, c0 = time.perf_counter(), time.process_time()
            vs, ps = ver.assess(win, [o[0]], end_s=o[1] - w0, probe=probe)
            ms, cpu_ms = 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
            cands.append({"kw": o[0], "first": o[2], "v": vs[o[0]], "p": ps[o[0]], "scan": o[3], "src": o[4],
                          "y": int(hit is not None), "voice": voice, "kind": kind, "engine": eng, "call": n_call,
                          "ms": ms, "cpu_ms": cpu_ms, "end": o[1] - w0})
        calls.append({"service": call_service(notes), "keywords": len(notes), "engine": eng, "kind": kind})
        n_notes += len(notes)
        hours += audio.size / SR / 3600
        if n_call % 25 == 0:
            print(f"  {n_call} calls, {len(cands)} candidates", flush=True)
    run = {"hours": hours, "calls": calls, "keywords": n_notes, "factor": factor, "thresholds": dict(model.detector.thresholds),
           "min_evidence": model.detector.suggestion_min_evidence, "cands": cands, "engine": fold,
           "probe": probe.source, "scan_floor": floor}
    out.write_text(json.dumps({"cascade": run}, ensure_ascii=False))
    src = {k: sum(1 for c in cands if c["src"] == k) for k in ("first", "both", "probe")}
    hit = {k: sum(c["y"] for c in cands if c["src"] == k) for k in src}
    print(f"wrote {out}: {n_call} calls, {hours:.2f} h, {n_notes} keywords, {len(cands)} candidates {src}, "
          f"true {hit}")


def compare(runs: list[Path]) -> None:
    """Stored runs (combine's, or verify_eval's with probe logits): recall at 0.5 / 1 / 2 FA/h with the shipped
    combiner and with (1, first, forced, probe) weights fitted on the other runs' candidates (across engines)."""
    from spotter.verify import fit_logistic
    from training.verify_eval import (candidate_features, combined_scores, det_curve, probe_logits, recall_at,
                                      stored_candidates)
    data = {}
    for r in runs:
        d = stored_candidates(r)
        x, y, _ = candidate_features(d)
        data[str(r)] = (d, np.c_[np.ones(len(y)), x, probe_logits(d)], y)
    for name, (d, X, y) in data.items():
        others = [k for k in data if k != name and data[k][0].get("engine") != d.get("engine")]
        w = fit_logistic(np.concatenate([data[k][1] for k in others]), np.concatenate([data[k][2] for k in others]))
        row = []
        for sc in (combined_scores(d), X @ w):
            cur = det_curve(sc, y, d["hours"], d["keywords"])
            row.append(" / ".join(f"{recall_at(cur, fa):5.1%}" for fa in (0.5, 1, 2)))
        print(f"{name:34s} {len(y):5d} cands ({len(y) / d['hours']:5.0f}/h), true {y.sum():4d} of {d['keywords']} "
              f"({y.sum() / d['keywords']:5.1%}); shipped combiner {row[0]}; fitted on {len(others)} other run(s) "
              f"w {np.round(w, 2)}: {row[1]}")


def merge(runs: list[Path], out: Path) -> None:
    """Several combine runs (e.g. a fold's clean and telephone halves) as one stored run."""
    import json
    from training.verify_eval import stored_candidates
    ds = [stored_candidates(r) for r in runs]
    m = {**ds[0], "hours": sum(d["hours"] for d in ds), "keywords": sum(d["keywords"] for d in ds),
         "calls": [c for d in ds for c in d["calls"]], "cands": []}
    n = 0
    for d in ds:
        m["cands"] += [{**c, "call": c["call"] + n} for c in d["cands"]]
        n += len(d["calls"])
    out.write_text(json.dumps({"cascade": m}, ensure_ascii=False))
    print(f"wrote {out}: {len(m['calls'])} calls, {m['hours']:.2f} h, {m['keywords']} keywords")


def proposers(runs: list[Path]) -> None:
    """Per combine run: the cascade (shipped combiner and gate) on the first stage's candidates alone and with the
    scan's beside them: keywords proposed, recall at 0.5 / 1 / 2 / 5 FA/h and at the shipped threshold."""
    from training.verify_eval import combined_scores, det_curve, recall_at, stored_candidates, stored_combiner
    for r in runs:
        d = stored_candidates(r)
        sc, thr = combined_scores(d), stored_combiner(d).default_threshold
        y = np.array([c["y"] for c in d["cands"]])
        src = np.array([c["src"] for c in d["cands"]])
        kinds = {c["kind"] for c in d["calls"]}
        for name, keep in (("first stage", src != "probe"), ("first stage and scan", np.ones(len(y), bool))):
            s, yy = sc[keep], y[keep]
            cur = det_curve(s, yy, d["hours"], d["keywords"])
            acc = s >= thr
            print(f"{Path(r).name:22s} {'+'.join(sorted(kinds)):9s} {name:20s} {int(keep.sum()):4d} candidates, "
                  f"proposed {yy.sum() / d['keywords']:5.1%}; recall at 0.5 / 1 / 2 / 5 FA/h "
                  + " / ".join(f"{recall_at(cur, fa):5.1%}" for fa in (0.5, 1, 2, 5))
                  + f"; at the shipped threshold {np.sum(acc & (yy == 1)) / d['keywords']:5.1%} "
                  f"({np.sum(acc & (yy == 0)) / d['hours']:.2f} FA/h)")


def union_rule(calib: Path, runs: list[Path], budget: float = 0.5) -> None:
    """The shipped cascade's accept, or a candidate only the scan proposed whose probe logit reaches tau: tau the
    lowest (steps of 0.25) that keeps the calibration run (combine's, on the held-out voices) within `budget` FA/h;
    each run's recall and FA/h at it beside the shipped cascade's alone."""
    from training.verify_eval import combined_scores, stored_candidates, stored_combiner

    def load(path):
        d = stored_candidates(path)
        base = combined_scores(d) >= stored_combiner(d).default_threshold
        col = lambda k: np.array([c[k] for c in d["cands"]])
        return d, base, col("y"), col("src"), col("p")

    def at(run, tau):
        d, base, y, src, p = run
        acc = base | ((src == "probe") & (p >= tau))
        return np.sum(acc & (y == 1)) / d["keywords"], np.sum(acc & (y == 0)) / d["hours"]
    cal = load(calib)
    tau = min((t for t in np.arange(0, 12.01, 0.25) if at(cal, t)[1] <= budget), default=np.inf)
    print(f"tau {tau:g} (chosen on {calib.name}); recall, FA/h: shipped cascade -> with scan-only candidates at tau")
    for r in [calib] + list(runs):
        run = load(r)
        (r0, f0), (r1, f1) = at(run, np.inf), at(run, tau)
        print(f"  {r.name:24s} {r0:6.1%} at {f0:.2f} -> {r1:6.1%} at {f1:.2f}")


def match_by_score(cands: list[tuple[float, str, float]], notes) -> list[int | None]:
    """The hit rule applied to candidates (time, keyword, score) in descending score order (as a threshold that
    keeps only the better ones would see them): the occurrence each hits, or None."""
    from evaluation.streams import match_detections
    order = np.argsort([-c[2] for c in cands], kind="stable")
    used, out = set(), [None] * len(cands)
    for i in order:
        t, kw, _ = cands[i]
        free = [j for j in range(len(notes)) if j not in used]
        m = match_detections([(kw, t)], [notes[j] for j in free])[0]
        if m is not None:
            used.add(free[m])
            out[i] = free[m]
    return out


def peaks(t: np.ndarray, s: np.ndarray, floor: float) -> list[tuple[float, float]]:
    """(time, score) of the series' maxima above floor, each the largest within NMS_S of it (greedy suppression)."""
    idx = [i for i in np.argsort(-s) if s[i] >= floor]
    kept: list[int] = []
    for i in idx:
        if all(abs(t[i] - t[j]) > NMS_S for j in kept):
            kept.append(i)
    return [(float(t[i]), float(s[i])) for i in kept]


def report(path: Path, floor: float = -2.0) -> None:
    from evaluation.streams import Annotation
    from training.verify_eval import det_curve, recall_at
    d = np.load(path, allow_pickle=True).item()
    side = path.with_name(path.stem + ".first.npy")
    first = list(np.load(side, allow_pickle=True)) if side.is_file() else None
    kws = d["keywords"]
    scores, ys, n_notes, hours = [], [], 0, 0.0
    proposed, by_first, by_union = 0, 0, 0
    for i, c in enumerate(d["calls"]):
        cands = []
        for k, kw in enumerate(kws):
            cands += [(t, kw, s) for t, s in peaks(c["t"], c["logp"][:, k], floor)]
        notes = [Annotation(*n) for n in c["notes"]]
        m = match_by_score(cands, notes)
        scores += [s for _, _, s in cands]
        ys += [int(x is not None) for x in m]
        hit = {x for x in m if x is not None}
        proposed += len(hit)
        if first is not None:
            f = {x for x in match_by_score([(t, kw, s) for kw, t, s in first[i]], notes) if x is not None}
            by_first += len(f)
            by_union += len(f | hit)
        n_notes += len(notes)
        hours += c["seconds"] / 3600
    sc, y = np.array(scores), np.array(ys)
    curve = det_curve(sc, y, hours, n_notes)
    print(f"{path}: fold {d['fold']}, every {d['hop']} s, {len(d['calls'])} calls, {hours:.2f} h, {n_notes} keywords; "
          f"probe scan {100 * d['cpu_per_audio_s']:.1f} % of a core")
    print(f"  peaks above {floor}: {len(sc)} ({len(sc) / hours:.0f} per hour), keywords with a peak {proposed} "
          f"({proposed / max(n_notes, 1):.1%})")
    if first is not None:
        n_first = sum(len(f) for f in first)
        print(f"  first stage ({side.name}): {n_first} candidates ({n_first / hours:.0f} per hour), keywords "
              f"proposed {by_first} ({by_first / max(n_notes, 1):.1%}); by either {by_union} "
              f"({by_union / max(n_notes, 1):.1%})")
    print("  recall at 0.5 / 1 / 2 / 5 FA/h: " + " / ".join(f"{recall_at(curve, fa):5.1%}" for fa in (0.5, 1, 2, 5)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scan")
    s.add_argument("--fold", required=True)
    s.add_argument("--hop", type=float, default=0.2)
    s.add_argument("--every", type=int, default=1)
    s.add_argument("--offset", type=int, default=0, help="with --every N: the calls i with i %% N == offset")
    s.add_argument("--probe", type=Path)
    s.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("first", help="the fold's first stage over the same calls (PATH.first.npy beside a scan)")
    f.add_argument("--fold", required=True)
    f.add_argument("--every", type=int, default=1)
    f.add_argument("--offset", type=int, default=0)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--factor", type=float, default=0.8)
    c = sub.add_parser("combine", help="both proposers, every candidate verified: a stored cascade run (.json)")
    c.add_argument("path", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--floor", type=float, default=-2.0, help="scan peaks above this log-probability are "
                   "candidates (e.g. 99: none, the first stage alone)")
    c.add_argument("--factor", type=float, default=0.8, help="the first stage's candidates at factor x thresholds")
    m = sub.add_parser("compare", help="stored runs: shipped and across-engine fitted combiners")
    m.add_argument("runs", help="comma-separated .json runs")
    k = sub.add_parser("cost", help="the scan's CPU against the first stage's, interleaved")
    k.add_argument("--hop", type=float, default=0.2)
    u = sub.add_parser("union-rule", help="scan-only candidates accepted on their probe logit, tau set on --calib")
    u.add_argument("runs", help="comma-separated combine runs (.json)")
    u.add_argument("--calib", type=Path, required=True, help="combine's run on the held-out voices")
    g = sub.add_parser("merge", help="combine runs as one stored run")
    g.add_argument("runs", help="comma-separated combine runs (.json)")
    g.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("proposers", help="combine runs: the cascade with the first stage's candidates, and with "
                       "the scan's beside them")
    q.add_argument("runs", help="comma-separated combine runs (.json)")
    r = sub.add_parser("report")
    r.add_argument("path", type=Path)
    r.add_argument("--floor", type=float, default=-2.0)
    a = ap.parse_args(argv)
    from training.recipe import use_recipe_keywords
    from training.verify_eval import calls_recipe
    use_recipe_keywords(calls_recipe())                 # the calls recipe's keyword set, for every command
    runs = [Path(x) for x in a.runs.split(",")] if "runs" in a else []
    if a.cmd == "scan":
        scan(a.fold, a.hop, a.every, a.out, a.probe, offset=a.offset)
    elif a.cmd == "first":
        first_stage(a.fold, a.every, a.out, a.factor, offset=a.offset)
    elif a.cmd == "combine":
        combine(a.path, a.out, a.floor, a.factor)
    elif a.cmd == "cost":
        scan_cost(a.hop)
    elif a.cmd == "merge":
        merge(runs, a.out)
    elif a.cmd == "proposers":
        proposers(runs)
    elif a.cmd == "union-rule":
        union_rule(a.calib, runs)
    elif a.cmd == "compare":
        compare(runs)
    else:
        report(a.path, a.floor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

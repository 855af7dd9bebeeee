"""Measure the second-stage verifier (spotter/verify.py, issue 9) on windows around keyword candidates.

  python -m training.verify_eval --per-keyword 6 --conditions clean,tel
  python -m training.verify_eval --real-en 60          # English real recordings: "computer" vs "alexa" / speech
  python -m training.verify_eval --only-real --cascade 120,300                # the cascade, shipped first stage
  python -m training.verify_eval --only-real --cascade 400,3000 --fold mbrola  # leave-one-engine-out cascade
  python -m training.verify_eval --only-real --real-cascade runs/en_tw/tw_s0.pt --conditions clean,context
                                                     # real people: clips alone, and between real phrases

The cascade runs (--cascade, --real-cascade) report recall against false alarms per hour for the first stage alone
and with the verifier, per keyword at 0.5 and 1 FA/h, and the service correct at call end (calls of one service
each, call_groups), with every candidate stored (--json) for re-analysis (--cascade-json).

Synthetic data: the caller sentences of the calls recipe (training/configs/calls.toml) already synthesised in the
sentence cache. Their keyword is not stored in utterances.jsonl, so the recipe's plan is rebuilt (no synthesis) and
each job's hash is matched to the cache index; only the 'eval_kw' (test frames; with 'eval_kw_kokoro', the Kokoro
fold's own keyword calls, for the folds), 'eval_neg' and 'loeo_neg' sets are used.
For each keyword k:
  positive   a sentence saying k, the window ending at k's end (+ jitter like the first stage's estimate)
  near-miss  a sentence with one of k's near-miss words (texts.NEAR_MISSES), scored for k near that word's end
  other      a sentence saying another keyword (scored for k at that keyword's end) or keyword-free speech
             (scored for k at a random point)
Conditions: 'clean' (the synthesiser's output) and 'tel' (training.calls.Channel: room, real noise 5-20 dB,
telephone band and codec). Printed: per-keyword AUC, acceptance of positives at the score threshold that passes
1 % / 5 % / 10 % of negatives, false acceptance of near-misses, and ms per verifier call (1 thread).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from spotter import config
from spotter.audio import load_audio
from spotter.errors import SpotterError

ROOT = Path(__file__).resolve().parent.parent
SR = config.SAMPLE_RATE


def auc(pos, neg) -> float:
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not pos.size or not neg.size:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (pos.size * neg.size))


def accept_at(pos, neg, fa: float) -> float:
    """Share of positives above the threshold that accepts at most `fa` of the negatives."""
    neg = np.sort(np.asarray(neg, float))
    if not len(pos) or not neg.size:
        return float("nan")
    k = int(np.floor(fa * neg.size))
    thr = neg[-k - 1] if k < neg.size else -np.inf
    return float(np.mean(np.asarray(pos) > thr))


def calls_recipe(name: str = "calls"):
    """training/configs/<name>.toml (default calls.toml, the French recipe), the recipe whose sentences and noise
    this measurement uses."""
    from training.recipes import load_recipe
    return load_recipe(ROOT / "training" / "configs" / f"{name}.toml")


def near_miss_owner() -> dict[str, str]:
    """Near-miss word -> the keyword it imitates (texts.NEAR_MISSES is grouped under one comment per keyword)."""
    src = (ROOT / "training" / "texts.py").read_text(encoding="utf-8")
    block = src[src.index("NEAR_MISSES: tuple"):]
    block = block[:block.index("\n)\n")]
    owner, kw = {}, None
    for line in block.splitlines()[1:]:
        m = re.match(r"\s*#\s*(\S+)", line)
        if m and m.group(1) in config.KEYWORDS:
            kw = m.group(1)
            continue
        for w in re.findall(r'"([^"]+)"', line):
            owner[w] = kw
    return owner


def cached_sentences(cache_dir: Path, sets=("eval_kw", "eval_neg"), recipe="calls") -> list[dict]:
    """The calls recipe's sentences of `sets` (default: the evaluation ones) that are in the cache: path, text,
    keyword, spans, engine, voice and the voice's split. `recipe`: a CallsRecipe or a name under training/configs/."""
    from training import calltrain as CT, calls as C
    plan = (calls_recipe(recipe) if isinstance(recipe, str) else recipe).calls
    voices, splits = CT.plan_voices(plan)
    jobs = CT.plan_jobs(plan, voices, splits)
    index = {}
    with open(cache_dir / "utterances.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            index[r["hash"]] = r
    out = []
    for set_name in sets:
        for j in jobs.get(set_name, []):
            r = index.get(C._job_hash(j))
            if r and (cache_dir / r["path"]).is_file():
                out.append({"path": str(cache_dir / r["path"]), "text": j.sentence.text, "keyword": j.sentence.keyword,
                            "spans": r["spans"], "seconds": r["seconds"], "engine": j.voice.engine,
                            "voice": j.voice.key, "split": splits.get(j.voice.key)})
    return out


def build_items(sents: list[dict], per_keyword: int, seed: int) -> list[dict]:
    """(sentence, candidate keyword, estimated end, label, kind) per keyword: per_keyword of each kind."""
    rng = random.Random(seed)
    owner = near_miss_owner()
    by_kw: dict = {k: [] for k in config.KEYWORDS}
    near: dict = {k: [] for k in config.KEYWORDS}
    plain = []
    for s in sents:
        if s["keyword"] and s["spans"]:
            by_kw[s["keyword"]].append(s)
        elif not s["keyword"]:
            low = s["text"].lower()
            hits = [(w, low.find(w.lower())) for w in owner if re.search(r"\b" + re.escape(w.lower()) + r"\b", low)]
            if hits:
                w, i = max(hits, key=lambda h: len(h[0]))
                near[owner[w]].append({**s, "nm_end_frac": (i + len(w)) / len(s["text"])})
            else:
                plain.append(s)
    items = []
    for k in config.KEYWORDS:
        # balance engines among the positives
        pos = sorted(by_kw[k], key=lambda s: (rng.random(), s["engine"]))
        engines = sorted({s["engine"] for s in pos})
        chosen = []
        for i in range(per_keyword):
            pool = [s for s in pos if s["engine"] == engines[i % len(engines)] and s not in chosen]
            if pool:
                chosen.append(pool[0])
        for s in chosen:
            items.append({"s": s, "kw": k, "end": s["spans"][0][1] + rng.uniform(-0.08, 0.12), "y": 1,
                          "kind": "positive"})
        for s in rng.sample(near[k], min(per_keyword, len(near[k]))):
            items.append({"s": s, "kw": k, "end": s["nm_end_frac"] * s["seconds"] + rng.uniform(-0.1, 0.15),
                          "y": 0, "kind": "near-miss"})
        others = [s for kk in config.KEYWORDS if kk != k for s in by_kw[kk]]
        for s in rng.sample(others, min(per_keyword // 2 + per_keyword % 2, len(others))):
            items.append({"s": s, "kw": k, "end": s["spans"][0][1] + rng.uniform(-0.08, 0.12), "y": 0,
                          "kind": "other-keyword"})
        for s in rng.sample(plain, min(per_keyword // 2, len(plain))):
            items.append({"s": s, "kw": k, "end": rng.uniform(min(0.6, s["seconds"]), s["seconds"]), "y": 0,
                          "kind": "speech"})
    return items


def channel_audio(items: list[dict], kind: str, seed: int) -> list[np.ndarray]:
    from training.calls import Call, Channel
    from training.recipe import real_audio_files
    audio = [load_audio(it["s"]["path"]) for it in items]
    if kind == "clean":
        return audio
    noise = real_audio_files(calls_recipe().data)["noise_eval"]
    ch = Channel(noise, seed)
    rng = np.random.default_rng(seed)
    out = []
    for a, it in zip(audio, items):
        call = Call(a, [], [(0.0, a.size / SR)], it["s"]["voice"], it["s"]["engine"], "clean")
        out.append(ch(call, kind, rng).audio)
    return out


def report(name: str, items: list[dict], scores: list[float], times_ms: list[float]) -> dict:
    sc = np.asarray(scores)
    y = np.array([it["y"] for it in items])
    rows = {}
    print(f"\n== {name}: {int(y.sum())} positive and {int((1 - y).sum())} negative windows")
    print(f"{'keyword':15s} {'AUC':>5s} {'AUC nm':>6s} {'pos':>4s} {'neg':>4s}  median score pos / near-miss / other")
    for k in config.KEYWORDS:
        m = np.array([it["kw"] == k for it in items])
        nm = m & np.array([it["kind"] == "near-miss" for it in items])
        p, n = sc[m & (y == 1)], sc[m & (y == 0)]
        rows[k] = {"auc": auc(p, n), "auc_near_miss": auc(p, sc[nm])}
        print(f"{k:15s} {rows[k]['auc']:5.2f} {rows[k]['auc_near_miss']:6.2f} {p.size:4d} {n.size:4d}  "
              f"{np.median(p) if p.size else float('nan'):6.2f} / {np.median(sc[nm]) if nm.any() else float('nan'):6.2f}"
              f" / {np.median(sc[m & (y == 0) & ~nm]) if (m & (y == 0) & ~nm).any() else float('nan'):6.2f}")
    aucs = [r["auc"] for r in rows.values() if not np.isnan(r["auc"])]
    print(f"mean per-keyword AUC {np.mean(aucs):.3f}; near-miss only {np.nanmean([r['auc_near_miss'] for r in rows.values()]):.3f}")
    # acceptance at a per-keyword threshold (leave-one-out would be fairer; with a few negatives per keyword
    # this is the pooled rank: scores are standardised per keyword by the negatives' median and spread)
    z = np.zeros_like(sc)
    for k in config.KEYWORDS:
        m = np.array([it["kw"] == k for it in items])
        neg = sc[m & (y == 0)]
        if neg.size:
            z[m] = (sc[m] - np.median(neg)) / (np.std(neg) + 1e-6)
    for fa in (0.01, 0.05, 0.10):
        print(f"kept at {fa:.0%} false acceptance (pooled, per-keyword standardised): "
              f"{accept_at(z[y == 1], z[y == 0], fa):.1%}")
    kinds = sorted({it["kind"] for it in items if it["y"] == 0})
    thr = np.quantile(z[y == 1], 0.5) if (y == 1).any() else 0.0
    print("at the threshold keeping 50 % of positives, false acceptance: " + ", ".join(
        f"{kd} {np.mean(z[np.array([it['kind'] == kd for it in items])] > thr):.1%}" for kd in kinds))
    t = np.asarray(times_ms)
    print(f"ms per verifier call (1 keyword, 1 thread): p50 {np.median(t):.1f}, p95 {np.quantile(t, 0.95):.1f}, "
          f"mean {t.mean():.1f} (n={t.size})")
    return {"per_keyword": rows, "mean_auc": float(np.mean(aucs)), "ms_p50": float(np.median(t))}


CPU_MS: list[float] = []          # process CPU time per verifier call (wall time is inflated by a loaded machine)


def score_all(ver, audio: list[np.ndarray], items: list[dict]) -> tuple[list[float], list[float]]:
    scores, times = [], []
    for a, it in zip(audio, items):
        t0, c0 = time.perf_counter(), time.process_time()
        scores.append(ver.score(a, [it["kw"]], end_s=it["end"])[it["kw"]])
        times.append(1000 * (time.perf_counter() - t0))
        CPU_MS.append(1000 * (time.process_time() - c0))
    return scores, times


def speech_end(a: np.ndarray) -> float:
    """End of the last frame within 30 dB of the loudest (an isolated word's end)."""
    n = SR // 100
    e = 10 * np.log10(np.array([np.mean(a[i:i + n] ** 2) + 1e-12 for i in range(0, a.size - n + 1, n)]))
    idx = np.nonzero(e > e.max() - 30)[0]
    return float((idx[-1] + 1) * n / SR) if idx.size else a.size / SR


def real_english(ver_factory, n: int, seed: int) -> None:
    rng = random.Random(seed)
    base = Path(os.environ.get("SPOTTER_SPEECH_DIR", ROOT.parent / "shared" / "data" / "speech"))
    comp = sorted((base / "real_kws_en" / "computer").glob("*.*"))
    alexa = sorted((base / "real_kws_en" / "alexa").glob("*.*"))
    speech = sorted((base / "precise_not_wake_words_en").glob("*.*")) + sorted((base / "sppas_fr").glob("*.*"))
    ver = ver_factory("en")
    res = {}
    for name, files in (("computer", rng.sample(comp, min(n, len(comp)))),
                        ("alexa", rng.sample(alexa, min(n, len(alexa))))):
        sc, tm = [], []
        for f in files:
            a = load_audio(f)
            t0 = time.perf_counter()
            sc.append(ver.score(a, ["computer"], end_s=speech_end(a))["computer"])
            tm.append(1000 * (time.perf_counter() - t0))
        res[name] = (sc, tm)
    sc, tm = [], []
    for f in speech:                                    # real non-keyword speech: windows at random points
        a = load_audio(f)
        for _ in range(max(1, n // len(speech) + 1)):
            end = rng.uniform(min(1.0, a.size / SR), a.size / SR)
            t0 = time.perf_counter()
            sc.append(ver.score(a, ["computer"], end_s=end)["computer"])
            tm.append(1000 * (time.perf_counter() - t0))
    res["speech"] = (sc[:n], tm[:n])
    p = res["computer"][0]
    print(f"\n== real English recordings (verifier language 'en', keyword 'computer'): {len(p)} computer, "
          f"{len(res['alexa'][0])} alexa, {len(res['speech'][0])} real non-keyword speech windows")
    for neg in ("alexa", "speech"):
        print(f"AUC computer vs {neg}: {auc(p, res[neg][0]):.3f}; kept at 1 % / 5 % false acceptance: "
              f"{accept_at(p, res[neg][0], 0.01):.1%} / {accept_at(p, res[neg][0], 0.05):.1%}")
    both = res["alexa"][0] + res["speech"][0]
    print(f"AUC computer vs both: {auc(p, both):.3f}")
    t = np.asarray(sum((r[1] for r in res.values()), []))
    print(f"ms per verifier call: p50 {np.median(t):.1f}, p95 {np.quantile(t, 0.95):.1f}")


def fold_first_stage(work: Path, engine: str, head_seed: int | None = None) -> Path:
    """The leave-one-engine-out first stage: the calls recipe's head trained and calibrated without `engine`
    (calltrain.train_fold and calibrate_for_recipe on the run's stored call sets, as `spotter train` makes its fold),
    saved with its ONNX export as work/fold_<engine>/first_stage.{pt,onnx} (first_stage_s<S> for another head seed
    than the recipe's); reused while the recipe's [train] and [calibrate] sections and head seed are those it was
    trained with (stored in its meta), trained again otherwise."""
    import dataclasses
    import torch
    from spotter.model import KeywordModel, load_model
    from training import calltrain as CT
    from training.export import export_onnx
    recipe = calls_recipe()
    if head_seed is not None and head_seed != recipe.seed:
        recipe.seed = head_seed
        out = work / f"fold_{engine}" / f"first_stage_s{head_seed}.onnx"
    else:
        out = work / f"fold_{engine}" / "first_stage.onnx"
    made_by = json.dumps({"train": dataclasses.asdict(recipe.train), "calibrate": dataclasses.asdict(recipe.calibrate),
                          "seed": recipe.seed, "thresholds": "recipe rule"}, sort_keys=True)
    if out.is_file() and out.with_suffix(".pt").is_file():
        if load_model(out.with_suffix(".pt")).meta.get("fold_recipe") == made_by:
            return out
        print(f"{out}: trained with another recipe; training it again")
    torch.set_num_threads(1)
    sets, _ = CT.load_callsets(work, extra=False)
    keep = lambda m: m["engine"] != engine
    if not any(not keep(m) for m in sets["train"].meta):
        raise SystemExit(f"{work}: no training call is spoken by engine {engine!r}")
    t0 = time.time()
    head, _ = CT.train_fold(sets["train"].select(keep), sets["val"].select(keep), recipe.train, recipe.seed)
    thr, sm, cal = CT.calibrate_for_recipe(head, sets["val"].select(keep), recipe.calibrate)   # the rule that ships
    model = KeywordModel(head=head)
    model.detector.thresholds, model.detector.smoothing_steps = thr, sm
    model.name = f"fold-without-{engine}"
    model.meta.update(name=model.name, calibration=cal, fold_recipe=made_by,
                      keyword_durations_s=CT.keyword_durations(sets["train"].select(keep)))
    model.save(out.with_suffix(".pt"))
    export_onnx(out.with_suffix(".pt"), out)
    print(f"first stage without {engine}: trained and calibrated in {time.time() - t0:.0f} s ({cal})")
    return out


def fold_probe(work: Path, engine: str, seed: int = 0):
    """The keyword probe trained without `engine` (training.probe) on the recipe's crops (work/probe_crops.npz,
    built when missing), saved as work/fold_<engine>/probe.npz and reused."""
    from spotter.probe import KeywordProbe
    from training import probe as P
    out = work / f"fold_{engine}" / ("probe.npz" if seed == 0 else f"probe_s{seed}.npz")
    if out.is_file():
        return KeywordProbe.load(out)
    crops = work / "probe_crops.npz"
    if not crops.is_file():
        P.build_crops("calls", crops)
    return P.train_probe(crops, out, engine, seed)


def chosen_probe(arg: str | None, work: Path, fold: str | None):
    """--probe: "none" (the two opinions alone), a probe file, or by default the fold's own probe (fold_probe)
    or the shipped one for the active keyword set (spotter.verify.default_probe; none for a set without one)."""
    from spotter.probe import KeywordProbe
    from spotter.verify import default_probe
    if arg == "none":
        return None
    if arg:
        return KeywordProbe.load(arg)
    return fold_probe(work, fold) if fold else default_probe()


CALL_SENTENCES = 6          # sentences per call at most
NO_KEYWORD_CALLS = 0.25     # share of a voice's calls that say no keyword (as the recipe's calls: group_calls)


def call_groups(sentences: list[dict], seed: int) -> list[list[dict]]:
    """One voice's sentences as calls of up to CALL_SENTENCES: each call says 1-2 keyword sentences of one service
    (a service draws its calls in turn) or, NO_KEYWORD_CALLS of the time, none; keyword-free sentences fill it, in
    their given order. A voice with no keyword sentence gives its keyword-free ones in chunks, in order."""
    rng = random.Random(seed)
    queues: dict = {}
    for s in sentences:
        if s["keyword"]:
            queues.setdefault(config.KEYWORD_SERVICE.get(s["keyword"], s["keyword"]), []).append(s)
    neg = [s for s in sentences if not s["keyword"]]
    calls = []
    while any(queues.values()) or neg:
        call = []
        full = [q for q in queues.values() if q]
        if full and (not neg or rng.random() >= NO_KEYWORD_CALLS):
            q = full[rng.randrange(len(full))]
            call = [q.pop(0) for _ in range(min(len(q), rng.randint(1, 2)))]
        fill = min(len(neg), CALL_SENTENCES - len(call))
        call, neg = call + neg[:fill], neg[fill:]
        if any(s["keyword"] for s in call):
            rng.shuffle(call)
        calls.append(call)
    return calls


def call_service(notes) -> str | None:
    """The service a call's keywords ask for (call_groups gives each call one), None for a keyword-free call."""
    services = {config.KEYWORD_SERVICE.get(n[0]) for n in notes}
    return services.pop() if len(services) == 1 else None


def cascade_calls(kw: list[dict], neg: list[dict], seed: int, recipe=None):
    """Calls of one voice each (call_groups: 1-2 keyword sentences of one service among keyword-free ones, or
    none), with pauses, alternately clean and through the telephone channel (room, real noise 5-20 dB, band,
    codec). Yields (audio, notes [(keyword, start_s, end_s)], voice, engine, kind)."""
    from training.calls import Call, Channel
    from training.recipe import real_audio_files
    by_voice: dict = {}
    for s in kw + neg:
        by_voice.setdefault(s["voice"], []).append(s)
    ch = Channel(real_audio_files((recipe or calls_recipe()).data)["noise_eval"], seed)
    nrng = np.random.default_rng(seed)
    n_call = 0
    for vi, voice in enumerate(sorted(by_voice)):
        for part in call_groups(by_voice[voice], seed + vi):
            pieces, notes, t = [np.zeros(int(0.6 * SR), np.float32)], [], 0.6
            for s in part:
                a = load_audio(s["path"])
                for a0, a1 in (s["spans"] if s["keyword"] else []):
                    notes.append((s["keyword"], t + a0, t + a1))
                gap = int(nrng.uniform(0.25, 1.4) * SR)
                pieces += [a, nrng.normal(0, 10 ** (-70 / 20), gap).astype(np.float32)]
                t += (a.size + gap) / SR
            audio = np.concatenate(pieces)
            kind = "tel" if n_call % 2 else "clean"
            if kind == "tel":
                audio = ch(Call(audio, notes, [], voice, part[0]["engine"], "clean"), "tel", nrng).audio
            n_call += 1
            yield audio, notes, voice, part[0]["engine"], kind


def call_sentences(sents: list[dict], n_kw: int, n_neg: int, seed: int, engine: str | None = None,
                   split: str = "test") -> tuple[list[dict], list[dict]]:
    """The keyword and keyword-free sentences of a cascade measurement, drawn (at most n_kw and n_neg): engine None,
    those of `split` voices; engine E, all of E's keyword sentences and E's keyword-free speech (the recipe's fold
    scoring: calltrain.engine_negatives)."""
    rng = random.Random(seed)
    test = [s for s in sents if s["split"] == split]
    if engine is None:
        kw = [s for s in test if s["keyword"] and s["spans"]]
    else:
        kw = [s for s in sents if s["keyword"] and s["spans"] and s["engine"] == engine]
    neg = [s for s in (test if engine is None else sents) if not s["keyword"] and engine in (None, s["engine"])]
    return rng.sample(kw, min(n_kw, len(kw))), rng.sample(neg, min(n_neg, len(neg)))


def cascade_eval(sents: list[dict], n_kw: int, n_neg: int, factor: float, seed: int, ver,
                 model_path: Path | None = None, engine: str | None = None, split: str = "test",
                 crops: list | None = None, probe=None) -> dict:
    """First stage at factor x its thresholds on calls, every candidate scored by the verifier; recall vs FA/h of
    the first stage alone (its candidates whose peak reaches threshold x s) and of the cascade (a pooled logistic
    combiner, 2-fold by voice).
    engine None: `model_path` (default the shipped model, models/default.onnx) on calls of test-split voices (held
    out from it).
    engine E: `model_path`, a first stage that never heard engine E (fold_first_stage), on the keyword sentences
    and the keyword-free sentences of all of E's voices (the recipe's fold scoring: calltrain.engine_negatives).
    split: the voices whose sentences are used ("val" for calibrate_cascade)."""
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from spotter.onnxmodel import load_any
    kw, neg = call_sentences(sents, n_kw, n_neg, seed, engine, split)
    model_path = Path(model_path or DEFAULT_ONNX_MODEL)
    model = load_any(model_path, threads=1)
    who = f"{split}-split voices" if engine is None else f"engine {engine} (never heard by this first stage)"
    res = verify_candidates(model, cascade_calls(kw, neg, seed), factor, ver, f"calls of {who}", crops, probe)
    res.update(engine=engine, first_stage=str(model_path))
    res.update(cascade_report(res))
    return res


def save_crops(path: Path, crops: list) -> None:
    """The candidates' windows (float16, 16 kHz) in one array with their offsets: re-score them with
    another verifier without running the first stage again (tools/verifier_sweep.py)."""
    off = np.cumsum([0] + [c.size for c in crops])
    np.savez(path, audio=np.concatenate(crops) if crops else np.zeros(0, np.float16), offsets=off)


# A candidate's window: the verifier cuts its crop out of it (lead_s before the estimated end), so any window longer
# than the crop gives the same score; 4 s leaves room to re-score stored windows with longer crops (--crops).
WINDOW_BEFORE_S = 4.0


def verify_candidates(model, streams, factor: float, ver, what: str, crops: list | None = None,
                      probe=None) -> dict:
    """The first stage (at factor x its thresholds, as VerifiedSpotter runs it) over each stream of `streams`
    ((audio, notes [(keyword, start_s, end_s)], voice, engine, kind) tuples), every candidate labelled by the one hit
    rule and scored by the verifier on its window: the last WINDOW_BEFORE_S before its estimated end (+0.4 s), from
    which the verifier cuts its own crop. `crops`, if a list, gets every candidate's window (float16), in candidate
    order (save_crops). `probe` (a spotter.probe.KeywordProbe): each candidate also gets the probe's logit, "p"."""
    from spotter.detector import KeywordSpotter
    from spotter.verify import candidate_config
    from evaluation.streams import Annotation, match_detections
    cfg = candidate_config(model.detector, factor)
    cands, n_notes, seconds, n_call, t_first = [], 0, 0.0, 0, 0.0
    by_kw: Counter = Counter()
    calls = []                         # per stream: its service (None: no keyword) and keyword count
    for audio, notes, voice, eng, kind in streams:
        n_call += 1
        calls.append({"service": call_service(notes), "keywords": len(notes), "engine": eng, "kind": kind})
        n_notes += len(notes)
        by_kw.update(n[0] for n in notes)
        seconds += audio.size / SR
        sp = KeywordSpotter(model, detector=cfg)
        t0 = time.process_time()
        evs = (sp.process_offline(audio) if sp.offline_capable else sp.process(audio)).events + sp.flush()
        t_first += time.process_time() - t0
        matched = match_detections([(ev.keyword, ev.detected_s) for ev in evs], [Annotation(*n) for n in notes])
        for ev, m in zip(evs, matched):
            w0 = max(0.0, ev.end_s - WINDOW_BEFORE_S)
            win = audio[int(w0 * SR):int((ev.end_s + 0.4) * SR)]
            t0, c0 = time.perf_counter(), time.process_time()
            vs, ps = ver.assess(win, [ev.keyword], end_s=ev.end_s - w0, probe=probe)
            cands.append({"kw": ev.keyword, "first": ev.score, "v": vs[ev.keyword], "y": int(m is not None),
                          "voice": voice, "kind": kind, "engine": eng, "ms": 1000 * (time.perf_counter() - t0),
                          "cpu_ms": 1000 * (time.process_time() - c0), "call": n_call, "end": ev.end_s - w0})
            if probe is not None:
                cands[-1]["p"] = ps[ev.keyword]
            if crops is not None:
                crops.append(win.astype(np.float16))
    hours = seconds / 3600
    print(f"\n== cascade on {n_call} {what} ({hours * 60:.1f} min, {n_notes} keywords): {len(cands)} candidates at "
          f"{factor} x thresholds ({len(cands) / hours:.0f} per hour)")
    print(f"first stage CPU (process time, whole streams): {100 * t_first / seconds:.1f} % of a core")
    return {"hours": hours, "keywords": n_notes, "keywords_by_kw": dict(by_kw), "factor": factor,
            "thresholds": dict(model.detector.thresholds), "min_evidence": model.detector.suggestion_min_evidence,
            "calls": calls, "cands": cands, "probe": probe.source if probe is not None else None}


def real_cascade(model_path: Path, real_root: Path, factor: float, seed: int, ver, condition: str = "clean",
                 crops: list | None = None, probe=None) -> dict:
    """The cascade with the English first stage (the en_wake recipe's model, trained on synthetic voices only) on
    real people, over real_cascade_streams."""
    from spotter.onnxmodel import load_any
    model = load_any(model_path, threads=1)                    # its keyword set becomes the active one
    what, streams = real_cascade_streams(real_root, condition, seed)
    res = verify_candidates(model, streams, factor, ver, what, crops, probe)
    res.update(first_stage=str(model_path), condition=condition)
    res.update(cascade_report(res))
    return res


def real_negatives(recipe) -> list[dict]:
    """The en_wake recipe's held-out keyword-free sentences (test-split voices), as real_cascade's negatives."""
    sents = cached_sentences(recipe.calls.cache_dir, ("eval_neg",), "en_wake")
    return [s for s in sents if s["split"] == "test" and not s["keyword"]]


def real_cascade_streams(real_root: Path, condition: str, seed: int):
    """(description, streams) of the real-people cascade: every real "alexa" / "computer" clip as a stream of its
    own (as `spotter evaluate --real` scores the first stage), then the real non-keyword speech files, each a stream
    of its own, then the en_wake recipe's held-out keyword-free sentences as calls (real_negatives, cascade_calls:
    half telephone). `condition`: "clean", "noise_10dB" (real noise at 10 dB on the real files, as `spotter
    evaluate --real`) or "context" (each clip, cut to its speech, said between two real English phrases of other
    people: in_context). `streams` yields (audio, notes, voice, engine, kind) as verify_candidates reads them."""
    from evaluation import realeval as R
    from training.augment import NoiseBank
    from training.recipe import real_audio_files
    recipe = calls_recipe("en_wake")
    neg = real_negatives(recipe)
    clips = R.keyword_recordings(real_root)
    speech = R.real_speech_files(recipe.data.speech_dir, real_root)
    if condition not in REAL_CONDITIONS:
        raise SpotterError(f"--conditions {condition}: with --real-cascade, expected one of "
                           f"{', '.join(REAL_CONDITIONS)}")
    noise = NoiseBank(real_audio_files(recipe.data)["noise_eval"]) if condition == "noise_10dB" else None
    phrases = [R.load_clip(f) for f in speech if f.parent.name.endswith("_en")] if condition == "context" else []
    if condition == "context" and not phrases:
        raise SpotterError(f"{recipe.data.speech_dir}: no real English phrases (a folder named *_en) to put around "
                           "the keyword clips")

    def streams():
        for audio, notes, path in real_streams(clips + [(None, f) for f in speech], phrases, noise, seed):
            yield audio, notes, str(path), "real", condition
        yield from cascade_calls([], neg, seed, recipe)
    return (f"streams: {len(clips)} real keyword clips, {len(speech)} real speech files, {len(neg)} held-out "
            f"synthetic keyword-free sentences ({condition})", streams())


def real_streams(items: list, phrases: list[np.ndarray], noise, seed: int):
    """(audio, notes, path) of each real recording of `items` ((keyword or None, path)) as a stream of its own:
    with real noise at R.NOISE_SNR_DB when `noise` (a NoiseBank) is given, each keyword clip between two of
    `phrases` when there are any (in_context), then R.TAIL_S of -70 dBFS floor. Clips under 0.1 s are skipped."""
    from evaluation import realeval as R
    rng = np.random.default_rng(seed)
    floor = np.random.default_rng(seed + 1).normal(0, 10 ** (-70 / 20), int(R.TAIL_S * SR)).astype(np.float32)
    for kw, path in items:
        audio = R.load_clip(path)
        if audio.size < SR // 10:
            continue
        if noise is not None:
            audio = R.add_noise(audio, noise, rng, R.NOISE_SNR_DB)
        notes = [(kw, *R.speech_span(audio))] if kw else []
        if phrases and kw:
            audio, span = in_context(audio, notes[0][1:], phrases, rng)
            notes = [(kw, *span)]
        yield np.concatenate([audio, floor]), notes, path


REAL_CONDITIONS = ("clean", "noise_10dB", "context")     # real_cascade's conditions
CONTEXT_GAP_S = (0.05, 0.3)          # pause between the context phrases and the keyword (in_context)
CONTEXT_LEVEL_DB = (-3.0, 3.0)       # the phrases' level against the keyword's (active RMS)
CONTEXT_FLOOR_DB = -35.0             # a faint noise under the whole stream, below the keyword's level


def in_context(audio: np.ndarray, span: tuple[float, float], phrases: list[np.ndarray], rng: np.random.Generator
               ) -> tuple[np.ndarray, tuple[float, float]]:
    """A keyword clip said between two other real phrases: the clip cut to its speech span (+ 0.05 s), a drawn
    phrase before and another after it (each cut to its own speech, at the keyword's level within
    CONTEXT_LEVEL_DB), pauses drawn in CONTEXT_GAP_S, and a faint pink noise under all of it so that the change of
    recording is not heard as a silence. Returns the stream and the keyword's span in it. (The clips hold one
    utterance each with silence around it; callers say keywords with speech right before and after.)"""
    from training.augment import active_rms, colored_noise
    from evaluation import realeval as R
    a, b = max(0, int((span[0] - 0.05) * SR)), min(audio.size, int((span[1] + 0.05) * SR))
    word = audio[a:b]
    level = active_rms(word)

    def phrase():
        p = phrases[int(rng.integers(len(phrases)))]
        s0, s1 = R.speech_span(p)
        p = p[int(s0 * SR):int(s1 * SR)]
        return p * (level / max(active_rms(p), 1e-9) * 10 ** (rng.uniform(*CONTEXT_LEVEL_DB) / 20))

    gap = lambda: np.zeros(int(rng.uniform(*CONTEXT_GAP_S) * SR), np.float32)
    before, g1, g2, after = phrase(), gap(), gap(), phrase()
    out = np.concatenate([before, g1, word, g2, after]).astype(np.float32)
    out += colored_noise(out.size, 1.0, rng) * level * 10 ** (CONTEXT_FLOOR_DB / 20)     # unit-RMS pink noise
    start = (before.size + g1.size + (int(span[0] * SR) - a)) / SR
    return out.astype(np.float32), (start, start + (span[1] - span[0]))


def calibrate_cascade(d: dict, budget: float) -> float:
    """The combined-score threshold (one for every keyword) at which the cascade's false alarms on `d`'s calls
    stay within `budget` per hour, with the most recall: spotter.verify.CASCADE_THRESHOLD is set from this, run on
    the validation voices' calls (cascade_eval(split="val"))."""
    cands, hours = d["cands"], d["hours"]
    comb = combined_scores(d)
    y = np.array([c["y"] for c in cands])
    best = (1.0, 0)
    for t in sorted(set(comb)):
        acc = comb >= t
        if np.sum(acc & (y == 0)) / hours <= budget and np.sum(acc & (y == 1)) > best[1]:
            best = (float(t), int(np.sum(acc & (y == 1))))
    print(f"\ncascade threshold for {budget} FA/h on these calls: {best[0]:.6f} "
          f"(recall {best[1] / max(d['keywords'], 1):.1%}, "
          f"{d['keywords']} keywords, {hours:.2f} h; 1 false alarm = {1 / hours:.2f} FA/h)")
    return best[0]


def det_curve(score: np.ndarray, y: np.ndarray, hours: float, n_notes: int) -> list[tuple[float, float]]:
    """(false alarms per hour, recall) of candidates accepted at each threshold on `score` (y: 1 for a hit)."""
    out = []
    for t in sorted(set(score)) + [np.inf]:
        acc = score >= t
        out.append((np.sum(acc & (y == 0)) / hours, np.sum(acc & (y == 1)) / max(n_notes, 1)))
    return out


def per_keyword_at(score: np.ndarray, y: np.ndarray, kws: list[str], hours: float, by_kw: dict[str, int],
                   fa: float) -> dict[str, tuple[int, int]]:
    """Per keyword, (found, of) at the DET point of `score` with the best recall within `fa` false alarms per hour
    (the lowest threshold whose false alarms stay within it; every keyword shares that threshold)."""
    acc = score >= threshold_at(score, y, hours, fa)
    k = np.array(kws)
    return {kw: (int(np.sum(acc & (y == 1) & (k == kw))), n) for kw, n in sorted(by_kw.items())}


def threshold_at(score: np.ndarray, y: np.ndarray, hours: float, fa: float) -> float:
    """The lowest threshold on `score` whose false alarms stay within `fa` per hour (the DET point of recall_at)."""
    return min(t for t in sorted(set(score)) + [np.inf] if np.sum((score >= t) & (y == 0)) / hours <= fa + 1e-9)


def service_at_call_end(d: dict, accepted: np.ndarray) -> dict:
    """Service accuracy at call end when the candidates `accepted` are the detections: each call's suggestion
    (spotter.detector.CallAssessment over its detections' first-stage scores, as VerifiedSpotter sums its verified
    ones) must be the service its keywords ask for; a keyword-free call must end with no suggestion."""
    from spotter.detector import CallAssessment, Event
    from training.calltrain import service_tally
    calls = d["calls"]
    evidence = [CallAssessment(d.get("min_evidence", 0.5)) for _ in calls]
    for c, ok in zip(d["cands"], accepted):
        if ok:
            evidence[c["call"] - 1].add(Event(c["kw"], config.KEYWORD_SERVICE.get(c["kw"]), c["first"], 0, 0, 0, 0))
    return service_tally((ca.suggestion(), call["service"], call["keywords"]) for call, ca in zip(calls, evidence))


def recall_at(curve: list[tuple[float, float]], fa: float) -> float:
    """The best recall of a DET curve within `fa` false alarms per hour."""
    ok = [r for f_, r in curve if f_ <= fa + 1e-9]
    return max(ok) if ok else 0.0


def cross_engine_combiner(fold_runs: list[Path], apply_runs: list[Path]) -> dict:
    """The combiner's (a, b, c) fitted across engines: for each leave-one-engine-out run, fitted on the candidates
    of the other runs (each candidate's first-stage feature against its own run's thresholds) and scored on it;
    then fitted on every run and scored on `apply_runs` (e.g. the shipped model's). Recall at 0.5 / 1 FA/h beside
    the provisional combiner's."""
    from spotter.verify import fit_logistic
    runs = {p.stem: stored_candidates(p) for p in list(fold_runs) + list(apply_runs)}

    def features(d):
        x, y, cb = candidate_features(d)
        prov = np.array([cb.combine(c["kw"], c["first"], c["v"]) for c in d["cands"]])
        return np.c_[np.ones(len(x)), x], y, prov
    feats = {name: features(d) for name, d in runs.items()}
    folds = [Path(p).stem for p in fold_runs]
    out = {}
    print(f"\n{'run':14s} {'fitted on':32s} {'(a, b, c)':>22s}   recall at 0.5 / 1 FA/h: provisional | cross-engine fit")
    for name in folds + [Path(p).stem for p in apply_runs]:
        train = [f for f in folds if f != name]
        X = np.concatenate([feats[f][0] for f in train])
        y = np.concatenate([feats[f][1] for f in train])
        w = fit_logistic(X, y)
        Xt, yt, prov = feats[name]
        d = runs[name]
        fitted = 1 / (1 + np.exp(-np.clip(Xt @ w, -60, 60)))
        rp = [recall_at(det_curve(prov, yt, d["hours"], d["keywords"]), fa) for fa in (0.5, 1)]
        rf = [recall_at(det_curve(fitted, yt, d["hours"], d["keywords"]), fa) for fa in (0.5, 1)]
        out[name] = {"params": [float(x) for x in w], "fitted_on": train, "provisional": rp, "cross_engine": rf}
        print(f"{name:14s} {'+'.join(train):32s} {w[0]:6.2f} {w[1]:6.2f} {w[2]:6.3f}   "
              f"{rp[0]:6.1%} / {rp[1]:6.1%} | {rf[0]:6.1%} / {rf[1]:6.1%}")
    return out


def candidate_features(d: dict):
    """(x, y, combiner): each stored candidate's two combiner features (first stage against its run's thresholds,
    verifier against its keyword's offset), its label, and the provisional combiner they were computed with."""
    from spotter.verify import Combiner
    cb = Combiner()
    cb.set_first_thresholds(d["thresholds"])
    x = np.array([cb.features(c["kw"], c["first"], c["v"]) for c in d["cands"]]).reshape(-1, 2)
    return x, np.array([c["y"] for c in d["cands"]]), cb


def probe_logits(d: dict) -> np.ndarray | None:
    """The stored candidates' probe logits, None for a run without the probe."""
    if not d["cands"] or "p" not in d["cands"][0]:
        return None
    return np.array([c["p"] for c in d["cands"]])


def stored_combiner(d: dict):
    """The shipped combiner for a stored run's candidates (f0 from its run's thresholds): with the probe's
    parameters and threshold when its candidates carry probe logits ("p"), without them otherwise."""
    from spotter.verify import default_combiner
    return default_combiner(d["thresholds"], probe=True if probe_logits(d) is not None else None)


def combined_scores(d: dict) -> np.ndarray:
    """Each stored candidate's combined score under the shipped combiner (stored_combiner)."""
    cb = stored_combiner(d)
    return np.array([cb.combine(c["kw"], c["first"], c["v"], c.get("p")) for c in d["cands"]])


def stored_candidates(path: Path) -> dict:
    """The candidates of a stored --cascade or --real-cascade run (its first entry that has any)."""
    d = json.loads(Path(path).read_text())
    return next(v for v in d.values() if isinstance(v, dict) and "cands" in v)


WEIGHT_GRID = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, np.inf)


def verifier_weight_grid(runs: list[Path], grid=WEIGHT_GRID) -> dict:
    """Recall at 0.5 / 1 FA/h of each stored run's candidates ranked by the combiner's two features, first stage
    + w x verifier (the ranking of sigmoid(a + b x1 + c x2) depends on c / b alone; w = inf: the verifier alone,
    w = 0: the first stage alone). The shipped combiner is w = DEFAULT_PARAMS c / b."""
    out = {}
    print(f"\n{'w = c / b':>10s} " + " ".join(f"{Path(p).stem:>22s}" for p in runs))
    feats = {}
    for p in runs:
        d = stored_candidates(p)
        x, y, _ = candidate_features(d)
        feats[Path(p).stem] = (x, y, d["hours"], d["keywords"])
    for w in grid:
        row = {}
        for name, (x, y, hours, n) in feats.items():
            score = x[:, 1] if np.isinf(w) else x[:, 0] + w * x[:, 1]
            curve = det_curve(score, y, hours, n)
            row[name] = [recall_at(curve, fa) for fa in (0.5, 1)]
        out[str(w)] = row
        print(f"{w:10g} " + " ".join(f"{r[0]:10.1%} / {r[1]:7.1%}" for r in row.values()))
    return out


def cascade_report(d: dict) -> dict:
    """Recall vs FA/h of the first stage alone and of the cascade, from stored candidates (cascade_eval)."""
    from spotter.verify import Combiner
    cands, hours, n_notes, thr = d["cands"], d["hours"], d["keywords"], d["thresholds"]
    y = np.array([c["y"] for c in cands])
    kws = [c["kw"] for c in cands]
    first = np.array([c["first"] for c in cands])
    rel = np.array([c["first"] / thr[c["kw"]] for c in cands])          # peak relative to its threshold
    vs = np.array([c["v"] for c in cands])
    cpu = np.array([c["cpu_ms"] for c in cands])
    print(f"{len(cands)} candidates ({len(cands) / hours:.0f} per hour), {int(y.sum())} true; verifier CPU per "
          f"candidate p50 {np.median(cpu):.0f} ms (mean {cpu.mean():.0f}) -> {100 * len(cands) / hours * cpu.mean() / 3.6e6:.2f} "
          f"% of a core at this candidate rate")
    ref = stored_combiner(d)
    vn = np.array([ref.features(k, f, v)[1] for k, f, v in zip(kws, first, vs)])
    shipped = combined_scores(d)
    if ref.params:
        print(f"shipped combiner with the keyword probe: {ref.params['*']}, threshold {ref.default_threshold}")
        gated = np.array([ref.gated(c.get("p")) for c in cands])
        print(f"probe gate (logit < {ref.gate:g}, rejected before the decoder): {int(gated.sum())} of {len(cands)} "
              f"candidates ({gated.mean() if len(cands) else 0:.0%}; true {int(y[gated].sum())}); this run measured "
              f"every candidate's decoder")
    # 2-fold by voice: fit the pooled combiner on one half of the voices, score the other
    voices = sorted({c["voice"] for c in cands})
    fold = np.array([voices.index(c["voice"]) % 2 for c in cands])
    comb = np.zeros(len(cands))
    fits = []
    for f in (0, 1):
        tr, te = fold != f, fold == f
        cb = Combiner()
        cb.set_first_thresholds(thr)
        if tr.any() and len(set(y[tr])) == 2:
            fits.append(cb.fit("*", [kws[i] for i in np.nonzero(tr)[0]], first[tr], vs[tr], y[tr]))
        for i in np.nonzero(te)[0]:
            comb[i] = cb.combine(kws[i], first[i], vs[i])
    print("fitted (a, b, c) per fold: " + "; ".join(f"{p['a']:.2f}, {p['b']:.2f}, {p['c']:.3f}" for p in fits))

    res = {}
    curves = {"first stage": det_curve(rel, y, hours, n_notes),
              "cascade (shipped combiner)": det_curve(shipped, y, hours, n_notes),
              "cascade (fitted, 2-fold)": det_curve(comb, y, hours, n_notes)}
    at1 = rel >= 1.0
    print(f"first stage at its calibrated thresholds: recall {np.sum(at1 & (y == 1)) / n_notes:.1%}, "
          f"FA/h {np.sum(at1 & (y == 0)) / hours:.1f}")
    ship = np.array([ref.accepts(k, c) for k, c in zip(kws, shipped)])
    res["cascade_at_shipped_threshold"] = {"recall": float(np.sum(ship & (y == 1)) / max(n_notes, 1)),
                                           "fa_per_hour": float(np.sum(ship & (y == 0)) / hours)}
    at = res["cascade_at_shipped_threshold"]
    print(f"cascade as shipped (its combiner and threshold): recall {at['recall']:.1%}, "
          f"FA/h {at['fa_per_hour']:.2f}")
    print(f"{'FA/h':>6s} " + " ".join(f"{k:>25s}" for k in curves))
    for fa in (0.5, 1, 2, 5, 10, 20, 50):
        print(f"{fa:6g} " + " ".join(f"{recall_at(c, fa):25.1%}" for c in curves.values()))
        res[f"recall_at_{fa}"] = {k: recall_at(c, fa) for k, c in curves.items()}
    if d.get("keywords_by_kw"):            # runs stored before it was counted have no per-keyword denominators
        for fa in (0.5, 1):
            rows = {"first stage": per_keyword_at(rel, y, kws, hours, d["keywords_by_kw"], fa),
                    "cascade (shipped combiner)": per_keyword_at(shipped, y, kws, hours, d["keywords_by_kw"], fa)}
            res[f"per_keyword_at_{fa}"] = rows
            print(f"per keyword at {fa:g} FA/h (found / of), first stage alone -> cascade: " + ", ".join(
                f"{kw} {a[0]}/{a[1]} -> {b[0]}" for (kw, a), b in zip(rows["first stage"].items(),
                                                                     rows["cascade (shipped combiner)"].values())))
    if d.get("calls") and config.SERVICES:          # runs stored before calls were kept have none
        points = {"first stage at its calibrated thresholds": rel >= 1.0, "cascade as shipped": ship}
        for fa in (0.5, 1):
            points[f"first stage at {fa:g} FA/h"] = rel >= threshold_at(rel, y, hours, fa)
            points[f"cascade at {fa:g} FA/h"] = shipped >= threshold_at(shipped, y, hours, fa)
        res["service_at_call_end"] = {k: service_at_call_end(d, m) for k, m in points.items()}
        first = next(iter(res["service_at_call_end"].values()))
        print(f"service correct at call end ({first['calls']} calls with keywords; keyword-free calls ending "
              f"without a suggestion, of {first['no_keyword_calls']}):")
        for k, r in res["service_at_call_end"].items():
            print(f"  {k:42s} {r['service_correct']:6.1%}   {r['no_keyword_calls_without_suggestion']:6.1%}")
    neg_h = (1 - y).sum() / hours
    print("candidates if the first stage proposed at f x its thresholds (peaks >= f x threshold among these):")
    for f in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        m = rel >= f
        print(f"  f={f}: {m.sum() / hours:.0f}/h ({int(y[m].sum())} true, {int((1 - y[m]).sum())} false = "
              f"{(1 - y[m]).sum() / hours:.0f} false/h); verifier {100 * m.sum() / hours * cpu.mean() / 3.6e6:.2f} % "
              f"of a core here, {100 * (1 - y[m]).sum() / hours * cpu.mean() / 3.6e6:.2f} % for the false ones alone")
    ms = np.array([c["ms"] for c in cands])
    print(f"added latency per event (verifier wall time on this loaded machine): p50 {np.median(ms):.0f} ms, "
          f"p95 {np.quantile(ms, 0.95):.0f} ms; CPU p95 {np.quantile(cpu, 0.95):.0f} ms; false candidates {neg_h:.0f}/h")
    print(f"(1 false alarm = {1 / hours:.1f} FA/h here.) Candidate-level AUC: first stage {auc(rel[y == 1], rel[y == 0]):.3f}, "
          f"verifier alone (per-keyword offset) {auc(vn[y == 1], vn[y == 0]):.3f}, shipped cascade "
          f"{auc(shipped[y == 1], shipped[y == 0]):.3f}, fitted cascade {auc(comb[y == 1], comb[y == 0]):.3f}"
          + (f", probe alone {auc(pr[y == 1], pr[y == 0]):.3f}" if (pr := probe_logits(d)) is not None else ""))
    return res


def pooled_threshold(runs: list[dict], scores: list[np.ndarray], budget: float) -> float:
    """The lowest threshold on the runs' candidate `scores` whose false alarms, counted over all `runs`' calls
    together, stay within `budget` per hour (the DET point with the best pooled recall)."""
    y = np.concatenate([[c["y"] for c in d["cands"]] for d in runs])
    return threshold_at(np.concatenate(scores), y.astype(int), sum(d["hours"] for d in runs), budget)


def strictest_threshold(runs: list[dict], scores: list[np.ndarray], budget: float) -> float:
    """The threshold on the runs' candidate `scores` that keeps each run within `budget` false alarms per hour on
    its own calls: the highest of their own budget thresholds (threshold_at on each)."""
    return max(threshold_at(s, np.array([c["y"] for c in d["cands"]]), d["hours"], budget)
               for d, s in zip(runs, scores))


def threshold_across_engines(fold_runs: list[Path], apply_runs: list[Path], budget: float = 0.5) -> dict:
    """The cascade's threshold chosen on engines a first stage never heard, and how it carries over to one more:
    for each leave-one-engine-out run, the combined-score threshold at `budget` FA/h on the other runs' calls
    pooled, scored on the run left out (recall, FA/h, service at call end); then the threshold chosen on every
    fold run pooled, scored on `apply_runs` (e.g. the shipped model's held-out voices). Beside each, the shipped
    threshold (stored_combiner: CASCADE_THRESHOLD, or PROBE_CASCADE_THRESHOLD for runs with probe logits) on the same
    candidates."""
    runs = {Path(p).stem: stored_candidates(p) for p in list(fold_runs) + list(apply_runs)}
    return threshold_across(runs, [Path(p).stem for p in fold_runs], [Path(p).stem for p in apply_runs], budget)


def threshold_across(runs: dict[str, dict], folds: list[str], apply: list[str], budget: float = 0.5,
                     each: bool = False) -> dict:
    """threshold_across_engines on stored candidates already loaded: `runs` by name, `folds` the names of the
    leave-one-engine-out runs, `apply` the names scored at the threshold chosen on every fold run pooled.
    each: also the threshold that holds the budget on each of the other runs alone (strictest_threshold), as
    "each"."""
    scores = {name: combined_scores(d) for name, d in runs.items()}
    scored = lambda name, t: operating_point(runs[name], scores[name], t)

    def line(name, label, r):
        sv = f"; service {r['service']:6.1%} ({r['quiet']:.1%} quiet)" if "service" in r else ""
        print(f"  {name:24s} {label:34s} {r['threshold']:.4f}: recall {r['recall']:6.1%} at {r['fa_per_hour']:5.2f} "
              f"FA/h{sv}")

    out = {}
    print(f"\ncascade threshold at {budget:g} FA/h chosen on other engines' calls, scored on the one left out "
          f"(beside it the shipped one):")
    for name in folds + list(apply):
        chosen_on = [f for f in folds if f != name]
        t = pooled_threshold([runs[f] for f in chosen_on], [scores[f] for f in chosen_on], budget)
        out[name] = {"chosen_on": chosen_on, "chosen": scored(name, t),
                     "shipped": scored(name, stored_combiner(runs[name]).default_threshold)}
        line(name, "chosen on " + "+".join(chosen_on), out[name]["chosen"])
        if each:
            t = strictest_threshold([runs[f] for f in chosen_on], [scores[f] for f in chosen_on], budget)
            out[name]["each"] = scored(name, t)
            line("", "holding it on each of them", out[name]["each"])
        line("", "shipped", out[name]["shipped"])
    return out


def operating_point(d: dict, scores: np.ndarray, t: float) -> dict:
    """A stored run's candidates accepted at `scores` >= t: threshold, recall, FA/h, the service at call end (runs
    with their calls) and keywords found of each keyword's (runs with keywords_by_kw)."""
    y = np.array([c["y"] for c in d["cands"]], int)
    acc = np.asarray(scores) >= t
    row = {"threshold": float(t), "recall": float(np.sum(acc & (y == 1)) / max(d["keywords"], 1)),
           "fa_per_hour": float(np.sum(acc & (y == 0)) / d["hours"])}
    if d.get("calls") and config.SERVICES:
        sv = service_at_call_end(d, acc)
        row.update(service=sv["service_correct"], quiet=sv["no_keyword_calls_without_suggestion"])
    if d.get("keywords_by_kw"):
        found = Counter(c["kw"] for c, a in zip(d["cands"], acc) if a and c["y"])
        row["per_keyword"] = {k: [found.get(k, 0), n] for k, n in d["keywords_by_kw"].items()}
    return row


def fitted_across(runs: dict[str, dict], feats: dict[str, np.ndarray], folds: list[str], apply: list[str] = (),
                  budget: float = 0.5, own=(0.5, 1, 2)) -> dict:
    """A combiner fitted across engines with its threshold chosen across engines: for each leave-one-engine-out
    run of `folds`, a logistic on the candidate features `feats[name]` (a row per stored candidate of runs[name],
    first column 1) fitted on the other fold runs' candidates pooled, its threshold at `budget` FA/h chosen on their
    fitted scores pooled (pooled_threshold), both scored on the run left out; each `apply` run gets the fit and the
    threshold of every fold run. Neither the fit nor the threshold sees the run it scores. Per run: the weights,
    "chosen" (operating_point at that threshold) and "own": recall at
    each FA/h of `own` on the run's own DET curve of the fitted scores (the threshold chosen there)."""
    from spotter.verify import fit_logistic
    labels = {n: np.array([c["y"] for c in runs[n]["cands"]], int) for n in runs}
    out = {}
    for name in list(folds) + [a for a in apply if a not in folds]:
        fit_on = [f for f in folds if f != name]
        w = fit_logistic(np.concatenate([feats[f] for f in fit_on]), np.concatenate([labels[f] for f in fit_on]))
        t = pooled_threshold([runs[f] for f in fit_on], [feats[f] @ w for f in fit_on], budget)
        d, s = runs[name], feats[name] @ w
        curve = det_curve(s, labels[name], d["hours"], d["keywords"])
        out[name] = {"fitted_on": fit_on, "params": [float(x) for x in w], "chosen": operating_point(d, s, t),
                     "own": {f"recall_at_{fa:g}": recall_at(curve, fa) for fa in own}}
    return out


def main(argv=None) -> int:
    from spotter.verify import CANDIDATE_FACTOR, VerifierConfig
    ap = argparse.ArgumentParser(prog="python -m training.verify_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--per-keyword", type=int, default=6, help="windows of each kind per keyword (default 6)")
    ap.add_argument("--conditions", default="clean,tel", help="comma-separated: clean, tel (windows); with "
                    "--real-cascade: clean, noise_10dB, context (each real clip between two real English phrases)")
    ap.add_argument("--cache", default=str(ROOT / "cache" / "sentences"))
    ap.add_argument("--real-en", type=int, default=0, help="also score N real English clips of each kind")
    ap.add_argument("--only-real", action="store_true")
    ap.add_argument("--cascade", default="", help="KW,NEG: cascade on calls of KW keyword and NEG keyword-free "
                    "sentences of test-split voices (e.g. 120,300)")
    ap.add_argument("--cascade-json", help="re-analyse the candidates stored by an earlier --cascade --json run")
    ap.add_argument("--fold", metavar="ENGINE", help="--cascade with a first stage trained and calibrated without "
                    "ENGINE (espeak, mbrola, kokoro) on the calls run in --work, scored on ENGINE's keyword sentences")
    ap.add_argument("--head-seed", type=int, help="with --fold: the first stage's head seed (default the recipe's "
                    "top-level seed)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "calls"), help="the calls run whose stored call sets "
                    "train the --fold first stage (default runs/calls)")
    ap.add_argument("--model", metavar="MODEL", help="with --cascade (no --fold): this first stage (.pt or .onnx) "
                    "instead of the shipped models/default.onnx, e.g. a candidate before it ships")
    ap.add_argument("--real-cascade", metavar="MODEL", help="the cascade with this English first stage (the en_wake "
                    "recipe's model, ONNX export) on the real recordings of ../shared/data/speech/real_kws_en")
    ap.add_argument("--cross-engine", metavar="RUNS", help="comma-separated --fold runs' JSON files: fit the combiner "
                    "on all but one and score the one left out (and, with --apply, fitted on all, other runs)")
    ap.add_argument("--threshold-across", metavar="RUNS", help="comma-separated --fold runs' JSON files: the "
                    "cascade threshold at --budget FA/h chosen on all but one and scored on the one left out (and, "
                    "chosen on all, on the --apply runs)")
    ap.add_argument("--weight-grid", metavar="RUNS", help="comma-separated stored runs' JSON files: recall at "
                    "0.5 / 1 FA/h as the verifier's weight against the first stage's changes")
    ap.add_argument("--apply", metavar="RUNS", default="", help="comma-separated runs' JSON files for --cross-engine "
                    "and --threshold-across")
    ap.add_argument("--calibrate", action="store_true", help="--cascade on the validation voices' calls (the "
                    "recipe's val sets) and print the combined-score threshold for --budget FA/h; with --cascade-json, "
                    "that threshold on the stored run's calls")
    ap.add_argument("--budget", type=float, default=0.5, help="false alarms per hour for --calibrate and "
                    "--threshold-across (default 0.5)")
    ap.add_argument("--factor", type=float, default=CANDIDATE_FACTOR,
                    help=f"candidate thresholds = factor x calibrated (default {CANDIDATE_FACTOR}, the runtime's)")
    ap.add_argument("--lead", default=",".join(f"{x:g}" for x in VerifierConfig.lead_s),
                    help="crop starts, seconds before the keyword end (one crop each; a keyword's score is the mean "
                    "over the crops); default the shipped verifier's")
    ap.add_argument("--tail", type=float, default=0.35, help="seconds kept after the keyword end")
    ap.add_argument("--decode", type=int, default=VerifierConfig.decode_tokens, help="greedy tokens decoded per crop")
    ap.add_argument("--positions", type=int, default=VerifierConfig.positions,
                    help="last word starts (+ end) of the transcript tried")
    ap.add_argument("--band-limit", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--crops", help="with --cascade or --real-cascade: keep every candidate's window in this .npz")
    ap.add_argument("--probe", help="the verifier's keyword probe: a .probe.npz file, or none; default the shipped "
                    "one (models/default.probe.npz) or, with --fold, one trained without the fold's engine; with "
                    "--cascade-json, none re-reads the stored candidates without their probe logits")
    args = ap.parse_args(argv)
    if args.model and (args.fold or not args.cascade):
        raise SpotterError("--model is the --cascade first stage on held-out voices: give --cascade, and no --fold")
    if args.head_seed is not None and not args.fold:
        raise SpotterError("--head-seed is the seed of a --fold first stage: give --fold too")
    from spotter.verify import Verifier
    crops = [] if args.crops else None

    def factory(lang="fr"):
        return Verifier(VerifierConfig(lead_s=tuple(float(x) for x in args.lead.split(",")), tail_s=args.tail,
                                       decode_tokens=args.decode, positions=args.positions,
                                       band_limit=args.band_limit, language=lang))
    print(f"verifier: crop starts {args.lead} s before the keyword end, tail {args.tail} s, greedy tokens "
          f"{args.decode}, positions {args.positions}, band limit {args.band_limit}")
    out = {}
    if args.cross_engine:
        cross_engine_combiner([Path(x) for x in args.cross_engine.split(",")],
                              [Path(x) for x in args.apply.split(",") if x])
        return 0
    if args.threshold_across:
        r = threshold_across_engines([Path(x) for x in args.threshold_across.split(",")],
                                     [Path(x) for x in args.apply.split(",") if x], args.budget)
        if args.json:
            Path(args.json).write_text(json.dumps(r, ensure_ascii=False, indent=1))
        return 0
    if args.weight_grid:
        verifier_weight_grid([Path(x) for x in args.weight_grid.split(",")])
        return 0
    if args.cascade_json:
        d = json.loads(Path(args.cascade_json).read_text())["cascade"]
        if args.probe == "none":               # the two-opinion cascade on the same candidates
            for c in d["cands"]:
                c.pop("p", None)
        cascade_report(d)
        if args.calibrate:
            calibrate_cascade(d, args.budget)
        return 0
    if args.real_cascade:
        root = Path(os.environ.get("SPOTTER_SPEECH_DIR", ROOT.parent / "shared" / "data" / "speech")) / "real_kws_en"
        for cond in args.conditions.split(","):
            out[f"real_cascade_{cond}"] = real_cascade(Path(args.real_cascade), root, args.factor, args.seed,
                                                       factory("en"), cond, crops,
                                                       chosen_probe(args.probe or "none", Path(args.work), None))
    if args.cascade:
        from training.calltrain import KOKORO_FOLD_SUFFIX
        sets = ("val", "val_gen") if args.calibrate else ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg",
                                                           "loeo_neg")
        sents = cached_sentences(Path(args.cache), sets)
        n_kw, n_neg = (int(x) for x in args.cascade.split(","))
        if args.fold:
            first = fold_first_stage(Path(args.work), args.fold, args.head_seed)
        else:
            first = Path(args.model) if args.model else None
        out["cascade"] = cascade_eval(sents, n_kw, n_neg, args.factor, args.seed, factory(), first, args.fold,
                                      split="val" if args.calibrate else "test", crops=crops,
                                      probe=chosen_probe(args.probe, Path(args.work), args.fold))
        if args.calibrate:
            out["cascade"]["threshold"] = calibrate_cascade(out["cascade"], args.budget)
    if not args.only_real:
        t0 = time.time()
        sents = cached_sentences(Path(args.cache))
        items = build_items(sents, args.per_keyword, args.seed)
        print(f"{len(sents)} cached evaluation sentences; {len(items)} windows ({time.time() - t0:.0f} s)")
        ver = factory()
        for cond in args.conditions.split(","):
            audio = channel_audio(items, cond, args.seed)
            scores, times = score_all(ver, audio, items)
            out[cond] = report(cond, items, scores, times)
            out[cond]["scores"] = [(it["kw"], it["kind"], it["s"]["engine"], s) for it, s in zip(items, scores)]
    if args.real_en:
        real_english(factory, args.real_en, args.seed)
    if CPU_MS:
        c = np.asarray(CPU_MS)
        print(f"\nprocess CPU per verifier call (all synthetic windows): p50 {np.median(c):.0f} ms, "
              f"p95 {np.quantile(c, 0.95):.0f} ms, mean {c.mean():.0f} ms (n={c.size})")
    if crops is not None:
        save_crops(Path(args.crops), crops)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SpotterError as e:                      # one line, no traceback
        raise SystemExit(f"error: {e}") from None

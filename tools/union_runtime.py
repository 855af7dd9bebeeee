"""The Whisper proposer at run time: the cascade as `spotter replay --proposer union` runs it (spotter.verify.
VerifiedSpotter, fed in blocks of one second, its worker thread verifying), against the cascade as shipped
(`--proposer first`) and openWakeWord 0.5.1, interleaved call by call on the held-out voices' calls of
tools/whisper_proposer.py --heldout (every --every-th of them).

    python tools/union_runtime.py --every 8 --stored runs/wpf/heldout.json --json runs/wpf/runtime.json

Prints, for each cascade, the process time per second of audio (both threads: the process's CPU while it runs
the call and waits for its worker), its ratio to openWakeWord's on the same calls, the latency of each accepted
keyword (the stream time when the event is decided, after both proposers: released_s for the union, the
first stage's decision for the shipped cascade, minus the keyword's end; the verifier's own time comes on top)
the keywords found and false alarms on these calls (the one hit rule, evaluation.streams.match_detections) and
the service suggested at each call's end (right for a call with keywords, none for a keyword-free one).
With --stored, the union's candidates are checked against the stored offline run's for the same calls: the
runtime must verify the same candidates (keyword, end) with the same proposer scores, and accept the ones that the
union combiner of models/default.whisper.npz accepts there.
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

BLOCK_S = 1.0


def run_cascade(vs, audio: np.ndarray, sr: int) -> tuple[list, object, float]:
    """(verified events, the suggestion at the call's end, process seconds) of one call through a VerifiedSpotter
    in BLOCK_S blocks."""
    vs.reset()
    t0 = time.process_time()
    n = int(BLOCK_S * sr)
    for i in range(0, audio.size, n):
        vs.process(audio[i:i + n])
    events = vs.flush()
    return events, vs.suggestion(), time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--every", type=int, default=8, help="every n-th call of the held-out voices' calls")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="the calls' draws (tools/whisper_proposer.py --seed)")
    ap.add_argument("--stored", type=Path, help="the offline run of the same calls (whisper_proposer --heldout)")
    ap.add_argument("--json", type=Path, help="write the measurement here")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from openwakeword.model import Model
    from evaluation.bench_runtime import OWW_MODEL
    from evaluation.streams import Annotation, match_detections
    from spotter.model import DEFAULT_MODEL, load_model
    from spotter.verify import VerifiedSpotter, shared_verifier
    from spotter.whisper_proposer import default_whisper_head
    from training import verify_eval as V
    from training.calltrain import KOKORO_FOLD_SUFFIX, service_tally
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    recipe = load_recipe(args.config, [])
    use_recipe_keywords(recipe, None)
    sr = V.SR
    model = load_model(DEFAULT_MODEL)
    ver = shared_verifier("fr")
    cascades = {"first": VerifiedSpotter(model, verifier=ver, proposer="first"),
                "union": VerifiedSpotter(model, verifier=ver, proposer="union", whisper_head=default_whisper_head())}
    assert cascades["union"].whisper is not None, "models/default.whisper.npz is missing"
    oww = Model(wakeword_models=[OWW_MODEL], inference_framework="onnx", ncpu=1)
    sents = V.cached_sentences(Path(recipe.calls.cache_dir),
                               ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg", "loeo_neg"))
    streams = V.cascade_calls(*V.call_sentences(sents, 100000, 100000, args.seed, None), args.seed)
    stored = {}
    if args.stored:
        run = json.loads(args.stored.read_text())["runs"]["union d1 s0"]["cands"]
        for c in run:
            stored.setdefault(c["stream"], []).append(c)
    cpu = {"first": 0.0, "union": 0.0, "openWakeWord": 0.0}
    outcomes = {k: [] for k in cascades}            # (suggestion at call end, the call's service, its keywords)
    found = {k: {"hits": 0, "fa": 0, "latency": [], "early": 0} for k in cascades}
    same = {"calls": 0, "calls_same": 0, "cands": 0, "cands_stored": 0}
    seconds, n_kw, t_start = 0.0, 0, time.time()
    step = 1280
    for n_call, (audio, notes, voice, eng, kind) in enumerate(streams):
        if n_call % args.every != args.offset:
            continue
        seconds += audio.size / sr
        n_kw += len(notes)
        ann = [Annotation(*n) for n in notes]
        events = {}
        for name, vs in cascades.items():
            events[name], sug, c = run_cascade(vs, audio, sr)
            cpu[name] += c
            outcomes[name].append((sug, V.call_service(notes), len(notes)))
        t0 = time.process_time()
        oww.reset()
        for i in range(0, audio.size - step + 1, step):
            oww.predict((np.clip(audio[i:i + step], -1, 1) * 32767).astype(np.int16))
        cpu["openWakeWord"] += time.process_time() - t0
        for name, evs in events.items():
            acc = sorted([ve for ve in evs if ve.is_detection], key=lambda ve: ve.detected_s)
            matched = match_detections([(ve.keyword, ve.detected_s) for ve in acc], ann)
            for ve, m in zip(acc, matched):
                if m is None:
                    found[name]["fa"] += 1
                else:
                    found[name]["hits"] += 1
                    decided = ve.released_s if ve.released_s is not None else ve.detected_s
                    found[name]["latency"].append(decided - ve.end_s)
                    found[name]["early"] += ve.whisper_pending
        if args.stored:
            got = sorted((ve.keyword, round(ve.end_s, 2), round(ve.first_score, 3),
                          round(ve.whisper_score or 0.0, 3), ve.whisper_pending) for ve in events["union"])
            want = sorted((c["kw"], round(c["end"], 2), round(c["first"], 3), round(c["w"], 3))
                          for c in stored.get(n_call, []))
            # an event released early (whisper_pending) has the Whisper head's score of its release: at most the
            # stored one (the head may join it later)
            same["calls"] += 1
            same["calls_same"] += len(got) == len(want) and all(
                g[:3] == w[:3] and (g[3] <= w[3] if g[4] else g[3] == w[3]) for g, w in zip(got, want))
            same["cands"] += len(got)
            same["cands_stored"] += len(want)
        if n_call % (20 * args.every) == 0:
            print(f"{n_call} calls, {seconds / 3600:.2f} h [{time.time() - t_start:.0f} s]", flush=True)
    hours = seconds / 3600
    out = {"hours": hours, "keywords": n_kw, "every": args.every, "block_s": BLOCK_S,
           "cpu_share_of_a_core": {k: v / seconds for k, v in cpu.items()}, "same_as_stored": same, "cascades": {}}
    print(f"\n{hours:.2f} h of held-out voices' calls (every {args.every}th), {n_kw} keywords, blocks of {BLOCK_S:g} s")
    for name in cascades:
        f = found[name]
        lat = np.array(f["latency"])
        row = {"recall": f["hits"] / max(n_kw, 1), "fa_per_hour": f["fa"] / hours,
               "latency_p50_s": float(np.median(lat)) if lat.size else None,
               "latency_p95_s": float(np.percentile(lat, 95)) if lat.size else None,
               "released_early": f["early"], "cpu_vs_openwakeword": cpu[name] / cpu["openWakeWord"],
               **service_tally(outcomes[name])}
        out["cascades"][name] = row
        print(f"  cascade proposer {name:5s}: {f['hits']} of {n_kw} keywords ({row['recall']:.1%}), {f['fa']} false "
              f"alarms ({row['fa_per_hour']:.2f} FA/h); latency after the keyword's end p50 "
              f"{row['latency_p50_s'] or float('nan'):.2f} s, p95 {row['latency_p95_s'] or float('nan'):.2f} s "
              f"({f['early']} found keywords released early); CPU "
              f"{100 * cpu[name] / seconds:.1f} % of a core = {row['cpu_vs_openwakeword']:.2f} x openWakeWord's "
              f"({100 * cpu['openWakeWord'] / seconds:.1f} %); service right at call end {row['service_correct']:.1%} "
              f"of {row['calls']} calls with keywords, {row['no_keyword_calls_without_suggestion']:.1%} of "
              f"{row['no_keyword_calls']} keyword-free calls without a suggestion", flush=True)
    if args.stored:
        print(f"  union against the stored offline run: {same['calls_same']} of {same['calls']} calls give the same "
              f"candidates with the same scores ({same['cands']} candidates here, {same['cands_stored']} stored)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""A keyword head on Whisper's encoder rows, heard live: the recipe's head trained on whole-call Whisper rows
(tools/whisper_rows.py) without one engine, then scored on that engine's calls twice: on rows of each call encoded
whole (past and future: what an offline replay could do) and on rows encoded the way a live stream could, in
windows of --window s ending every --hop s.

    python tools/whisper_head.py --work runs/phw/work --held mbrola --window 4 --hop 1 --seed 0
    python tools/whisper_head.py --cost --window 4 --hop 1     # its CPU beside the first stage's and openWakeWord's

Live rows: every --hop s of the stream, the last --window s of audio (less at the call's start) are encoded
(between 0.3 s of digital silence, as tools/whisper_rows.py); a speech-embedding row whose audio ends inside the
last hop takes its Whisper row from that window. Each row so has at least the 0.39 s of audio after its centre that
the speech embedding's row has, and arrives up to --hop s later than the embedding's would. The held engine's calls
(keyword calls of eval_kw, eval_kw_gen, eval_kw_kokoro; keyword-free calls of eval_neg, loeo_neg) are made again from
the sentence cache, as spotter train makes them, and checked against the stored labels.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.whisper_rows import WHISPER_DIM, LiveRows, encode, rows_at   # noqa: E402
from training import calls as C                  # noqa: E402
from training import calltrain as T              # noqa: E402
from training.phones import EMBEDDING_SPAN_S   # noqa: E402
from training.recipe import real_audio_files     # noqa: E402
from training.recipes import load_recipe         # noqa: E402

KW_SETS, NEG_SETS = ("eval_kw", "eval_kw_gen", "eval_kw_kokoro"), ("eval_neg", "loeo_neg")


def live_set(plan, name: str, utts, noise: dict, held: str, features) -> tuple[T.CallSet, list[int]]:
    """The calls of set `name` said by engine `held`, made as embed_set makes them, with `features`; and their
    indices among the set's stored calls."""
    from concurrent.futures import ProcessPoolExecutor
    noise_half, snr, _, alternate, _ = T.SET_SPECS[T.base_set(name)]
    seed, groups = T.set_groups(plan, name, utts)
    kinds = ("wide", "tel")
    split = {"eval_kw": "eval", "eval_neg": "test", "loeo_neg": "loeo"}[T.base_set(name)]
    picked = [i for i, g in enumerate(groups) if g[0].engine == held]
    lead = T.config.HEAD_FRAMES - 1
    tasks = [(groups[i], (kinds[i % 2],) if alternate else kinds, 1, split, [seed, i], features, lead) for i in picked]
    out = T.CallSet()
    with ProcessPoolExecutor(2, initializer=T._embed_init, initargs=(list(noise[noise_half]), seed, snr)) as pool:
        for calls in pool.map(T._embed_one, tasks, chunksize=2):
            for c in calls:
                out.add(*c)
    return out, picked


def live_cost(window_s: float, hop_s: float, rounds: int = 3) -> None:
    """Process time per second of audio, interleaved round by round on the same minute of cached keyword
    sentences: the shipped first stage streaming in 80 ms steps, openWakeWord 0.5.1 (one model, 80 ms hops), and
    live Whisper rows (a window_s window encoded every hop_s, rows read off it, a 512-wide head over them every
    80 ms step)."""
    from openwakeword.model import Model
    from evaluation.bench_runtime import OWW_MODEL
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from spotter.audio import load_audio
    from spotter.detector import KeywordSpotter
    from spotter.model import KeywordHead
    from spotter.onnxmodel import load_any
    from training.verify_eval import cached_sentences
    sents = [x for x in cached_sentences(ROOT / "cache" / "sentences", ("eval_kw",)) if x["keyword"]][:400:20]
    audio = np.concatenate([load_audio(x["path"]) for x in sents])[:60 * C.SR]
    step = T.config.STEP_SAMPLES
    model = load_any(DEFAULT_ONNX_MODEL, threads=1)
    oww = Model(wakeword_models=[OWW_MODEL], inference_framework="onnx", ncpu=1)
    pcm = [(np.clip(audio[i:i + step], -1, 1) * 32767).astype(np.int16) for i in range(0, audio.size - step + 1, step)]
    head = KeywordHead(dim=WHISPER_DIM).eval()
    ends = np.arange(hop_s, audio.size / C.SR + 1e-9, hop_s)
    per_hop = int(round(hop_s / C.STEP_S))
    got: dict = {"first stage": [], "openWakeWord": [], "live Whisper rows": []}
    for r in range(rounds + 1):
        t0 = time.process_time()
        sp = KeywordSpotter(model)
        for i in range(0, audio.size, step):
            sp.process(audio[i:i + step])
        t1 = time.process_time()
        for p in pcm:
            oww.predict(p)
        t2 = time.process_time()
        rows = np.zeros((T.config.HEAD_FRAMES + per_hop, WHISPER_DIM), np.float32)
        with torch.no_grad():
            for e in ends:
                a = max(0.0, e - window_s)
                z = encode(audio[int(a * C.SR):int(e * C.SR)])
                rows = np.vstack([rows[per_hop:], rows_at(z, e - a - EMBEDDING_SPAN_S / 2
                                                          - C.STEP_S * np.arange(per_hop)[::-1])])
                x = torch.from_numpy(np.stack([rows[k:k + T.config.HEAD_FRAMES] for k in range(1, per_hop + 1)]))
                head(x)
        t3 = time.process_time()
        if r:                                       # the first round warms up
            for k, v in zip(got, (t1 - t0, t2 - t1, t3 - t2)):
                got[k].append(v)
    secs = audio.size / C.SR
    med = {k: float(np.median(v)) / secs for k, v in got.items()}
    print(f"{secs:.0f} s of speech, {rounds} interleaved rounds (median process time per second of audio): "
          + ", ".join(f"{k} {100 * v:.2f} % of a core" for k, v in med.items())
          + f"; live Whisper rows ({window_s:g} s every {hop_s:g} s) / openWakeWord "
          f"{med['live Whisper rows'] / med['openWakeWord']:.2f} x, / first stage "
          f"{med['live Whisper rows'] / med['first stage']:.1f} x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--work", type=Path, default=ROOT / "runs/phw/work")
    ap.add_argument("--held", help="the engine left out of training and scored (mbrola, espeak, kokoro)")
    ap.add_argument("--cost", action="store_true", help="only the live rows' CPU against the first stage's and "
                    "openWakeWord's, interleaved")
    ap.add_argument("--window", type=float, default=4.0)
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/wh/live.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cost:
        live_cost(args.window, args.hop)
        return
    if not args.held:
        ap.error("--held is required (or --cost)")
    recipe = load_recipe(args.config, [f"seed={args.seed}"])
    plan, cfg, budget = recipe.calls, recipe.train, recipe.calibrate.budget_fa_per_hour
    sets, _ = T.load_callsets(args.work)
    keep = lambda m: m["engine"] != args.held
    dim = sets["train"].emb[0].shape[1]
    t0 = time.time()
    head, _ = T.train_fold(sets["train"].select(keep), sets["val"].select(keep), cfg, recipe.seed,
                           lambda: T.training_head(cfg.norm_dropout, cfg.norm_gain, dim=dim))
    thr, sm, _ = T.calibrate_head(head, sets["val"].select(keep), budget)
    print(f"head trained without {args.held} ({time.time() - t0:.0f} s)", flush=True)
    jobs = T.plan_jobs(plan, *T.plan_voices(plan))
    noise = T.noise_halves(real_audio_files(recipe.data))
    live = LiveRows(args.window, args.hop)
    whole = {"kw": T.CallSet(), "neg": T.CallSet()}
    streamed = {"kw": T.CallSet(), "neg": T.CallSet()}
    t0 = time.time()
    for side, names in (("kw", KW_SETS), ("neg", NEG_SETS)):
        for name in names:
            stored = T.CallSet.load(args.work / f"calls_{name}.npz")
            utts = C.synthesize_utterances(jobs[name], Path(plan.cache_dir), workers=2)
            made, picked = live_set(plan, name, utts, noise, args.held, live)
            for k, i in enumerate(picked):
                if not np.array_equal(made.labels[k], stored.labels[i]) or len(made.emb[k]) != len(stored.emb[i]):
                    raise SystemExit(f"{name}: call {i} made again differs from the stored one")
                whole[side].add(stored.emb[i], stored.labels[i], stored.notes[i], stored.meta[i])
                streamed[side].add(made.emb[k], made.labels[k], made.notes[k], made.meta[k])
            print(f"{name}: {len(picked)} calls of {args.held} encoded live ({time.time() - t0:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for rows, sets_ in (("whole call", whole), (f"live {args.window:g} s every {args.hop:g} s", streamed)):
        res = T.evaluate_head(head, sets_["kw"], sets_["neg"], thr, sm)
        a, b = res["at_0.5_fa_h"] or {}, res["at_1.0_fa_h"] or {}
        row = {"held": args.held, "seed": args.seed, "rows": rows, "negative_hours": res["negative_hours"],
               "at_0.5": a.get("recall"), "interval_0.5": a.get("recall_interval_90"), "at_1": b.get("recall"),
               "clip": res["clip"]["accuracy"], "service": res["service"]["service_correct"],
               "latency_0.5": a.get("latency_s")}
        print(json.dumps(row, default=float), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")


if __name__ == "__main__":
    main()

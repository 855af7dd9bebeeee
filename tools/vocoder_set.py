"""Build a training call set heard through a parametric vocoder (training/augment.py lpc_vocode), for
leave-one-engine-out comparisons with tools/head_sweep.py.

    python tools/vocoder_set.py --work runs/calls --out runs/voc_work [--sets train,train_gen]
    python tools/head_sweep.py --work runs/voc_work --extra --variant recipe --folds kokoro,mbrola,espeak,final

The training sentences of the recipe's plan (from the sentence cache: nothing is synthesised again) are grouped
into calls again with another seed; each call is resynthesised by the vocoder (its envelope, level, pitch x a drawn
factor and voicing every 10 ms, a pulse / noise excitation), then goes through one drawn channel (wideband or
telephone, real noise) as the recipe's training calls do, and is embedded. The set keeps each call's engine, so a
fold never trains on a vocoded version of the engine it leaves out. It is stored as `calls_train_extra.npz` in
--out, next to links to --work's sets and calls_info.json: `--extra` adds it to the training calls.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotter import config                          # noqa: E402
from training import calls as C                     # noqa: E402
from training import calltrain as T                 # noqa: E402
from training.augment import lpc_vocode             # noqa: E402
from training.recipes import load_recipe            # noqa: E402

log = logging.getLogger("vocoder_set")


def _vocoded_one(task) -> list[tuple]:
    """One group of sentences -> one vocoded call through a drawn channel, embedded (as calltrain._embed_one)."""
    group, split, seed = task
    rng = np.random.default_rng(seed)
    model, channel = T._EMBED_WORKER["model"], T._EMBED_WORKER["channel"]
    base = C.make_call(group, rng)
    base = C.Call(lpc_vocode(base.audio, rng), base.notes, base.speech, base.voice + "+voc", base.engine, "clean",
                  base.service, base.meta)
    kind = ("wide", "tel")[int(rng.integers(2))]
    call = channel(base, kind, rng)
    emb = C.stream_embeddings(model, call.audio)
    labels = C.step_labels(len(emb) - (config.HEAD_FRAMES - 1), call.notes, call.speech)
    return [(emb, labels, call.notes, {"voice": call.voice, "engine": call.engine, "channel": kind,
                                       "service": call.service, "split": split, "vocoder": True,
                                       **{k: v for k, v in call.meta.items() if k != "phones"}})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--work", default=str(ROOT / "runs/calls"), help="the run whose sets are linked")
    ap.add_argument("--out", default=str(ROOT / "runs/voc_work"))
    ap.add_argument("--sets", default="train", help="the plan's sets whose sentences are vocoded")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from concurrent.futures import ProcessPoolExecutor
    recipe = load_recipe(args.config)
    plan = recipe.calls
    work, out = Path(args.work).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for p in list(work.glob("calls_*.npz")) + [work / "calls_info.json"]:
        link = out / p.name
        if not link.exists():
            link.symlink_to(p)
    voices, splits = T.plan_voices(plan)
    jobs = T.plan_jobs(plan, voices, splits)
    t0 = time.time()
    groups = []
    for name in args.sets.split(","):
        utts = C.synthesize_utterances(jobs[name], Path(plan.cache_dir), workers=2)
        seed = zlib.crc32(f"{plan.seed}:{name}:vocoder".encode())
        groups += T.group_calls(utts, plan, np.random.default_rng(seed), no_kw_share=0.25)
    log.info("%d calls to vocode (sentences read in %.0f s)", len(groups), time.time() - t0)
    from training.recipe import real_audio_files
    noise_train = real_audio_files(recipe.data)["noise_train"]
    cs = T.CallSet()
    seed = zlib.crc32(f"{plan.seed}:vocoder".encode())
    tasks = [(g, "train", [seed, i]) for i, g in enumerate(groups)]
    with ProcessPoolExecutor(2, initializer=T._embed_init, initargs=(list(noise_train), seed, (0.0, 30.0))) as pool:
        for calls in pool.map(_vocoded_one, tasks, chunksize=4):
            for c in calls:
                cs.add(*c)
    path = out / "calls_train_extra.npz"
    cs.save(path)
    log.info("%s: %d calls, %.2f h, in %.0f s", path, len(cs.emb), cs.hours(), time.time() - t0)


if __name__ == "__main__":
    main()

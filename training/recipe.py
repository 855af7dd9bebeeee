"""The clip recipe run: TOML recipe (training/recipes.py) -> synthesized/recorded clips -> augmented windows
-> embeddings -> head -> calibrated thresholds -> artifact + evaluation on held-out voices + model card.

Data flow and splits (a voice/speaker is entirely in one split):
  train  voices' clips -> augmented training windows
  val    voices' clips -> validation windows (early stopping), negative streams and keyword streams (calibration)
  test   voices' clips -> held-out evaluation (confusion, DET, FRR at FA/h, service accuracy)
Real audio from the recipe's [data] folders: noise and speech files are split by file name hash, TRAIN_SHARE of
them for training backgrounds/babble, the rest for calibration/evaluation negatives only.
"""
from __future__ import annotations

import logging
import subprocess
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from spotter import config
from spotter.audio import load_audio
from spotter.model import KeywordHead, KeywordModel, load_model

from . import dataset as ds
from .recipes import REPO, ClipRecipe, DataSection, Recipe, load_recipe, recipe_meta  # noqa: F401  (load_recipe: API)
from evaluation.streams import compose, stream_posteriors

log = logging.getLogger("training")
TRAIN_SHARE = 0.5
SEGMENT_GAP_S = (0.15, 0.9)


# -- recipe ----------------------------------------------------------------------------------------------
def use_recipe_keywords(recipe: Recipe, override: str | None = None):
    """Activate the recipe's keyword set (its `keywords` path; --keywords FILE, relative to the working directory,
    overrides it) and record it in recipe.keywords. Without either, the French default stays active."""
    from spotter import config, keywordset
    if override:
        path = Path(override).absolute()
    elif recipe.keywords:
        path = recipe.keywords
    else:
        return config.KEYWORD_SET
    ks = keywordset.load(path)
    config.use_keyword_set(ks)
    recipe.keywords = path
    return ks


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


# -- data --------------------------------------------------------------------------------------------------
def _hash_share(path: Path) -> float:
    return zlib.crc32(path.name.encode()) % 1000 / 1000


def real_audio_files(data: DataSection) -> dict:
    """The [data] noise/speech files split into training and evaluation halves (empty when a folder is not set
    or absent)."""
    from .augment import find_noise_files
    out = {}
    for kind in ("noise", "speech"):
        folder = getattr(data, f"{kind}_dir")
        files = find_noise_files(folder) if folder else []
        out[f"{kind}_train"] = [f for f in files if _hash_share(f) < TRAIN_SHARE]
        out[f"{kind}_eval"] = [f for f in files if _hash_share(f) >= TRAIN_SHARE]
    return out


def synthesize_clips(recipe: ClipRecipe) -> tuple[list[ds.ClipRow], dict]:
    """Synthesize (cached) the recipe's clips; returns rows and a summary of voices/clips per engine and split."""
    from .synth import build_synth_plan, plan_summary, synthesize_set
    from .voices import available_voices, split_voices
    s = recipe.synth
    voices = available_voices(s.engines)
    splits = split_voices(voices, s.val_fraction, s.test_fraction, recipe.seed)
    plan = build_synth_plan(voices, splits, s.speeds, s.pitches, s.n_other_texts, recipe.seed)
    if s.max_voices_per_engine:                  # small recipes: a few voices per engine, every split kept
        by_group: dict = {}
        for v in sorted(voices, key=lambda v: v.key):
            if v.key in splits:
                by_group.setdefault((v.engine, splits[v.key]), []).append(v.key)
        share = {"train": 0.6, "val": 0.2, "test": 0.2}
        allowed = {k for (engine, sp), keys in by_group.items()
                   for k in keys[: max(1, round(s.max_voices_per_engine * share.get(sp, 0.2)))]}
        plan = [it for it in plan if it.voice.key in allowed]
    cache = s.cache_dir
    t0 = time.time()
    rows = synthesize_set(plan, cache, progress=True)
    summary = {"plan": plan_summary(plan), "synth_seconds": round(time.time() - t0, 1),
               "voices": {sp: sorted({it.voice.key for it in plan if it.split == sp}) for sp in ("train", "val", "test")}}
    clip_rows = [ds.ClipRow(path=str(cache / r["path"]) if not Path(r["path"]).is_absolute() else r["path"],
                            label=r["label"], voice=r["voice"], split=r["split"], engine=r["engine"], text=r["text"])
                 for r in rows]
    return clip_rows, summary


def load_backgrounds(files: list[Path], max_files: int = 400) -> list[np.ndarray]:
    out = []
    for f in files[:max_files]:
        try:
            out.append(load_audio(f))
        except Exception:
            continue
    return out


def make_augmenter(recipe: ClipRecipe, real: dict, seed: int):
    if not recipe.augment.enabled:
        return None
    from .augment import Augmenter
    return Augmenter(real["noise_train"] or None, real["speech_train"] or None, seed=seed)


def keyword_durations(bank: ds.ClipBank) -> dict:
    return {k: round(float(np.median([c.size for c in bank.by_label[k]])) / config.SAMPLE_RATE, 3)
            for k in config.KEYWORDS if bank.count(k)}


# -- streams for calibration and evaluation -----------------------------------------------------------------
def _segment(audio: np.ndarray, augmenter, rng) -> np.ndarray:
    if augmenter is None:
        return audio
    out = augmenter(audio, rng=rng)
    peak = np.max(np.abs(out))
    return out / peak if peak > 1 else out


def negative_streams(bank: ds.ClipBank, real_speech: list[np.ndarray], real_noise: list[np.ndarray], hours: float,
                     augmenter, seed: int, stream_minutes: float = 10.0) -> tuple[list[np.ndarray], dict]:
    """Long audio with no keyword: other-speech clips of held-out voices, real speech and real noise, augmented,
    joined with pauses. Returns the streams and how much unique material they were built from."""
    rng = np.random.default_rng(seed)
    others = bank.by_label.get(config.OTHER, [])
    pool = [("synth", a) for a in others] + [("real", a) for a in real_speech] + [("noise", a[: 10 * config.SAMPLE_RATE]) for a in real_noise]
    if not pool:
        return [], {"hours": 0}
    unique_s = sum(a.size for _, a in pool) / config.SAMPLE_RATE
    streams, total = [], 0.0
    target = hours * 3600
    while total < target:
        segs, length = [], 0.0
        while length < min(stream_minutes * 60, target - total):
            _, a = pool[rng.integers(len(pool))]
            segs.append((_segment(a, augmenter, rng), None))
            length += a.size / config.SAMPLE_RATE + np.mean(SEGMENT_GAP_S)
        audio, _ = compose(segs, SEGMENT_GAP_S, rng)
        streams.append(audio)
        total += audio.size / config.SAMPLE_RATE
    return streams, {"hours": round(total / 3600, 3), "unique_minutes": round(unique_s / 60, 1),
                     "synth_clips": len(others), "real_speech_files": len(real_speech),
                     "real_noise_files": len(real_noise)}


def keyword_streams(bank: ds.ClipBank, n_streams: int, augmenter, seed: int, keywords_per_stream: int = 12,
                    same_service: bool = False):
    """Streams alternating other speech and keywords (known times). With same_service, each stream is a call:
    1-3 keywords of one service among 4-10 other segments; returns (audio, notes, service)."""
    rng = np.random.default_rng(seed)
    kws = [k for k in config.KEYWORDS if bank.count(k)]
    others = bank.by_label.get(config.OTHER, [])
    out = []
    for i in range(n_streams):
        if same_service:
            service = list(config.SERVICES)[i % 4] if i % 4 < 3 else None      # every 4th call has no keyword
            pool = [k for k in kws if config.KEYWORD_SERVICE[k] == service]
            n_kw = int(rng.integers(1, 4)) if service and pool else 0
            chosen = list(rng.choice(pool, n_kw)) if n_kw else []
            n_other = int(rng.integers(4, 11))
        else:
            service = None
            chosen = list(rng.choice(kws, keywords_per_stream)) if kws else []
            n_other = 2 * len(chosen)
        segs = [(_segment(others[rng.integers(len(others))], augmenter, rng), None) for _ in range(n_other)] \
            if others else []
        for kw in chosen:
            clip = bank.by_label[kw][rng.integers(bank.count(kw))]
            segs.insert(int(rng.integers(0, len(segs) + 1)), (_segment(clip, augmenter, rng), str(kw)))
        audio, notes = compose(segs, SEGMENT_GAP_S, rng)
        out.append((audio, notes, service if chosen else None))
    return out


def posteriors_of(model, streams) -> list[np.ndarray]:
    return [stream_posteriors(model, a) for a in streams]


# -- the run -------------------------------------------------------------------------------------------------
def run_training(recipe: ClipRecipe) -> Path:
    from .augment import describe_augmentation, spec_augment
    from .train import finetune, seed_everything, train_head
    torch.set_num_threads(2)
    seed = recipe.seed
    seed_everything(seed)
    t_start = time.time()
    recipe.work_dir.mkdir(parents=True, exist_ok=True)
    tr = recipe.train

    rows, synth_summary = synthesize_clips(recipe)
    for root in recipe.data.recordings:
        rec = ds.recording_rows(root)
        log.info("recordings %s: %d files", root, len(rec))
        rows += rec
    real = real_audio_files(recipe.data)
    log.info("clips: %d; real noise files %d/%d, real speech files %d/%d (train/eval)", len(rows),
             len(real["noise_train"]), len(real["noise_eval"]), len(real["speech_train"]), len(real["speech_eval"]))

    banks = {sp: ds.ClipBank([r for r in rows if r.split == sp]) for sp in ("train", "val")}
    backgrounds = load_backgrounds(real["noise_train"] + real["speech_train"])
    model = KeywordModel(head=KeywordHead())
    if tr.init:
        base = load_model(tr.init)
        model.head.load_state_dict(base.head.state_dict())
        log.info("initialised the head from %s", tr.init)
    sa = spec_augment if recipe.augment.spec_augment else None

    t0 = time.time()
    train_speech = load_backgrounds(real["speech_train"])
    maker = ds.WindowMaker(banks["train"], backgrounds, make_augmenter(recipe, real, seed), seed, train_speech)
    items = maker.plan(tr.windows_per_keyword, tr.negative_windows)
    xtr, ytr = ds.build_embeddings(model, maker, items, spec_augment=sa, seed=seed, progress="train windows")
    vmaker = ds.WindowMaker(banks["val"], backgrounds, make_augmenter(recipe, real, seed + 1), seed + 1,
                            train_speech)
    vitems = vmaker.plan(tr.val_windows_per_keyword, tr.val_negative_windows)
    xva, yva = ds.build_embeddings(model, vmaker, vitems, seed=seed + 1, progress="val windows")
    t_embed = time.time() - t0

    t0 = time.time()
    head, history = train_head(model.head, (xtr, ytr), (xva, yva), epochs=tr.epochs, batch=tr.batch, lr=tr.lr,
                               patience=tr.patience, seed=seed)
    model.head = head
    if tr.finetune_blocks and tr.finetune_steps:
        finetune(model, maker, tr.finetune_steps, tr.finetune_blocks, seed=seed, spec_augment=sa)
    t_train = time.time() - t0

    t0 = time.time()
    cal_meta = calibrate(model, recipe, banks["val"], real, seed)
    t_cal = time.time() - t0

    model.meta.update({
        "name": recipe.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "recipe": recipe_meta(recipe),
        "synthesis": synth_summary,
        "clips": {sp: {l: b.count(l) for l in config.LABELS if b.count(l)} for sp, b in banks.items()},
        "windows": {"train": len(items), "val": len(vitems)},
        "keyword_durations_s": keyword_durations(banks["train"]),
        "history": history,
        "calibration": cal_meta,
        "augmentation": describe_augmentation(),
        "timings_s": {"embed": round(t_embed, 1), "train": round(t_train, 1), "calibrate": round(t_cal, 1)},
    })
    out = recipe.out
    out.parent.mkdir(parents=True, exist_ok=True)
    model.name = model.meta["name"]
    model.save(out)
    log.info("saved %s", out)
    finish(model, recipe, out, rows, real, t_start)
    return out


def calibrate(model, recipe: ClipRecipe, val_bank: ds.ClipBank, real: dict, seed: int) -> dict:
    """Choose the smoothing window and per-keyword thresholds on validation voices (see calibrate.py)."""
    from .calibrate import choose_smoothing, choose_thresholds, measure, sweep
    cal = recipe.calibrate
    budget = cal.budget_fa_per_hour
    vaug = make_augmenter(recipe, real, seed + 2)
    neg, neg_info = negative_streams(val_bank, load_backgrounds(real["speech_eval"]),
                                     load_backgrounds(real["noise_eval"], max_files=60),
                                     cal.negative_hours, vaug, seed + 2)
    pos = keyword_streams(val_bank, cal.positive_streams, vaug, seed + 3)
    neg_post = posteriors_of(model, neg)
    pos_post = [(stream_posteriors(model, a), notes) for a, notes, _ in pos]
    tried = []
    for smoothing in cal.smoothing_candidates or [model.detector.smoothing_steps]:
        model.detector.smoothing_steps = int(smoothing)
        thresholds = choose_thresholds(sweep(model, neg_post, pos_post), neg_info["hours"], budget)
        result = measure(model, thresholds, neg_post, pos_post, neg_info["hours"])
        log.info("smoothing %s steps: recall %.3f at %.2f FA/h, latency p50 %s s", smoothing, result["recall"],
                 result["fa_per_hour"], result["latency_p50_s"])
        tried.append((int(smoothing), thresholds, result))
    best = tried[choose_smoothing([r for _, _, r in tried], cal.max_latency_p50_s)]
    model.detector.smoothing_steps, model.detector.thresholds, result = best
    log.info("calibrated: smoothing %d steps, thresholds %s -> %s", best[0], best[1], result)
    return {"budget_fa_per_hour": budget, "negatives": neg_info, "smoothing_steps": best[0], "result": result}


def finish(model, recipe: ClipRecipe, out: Path, rows, real, t_start: float) -> None:
    """Evaluate on the test voices (unless disabled), store the figures, write artifact and model card."""
    if recipe.evaluate.enabled:
        res = run_evaluation(recipe, model_path=out, model=model, rows=rows, real=real)
        model.meta["evaluation"] = res["figures"]
    model.meta.setdefault("timings_s", {})["total"] = round(time.time() - t_start, 1)
    model.save(out)
    write_model_card(model, out.with_suffix(".md"))
    log.info("done in %.1f min", (time.time() - t_start) / 60)


def recalibrate(recipe: ClipRecipe, model_path, out=None) -> Path:
    """Re-run calibration, evaluation and the model card for an already trained model (head kept). model_path
    and out (default: model_path) are relative to the working directory."""
    t_start = time.time()
    model = load_model(Path(model_path))
    rows, _ = synthesize_clips(recipe)
    real = real_audio_files(recipe.data)
    val = ds.ClipBank([r for r in rows if r.split == "val"])
    t0 = time.time()
    model.meta["calibration"] = calibrate(model, recipe, val, real, recipe.seed)
    model.meta.setdefault("timings_s", {})["calibrate"] = round(time.time() - t0, 1)
    model.meta["recalibrated"] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  "git_commit": _git_commit(),
                                  "head_trained": model.meta.get("created"),
                                  "timings_s_of_training_run": dict(model.meta.get("timings_s", {}))}
    model.meta["recipe"]["calibrate"] = recipe_meta(recipe)["calibrate"]
    out = Path(out or model_path)
    model.save(out)
    t_train_total = model.meta["recalibrated"]["timings_s_of_training_run"].get("total")
    finish(model, recipe, out, rows, real, t_start)
    if t_train_total:
        model.meta["timings_s"]["training_run_total"] = t_train_total
        model.save(out)
        write_model_card(model, out.with_suffix(".md"))
    return out


def run_evaluation(recipe: ClipRecipe, model_path=None, out_dir=None, model=None, rows=None, real=None) -> dict:
    """Evaluate on the test voices; writes evaluation.json, confusion.{png,txt}, det.png."""
    from evaluation.evaluate import evaluate
    from spotter.model import default_model_path
    seed = recipe.seed + 100
    ev = recipe.evaluate
    model = model or load_model(model_path or default_model_path())
    if rows is None:
        rows, _ = synthesize_clips(recipe)
    real = real or real_audio_files(recipe.data)
    bank = ds.ClipBank([r for r in rows if r.split == "test"])
    backgrounds = load_backgrounds(real["noise_eval"] + real["speech_eval"])
    aug = make_augmenter(recipe, real, seed)
    maker = ds.WindowMaker(bank, backgrounds, aug, seed, load_backgrounds(real["speech_eval"]))
    items = maker.plan(ev.test_windows_per_keyword, ev.test_negative_windows)
    windows = ds.build_embeddings(model, maker, items, seed=seed, progress="test windows")
    neg, neg_info = negative_streams(bank, load_backgrounds(real["speech_eval"]),
                                     load_backgrounds(real["noise_eval"], max_files=60),
                                     ev.negative_hours, aug, seed + 1)
    pos = keyword_streams(bank, ev.positive_streams, aug, seed + 2)
    calls = keyword_streams(bank, ev.calls, aug, seed + 3, same_service=True)
    out_dir = Path(out_dir) if out_dir else recipe.work_dir / "evaluation"
    res = evaluate(model, windows, posteriors_of(model, neg), neg_info["hours"],
                   [(stream_posteriors(model, a), n) for a, n, _ in pos],
                   [(stream_posteriors(model, a), n, s) for a, n, s in calls], out_dir)
    figures = {
        "test_voices": sorted({r.voice for r in rows if r.split == "test"}),
        "window_accuracy": res["window_accuracy"],
        "window_per_class": res["window_per_class"],
        "stream_recall_calibrated": res["calibrated"]["recall"],
        "fa_per_hour_calibrated": res["calibrated"]["fa_per_hour"],
        "negative_streams": neg_info,
        "frr_at_fa_per_hour": res["frr_at_fa_per_hour"],
        "stream_recall_per_keyword": res["stream_recall_per_keyword"],
        "service": res["service"],
        "confusion_text": (out_dir / "confusion.txt").read_text(),
        "out_dir": str(out_dir),
    }
    res["figures"] = figures
    res["summary"] = (f"held-out voices: window accuracy {res['window_accuracy']:.3f}; stream recall "
                      f"{res['calibrated']['recall']:.3f} at {res['calibrated']['fa_per_hour']:.2f} FA/h "
                      f"({neg_info['hours']} h negatives); FRR@0.5FA/h {res['frr_at_fa_per_hour']['0.5']}; "
                      f"service accuracy {res['service']['service_accuracy']}; results in {out_dir}")
    log.info(res["summary"])
    return res


def write_model_card(model: KeywordModel, path: Path) -> None:
    from .card import model_card
    path.write_text(model_card(model), encoding="utf-8")

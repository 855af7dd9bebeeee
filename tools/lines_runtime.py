"""Several lines at once with the cascade (`spotter listen --device A --device B ...`, spotter.verify.VerifiedLines):
what N lines cost, with the union proposing (each line its own Whisper proposer, all on one Whisper model) and with
the first stage proposing alone, against openWakeWord 0.5.1 on the same audio, and whether they keep up.

    python tools/lines_runtime.py --lines 1,2,4 --minutes 4

Each line is the held-out voices' calls of tools/whisper_proposer.py --heldout (those of tools/union_runtime.py),
one after another (a different run of calls per line), cut to --minutes. The N lines go through VerifiedLines one
80 ms tick at a time, unpaced (as fast as the workers allow: the union's workers make the ticks wait for room), then
openWakeWord runs every line's audio (one after the other in the same run, not interleaved tick by tick). Printed per N and proposer: the process time (both threads and every worker)
as a share of one core per line and its ratio to openWakeWord's, and the wall time over the audio's duration (the
real-time factor: under 1, N lines keep up live on this machine; the capture rings hold the audio meanwhile).
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

STEP = 1280


def line_audio(streams, seconds: float) -> np.ndarray:
    """The next calls of the `streams` iterator, one after another, up to `seconds`."""
    parts, n = [], 0
    while n < seconds * 16000:
        audio = next(streams)[0]
        parts.append(audio)
        n += audio.size
    return np.concatenate(parts)[:int(seconds * 16000)]


def run_lines(vl, frames: np.ndarray) -> tuple[float, float, int]:
    """(process seconds, wall seconds, verified candidates) of N lines' frames (N, T, 1280) through `vl`."""
    t0, w0 = time.process_time(), time.perf_counter()
    for t in range(frames.shape[1]):
        vl.step(frames[:, t])
    done = vl.flush()
    return time.process_time() - t0, time.perf_counter() - w0, len(done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--lines", default="1,2,4", help="comma-separated numbers of lines")
    ap.add_argument("--minutes", type=float, default=4.0, help="audio per line")
    ap.add_argument("--seed", type=int, default=0, help="the calls' draws (tools/whisper_proposer.py --seed)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from openwakeword.model import Model
    from evaluation.bench_runtime import OWW_MODEL
    from spotter.artifact import DEFAULT_ONNX_MODEL
    from spotter.onnxmodel import load_onnx_model
    from spotter.verify import VerifiedLines, shared_verifier
    from spotter.whisper_proposer import default_whisper_head
    from training import verify_eval as V
    from training.calltrain import KOKORO_FOLD_SUFFIX
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    recipe = load_recipe(args.config, [])
    use_recipe_keywords(recipe, None)
    model = load_onnx_model(DEFAULT_ONNX_MODEL)
    ver = shared_verifier("fr")
    wh = default_whisper_head()
    assert wh is not None, "models/default.whisper.npz is missing"
    oww = Model(wakeword_models=[OWW_MODEL], inference_framework="onnx", ncpu=1)
    sents = V.cached_sentences(Path(recipe.calls.cache_dir),
                               ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg", "loeo_neg"))
    streams = iter(V.cascade_calls(*V.call_sentences(sents, 100000, 100000, args.seed, None), args.seed))
    out = {"minutes_per_line": args.minutes, "runs": []}
    seconds = args.minutes * 60
    for n in [int(x) for x in args.lines.split(",")]:
        audio = [line_audio(streams, seconds) for _ in range(n)]
        steps = int(seconds * 16000) // STEP
        frames = np.stack([a[:steps * STEP] for a in audio]).reshape(n, steps, STEP)
        row = {"lines": n}
        for proposer in ("first", "union"):
            vl = VerifiedLines(model, [f"L{i + 1}" for i in range(n)], verifier=ver, proposer=proposer,
                               whisper_head=wh)
            cpu, wall, cands = run_lines(vl, frames)
            vl.close()
            row[proposer] = {"cpu_share_per_line": cpu / (n * seconds), "real_time_factor": wall / seconds,
                             "candidates": cands}
        t0 = time.process_time()
        for i in range(n):
            oww.reset()
            for t in range(steps):
                oww.predict((np.clip(frames[i, t], -1, 1) * 32767).astype(np.int16))
        row["openWakeWord_cpu_share_per_line"] = (time.process_time() - t0) / (n * seconds)
        out["runs"].append(row)
        o = row["openWakeWord_cpu_share_per_line"]
        for proposer in ("first", "union"):
            r = row[proposer]
            print(f"{n} line(s) x {args.minutes:g} min, proposer {proposer:5s}: {100 * r['cpu_share_per_line']:.1f} % of "
                  f"a core per line = {r['cpu_share_per_line'] / o:.2f} x openWakeWord's ({100 * o:.1f} %); wall "
                  f"{r['real_time_factor']:.3f} x the audio's duration; {r['candidates']} candidates", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Retraining from a few real recordings, measured: recall on held-back real clips after adding N real clips per
keyword to the synthetic training data (`spotter train --recordings`), at the same false-alarm rates.

    python tools/recordings_curve.py --config training/configs/en_wake.toml \
        --real ../shared/data/speech/real_kws_en --n 5 20 100

The clips carry no speaker labels. To keep one speaker's clips from landing on both sides, each keyword's files
are taken in numeric order and split into contiguous ranges: the first half is the pool the N training clips
come from (its first N), the second half is held back for scoring. N = 0 is the recipe's synthetic-only model.
Needs the recipe's run (`spotter train --config ...`) first: its stored calls are reused, only the head retrains.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _link_set(root: Path, items) -> Path:
    from spotter import config
    for kw, f in items:
        d = root / config.KEYWORD_ASCII[kw]
        d.mkdir(parents=True, exist_ok=True)
        link = d / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    return root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="training/configs/en_wake.toml")
    ap.add_argument("--real", required=True, metavar="DIR", help="real recordings DIR/<keyword>/*.wav|flac")
    ap.add_argument("--n", type=int, nargs="+", default=[5, 20, 100], help="recordings per keyword")
    ap.add_argument("--out", default=None, help="output folder (default: <work_dir>/recordings_curve)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    import torch
    from spotter import config
    from spotter.model import load_model
    from training.calltrain import train_from_calls
    from evaluation.realeval import compare_on_real, keyword_recordings
    from training.recipe import load_recipe, real_audio_files, use_recipe_keywords
    torch.set_num_threads(1)

    recipe = load_recipe(args.config)
    use_recipe_keywords(recipe)
    work = recipe.work_dir
    out = Path(args.out) if args.out else work / "recordings_curve"
    out.mkdir(parents=True, exist_ok=True)
    clips = keyword_recordings(Path(args.real))
    pool, held = [], []
    for kw in config.KEYWORDS:
        mine = [c for c in clips if c[0] == kw]
        half = len(mine) // 2
        pool += mine[:half]
        held += mine[half:]
    held_dir = _link_set(out / "held_back", held)
    noise = real_audio_files(recipe.data)["noise_eval"]      # the evaluation half of the noise recordings
    speech_dir = recipe.data.speech_dir

    rows = []
    for n in [0] + sorted(args.n):
        if n == 0:
            model_path, seconds = recipe.out, None
        else:
            train = [c for kw in config.KEYWORDS for c in [c for c in pool if c[0] == kw][:n]]
            rec_dir = _link_set(out / f"train_n{n}", train)
            r = copy.deepcopy(recipe)
            r.data.recordings = (rec_dir.absolute(),)
            r.out = (out / f"n{n}.pt").absolute()
            r.name = f"{recipe.name}+{n}rec"
            r.train.probe = False      # this curve scores the first stage; the probe's: whisper_probe.py recordings
            t0 = time.time()
            model_path = train_from_calls(r, folds=False)
            seconds = round(time.time() - t0, 1)
            use_recipe_keywords(recipe)
        model = load_model(model_path)
        res = compare_on_real(model, held_dir, work, speech_dir, noise, out / f"eval_n{n}", with_openwakeword=n == 0)
        rows.append({"n": n, "retrain_s": seconds, "result": res})
        (out / "curve.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1, default=float))

    print(f"held back: {sum(1 for c in held if c[0] == 'alexa')} alexa, "
          f"{sum(1 for c in held if c[0] == 'computer')} computer clips (second half of each keyword's files)")
    print("| N per keyword | retrain (s) | condition | model | recall @0.5 FA/h | recall @1 FA/h | per keyword @0.5 |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for cond, models in row["result"]["conditions"].items():
            for name, r in models.items():
                a5, a1 = r["at_0.5"], r["at_1.0"]
                rec = lambda a: "—" if a is None else f"{a['recall']['recall']:.3f}"
                per = "" if a5 is None else ", ".join(f"{k} {v['recall']:.2f}" for k, v in a5["per_keyword"].items())
                print(f"| {row['n']} | {row['retrain_s'] or '—'} | {cond} | {name} | {rec(a5)} | {rec(a1)} | {per} |")
    print(f"details: {out / 'curve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

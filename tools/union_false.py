"""The union's false alarms at the shipped operating point, with the sentences of the call each one falls in: what
the union accepts where no keyword was said, on stored runs of tools/whisper_proposer.py.

    python tools/union_false.py runs/wpf/heldout.json [runs/wpf/kokoro.json ...]

Each stored run's union candidates (its first union of delay 1) are scored with the union combiner of
models/default.whisper.npz (weights and threshold as shipped; for a fold run that combiner saw the fold's own
candidates, so its list is the shipped combiner's view, not an operating point chosen without the engine). Every
false candidate it accepts is printed with its keyword, its margin over the threshold, both proposers' scores, the
verifier's and the probe's, the voice and channel, its end, and the call's sentences in order (the calls made again
by the run's own draws: verify_eval.cascade_calls, sentences only, no audio).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def call_texts(sents: list[dict], engine: str | None, seed: int) -> list[list[str]]:
    """Each call's sentences, in the order verify_eval.cascade_calls makes the calls (its voices sorted, each
    voice's call_groups), for the held-out run (engine None) or a fold run (engine E)."""
    from training import verify_eval as V
    kw, neg = V.call_sentences(sents, 100000, 100000, seed, engine)
    by_voice: dict = {}
    for s in kw + neg:
        by_voice.setdefault(s["voice"], []).append(s)
    out = []
    for vi, voice in enumerate(sorted(by_voice)):
        for part in V.call_groups(by_voice[voice], seed + vi):
            out.append([s["text"] for s in part])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--config", default=str(ROOT / "training/configs/calls.toml"))
    ap.add_argument("--seed", type=int, default=0, help="the runs' draws (tools/whisper_proposer.py --seed)")
    args = ap.parse_args()
    import whisper_proposer as WP
    from spotter.whisper_proposer import default_whisper_head
    from training import verify_eval as V
    from training.calltrain import KOKORO_FOLD_SUFFIX
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    from training.texts import keyword_in
    recipe = load_recipe(args.config, [])
    use_recipe_keywords(recipe, None)
    wh = default_whisper_head()
    weights, threshold = np.asarray(wh.union_weights), wh.union_threshold
    sets = ("eval_kw", "eval_kw" + KOKORO_FOLD_SUFFIX, "eval_neg", "loeo_neg")
    sents = V.cached_sentences(Path(recipe.calls.cache_dir), sets)
    for path in args.runs:
        r = json.loads(path.read_text())
        union = next(n for n in r["runs"] if n.startswith("union d1"))
        whisper = next(n for n in r["runs"] if n.startswith(f"whisper {union.removeprefix('union ')} x"))
        feats = WP.proposer_features(r["runs"][union], (r["runs"]["first stage"], r["runs"][whisper]))
        cands = r["runs"][union]["cands"]
        z = feats @ weights - threshold
        false = [i for i in np.argsort(-z) if z[i] >= 0 and not cands[i]["y"]]
        engine = r["condition"].split()[1] if r["condition"].startswith("fold") else None
        texts = call_texts(sents, engine, args.seed)
        # the calls made again must be the run's: every true candidate's keyword is in its call's sentences
        true = [c for c in cands if c["y"]]
        same = sum(c["stream"] < len(texts) and any(keyword_in(t) == c["kw"] for t in texts[c["stream"]])
                   for c in true)
        if same < len(true):
            print(f"\n{path}: the calls made again are not the run's ({same} of {len(true)} true candidates' "
                  f"keywords in their call): skipped")
            continue
        print(f"\n{path} ({r['condition']}, {union}): {len(false)} false alarms in {r['hours']:.2f} h "
              f"({len(false) / r['hours']:.2f} FA/h) at the shipped union threshold")
        for i in false:
            c = cands[i]
            print(f"  {c['kw']:13s} margin {z[i]:+.2f}; first stage {c['first']:.3f}, Whisper head {c['w']:.3f}, "
                  f"verifier {feats[i, 4]:+.1f}, probe {c.get('p', 0.0):+.1f}; {c['voice']} {c['kind']}, call "
                  f"{c['stream']} at {c['end']:.2f} s")
            print("      " + " | ".join(texts[c["stream"]]))


if __name__ == "__main__":
    main()

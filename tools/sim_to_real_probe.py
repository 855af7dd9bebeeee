"""Where a keyword model trained on synthetic voices stands between real keywords and other speech.

    python tools/sim_to_real_probe.py --model runs/en_wake/en_wake.pt --work runs/en_wake \
        --real ../shared/data/speech/real_kws_en

Prints, from raw (unsmoothed) head posteriors:
  1. per keyword, the share of real clips whose right-keyword score peaks above 0.5 / 0.8 / 0.9 / 0.97;
  2. the share of near-miss sentences and of ordinary clauses (the set's own, test-split frames) said by 8 held-out
     espeak-ng voices of the run whose keyword score peaks above 0.9 / 0.97, with the highest-scoring sentences.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True, help="the run's work folder (calls_info.json: the voice splits)")
    ap.add_argument("--real", required=True, metavar="DIR")
    ap.add_argument("--sentences", type=int, default=100, help="near-miss and ordinary sentences each")
    args = ap.parse_args(argv)

    import torch
    from evaluation.realeval import keyword_recordings, stream_set
    from evaluation.streams import stream_posteriors
    from spotter import config
    from spotter.model import load_model
    from training import calls as C
    from training.calltrain import call_posteriors
    from training.sentences import _set_negative
    from training.voices import Voice
    torch.set_num_threads(1)
    model = load_model(args.model)                      # activates the model's keyword set
    ks = config.KEYWORD_SET
    kw_cols = [config.LABELS.index(k) for k in config.KEYWORDS]

    cs = stream_set(model, keyword_recordings(Path(args.real)), "clean")
    peaks = np.array([call_posteriors(model.head, e)[:, config.LABELS.index(m["keyword"])].max()
                      for e, m in zip(cs.emb, cs.meta)])
    kws = np.array([m["keyword"] for m in cs.meta])
    print("real clips: share whose right-keyword score peaks above")
    for k in config.KEYWORDS:
        x = peaks[kws == k]
        print(f"  {k:<12} {len(x)} clips: " + ", ".join(f">{t}: {np.mean(x > t):.3f}" for t in (0.5, 0.8, 0.9, 0.97))
              + f"; median {np.median(x):.3f}")

    info = json.loads((Path(args.work) / "calls_info.json").read_text())
    voices = [k for k, s in info["voices"].items() if s == "test" and k.startswith("espeak-") and "gen" not in k][:8]
    rng = random.Random(5)
    print(f"held-out synthetic sentences ({', '.join(voices)}): share whose keyword score peaks above")
    for kind, share in (("near-miss", 1.0), ("ordinary", 0.0)):
        scored = []
        for i in range(args.sentences):
            v = Voice("espeak", voices[i % len(voices)].removeprefix("espeak-"))
            s = _set_negative(ks, rng, "test", share)
            audio, _ = C.say(C.SayJob(s, v, speed=rng.uniform(0.8, 1.2), pitch=rng.randint(30, 70)))
            post = stream_posteriors(model, np.concatenate([audio, np.zeros(config.SAMPLE_RATE, np.float32)]))
            top = post[:, kw_cols].max(0)
            scored.append((float(top.max()), config.KEYWORDS[int(top.argmax())], s.text))
        x = np.array([p for p, _, _ in scored])
        print(f"  {kind:<9} {len(x)} sentences: >0.9: {np.mean(x > 0.9):.3f}, >0.97: {np.mean(x > 0.97):.3f}")
        for p, k, text in sorted(scored, reverse=True)[:5]:
            print(f"    {p:.3f} {k:<10} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How high each keyword's own posterior gets on the held-out voices' keyword calls, whatever the threshold.

    python tools/keyword_peaks.py --model models/default.pt --work runs/calls

For every keyword occurrence in the stored held-out keyword calls (test-split voices, half telephone), the model's
raw posterior for that keyword (no smoothing) at its highest within [end - 0.2 s, end + 0.8 s] of the synthesiser's
keyword end. Printed per keyword: occurrences, median peak, and the share of peaks at or above 0.9 / 0.98 / 0.99.
A keyword whose peaks stay under the common threshold is missed by the threshold, not by a competing keyword.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINDOW_S = (-0.2, 0.8)          # around the keyword's end: the hit rule's span plus the label's lead
LEVELS = (0.9, 0.98, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/default.pt"))
    ap.add_argument("--work", default=str(ROOT / "runs/calls"))
    args = ap.parse_args()
    import torch
    from spotter import config
    from spotter.model import load_model
    from training import calltrain as T
    torch.set_num_threads(1)
    model = load_model(args.model)
    sets, info = T.load_callsets(Path(args.work), extra=False)
    kw = T.held_out_voices(sets["eval_kw"], info)
    peaks: dict[str, list[float]] = {k: [] for k in config.KEYWORDS}
    for emb, notes in zip(kw.emb, kw.notes):
        post = T.call_posteriors(model.head, emb)
        for word, _start, end in notes:
            a = max(0, int((end + WINDOW_S[0]) / config.STEP_S))
            b = int((end + WINDOW_S[1]) / config.STEP_S)
            peaks[word].append(float(post[a:b, config.KEYWORDS.index(word)].max()))
    print(f"{Path(args.model).name}, held-out voices: peak of the keyword's own posterior near its end")
    print("| keyword | occurrences | median | " + " | ".join(f">= {x:g}" for x in LEVELS) + " |")
    print("|---|---|---|" + "---|" * len(LEVELS))
    for k, x in peaks.items():
        x = np.asarray(x)
        print(f"| {k} | {len(x)} | {np.median(x):.3f} | " + " | ".join(f"{np.mean(x >= v):.0%}" for v in LEVELS) + " |")


if __name__ == "__main__":
    main()

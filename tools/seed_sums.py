"""Sums over head seeds of a recipe variant's fold logs and real-people scores, as the README's comparison tables give them.

    python tools/seed_sums.py tw:en_tw tm:en_tm

For each TAG (or TAG:DIR): the fold logs runs/fold_TAG_sS.log written by `tools/head_context.py ... > runs/fold_TAG_sS.log`
(seeds 0-4; keywords found at 0.5 / 1 / 2 FA/h per fold, on the unheard engine and on the trained engines' held-out
voices), and with DIR the real English scores runs/DIR/score_TAG_sS.log written by `tools/score_rule.py --real-model`
(seeds 0-5; the `posterior` rows, clean and at 10 dB, at 0.5 / 1 FA/h). A seed whose log is missing or unfinished is
left out, and the seeds summed are printed.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

RUNS = Path(__file__).resolve().parents[1] / "runs"
FOLD_SEEDS = range(5)
REAL_SEEDS = range(6)
FOLD = re.compile(r"seed (\d+), fold without (\w+), (unheard \w+|trained engines' held-out voices): "
                  r"found at 0.5 / 1 / 2 FA/h (\d+) / (\d+) / (\d+)")
REAL = {c: re.compile(rf"{c}, posterior: found at 0.5 / 1 FA/h: (\d+) / (\d+)") for c in ("clean", "noise_10dB")}


def fold_sums(tag: str) -> tuple[list[int], dict[str, list[int]]]:
    """Seeds found and, per fold row, the keywords found at 0.5 / 1 / 2 FA/h summed over them."""
    done, sums = [], {}
    for s in FOLD_SEEDS:
        p = RUNS / f"fold_{tag}_s{s}.log"
        text = p.read_text() if p.exists() else ""
        if "sum of the folds" not in text:
            continue
        done.append(s)
        for m in FOLD.finditer(text):
            row = m.group(3).replace("trained engines' held-out voices", f"held-out ({m.group(2)} fold)")
            sums[row] = [a + int(b) for a, b in zip(sums.get(row, [0, 0, 0]), m.groups()[3:])]
    return done, sums


def real_scores(folder: str, tag: str) -> dict[int, list[int]]:
    """Per seed: clean 0.5, clean 1, 10 dB 0.5, 10 dB 1 FA/h clips found."""
    out = {}
    for s in REAL_SEEDS:
        p = RUNS / folder / f"score_{tag}_s{s}.log"
        text = p.read_text() if p.exists() else ""
        found = [REAL[c].search(text) for c in REAL]
        if all(found):
            out[s] = [int(x) for m in found for x in m.groups()]
    return out


def main(args: list[str]) -> int:
    if not args:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for arg in args:
        tag, _, folder = arg.partition(":")
        done, sums = fold_sums(tag)
        print(f"{tag}: fold seeds {done}: " + "; ".join(f"{k} {'/'.join(map(str, v))}" for k, v in sorted(sums.items())))
        if folder:
            per = real_scores(folder, tag)
            t = [sum(v[i] for v in per.values()) for i in range(4)]
            print(f"{tag}: real seeds {sorted(per)}: clean {t[0]}/{t[1]}, 10 dB {t[2]}/{t[3]}; per seed at 1 FA/h "
                  f"clean {[v[1] for v in per.values()]}, 10 dB {[v[3] for v in per.values()]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

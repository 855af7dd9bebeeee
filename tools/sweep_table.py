"""Recall of head_sweep runs at several false-alarm rates, per fold, variant and head seed, from their JSON lines.

    python tools/sweep_table.py runs/sweep/voc_base.jsonl runs/sweep/base_s1.jsonl runs/sweep/reg_mixup.jsonl

Each cell: keywords found at the lowest threshold of the fold's DET grid whose false alarms per hour on the fold's
negatives stay within the rate (as `spotter evaluate` reads its DET), out of the fold's keywords. Lines without a
"seed" field are counted as seed 0 unless --seeds gives each file's seeds (e.g. "0,1" for a file of two runs).
The last column sums the folds' keywords at each rate: a change must beat the spread between head seeds.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

RATES = (0.5, 1, 2, 5, 10)


def recall_at(det: list[dict], rate: float) -> float:
    ok = [d["recall"] or 0.0 for d in det if d["fa_per_hour"] <= rate]
    return ok[0] if ok else 0.0          # the DET is in threshold order: the first within the rate is the lowest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--seeds", default="", help="per file, the seeds of its successive fold groups, ';'-separated")
    args = ap.parse_args(argv)
    given = [s.split(",") for s in args.seeds.split(";")] if args.seeds else []
    rows = defaultdict(dict)                   # (variant, seed) -> fold -> record
    for i, path in enumerate(args.files):
        seen = defaultdict(int)
        for line in open(path):
            r = json.loads(line)
            group = seen[r["fold"]]
            seen[r["fold"]] += 1
            seed = r.get("seed")
            if seed is None:
                seed = int(given[i][group]) if i < len(given) and group < len(given[i]) else 0
            rows[(r["variant"], seed)][r["fold"]] = r
    folds = sorted({f for v in rows.values() for f in v}, key=lambda f: (f == "final", f))
    print(f"{'variant':20s} {'seed':>4s} " + " ".join(f"{f:>26s}" for f in folds) + f" {'LOEO sum':>26s}")
    print(f"{'':20s} {'':4s} " + " ".join(f"{'found at ' + '/'.join(map(str, RATES)) + ' FA/h':>26s}"
                                            for _ in folds + ['sum']))
    for (variant, seed), by_fold in sorted(rows.items()):
        cells, total = [], [0] * len(RATES)
        for f in folds:
            r = by_fold.get(f)
            if r is None:
                cells.append(f"{'—':>26s}")
                continue
            n = r["at_0.5"]["of"] if r.get("at_0.5") else None
            found = [round(recall_at(r["det"], x) * n) if n else 0 for x in RATES]
            if f != "final":
                total = [a + b for a, b in zip(total, found)]
            cells.append(f"{'/'.join(map(str, found)) + f' of {n}':>26s}")
        print(f"{variant:20s} {seed:>4d} " + " ".join(cells) + f" {'/'.join(map(str, total)):>26s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

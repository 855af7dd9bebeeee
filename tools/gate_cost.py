"""The probe gate on stored cascade runs: how many candidates it rejects before the decoder, and the verifier's CPU
with and without it (each gated candidate costs RATIO of its measured verifier time: `tools/whisper_probe.py cost`,
interleaved). python tools/gate_cost.py --ratio 0.17 RUN.json [RUN.json ...]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from training.recipe import use_recipe_keywords
    from training.verify_eval import calls_recipe, stored_candidates, stored_combiner
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--ratio", type=float, required=True, help="a gated candidate's CPU / the full verifier's")
    a = ap.parse_args(argv)
    use_recipe_keywords(calls_recipe())
    for r in a.runs:
        d = stored_candidates(r)
        cb = stored_combiner(d)
        gated = np.array([cb.gated(c.get("p")) for c in d["cands"]])
        y = np.array([c["y"] for c in d["cands"]])
        cpu = np.array([c["cpu_ms"] for c in d["cands"]])
        full = cpu.sum() / 1000 / d["hours"] / 36
        with_gate = (cpu[~gated].sum() + a.ratio * cpu[gated].sum()) / 1000 / d["hours"] / 36
        print(f"{r.stem:24s} x{d['factor']}: {len(y) / d['hours']:4.0f} candidates/h, gated {gated.mean():4.0%} "
              f"(true {int(y[gated].sum())} of {int(y.sum())}); verifier {full:.2f} -> {with_gate:.2f} % of a core "
              f"({with_gate / full:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

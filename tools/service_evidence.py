"""The service at call end from every candidate's combined score, not only from the accepted ones.

    python tools/service_evidence.py runs/svc2/shipped runs/svc2/fold_espeak runs/svc2/fold_kokoro runs/svc2/fold_mbrola

Hypothesis: a call whose keywords the cascade rejects one by one (each combined score below the threshold) still
holds enough evidence for its service when the candidates' combined scores are summed per service. The shipped
rule (spotter.detector.CallAssessment over the accepted candidates' first-stage scores, at least 0.5) is compared
with sums over all candidates of g(combined score). The sum's threshold is set on the first run (the held-out
voices' calls) as the lowest that keeps as many of its keyword-free calls quiet as the shipped rule does, and the
same threshold is applied to the other runs (engines the first stage never heard). Prints, per run, the service
correct at call end (of the calls with keywords) and the share of keyword-free calls that end without a suggestion.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVIDENCE = {
    "sum of combined scores": lambda s: s,
    "sum of (combined - 0.2), above 0": lambda s: max(0.0, s - 0.2),
    "sum of (combined - 0.35), above 0": lambda s: max(0.0, s - 0.35),
    "sum of squared combined scores": lambda s: s * s,
}


def combined(d: dict) -> list[float]:
    from spotter.verify import Combiner
    cb = Combiner()
    cb.set_first_thresholds(d["thresholds"])
    return [cb.combine(c["kw"], c["first"], c["v"]) for c in d["cands"]]


def outcome(d: dict, scores: list[float], g, least: float) -> tuple[float, float]:
    """(service correct on calls with keywords, keyword-free calls without a suggestion) when each call's
    evidence for a service is the sum of g(score) over its candidates of that service's keywords."""
    from spotter import config
    ev = [{s: 0.0 for s in config.SERVICES} for _ in d["calls"]]
    for c, s in zip(d["cands"], scores):
        ev[c["call"] - 1][config.KEYWORD_SERVICE[c["kw"]]] += g(s)
    right = total = quiet = free = 0
    for call, e in zip(d["calls"], ev):
        best = max(e, key=e.get)
        suggestion = best if e[best] >= least else None
        if call["service"] is not None:
            total += 1
            right += int(suggestion == call["service"])
        elif not call["keywords"]:
            free += 1
            quiet += int(suggestion is None)
    return right / max(total, 1), quiet / max(free, 1)


def main(argv=None) -> int:
    from spotter.verify import CASCADE_THRESHOLD
    runs = [Path(r).with_suffix(".json") for r in (argv if argv is not None else sys.argv[1:])]
    if not runs:
        print(__doc__.split("\n\n")[1])
        return 2
    data = {r.stem: json.loads(r.read_text())["cascade"] for r in runs}
    scores = {n: combined(d) for n, d in data.items()}
    first = runs[0].stem
    # the shipped rule: the accepted candidates' first-stage scores, a suggestion from 0.5 on (CallAssessment)
    shipped = {n: [c["first"] if s >= CASCADE_THRESHOLD else 0.0 for c, s in zip(d["cands"], scores[n])]
               for n, d in data.items()}
    base = {n: outcome(d, shipped[n], lambda s: s, d.get("min_evidence", 0.5)) for n, d in data.items()}
    fmt = lambda r: "  ".join(f"{n} {a:6.1%} ({q:6.1%} quiet)" for n, (a, q) in r.items())
    print(f"{'the shipped rule (accepted candidates)':40s} {fmt(base)}")
    for name, g in EVIDENCE.items():
        least = min(t for t in np.arange(0.05, 5.0, 0.01) if outcome(data[first], scores[first], g, t)[1] >= base[first][1])
        res = {n: outcome(d, scores[n], g, least) for n, d in data.items()}
        print(f"{name + f', from {least:.2f}':40s} {fmt(res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Join artifacts that differ only in their head (e.g. one recipe trained from several head seeds) into one artifact
whose head is an EnsembleHead of theirs: posteriors averaged, as `[train] ensemble = N` trains it, without training.

    python tools/join_heads.py runs/ens/en012.pt runs/en_tw/tw_s0.pt runs/en_tw/tw_s1.pt runs/en_tw/tw_s2.pt
    python tools/score_rule.py --real-model runs/ens/en012.pt

The joined artifact keeps the first one's detector settings and metadata (its thresholds, not recalibrated): read
it on threshold-free figures such as recall at 0.5 / 1 FA/h. Measured: README, "Two crops for the verifier".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args(argv)
    import torch
    from spotter.errors import SpotterError
    from spotter.model import load_model
    try:
        for p in args.models:                  # each must be a valid artifact of this spotter
            load_model(p)
    except SpotterError as e:
        sys.exit(str(e))
    blobs = [torch.load(p, map_location="cpu", weights_only=True) for p in args.models]
    kw = blobs[0]["head_kwargs"]
    bad = [p for p, b in zip(args.models, blobs) if b["head_kwargs"] != kw or "members" in b["head_kwargs"]]
    if bad:
        sys.exit(f"{bad[0]}: its head differs from {args.models[0]}'s or is already an ensemble")
    joined = dict(blobs[0])
    joined["head"] = {f"members.{i}.{k}": v for i, b in enumerate(blobs) for k, v in b["head"].items()}
    joined["head_kwargs"] = {**kw, "members": len(blobs)}
    joined["meta"] = {**blobs[0]["meta"], "name": Path(args.out).stem, "joined_from": list(args.models)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(joined, args.out)
    load_model(args.out)                       # the result loads as any artifact
    print(f"{args.out}: {len(blobs)} heads, posteriors averaged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

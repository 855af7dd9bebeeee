"""Do the speech embedding's phones carry over to an engine never heard? A phone classifier on the embeddings,
trained without one engine, scored on that engine's validation calls and on the other engines' validation voices.

    python tools/phone_transfer.py --work runs/ph/work --engines mbrola,espeak,kokoro
    python tools/phone_transfer.py --work runs/ph/work --engines none     # the control: trained on every engine


Needs call sets with phone timelines (tools/phone_sets.py). Each row's input is the embedding rows r-3 .. r+3
(7 x 96, LayerNorm), its target the phone said at row r's centre (phones.row_phones); a two-layer network
(672 -> 256 -> 38) is trained on up to --rows rows of the training calls without the engine (train and train_gen),
then scored on the validation calls (val and val_gen): accuracy over rows with a phone that is not a pause, and the
same for the most frequent phone alone (chance).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.calltrain import CallSet        # noqa: E402
from training.phones import INVENTORY, PAUSE   # noqa: E402

CONTEXT = 3


def rows(cs: CallSet, keep, limit: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to `limit` (rows, targets) of the calls whose metadata `keep` accepts; None when there are none."""
    xs, ys = [], []
    for emb, meta in zip(cs.emb, cs.meta):
        pr = meta.get("phone_rows")
        if not pr or not keep(meta):
            continue
        y = np.asarray(pr)
        ok = np.flatnonzero(y[CONTEXT:len(y) - CONTEXT] >= 0) + CONTEXT
        xs.append(np.stack([emb[r - CONTEXT:r + CONTEXT + 1] for r in ok]).astype(np.float32))
        ys.append(y[ok])
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    pick = rng.permutation(len(y))[:limit]
    return torch.from_numpy(x[pick]), torch.from_numpy(y[pick].astype(np.int64))


def accuracy(model, x, y) -> tuple[float, float, int]:
    speech = y != INVENTORY.index(PAUSE)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 8192]).argmax(1) for i in range(0, len(x), 8192)])
    top = torch.bincount(y[speech]).argmax()
    return (float((pred[speech] == y[speech]).float().mean()), float((y[speech] == top).float().mean()),
            int(speech.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/ph/work")
    ap.add_argument("--engines", default="mbrola,espeak,kokoro")
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = lambda *names: [CallSet.load(args.work / f"calls_{n}.npz") for n in names]
    train, val = load("train", "train_gen"), load("val", "val_gen")
    for held in args.engines.split(","):
        rng = np.random.default_rng(args.seed)
        torch.manual_seed(args.seed)
        parts = [p for p in (rows(cs, lambda m: m["engine"] != held, args.rows, rng) for cs in train) if p]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        model = torch.nn.Sequential(torch.nn.LayerNorm(x.shape[-1]), torch.nn.Flatten(),
                                    torch.nn.Linear((2 * CONTEXT + 1) * x.shape[-1], 256), torch.nn.ReLU(),
                                    torch.nn.Dropout(0.2), torch.nn.Linear(256, len(INVENTORY)))
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
        for _ in range(args.epochs):
            model.train()
            for idx in torch.randperm(len(y)).split(512):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        scored = [(f"{held} (never heard)", lambda m: m["engine"] == held),
                  ("the trained engines' validation voices", lambda m: m["engine"] != held)]
        if held == "none":            # the control: each engine's new voices, every engine trained on
            scored = [(f"{e} (trained on)", lambda m, e=e: m["engine"] == e) for e in ("mbrola", "espeak", "kokoro")]
        for name, keep in scored:
            vs = [v for v in (rows(cs, keep, 10 ** 9, rng) for cs in val) if v]
            acc, chance, n = accuracy(model, torch.cat([v[0] for v in vs]), torch.cat([v[1] for v in vs]))
            print(f"without {held}: phones of {name}: {100 * acc:.1f} % of {n} speech rows "
                  f"(the most frequent phone alone: {100 * chance:.1f} %)", flush=True)


if __name__ == "__main__":
    main()

"""Teach the speech embedding's last blocks what Whisper's encoder hears: the backbone's tail (blocks 15-19) trained
to predict Whisper's rows of the same calls, without one engine, then its embeddings stored as call sets.

    python tools/distill_tail.py --work runs/phw/work --held mbrola --out runs/distill/mbrola
    python tools/phone_transfer.py --work runs/distill/mbrola --engines mbrola
    python tools/head_sweep.py --work runs/distill/mbrola --variant recipe --folds mbrola

--work holds tools/whisper_rows.py's sets: Whisper rows (calls_<set>.npz) and the trunk rows of the same calls
(trunk_<set>.npz). The tail starts as the backbone's own; a small predictor (two convolutions over 5 embedding rows)
reads its embeddings and is trained with it to give the whitened top --dims principal components of Whisper's rows,
less their mean at each position in the call (fitted on the training calls without --held). An anchor term (weight
--anchor) keeps each embedding near the backbone's own. Training uses segments of the training calls (train,
train_gen) whose engine is not --held; the epoch with the lowest loss on the validation calls without --held is
kept. The tail's embeddings of every set in --work are then written to --out as call sets (labels, notes and metadata
as stored) beside a link to --work's calls_info.json: the same calls as the stored embeddings' runs, with a tail that
never heard --held's engine. Such a tail costs what the backbone costs at run time: only its weights change.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import finetail as F               # noqa: E402
from training.calltrain import CallSet           # noqa: E402

TRAIN_SETS, VAL_SETS = ("train", "train_gen"), ("val", "val_gen")
SEGMENT = 48                   # embedding rows per training segment (3.8 s)


def load(work: Path, name: str) -> tuple[CallSet, CallSet]:
    whisper = CallSet.load(work / f"calls_{name}.npz")
    return whisper, F.load_trunk(work, name, whisper)


def segments(trunk: CallSet, whisper: CallSet, keep, rng) -> list[tuple[int, int]]:
    """(call, first embedding row) of non-overlapping SEGMENT-row segments of the kept calls, drawn offsets."""
    out = []
    for c, m in enumerate(whisper.meta):
        n = len(whisper.emb[c])
        if not keep(m) or n < SEGMENT:
            continue
        for s in range(int(rng.integers(0, n % SEGMENT + 1)), n - SEGMENT + 1, SEGMENT):
            out.append((c, s))
    return out


def batch(trunk, whisper, anchor, picks, proj) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = np.stack([trunk.emb[c][s:s + SEGMENT + F.TRUNK_LEAD] for c, s in picks]).astype(np.float32)
    w = np.stack([whisper.emb[c][s:s + SEGMENT] for c, s in picks]).astype(np.float32)
    a = np.stack([anchor[c][s:s + SEGMENT] for c, s in picks]).astype(np.float32)
    return torch.from_numpy(rows), torch.from_numpy((w - proj[0]) @ proj[1]), torch.from_numpy(a)


class Predictor(nn.Module):
    def __init__(self, dims: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(96)
        self.net = nn.Sequential(nn.Conv1d(96, 256, 5, padding=2), nn.ReLU(), nn.Conv1d(256, dims, 1))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:          # (B, T, 96) -> (B, T, dims)
        return self.net(self.norm(emb).transpose(1, 2)).transpose(1, 2)


def position_means(whisper: CallSet, keep) -> np.ndarray:
    """(rows, 512): the mean Whisper row at each row index of a call. Whisper's encoder output carries where in
    its input a frame is (its positional embeddings): about 40 % of the rows' variance, which no audio predicts."""
    n = max(len(e) for e in whisper.emb)
    total, count = np.zeros((n, 512)), np.zeros(n)
    for e, m in zip(whisper.emb, whisper.meta):
        if keep(m):
            total[:len(e)] += e
            count[:len(e)] += 1
    return (total / np.maximum(count, 1)[:, None]).astype(np.float32)


def centre(whisper: CallSet, means: np.ndarray) -> None:
    """Each call's rows minus the position means (in place; rows past the means' length take its last)."""
    for i, e in enumerate(whisper.emb):
        idx = np.minimum(np.arange(len(e)), len(means) - 1)
        whisper.emb[i] = (e.astype(np.float32) - means[idx]).astype(np.float16)


def pca(whisper: CallSet, keep, dims: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(mean, (512, dims) projection onto the top principal components, each scaled to unit variance)."""
    x = np.concatenate([e for e, m in zip(whisper.emb, whisper.meta) if keep(m)]).astype(np.float32)
    x = x[rng.permutation(len(x))[:200000]]
    mean = x.mean(0)
    vals, vecs = np.linalg.eigh(np.cov((x - mean).T))
    top = np.argsort(vals)[::-1][:dims]
    return mean, (vecs[:, top] / np.sqrt(vals[top])).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs/phw/work")
    ap.add_argument("--emb", type=Path, default=ROOT / "runs/ph/work", help="the stored embeddings of the same "
                    "training calls (the anchor)")
    ap.add_argument("--held", required=True, help="the engine left out (mbrola, espeak, kokoro; none: every engine)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--anchor", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3, help="the tail's learning rate")
    ap.add_argument("--pred-lr", type=float, default=2e-3, help="the predictor's learning rate")
    ap.add_argument("--batch", type=int, default=16, help="segments per step")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    keep = lambda m: m["engine"] != args.held
    from spotter.model import KeywordHead, KeywordModel
    tail = F.Tail(KeywordModel(head=KeywordHead()).backbone)
    for p in tail.parameters():                    # the backbone comes frozen
        p.requires_grad_(True)
    parts = {}
    for name in TRAIN_SETS + VAL_SETS:
        whisper, trunk = load(args.work, name)
        anchor = CallSet.load(args.emb / f"calls_{name}.npz").emb
        parts[name] = (trunk, whisper, anchor)
    means = position_means(parts["train"][1], keep)
    for name in parts:
        centre(parts[name][1], means)
    proj = pca(parts["train"][1], keep, args.dims, rng)
    pred = Predictor(args.dims)
    opt = torch.optim.AdamW([{"params": tail.parameters(), "lr": args.lr},
                             {"params": pred.parameters(), "lr": args.pred_lr}], weight_decay=1e-4)
    anchor_scale = float(np.concatenate(parts["train"][2][:200]).astype(np.float32).var())

    def loss_of(name, picks):
        trunk, whisper, anchor = parts[name]
        rows, target, a = batch(trunk, whisper, anchor, picks, proj)
        e = tail(rows)
        distil = ((pred(e) - target) ** 2).mean()
        held = ((e - a) ** 2).mean() / anchor_scale
        return distil, held

    def evaluate() -> tuple[float, float]:
        tail.eval(), pred.eval()
        d = h = n = 0.0
        with torch.no_grad():
            for name in VAL_SETS:
                segs = segments(parts[name][0], parts[name][1], keep, np.random.default_rng(1))
                for i in range(0, len(segs), 64):
                    dd, hh = loss_of(name, segs[i:i + 64])
                    k = len(segs[i:i + 64])
                    d, h, n = d + float(dd) * k, h + float(hh) * k, n + k
        return d / n, h / n

    d0, h0 = evaluate()
    print(f"before: validation distillation loss {d0:.3f}, anchor {h0:.4f}", flush=True)
    best, best_state, t0 = float("inf"), None, time.time()
    for epoch in range(args.epochs):
        tail.train(), pred.train()
        segs = [(name, c, s) for name in TRAIN_SETS
                for c, s in segments(parts[name][0], parts[name][1], keep, rng)]
        order = rng.permutation(len(segs))
        for i in range(0, len(order), args.batch):
            chunk = [segs[j] for j in order[i:i + args.batch]]
            for name in TRAIN_SETS:
                picks = [(c, s) for n, c, s in chunk if n == name]
                if not picks:
                    continue
                distil, held = loss_of(name, picks)
                loss = distil + args.anchor * held
                opt.zero_grad()
                loss.backward()
                opt.step()
        d, h = evaluate()
        print(f"epoch {epoch + 1}: validation distillation loss {d:.3f}, anchor {h:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if d + args.anchor * h < best:
            best, best_state = d + args.anchor * h, copy.deepcopy(tail.state_dict())
    tail.load_state_dict(best_state)
    tail.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(tail.state_dict(), args.out / "tail.pt")
    for path in sorted(args.work.glob("trunk_*.npz")):
        name = path.stem.removeprefix("trunk_")
        whisper, trunk = load(args.work, name)
        F.tail_embeddings(tail, trunk).save(args.out / f"calls_{name}.npz")
    info = args.out / "calls_info.json"
    if not info.exists():
        os.symlink((args.work / "calls_info.json").resolve(), info)
    print(json.dumps({"held": args.held, "dims": args.dims, "anchor": args.anchor, "best": best,
                      "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()

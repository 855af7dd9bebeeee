"""Fine-tuning the backbone's last blocks with the head, on stored calls (issue 8: "try unfreezing the last backbone
blocks").

The speech_embedding backbone is cut after block 14 (its 1x2 pool): everything before the cut stays frozen, so its
output, the "trunk features" (96 channels x 2 mel bands, one frame every 40 ms), is computed once per call and
stored beside the call set (`trunk_<set>.npz`). The tail (blocks 15-19: four convolutions, a 2x2 pool, the final
3x1 convolution) and the head then train on windows of it, which costs about a tenth of the backbone per window.

Layout of a call's trunk features: row i holds the frames 2i and 2i + 1 (2 x 96 x 2 = 384 values, float16), and a
call with E embeddings has E + TRUNK_LEAD rows: embedding k is the tail over frames 2k .. 2k + 9 (rows k .. k + 4),
so the head's window of step j (embeddings j .. j + 15) reads rows j .. j + TRUNK_WIDTH - 1.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spotter import config

log = logging.getLogger("training")

CUT = 15                                   # first block of the tail
TRUNK_CH, TRUNK_MELS = 96, 2               # the trunk's output per 40 ms frame
ROW = 2 * TRUNK_CH * TRUNK_MELS            # 384 values per 80 ms step
TRUNK_LEAD = 4                             # rows beyond the embeddings' count: the tail's receptive field
TRUNK_WIDTH = config.HEAD_FRAMES + TRUNK_LEAD   # rows in one head window (20)
EMB_LEAD = config.HEAD_FRAMES - 1          # rows beyond the step count, for embeddings
ROW_LEAD = EMB_LEAD + TRUNK_LEAD           # ... and for trunk rows


def _run(blocks, x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x)
    return x


@torch.inference_mode()
def trunk_features(model, audio: np.ndarray) -> np.ndarray:
    """A call's trunk rows (E + TRUNK_LEAD, 384) float16, E = its stream_embeddings' length (same stream
    framing: digital-silence priming and the mel grid's context; one pass, calls are short)."""
    from evaluation.streams import primed_stream, step_samples
    from spotter.features import log_mel
    x, first, n_steps = primed_stream(audio)
    mel = log_mel(torch.from_numpy(step_samples(x, first, n_steps)))
    n_emb = (mel.shape[0] - config.EMBED_WINDOW) // config.EMBED_STEP + 1
    z = _run(model.backbone.blocks[:CUT], mel[None, None].contiguous(memory_format=torch.channels_last))
    frames = 2 * (n_emb + TRUNK_LEAD)
    z = z[0, :, :frames]                                            # (96, frames, 2)
    if z.shape[1] < frames:
        raise ValueError(f"trunk: {z.shape[1]} frames for {n_emb} embeddings")
    return z.permute(1, 0, 2).reshape(n_emb + TRUNK_LEAD, ROW).numpy().astype(np.float16)


class Tail(nn.Module):
    """The backbone's blocks CUT.. on trunk rows: (B, R, 384) -> embeddings (B, R - TRUNK_LEAD, 96)."""

    def __init__(self, backbone) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(backbone.blocks[CUT:])

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        b, r, _ = rows.shape
        x = rows.float().reshape(b, r * 2, TRUNK_CH, TRUNK_MELS).permute(0, 2, 1, 3)    # (B, 96, 2R, 2)
        return _run(self.blocks, x.contiguous()).flatten(2).transpose(1, 2)           # (B, R - 4, 96)


class TailHead(nn.Module):
    """Tail + head on a window of trunk rows (B, TRUNK_WIDTH, 384) -> logits."""

    def __init__(self, tail: Tail, head: nn.Module) -> None:
        super().__init__()
        self.tail, self.head = tail, head

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(rows))


@torch.inference_mode()
def tail_embeddings(tail: Tail, trunk) -> "object":
    """A CallSet of trunk rows -> the same calls' embeddings through `tail` (what the fine-tuned backbone gives)."""
    from .calltrain import CallSet
    tail.eval()
    out = CallSet()
    for rows, y, n, m in zip(trunk.emb, trunk.labels, trunk.notes, trunk.meta):
        out.add(tail(torch.from_numpy(rows)[None])[0].numpy().astype(np.float16), y, n, m)
    return out


def load_trunk(work: Path, name: str, like) -> "object":
    """The stored trunk rows of set `name`, with the labels, notes and meta of its CallSet `like`."""
    from .calltrain import CallSet
    with np.load(Path(work) / f"trunk_{name}.npz") as z:
        rows, lengths = z["rows"], z["lengths"]
    if len(lengths) != len(like.emb):
        raise ValueError(f"trunk_{name}.npz: {len(lengths)} calls, the call set has {len(like.emb)}")
    out = CallSet()
    r0 = 0
    for n, e, y, notes, m in zip(lengths, like.emb, like.labels, like.notes, like.meta):
        if n != len(e) + TRUNK_LEAD:
            raise ValueError(f"trunk_{name}.npz: a call has {n} rows for {len(e)} embeddings")
        out.add(rows[r0:r0 + n], y, notes, m)
        r0 += n
    return out


def save_trunk(cs, path: Path) -> None:
    np.savez(path, rows=np.concatenate(cs.emb), lengths=np.array([len(e) for e in cs.emb]))


def finetune_tail(head: nn.Module, backbone, train, val, cfg, seed: int, blocks: int, epochs: int,
                  lr: float) -> tuple[Tail, nn.Module, list]:
    """Train the last `blocks` backbone blocks (<= 5, the tail's) with a trained head, on windows of trunk rows
    (`train` / `val`: CallSets of trunk rows): the recipe's keyword and negative windows, class weights and early
    stopping on validation loss. Returns the tail and head at their best validation loss."""
    from .calltrain import stack_windows, window_index
    from .train import train_head
    if not 0 < blocks <= len(backbone.blocks) - CUT:
        raise ValueError(f"blocks: 1..{len(backbone.blocks) - CUT}, got {blocks}")
    tail = Tail(backbone)
    for i, block in enumerate(tail.blocks):
        for p in block.parameters():
            p.requires_grad_(i >= len(tail.blocks) - blocks)
    rng = np.random.default_rng([seed, 7])
    xtr, ytr = stack_windows(train, window_index(train, cfg.negative_windows, rng), TRUNK_WIDTH)
    xva, yva = stack_windows(val, window_index(val, cfg.val_negative_windows, rng), TRUNK_WIDTH)
    log.info("fine-tuning %d blocks: %d windows", blocks, len(ytr))
    model, hist = train_head(TailHead(tail, head), (xtr, ytr), (xva, yva), epochs=epochs, batch=cfg.batch, lr=lr,
                             patience=cfg.patience, seed=seed + 2, noise=0.0)
    return model.tail, model.head, hist

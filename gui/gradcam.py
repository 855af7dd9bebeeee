"""Why did the model fire? Grad-CAM heat maps over the log-mel window behind a detection.

The head sees HEAD_FRAMES embeddings, each computed by the speech_embedding CNN from a 76-frame window
(step 8), so one decision depends on a (196, 32) log-mel window. Grad-CAM (Selvaraju et al. 2017) at one
conv block of the backbone: for every embedding window i, the block's activations A_i (C, h, w) are
weighted by their spatially pooled gradients of the class logit, summed over channels, rectified,
upsampled to the window's (76, 32) mel grid and overlap-averaged onto the 196 frames; the result is
scaled to [0, 1]. The forward pass is rebuilt here from the backbone's blocks (no hooks, no state
changes), so it is safe to call while the detector thread runs the same model.

If the backbone has no `blocks` (a different network) or the Grad-CAM map is all zero, gradient x input
saliency on the mel window is used instead.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spotter.backbone import mel_windows
from spotter.config import EMBED_STEP, EMBED_WINDOW, N_MELS, WINDOW_FRAMES

GRADCAM_BLOCK = 10        # backbone block whose output is explained: (C=72, 14 frames x 4 mel bands) per window
EPS = 1e-12


def _check_window(mel_window) -> torch.Tensor:
    mel = torch.as_tensor(np.asarray(mel_window, dtype=np.float32))
    if mel.shape != (WINDOW_FRAMES, N_MELS):
        raise ValueError(f"gradcam: mel window must have shape ({WINDOW_FRAMES}, {N_MELS}), got {tuple(mel.shape)}")
    return mel


def _overlap_average(maps: torch.Tensor) -> np.ndarray:
    """(16, 76, 32) per-window maps -> (196, 32) mean over the windows covering each frame."""
    heat = torch.zeros(WINDOW_FRAMES, N_MELS)
    count = torch.zeros(WINDOW_FRAMES, 1)
    for i, m in enumerate(maps):
        heat[i * EMBED_STEP:i * EMBED_STEP + EMBED_WINDOW] += m
        count[i * EMBED_STEP:i * EMBED_STEP + EMBED_WINDOW] += 1
    return (heat / count).numpy()


def _normalize(heat: np.ndarray) -> np.ndarray | None:
    """Scale to [0, 1]; None when the map carries no information (all equal)."""
    heat = np.nan_to_num(heat.astype(np.float32), nan=0.0)
    lo, hi = float(heat.min()), float(heat.max())
    if hi - lo <= EPS:
        return None
    return (heat - lo) / (hi - lo)


def saliency(model, mel_window, label_index: int) -> np.ndarray:
    """|gradient x input| of the class logit wrt the (196, 32) log-mel window, scaled to [0, 1]."""
    mel = _check_window(mel_window).clone().requires_grad_(True)
    with torch.enable_grad():
        logit = model.logits_from_mel(mel[None])[0, label_index]
        (grad,) = torch.autograd.grad(logit, mel)
    heat = _normalize((grad * mel).abs().detach().numpy())
    return heat if heat is not None else np.zeros((WINDOW_FRAMES, N_MELS), dtype=np.float32)


def split_forward(model, mel: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rebuild logits_from_mel for one (196, 32) window, cut at `block`: (activations (16, C, h, w), logits (n,)).

    The activations are a leaf that requires grad, so d logits / d activations can be taken; the model is
    only read.
    """
    x = mel_windows(mel)[:, None]                            # (16, 1, 76, 32): the backbone's own layout
    with torch.no_grad():
        for b in model.backbone.blocks[:block + 1]:
            x = b(x)
    acts = x.detach().requires_grad_(True)
    y = acts
    for b in model.backbone.blocks[block + 1:]:
        y = b(y)
    return acts, model.head(y.flatten(1)[None])[0]


def gradcam(model, mel_window, label_index: int, block: int = GRADCAM_BLOCK) -> np.ndarray:
    """Grad-CAM of class `label_index` over a (196, 32) log-mel window -> heat (196, 32) in [0, 1].

    `model` is a KeywordModel (backbone with `blocks`, head over HEAD_FRAMES embeddings); the model is only
    read. Falls back to `saliency` when the backbone cannot be split or the map is all zero.
    """
    mel = _check_window(mel_window)
    blocks = getattr(model.backbone, "blocks", None)
    if blocks is None or not 0 <= block < len(blocks) - 1:
        return saliency(model, mel, label_index)
    with torch.enable_grad():
        acts, logits = split_forward(model, mel, block)
        (grads,) = torch.autograd.grad(logits[label_index], acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)           # (16, C, 1, 1): pooled gradients per window
    cams = F.relu((weights * acts.detach()).sum(dim=1, keepdim=True))          # (16, 1, h, w)
    cams = F.interpolate(cams, size=(EMBED_WINDOW, N_MELS), mode="bilinear", align_corners=False)[:, 0]
    heat = _normalize(_overlap_average(cams))
    return heat if heat is not None else saliency(model, mel, label_index)

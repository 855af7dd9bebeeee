"""Why did the model fire? The console's explanation of a detection, with or without torch.

* Grad-CAM (gui/gradcam.py) needs torch and the torch model: used when the console runs a torch artifact, or
  runs an ONNX export while torch is installed and the export's source artifact (same name, .pt, same sha256 as
  recorded in the export) lies next to it.
* Otherwise occlusion sensitivity with the ONNX model (no torch): patches of the (196, 32) log-mel window behind
  the decision are replaced by digital silence, all occluded windows are scored in batched graph calls, and each
  cell's heat is the mean drop of the explained class's posterior over the patches that cover it, scaled to [0, 1].
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from spotter.config import N_MELS, WINDOW_FRAMES
from spotter.frontend import MEL_FLOOR

GRADCAM = "Grad-CAM"
OCCLUSION = "occlusion"
METHOD_FR = {GRADCAM: "Grad-CAM (torch)", OCCLUSION: "sensibilité à l'occultation (ONNX, sans torch)"}
PATCH = (16, 8)           # occluded patch: 160 ms x 8 mel bands
STRIDE = (8, 4)
BATCH = 32                # occluded windows per graph call


def occlusion(model, mel_window, label_index: int, patch=PATCH, stride=STRIDE) -> np.ndarray:
    """Occlusion sensitivity of class `label_index` over a (196, 32) log-mel window -> heat (196, 32) in [0, 1]."""
    mel = np.asarray(mel_window, dtype=np.float32)
    if mel.shape != (WINDOW_FRAMES, N_MELS):
        raise ValueError(f"occlusion: mel window must have shape ({WINDOW_FRAMES}, {N_MELS}), got {mel.shape}")
    base = float(model.posteriors_from_mel(mel[None])[0, label_index])
    pt, pm = patch
    spots = [(t, m) for t in range(0, WINDOW_FRAMES - pt + 1, stride[0]) for m in range(0, N_MELS - pm + 1, stride[1])]
    drops = []
    for i in range(0, len(spots), BATCH):
        batch = np.repeat(mel[None], len(spots[i:i + BATCH]), axis=0)
        for j, (t, m) in enumerate(spots[i:i + BATCH]):
            batch[j, t:t + pt, m:m + pm] = MEL_FLOOR
        drops.extend(base - model.posteriors_from_mel(batch)[:, label_index])
    heat = np.zeros((WINDOW_FRAMES, N_MELS))
    count = np.zeros((WINDOW_FRAMES, N_MELS))
    for (t, m), d in zip(spots, drops):
        heat[t:t + pt, m:m + pm] += max(0.0, float(d))
        count[t:t + pt, m:m + pm] += 1
    heat = heat / np.maximum(count, 1)
    top = heat.max()
    return (heat / top if top > 0 else heat).astype(np.float32)


def torch_twin(model):
    """The torch model to run Grad-CAM on for `model`, or None (no torch, or no matching .pt next to the .onnx)."""
    if hasattr(model, "backbone"):
        return model                          # already the torch model
    path = getattr(model, "path", None)
    if path is None or not getattr(model, "source_sha256", None):
        return None
    return _load_twin(str(Path(path).with_suffix(".pt")), model.source_sha256)


@functools.lru_cache(maxsize=2)
def _load_twin(pt_path: str, sha256: str):
    from spotter.onnxmodel import torch_available
    if not torch_available() or not Path(pt_path).is_file():
        return None
    from spotter.artifact import file_sha256
    if file_sha256(pt_path) != sha256:
        return None
    try:
        from spotter.model import load_model
        return load_model(pt_path)
    except Exception:  # noqa: BLE001 - no Grad-CAM then; occlusion still explains
        return None


def explain(model, mel_window, label_index: int) -> tuple[np.ndarray, str]:
    """(heat (196, 32) in [0, 1], method): Grad-CAM when torch can run the model, occlusion otherwise."""
    twin = torch_twin(model)
    if twin is not None:
        from .gradcam import gradcam
        return gradcam(twin, mel_window, label_index), GRADCAM
    return occlusion(model, mel_window, label_index), OCCLUSION

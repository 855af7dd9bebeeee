"""A keyword probe on Whisper base's encoder: the verifier's third opinion (numpy, no torch).

The verifier (spotter/verify.py) encodes a crop around each candidate and forces the keyword's tokens through
Whisper's decoder. The probe reads the same encoding of the first crop (LEAD_S before the estimated keyword end to
the verifier's tail after it) and says which keyword ends there, or none: a small network trained by
training/probe.py on the recipe's synthetic sentences, through the recipe's channels.

  encoding (1, T, 512) -> the crop's frames (CROP_FRAMES after the PAD_FRAMES of leading silence), pooled in pairs
  -> LayerNorm -> Linear(512, W) -> GELU -> + GELU(Conv1d(W, W, 5)) -> attention pooling over time
  -> Linear(W, keywords + 1)

`KeywordProbe.logit(encoding, keyword)` is the logit of P(keyword | crop), the cascade's probe feature. The weights
and the keyword list are one .npz file (models/default.probe.npz for the French set); a probe whose keywords are
not the active set's is refused.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import config
from .errors import SpotterError

LEAD_S = 1.4              # the crop the probe reads starts this long before the estimated keyword end
PAD_FRAMES = 15           # the verifier's 0.3 s of leading silence, in Whisper's 20 ms encoder frames
CROP_FRAMES = 86          # 1.72 s of the crop (LEAD_S + the verifier's tail, 0.35 s), an even number of frames
FILE_SUFFIX = ".probe.npz"  # a first stage's probe lives beside it: models/default.onnx -> models/default.probe.npz
PARAMS = ("norm_w", "norm_b", "proj_w", "proj_b", "conv_w", "conv_b", "att_w", "att_b", "out_w", "out_b")


def probe_path(model_path) -> Path:
    """The probe file that belongs to a first-stage model file (same folder and stem)."""
    p = Path(model_path)
    return p.with_name(p.name.split(".")[0] + FILE_SUFFIX)


def crop_frames(encoding: np.ndarray) -> np.ndarray:
    """(T', 512) float32: the crop's encoder frames (after the leading silence) averaged in pairs."""
    e = np.asarray(encoding, np.float32)
    e = e.reshape(-1, e.shape[-1])[PAD_FRAMES:PAD_FRAMES + CROP_FRAMES]
    return e[:e.shape[0] // 2 * 2].reshape(-1, 2, e.shape[-1]).mean(1)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form (the form the probe is trained with)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class KeywordProbe:
    """The probe's weights and keyword list; logits(frames) runs it on one crop."""

    def __init__(self, weights: dict, keywords: list[str], source: str = ""):
        self.w = {k: np.asarray(weights[k], np.float32) for k in PARAMS}
        self.keywords = list(keywords)
        self.source = source

    @classmethod
    def load(cls, path) -> "KeywordProbe":
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
            weights = {k: z[k] for k in PARAMS}
            keywords = [str(k) for k in z["keywords"]]
        except (OSError, KeyError, ValueError) as e:
            raise SpotterError(f"{path}: not a keyword probe file ({e})") from None
        return cls(weights, keywords, str(path))

    def save(self, path) -> None:
        np.savez(path, keywords=np.array(self.keywords), **self.w)

    def matches_active_set(self) -> bool:
        return self.keywords == list(config.KEYWORDS)

    def logits(self, frames: np.ndarray) -> np.ndarray:
        """Class logits (keywords..., none) of one crop's pooled frames (T', 512). Products are np.einsum, numpy's
        own single-threaded loops: a BLAS matmul here woke OpenBLAS's thread pool beside Whisper's and cost 13-60 ms
        of process time per candidate instead of a few (tools/whisper_probe.py cost)."""
        w = self.w
        x = np.asarray(frames, np.float32)
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        h = (x - mu) / np.sqrt(var + 1e-5) * w["norm_w"] + w["norm_b"]
        h = gelu(np.einsum("td,kd->tk", h, w["proj_w"]) + w["proj_b"])
        k = w["conv_w"].shape[-1]
        hp = np.pad(h, ((k // 2, k // 2), (0, 0)))
        win = np.stack([hp[j:j + h.shape[0]] for j in range(k)], -1)            # (T', W, k)
        h = h + gelu(np.einsum("tcj,ocj->to", win, w["conv_w"]) + w["conv_b"])
        a = np.einsum("tc,c->t", h, w["att_w"][0]) + w["att_b"][0]
        a = np.exp(a - a.max())
        pooled = np.einsum("t,tc->c", a / a.sum(), h)
        return np.einsum("c,kc->k", pooled, w["out_w"]) + w["out_b"]

    def logit(self, encoding: np.ndarray, keyword: str) -> float:
        """logit of P(keyword ends at the crop's estimated end), from Whisper's encoding of the crop."""
        return self.frames_logit(crop_frames(encoding), keyword)

    def frames_logit(self, frames: np.ndarray, keyword: str) -> float:
        """logit of P(keyword), from the crop's pooled frames (crop_frames; stored crops keep these)."""
        z = self.logits(frames)
        z = z - z.max()
        p = math.exp(z[self.keywords.index(keyword)]) / float(np.exp(z).sum())
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

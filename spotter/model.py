"""Keyword model: the speech_embedding backbone + a small CNN head, and its on-disk artifact.

An artifact is one `torch.save` file holding only tensors and plain Python data (loadable with
`weights_only=True`): the head's weights, optionally fine-tuned backbone weights, and the configuration that
must match at load time (labels, front-end parameters), plus thresholds, services and training provenance.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from . import config
from .errors import SpotterError

ARTIFACT_FORMAT = "spotter-kws/1"


class KeywordHead(nn.Module):
    """Small temporal CNN over the last HEAD_FRAMES embeddings -> logits over LABELS."""

    def __init__(self, n_classes: int = len(config.LABELS), dim: int = config.EMBED_DIM,
                 channels: int = 96, dropout: float = 0.3):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.convs = nn.Sequential(
            nn.Conv1d(dim, channels, kernel_size=3, padding=1),
            nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, padding=2, dilation=2),
            nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, padding=4, dilation=4),
            nn.BatchNorm1d(channels), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * channels, n_classes)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: (B, HEAD_FRAMES, 96) -> logits (B, n_classes)."""
        x = self.norm(emb).transpose(1, 2)          # (B, 96, T)
        x = self.convs(x)
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
        return self.out(self.dropout(pooled))


class KeywordModel(nn.Module):
    """Backbone + head; owns the configuration stored in its artifact."""

    def __init__(self, backbone: nn.Module | None = None, head: KeywordHead | None = None,
                 detector: config.DetectorConfig | None = None, meta: dict | None = None):
        super().__init__()
        from .backbone import load_backbone
        self.backbone = backbone if backbone is not None else load_backbone(frozen=True)
        self.head = head if head is not None else KeywordHead()
        self.labels = config.LABELS
        self.frontend = config.FrontEnd()
        self.detector = detector or config.DetectorConfig()
        self.meta = dict(meta or {})       # provenance, keyword durations, evaluation summary...
        self.name = self.meta.get("name", "untrained")

    # -- inference paths ---------------------------------------------------------------------------
    def head_logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.head(emb)

    def embeddings_from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, 32) -> embeddings (B, N, 96), N = (T - 76) // 8 + 1."""
        return self.backbone.embed_windows(mel)

    def logits_from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, 32) covering exactly HEAD_FRAMES embeddings -> logits (B, n_classes)."""
        emb = self.embeddings_from_mel(mel)
        return self.head(emb[:, -config.HEAD_FRAMES:])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, CLIP_SAMPLES) float32 16 kHz -> logits (B, n_classes)."""
        from .features import log_mel
        return self.logits_from_mel(log_mel(audio))

    # -- artifact ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, include_backbone: bool | None = None) -> None:
        """Write the artifact atomically. The backbone is stored only if some of it was fine-tuned."""
        if include_backbone is None:
            include_backbone = bool(self.meta.get("backbone_finetuned"))
        blob = {
            "format": ARTIFACT_FORMAT,
            "labels": list(self.labels),
            "frontend": self.frontend.to_dict(),
            "services": dict(config.KEYWORD_SERVICE),
            "detector": self.detector.to_dict(),
            "meta": self.meta,
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "head_kwargs": {"channels": self.head.convs[0].out_channels},
            "backbone": ({k: v.detach().cpu() for k, v in self.backbone.state_dict().items()}
                         if include_backbone else None),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)


def _check(cond: bool, path, problem: str) -> None:
    if not cond:
        raise SpotterError(f"{path}: {problem}")


def load_model(path: str | os.PathLike) -> KeywordModel:
    """Load and validate an artifact; any problem becomes a one-line SpotterError naming the file."""
    path = Path(path)
    _check(path.exists(), path, "model file not found")
    _check(path.is_file(), path, "is a directory, not a model file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or not a torch file at all
        raise SpotterError(f"{path}: not a readable spotter model ({type(exc).__name__})") from None
    _check(isinstance(blob, dict) and blob.get("format") == ARTIFACT_FORMAT, path,
           f"not a spotter model artifact (expected format {ARTIFACT_FORMAT})")
    _check(tuple(blob.get("labels", ())) == config.LABELS, path,
           f"label list {blob.get('labels')} does not match this spotter's {list(config.LABELS)}")
    _check(blob.get("frontend") == config.FrontEnd().to_dict(), path,
           "front-end parameters do not match this spotter's log-mel front end")
    _check(blob.get("services") == config.KEYWORD_SERVICE, path,
           "keyword-to-service mapping does not match this spotter's configuration")
    try:
        detector = config.DetectorConfig.from_dict(blob["detector"])
        head = KeywordHead(**blob.get("head_kwargs", {}))
        head.load_state_dict(blob["head"])
        from .backbone import load_backbone
        backbone = load_backbone(frozen=True)
        if blob.get("backbone") is not None:
            backbone.load_state_dict(blob["backbone"])
    except SpotterError:
        raise
    except Exception as exc:
        raise SpotterError(f"{path}: model weights do not fit the network ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0][:120]})") from None
    model = KeywordModel(backbone=backbone, head=head, detector=detector, meta=blob.get("meta") or {})
    model.name = model.meta.get("name", path.stem)
    model.eval()
    return model


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.pt"


def default_model_path() -> Path:
    """The shipped model (models/default.pt), overridable with SPOTTER_MODEL."""
    return Path(os.environ.get("SPOTTER_MODEL", DEFAULT_MODEL))

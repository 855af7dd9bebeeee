"""Keyword model: the speech_embedding backbone + a small CNN head, and its on-disk artifact.

An artifact is one `torch.save` file holding only tensors and plain Python data (loadable with
`weights_only=True`): the head's weights, optionally fine-tuned backbone weights, and the configuration that
must match at load time (labels, front-end parameters), plus thresholds, services and training provenance.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import config
from .artifact import (DEFAULT_MODEL, DEFAULT_ONNX_MODEL, MAX_HEAD_CHANNELS,  # noqa: F401
                       activate_keyword_set, keeping_keyword_set_on_error,
                       MAX_KEYWORD_DURATION_S, MAX_MODEL_NAME, _meta_problem, _same, _short,
                       default_model_path, default_runtime_model_path, file_sha256)
from .errors import SpotterError

ARTIFACT_FORMAT = "spotter-kws/1"
MAX_HEAD_MEMBERS = 16           # heads of an ensemble an artifact may hold


class KeywordHead(nn.Module):
    """Small temporal CNN over the last HEAD_FRAMES embeddings -> logits over LABELS. With `context` = n <
    HEAD_FRAMES it sees only the last n of them (the same input, the same streaming state)."""

    def __init__(self, n_classes: int | None = None, dim: int = config.EMBED_DIM,
                 channels: int = 96, dropout: float = 0.3, context: int = config.HEAD_FRAMES):
        super().__init__()
        n_classes = len(config.LABELS) if n_classes is None else n_classes     # the active keyword set's
        self.context = context
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
        x = self.norm(emb[:, -self.context:]).transpose(1, 2)          # (B, 96, T)
        x = self.convs(x)
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
        return self.out(self.dropout(pooled))


class EnsembleHead(nn.Module):
    """Several KeywordHeads trained from different seeds, their posteriors averaged. It returns the log of the
    average, so that a softmax of its output (as every caller takes) is the average posterior."""

    def __init__(self, members: int = 2, **kw):
        super().__init__()
        self.members = nn.ModuleList(KeywordHead(**kw) for _ in range(members))

    @property
    def out(self) -> nn.Linear:                      # the output layer of the first member: class count and width
        return self.members[0].out

    @property
    def convs(self) -> nn.Sequential:
        return self.members[0].convs

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(h(emb), dim=-1) for h in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


def make_head(members: int = 1, **kw) -> nn.Module:
    """The head an artifact's head_kwargs describe: one KeywordHead, or an EnsembleHead of `members`."""
    return EnsembleHead(members, **kw) if members > 1 else KeywordHead(**kw)


def head_kwargs(head: nn.Module) -> dict:
    kw = {"channels": head.convs[0].out_channels}
    context = (head.members[0] if isinstance(head, EnsembleHead) else head).context
    if context != config.HEAD_FRAMES:
        kw["context"] = context
    if isinstance(head, EnsembleHead):
        kw["members"] = len(head.members)
    return kw


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
        self.artifact_sha256: str | None = None   # set by load_model: identifies the model in the event log

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
            "keyword_set": config.KEYWORD_SET.to_dict(),
            "detector": self.detector.to_dict(),
            "meta": self.meta,
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "head_kwargs": head_kwargs(self.head),
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


def _head_kwargs_problem(kw) -> str | None:
    if not isinstance(kw, dict):
        return f"head_kwargs: expected a table, got {_short(kw)}"
    unknown = sorted(str(k) for k in kw if k not in ("channels", "members", "context"))
    if unknown:
        return f"head_kwargs: unknown parameter(s) {unknown}"
    ch = kw.get("channels", 96)
    if isinstance(ch, bool) or not isinstance(ch, int) or not 1 <= ch <= MAX_HEAD_CHANNELS:
        return f"head_kwargs.channels: expected a whole number from 1 to {MAX_HEAD_CHANNELS}, got {_short(ch)}"
    n = kw.get("members", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_HEAD_MEMBERS:
        return f"head_kwargs.members: expected a whole number from 1 to {MAX_HEAD_MEMBERS}, got {_short(n)}"
    c = kw.get("context", config.HEAD_FRAMES)
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= config.HEAD_FRAMES:
        return f"head_kwargs.context: expected a whole number from 1 to {config.HEAD_FRAMES}, got {_short(c)}"
    return None


def _names(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_dict_problem(field: str, expected: dict, got) -> str | None:
    """Compare stored weights with a network's state_dict: missing/unexpected entries, shapes, types, NaN/inf.

    Returns one line naming `field` and what is wrong (complete counts, the first few names), None if they fit.
    """
    if not isinstance(got, dict):
        return f"{field}: expected a table of weight tensors, got {_short(got)}"
    not_tensors = [str(k) for k, v in got.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        return f"{field}: {len(not_tensors)} entries are not tensors ({_names(not_tensors)})"
    missing = [k for k in expected if k not in got]
    unexpected = [str(k) for k in got if k not in expected]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    shapes = [f"{k} {tuple(got[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    if shapes:
        parts.append(f"{len(shapes)} of the wrong shape ({'; '.join(shapes[:2])}{'; ...' if len(shapes) > 2 else ''})")
    if parts:
        return f"{field}: weights do not fit the network: " + ", ".join(parts)
    kinds = [k for k, v in expected.items() if got[k].is_floating_point() != v.is_floating_point()]
    if kinds:
        return f"{field}: weights of the wrong type ({_names(kinds)})"
    bad = [k for k in expected if got[k].is_floating_point() and not bool(torch.isfinite(got[k]).all())]
    if bad:
        return f"{field}: NaN or infinite weights in {_names(bad)}"
    return None


@keeping_keyword_set_on_error
def load_model(path: str | os.PathLike) -> KeywordModel:
    """Load and validate an artifact; any problem becomes a one-line SpotterError naming the file and the field."""
    path = Path(path)
    _check(path.exists(), path, "model file not found")
    _check(path.is_file(), path, "is a directory, not a model file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or not a torch file at all
        raise SpotterError(f"{path}: not a readable spotter model ({type(exc).__name__})") from None
    _check(isinstance(blob, dict) and blob.get("format") == ARTIFACT_FORMAT, path,
           f"not a spotter model artifact (expected format {ARTIFACT_FORMAT})")
    activate_keyword_set(blob.get("keyword_set"), path)
    labels = blob.get("labels", ())
    _check(isinstance(labels, (list, tuple)) and _same(tuple(labels), config.LABELS), path,
           f"label list {_short(labels)} does not match this spotter's {len(config.LABELS)} labels")
    _check(_same(blob.get("frontend"), config.FrontEnd().to_dict()), path,
           "front-end parameters do not match this spotter's log-mel front end")
    _check(_same(blob.get("services"), config.KEYWORD_SERVICE), path,
           "keyword-to-service mapping does not match this spotter's configuration")
    _check("detector" in blob, path, "detector: missing")
    try:
        detector = config.DetectorConfig.from_dict(blob["detector"])
    except (ValueError, TypeError) as exc:
        sep = ": " if str(exc).startswith("expected") else "."
        raise SpotterError(f"{path}: detector{sep}{exc}") from None
    for problem in (_meta_problem(blob.get("meta")), _head_kwargs_problem(blob.get("head_kwargs", {}))):
        _check(problem is None, path, problem or "")
    _check("head" in blob, path, "head: missing")
    from .backbone import load_backbone
    head = make_head(**blob.get("head_kwargs", {}))
    backbone = load_backbone(frozen=True)
    for field, net, weights in (("head", head, blob["head"]), ("backbone", backbone, blob.get("backbone"))):
        if weights is None and field == "backbone":
            continue
        problem = state_dict_problem(field, net.state_dict(), weights)
        _check(problem is None, path, problem or "")
        try:
            net.load_state_dict(weights)
        except Exception as exc:
            raise SpotterError(f"{path}: {field}: weights do not fit the network ({exc.__class__.__name__}: "
                               f"{' '.join(str(exc).split())[:300]})") from None
    model = KeywordModel(backbone=backbone, head=head, detector=detector, meta=blob.get("meta") or {})
    model.name = model.meta.get("name", path.stem)
    model.path = path
    model.artifact_sha256 = file_sha256(path)
    model.eval()
    return model



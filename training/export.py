"""`spotter export`: the torch artifact -> the ONNX model the runtime runs (spotter/onnxmodel.py).

One graph for every runtime path (live step, batch replay in chunks, batched multi-stream step):
    inputs   mel (B, T, 32), T = 76 + 8 (N - 1); emb_prev (B, 15, 96); the backbone weights bb.<i>.w / bb.<i>.b
    outputs  posteriors (B, N, 14), emb_last (B, 15, 96)
A second graph, the incremental live step (IncrementalStep: 8 new frames, the backbone's conv caches as state),
travels in the same file's metadata ("spotter.step", base64). In both graphs the backbone weights stay graph inputs:
the runtime splices in openwakeword's own (the file holds only the head, twice: ~0.9 MB). A fine-tuned backbone is
written into the file instead.
The artifact's configuration goes into the ONNX metadata ("spotter", JSON), with the artifact's sha256.
"""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spotter import config, protobuf
from spotter.backbone import ACTIVATION_FLOOR, LEAKY_SLOPE, POOL_AFTER
from spotter.onnxmodel import (EMBEDDED_BACKBONE, METADATA_KEY, STEP_GRAPH_KEY, N_CONVS, ONNX_FORMAT, OPENWAKEWORD_BACKBONE, PREV,
                               backbone_input_names, load_onnx_model)

OPSET = 17


def _backbone_layer(x, i: int, kw: int, weights, k: int):
    """Backbone conv layer i on x, its weights read from weights[k] (and its bias from weights[k + 1], every layer
    but the last): conv, then leaky ReLU clamped at the activation floor, then the time pool where there is one.
    Returns x and the index of the next layer's weights."""
    w = weights[k]
    b = weights[k + 1] if i < N_CONVS - 1 else None
    x = F.conv2d(x, w, b, padding=(0, kw // 2))
    if i < N_CONVS - 1:
        x = torch.clamp(F.leaky_relu(x, LEAKY_SLOPE), min=ACTIVATION_FLOOR)
    if i in POOL_AFTER:
        x = F.max_pool2d(x, POOL_AFTER[i])
    return x, k + (2 if b is not None else 1)


class KeywordGraph(nn.Module):
    """The exported computation: backbone (weights as inputs) fully convolutional over T frames, then the head on
    the N windows of 16 embeddings that end at the new embeddings."""

    def __init__(self, model):
        super().__init__()
        self.head = model.head
        self.kernels = [tuple(b.conv.kernel_size) for b in model.backbone.blocks]

    def forward(self, mel, emb_prev, *weights):
        x = mel[:, None]                                            # (B, 1, T, 32)
        k = 0
        for i, (kh, kw) in enumerate(self.kernels):
            x, k = _backbone_layer(x, i, kw, weights, k)
        n = (mel.shape[1] - config.EMBED_WINDOW) // config.EMBED_STEP + 1
        e = x.flatten(2).transpose(1, 2)[:, :n]                     # (B, N, 96)
        emb = torch.cat([emb_prev, e], dim=1)                       # (B, 15 + N, 96)
        idx = torch.arange(n)[:, None] + torch.arange(config.HEAD_FRAMES)[None, :]
        windows = emb[:, idx]                                       # (B, N, 16, 96)
        logits = self.head(windows.reshape(-1, config.HEAD_FRAMES, config.EMBED_DIM))
        post = torch.softmax(logits, dim=-1).reshape(mel.shape[0], n, len(config.LABELS))
        return post, emb[:, -PREV:]


class IncrementalStep(nn.Module):
    """The live step with the backbone's conv caches as state (what StreamingEmbedder does in torch): 8 new mel
    frames -> 1 embedding, only the new frames convolved. Every 3-tall conv keeps its last 2 input frames; with 8
    frames a step and three 2-tall time pools no pool ever has a frame left over, so the state has fixed shapes.

    inputs mel_new (B, 8, 32), emb_prev (B, 15, 96), cache.<j> (B, C_j, 2, W_j), weights
    outputs posteriors (B, 14), emb_last (B, 15, 96), cache_out.<j>
    """

    def __init__(self, model):
        super().__init__()
        self.head = model.head
        self.kernels = [tuple(b.conv.kernel_size) for b in model.backbone.blocks]

    def forward(self, mel_new, emb_prev, *rest):
        n_caches = sum(1 for kh, _ in self.kernels if kh > 1)
        caches, weights = rest[:n_caches], rest[n_caches:]
        x = mel_new[:, None]
        k = c = 0
        out_caches = []
        for i, (kh, kw) in enumerate(self.kernels):
            if kh > 1:
                x = torch.cat([caches[c], x], dim=2)
                out_caches.append(x[:, :, x.shape[2] - (kh - 1):])
                c += 1
            x, k = _backbone_layer(x, i, kw, weights, k)
        e = x.flatten(2).transpose(1, 2)                            # (B, 1, 96)
        emb = torch.cat([emb_prev, e], dim=1)                       # (B, 16, 96)
        return (torch.softmax(self.head(emb), dim=-1), emb[:, 1:], *out_caches)


def cache_shapes(model) -> list[tuple[int, int, int]]:
    """(C, 2, W) of each 3-tall conv's cache, from a probe through the backbone."""
    shapes = []
    x = torch.zeros(1, 1, config.EMBED_WINDOW, config.N_MELS)
    with torch.no_grad():
        for block in model.backbone.blocks:
            kh = block.conv.kernel_size[0]
            if kh > 1:
                shapes.append((x.shape[1], kh - 1, x.shape[3]))
            x = block(x)
    return shapes


def export_step_graph(model, finetuned: bool) -> bytes:
    step = IncrementalStep(model).eval()
    weights = _weights(model)
    names = backbone_input_names()
    shapes = cache_shapes(model)
    cache_names = [f"cache.{j}" for j in range(len(shapes))]
    args = (torch.zeros(2, config.EMBED_STEP, config.N_MELS), torch.zeros(2, PREV, config.EMBED_DIM),
            *[torch.zeros(2, *s) for s in shapes], *weights)
    buf = io.BytesIO()
    dyn = {"mel_new": {0: "batch"}, "emb_prev": {0: "batch"}, "posteriors": {0: "batch"}, "emb_last": {0: "batch"}}
    dyn.update({n: {0: "batch"} for n in cache_names})
    dyn.update({f"cache_out.{j}": {0: "batch"} for j in range(len(shapes))})
    with torch.no_grad():
        torch.onnx.export(step, args, buf, input_names=["mel_new", "emb_prev", *cache_names, *names],
                          output_names=["posteriors", "emb_last", *[f"cache_out.{j}" for j in range(len(shapes))]],
                          opset_version=OPSET, dynamo=False, dynamic_axes=dyn)
    data = buf.getvalue()
    if finetuned:
        data = protobuf.with_initializers(data, {n: w.numpy() for n, w in zip(names, weights)})
    return data


def _weights(model) -> list[torch.Tensor]:
    out = []
    for i, block in enumerate(model.backbone.blocks):
        out.append(block.conv.weight.detach())
        if i < N_CONVS - 1:
            out.append(block.conv.bias.detach())
    return out


def export_onnx(model_path=None, out=None) -> Path:
    """Write the ONNX form of a torch artifact (default models/default.pt -> next to it, .onnx); returns its path."""
    from spotter.model import default_model_path, file_sha256, load_model
    model_path = Path(model_path) if model_path else default_model_path()
    model = load_model(model_path)
    out = Path(out) if out else model_path.with_suffix(".onnx")
    graph = KeywordGraph(model).eval()
    weights = _weights(model)
    names = backbone_input_names()
    args = (torch.zeros(2, config.EMBED_WINDOW + config.EMBED_STEP, config.N_MELS),
            torch.zeros(2, PREV, config.EMBED_DIM), *weights)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(graph, args, buf, input_names=["mel", "emb_prev", *names],
                          output_names=["posteriors", "emb_last"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"mel": {0: "batch", 1: "frames"}, "emb_prev": {0: "batch"},
                                        "posteriors": {0: "batch", 1: "steps"}, "emb_last": {0: "batch"}})
    data = buf.getvalue()
    finetuned = bool(model.meta.get("backbone_finetuned"))
    if finetuned:
        data = protobuf.with_initializers(data, {n: w.numpy() for n, w in zip(names, weights)})
    info = {"format": ONNX_FORMAT, "labels": list(config.LABELS), "frontend": config.FrontEnd().to_dict(),
            "services": dict(config.KEYWORD_SERVICE), "keyword_set": config.KEYWORD_SET.to_dict(),
            "detector": model.detector.to_dict(),
            "meta": model.meta, "backbone": EMBEDDED_BACKBONE if finetuned else OPENWAKEWORD_BACKBONE,
            "source": model_path.name, "source_sha256": file_sha256(model_path),
            "step_caches": [list(s) for s in cache_shapes(model)]}
    step = base64.b64encode(export_step_graph(model, finetuned)).decode("ascii")
    data = protobuf.add_metadata(data, {METADATA_KEY: json.dumps(info, ensure_ascii=False, default=_plain),
                                        STEP_GRAPH_KEY: step})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    load_onnx_model(out)                   # refuse to leave behind a file the runtime cannot load
    return out


def _plain(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return str(v)


class OnnxStepRunner:
    """Streaming posteriors of an exported model, one 80 ms step at a time (the runtime's OnnxStream)."""

    def __init__(self, onnx_path, threads: int = 1):
        self.model = load_onnx_model(onnx_path, threads=threads)
        self.stream = self.model.new_stream()

    def reset(self) -> None:
        self.stream.reset()

    def step(self, chunk: np.ndarray) -> np.ndarray:
        return self.stream.step(np.asarray(chunk, np.float32))[1]

"""ONNX export of the streaming step, and an onnxruntime runner with the same streaming contract.

The exported graph is one 80 ms step with its state passed in and out (no hidden state in the graph):
  inputs   audio (1, 1760)   = the previous 480 samples + 1280 new ones
           mel   (1, 76, 32) = the last 76 log-mel frames before this step
           emb   (1, 16, 96) = the last 16 embeddings before this step
  outputs  posteriors (1, 14), mel' (1, 76, 32), emb' (1, 16, 96)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from spotter import config
from spotter.features import STREAM_CONTEXT, LogMel

STEP_INPUT = STREAM_CONTEXT + config.STEP_SAMPLES       # 1760
OPSET = 17


class StepModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.logmel = LogMel()
        self.backbone = model.backbone
        self.head = model.head

    def forward(self, audio, mel, emb):
        new = self.logmel(audio)                                   # (1, 8, 32)
        mel = torch.cat([mel[:, new.shape[1]:], new], dim=1)
        e = self.backbone(mel)                                     # (1, 96)
        emb = torch.cat([emb[:, 1:], e[:, None]], dim=1)
        return torch.softmax(self.head(emb), dim=1), mel, emb


def export_onnx(model_path=None, out=None) -> Path:
    from spotter.model import default_model_path, load_model
    model_path = Path(model_path) if model_path else default_model_path()
    model = load_model(model_path)
    out = Path(out) if out else model_path.with_suffix(".onnx")
    step = StepModel(model).eval()
    args = (torch.zeros(1, STEP_INPUT), torch.zeros(1, config.EMBED_WINDOW, config.N_MELS),
            torch.zeros(1, config.HEAD_FRAMES, config.EMBED_DIM))
    torch.onnx.export(step, args, str(out), input_names=["audio", "mel", "emb"],
                      output_names=["posteriors", "mel_out", "emb_out"], opset_version=OPSET, dynamo=False)
    return out


class OnnxStepRunner:
    """Streaming posteriors with onnxruntime (1 thread by default), primed with silence like KeywordSpotter."""

    def __init__(self, onnx_path, threads: int = 1):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self.context = np.zeros(STREAM_CONTEXT, np.float32)
        self.mel = np.zeros((1, config.EMBED_WINDOW, config.N_MELS), np.float32)
        self.emb = np.zeros((1, config.HEAD_FRAMES, config.EMBED_DIM), np.float32)
        for _ in range(config.PRIME_STEPS):   # same state as the live spotter's start: buffers full of silence
            self.step(np.zeros(config.STEP_SAMPLES, np.float32))
        self.context[:] = 0

    def step(self, chunk: np.ndarray) -> np.ndarray:
        x = np.concatenate([self.context, chunk.astype(np.float32)])[None]
        self.context = x[0, -STREAM_CONTEXT:]
        post, self.mel, self.emb = self.session.run(None, {"audio": x, "mel": self.mel, "emb": self.emb})
        return post[0]

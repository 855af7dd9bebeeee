"""Google's speech_embedding CNN as a torch module, weights read from openWakeWord's embedding_model.onnx
(spotter/protobuf.py reads them: the `onnx` package is not needed).

The ONNX graph (tf2onnx export, batch norms already folded into the convs) is a plain stack of 20
convolutions over a (1, 76 frames, 32 mels) image; each of the first 19 is followed by LeakyReLU(0.2)
and a floor at -0.4, and five 2-D max pools shrink the map to (96, 3, 1) before the last conv:

    conv 3x3 (1->24), conv 1x3, conv 3x1, pool 2x2,
    conv 1x3 (24->48), conv 3x1, conv 1x3, conv 3x1, pool 1x2,
    conv 1x3 (48->72), conv 3x1, conv 1x3, conv 3x1, pool 2x2,
    conv 1x3 (72->96), conv 3x1, conv 1x3, conv 3x1, pool 1x2,
    conv 1x3, conv 3x1, conv 1x3, conv 3x1, pool 2x2,
    conv 3x1 (no bias, no activation) -> (96, 1, 1)

Kernels are (time x mel); 1x3 and 3x3 convs pad the mel axis by 1, time is never padded.
A "block" is one of these 20 convolutions with its activation (and the max pool right after it, if any);
``unfreeze_last(n)`` makes the last n blocks trainable.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spotter.config import EMBED_DIM, EMBED_STEP, EMBED_WINDOW, N_MELS
from spotter.errors import SpotterError
from spotter.onnxmodel import (EMBEDDING_MODEL, OPENWAKEWORD_VERSION, N_CONVS,  # noqa: F401
                               openwakeword_model_path, read_onnx_convs)

LEAKY_SLOPE = 0.2
ACTIVATION_FLOOR = -0.4
POOL_AFTER = {2: (2, 2), 6: (1, 2), 10: (2, 2), 14: (1, 2), 18: (2, 2)}   # conv index -> max-pool kernel


class ConvBlock(nn.Module):
    """One conv (mel axis padded for width-3 kernels), LeakyReLU(0.2) floored at -0.4, optional max pool."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, pool: tuple[int, int] | None,
                 activation: bool) -> None:
        super().__init__()
        out_ch, in_ch, kh, kw = weight.shape
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), padding=(0, kw // 2), bias=bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight.copy()))
            if bias is not None:
                self.conv.bias.copy_(torch.from_numpy(bias.copy()))
        self.activation = activation
        self.pool = nn.MaxPool2d(pool) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.activation:
            x = torch.clamp(nn.functional.leaky_relu(x, LEAKY_SLOPE), min=ACTIVATION_FLOOR)
        return self.pool(x)


class SpeechEmbedding(nn.Module):
    """Mel windows (B, 76, 32) -> embeddings (B, 96)."""

    def __init__(self, onnx_path: Path | None = None) -> None:
        super().__init__()
        convs = read_onnx_convs(onnx_path or openwakeword_model_path(EMBEDDING_MODEL))
        self.blocks = nn.ModuleList(
            ConvBlock(w, b, POOL_AFTER.get(i), activation=i < N_CONVS - 1) for i, (w, b) in enumerate(convs))
        # channels-last convolutions are 1.2x (one window) to 1.7x (batches) faster on CPU here
        self.to(memory_format=torch.channels_last)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel[:, None].contiguous(memory_format=torch.channels_last)   # (B, 1, 76, 32): time x mels
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)                                # (B, 96, 1, 1) -> (B, 96)

    def embed_windows(self, mel: torch.Tensor) -> torch.Tensor:
        """Embed every 76-frame window (step 8): (T, 32) -> (N, 96), (B, T, 32) -> (B, N, 96).

        Computed fully convolutionally: the network has no padding along time and its time strides multiply
        to 8 (= EMBED_STEP), so one pass over the whole sequence yields exactly the per-window embeddings
        (bit-identical in the parity test) while sharing the overlapping windows' work (~6x faster).
        """
        mel_windows(mel[..., :EMBED_WINDOW, :])           # shape checks (clear error for short input)
        single = mel.dim() == 2
        x = (mel[None] if single else mel)[:, None].contiguous(memory_format=torch.channels_last)  # (B,1,T,32)
        for block in self.blocks:
            x = block(x)
        n = (mel.shape[-2] - EMBED_WINDOW) // EMBED_STEP + 1
        out = x.flatten(2).transpose(1, 2)[:, :n]         # (B, N, 96)
        return out[0] if single else out

    def freeze(self) -> "SpeechEmbedding":
        """Make every parameter non-trainable."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def unfreeze_last(self, n_blocks: int) -> "SpeechEmbedding":
        """Make the last n_blocks conv blocks trainable (the others keep their current state)."""
        if not 0 <= n_blocks <= len(self.blocks):
            raise SpotterError(f"unfreeze_last: n_blocks must be in 0..{len(self.blocks)}, got {n_blocks}")
        for block in self.blocks[len(self.blocks) - n_blocks:]:
            for p in block.parameters():
                p.requires_grad_(True)
        return self


class StreamingEmbedder:
    """Incremental embeddings: push new mel frames, get the embeddings of the windows they complete.

    Every block keeps the few time frames its kernel still needs (k - 1 frames before a 3-tall conv, an
    unpaired frame before a 2-tall pool), so each 80 ms step convolves only what is new (8 mel frames at
    the input, 1 frame at the output) instead of the whole 76-frame window: about 5x less work. The
    output is the fully convolutional embedding of the whole pushed sequence, i.e. the embedding of every
    76-frame window starting at a multiple of 8 frames from the first pushed frame.
    """

    def __init__(self, model: SpeechEmbedding) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        n = len(self.model.blocks)
        self.conv_cache: list[torch.Tensor | None] = [None] * n
        self.pool_cache: list[torch.Tensor | None] = [None] * n

    @staticmethod
    def _cat(cache: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return x if cache is None or cache.shape[2] == 0 else torch.cat([cache, x], dim=2)

    @torch.inference_mode()
    def push(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (T, 32) new frames -> (N, 96) embeddings completed by them (N may be 0)."""
        x = mel[None, None]                                           # (1, 1, T, 32)
        for i, block in enumerate(self.model.blocks):
            kt = block.conv.kernel_size[0]
            x = self._cat(self.conv_cache[i], x)
            if x.shape[2] < kt:
                self.conv_cache[i] = x
                return torch.zeros(0, EMBED_DIM)
            self.conv_cache[i] = x[:, :, x.shape[2] - (kt - 1):] if kt > 1 else None
            x = block.conv(x)
            if block.activation:
                x = torch.clamp(nn.functional.leaky_relu(x, LEAKY_SLOPE), min=ACTIVATION_FLOOR)
            if isinstance(block.pool, nn.MaxPool2d):
                pt = block.pool.kernel_size[0]
                x = self._cat(self.pool_cache[i], x)
                usable = x.shape[2] - x.shape[2] % pt
                self.pool_cache[i] = x[:, :, usable:]
                if usable == 0:
                    return torch.zeros(0, EMBED_DIM)
                x = block.pool(x[:, :, :usable])
        return x.flatten(2).transpose(1, 2)[0]                        # (N, 96)


def load_backbone(frozen: bool = True) -> SpeechEmbedding:
    """The speech_embedding model with openwakeword's weights, frozen (and in eval mode) by default."""
    model = SpeechEmbedding().eval()
    return model.freeze() if frozen else model


def mel_windows(mel: torch.Tensor) -> torch.Tensor:
    """(T, 32) -> (N, 76, 32) or (B, T, 32) -> (B, N, 76, 32) windows, step 8: N = (T - 76) // 8 + 1."""
    if mel.dim() not in (2, 3) or mel.shape[-1] != N_MELS:
        raise SpotterError(f"mel windows: expected shape (T, {N_MELS}) or (B, T, {N_MELS}), got {tuple(mel.shape)}")
    if mel.shape[-2] < EMBED_WINDOW:
        raise SpotterError(f"mel windows: need at least {EMBED_WINDOW} frames, got {mel.shape[-2]}")
    return mel.unfold(-2, EMBED_WINDOW, EMBED_STEP).transpose(-1, -2)


@functools.lru_cache(maxsize=1)
def default_backbone() -> SpeechEmbedding:
    """A shared frozen backbone (loaded once)."""
    return load_backbone(frozen=True)


def embed_windows(mel: torch.Tensor, model: SpeechEmbedding | None = None) -> torch.Tensor:
    """Embed every 76-frame window (step 8) with model (default: the shared frozen backbone).

    (T, 32) -> (N, 96), (B, T, 32) -> (B, N, 96), N = (T - 76) // 8 + 1.
    """
    return (model if model is not None else default_backbone()).embed_windows(mel)

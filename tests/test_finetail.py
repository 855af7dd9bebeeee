"""Fine-tuning the backbone's last blocks on stored trunk features (training/finetail.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from spotter import config
from training import calls as C
from training import finetail as F
from training.calltrain import CallSet


def _model():
    from spotter.model import KeywordHead, KeywordModel
    torch.manual_seed(0)
    return KeywordModel(head=KeywordHead()).eval()


def test_the_tail_over_trunk_features_gives_the_stream_embeddings(speech_wav):
    model = _model()
    audio = np.concatenate([np.zeros(4000, np.float32), speech_wav("Il y a un incendie dans la cuisine."),
                            np.random.default_rng(0).normal(0, 0.01, 16000 * 2 + 333).astype(np.float32)])
    emb = C.stream_embeddings(model, audio, chunk_steps=9).astype(np.float32)    # the stored calls' features
    rows = F.trunk_features(model, audio)
    assert rows.shape == (len(emb) + F.TRUNK_LEAD, F.ROW) and rows.dtype == np.float16
    with torch.no_grad():
        got = F.Tail(model.backbone).eval()(torch.from_numpy(rows)[None])[0].numpy()
    assert got.shape == emb.shape
    assert np.abs(got - emb).max() < 0.05 * max(1.0, np.abs(emb).max() / 60)      # float16 storage of both


def test_fine_tuning_trains_only_the_last_blocks_and_keeps_the_backbone(speech_wav):
    model = _model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    calls = CallSet()
    rng = np.random.default_rng(1)
    for i, text in enumerate(("Il y a un incendie.", "Mon voisin a fait un malaise.", "Je vous appelle.")):
        audio = np.concatenate([speech_wav(text), rng.normal(0, 0.01, 8000).astype(np.float32)])
        rows = F.trunk_features(model, audio)
        steps = len(rows) - F.ROW_LEAD
        y = np.full(steps, config.LABELS.index(config.OTHER), np.int64)
        if i < 2:
            y[steps // 2: steps // 2 + 4] = config.LABELS.index(("incendie", "malaise")[i])
        calls.add(rows, y, [], {"engine": "espeak"})
    cfg = dataclasses.make_dataclass("Cfg", ["negative_windows", "val_negative_windows", "batch", "patience"])(
        40, 20, 16, 2)
    tail, head, hist = F.finetune_tail(model.head, model.backbone, calls, calls, cfg, seed=0, blocks=2, epochs=2,
                                       lr=1e-3)
    assert len(hist) >= 1
    n = len(model.backbone.blocks)
    changed = [i for i, b in enumerate(tail.blocks)
               if any(not torch.equal(p, before[f"blocks.{F.CUT + i}.{k}"]) for k, p in b.state_dict().items())]
    assert changed and set(changed) <= {n - F.CUT - 2, n - F.CUT - 1}        # only the last two blocks moved
    for k, v in model.backbone.state_dict().items():                          # the shared backbone is untouched
        assert torch.equal(v, before[k])
    emb = F.tail_embeddings(tail, calls)
    assert [len(e) for e in emb.emb] == [len(r) - F.TRUNK_LEAD for r in calls.emb]

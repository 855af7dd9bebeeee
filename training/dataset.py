"""Training examples: 1.975 s windows (exactly HEAD_FRAMES embeddings) built from clips, augmented, embedded.

Window kinds and their label (the placement rules are what the streaming detector's timing relies on):
  keyword   a keyword clip ending KEYWORD_END_RANGE_S before the window end, over background/context  -> keyword
  late      a keyword that ended long ago (LATE_END_RANGE_S before the end): the moment to fire has passed  -> other
  partial   the first 35-70 % of a keyword, cut at the window end (e.g. "électr..."): not yet a keyword    -> other
  other     1-3 non-keyword words/phrases in a row (often ending where a keyword would), or real speech   -> other
  noise     background only: silence, real/coloured noise, or far-off babble                              -> noise
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spotter import config

SR = config.SAMPLE_RATE
WIN = config.CLIP_SAMPLES
KEYWORD_END_RANGE_S = (0.04, 0.40)
LATE_END_RANGE_S = (0.85, 1.5)
PARTIAL_FRACTION = (0.35, 0.70)
CONTEXT_PROB = 0.5            # probability that other speech precedes a keyword inside the window
REAL_SPEECH_PROB = 0.15      # share of `other` windows taken from real non-keyword speech (when available)
LOUD_NOISE_PROB = 0.3        # share of `noise` windows raised to speech level
KIND_MIX = {"keyword": 0.0, "late": 0.06, "partial": 0.07, "other": 0.62, "noise": 0.25}   # of negatives


@dataclass
class ClipRow:
    path: str
    label: str
    voice: str
    split: str
    engine: str = ""
    text: str = ""


def read_manifest(path: str | Path) -> list[ClipRow]:
    with open(path, newline="", encoding="utf-8") as f:
        return [ClipRow(path=r["path"], label=r["label"], voice=r.get("voice", ""), split=r.get("split", "train"),
                        engine=r.get("engine", ""), text=r.get("text", "")) for r in csv.DictReader(f)]


def recording_rows(root: str | Path, val_fraction: float = 0.15) -> list[ClipRow]:
    """User recordings in <root>/<keyword>/<anything>.<audio ext>; the folder may use the keyword's ASCII name.
    Recordings carry no speaker id, so they are split by file name hash (stable across runs)."""
    import zlib
    root = Path(root)
    by_folder = {**{k: k for k in config.KEYWORDS}, **{a: k for k, a in config.KEYWORD_ASCII.items()},
                 config.OTHER: config.OTHER, config.NOISE: config.NOISE}
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        label = by_folder.get(sub.name)
        if label is None:
            continue
        for f in sorted(sub.rglob("*")):
            if f.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"):
                h = zlib.crc32(f.name.encode()) % 1000 / 1000
                rows.append(ClipRow(str(f), label, f"rec:{sub.name}", "val" if h < val_fraction else "train",
                                    engine="recording"))
    return rows


class ClipBank:
    """Clips loaded in memory (16 kHz float32), grouped by label, for one split."""

    def __init__(self, rows: list[ClipRow], loader=None):
        from spotter.audio import load_audio
        loader = loader or load_audio
        self.by_label: dict[str, list[np.ndarray]] = defaultdict(list)
        self.skipped = 0
        for r in rows:
            try:
                a = loader(r.path)
            except Exception:
                self.skipped += 1
                continue
            if a.size >= SR // 20:
                self.by_label[r.label].append(a.astype(np.float32))

    def count(self, label: str) -> int:
        return len(self.by_label.get(label, ()))


class WindowMaker:
    """Builds labelled training windows from a ClipBank and background audio."""

    def __init__(self, bank: ClipBank, backgrounds: list[np.ndarray], augmenter=None, seed: int = 0,
                 speech: list[np.ndarray] | None = None):
        self.bank = bank
        self.backgrounds = [b for b in backgrounds if b.size > WIN] or [np.zeros(WIN * 2, np.float32)]
        self.speech = [b for b in (speech or []) if b.size > WIN]
        self.augment = augmenter
        self.rng = np.random.default_rng(seed)

    def _background(self) -> np.ndarray:
        r = self.rng
        kind = r.random()
        if kind < 0.04:
            return np.zeros(WIN, np.float32)          # digital silence (file gaps, stream start)
        if kind < 0.2:
            return r.normal(0, 10 ** r.uniform(-5, -3.5), WIN).astype(np.float32)
        src = self.backgrounds[r.integers(len(self.backgrounds))]
        o = r.integers(0, src.size - WIN)
        seg = src[o:o + WIN]
        rms = np.sqrt(np.mean(seg ** 2)) + 1e-9
        return (seg / rms * 10 ** (r.uniform(-50, -22) / 20)).astype(np.float32)

    def _real_speech(self) -> np.ndarray:
        """A random stretch of real non-keyword speech at a normal speech level."""
        src = self.speech[self.rng.integers(len(self.speech))]
        o = self.rng.integers(0, src.size - WIN)
        seg = src[o:o + WIN]
        rms = np.sqrt(np.mean(seg ** 2)) + 1e-9
        return (seg / rms * 10 ** (self.rng.uniform(-32, -18) / 20)).astype(np.float32)

    def _pick(self, label: str) -> np.ndarray:
        clips = self.bank.by_label[label]
        return clips[self.rng.integers(len(clips))]

    def _any_keyword(self) -> str:
        present = [k for k in config.KEYWORDS if self.bank.count(k)]
        return present[self.rng.integers(len(present))]

    def _place(self, win: np.ndarray, clip: np.ndarray, end: int) -> None:
        start = end - clip.size
        c = clip[max(0, -start):]
        start = max(0, start)
        win[start:start + c.size] += c[: WIN - start]

    def _context(self, win: np.ndarray, before: int) -> None:
        """Other speech ending before sample `before` (a caller's words before the keyword)."""
        if before > SR // 5 and self.bank.count(config.OTHER) and self.rng.random() < CONTEXT_PROB:
            ctx = self._pick(config.OTHER) * self.rng.uniform(0.5, 1.2)
            self._place(win, ctx, before - int(self.rng.uniform(0.03, 0.25) * SR))

    def make(self, kind: str, label: str | None = None) -> tuple[np.ndarray, str]:
        r = self.rng
        win = self._background()
        if kind == "keyword":
            clip = self._pick(label)
            end = WIN - int(r.uniform(*KEYWORD_END_RANGE_S) * SR)
            self._place(win, clip, end)
            self._context(win, end - clip.size)
            out_label = label
        elif kind == "late":
            clip = self._pick(label or self._any_keyword())
            self._place(win, clip, WIN - int(r.uniform(*LATE_END_RANGE_S) * SR))
            out_label = config.OTHER
        elif kind == "partial":
            clip = self._pick(label or self._any_keyword())
            cut = clip[: max(SR // 20, int(clip.size * r.uniform(*PARTIAL_FRACTION)))]
            self._place(win, cut, WIN - int(r.uniform(0.0, 0.05) * SR))
            self._context(win, WIN - cut.size)
            out_label = config.OTHER
        elif kind == "other":
            if self.speech and r.random() < REAL_SPEECH_PROB:
                win += self._real_speech()
            else:
                # 1-3 words/phrases in a row, like a caller's speech; the last one often ends where a keyword
                # would (the hardest negatives), otherwise anywhere in the window
                end = WIN - int(r.uniform(*KEYWORD_END_RANGE_S) * SR) if r.random() < 0.6 \
                    else int(r.uniform(0.35, 1.0) * WIN)
                for _ in range(int(r.integers(1, 4))):
                    clip = self._pick(config.OTHER)
                    self._place(win, clip, end)
                    end -= clip.size + int(r.uniform(0.03, 0.3) * SR)
                    if end < SR // 10:
                        break
            out_label = config.OTHER
        else:
            if r.random() < LOUD_NOISE_PROB:              # noise as loud as speech, not only a background
                win *= 10 ** (r.uniform(10, 30) / 20)
            out_label = config.NOISE
        if self.augment is not None:
            win = self.augment(win, rng=r)
        peak = np.max(np.abs(win))
        if peak > 1.0:
            win = win / peak
        return win.astype(np.float32), out_label

    def plan(self, n_per_keyword: int, n_negative: int) -> list[tuple[str, str | None]]:
        """Kinds/labels for a balanced set: n_per_keyword windows per keyword present, n_negative negatives."""
        items = [("keyword", k) for k in config.KEYWORDS if self.bank.count(k) for _ in range(n_per_keyword)]
        kinds = list(KIND_MIX)
        p = np.array([KIND_MIX[k] for k in kinds])
        if not self.bank.count(config.OTHER):
            p[kinds.index("other")] = 0
        if not any(self.bank.count(k) for k in config.KEYWORDS):
            p[kinds.index("late")] = p[kinds.index("partial")] = 0
        p = p / p.sum()
        for kind in self.rng.choice(kinds, size=n_negative, p=p):
            items.append((str(kind), None))
        return items


@torch.inference_mode()
def embed_batch(model, windows: np.ndarray, spec_augment=None, generator=None) -> torch.Tensor:
    """(B, WIN) audio -> (B, HEAD_FRAMES, 96) embeddings (optionally SpecAugment on the mel first)."""
    from spotter.features import log_mel
    mel = log_mel(torch.from_numpy(np.asarray(windows, np.float32)))
    if spec_augment is not None:
        mel = spec_augment(mel, generator)
    return model.embeddings_from_mel(mel)


def build_embeddings(model, maker: WindowMaker, items, batch: int = 64, spec_augment=None, seed: int = 0,
                     progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Make, augment and embed every planned window. Returns (N, 16, 96) float16 embeddings and (N,) labels."""
    from tqdm import tqdm
    gen = torch.Generator().manual_seed(seed)
    embs, labels = [], []
    bar = tqdm(total=len(items), desc=progress or "windows", unit="win", disable=progress is None, mininterval=2)
    for i in range(0, len(items), batch):
        wins, labs = zip(*(maker.make(kind, label) for kind, label in items[i:i + batch]))
        embs.append(embed_batch(model, np.stack(wins), spec_augment, gen).to(torch.float16))
        labels += [config.LABELS.index(l) for l in labs]
        bar.update(len(wins))
    bar.close()
    return torch.cat(embs), torch.tensor(labels)

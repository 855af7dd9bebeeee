"""How the synthetic voices' log-mel spectra differ from real people's: long-term slope, frame contrast, fine structure.

    python tools/spectra.py --cache cache/sentences --per-voice 15

For each voice of the sentence cache (a sample of its sentences; every voice synthesised there, the evaluation-only
ones too), for the real English keyword clips (../shared/data/speech/real_kws_en) and the real French speech files
(--real-fr), on the runtime's own log-mel (spotter.frontend.log_mel), louder frames only:
- slope: the long-term mean spectrum's linear slope from the bottom band to the top, in log10 units over the 32
  bands (what calls.mel_tilt draws around);
- contrast: each frame's spread across bands around its own mean, once its own linear slope is removed, averaged
  over frames (what calls.mel_contrast scales);
- fine: the share of each frame's spread across bands (its DCT over the bands without the mean) that lies in the
  cepstral coefficients from calls.RIPPLE_FROM up, the harmonics' ripple rather than the envelope (what
  calls.mel_ripple scales and calls.mel_smooth removes).
Prints the median over each engine's voices (and over real clips, and real French speech files), with the 10th and
90th percentiles. It motivated the tilt and contrast tries in README, "The log-mel warp", and the fine-structure
tries in "The log-mel's fine structure"; none is in the recipe.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotter import config  # noqa: E402
from spotter.audio import load_audio  # noqa: E402
from spotter.frontend import log_mel  # noqa: E402
from training.calls import ripple_projector  # noqa: E402

LOUD_PERCENTILE = 40                 # frames above this percentile of the utterance's mean log-mel count as speech
BANDS = np.arange(config.N_MELS) / (config.N_MELS - 1) - 0.5     # band position, centred: the slope's x axis


def speech_frames(audio: np.ndarray) -> np.ndarray:
    """The louder frames of an utterance's log-mel, (frames, N_MELS)."""
    mel = log_mel(audio)
    energy = mel.mean(1)
    return mel[energy > np.percentile(energy, LOUD_PERCENTILE)]


def slope(frames: np.ndarray) -> float:
    """Linear slope of the long-term mean spectrum, bottom band to top (log10 units)."""
    return float(np.polyfit(BANDS, frames.mean(0), 1)[0])


def contrast(frames: np.ndarray) -> float:
    """Mean over frames of the spread across bands around the frame's own mean and slope."""
    design = np.stack([BANDS, np.ones_like(BANDS)], 1)
    coef = np.linalg.lstsq(design, frames.T, rcond=None)[0]
    return float((frames - (design @ coef).T).std(1).mean())


def fine(frames: np.ndarray) -> float:
    """Share of the frames' spread across bands (around each frame's mean) in their fine structure, the part
    calls.ripple_projector keeps (cepstral coefficients from calls.RIPPLE_FROM up)."""
    spread = frames - frames.mean(1, keepdims=True)
    return float(((frames @ ripple_projector()) ** 2).sum() / (spread ** 2).sum())


def voice_figures(paths: list[Path]) -> tuple[float, float, float]:
    """(slope, contrast, fine) of one voice: slope of its pooled speech frames, median contrast and fine structure
    of its utterances."""
    frames = [speech_frames(load_audio(p)) for p in paths]
    return (slope(np.concatenate(frames)), float(np.median([contrast(f) for f in frames])),
            float(np.median([fine(f) for f in frames])))


def summary(name: str, rows: list[tuple[float, float, float]]) -> str:
    s, c, f = np.array(rows).T
    pct = lambda v, d=2: " / ".join(f"{x:.{d}f}" for x in np.percentile(v, [10, 50, 90]))
    return (f"{name:10s} n {len(rows):3d}  slope p10/p50/p90 {pct(s)}  contrast p10/p50/p90 {pct(c)}  "
            f"fine p10/p50/p90 {pct(f, 3)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "cache/sentences")
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/speech/real_kws_en")
    ap.add_argument("--per-voice", type=int, default=15, help="sentences sampled per voice")
    ap.add_argument("--real-clips", type=int, default=60)
    ap.add_argument("--real-fr", type=Path, default=ROOT.parent / "shared/data/speech/sppas_fr",
                    help="real French speech files (each counts as one voice)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    index = args.cache / "utterances.jsonl"
    if not index.exists():
        print(f"{index}: no sentence cache here (spotter train builds it)", file=sys.stderr)
        return 2
    voices = collections.defaultdict(list)
    for line in index.read_text().splitlines():
        path = json.loads(line)["path"]
        voices[tuple(path.split("/")[:2])].append(args.cache / path)
    by_engine = collections.defaultdict(list)
    for (engine, _voice), paths in sorted(voices.items()):
        by_engine[engine].append(voice_figures(rng.sample(paths, min(args.per_voice, len(paths)))))
    for engine, rows in sorted(by_engine.items()):
        print(summary(engine, rows))
    clips = sorted(args.real.rglob("*.flac"))
    if clips:   # no speaker labels: each real clip counts as one voice
        rows = [voice_figures([p]) for p in rng.sample(clips, min(args.real_clips, len(clips)))]
        print(summary("real_en", rows))
    files = sorted(args.real_fr.glob("*.wav"))
    if files:
        print(summary("real_fr", [voice_figures([p]) for p in files]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluation on held-out voices: confusion matrix, per-keyword precision/recall, DET curve (FRR vs FA/h on long
negative streams), FRR at fixed FA/h points, and call-level service accuracy. Writes JSON + PNG plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from spotter import config
from spotter.detector import CallAssessment, Event

from training.calibrate import THRESHOLD_GRID, measure, sweep
from .det import plot_det
from .streams import detect, score_stream

FA_POINTS = (0.1, 0.5, 1.0)


@torch.no_grad()
def confusion(model, emb: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    logits = torch.cat([model.head(emb[i:i + 1024].float()) for i in range(0, len(emb), 1024)])
    pred = logits.argmax(1).numpy()
    n = len(config.LABELS)
    cm = np.zeros((n, n), dtype=int)
    for t, p in zip(y.numpy(), pred):
        cm[t, p] += 1
    return cm


def per_class(cm: np.ndarray) -> dict:
    out = {}
    for i, lab in enumerate(config.LABELS):
        tp = cm[i, i]
        out[lab] = {"precision": float(tp / cm[:, i].sum()) if cm[:, i].sum() else None,
                    "recall": float(tp / cm[i].sum()) if cm[i].sum() else None, "support": int(cm[i].sum())}
    return out


def confusion_text(cm: np.ndarray) -> str:
    short = [l[:6] for l in config.LABELS]
    lines = ["true\\pred " + " ".join(f"{s:>6}" for s in short)]
    for i, lab in enumerate(config.LABELS):
        lines.append(f"{lab[:9]:<9} " + " ".join(f"{v:>6d}" for v in cm[i]))
    return "\n".join(lines)


def det_points(sw: dict, hours: float) -> list[dict]:
    occ = sum(sw["occurrences"].values())
    pts = []
    for th, fa, hits in zip(sw["grid"], sw["fa"], sw["hits"]):
        pts.append({"threshold": th, "fa_per_hour": sum(fa.values()) / hours,
                    "frr": 1 - sum(hits.values()) / occ if occ else float("nan")})
    return pts


def frr_at(points: list[dict], fa_target: float) -> float | None:
    ok = [p["frr"] for p in points if p["fa_per_hour"] <= fa_target]
    return min(ok) if ok else None


def service_accuracy(model, calls: list[tuple[np.ndarray, list, str | None]], thresholds: dict) -> dict:
    """calls: (posteriors, annotations, true service or None). The suggestion at the end of the call must be the
    true service; calls with no keyword must end with no suggestion."""
    correct = total = no_kw_ok = no_kw = 0
    for post, _notes, service in calls:
        ca = CallAssessment(model.detector.suggestion_min_evidence)
        for d in detect(model, post, thresholds):
            ca.add(Event(d.keyword, config.KEYWORD_SERVICE[d.keyword], d.score, 0, 0, 0, 0))
        sug = ca.suggestion()
        if service is None:
            no_kw += 1
            no_kw_ok += sug is None
        else:
            total += 1
            correct += sug is not None and sug.service == service
    return {"service_accuracy": correct / total if total else None, "calls": total,
            "no_keyword_calls_without_suggestion": no_kw_ok / no_kw if no_kw else None, "no_keyword_calls": no_kw}


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(config.LABELS)), config.LABELS, rotation=60, ha="right")
    ax.set_yticks(range(len(config.LABELS)), config.LABELS)
    for i in range(len(cm)):
        for j in range(len(cm)):
            if cm[i, j]:
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Held-out voices: window-level confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(model, test_windows: tuple, negatives: list[np.ndarray], negative_hours: float,
             positives: list[tuple[np.ndarray, list]], calls: list, out_dir: Path) -> dict:
    """Everything above, written to out_dir/{evaluation.json, confusion.png, confusion.txt, det.png}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cm = confusion(model, *test_windows)
    sw = sweep(model, negatives, positives, THRESHOLD_GRID)
    pts = det_points(sw, negative_hours)
    thr = model.detector.thresholds
    cal = measure(model, thr, negatives, positives, negative_hours)
    per_kw_recall = {}
    for kw in config.KEYWORDS:
        hits = occ = 0
        for post, notes in positives:
            mine = [n for n in notes if n.keyword == kw]
            if mine:
                res = score_stream(detect(model, post, thr), notes)
                hits += sum(1 for h in res["hits"] if h[0] == kw)
                occ += len(mine)
        per_kw_recall[kw] = hits / occ if occ else None
    result = {
        "window_confusion": cm.tolist(), "labels": list(config.LABELS), "window_per_class": per_class(cm),
        "window_accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else None,
        "calibrated": cal, "stream_recall_per_keyword": per_kw_recall,
        "det": pts, "frr_at_fa_per_hour": {str(f): frr_at(pts, f) for f in FA_POINTS},
        "service": service_accuracy(model, calls, thr), "thresholds": thr,
    }
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    (out_dir / "confusion.txt").write_text(confusion_text(cm) + "\n")
    plot_confusion(cm, out_dir / "confusion.png")
    plot_det([(p["fa_per_hour"], p["frr"]) for p in pts], out_dir / "det.png", "DET, held-out voices",
             (cal["fa_per_hour"], 1 - cal["recall"]), negatives="negative streams",
             ylabel="false-reject rate")
    return result

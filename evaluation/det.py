"""The one DET plot (calibrated calls runs, `spotter evaluate`, `spotter bench`): miss rate against false alarms per
hour on a log axis, one curve per common-threshold sweep, the calibrated operating point marked with a red star."""
from __future__ import annotations

from pathlib import Path

FA_FLOOR = 0.01          # 0 false alarms per hour is drawn here on the log axis
SWEEP_LABEL = "common threshold sweep"


def plot_det(curves, path, title: str, calibrated: tuple | None = None,
             negatives: str = "keyword-free audio", ylabel: str = "miss rate", budget_fa: float | None = None) -> None:
    """Write a DET plot to `path` (its folder is created).

    curves: the operating points (fa_per_hour, miss_rate) of one sweep, or {label: points} for several (a curve
    named "overall" is drawn thicker); points whose miss rate is None are left out, as are curves left empty.
    calibrated: the (fa_per_hour, miss_rate) of the calibrated thresholds, marked unless either is None.
    negatives: where the false alarms are counted (in the x label). budget_fa: a dotted vertical line at this
    false-alarm budget. x is logarithmic, 0 drawn at FA_FLOOR (said in the x label); y runs from 0 to 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not isinstance(curves, dict):
        curves = {SWEEP_LABEL: curves}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for name, pts in curves.items():
        pts = [(fa, miss) for fa, miss in pts if miss is not None]
        if not pts:
            continue
        ax.plot([max(fa or 0.0, FA_FLOOR) for fa, _ in pts], [miss for _, miss in pts], "o-", ms=2.5,
                lw=2.2 if name == "overall" else 1.0, label=name)
    if calibrated is not None and None not in calibrated:
        fa, miss = calibrated
        ax.plot([max(fa, FA_FLOOR)], [miss], "r*", ms=12, label="calibrated thresholds")
    if budget_fa is not None:
        ax.axvline(budget_fa, ls=":", c="grey")
    ax.set_xscale("log")
    ax.set_xlabel(f"false alarms per hour on {negatives} (0 drawn at {FA_FLOOR:g})")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

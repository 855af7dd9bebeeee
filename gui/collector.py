"""Python's cycle collector, run in the GUI thread only, from a console window's creation to its destruction.

CPython collects reference cycles in whichever thread happens to allocate when a generation's threshold is
crossed, at whatever point that thread is in. The console's Qt objects live in such cycles (the window itself,
pyqtgraph items, spectrogram markers that scrolled out of view), so they could be torn down at moments Qt does not
expect: from the detector, verifier or Grad-CAM thread, or in the middle of a paint. That is the known cause of
rare crashes of PyQt programs that run Python threads; it is the suspected cause of an intermittent segmentation
fault in the console's tests while an AxisItem was being painted.

From a window's creation to its destruction, automatic collection is off and the window's tick calls
collect_if_due() in the GUI thread, between events: the same generations CPython would have collected, at a safe
moment. Automatic collection comes back only once the window's C++ objects are gone (its `destroyed` signal), so
that no thread can clear the Python half of an item that Qt still lays out or paints: closing is not enough, as a
closed window's items are still asked for their bounding boxes.

What exists when the first window is built (torch, the model, Qt's objects, the window itself: some 200,000
objects) is frozen out of collection until the last window is destroyed, so that a full collection in the tick
scans only what the session made since; scanning everything takes longer than a tick. A cycle among those frozen
objects that becomes garbage (an earlier model, after another is loaded) waits for the last window's destruction.
"""
from __future__ import annotations

import gc

_holders = 0                     # windows holding the collector (built, not yet destroyed)
_was_enabled = True              # whether automatic collection was on before the first holder


def hold() -> None:
    """Turn automatic collection off until every holder has released it; the first hold collects once here and
    freezes what survives (gc.freeze)."""
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
        gc.collect()
        gc.freeze()
    _holders += 1


def release() -> None:
    """Undo one hold(); the last release unfreezes and restores automatic collection as it was. It does not
    collect: it runs from a window's destructor, and what the window left is harmless once its C++ objects are
    gone."""
    global _holders
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0:
        gc.unfreeze()
        if _was_enabled:
            gc.enable()


def due_generation(counts: tuple[int, int, int], thresholds: tuple[int, int, int]) -> int | None:
    """The oldest generation CPython's thresholds ask to collect for these counts, or None when none is due.

    counts[0] counts allocations since generation 0 was last collected; counts[g] (g > 0) counts collections of
    generation g - 1 since generation g was last collected. A threshold of 0 turns collection off.
    """
    if thresholds[0] == 0 or counts[0] <= thresholds[0]:
        return None
    generation = 0
    while generation < 2 and counts[generation + 1] > thresholds[generation + 1]:
        generation += 1
    return generation


def collect_if_due() -> int | None:
    """In the GUI thread: collect what is due now (see due_generation); returns the generation collected."""
    if _holders == 0:
        return None
    generation = due_generation(gc.get_count(), gc.get_threshold())
    if generation is not None:
        gc.collect(generation)
    return generation

"""A pytest plugin that makes Python's automatic cycle collection land in a worker thread, often.

    PYTHONPATH=tools GC_STRESS_S=0.1 python -m pytest -q -p no:cacheprovider -p gc_thread_stress tests/test_console.py

CPython collects reference cycles in whichever thread allocates when a threshold is crossed; in the console that
is usually the detector's or the Grad-CAM thread. This plugin starts a daemon thread that calls gc.collect() every
GC_STRESS_S seconds (default 0.1) whenever automatic collection is enabled, as CPython itself would from some
thread, so that a Qt object in a cycle is torn down from a worker thread far more often than by chance. It is how
the console's collector (gui/collector.py) was checked: before it, a console test failed on a pyqtgraph item whose
Python half had been cleared while Qt still asked it for its bounding box; see the note of that change.
"""
from __future__ import annotations

import gc
import os
import threading
import time

INTERVAL_S = float(os.environ.get("GC_STRESS_S", "0.1"))


def _collect_forever() -> None:
    while True:
        if gc.isenabled():
            gc.collect()
        time.sleep(INTERVAL_S)


threading.Thread(target=_collect_forever, name="gc-stress", daemon=True).start()

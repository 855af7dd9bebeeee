"""Seeded fuzzing of the audio reader and the model loader (tools/fuzz.py): every mutated file is either refused with
one line or read/loaded and then behaves. CI runs a short version; SPOTTER_FUZZ_N=1000 runs the full one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("SPOTTER_FUZZ_N", "60"))


@pytest.mark.parametrize("target", ["audio", "model"])
def test_fuzzed_inputs_are_refused_in_one_line_or_behave(target, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz.py"), "--target", target, "--n", str(N),
                          "--seed", os.environ.get("SPOTTER_FUZZ_SEED", "1"), "--keep", str(tmp_path / "findings")],
                         capture_output=True, text=True, timeout=60 + 5 * N)
    assert out.stdout, out.stderr[-2000:]                  # a crash of the reader (signal) leaves no summary
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["findings"] == [], json.dumps(summary["findings"][:5], indent=1)
    assert out.returncode == 0
    assert sum(summary["outcomes"].values()) == N
    assert summary["outcomes"].get("refused", 0) > 0 and summary["outcomes"].get("accepted", 0) > 0

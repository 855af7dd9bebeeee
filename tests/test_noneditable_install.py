"""A non-editable install (the README's operator install, `pip install .`) replays the demo call from a working
directory outside the source tree: the shipped ONNX model comes with the package as package data, and the runtime
imports no torch.

The project is installed from a copy of this tree, offline (--no-deps --no-build-isolation --no-index: the build
backend and the dependencies are the ones of the running environment), into a folder put first on PYTHONPATH."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spotter import config

REPO = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".git", ".venv", "build", "runs", "cache", "bench_out", "data", ".whl", "__pycache__", "*.egg-info",
              ".pytest_cache")
REPLAY = """
import json, sys
import spotter.artifact
from spotter.cli import main
rc = main(["replay", "--demo", "--json"])
print(json.dumps({"rc": rc, "spotter": spotter.artifact.__file__,
                  "model": str(spotter.artifact.default_runtime_model_path()),
                  "torch": sorted(m for m in ("torch", "torchaudio") if m in sys.modules)}))
"""


def install(tmp_path: Path) -> Path:
    """`pip install --target` of a copy of the source tree (build outputs of this tree left out); the target."""
    pytest.importorskip("setuptools", minversion="68")      # the build backend (the `test` extra installs it)
    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


def environment(tmp_path: Path, target: Path) -> dict:
    """The installed package first on the path; demo cache and event log in tmp_path; no $SPOTTER_MODEL."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPOTTER_MODEL", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "xdg"), SPOTTER_LOG=str(tmp_path / "ev.jsonl"))
    return env


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (the demo call needs it)")
def test_a_non_editable_install_replays_the_demo(tmp_path):
    target = install(tmp_path)
    assert (target / "spotter" / "models" / "default.onnx").is_file()       # package data
    assert (target / "spotter" / "models" / "default.probe.npz").is_file()  # the verifier's keyword probe
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = environment(tmp_path, target)

    proc = subprocess.run([sys.executable, "-c", REPLAY], capture_output=True, text=True, env=env, cwd=elsewhere,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    status, summary = lines[-1], lines[-2]
    assert status["rc"] == 0 and status["torch"] == []
    assert Path(status["spotter"]).parent == target / "spotter"                # the installed copy ran ...
    assert Path(status["model"]) == target / "spotter" / "models" / "default.onnx"   # ... with its own model
    events = [x["event"] for x in lines if "event" in x]
    assert events and all(e["keyword"] in config.KEYWORDS for e in events)
    assert summary["events"] and "error" not in summary

    script = target / "bin" / "spotter"                                       # the console script, as the README
    proc = subprocess.run([sys.executable, str(script), "replay", "--demo"], capture_output=True, text=True, env=env,
                          cwd=elsewhere, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert any(e["keyword"] in proc.stdout for e in events)

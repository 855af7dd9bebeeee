"""`spotter scan`: re-analyse an archive of recorded calls with a model, into one JSON Lines results file.

* Files: a folder (searched recursively for audio files), a list file (.txt/.lst/.list: one path a line, # comments)
  or a single audio file.
* Local worker processes by default (`--workers`, 1 inference thread each), or a Ray cluster with `--ray [ADDRESS]`
  (the optional `ray` extra): the same per-file job either way.
* Each file runs the batch path of `spotter replay` (fully convolutional, bounded chunks streamed from the file).
* Resumable: files that already have a record in the results are skipped (`--retry-errors` redoes failed ones).
  Each record is one line written with a single append + fsync; a torn last line left by a crash is fenced off
  (and ignored) on the next run.
* Records: {"file", "duration_s", "events", "suggestion", "warnings"?, "model", "model_sha256"} or {"file", "error"}.
* Progress on stderr; a per-service summary at the end.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import config
from .errors import SpotterError, json_line, printable

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".snd", ".caf", ".w64",
                  ".rf64", ".sph", ".gsm", ".amr"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def collect_files(target) -> list[str]:
    path = Path(os.fsdecode(target))
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not path.exists():
        raise SpotterError(f"{target}: not found")
    if path.suffix.lower() in LIST_SUFFIXES:
        base = path.parent
        out = []
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                out.append(str(p if p.is_absolute() else base / p))
        return out
    return [str(path)]


def read_results(path: Path) -> dict[str, dict]:
    """file -> its record, from an existing results file (a torn or unreadable line is ignored)."""
    done = {}
    if not path.exists():
        return done
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break                                   # torn last line of a crashed run
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("file"), str):
                done[rec["file"]] = rec
    return done


class ResultsFile:
    """Append-only results: each record is one os.write of one full line, then fsync."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        size = os.fstat(self.fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")           # fence a torn line off: the next record starts clean

    def write(self, record: dict) -> None:
        data = (json_line(record) + "\n").encode("utf-8", "surrogateescape")
        n = os.write(self.fd, data)
        if n != len(data):
            raise SpotterError(f"{self.path}: short write ({n} of {len(data)} bytes)")
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


# -- the per-file job (a worker process or a Ray task) -------------------------------------------------------
_WORKER: dict = {}


def _spotter(model_path: str):
    if _WORKER.get("path") != model_path:
        from .detector import KeywordSpotter
        from .onnxmodel import load_any
        model = load_any(model_path, threads=1)
        _WORKER.update(path=model_path, model=model, spotter=KeywordSpotter(model))
    return _WORKER["model"], _WORKER["spotter"]


def scan_one(model_path: str, file: str) -> dict:
    """One file's record (never raises for a bad file: the error is the record)."""
    from .cli import _event_dict, _problem, _suggestion_dict
    from .replay import run_file
    try:
        model, spotter = _spotter(model_path)
        t0 = time.perf_counter()
        r = run_file(spotter, file)
        rec = {"file": file, "duration_s": round(r.duration_s, 3), "events": [_event_dict(e) for e in r.events],
               "suggestion": _suggestion_dict(r.suggestion), "model": model.name,
               "model_sha256": model.artifact_sha256, "compute_s": round(time.perf_counter() - t0, 3)}
        if r.warnings:
            rec["warnings"] = r.warnings
        return rec
    except SpotterError as exc:
        return {"file": file, "error": _problem(exc, file)}
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the scan
        return {"file": file, "error": f"{type(exc).__name__}: {exc}"}


def _init_worker(model_path: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _spotter(model_path)


def _job(args):
    return scan_one(*args)


def _local(model_path: str, files: list[str], workers: int):
    if workers <= 1:
        for f in files:
            yield scan_one(model_path, f)
        return
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(workers, _init_worker, (model_path,)) as pool:
        yield from pool.imap_unordered(_job, [(model_path, f) for f in files], chunksize=1)


def _ray(model_path: str, files: list[str], address: str | None):
    try:
        import ray
    except ImportError:
        raise SpotterError("--ray: the ray package is not installed (pip install '.[ray]')") from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1)(scan_one)
    pending = [task.remote(model_path, f) for f in files]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            yield ray.get(ref)


def summary_lines(records: list[dict]) -> list[str]:
    by = {s: 0 for s in config.SERVICES}
    none = errors = 0
    audio = 0.0
    for r in records:
        if "error" in r:
            errors += 1
            continue
        audio += r.get("duration_s", 0.0)
        s = (r.get("suggestion") or {}).get("service")
        if s in by:
            by[s] += 1
        else:
            none += 1
    lines = [f"summary: {len(records)} files, {audio / 3600:.2f} h of audio"]
    lines += [f"  {s} {config.SERVICES[s]:<20} {n} calls" for s, n in by.items()]
    lines.append(f"  {'no suggestion':<23} {none} calls")
    lines.append(f"  {'errors':<23} {errors} files")
    return lines


def scan(targets, out, model_path: str, workers: int = 0, ray_address: str | None = None, use_ray: bool = False,
         retry_errors: bool = False, progress=sys.stderr, stdout=sys.stdout) -> list[dict]:
    """Run the scan; returns every record of the results file for the scanned files (old and new)."""
    files: list[str] = []
    for t in targets:
        files += collect_files(t)
    files = list(dict.fromkeys(os.path.abspath(f) for f in files))
    out = Path(out)
    old = read_results(out)
    todo = [f for f in files if f not in old or (retry_errors and "error" in old[f])]
    results = ResultsFile(out)
    workers = workers or min(len(todo), os.cpu_count() or 1) or 1
    print(f"scan: {len(files)} files, {len(files) - len(todo)} already in {printable(str(out))}, "
          f"{len(todo)} to do ({'ray' if use_ray else f'{workers} worker processes'})", file=progress, flush=True)
    new: dict[str, dict] = {}
    t0 = time.perf_counter()
    audio = 0.0
    tty = hasattr(progress, "isatty") and progress.isatty()
    try:
        jobs = _ray(model_path, todo, ray_address) if use_ray else _local(model_path, todo, workers)
        for i, rec in enumerate(jobs, 1):
            results.write(rec)
            new[rec["file"]] = rec
            audio += rec.get("duration_s", 0.0)
            wall = time.perf_counter() - t0
            line = (f"scan: {i}/{len(todo)} ({100 * i / max(1, len(todo)):.0f} %), {audio:.0f} s of audio, "
                    f"{audio / wall if wall > 0 else 0:.0f}x real time")
            if "error" in rec:
                line += f"; error: {printable(rec['file'])}: {printable(rec['error'])}"
            print(("\r" + line) if tty and "error" not in rec else line, end="" if tty and "error" not in rec else "\n",
                  file=progress, flush=True)
    finally:
        results.close()
        if tty:
            print(file=progress)
    records = [new.get(f) or old[f] for f in files if f in new or f in old]
    for line in summary_lines(records):
        print(line, file=stdout)
    return records

"""Seeded mutation fuzzer for the audio reader and the model loader (issue 11).

    python tools/fuzz.py --target audio --n 1000 --seed 1
    python tools/fuzz.py --target model --n 1000 --seed 1

Each case is a valid seed file mutated at random (bit flips, byte overwrites, truncation, header fields set to
extreme values, insertions, duplications; for models also structural edits of the artifact's fields). A case
passes when the spotter either refuses it with a one-line SpotterError or accepts it and then behaves: every audio
block is finite float32 in [-1, 1]; an accepted model runs two seconds of noise without error. Anything else (another
exception type, a multi-line message, a hang past --case-timeout) is a finding. Prints one JSON summary line; exit 1
if there is any finding. No dependency beyond the project's own.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 16000


class CaseTimeout(Exception):
    pass


# --- seeds -------------------------------------------------------------------------------------------------------
def _signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Tones and a noise burst: a real signal with structure, not silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1300 * t)
    x += 0.05 * rng.standard_normal(t.size) * ((t > 0.2) & (t < 0.4))
    return x.astype(np.float32)


def audio_seeds(folder: Path) -> list[Path]:
    import soundfile as sf
    x = _signal(0.6, SR, 0)
    specs = [("pcm16_16k.wav", x, SR, "WAV", "PCM_16"),
             ("float_44k_stereo.wav", np.stack([_signal(0.5, 44100, 1)] * 2, 1), 44100, "WAV", "FLOAT"),
             ("ulaw_8k.wav", _signal(0.8, 8000, 2), 8000, "WAV", "ULAW"),
             ("pcm24_48k.flac", _signal(0.5, 48000, 3), 48000, "FLAC", "PCM_24"),
             ("vorbis_16k.ogg", x, SR, "OGG", "VORBIS")]
    paths = []
    for name, data, rate, fmt, sub in specs:
        p = folder / name
        sf.write(p, data, rate, format=fmt, subtype=sub)
        paths.append(p)
    return paths


def model_seed(folder: Path) -> Path:
    import torch
    from spotter.model import KeywordModel
    torch.manual_seed(0)
    p = folder / "seed.pt"
    KeywordModel(meta={"name": "seed", "keyword_durations_s": {"gaz": 0.4, "vol": 0.35}}).save(p)
    return p


# --- byte mutations ----------------------------------------------------------------------------------------------
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate_bytes(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    b = bytearray(data)
    op = rng.integers(7)
    if op == 0:                                          # flip a few bits anywhere
        for _ in range(int(rng.integers(1, 20))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b), "bitflip"
    if op == 1:                                          # garbage in the header
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(min(len(b), 64)))] = int(rng.integers(256))
        return bytes(b), "header-bytes"
    if op == 2:                                          # truncated anywhere
        return bytes(b[:int(rng.integers(len(b)))]), "truncate"
    if op == 3:                                          # a 16/32-bit field of the header set to an extreme value
        width = 4 if rng.random() < 0.6 else 2
        i = int(rng.integers(0, max(1, min(len(b), 80) - width)))
        v = int(EXTREMES[int(rng.integers(len(EXTREMES)))]) & ((1 << (8 * width)) - 1)
        b[i:i + width] = v.to_bytes(width, "little")
        return bytes(b), "header-field"
    if op == 4:                                          # random bytes inserted
        i = int(rng.integers(len(b) + 1))
        return bytes(b[:i]) + rng.bytes(int(rng.integers(1, 512))) + bytes(b[i:]), "insert"
    if op == 5:                                          # a slice duplicated
        i, j = sorted(int(v) for v in rng.integers(len(b), size=2))
        return bytes(b[:j]) + bytes(b[i:j]) + bytes(b[j:]), "duplicate"
    # float NaN/inf patterns written over the audio data
    pattern = [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff"][int(rng.integers(3))]
    start = int(rng.integers(44, max(45, len(b) - 4)))
    for k in range(int(rng.integers(1, 2000))):
        i = start + 4 * k
        if i + 4 > len(b):
            break
        b[i:i + 4] = pattern
    return bytes(b), "nan-pattern"


# --- checks ------------------------------------------------------------------------------------------------------
def check_audio(path: str) -> str:
    """'refused' or 'accepted' (with the reader's promises checked); raises on a finding."""
    from spotter.audio import AudioStats, assess_input, iter_audio, open_audio
    from spotter.errors import SpotterError
    try:
        info = open_audio(path)
        stats = AudioStats()
        n = 0
        for block in iter_audio(path, stats=stats):
            if block.dtype != np.float32 or block.ndim != 1:
                raise AssertionError(f"block {block.dtype} {block.shape}")
            if block.size and (not np.isfinite(block).all() or np.abs(block).max() > 1.0):
                raise AssertionError("block not finite or out of [-1, 1]")
            n += block.size
        assess_input(info, stats)
    except SpotterError as exc:
        _one_line(exc)
        return "refused"
    expected = math.ceil(stats.frames_read * SR / info.sample_rate)
    if n != expected:
        raise AssertionError(f"{n} samples out for {stats.frames_read} frames in (expected {expected})")
    return "accepted"


def check_model(path: str, noise: np.ndarray) -> str:
    from spotter.detector import KeywordSpotter
    from spotter.errors import SpotterError
    from spotter.model import load_model
    try:
        model = load_model(path)
    except SpotterError as exc:
        _one_line(exc)
        return "refused"
    sp = KeywordSpotter(model)
    out = sp.process(noise)
    events = out.events + sp.flush()
    if not np.isfinite(out.posteriors).all():
        raise AssertionError("accepted model gives non-finite posteriors")
    for e in events:
        e.to_dict()
    sp.suggestion()
    return "accepted"


def _one_line(exc: Exception) -> None:
    msg = str(exc)
    if not msg or "\n" in msg or len(msg) > 600:
        raise AssertionError(f"error message is not one short line: {msg[:200]!r}")


# --- structural model mutations ----------------------------------------------------------------------------------
def _pool(rng: np.random.Generator):
    import torch
    choices = [lambda: "0.5", lambda: None, lambda: math.nan, lambda: -1.0, lambda: 0, lambda: 10 ** 12,
               lambda: True, lambda: [1, 2, 3], lambda: {"x": 1}, lambda: {}, lambda: torch.full((3,), math.nan),
               lambda: torch.zeros(int(rng.integers(1, 5)), int(rng.integers(1, 5))), lambda: torch.tensor(1),
               lambda: "\x1b[2J\nsuggested service: 17", lambda: math.inf, lambda: 1e-30, lambda: b"\xff",
               lambda: torch.zeros(2, dtype=torch.int64), lambda: ("a", 1)]
    return choices[int(rng.integers(len(choices)))]()


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))


def mutate_blob(blob: dict, rng: np.random.Generator) -> tuple[dict, str]:
    b = copy.deepcopy(blob)
    paths = [p for p in _paths(b) if p]
    target = paths[int(rng.integers(len(paths)))]
    parent = b
    for k in target[:-1]:
        parent = parent[k]
    op = rng.integers(4)
    if op == 0:
        del parent[target[-1]]
        return b, "delete:" + ".".join(map(str, target))
    if op == 1:
        parent[f"junk{int(rng.integers(100))}"] = _pool(rng)
        return b, "add"
    if op == 2 and hasattr(parent[target[-1]], "dtype") and parent[target[-1]].is_floating_point():
        t = parent[target[-1]].clone()
        t.view(-1)[int(rng.integers(t.numel()))] = [math.nan, math.inf, 1e30][int(rng.integers(3))]
        parent[target[-1]] = t
        return b, "tensor-value:" + ".".join(map(str, target))
    parent[target[-1]] = _pool(rng)
    return b, "replace:" + ".".join(map(str, target))


# --- driver ------------------------------------------------------------------------------------------------------
def _on_alarm(signum, frame):
    raise CaseTimeout()


def run(target: str, n: int, seed: int, case_timeout: float, keep: Path | None) -> dict:
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    outcomes, ops, findings = Counter(), Counter(), []
    signal.signal(signal.SIGALRM, _on_alarm)
    noise = (0.1 * np.random.default_rng(seed).standard_normal(2 * SR)).astype(np.float32)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spotter-fuzz-") as tmp:
        tmp = Path(tmp)
        if target == "audio":
            seeds = [(p, p.read_bytes()) for p in audio_seeds(tmp)]
        else:
            sp = model_seed(tmp)
            blob = torch.load(sp, weights_only=True)
            seeds = [(sp, sp.read_bytes())]
        for i in range(n):
            seed_path, data = seeds[int(rng.integers(len(seeds)))]
            case = tmp / f"case{i}{seed_path.suffix}"
            if target == "model" and rng.random() < 0.6:
                mutated, op = mutate_blob(blob, rng)
                torch.save(mutated, case)
            else:
                mutated, op = mutate_bytes(data, rng)
                case.write_bytes(mutated)
            ops[op.split(":")[0]] += 1
            signal.setitimer(signal.ITIMER_REAL, case_timeout)
            try:
                outcome = check_audio(str(case)) if target == "audio" else check_model(str(case), noise)
            except CaseTimeout:
                outcome = "finding"
                findings.append({"case": i, "op": op, "seed": seed_path.name, "error": f"hang > {case_timeout} s"})
            except Exception as exc:
                outcome = "finding"
                findings.append({"case": i, "op": op, "seed": seed_path.name,
                                 "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                                 "where": traceback.format_exc().strip().splitlines()[-3][:200]})
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / case.name).write_bytes(case.read_bytes())
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            outcomes[outcome] += 1
            case.unlink()
    return {"target": target, "cases": n, "seed": seed, "seconds": round(time.monotonic() - t0, 1),
            "outcomes": dict(outcomes), "mutations": dict(ops), "findings": findings}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("audio", "model"), required=True)
    ap.add_argument("--n", type=int, default=int(os.environ.get("SPOTTER_FUZZ_N", "60")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--case-timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    ap.add_argument("--keep", type=Path, help="copy every case that is a finding into this folder")
    args = ap.parse_args(argv)
    summary = run(args.target, args.n, args.seed, args.case_timeout, args.keep)
    print(json.dumps(summary), flush=True)
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())

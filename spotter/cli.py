"""`spotter` command line: replay, listen, devices, demo (runtime); console, train, evaluate, export, bench (added
by gui/ and training/). Every user-facing problem is one line on stderr and a non-zero exit code."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import config
from .errors import SpotterError

EXIT_ERROR = 2

DESCRIPTION = """\
Real-time keyword spotter for French emergency calls.

Spots 12 keywords and suggests the service the call belongs to:
  15 SAMU            malaise, hémorragie, brûlure, intoxication
  17 Police secours  violences, agression, vol, cambriolage
  18 Pompiers        incendie, gaz, effondrement, électrocution
Every detection is appended to a durable JSON Lines log (--log, default $SPOTTER_LOG or
~/.local/share/spotter/events.jsonl) before it is printed or shown.
"""


# -- helpers -------------------------------------------------------------------------------------------
def _load(model_path: str | None):
    import torch
    from .model import default_model_path, load_model
    torch.set_num_threads(max(1, int(os.environ.get("SPOTTER_THREADS", "1"))))
    path = Path(model_path) if model_path else default_model_path()
    return load_model(path)


def _fmt_time(s: float) -> str:
    return f"{int(s // 60):02d}:{s % 60:05.2f}"


def _print_event(e, out=sys.stdout) -> None:
    print(f"  {_fmt_time(e.start_s)}-{_fmt_time(e.end_s)}  {e.keyword:<14} score {e.score:.2f}  "
          f"-> {e.service} {config.SERVICES[e.service]}", file=out, flush=True)


def _suggestion_dict(s) -> dict | None:
    return None if s is None else {"service": s.service, "confidence": round(s.confidence, 3)}


def _print_suggestion(s, out=sys.stdout) -> None:
    if s is None:
        print("  suggested service: none (no keyword evidence)", file=out)
    else:
        kws = ", ".join(sorted({e.keyword for e in s.events}))
        print(f"  suggested service: {s.service} {s.name} (confidence {s.confidence:.2f}; evidence: {kws})",
              file=out)


def replay_file(spotter, path, realtime: bool = False, speed: float = 1.0):
    """Run one file through the spotter; returns (duration_s, events, suggestion)."""
    from .audio import iter_audio, open_audio
    info = open_audio(path)
    spotter.reset()
    events = []
    if realtime:
        from .sources import FileSource
        with FileSource(path, realtime=True, speed=speed) as src:
            while (chunk := src.read_step(config.STEP_SAMPLES)) is not None:
                events += spotter.process(chunk)
    else:
        for block in iter_audio(path):
            events += spotter.process(block)
    events += spotter.flush()
    return info.duration_s, events, spotter.suggestion()


# -- sub-commands ----------------------------------------------------------------------------------------
def cmd_replay(args) -> int:
    from .detector import KeywordSpotter
    from .eventlog import EventLog
    files = list(args.files)
    if args.demo:
        from .demo import demo_call_path
        files.insert(0, str(demo_call_path()))
    if not files:
        raise SpotterError("replay: give at least one audio file (or --demo)")
    model = _load(args.model)
    log = EventLog(args.log)
    spotter = KeywordSpotter(model, sinks=[log])
    failures = 0
    for f in files:
        log.source = str(f)
        try:
            duration, events, sug = replay_file(spotter, f, realtime=args.realtime, speed=args.speed)
        except SpotterError as exc:
            print(f"spotter: error: {exc}", file=sys.stderr, flush=True)
            failures += 1
            continue
        if args.json:
            print(json.dumps({"file": str(f), "duration_s": round(duration, 3),
                              "events": [{k: e.to_dict()[k] for k in ("keyword", "service", "score", "start_s", "end_s")}
                                         for e in events],
                              "suggestion": _suggestion_dict(sug)}, ensure_ascii=False), flush=True)
        else:
            print(f"{f}  ({duration:.1f} s, model {model.name})")
            if not events:
                print("  no keyword detected")
            for e in events:
                _print_event(e)
            _print_suggestion(sug)
    log.close()
    return EXIT_ERROR if failures else 0


def cmd_listen(args) -> int:
    import queue
    from .detector import Event, KeywordSpotter
    from .eventlog import EventLog
    from .pipeline import Failed, Finished, Pipeline
    from .sources import MicSource
    model = _load(args.model)
    log = EventLog(args.log)
    source = MicSource(args.device)
    log.source = f"mic:{source.name}"
    spotter = KeywordSpotter(model, sinks=[log])
    pipe = Pipeline(source, spotter, publish_steps=False).start()
    print(f"listening on {source.name} ({source.sample_rate} Hz), model {model.name}; Ctrl-C to stop", flush=True)
    code = 0
    try:
        while True:
            try:
                item = pipe.results.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Event):
                _print_event(item)
                _print_suggestion(spotter.suggestion())
            elif isinstance(item, Failed):
                print(f"spotter: error: {item.message}", file=sys.stderr)
                code = EXIT_ERROR
                break
            elif isinstance(item, Finished):
                break
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
    finally:
        pipe.stop()
        log.close()
    stats = source.stats
    print(f"stopped after {spotter.stream_time_s:.1f} s; device overflows {stats.device_overflows}, "
          f"ring overruns {stats.ring_overruns}", flush=True)
    return code


def cmd_devices(args) -> int:
    from .sources import describe_devices
    print(describe_devices())
    return 0


def cmd_demo(args) -> int:
    from .demo import demo_call_path
    print(demo_call_path(args.out, force=True))
    return 0


def _add_model_log(p) -> None:
    p.add_argument("--model", metavar="PATH", help="model artifact (default: models/default.pt or $SPOTTER_MODEL)")
    p.add_argument("--log", metavar="PATH", help="event log, JSON Lines (default: $SPOTTER_LOG or "
                                                 "~/.local/share/spotter/events.jsonl)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotter", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("replay", help="spot keywords in recorded calls (any format/rate soundfile reads)",
                       description="Replay recorded calls through the spotter and print a timeline of detected "
                                   "keywords and the suggested service per file.")
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files (wav, flac, ogg...; 8 kHz telephone audio is fine)")
    p.add_argument("--demo", action="store_true", help="also replay the demo call (synthesized on first use)")
    p.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    p.add_argument("--realtime", action="store_true", help="pace the replay at real time (default: as fast as possible)")
    p.add_argument("--speed", type=float, default=1.0, help="speed factor with --realtime (default 1.0)")
    _add_model_log(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("listen", help="spot keywords live from an input device until Ctrl-C")
    p.add_argument("--device", help="input device index or (part of its) name; see `spotter devices`")
    _add_model_log(p)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="synthesize the demo call (espeak-ng) and print its path")
    p.add_argument("--out", help="where to write it (default: the user cache)")
    p.set_defaults(func=cmd_demo)

    for register in _extensions():
        register(sub)
    return parser


def _extensions():
    """Sub-commands owned by other packages (console, train, evaluate, export, bench)."""
    regs = []
    for mod, attr in (("gui.cli", "register_cli"), ("training.cli", "register_cli")):
        try:
            module = __import__(mod, fromlist=[attr])
            regs.append(getattr(module, attr))
        except ImportError as exc:
            if exc.name and not exc.name.startswith(mod.split(".")[0]):
                raise
    return regs


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except SpotterError as exc:
        print(f"spotter: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

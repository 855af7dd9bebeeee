"""`spotter` command line: replay, listen, devices, demo (runtime); console, train, evaluate, export, bench (added
by gui/ and training/). Every user-facing problem is one line on stderr and a non-zero exit code."""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path

import numpy as np

from . import config
from .errors import SpotterError, json_line, printable
from .replay import run_file

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
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141        # 128 + SIGPIPE: what a Unix tool killed by a closed pipe reports


def threads_from_env(env=None) -> int:
    """Inference threads from $SPOTTER_THREADS (default 1); SpotterError unless it is a positive whole number."""
    raw = (os.environ if env is None else env).get("SPOTTER_THREADS", "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise SpotterError(f"SPOTTER_THREADS: expected a positive whole number, got {raw!r}")
    return n


def check_speed(speed: float) -> float:
    if not (math.isfinite(speed) and speed > 0):
        raise SpotterError(f"--speed: expected a positive number (1 = real time), got {speed:g}")
    return speed


def _load(model_path: str | None):
    """The model to run: by default the exported models/default.onnx (onnxruntime + numpy, no torch); a .pt torch
    artifact runs with torch when it is installed (the `train` extra)."""
    from .artifact import default_runtime_model_path
    from .onnxmodel import load_any
    path = Path(model_path) if model_path else default_runtime_model_path()
    return load_any(path, threads=threads_from_env())


def _open_log(path, model=None):
    from .eventlog import EventLog
    log = EventLog(path)
    if model is not None:
        log.model, log.model_sha256 = model.name, getattr(model, "artifact_sha256", None)
    return log


def _fmt_time(s: float) -> str:
    return f"{int(s // 60):02d}:{s % 60:05.2f}"


def _out(out):
    return sys.stdout if out is None else out


def _print_event(e, out=None) -> None:
    print(f"  {_fmt_time(e.start_s)}-{_fmt_time(e.end_s)}  {e.keyword:<14} score {e.score:.2f}  "
          + (f"-> {e.service} {config.SERVICES[e.service]}" if e.service else ""), file=_out(out), flush=True)


def _suggestion_dict(s) -> dict | None:
    return None if s is None else {"service": s.service, "confidence": round(s.confidence, 3)}


def _print_suggestion(s, out=None) -> None:
    if not config.SERVICES:
        return                                 # a keyword set without services (wake words)
    if s is None:
        print("  suggested service: none (no keyword evidence)", file=_out(out), flush=True)
    else:
        kws = ", ".join(sorted({e.keyword for e in s.events}))
        print(f"  suggested service: {s.service} {s.name} (confidence {s.confidence:.2f}; evidence: {kws})",
              file=_out(out), flush=True)


VERIFY_FIELDS = ("first_score", "whisper_score", "verifier_score", "probe_score", "combined_score", "verified",
                 "released_s", "whisper_pending")


def _event_dict(e) -> dict:
    """An event's printed fields; a verified candidate (replay --verify) adds its scores and `verified`."""
    d = e.to_dict()
    return {k: d[k] for k in ("keyword", "service", "score", "start_s", "end_s") + VERIFY_FIELDS if k in d}


def _print_verified(ve, out=None) -> None:
    """A candidate after the second stage: a detection (verified, or decided by the first stage alone when the
    verifier could not run) or a rejection, which is shown and logged but is not a detection."""
    if ve.verified is None:
        tail = f"not verified ({ve.note or 'verification off'})"
    else:
        probe = f", probe {ve.probe_score:.1f}" if ve.probe_score is not None else ""
        whisper = "not decoded (probe gate)" if ve.verifier_score is None else f"{ve.verifier_score:.1f}"
        tail = (f"{'verified' if ve.verified else 'REJECTED by the verifier (not a detection)'}: Whisper "
                f"{whisper}{probe}, combined {ve.combined:.3f}")
    scores = (f"score {ve.first_score:.2f}" if ve.whisper_score is None else    # the union: both proposers'
              f"first stage {ve.first_score:.2f}, Whisper head "
              + ("not yet heard (accepted whatever it adds)" if ve.whisper_pending and not ve.whisper_score else
                 f"{ve.whisper_score:.2f}"))
    print(f"  {_fmt_time(ve.start_s)}-{_fmt_time(ve.end_s)}  {ve.keyword:<14} {scores}  "
          + (f"-> {ve.service} {config.SERVICES[ve.service]}  " if ve.service and ve.is_detection else "")
          + tail, file=_out(out), flush=True)


def _show_verified(ve, suggestion, out=None, line: str | None = None) -> None:
    """A verified candidate as `listen` shows it, then, for a detection, the call's suggestion (`suggestion()`),
    both after the line id when there are several lines."""
    prefix = f"{line} " if line is not None else ""
    print(prefix, end="", file=_out(out))
    _print_verified(ve, out=out)
    if ve.is_detection:
        print(prefix, end="", file=_out(out))
        _print_suggestion(suggestion(), out=out)


def _verify_wanted(flag: bool | None) -> bool:
    """--verify / --no-verify, else the default (spotter.verify.cascade_default: on for a French or English model
    when the extra is installed, or $SPOTTER_VERIFY). Called once the model is loaded (its keyword set gives the
    language).
    Says on stderr when the default would verify but the extra is missing."""
    from .verify import MEASURED_LANGUAGES, OFF_LINE, VERIFY_ENV, cascade_default
    if flag is not None:
        return flag
    if cascade_default(config.KEYWORD_SET.language):
        return True
    if config.KEYWORD_SET.language in MEASURED_LANGUAGES and not os.environ.get(VERIFY_ENV):
        print(f"spotter: {OFF_LINE}", file=sys.stderr, flush=True)
    return False


def _cascade(model, log, proposer: str | None = None):
    """The Whisper cascade around `model`'s first stage, logging every verified candidate; says on stderr whether
    verification is on. `proposer`: --proposer (first, union; default $SPOTTER_PROPOSER, else union)."""
    from .verify import VerifiedSpotter
    spotter = VerifiedSpotter(model, sinks=[log], language=config.KEYWORD_SET.language, proposer=proposer)
    print(f"spotter: {spotter.status_line}", file=sys.stderr, flush=True)
    return spotter


def _problem(exc: Exception, path: str) -> str:
    """The message of a per-file error without its leading '<path>: '."""
    msg = str(exc)
    prefix = f"{os.fsdecode(path)}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _error_line(msg) -> None:
    print(f"spotter: error: {printable(msg)}", file=sys.stderr, flush=True)


# -- sub-commands ----------------------------------------------------------------------------------------
def _replay_one(spotter, model, f: str, args, out) -> None:
    """Replay one file, printing each event when it is decided; raises what run_file raises."""
    from .audio import open_audio
    info = open_audio(f)
    verified = hasattr(spotter, "verifier")              # the cascade (--verify): candidates come back verified
    if args.json:
        def show(e):
            print(json_line({"file": f, "event": _event_dict(e)}), file=out, flush=True)
    else:
        print(f"{printable(f)}  ({info.duration_s:.1f} s, model {printable(model.name)})", file=out, flush=True)
        show = functools.partial(_print_verified if verified else _print_event, out=out)
    if verified:
        spotter.sinks[1:] = [show]        # printed as each candidate is verified (the log, sinks[0], first)
    r = run_file(spotter, f, realtime=args.realtime, speed=args.speed, on_event=None if verified else show)
    events = [e for e in r.events if not verified or e.is_detection]
    if args.json:
        doc = {"file": f, "duration_s": round(r.duration_s, 3), "events": [_event_dict(e) for e in events],
               "suggestion": _suggestion_dict(r.suggestion)}
        if verified:
            doc["rejected"] = [_event_dict(e) for e in r.events if not e.is_detection]
        if r.warnings:
            doc["warnings"] = r.warnings
        print(json_line(doc), file=out, flush=True)
        return
    if not events:
        print("  no keyword detected", file=out)
    for w in r.warnings:
        print(f"  warning: {printable(w)}", file=out)
    _print_suggestion(r.suggestion, out=out)


def cmd_replay(args, out=None) -> int:
    from .detector import KeywordSpotter
    from .errors import LogWriteError
    out = _out(out)
    check_speed(args.speed)
    threads_from_env()
    files = [os.fsdecode(f) for f in args.files]
    if args.demo:
        from .demo import demo_call_path
        files.insert(0, str(demo_call_path()))
    if not files:
        raise SpotterError("replay: give at least one audio file (or --demo)")
    log = _open_log(args.log)              # writable before any audio is processed
    spotter = None
    try:
        model = _load(args.model)
        log.model, log.model_sha256 = model.name, model.artifact_sha256
        spotter = (_cascade(model, log, args.proposer) if _verify_wanted(args.verify)
                   else KeywordSpotter(model, sinks=[log]))
        failures = 0
        for f in files:
            log.source = os.path.abspath(f)
            try:
                _replay_one(spotter, model, f, args, out)
            except SpotterError as exc:
                if args.json:
                    print(json_line({"file": f, "error": _problem(exc, f)}), file=out, flush=True)
                if isinstance(exc, LogWriteError):
                    raise                  # nothing more may be decided unlogged: stop the run
                _error_line(exc)
                failures += 1
    except KeyboardInterrupt:
        print("spotter: interrupted; the events printed above are logged", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if hasattr(spotter, "close"):          # the cascade's worker thread
            spotter.close()
        log.close()
    return EXIT_ERROR if failures else 0


def listen(source, model, log, stop=None, out=None, verify: bool = False, proposer: str | None = None) -> int:
    """Run the live detector on `source` until it ends, fails, `stop` (a threading.Event) is set or Ctrl-C;
    prints each event and the current suggestion when decided. Returns the exit code. `verify`: the Whisper
    cascade (spotter.verify.VerifiedSpotter): candidates are printed as the worker thread verifies them."""
    import queue
    from .detector import Event, KeywordSpotter
    from .pipeline import Failed, Finished, Pipeline
    out = _out(out)
    log.source = f"mic:{source.name}"
    if verify:
        from .verify import VerifiedEvent
    spotter = _cascade(model, log, proposer) if verify else KeywordSpotter(model, sinks=[log])
    pipe = Pipeline(source, spotter, publish_steps=False).start()
    print(f"listening on {printable(source.name)} ({source.sample_rate} Hz), model {printable(model.name)}; "
          f"Ctrl-C to stop", file=out, flush=True)

    def show_verified(done) -> None:
        for ve in done:
            _show_verified(ve, spotter.suggestion, out)

    code = 0
    try:
        while stop is None or not stop.is_set():
            try:
                item = pipe.results.get(timeout=0.1 if verify else 0.5)
            except queue.Empty:
                item = None
            if verify:             # each verified candidate is taken once: here, or by the end-of-stream flush
                show_verified(spotter.results())
                if isinstance(item, VerifiedEvent):
                    show_verified([item])
            if item is None:
                continue
            if isinstance(item, Event):
                _print_event(item, out=out)
                _print_suggestion(spotter.suggestion(), out=out)
            elif isinstance(item, Failed):
                _error_line(item.message)
                code = EXIT_ERROR
                break
            elif isinstance(item, Finished):
                break
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
    finally:
        pipe.stop()
        if verify:
            spotter.join()                     # candidates already submitted are verified, logged and shown
            show_verified(spotter.results())
            spotter.close()
        log.close()
    stats = source.stats
    print(f"stopped after {spotter.stream_time_s:.1f} s; device overflows {stats.device_overflows}, "
          f"ring overruns {stats.ring_overruns}", file=out, flush=True)
    return code


def listen_lines(sources, model, log, stop=None, out=None, verify: bool = False, proposer: str | None = None) -> int:
    """Several live lines in one process: each tick reads one 80 ms step from every source and runs them as one
    batched graph call (spotter.multistream.MultiSpotter); events print and log with their line id. `verify`: the
    Whisper cascade over every line (spotter.verify.VerifiedLines; `proposer` as listen's: with the union each line
    has its own Whisper proposer, all on one Whisper model)."""
    from .multistream import MultiSpotter
    out = _out(out)
    lines = [f"L{i + 1}" for i in range(len(sources))]
    if verify:
        from .verify import VerifiedLines
        ms = VerifiedLines(model, lines, log=log, language=config.KEYWORD_SET.language, proposer=proposer)
        print(f"spotter: {ms.status_line}", file=sys.stderr, flush=True)
    else:
        ms = MultiSpotter(model, lines, log=log)

    def show_verified(done) -> None:
        for line, ve in done:
            _show_verified(ve, functools.partial(ms.suggestion, line), out, line)
    for line, src in zip(lines, sources):
        print(f"{line}: listening on {printable(src.name)} ({src.sample_rate} Hz)", file=out, flush=True)
    print(f"model {printable(model.name)}; Ctrl-C to stop", file=out, flush=True)
    code = 0
    started = []
    try:
        for src in sources:
            src.start()
            started.append(src)
        while stop is None or not stop.is_set():
            frames = [src.read_step(config.STEP_SAMPLES) for src in sources]
            if any(f is None for f in frames):
                break                      # one line ended (a device gone): stop all, as `listen` does
            frames = [np.pad(f, (0, config.STEP_SAMPLES - f.size)) if f.size < config.STEP_SAMPLES else f
                      for f in frames]
            for line, o in ms.step(np.stack(frames)).items():
                for e in o.events:
                    print(f"{line} ", end="", file=out)
                    _print_event(e, out=out)
                    print(f"{line} ", end="", file=out)
                    _print_suggestion(ms.suggestion(line), out=out)
            if verify:
                show_verified(ms.results())
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
    except SpotterError as exc:
        _error_line(exc)
        code = EXIT_ERROR
    finally:
        for src in started:
            try:
                src.stop()
            except Exception:
                pass
        if verify:                          # candidates already submitted are verified, logged and shown
            ms.join()
            show_verified(ms.results())
            ms.close()
        log.close()
    return code


def cmd_listen(args) -> int:
    from .sources import MicSource
    threads_from_env()
    devices = args.device if isinstance(args.device, list) else [args.device]
    mics = [MicSource(d, channels=args.channels) for d in devices]   # every device is checked before the model
    sources = [line for mic in mics for line in mic.lines()] if args.channels > 1 else mics
    log = _open_log(args.log)
    try:
        model = _load(args.model)
    except BaseException:
        log.close()
        raise
    log.model, log.model_sha256 = model.name, model.artifact_sha256
    verify = _verify_wanted(args.verify)
    if len(sources) > 1:
        return listen_lines(sources, model, log, verify=verify, proposer=args.proposer)
    return listen(sources[0], model, log, verify=verify, proposer=args.proposer)


def cmd_scan(args) -> int:
    from .artifact import default_runtime_model_path
    from .scan import scan
    threads_from_env()
    model = args.model or str(default_runtime_model_path())
    from .onnxmodel import load_any
    load_any(model)                        # a bad model is one line before any worker starts
    records = scan(args.targets, args.out, model, workers=args.workers, use_ray=args.ray is not None,
                   ray_address=args.ray or None, retry_errors=args.retry_errors)
    return EXIT_ERROR if any("error" in r for r in records) else 0


def cmd_devices(args) -> int:
    from .sources import format_devices, list_input_devices
    devices = list_input_devices()
    if not devices:
        raise SpotterError("no input device found")
    print(format_devices([{**d, "name": printable(d["name"])} for d in devices]))
    return 0


def cmd_demo(args) -> int:
    from .demo import demo_call_path
    print(printable(demo_call_path(args.out, force=True)))
    return 0


def _add_model_log(p) -> None:
    p.add_argument("--model", metavar="PATH", help="model: an ONNX export (.onnx, default models/default.onnx or "
                                                   "$SPOTTER_MODEL) or a torch artifact (.pt, needs torch)")
    p.add_argument("--log", metavar="PATH", help="event log, JSON Lines (default: $SPOTTER_LOG or "
                                                 "~/.local/share/spotter/events.jsonl)")


def _add_proposer(p, note: str) -> None:
    """--proposer of `replay` and `listen`; `note`: what the default does on that command."""
    p.add_argument("--proposer", choices=("first", "union"), default=None,
                   help="with the cascade: who proposes its candidates: the first stage alone, or the union of the "
                        "first stage and a keyword head on Whisper's encoder (models/default.whisper.npz: more "
                        "keywords of voices and engines it never heard, events 2-3 s after the keyword; README "
                        f"'The Whisper proposer at run time, shipped'). Default $SPOTTER_PROPOSER, else union ({note})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotter", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("replay", help="spot keywords in recorded calls (any format/rate soundfile reads)",
                       description="Replay recorded calls through the spotter and print a timeline of detected "
                                   "keywords and the suggested service per file.")
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files (wav, flac, ogg...; 8 kHz telephone audio is fine)")
    p.add_argument("--demo", action="store_true", help="also replay the demo call (synthesized on first use)")
    p.add_argument("--json", action="store_true", help="JSON lines: {file, event} as each event is decided, then one "
                                                     "summary object per file ({file, error} for a failed file)")
    p.add_argument("--realtime", action="store_true", help="pace the replay at real time (default: as fast as possible)")
    p.add_argument("--speed", type=float, default=1.0, help="speed factor with --realtime (default 1.0)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="second stage: the first stage proposes candidates at 0.8x its thresholds and Whisper base "
                        "checks each one (needs '.[verify]'; without it the first stage decides alone); events carry "
                        "both scores and `verified`, rejected candidates are printed and logged with verified false "
                        "but are not detections. Default: on for a French or English model when the extra is installed "
                        "($SPOTTER_VERIFY=on/off overrides): on calls by an engine the first stage never heard it "
                        "raised recall at 0.5 FA/h, and on real English recordings (README)")
    _add_proposer(p, "the first stage alone where no Whisper head has the model's keywords")
    _add_model_log(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("listen", help="spot keywords live from an input device until Ctrl-C")
    p.add_argument("--device", action="append", help="input device index or (part of its) name; see `spotter "
                                                     "devices`; repeat for several lines (one batched step per tick)")
    p.add_argument("--channels", type=int, default=1, metavar="N",
                   help="capture N channels of each device, one line per channel (default 1: the first channel)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="second stage with Whisper base, as `replay --verify`, and with the same default (several "
                        "lines: one verifier checks every line's candidates)")
    _add_proposer(p, "with several lines, each line has its own Whisper proposer on the one Whisper model: about "
                     "an eighth of a core per line")
    _add_model_log(p)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("scan", help="re-analyse an archive of recorded calls into a JSON Lines results file "
                                     "(resumable; worker processes or a Ray cluster)")
    p.add_argument("targets", nargs="+", metavar="DIR|LIST", help="folder(s) of audio files, list file(s) "
                                                                 "(.txt/.lst: one path a line) or audio files")
    p.add_argument("--out", required=True, metavar="RESULTS.jsonl", help="results file (appended; files already "
                                                                          "in it are skipped)")
    p.add_argument("--workers", type=int, default=0, help="local worker processes (default: one per core)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (ADDRESS, e.g. ray://head:10001; none: a local Ray); needs '.[ray]'")
    p.add_argument("--retry-errors", action="store_true", help="redo files whose record is an error")
    p.add_argument("--model", metavar="PATH", help="model (default: models/default.onnx or $SPOTTER_MODEL)")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="synthesize the demo call (espeak-ng) and print its path")
    p.add_argument("--out", help="where to write it (default: the user cache)")
    p.set_defaults(func=cmd_demo)

    for register in _extensions():
        register(sub)
    return parser


COMMAND_GROUP = "spotter.commands"


def _extensions():
    """Sub-commands owned by other packages (console; train, evaluate, export, bench): the registry is the
    `spotter.commands` entry-point table of pyproject.toml, so the core package imports neither gui nor training."""
    from importlib.metadata import entry_points
    return [ep.load() for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except SpotterError as exc:
        _error_line(exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """The reader of stdout went away (`| head`): exit quietly, without the interpreter's flush error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())

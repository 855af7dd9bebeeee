"""`spotter console`: the operator console (PyQt5). Qt is imported only when the sub-command runs."""
from __future__ import annotations

import argparse


def cmd_console(args) -> int:
    from spotter.cli import threads_from_env
    threads_from_env()                      # one clear line for a bad SPOTTER_THREADS, before Qt starts
    from spotter import config
    from spotter.verify import cascade_default
    cascade_default(config.KEYWORD_SET.language)   # and for a bad SPOTTER_VERIFY
    from .console import run_console
    return run_console(model=args.model, file=args.file, device=args.device, log=args.log,
                       recordings=args.recordings, speed=args.speed, screenshot=args.screenshot,
                       screenshot_after=args.screenshot_after, verify=args.verify)


def register_cli(subparsers) -> None:
    """Add the `console` sub-command to the `spotter` command line."""
    p = subparsers.add_parser(
        "console", help="operator console (French UI): live monitoring, replay, explanations, sample recording",
        description="Open the operator console: live spectrogram, detected keywords, the suggested service "
                    "(15 SAMU / 17 Police secours / 18 Sapeurs-pompiers), explanations (Grad-CAM with torch, occlusion without) and "
                    "recording of keyword samples for retraining. The window text is in French.")
    p.add_argument("--model", metavar="PATH", help="model: ONNX export (default models/default.onnx or $SPOTTER_MODEL) "
                                                   "or torch artifact (.pt, needs torch)")
    p.add_argument("--file", metavar="FILE", help="replay this recorded call on start")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="second stage (issue 9, needs '.[verify]'): the first stage proposes candidates at 0.8x its "
                        "thresholds and Whisper base checks each one; the table shows each detection once verified, "
                        "rejected candidates are counted in the status bar and logged, never shown as detections. "
                        "Default as for `spotter replay`: on for a French or English model when the extra is installed")
    p.add_argument("--device", metavar="X", help="monitor this input device on start (index or part of its name)")
    p.add_argument("--speed", choices=("1", "2", "max"), default="1", help="replay speed (default 1)")
    p.add_argument("--log", metavar="PATH", help="event log, JSON Lines (default: $SPOTTER_LOG or "
                                                 "~/.local/share/spotter/events.jsonl)")
    p.add_argument("--recordings", metavar="DIR", help="folder for keyword samples "
                                                       "(default: $SPOTTER_RECORDINGS or ~/spotter-recordings)")
    p.add_argument("--screenshot", metavar="PNG", help="save a picture of the window after --screenshot-after "
                                                       "seconds, then exit (works with QT_QPA_PLATFORM=offscreen)")
    p.add_argument("--screenshot-after", metavar="S", type=float, default=5.0,
                   help="seconds before the screenshot (default 5)")
    p.set_defaults(func=cmd_console)

"""`spotter train | evaluate | export | bench` sub-commands (heavy imports happen inside the handlers)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)


def _command_line_paths(recipe, args) -> None:
    """--recordings, --out and --init into the recipe; like every command-line path, relative to the working
    directory (paths inside the recipe are relative to its file)."""
    if args.recordings:
        recipe.data.recordings += tuple(Path(d).absolute() for d in args.recordings)
    if args.out:
        recipe.out = Path(args.out).absolute()
    if args.init:
        recipe.train.init = Path(args.init).absolute()


def cmd_train(args) -> int:
    from spotter.errors import SpotterError
    from .recipe import load_recipe, run_training, use_recipe_keywords
    from .recipes import CallsRecipe
    _logging()
    recipe = load_recipe(args.config, overrides=args.set)
    ks = use_recipe_keywords(recipe, args.keywords)
    if isinstance(recipe, CallsRecipe):    # keywords inside whole sentences (training/calltrain.py)
        if args.init:
            raise SpotterError(f"{args.config}: --init starts a clip recipe's head from a model (--config "
                               "training/configs/default.toml); a [calls] recipe trains its head again on its calls, "
                               "the --recordings among them: leave --init out")
        if args.calibrate_only:
            raise SpotterError(f"{args.config}: --calibrate-only recalibrates a clip recipe's model (--config "
                               "training/configs/default.toml); a [calls] recipe's threshold is its [calibrate] "
                               "common_threshold, and `spotter evaluate --model M` scores a model on its stored calls")
        from .calltrain import train_from_calls
        _command_line_paths(recipe, args)
        train_from_calls(recipe, folds=not args.no_folds)
        return 0
    if ks.frames:
        raise SpotterError(f"{args.config}: keyword set {ks.name!r} needs a [calls] recipe (clip recipes are French only)")
    _command_line_paths(recipe, args)
    if args.calibrate_only:
        from .recipe import recalibrate
        recalibrate(recipe, args.calibrate_only, out=args.out)
        return 0
    run_training(recipe)
    return 0


def cmd_evaluate(args) -> int:
    from .recipe import load_recipe, run_evaluation, use_recipe_keywords
    from .recipes import CallsRecipe
    _logging()
    recipe = load_recipe(args.config, overrides=args.set)
    use_recipe_keywords(recipe, args.keywords)
    if isinstance(recipe, CallsRecipe):
        import json
        from spotter.model import default_model_path, load_model
        from .calltrain import evaluate_stored
        from .recipe import real_audio_files
        work = recipe.work_dir
        if not (work / "calls_info.json").is_file():
            from spotter.errors import SpotterError
            raise SpotterError(f"{work}: no stored evaluation calls; run `spotter train --config {args.config}` first")
        model = load_model(args.model or default_model_path())
        out = Path(args.out) if args.out else work / "evaluation"
        if args.real:
            from evaluation.realeval import compare_on_real, table
            noise = real_audio_files(recipe.data)["noise_eval"]     # the evaluation half of the noise recordings
            res = compare_on_real(model, Path(args.real), work, recipe.data.speech_dir, noise, out / "real")
            print(table(res))
            print(f"openWakeWord on our features vs its own Model.predict: {res.get('openwakeword_parity')}; "
                  f"negatives: {res['synthetic_negative_hours']} h synthetic + {res['real_negative_files']} real files; "
                  f"{res['seconds']} s")
            print(f"details: {out / 'real' / 'real.json'}")
            return 0
        res = evaluate_stored(model, work, out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(res, ensure_ascii=False, indent=1, default=float))
        for name, r in res.items():
            a5 = r.get("at_0.5_fa_h") or {}
            print(f"{name}: recall at calibrated thresholds {r['calibrated']['recall']['recall']:.3f} "
                  f"({r['calibrated']['fa_per_hour']:.2f} FA/h on {r['negative_hours']} h); recall at 0.5 FA/h "
                  f"{(a5.get('recall') or {}).get('recall')} (90 % interval {a5.get('recall_interval_90')}); "
                  f"keyword-clip accuracy {r['clip']['accuracy']}; "
                  f"service correct {r['service']['service_correct']}")
        print(f"details: {out / 'evaluation.json'}")
        return 0
    res = run_evaluation(recipe, model_path=args.model, out_dir=args.out)
    print(res["summary"])
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx
    path = export_onnx(args.model, args.out)
    print(path)
    return 0


def cmd_bench(args) -> int:
    from evaluation.bench import run_bench
    _logging()
    run_bench(model_path=args.model, out_dir=args.out, quick=args.quick, seed=args.seed)
    return 0


def register_cli(sub) -> None:
    from .recipes import SHIPPED_RECIPE     # imports neither torch nor the training code
    p = sub.add_parser("train", help="synthesize data, augment, train, calibrate and evaluate a model",
                       description="Train a keyword model from a TOML recipe. The default, "
                                   "training/configs/calls.toml, reproduces the shipped model and, with the verify "
                                   "extra, its keyword probe beside it; training/configs/default.toml is the earlier "
                                   "clip recipe (the one --init and --calibrate-only work with). Adding "
                                   "--recordings DIR merges a folder of real recordings laid out as "
                                   "DIR/<keyword>/*.wav into the training data (with a [calls] recipe: its training "
                                   "calls and the keyword probe's crops).")
    p.add_argument("--config", default=str(SHIPPED_RECIPE),
                   help="recipe TOML (default: training/configs/calls.toml, the shipped model's recipe)")
    p.add_argument("--recordings", nargs="*", metavar="DIR", help="extra recordings folders <DIR>/<keyword>/*.wav")
    p.add_argument("--init", metavar="MODEL", help="clip recipes: start from this model artifact's head")
    p.add_argument("--out", metavar="PATH", help="output artifact (default: the recipe's `out`)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override recipe values, e.g. train.epochs=5 (paths in the recipe are relative to its file, "
                        "paths on the command line to the working directory)")
    p.add_argument("--keywords", metavar="FILE",
                   help="keyword set TOML (default: the recipe's `keywords`, else spotter/keywordsets/fr_emergency.toml)")
    p.add_argument("--no-folds", action="store_true",
                   help="[calls] recipes: skip the leave-one-engine-out folds and the keyword-free speech only they use "
                        "(train and score the final model only)")
    p.add_argument("--calibrate-only", metavar="MODEL",
                   help="keep MODEL's trained head; redo calibration, evaluation and the model card")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model on held-out voices (confusion, DET, FRR at FA/h, services)")
    p.add_argument("--model", help="model artifact (default: models/default.pt)")
    p.add_argument("--config", default=str(SHIPPED_RECIPE),
                   help="recipe TOML (default: training/configs/calls.toml, the shipped model's recipe)")
    p.add_argument("--out", help="output folder for evaluation.json and plots (default: the recipe's work dir)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="override recipe values")
    p.add_argument("--keywords", metavar="FILE", help="keyword set TOML (default: the recipe's `keywords`)")
    p.add_argument("--real", metavar="DIR", help="[calls] recipes: score real recordings DIR/<keyword>/*.wav|flac "
                   "(clean and at 10 dB noise) against the run's held-out negatives, beside openWakeWord's alexa")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a model to ONNX (streaming step graph) for onnxruntime")
    p.add_argument("--model", help="model artifact (default: models/default.pt)")
    p.add_argument("--out", help="output .onnx path (default: next to the model)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="end-to-end benchmark: synthetic calls, negative hour, latency, CPU, "
                                     "side by side with openWakeWord")
    p.add_argument("--model", help="model artifact (default: models/default.pt)")
    p.add_argument("--out", default="bench_out", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny run for CI: checks the benchmark end to end")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_bench)

"""Model card (Markdown) written next to an artifact from the figures stored in its metadata."""
from __future__ import annotations

from spotter import config


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def model_card(model) -> str:
    m = model.meta
    rec = m.get("recipe", {})
    ev = m.get("evaluation", {})
    cal = m.get("calibration", {})
    syn = m.get("synthesis", {})
    t = m.get("timings_s", {})
    recal = m.get("recalibrated")
    lines = [
        f"# Model card: {m.get('name', model.name)}",
        "",
        f"Trained {m.get('created', '?')} from commit `{m.get('git_commit', '?')}` with "
        f"`spotter train --config training/configs/default.toml` on the 2-core CPU machine (shared with other "
        f"work at the time): whole run {t.get('training_run_total', t.get('total', '?'))} s, of which making and "
        f"embedding the augmented windows {t.get('embed', '?')} s, training the head {t.get('train', '?')} s; "
        f"synthesis {m.get('synthesis', {}).get('synth_seconds', '?')} s (0 when the clip cache is warm).",
    ]
    if recal:
        lines += ["", f"Recalibrated {recal['at']} (commit `{recal['git_commit']}`) with `spotter train --config "
                      f"training/configs/default.toml --calibrate-only models/default.pt`: same trained head, "
                      f"smoothing window and thresholds chosen again, evaluation and this card redone "
                      f"({t.get('total', '?')} s)."]
    lines += [
        "",
        "## What it is",
        "Google's speech_embedding CNN (from openwakeword 0.5.1, frozen"
        + (", last blocks fine-tuned" if m.get("backbone_finetuned") else "")
        + ") over a 32-band log-mel front end; a small temporal CNN head over the last 16 embeddings (1.98 s of "
        "audio) gives 14 classes: the 12 keywords, `other` speech and `noise`.",
        "",
        "## Data",
        "All keyword audio is **synthetic**: no recording of a real person saying the keywords was used.",
        "",
        "| engine | clips (train / val / test) |",
        "|---|---|",
    ]
    for engine, per in sorted(syn.get("plan", {}).items()):
        lines.append(f"| {engine} | {per.get('train', 0)} / {per.get('val', 0)} / {per.get('test', 0)} |")
    voices = syn.get("voices", {})
    lines += ["", f"Voices (a voice/speaker is in exactly one split): train {len(voices.get('train', []))}, "
                  f"validation {len(voices.get('val', []))}, held-out test {len(voices.get('test', []))}.",
              "", f"Held-out test voices: {', '.join(voices.get('test', [])) or 'n/a'}.", ""]
    clips = m.get("clips", {})
    if clips:
        lines += ["Clips per label (train): " + ", ".join(f"{k} {v}" for k, v in clips.get("train", {}).items()), ""]
    neg = cal.get("negatives", {})
    lines += [f"Training windows: {m.get('windows', {}).get('train', '?')} (validation "
              f"{m.get('windows', {}).get('val', '?')}). Calibration negatives: {neg.get('hours', '?')} h of "
              f"composed audio built from {neg.get('unique_minutes', '?')} unique minutes (validation voices' "
              f"non-keyword speech, {neg.get('real_speech_files', 0)} real speech files, "
              f"{neg.get('real_noise_files', 0)} real noise files), re-augmented for each use.", ""]
    lines += ["## Augmentation", "", m.get("augmentation", "n/a"), ""]
    lines += ["## Thresholds (calibrated)",
              f"Posterior smoothing: moving average over {model.detector.smoothing_steps} steps of 80 ms; "
              f"decided at most {model.detector.max_hold_steps} step(s) after crossing the threshold; "
              f"refractory period {model.detector.refractory_s} s. "
              f"Budget {cal.get('budget_fa_per_hour', '?')} false alarms per hour on the negatives; "
              f"measured at the chosen thresholds: {cal.get('result', {}).get('fa_per_hour', float('nan')):.2f} FA/h, "
              f"recall {_pct(cal.get('result', {}).get('recall'))} on validation keyword streams.", "",
              "| keyword | service | threshold |", "|---|---|---|"]
    for k in config.KEYWORDS:
        lines.append(f"| {k} | {config.KEYWORD_SERVICE.get(k, '—')} | {model.detector.thresholds.get(k, float('nan')):.2f} |")
    if ev:
        neg = ev.get("negative_streams", {})
        lines += ["", "## Evaluation on held-out voices", "",
                  f"Command: `spotter evaluate --model {rec.get('out', 'models/default.pt')}` "
                  f"(results in `{ev.get('out_dir', '?')}`).", "",
                  f"- Window-level accuracy (14 classes): {_pct(ev.get('window_accuracy'))}",
                  f"- Stream recall at the calibrated thresholds: {_pct(ev.get('stream_recall_calibrated'))}, "
                  f"with {ev.get('fa_per_hour_calibrated', float('nan')):.2f} false alarms per hour on "
                  f"{neg.get('hours', '?')} h of held-out negatives ({neg.get('unique_minutes', '?')} unique minutes)",
                  "- False-reject rate at fixed false alarms per hour: " + ", ".join(
                      f"{k} FA/h: {_pct(v)}" for k, v in ev.get("frr_at_fa_per_hour", {}).items()),
                  f"- Service accuracy on synthetic calls: {_pct(ev.get('service', {}).get('service_accuracy'))} "
                  f"of {ev.get('service', {}).get('calls', '?')} calls; calls without keyword ending with no "
                  f"suggestion: {_pct(ev.get('service', {}).get('no_keyword_calls_without_suggestion'))}",
                  "", "| keyword | window precision | window recall | stream recall |", "|---|---|---|---|"]
        for k in config.KEYWORDS:
            pc = ev.get("window_per_class", {}).get(k, {})
            lines.append(f"| {k} | {_pct(pc.get('precision'))} | {_pct(pc.get('recall'))} | "
                         f"{_pct(ev.get('stream_recall_per_keyword', {}).get(k))} |")
        lines += ["", "Window-level confusion (rows true, columns predicted):", "", "```",
                  ev.get("confusion_text", "").rstrip(), "```"]
    lines += ["", "## What these figures can and cannot say",
              "They measure generalisation to **synthetic voices the model never heard** (other TTS speakers of "
              "the same engines), under simulated rooms, noise and telephone channels. They do not measure real "
              "callers: real voices, accents, stress, overlapping speech and real phone lines are more varied than "
              "any TTS engine, so expect more misses on real calls than these numbers say. The false-alarm "
              "figures come from a few hours of composed negatives built from a limited amount of unique speech. "
              "Retrain with a centre's own recordings (`spotter train --recordings DIR`) and re-measure before "
              "trusting it operationally.", ""]
    return "\n".join(lines)


def _r(d) -> str:
    """'87.3 % (62/71)' from a recall table entry."""
    if not d:
        return "n/a"
    return f"{100 * d['recall']:.1f} % ({d['found']}/{d['of']})"


def _ci(d: dict) -> str:
    """' [90 % interval 2.1-9.5 %]' from an at_*_fa_h entry (nothing for reports made before intervals)."""
    lo_hi = d.get("recall_interval_90")
    return f" [90 % interval {100 * lo_hi[0]:.1f}-{100 * lo_hi[1]:.1f} %]" if lo_hi else ""


def _fold_rows(name: str, res: dict) -> str:
    a5, a1 = res.get("at_0.5_fa_h") or {}, res.get("at_1.0_fa_h") or {}
    cal = res["calibrated"]
    return (f"| {name} | {_r(cal['recall'])} at {cal['fa_per_hour']:.2f} FA/h | {_r(a5.get('recall'))}{_ci(a5)} | "
            f"{_r(a1.get('recall'))}{_ci(a1)} | {_pct(res['clip']['accuracy'])} | "
            f"{_pct(res['service']['service_correct'])}"
            + (f" ({_pct(q)})" if (q := res['service'].get('no_keyword_calls_without_suggestion')) is not None else "")
            + " |")


def _threshold_rule(common, folds: dict) -> str:
    """The card's sentence on the thresholds its table's models run at (the recipe's common threshold, if any)."""
    if not common:
        return ""
    if all((f.get("calibration") or {}).get("common_threshold") == common for f in folds.values()):
        return (f"Every model in the table runs at the recipe's rule, the common threshold {common:g} and its own "
                "smoothing (calibrated on its validation calls): what the shipped rule does on an engine it never "
                "heard; its keyword-free calls end quiet or not at that point (service column). ")
    return ("The folds ran at their own validation thresholds, an operating point that never ships (an artifact "
            "from before the folds took the recipe's rule); this model at the recipe's. ")


def _head_training(meta: dict) -> str:
    """One sentence: how the head was trained ([train] of the stored recipe)."""
    r = meta.get("recipe", {})
    tr = r.get("train", {})
    if not tr:
        return ""
    drop = [f"{share:.0%} of the embedding's 96 dimensions" + (" after the head's LayerNorm (inverted)" if key ==
            "norm_dropout" else "") for key in ("dim_dropout", "norm_dropout") if (share := tr.get(key, 0))]
    return (f"Head training: up to {tr.get('epochs')} epochs on {tr.get('negative_windows')} negative windows and "
            f"every keyword window, then {tr.get('mining_epochs')} on {tr.get('mining_windows')} mined hard negatives; "
            f"{' and '.join(drop) or 'no dimensions'} zeroed in each training window; "
            + (f"each engine's calls repeated up to the largest engine's hours (at most {tr['engine_balance']:g} "
               f"times); " if tr.get("engine_balance") else "")
            + (f"a Jensen-Shannon term (weight {tr['consistency']:g}) between each window's posteriors and those of "
               f"the same step of another rendering of its call ("
               + ("a warped twin" if r.get("calls", {}).get("mel_warp_twins") else "its other channel copy")
               + "); " if tr.get("consistency") else "")
            + (f"an ensemble of {tr['ensemble']} heads trained the same way from head seeds {r.get('seed')} to "
               f"{r.get('seed', 0) + tr['ensemble'] - 1}, their posteriors averaged; " if tr.get("ensemble", 1) > 1
               else f"head seed {r.get('seed')}, ")
            + f"data seed {r.get('calls', {}).get('seed', 0)}.")


def _smoothing_choice(cal: dict) -> str:
    """', chosen on validation calls: ...' from the calibration's tried windows (nothing for older reports)."""
    tried = cal.get("tried")
    if not tried:
        return ""
    rule = (f"the best recall among the windows whose median latency is at most {cal['max_latency_p50_s']} s"
            if cal.get("max_latency_p50_s", 0) > 0 else "the best recall")
    if cal.get("recall_margin"):
        rule = f"the shortest window within {100 * cal['recall_margin']:g} point of {rule}"
    each = "; ".join(f"{t['smoothing_steps']}: recall {_pct(t['recall'])} at {t['fa_per_hour']} FA/h, latency p50 "
                     f"{t['latency_p50_s']} s" for t in tried)
    return f" ({rule}, on validation calls; tried {each})"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _probe_lines(probe: dict | None) -> list[str]:
    """The card's section on the cascade's keyword probe that `spotter train` trained beside the model."""
    if not probe:
        return []
    if probe.get("skipped"):
        return ["## Keyword probe (the verifier's third opinion)",
                f"Not trained with this model: {probe['skipped']}. The cascade uses the shipped probe "
                "(models/default.probe.npz) when its keywords are this model's, else Whisper's two opinions alone."]
    built = (f"encoded in {probe['crops_s']:.0f} s" if probe.get("crops_s") is not None
             else "reused from the work folder (same sentences, seed and recordings)")
    rec = (f", {probe['recording_crops']} of them from the real recordings (each clip clean, wideband and "
           "telephone)" if probe.get("recording_crops") else "")
    return ["## Keyword probe (the verifier's third opinion)",
            f"`{probe['file']}` beside this file, trained by the same run (`training/probe.py`, seed "
            f"{probe.get('seed')}) on {probe['crops']} crops of the train- and val-split voices' sentences{rec}, "
            f"{built}; trained in {probe['train_s']:.0f} s. The cascade's combiner weights and threshold "
            "(`spotter.verify.PROBE_PARAMS`, `PROBE_CASCADE_THRESHOLD`) were fitted with the shipped probe, not "
            "re-fitted for this one."]


def _whisper_head_lines(wh: dict | None) -> list[str]:
    """The card's section on the Whisper proposer's head that `spotter train` trained beside the model."""
    if not wh:
        return []
    if wh.get("skipped"):
        return ["## Whisper proposer's head (the cascade's second proposer)",
                f"Not trained with this model: {wh['skipped']}. The cascade's union uses the shipped head "
                "(models/default.whisper.npz) when its keywords are this model's, else the first stage proposes "
                "alone."]
    built = (f"Whisper rows of {', '.join(wh['rows_built'])} encoded in {wh['rows_s']:.0f} s" if wh.get("rows_built")
             else "Whisper rows reused from the work folder")
    return ["## Whisper proposer's head (the cascade's second proposer)",
            f"`{wh['file']}` beside this file, trained by the same run (`training/whisper_head.py`, seed "
            f"{wh.get('seed')}) on the Whisper rows of {wh['training_calls']} training calls; {built}; trained "
            f"in {wh['train_s']:.0f} s; smoothing {wh.get('smoothing')}. The union's combiner weights and threshold "
            "are the shipped head's (fitted on leave-one-engine-out runs), not re-fitted for this one."]


def calls_card(model) -> str:
    """Model card of a model trained on calls (training/calltrain.py), from its stored report."""
    m = model.meta
    rep = m.get("calls_report", {})
    info = rep.get("info", {})
    final = rep.get("final", {})
    t = rep.get("timings_s", {})
    spk = info.get("speakers", {})
    sets = info.get("sets", {})
    from .recipes import CallPlan            # an artifact from before a setting existed had its default
    from .calls import RIPPLE_FROM, TIME_MASKS_PER_S
    plan = m.get("recipe", {}).get("calls", {})
    warp_copies = plan.get("mel_warp_copies", CallPlan.mel_warp_copies)
    warp_range = plan.get("mel_warp_range", CallPlan.mel_warp_range)
    tilt = plan.get("mel_tilt", CallPlan.mel_tilt)
    contrast = plan.get("mel_contrast", CallPlan.mel_contrast)
    centre = plan.get("mel_tilt_centre", CallPlan.mel_tilt_centre)
    tempo = plan.get("mel_time_warp", CallPlan.mel_time_warp)
    period = plan.get("mel_time_warp_period", CallPlan.mel_time_warp_period)
    time_mask = plan.get("mel_time_mask", CallPlan.mel_time_mask)
    ripple = plan.get("mel_ripple", CallPlan.mel_ripple)
    lines = [f"# Model card: {m.get('name', model.name)}", "",
             f"Trained {m.get('created', '?')} from commit `{m.get('git_commit', '?')}` with "
             f"`spotter train --config {m.get('config', 'training/configs/calls.toml')}` on the 2-core CPU machine: whole run "
             f"{t.get('total', '?')} s (synthesis {t.get('synthesis', '?')} s, 0 with a warm sentence cache; "
             f"calls and embeddings {t.get('calls_and_embeddings', '?')} s; the rest is the leave-one-engine-out "
             f"folds, the final head, calibration and evaluation).", "",
             "## What it is",
             "Google's speech_embedding CNN (openwakeword 0.5.1, frozen) over a 32-band log-mel front end; a small "
             f"temporal CNN head over the last 16 embeddings (1.98 s) gives {len(config.LABELS)} classes: the "
             f"{len(config.KEYWORDS)} keywords of the set `{config.KEYWORD_SET.name}` ({', '.join(config.KEYWORDS)}), "
             "`other` speech and `noise`. The head is trained on every 80 ms window of synthetic *calls*: caller sentences "
             "synthesised whole, with the keyword at the start, middle or end, its time span taken from the "
             "synthesiser (libespeak-ng word events, MBROLA .pho durations, Kokoro's predicted durations). A window "
             "is labelled with the keyword when it ends 0.04-0.40 s after the keyword's end. " + _head_training(m),
             "",
             "## Data (synthetic voices" + (", plus real recordings" if info.get("recordings") else
                                              ": no real person's voice") + ")", "",
             f"Distinct speakers: train {len(spk.get('train', []))}, validation {len(spk.get('val', []))}, "
             f"held-out test {len(spk.get('test', []))} (a speaker is an engine voice; espeak dialects of one "
             f"variant count as one speaker; Kokoro random style mixtures count as new speakers). Every sentence is "
             f"said at a drawn rate, pitch, pitch range and vocal-tract factor.", "",
             "Call sets (sentences / calls / hours of audio): " + "; ".join(
                 f"{k} {v.get('sentences', '?')} / {v.get('calls', '?')} / {v.get('hours', '?')} h"
                 for k, v in sets.items()) + ". Training calls are heard through "
             f"{plan.get('train_copies', 2)} drawn channels each (wideband or "
             f"telephone with G.711/GSM codecs, real noise at 0-30 dB, rooms)" + (
                 (f"; train_warp holds the train set's own calls (the same sentences, pauses and order), each "
                  f"{_times(warp_copies)} " if plan.get("mel_warp_twins") else
                  f"; train_warp holds the train set's sentences grouped again, each call {_times(warp_copies)} ")
                 + f"(each copy through its own drawn channel), embedded from a log-mel whose frequency axis is warped "
                 f"by a drawn factor of {warp_range[0]:g}-{warp_range[1]:g}, half of them with a 1-3 band frequency mask"
                 + (f", its spectral tilt changed by a drawn {centre - tilt:g} .. {centre + tilt:g} log10 units "
                    "from the bottom band to the top one (> 0: brighter at the top)" if tilt or centre else "")
                 + (f", its spectral contrast scaled by a drawn {1 - contrast:g}-{1 + contrast:g}" if contrast else "")
                 + (f", and its time axis warped (local tempo changes of up to {tempo:.0%} over a drawn "
                    f"{period[0]:g}-{period[1]:g} s period, "
                    "no frame moved more than 0.04 s)" if tempo else "")
                 + (f", with time masks (about {TIME_MASKS_PER_S:g} per second of a call, each up to "
                    f"{time_mask:g} s of frames replaced by the call's mean spectrum)" if time_mask else "")
                 + (f", its fine structure across bands (cepstral coefficients {RIPPLE_FROM} and up) times a gain "
                    f"drawn log-uniform in {1 / ripple:.2g}-{ripple:g}" if ripple else "")
                 if "train_warp" in sets else "") + ".", "",
             *([f"Real recordings added to the training calls (clips per keyword): "
                f"{info['recordings'].get('clips')}, from {info['recordings'].get('folders')}; each as recorded and "
                f"through drawn channels.", ""] if info.get("recordings") else []),
             *(["## Thresholds (one common threshold, set by the recipe)",
                f"`[calibrate] common_threshold = {common}` in the recipe, for every keyword: chosen at the "
                "evaluation's 0.5 FA/h point on the held-out negatives below, so the false-alarm rate there is not "
                "an independent estimate. The per-keyword thresholds calibrated on validation voices' calls "
                "(smoothing, budget and result below) raise many more false alarms on held-out voices: "
                f"{ {k: round(v, 3) for k, v in final.get('calibration', {}).get('validation_thresholds', {}).items()} }."]
               if (common := final.get('calibration', {}).get('common_threshold')) else
               ["## Thresholds (calibrated on validation voices' calls)"]),
             f"Smoothing over {model.detector.smoothing_steps} step{'s' if model.detector.smoothing_steps != 1 else ''}"
             f"{_smoothing_choice(final.get('calibration', {}))}; "
             f"an event is decided at most "
             f"{model.detector.max_hold_steps} step(s) after its score crosses the threshold; budget "
             f"{m.get('recipe', {}).get('calibrate', {}).get('budget_fa_per_hour', 0.5)} FA/h; on validation: "
             f"{ {k: v for k, v in final.get('calibration', {}).items() if k not in ('validation_thresholds', 'tried')} }.",
             "",
             "| keyword | service | threshold |", "|---|---|---|"]
    for k in config.KEYWORDS:
        lines.append(f"| {k} | {config.KEYWORD_SERVICE.get(k, '—')} | {model.detector.thresholds.get(k, float('nan')):.6g} |")
    lines += ["", *_probe_lines(m.get("probe"))]
    lines += ["", *_whisper_head_lines(m.get("whisper_head"))]
    lines += ["", "## Evaluation: keywords inside sentences, voices and engines it never heard", "",
              f"Negatives: {final.get('negative_hours', '?')} h of keyword-free running speech by held-out "
              "(test-split) voices, half through the telephone channel, noise 5-20 dB. "
              + ("A leave-one-engine-out fold counts its false alarms on the left-out engine's own keyword-free "
                 "speech only (" + ", ".join(f"{h}: {r.get('negative_hours', '?')} h"
                                             for h, r in rep["folds"].items()) + "). " if rep.get("folds") else "")
              + "Keyword calls: half "
              "telephone, noise 5-20 dB, test-split sentence frames (never used in training). One hit rule "
              "(`evaluation.streams.score_stream`): a detection of the right keyword decided inside "
              "[start, end + 0.8 s]. "
              + _threshold_rule(common, rep.get("folds", {}))
              + "The 0.5 and 1 FA/h columns sweep one common threshold on the table's own negatives.", "",
              "| model (scored on) | recall at the thresholds it runs at | recall at 0.5 FA/h | recall at 1 FA/h | "
              "keyword-clip accuracy | service correct at call end (keyword-free calls left quiet) |",
              "|---|---|---|---|---|---|"]
    for held, res in rep.get("folds", {}).items():
        lines.append(_fold_rows(f"trained without {held} (scored on {held} voices)", res))
    if final:
        lines.append(_fold_rows("this model (scored on held-out voices of all engines)", final))
    if rep.get("folds"):
        lines += ["", "Per keyword, leave-one-engine-out (recall at 0.5 FA/h):", "",
                  "| keyword | " + " | ".join(f"without {h}" for h in rep["folds"]) + " |",
                  "|---|" + "---|" * len(rep["folds"])]
        for k in config.KEYWORDS:
            cells = [_r(((res.get("at_0.5_fa_h") or {}).get("per_keyword") or {}).get(k)) for res in rep["folds"].values()]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines += ["", "Per channel, leave-one-engine-out (recall at 0.5 FA/h):", ""]
        for h, res in rep["folds"].items():
            pc = (res.get("at_0.5_fa_h") or {}).get("per_channel") or {}
            lines.append(f"- without {h}: " + ", ".join(f"{c} {_r(v)}" for c, v in pc.items()))
    lines += ["", "## What these figures can and cannot say",
              "They measure keywords said inside running sentences by synthetic voices, and by a whole synthesis "
              "engine, that training never heard, through simulated telephone channels and real noise. They do not "
              "measure real people: where real recordings of the keywords exist, `spotter evaluate --real DIR` "
              "does (no recording of a real person saying the French keywords exists here). The "
              "negatives are synthetic running speech; real conversations (laughter, crosstalk, hesitations) may "
              "raise the false-alarm rate.", ""]
    return "\n".join(lines)

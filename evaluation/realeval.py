"""Sim-to-real: score a model on real people's recordings of its keywords, beside openWakeWord.

  keyword clips  DIR/<keyword>/*.wav|flac (the console's recording layout; ASCII folder names too), one utterance
                 per clip with silence around it. The keyword's span is the clip's energetic part. Each clip is a
                 stream of its own (primed with silence as the live spotter is), followed by 1 s of -70 dBFS floor.
  negatives      the run's stored held-out synthetic running speech (calls_eval_neg.npz: test-split voices, noise
                 5-20 dB, half telephone), plus every real speech file under the recipe's speech_dir that is not
                 a keyword recording (other people's running speech, any language).
  conditions     clean (the recordings as they are), and real noise (the evaluation half of the noise files)
                 added to the clips and the real negatives at 10 dB SNR.
  scorer         training.calltrain.evaluate_posteriors: the one hit rule; a common threshold swept on the
                 negatives gives recall at 0.5 and 1 FA/h.

openWakeWord's pretrained `alexa_v0.1` runs on the same streams: its head is applied to the same speech_embedding
features (the frozen backbone both share; check_openwakeword_parity measures the difference against its own
Model.predict), and its score stands in for the "alexa" posterior. Its row is scored on the alexa clips, and our
model's "alexa only" row (computer's column silenced) is the like-for-like comparison.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from spotter import config
from spotter.errors import SpotterError

from training import calls as C
from training.calltrain import CallSet, _concat, call_posteriors, evaluate_posteriors

log = logging.getLogger("evaluation")
SR = config.SAMPLE_RATE
AUDIO_EXT = (".wav", ".flac")
TAIL_S = 1.0
NOISE_SNR_DB = 10.0
OWW_MODEL = "alexa_v0.1.onnx"


def keyword_recordings(root: Path) -> list[tuple[str, Path]]:
    """(keyword, file) of every recording under root/<keyword or its ASCII name>/, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise SpotterError(f"{root}: not a folder of keyword recordings")
    out = []
    for kw in config.KEYWORDS:
        for name in dict.fromkeys((kw, config.KEYWORD_ASCII[kw])):
            d = root / name
            if d.is_dir():
                out += [(kw, f) for f in sorted(d.iterdir(), key=_file_order) if f.suffix.lower() in AUDIO_EXT]
    if not out:
        raise SpotterError(f"{root}: no recordings of {', '.join(config.KEYWORDS)} "
                           f"(expected {root}/<keyword>/*.wav or *.flac)")
    return out


def _file_order(f: Path):
    """Numbered files in numeric order (2.flac before 10.flac), then the rest by name."""
    return (0, int(f.stem), "") if f.stem.isdigit() else (1, 0, f.name)


def load_clip(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz; SpotterError naming the file when it cannot be used."""
    from spotter.audio import load_audio
    return load_audio(path)


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """(start, end) seconds of the clip's speech: its energetic part (30 dB below its loudest 10 ms)."""
    from training.sentences import refine_span
    return refine_span(audio, 0.0, audio.size / SR)


def add_noise(audio: np.ndarray, noise, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """audio + a real noise segment scaled to snr_db below the speech's active level."""
    from training.augment import active_rms, colored_noise, scaled_noise
    seg = noise.segment(audio.size, rng) if noise is not None and len(noise) else None
    if seg is None:
        seg = colored_noise(audio.size, 1.0, rng)
    return (audio + scaled_noise(seg, audio.size, active_rms(audio), snr_db)).astype(np.float32)


def stream_set(model, items: list[tuple[str | None, Path]], condition: str, noise=None, seed: int = 0) -> CallSet:
    """Each recording as a stream of its own: embeddings, its keyword span (if any), metadata."""
    rng = np.random.default_rng(seed)
    cs = CallSet()
    floor = np.random.default_rng(seed + 1).normal(0, 10 ** (-70 / 20), int(TAIL_S * SR)).astype(np.float32)
    for kw, path in items:
        audio = load_clip(path)
        if audio.size < SR // 10:
            log.warning("%s: shorter than 0.1 s, skipped", path)
            continue
        if condition != "clean":
            audio = add_noise(audio, noise, rng, NOISE_SNR_DB)
        notes = [(kw, *speech_span(audio))] if kw else []
        x = np.concatenate([audio, floor])
        emb = C.stream_embeddings(model, x)
        n = len(emb) - config.HEAD_FRAMES + 1
        labels = C.step_labels(n, notes, [(0.0, audio.size / SR)])
        cs.add(emb, labels, notes, {"voice": str(path), "keyword": kw, "engine": "real", "channel": condition,
                                    "service": None, "split": "real"})
    return cs


# --- openWakeWord's pretrained alexa model on the same features ---------------------------------------------------
def _oww_session():
    import onnxruntime as ort
    import openwakeword
    path = Path(openwakeword.__file__).parent / "resources" / "models" / OWW_MODEL
    if not path.is_file():
        raise SpotterError(f"{path}: openWakeWord's {OWW_MODEL} is missing (pip install openwakeword==0.5.1)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def oww_scores(session, emb: np.ndarray) -> np.ndarray:
    """openWakeWord's alexa score after every step (its model sees the last 16 embeddings, batch 1)."""
    name = session.get_inputs()[0].name
    e = np.asarray(emb, np.float32)
    n = len(e) - config.HEAD_FRAMES + 1
    return np.array([session.run(None, {name: e[j:j + config.HEAD_FRAMES][None]})[0].item() for j in range(n)],
                    np.float32)


def as_posteriors(alexa: np.ndarray) -> np.ndarray:
    """A score for 'alexa' as a posterior matrix over the active labels (other keywords never fire)."""
    post = np.zeros((alexa.size, len(config.LABELS)), np.float32)
    post[:, config.LABELS.index("alexa")] = alexa
    post[:, config.LABELS.index(config.OTHER)] = 1.0 - alexa
    return post


def check_openwakeword_parity(session, model, files: list[Path]) -> dict:
    """Mean and largest |difference| between openWakeWord's own Model.predict and oww_scores on our embeddings,
    over the steps after its warm-up, for a few clips (the largest sit where the score jumps from 0 to 1)."""
    from openwakeword.model import Model
    import openwakeword
    path = Path(openwakeword.__file__).parent / "resources" / "models" / OWW_MODEL
    diffs = []
    for f in files:
        audio = np.concatenate([np.zeros(int(config.PRIME_S * SR), np.float32), load_clip(f)])
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        oww = Model(wakeword_models=[str(path)], inference_framework="onnx")
        theirs = np.array([list(oww.predict(pcm[i:i + 1280]).values())[0]
                           for i in range(0, len(pcm) - 1279, 1280)], np.float32)
        ours = oww_scores(session, C.stream_embeddings(model, audio[int(config.PRIME_S * SR):]))
        # our row j is after step j + 1 of the un-primed clip; theirs i is after frame i + 1 of the primed one
        k = int(round(config.PRIME_S / config.STEP_S))
        m = min(len(ours), len(theirs) - k)
        diffs.append(np.abs(ours[5:m] - theirs[k + 5:k + m]))
    d = np.concatenate(diffs)
    return {"mean_abs": round(float(d.mean()), 5), "max_abs": round(float(d.max()), 4), "steps": int(d.size)}


# --- the comparison ---------------------------------------------------------------------------------------------
def _row(res: dict) -> dict:
    def at(t):
        a = res.get(f"at_{t}_fa_h")
        return None if a is None else {"recall": a["recall"], "per_keyword": a["per_keyword"],
                                       "fa_per_hour": a["fa_per_hour"], "threshold": a["threshold"]}
    return {"at_0.5": at(0.5), "at_1.0": at(1.0), "calibrated": res["calibrated"]["recall"],
            "calibrated_fa_per_hour": res["calibrated"]["fa_per_hour"], "negative_hours": res["negative_hours"],
            "keyword_clips": res["keyword_occurrences"]}


def real_speech_files(speech_dir: Path | None, exclude: Path) -> list[Path]:
    """Real non-keyword speech: every audio file under speech_dir that is not a keyword recording, i.e. neither
    inside `exclude` (nor a link to a file there) nor in a folder named after a keyword (`.../alexa/*.flac`);
    none when the recipe sets no speech_dir."""
    if speech_dir is None:
        return []
    ex = Path(exclude).resolve()
    names = {n.lower() for k in config.KEYWORDS for n in (k, config.KEYWORD_ASCII[k])}
    return sorted(f for f in Path(speech_dir).rglob("*") if f.suffix.lower() in AUDIO_EXT
                  and ex not in f.resolve().parents and not names & {p.name.lower() for p in f.parents})


def compare_on_real(model, root: Path, work: Path, speech_dir: Path | None, noise_files: list[Path],
                    out_dir: Path | None = None, with_openwakeword: bool = True, seed: int = 0) -> dict:
    """Recall at 0.5 and 1 FA/h on real keyword recordings, clean and at 10 dB, for the model and (alexa)
    openWakeWord; negatives as in the module doc."""
    from training.augment import NoiseBank
    t0 = time.time()
    clips = keyword_recordings(root)
    neg_synth = CallSet.load(work / "calls_eval_neg.npz")
    speech = [(None, f) for f in real_speech_files(speech_dir, root)]
    noise = NoiseBank(list(noise_files)) if noise_files else None
    session = _oww_session() if with_openwakeword and "alexa" in config.KEYWORDS else None
    th, sm = model.detector.thresholds, model.detector.smoothing_steps
    out = {"keyword_clips": {k: sum(1 for kw, _ in clips if kw == k) for k in config.KEYWORDS},
           "real_negative_files": len(speech), "synthetic_negative_hours": round(neg_synth.hours(), 2),
           "conditions": {}}
    neg_synth_posts = [call_posteriors(model.head, e) for e in neg_synth.emb]
    oww_synth = [as_posteriors(oww_scores(session, e)) for e in neg_synth.emb] if session else None
    for condition in ("clean", f"noise_{NOISE_SNR_DB:g}dB"):
        kw = stream_set(model, clips, condition, noise, seed)
        neg_real = stream_set(model, speech, condition, noise, seed + 1)
        neg = _concat(neg_synth, neg_real)
        kw_posts = [call_posteriors(model.head, e) for e in kw.emb]
        neg_posts = neg_synth_posts + [call_posteriors(model.head, e) for e in neg_real.emb]
        sub = Path(out_dir) / condition if out_dir else None
        rows = {"spotter": _row(evaluate_posteriors(kw_posts, neg_posts, kw, neg, th, sm, sub,
                                                     f"{model.name} on real recordings ({condition})"))}
        if "alexa" in config.KEYWORDS:
            alexa = [i for i, m in enumerate(kw.meta) if m["keyword"] == "alexa"]
            kw_a = kw.select(lambda m: m["keyword"] == "alexa")
            rows["spotter_alexa_only"] = _row(evaluate_posteriors(
                [_only(kw_posts[i], "alexa") for i in alexa], [_only(p, "alexa") for p in neg_posts], kw_a, neg, th, sm))
            if session is not None:
                oww_kw = [as_posteriors(oww_scores(session, kw.emb[i])) for i in alexa]
                oww_neg = oww_synth + [as_posteriors(oww_scores(session, e)) for e in neg_real.emb]
                rows["openwakeword_alexa_v0.1"] = _row(evaluate_posteriors(
                    oww_kw, oww_neg, kw_a, neg, {k: 0.5 for k in config.KEYWORDS}, 1))
        out["conditions"][condition] = rows
        log.info("%s: %s", condition, {k: (v["at_0.5"] or {}).get("recall") for k, v in rows.items()})
    if session is not None:
        out["openwakeword_parity"] = check_openwakeword_parity(session, model,
                                                               [f for kw, f in clips if kw == "alexa"][:5])
    out["seconds"] = round(time.time() - t0, 1)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "real.json").write_text(json.dumps(out, ensure_ascii=False, indent=1, default=float))
    return out


def _only(post: np.ndarray, keyword: str) -> np.ndarray:
    """Posteriors with every keyword but one silenced (their mass moved to 'other')."""
    p = post.copy()
    for k in config.KEYWORDS:
        if k != keyword:
            j = config.LABELS.index(k)
            p[:, config.LABELS.index(config.OTHER)] += p[:, j]
            p[:, j] = 0.0
    return p


def table(res: dict) -> str:
    """The sim-to-real table as text (Markdown)."""
    lines = ["| condition | model | clips | recall @0.5 FA/h | recall @1 FA/h | per keyword @0.5 FA/h | "
             "at its own thresholds |", "|---|---|---|---|---|---|---|"]
    for cond, rows in res["conditions"].items():
        for name, r in rows.items():
            def rec(a):
                return "—" if a is None else f"{a['recall']['recall']:.3f} ({a['recall']['found']}/{a['recall']['of']})"
            per = "" if r["at_0.5"] is None else ", ".join(
                f"{k} {v['recall']:.2f}" for k, v in r["at_0.5"]["per_keyword"].items())
            own = f"{r['calibrated']['recall']:.3f} at {r['calibrated_fa_per_hour']:.2f} FA/h"
            lines.append(f"| {cond} | {name} | {r['keyword_clips']} | {rec(r['at_0.5'])} | {rec(r['at_1.0'])} | {per} "
                         f"| {own} |")
    return "\n".join(lines)

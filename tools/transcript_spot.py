"""How many keywords Whisper base writes down when it transcribes whole calls (no first stage at all).

An experiment, not a product path: the same calls as `training.verify_eval --cascade` (one voice each, 1-2
keyword sentences among keyword-free ones, alternately clean and through the telephone channel), each transcribed
in one piece by faster-whisper (Whisper base, int8, greedy, French), with word timestamps. A keyword occurrence is
found when a transcribed word equal to one of its spoken forms (accents and case ignored) lies within TOLERANCE_S of
its span; any other keyword word is a false alarm. Engine E: E's keyword sentences and E's keyword-free speech
(the folds' negatives); no engine: test-split voices (the held-out voices). Whisper never heard any of these
engines, so every row measures voices it never heard.

  python tools/transcript_spot.py --engine kokoro --kw 63 --neg 250 --json runs/ts/kokoro.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotter import config  # noqa: E402
from spotter.verify import KEYWORD_FORMS, model_dir  # noqa: E402
from training.verify_eval import cached_sentences, call_sentences, cascade_calls  # noqa: E402

SR = config.SAMPLE_RATE
TOLERANCE_S = 0.6


def plain(word: str) -> str:
    """Lower case, accents and punctuation removed."""
    w = unicodedata.normalize("NFKD", word.lower())
    return "".join(ch for ch in w if ch.isalnum() and not unicodedata.combining(ch))


def forms() -> dict[str, str]:
    """Plain spoken form -> keyword (singular and plural of each)."""
    out = {}
    for kw in config.KEYWORDS:
        for f in KEYWORD_FORMS.get(kw, (kw,)) + (kw, kw + "s"):
            out[plain(f)] = kw
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", help="espeak, mbrola, kokoro; default: the held-out voices")
    ap.add_argument("--kw", type=int, default=100)
    ap.add_argument("--neg", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from faster_whisper import WhisperModel
    sents = cached_sentences(ROOT / "cache" / "sentences", ("eval_kw", "eval_neg", "loeo_neg"))
    kw, neg = call_sentences(sents, args.kw, args.neg, args.seed, args.engine)
    model = WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=args.threads)
    table = forms()
    n_kw = hits = fas = 0
    seconds = cpu = 0.0
    rows = []
    per_kw: dict = {}
    for audio, notes, voice, engine, kind in cascade_calls(kw, neg, args.seed):
        t0 = time.process_time()
        segs, _ = model.transcribe(audio, language="fr", beam_size=args.beam, word_timestamps=True,
                                   condition_on_previous_text=False, vad_filter=False)
        words = [(w.word, w.start, w.end) for s in segs for w in (s.words or [])]
        cpu += time.process_time() - t0
        seconds += audio.size / SR
        found = [(table[plain(w)], a, b) for w, a, b in words if plain(w) in table]
        used = set()
        for k, a0, a1 in notes:
            n_kw += 1
            per_kw.setdefault(k, [0, 0])[1] += 1
            m = next((i for i, (fk, a, b) in enumerate(found) if fk == k and i not in used
                      and a <= a1 + TOLERANCE_S and b >= a0 - TOLERANCE_S), None)
            if m is not None:
                used.add(m)
                hits += 1
                per_kw[k][0] += 1
        extra = [f for i, f in enumerate(found) if i not in used]
        fas += len(extra)
        rows.append({"voice": voice, "kind": kind, "notes": notes, "found": found, "false": extra,
                     "text": " ".join(w for w, _, _ in words)})
    hours = seconds / 3600
    res = {"engine": args.engine or "held-out voices", "keywords": n_kw, "found": hits, "recall": hits / max(n_kw, 1),
           "false_alarms": fas, "hours": hours, "fa_per_hour": fas / hours, "calls": len(rows),
           "cpu_share_of_a_core": cpu / seconds, "per_keyword": per_kw}
    print(f"{res['engine']}: {len(rows)} calls, {hours:.2f} h, {n_kw} keywords: found {hits} ({res['recall']:.1%}), "
          f"{fas} false alarms ({res['fa_per_hour']:.2f} FA/h); Whisper took {100 * cpu / seconds:.1f} % of "
          f"{args.threads} thread(s) of CPU time per second of audio")
    print("per keyword: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(per_kw.items())))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**res, "rows": rows}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

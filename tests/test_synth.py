"""Synthesis of training clips: espeak-ng always (CI), MBROLA and Kokoro only where installed."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from spotter.config import KEYWORDS, OTHER, SAMPLE_RATE
from spotter.errors import SpotterError
from training import synth
from training.synth import (SynthItem, build_synth_plan, normalize_clip, read_manifest, synthesize,
                            synthesize_set, trim_silence)
from training.texts import CALLER_SENTENCES, CARRIER_PHRASES, OTHER_TEXTS, carrier_sentence, keyword_in
from training.voices import (Voice, available_voices, kokoro_blend, kokoro_voices, mbrola_voices,
                             split_voices)

ESPEAK = Voice("espeak", "fr+m3")


def rms_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-10))


def frame_db(x: np.ndarray, n: int = 160) -> np.ndarray:
    return np.array([rms_dbfs(x[i:i + n]) for i in range(0, len(x) - n + 1, n)])


def test_keyword_clip_is_trimmed_normalised_speech():
    raw = synthesize("électrocution", ESPEAK, speed=1.0, pitch=50)
    clip = normalize_clip(raw)
    assert clip.dtype == np.float32 and clip.ndim == 1
    # 16 kHz: a multisyllabic word lasts a plausible time at this rate
    assert 0.4 * SAMPLE_RATE < len(clip) < 1.6 * SAMPLE_RATE
    assert len(clip) < len(raw)                              # silence was cut
    assert abs(rms_dbfs(clip) - synth.TARGET_RMS_DBFS) < 0.5 or np.abs(clip).max() >= 0.85
    assert np.abs(clip).max() <= 10 ** (synth.PEAK_DBFS / 20) + 1e-4
    db = frame_db(clip)
    assert db.max() > -25                                    # not silent
    edge = round(synth.TRIM_MARGIN_S * SAMPLE_RATE) // synth.FRAME + 1
    assert db[:edge].max() > db.max() - synth.TRIM_REL_DB    # speech starts right after the margin
    assert db[-edge:].max() > db.max() - synth.TRIM_REL_DB   # and ends right before it
    raw_db = frame_db(raw)
    assert (raw_db[-edge:] < raw_db.max() - synth.TRIM_REL_DB).all()  # espeak ends with silence to cut


def test_speed_and_pitch_change_the_speech():
    slow = normalize_clip(synthesize("cambriolage", ESPEAK, speed=0.8))
    fast = normalize_clip(synthesize("cambriolage", ESPEAK, speed=1.3))
    assert len(slow) > 1.2 * len(fast)
    low = normalize_clip(synthesize("cambriolage", ESPEAK, pitch=20))
    high = normalize_clip(synthesize("cambriolage", ESPEAK, pitch=80))
    assert not np.array_equal(low[:4000], high[:4000])


def test_trim_keeps_margin_around_a_tone():
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    padded = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), tone, np.zeros(SAMPLE_RATE, np.float32)])
    out = trim_silence(padded)
    margin = round(synth.TRIM_MARGIN_S * SAMPLE_RATE)
    assert abs(len(out) - (len(tone) + 2 * margin)) <= 2 * synth.FRAME
    assert len(trim_silence(np.zeros(SAMPLE_RATE, np.float32))) == 0


def test_cache_is_reused(tmp_path):
    items = [SynthItem("gaz", "gaz", ESPEAK, 1.0, 50, "train"),
             SynthItem(OTHER, "gare", Voice("espeak", "fr-be+f2"), 1.15, 60, "val")]
    rows = synthesize_set(items, tmp_path, progress=False, workers=1)
    assert [r["label"] for r in rows] == ["gaz", OTHER]
    paths = [tmp_path / r["path"] for r in rows]
    assert all(p.is_file() for p in paths)
    assert paths[0].relative_to(tmp_path).parts[:3] == ("espeak", ESPEAK.key, "gaz")
    audio, rate = sf.read(paths[0], dtype="float32")
    assert rate == SAMPLE_RATE and sf.info(paths[0]).subtype == "PCM_16" and rms_dbfs(audio) > -25
    stamps = [p.stat().st_mtime_ns for p in paths]
    rows2 = synthesize_set(items, tmp_path, progress=False, workers=1)
    assert rows2 == rows
    assert [p.stat().st_mtime_ns for p in paths] == stamps   # nothing synthesized again
    manifest = read_manifest(tmp_path)
    assert len(manifest) == 2 and {r["split"] for r in manifest} == {"train", "val"}
    assert manifest[1]["speed"] == "1.15" and manifest[1]["pitch"] == "60"


def test_failed_clip_is_left_out(tmp_path, capsys):
    items = [SynthItem("vol", "vol", ESPEAK), SynthItem("vol", "vol", ESPEAK, speed=5.0)]
    rows = synthesize_set(items, tmp_path, progress=False, workers=1)
    assert len(rows) == 1 and "1 of 2 clips failed" in capsys.readouterr().out


def test_voice_split_is_speaker_disjoint():
    voices = available_voices(warn=False)
    voices += [kokoro_blend("jf_alpha", "jm_kumo")] if not kokoro_voices() else []
    splits = split_voices(voices, 0.15, 0.15, seed=3)
    speakers = {name: set() for name in ("train", "val", "test")}
    for v in voices:
        if v.key in splits:
            speakers[splits[v.key]].update(v.speakers)
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    espeak = {splits[v.key] for v in voices if v.engine == "espeak"}
    assert espeak == {"train", "val", "test"}
    dialects = {splits[k] for k in ("espeak-fr+m1", "espeak-fr-be+m1", "espeak-fr-ch+m1")}
    assert len(dialects) == 1                                # dialects of one variant are one speaker
    assert split_voices(voices, 0.15, 0.15, seed=3) == splits


def test_reserved_voices_are_refused():
    for engine, name in [("mbrola", "ca2"), ("espeak", "mb-ca2"), ("espeak", "mb-ca2+f1"), ("pico", "fr-FR")]:
        with pytest.raises(SpotterError, match="reserved"):
            Voice(engine, name)
    with pytest.raises(SpotterError, match="reserved"):
        synth.espeak_wave("gaz", "mb-ca2")
    keys = {v.key for v in available_voices(warn=False)}
    assert not any("ca2" in k or "pico" in k for k in keys)


def test_plan_covers_every_keyword_for_every_voice():
    voices = [ESPEAK, Voice("espeak", "fr+f2"), Voice("espeak", "fr+m5")]
    splits = split_voices(voices, 0.34, 0.34, seed=0)
    items = build_synth_plan(voices, splits, n_other_words=10, seed=1)
    for v in voices:
        labels = {it.label for it in items if it.voice == v}
        assert labels == set(KEYWORDS) | {OTHER}
        assert {it.split for it in items if it.voice == v} == {splits[v.key]}
    assert items == build_synth_plan(voices, splits, n_other_words=10, seed=1)


def test_texts_respect_the_labelling_policy():
    assert all(keyword_in(t) is None for t in OTHER_TEXTS), "an OTHER text contains a keyword"
    assert len(CALLER_SENTENCES) >= 40 and len(CARRIER_PHRASES) >= 20
    for kw in KEYWORDS:
        for template in CARRIER_PHRASES:
            assert keyword_in(carrier_sentence(template, kw)) == kw
    assert keyword_in("il y a de la gaze") == "gaz"          # homophones are never OTHER


@pytest.mark.skipif(not mbrola_voices(), reason="mbrola voices not installed (training/install_tts.sh)")
def test_mbrola_clip():
    clip = normalize_clip(synthesize("incendie", mbrola_voices()[0], speed=1.0, pitch=50))
    assert 0.3 * SAMPLE_RATE < len(clip) < 1.5 * SAMPLE_RATE and frame_db(clip).max() > -25


@pytest.mark.skipif(not kokoro_voices(), reason="Kokoro not installed (training/install_tts.sh)")
def test_kokoro_clip_from_french_phonemes():
    tokens, dropped = synth.kokoro_tokens("Il y a une électrocution au troisième étage !")
    assert dropped == [] and len(tokens) > 30
    clip = normalize_clip(synthesize("hémorragie", kokoro_blend("jf_alpha", "jm_kumo", 0.3), speed=1.1, pitch=60))
    assert 0.4 * SAMPLE_RATE < len(clip) < 2.0 * SAMPLE_RATE and frame_db(clip).max() > -25

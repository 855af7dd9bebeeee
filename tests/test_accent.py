"""Accent voices: French said by MBROLA voices of other languages (training/accent.py), one French phoneme for one
of the voice's own, so the keyword's span from the French .pho still holds; training speakers only."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from spotter import config
from spotter.errors import SpotterError
from training import accent
from training import calls as C
from training.sentences import Sentence, keyword_spans, parse_pho
from training.voices import Voice

installed = [n for n in accent.ACCENT_VOICES if accent.database(n).is_file()] if shutil.which("mbrola") else []
needs_accent = pytest.mark.skipif(not installed or shutil.which("espeak-ng") is None,
                                  reason="no accent voice installed (training/install_tts.sh)")


def test_the_reserved_voice_is_refused_as_an_accent_voice():
    with pytest.raises(SpotterError, match="reserved"):
        Voice("mbrola", accent.PREFIX + "ca2")
    with pytest.raises(SpotterError, match="reserved"):
        accent.accent_voices(("ca2",))


def test_every_french_phoneme_has_a_choice_list_starting_with_itself():
    for fr, choices in accent.FRENCH_TO_FOREIGN.items():
        assert choices[0] == fr and len(set(choices)) == len(choices)


@needs_accent
def test_map_pho_replaces_phonemes_one_for_one():
    name = installed[0]
    pho = C._espeak_cli(["-v", accent.FRONT_END, "-q", "--pho"], "Il y a un incendie chez nous.").decode()
    mapped = accent.map_pho(pho, name)
    a, b = parse_pho(pho), parse_pho(mapped)
    assert [d for _, d in a] == [d for _, d in b]                    # durations kept, so are the spans
    table = accent.phoneme_map(name)
    assert [table.get(p, p) for p, _ in a] == [p for p, _ in b]
    assert all(p == "_" or accent.has_phoneme(name, p) for p, _ in b)


@needs_accent
def test_an_accent_voice_says_the_sentence_with_its_keyword_span():
    text = "Oui bonjour, il y a un incendie dans la cuisine."
    s = Sentence(text, "incendie", keyword_spans(text, "incendie"))
    v = Voice("mbrola", accent.PREFIX + installed[0])
    audio, spans = C.say(C.SayJob(s, v))
    french, french_spans = C.say(C.SayJob(s, Voice("mbrola", "fr1"))) if accent.database("fr1").is_file() \
        else (None, None)
    (a, b), = spans
    assert 0.4 < a < b < len(audio) / 16000 - 0.3                  # speech before and after the keyword
    assert 0.2 < b - a < 0.9
    seg = audio[int(a * 16000):int(b * 16000)]
    assert np.sqrt(np.mean(seg ** 2)) > 0.02                        # the span holds speech, not silence
    if french is not None:                                           # same .pho timing as the French voice
        assert abs((b - a) - (french_spans[0][1] - french_spans[0][0])) < 0.05


@needs_accent
def test_accent_voices_are_training_speakers_in_a_set_of_their_own(tmp_path):
    """Adding accent voices leaves every other set's jobs as they were, and puts theirs in 'train_accent' only."""
    from dataclasses import replace
    from training.calltrain import ACCENT_SUFFIX, plan_jobs, plan_voices
    from training.recipes import CallPlan
    base = CallPlan(cache_dir=tmp_path, kokoro_random_blends=0, espeak_generated_speakers=0, engines=("mbrola",))
    more = replace(base, accent_voices=tuple(installed[:2]), accent_kw_sentences=1, accent_neg_sentences=2)
    jobs_a = plan_jobs(base, *plan_voices(base))
    voices, splits = plan_voices(more)
    jobs_b = plan_jobs(more, voices, splits)
    for name, jobs in jobs_a.items():
        assert jobs_b[name] == jobs, name
    assert set(jobs_b) - set(jobs_a) == {"train" + ACCENT_SUFFIX}
    acc = jobs_b["train" + ACCENT_SUFFIX]
    assert {j.voice.id for j in acc} == {accent.PREFIX + n for n in installed[:2]}
    assert all(splits[j.voice.key] == "train" for j in acc)
    assert len(acc) == len(installed[:2]) * (len(config.KEYWORDS) + 2)

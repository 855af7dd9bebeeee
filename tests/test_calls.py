"""Calls: sentences synthesised whole with keyword spans from the synthesiser, per-step labels relative to the
keyword's end, embeddings equal to the streaming path, and the fast offline decision rule equal to the live one."""
from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch

from spotter import config
from spotter.detector import Decider, decide_sequence
from training import calls as C
from training.sentences import (CLAUSES, FRAMES, frame_split, keyword_sentence, keyword_spans, negative_sentence,
                                pho_span)
from training.texts import keyword_in
from training.voices import Voice, mbrola_voices

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_sentences_carry_their_keyword_and_negatives_none():
    rng = random.Random(3)
    for kw in config.KEYWORDS:
        for split in ("train", "test"):
            s = keyword_sentence(kw, rng, split)
            assert s.spans and all(keyword_in(s.text[a:b]) == kw for a, b in s.spans), s
    for _ in range(300):
        assert keyword_in(negative_sentence(rng).text) is None


def test_train_and_test_frames_are_disjoint():
    assert not set(frame_split(FRAMES, "train")) & set(frame_split(FRAMES, "test"))
    assert not set(frame_split(CLAUSES, "train", 0.3, 12)) & set(frame_split(CLAUSES, "test", 0.3, 12))
    assert len(FRAMES) >= 50


def test_keyword_spans_find_plural_and_capitals():
    assert keyword_spans("Des Violences, encore des violence.", "violences") == ((4, 13), (26, 34))


def _span_energy(audio, a, b):
    seg = audio[int(a * 16000):int(b * 16000)]
    return float(np.sqrt(np.mean(seg ** 2))) if seg.size else 0.0


@needs_espeak
def test_espeak_sentence_span_covers_the_keyword():
    text = "Allô, il y a un incendie dans la cuisine, venez vite."
    s = keyword_sentence("incendie", random.Random(0))
    s = type(s)(text, "incendie", keyword_spans(text, "incendie"))
    audio, spans = C.say(C.SayJob(s, Voice("espeak", "fr+m3")))
    (a, b), = spans
    assert 0.5 < a < b < len(audio) / 16000 - 0.5          # speech before and after it
    assert 0.2 < b - a < 0.9                                 # "incendie" said at a normal rate
    # the keyword alone lasts about as long
    alone, alone_spans = C.say(C.SayJob(type(s)("incendie", "incendie", ((0, 8),)), Voice("espeak", "fr+m3")))
    assert abs((b - a) - (alone_spans[0][1] - alone_spans[0][0])) < 0.2
    assert _span_energy(audio, a, b) > 0.02


@needs_espeak
def test_an_espeak_sentence_is_the_same_whatever_was_said_before_it():
    """libespeak-ng carries state from one sentence to the next; the sentence cache keys a clip by its job alone,
    so the same job must give the same audio and keyword span after any other sentence (training from nothing
    then builds the same calls)."""
    text = "Bonsoir, on a eu une hémorragie interne cette nuit au premier."
    s = type(keyword_sentence("hémorragie", random.Random(0)))(text, "hémorragie", keyword_spans(text, "hémorragie"))
    job = C.SayJob(s, Voice("espeak", "fr"), speed=0.81, pitch=29, pitch_range=62)
    first, first_spans = C.say(job)
    other = type(s)("Une hémorragie, venez vite !", "hémorragie", ((4, 14),))
    C.say(C.SayJob(other, Voice("espeak", "fr"), speed=1.12, pitch=41, pitch_range=88))
    again, again_spans = C.say(job)
    assert np.array_equal(first, again) and first_spans == again_spans


@needs_espeak
def test_a_breathy_espeak_voice_is_the_same_whatever_the_process_drew_before():
    """Breathy and Klatt variants (fr+f3) draw their noise from libc's rand(): a child forked to speak inherits
    whatever the process drew before (onnxruntime, other libraries), so the noise is seeded from the job itself."""
    import ctypes
    text = "Il y a un incendie au troisieme etage."
    s = type(keyword_sentence("incendie", random.Random(0)))(text, "incendie", keyword_spans(text, "incendie"))
    job = C.SayJob(s, Voice("espeak", "fr+f3"), speed=1.0, pitch=50, pitch_range=50)
    first, _ = C.say(job)
    libc = ctypes.CDLL(None)
    libc.srand(12345)
    libc.rand()
    again, _ = C.say(job)
    assert np.array_equal(first, again)


@pytest.mark.skipif(not mbrola_voices(), reason="mbrola voices not installed")
def test_mbrola_span_from_pho_durations():
    text = "Oui bonjour, il y a du gaz dans la cuisine."
    s = type(keyword_sentence("gaz", random.Random(0)))(text, "gaz", keyword_spans(text, "gaz"))
    audio, spans = C.say(C.SayJob(s, mbrola_voices()[0]))
    (a, b), = spans
    assert 0.3 < a < b < len(audio) / 16000 - 0.2
    assert 0.1 < b - a < 0.6


def test_pho_span_prefers_the_occurrence_near_the_word():
    pho = [("_", 0.1), ("g", 0.05), ("a", 0.1), ("z", 0.05), ("l", 0.05), ("g", 0.05), ("a", 0.1), ("z", 0.05)]
    assert pho_span(pho, ["g", "a", "z"], 0.9) == pytest.approx((0.35, 0.55))
    assert pho_span(pho, ["g", "a", "z"], 0.0) == pytest.approx((0.1, 0.3))


def test_step_labels_are_relative_to_the_keyword_end():
    notes = [("gaz", 1.0, 1.3)]
    speech = [(0.5, 2.0)]
    y = C.step_labels(80, notes, speech)
    t = C.window_end_s(80)
    gaz, other, noise = (config.LABELS.index(x) for x in ("gaz", config.OTHER, config.NOISE))
    in_range = (t - 1.3 >= 0.04) & (t - 1.3 <= 0.40)
    assert in_range.sum() >= 4 and (y[in_range] == gaz).all()
    assert (y[(t > 1.0) & (t < 1.3 - 0.12)] == other).all()          # inside the word: not yet the keyword
    assert (y[(t - 1.3 > 0.40) & (t - 1.3 < 0.85)] == C.IGNORE).all()
    assert (y[(t > 0.6) & (t < 0.95)] == other).all()
    assert (y[t > 2.0 + config.CLIP_SAMPLES / 16000 + 0.01] == noise).all()


def test_fast_decision_rule_equals_the_live_decider():
    rng = np.random.default_rng(0)
    n = 3000
    post = rng.dirichlet(np.ones(len(config.LABELS)) * 0.3, size=n).astype(np.float32)
    for start in rng.integers(0, n - 10, 40):          # bursts of one keyword
        post[start:start + 6, rng.integers(12)] += rng.uniform(0.5, 3.0)
    post /= post.sum(1, keepdims=True)
    for smoothing in (1, 3, 5):
        cfg = config.DetectorConfig(thresholds={k: 0.45 for k in config.KEYWORDS}, smoothing_steps=smoothing)
        dec = Decider(cfg)
        live = []
        for j, p in enumerate(post):
            live += dec.update(p, j + 1)
        live += dec.finish(n + 1)
        fast = decide_sequence(post, cfg)
        assert live and [(d.keyword, d.peak_step, d.step) for d in fast] == \
            [(d.keyword, d.peak_step, d.step) for d in live]
        assert np.allclose([d.score for d in fast], [d.score for d in live], atol=1e-6)   # float64 moving sum


@needs_espeak
def test_call_embeddings_give_the_streaming_posteriors():
    from spotter.model import KeywordHead, KeywordModel
    from training.calltrain import call_posteriors
    from evaluation.streams import stream_posteriors
    torch.manual_seed(0)
    model = KeywordModel(head=KeywordHead()).eval()
    audio = np.random.default_rng(1).normal(0, 0.05, 16000 * 3 + 517).astype(np.float32)
    emb = C.stream_embeddings(model, audio, chunk_steps=7)           # several chunks
    ref = stream_posteriors(model, audio)
    got = call_posteriors(model.head, emb)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 2e-3                            # float16 storage of the embeddings


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_extra_sets_change_no_other_set(tmp_path):
    """The "_extra" sets (more sentences by chosen engines, new Kokoro mixtures) are drawn on their own: adding
    them to a plan leaves every other set's sentences, voices and draws as they were (their stored calls stay
    valid), and they hold only training and validation speakers."""
    from dataclasses import replace
    from training.calltrain import EXTRA_SUFFIX, is_extra, plan_jobs, plan_voices
    from training.recipes import CallPlan
    base = CallPlan(cache_dir=tmp_path, kokoro_random_blends=2, espeak_generated_speakers=0)
    more = replace(base, extra_kw_sentences={"espeak": 1, "mbrola": 2, "kokoro": 1},
                   extra_neg_sentences={"espeak": 2, "mbrola": 3, "kokoro": 1}, extra_kokoro_blends=4)
    jobs_a = plan_jobs(base, *plan_voices(base))
    voices, splits = plan_voices(more)
    jobs_b = plan_jobs(more, voices, splits)
    for name, jobs in jobs_a.items():
        assert jobs_b[name] == jobs, name
    extra = {n: j for n, j in jobs_b.items() if n.endswith(EXTRA_SUFFIX)}
    assert set(jobs_b) - set(jobs_a) == set(extra) and extra["train" + EXTRA_SUFFIX]
    for name, jobs in extra.items():
        for j in jobs:
            assert is_extra(j.voice) or splits[j.voice.key] == name.removesuffix(EXTRA_SUFFIX)
            assert not (is_extra(j.voice) and name != "train" + EXTRA_SUFFIX)
    kokoro_extra = [v for v in voices if is_extra(v)]
    assert all(splits[v.key] == "train" for v in kokoro_extra)
    test_styles = {s for v in voices if splits.get(v.key) == "test" for s in v.speakers}
    assert not {s for v in kokoro_extra for s in v.speakers} & test_styles


def test_the_kokoro_folds_own_keyword_set_changes_no_other_set_and_no_held_out_figure(tmp_path):
    """The "eval_kw_kokoro" set (more keyword calls for the Kokoro fold) is drawn on its own: adding it leaves every
    other set as it was; it holds Kokoro voices only, none of them a test voice (the held-out-voice figures count
    test voices: they stay as they were), says every keyword as often by each voice, and is built only with folds."""
    from dataclasses import replace
    from training.calltrain import FOLD_ONLY_SETS, KOKORO_FOLD_SUFFIX, base_set, plan_jobs, plan_voices
    from training.recipes import CallPlan
    from training.voices import kokoro_installed
    if not kokoro_installed():
        pytest.skip("Kokoro is not installed (training/install_tts.sh)")
    base = CallPlan(cache_dir=tmp_path, kokoro_random_blends=2, espeak_generated_speakers=0)
    more = replace(base, kokoro_fold_kw_sentences=2, kokoro_fold_blends=3)
    jobs_a = plan_jobs(base, *plan_voices(base))
    voices, splits = plan_voices(more)
    jobs_b = plan_jobs(more, voices, splits)
    name = "eval_kw" + KOKORO_FOLD_SUFFIX
    assert set(jobs_b) - set(jobs_a) == {name} and all(jobs_b[n] == j for n, j in jobs_a.items())
    assert base_set(name) == "eval_kw" and name in FOLD_ONLY_SETS
    fold = jobs_b[name]
    assert {j.voice.engine for j in fold} == {"kokoro"} and all(splits.get(j.voice.key) != "test" for j in fold)
    kokoro = [v for v in voices if v.engine == "kokoro" and splits.get(v.key) != "test"]
    assert len({j.voice.key for j in fold}) == len(kokoro) + 3
    for kw in config.KEYWORDS:
        assert sum(j.sentence.keyword == kw for j in fold) == 2 * (len(kokoro) + 3)


def test_the_warp_set_is_the_training_sentences_again_and_changes_no_other_set(tmp_path):
    from dataclasses import replace
    from training.calltrain import WARP_SUFFIX, base_set, plan_jobs, plan_voices
    from training.recipes import CallPlan
    base = CallPlan(cache_dir=tmp_path, kokoro_random_blends=2, espeak_generated_speakers=0)
    warped = replace(base, mel_warp=True)
    jobs_a, jobs_b = plan_jobs(base, *plan_voices(base)), plan_jobs(warped, *plan_voices(warped))
    assert set(jobs_b) - set(jobs_a) == {"train" + WARP_SUFFIX}
    assert all(jobs_b[n] == j for n, j in jobs_a.items())
    assert jobs_b["train" + WARP_SUFFIX] == jobs_a["train"] and base_set("train" + WARP_SUFFIX) == "train"


def test_warped_embeddings_move_the_formants_and_keep_the_stream_shape():
    """A warp of 1 without a mask is the plain front end; a drawn warp changes the embeddings (same rows), and the
    draws are the call generator's: the same generator state gives the same embeddings."""
    from spotter.model import KeywordHead, KeywordModel
    torch.manual_seed(0)
    model = KeywordModel(head=KeywordHead()).eval()
    t = np.arange(16000 * 2) / 16000
    audio = (0.1 * np.sin(2 * np.pi * 700 * t) + 0.05 * np.sin(2 * np.pi * 1900 * t)).astype(np.float32)
    plain = C.stream_embeddings(model, audio)
    assert np.array_equal(C.stream_embeddings(C.WarpedMel(model, 1.0), audio), plain)
    up = C.stream_embeddings(C.WarpedMel(model, 1.12, (4, 6)), audio)
    assert up.shape == plain.shape and np.abs(up.astype(np.float32) - plain).mean() > 0.1
    f = C.WarpedEmbeddings()
    a = f(model, audio, np.random.default_rng(3))
    assert np.array_equal(a, f(model, audio, np.random.default_rng(3))) and a.shape == plain.shape
    # a tilt brightens the top bands; drawn after the warp and mask, so with tilt 0 the draws are the first recipe's
    tilted = C.stream_embeddings(C.WarpedMel(model, 1.0, tilt=1.0), audio)
    assert tilted.shape == plain.shape and np.abs(tilted.astype(np.float32) - plain).mean() > 0.1
    assert np.array_equal(C.WarpedEmbeddings(tilt=0.0)(model, audio, np.random.default_rng(3)), a)
    assert not np.array_equal(C.WarpedEmbeddings(tilt=1.0)(model, audio, np.random.default_rng(3)), a)
    # a tilt centre without a spread is that tilt on every call, on the same warp and mask draws
    rng = np.random.default_rng(3)
    warp, width = rng.uniform(*C.MEL_WARP), int(rng.integers(C.MEL_MASK_BANDS[0], C.MEL_MASK_BANDS[1] + 1))
    start = int(rng.integers(0, config.N_MELS - width + 1))
    mask = (start, start + width) if rng.random() < C.MEL_MASK_SHARE else None
    assert np.array_equal(C.WarpedEmbeddings(tilt_centre=1.0)(model, audio, np.random.default_rng(3)),
                          C.stream_embeddings(C.WarpedMel(model, warp, mask, tilt=1.0), audio))
    flatter = C.stream_embeddings(C.WarpedMel(model, 1.0, contrast=0.8), audio)
    assert flatter.shape == plain.shape and np.abs(flatter.astype(np.float32) - plain).mean() > 0.1
    assert not np.array_equal(C.WarpedEmbeddings(contrast=0.2)(model, audio, np.random.default_rng(3)), a)


def test_the_time_warp_moves_tone_onsets_by_less_than_half_a_step_and_keeps_the_call_length():
    """Tone bursts every 0.4 s: after the time warp each later burst's onset in the log-mel has moved (somewhere) but by
    at most TEMPO_MAX_SHIFT_S, so the step labels stay true; the local tempo stays within the drawn deviation; the
    embeddings keep the stream's shape, and the same draws with the time warp give other embeddings."""
    from spotter.features import log_mel
    from spotter.model import KeywordHead, KeywordModel
    t = np.arange(16000 * 6) / 16000
    audio = (0.2 * np.sin(2 * np.pi * 1000 * t) * ((t % 0.4) < 0.15) + 1e-4 * np.sin(2 * np.pi * 90 * t))
    mel = log_mel(torch.from_numpy(audio.astype(np.float32)))
    onsets = lambda m: np.flatnonzero(np.diff((m[:, 12] > m[:, 12].mean()).numpy().astype(int)) == 1)
    plain = onsets(mel)
    warped = C.time_warp(mel, 4.0, 150.0, 1.0)
    moved = onsets(warped)
    assert warped.shape == mel.shape and len(moved) == len(plain) == 14
    shift = np.abs(moved - plain)
    assert shift.max() <= C.TEMPO_MAX_SHIFT_S / C.MEL_FRAME_S and shift.max() >= 2
    ramp = C.time_warp(torch.arange(600.0)[:, None], 4.0, 150.0, 1.0)[:, 0]
    rate = torch.diff(ramp)[5:-5]
    assert rate.min() >= 1 - 2 * np.pi * 4 / 150 - 1e-4 and rate.max() <= 1 + 2 * np.pi * 4 / 150 + 1e-4
    torch.manual_seed(0)
    model = KeywordModel(head=KeywordHead()).eval()
    a = C.WarpedEmbeddings(tempo=0.15)(model, audio.astype(np.float32), np.random.default_rng(3))
    b = C.WarpedEmbeddings()(model, audio.astype(np.float32), np.random.default_rng(3))
    assert a.shape == b.shape == C.stream_embeddings(model, audio.astype(np.float32)).shape
    assert not np.array_equal(a, b)


def test_a_time_mask_flattens_only_its_frames_and_keeps_the_call():
    """Tone bursts every 0.4 s: a time mask replaces exactly its frames by the log-mel's mean spectrum (no burst
    edge inside it any more), leaves every other frame as it was and keeps the length; drawn masks change the
    embeddings but not their shape, time_mask 0 keeps the draws of the recipes before it, and the draws give about
    TIME_MASKS_PER_S masks per second, none longer than asked."""
    from spotter.features import log_mel
    from spotter.model import KeywordHead, KeywordModel
    t = np.arange(16000 * 6) / 16000
    audio = (0.2 * np.sin(2 * np.pi * 1000 * t) * ((t % 0.4) < 0.15) + 1e-4 * np.sin(2 * np.pi * 90 * t))
    mel = log_mel(torch.from_numpy(audio.astype(np.float32)))
    masked = C.time_mask(mel, ((0.25, 30),))
    a = int(0.25 * mel.shape[0])
    assert masked.shape == mel.shape
    assert torch.equal(masked[:a], mel[:a]) and torch.equal(masked[a + 30:], mel[a + 30:])
    assert torch.allclose(masked[a:a + 30], mel.mean(dim=0, keepdim=True).expand(30, -1))
    assert mel[a:a + 30, 12].std() > 1.0 and masked[a:a + 30, 12].std() < 1e-5
    torch.manual_seed(0)
    model = KeywordModel(head=KeywordHead()).eval()
    x = audio.astype(np.float32)
    plain = C.WarpedEmbeddings(tempo=0.15)(model, x, np.random.default_rng(3))
    with_masks = C.WarpedEmbeddings(tempo=0.15, time_mask=0.15)(model, x, np.random.default_rng(3))
    assert with_masks.shape == plain.shape and not np.array_equal(with_masks, plain)
    assert np.array_equal(C.WarpedEmbeddings(tempo=0.15, time_mask=0.0)(model, x, np.random.default_rng(3)), plain)
    masks = [m for seed in range(20) for m in C.draw_time_masks(np.random.default_rng(seed), 6.0, 0.15)]
    assert 35 <= len(masks) <= 85                      # 3 per 6-s call on average
    assert all(0 <= pos < 1 and 1 <= frames <= 15 for pos, frames in masks)


def test_the_warp_sets_settings_are_part_of_its_fingerprint():
    """A stored warp set is reused only while the recipe asks for the same copies, range, tilt, contrast, twins and
    time warp (the first recipe's 1 copy at 0.88-1.12 keeps the plain sentence fingerprint, so sets stored before
    the knobs stay valid)."""
    from dataclasses import replace
    from training.calltrain import features_key
    from training.recipes import CallPlan
    plan = CallPlan(mel_warp=True)
    assert features_key(plan, "train_warp") == "" and features_key(plan, "train") == ""
    keys = {features_key(replace(plan, mel_warp_copies=2), "train_warp"),
            features_key(replace(plan, mel_warp_range=(0.8, 1.2)), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_tilt=1.0), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_contrast=0.2), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_tilt=1.0, mel_tilt_centre=1.0), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_warp_twins=True), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_warp_twins=True, mel_time_warp=0.15), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_warp_twins=True, mel_time_warp=0.15,
                                 mel_time_warp_period=(0.3, 1.0)), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_warp_twins=True, mel_time_warp=0.15,
                                 mel_time_mask=0.15), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_warp_twins=True, mel_time_warp=0.15,
                                 mel_ripple=2.5), "train_warp"),
            features_key(replace(plan, mel_warp_copies=2, mel_warp_twins=True, mel_time_warp=0.15,
                                 mel_smooth=True), "train_warp")}
    assert len(keys) == 11 and "" not in keys
    # a smoothed front end changes every set, not only the warp set
    assert features_key(replace(plan, mel_smooth=True), "eval_neg") != "" 
    # the period's default adds nothing, so the warp sets stored before the period was a setting keep their key
    assert features_key(replace(plan, mel_time_warp=0.15, mel_time_warp_period=[1.0, 2.0]), "train_warp") == \
        features_key(replace(plan, mel_time_warp=0.15), "train_warp")
    # nor does a period without a time warp: it draws nothing
    assert features_key(replace(plan, mel_time_warp_period=(0.3, 1.0)), "train_warp") == ""


def test_a_twin_warp_set_holds_the_training_sets_calls():
    """With mel_warp_twins the warp set groups the training sentences into the training set's calls (the same
    sentences in the same order, hence the same pauses: calltrain.embed_calls makes call i from [seed, i]); without
    it, calls of their own."""
    from dataclasses import replace
    from training.calltrain import set_groups
    from training.recipes import CallPlan
    utts = [C.Utterance(f"s{i}.wav", f"s{i}", None, (), f"v{i % 3}", "espeak", f"v{i % 3}", 1.0 + i / 10)
            for i in range(40)]
    plan = CallPlan(mel_warp=True)
    texts = lambda groups: [[u.text for u in g] for g in groups]
    seed, groups = set_groups(plan, "train", utts)
    twin_seed, twins = set_groups(replace(plan, mel_warp_twins=True), "train_warp", utts)
    own_seed, own = set_groups(plan, "train_warp", utts)
    assert twin_seed == seed and texts(twins) == texts(groups)
    assert own_seed != seed and texts(own) != texts(groups)


def test_a_head_with_a_shorter_context_ignores_the_older_embeddings_and_loads_back(tmp_path):
    from spotter.model import KeywordModel, head_kwargs, load_model
    from training.calltrain import training_head
    torch.manual_seed(0)
    head = training_head(0.5, context=8).eval()
    x = torch.randn(3, config.HEAD_FRAMES, config.EMBED_DIM)
    y = x.clone()
    y[:, :config.HEAD_FRAMES - 8] = torch.randn(3, config.HEAD_FRAMES - 8, config.EMBED_DIM)
    assert torch.equal(head(x), head(y)) and head_kwargs(head) == {"channels": 96, "context": 8}
    model = KeywordModel(head=head)
    model.save(tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.head.context == 8 and torch.equal(back.head(x), head(x))


def test_recall_at_a_false_alarm_budget_carries_a_bootstrap_interval():
    """evaluate_posteriors' recall at <= 0.5 FA/h comes with a 90 % interval over resampled calls: it contains the
    figure, and it is wide when the budget rests on a few false alarms."""
    from training.calltrain import CallSet, evaluate_posteriors
    n_kw, steps_kw = 40, 60
    kw_cs, kw_posts = CallSet(), []
    kw_col = config.LABELS.index("incendie")
    other = config.LABELS.index(config.OTHER)
    for i in range(n_kw):
        p = np.zeros((steps_kw, len(config.LABELS)), np.float32)
        p[:, other] = 1.0
        p[30:34, kw_col], p[30:34, other] = (0.995, 0.005) if i % 2 else (0.93, 0.07)    # half strong, half weak
        kw_posts.append(p)
        kw_cs.add(np.zeros((steps_kw + 15, 96), np.float16), np.full(steps_kw, other, np.int16),
                  [("incendie", 30 * C.STEP_S - 0.5, 30 * C.STEP_S - 0.1)], {"engine": "e", "channel": "wide",
                                                                               "service": "18"})
    neg_cs, neg_posts = CallSet(), []
    steps_neg = int(0.25 * 3600 / C.STEP_S)                   # 10 calls of 15 min: 2.5 h of negatives
    for i in range(10):
        p = np.zeros((steps_neg, len(config.LABELS)), np.float32)
        p[:, other] = 1.0
        if i < 2:                                               # one false alarm at 0.95 in two calls: 0.8 FA/h
            p[100:104, kw_col], p[100:104, other] = 0.95, 0.05
        neg_posts.append(p)
        neg_cs.add(np.zeros((steps_neg + 15, 96), np.float16), np.full(steps_neg, other, np.int16), [],
                   {"engine": "e", "channel": "tel", "service": None})
    res = evaluate_posteriors(kw_posts, neg_posts, kw_cs, neg_cs, {k: 0.5 for k in config.KEYWORDS}, 1)
    a5 = res["at_0.5_fa_h"]
    assert a5["threshold"] > 0.95 and a5["recall"]["recall"] == 0.5          # only the strong half survives
    lo, hi = a5["recall_interval_90"]
    assert lo <= a5["recall"]["recall"] <= hi
    assert hi - lo > 0.3      # draws without the two false alarms allow 0.93: recall 1.0; draws with both: 0.5


@needs_espeak
def test_leave_one_engine_out_negatives_are_the_held_out_engines_own_speech(tmp_path):
    """A fold's false alarms are counted on keyword-free speech of the engine it never heard: 'loeo_neg' tops each
    engine up with test-frame sentences by its non-test voices, drawn on its own (no other set changes), and
    engine_negatives gives one engine's calls only."""
    from dataclasses import replace
    from training.calltrain import (CALL_S_PER_SENTENCE, CallSet, engine_negatives, jobs_fingerprint, plan_jobs,
                                    plan_voices)
    from training.recipes import CallPlan
    base = CallPlan(cache_dir=tmp_path, kokoro_random_blends=0, espeak_generated_speakers=0, eval_negative_hours=0.2)
    more = replace(base, loeo_negative_hours=0.5)
    voices, splits = plan_voices(more)
    jobs_a, jobs_b = plan_jobs(base, voices, splits), plan_jobs(more, voices, splits)
    assert "loeo_neg" not in jobs_a and jobs_b["loeo_neg"]
    for name, jobs in jobs_a.items():
        assert jobs_b[name] == jobs and jobs_fingerprint(jobs_b[name]) == jobs_fingerprint(jobs), name
    assert jobs_fingerprint(jobs_b["eval_neg"][1:]) != jobs_fingerprint(jobs_b["eval_neg"])
    for engine in {v.engine for v in voices}:
        have = sum(1 for j in jobs_b["eval_neg"] if j.voice.engine == engine)
        added = [j for j in jobs_b["loeo_neg"] if j.voice.engine == engine]
        if any(v.engine == engine and splits.get(v.key) != "test" for v in voices):
            assert have + len(added) == max(have, int(0.5 * 3600 / CALL_S_PER_SENTENCE)), engine
    seen = {j.sentence.text for name in ("train", "val") for j in jobs_b[name]}
    for j in jobs_b["loeo_neg"]:                    # test-frame sentences, by voices the fold never heard
        assert j.sentence.keyword is None and splits[j.voice.key] != "test" and j.sentence.text not in seen

    sets = {"eval_neg": CallSet(), "loeo_neg": CallSet()}
    for name, engine in (("eval_neg", "a"), ("eval_neg", "b"), ("loeo_neg", "a")):
        sets[name].add(np.zeros((20, 96), np.float16), np.zeros(5, np.int16), [], {"engine": engine})
    assert [m["engine"] for m in engine_negatives(sets, "a").meta] == ["a", "a"]
    assert [m["engine"] for m in engine_negatives({"eval_neg": sets["eval_neg"]}, "b").meta] == ["b"]


def test_no_negatives_give_no_operating_point():
    """Without keyword-free speech there is no false-alarm rate: recall 'at 0.5 FA/h' is not reported (rather than
    taken at the lowest threshold as if no false alarm could happen)."""
    from training.calltrain import CallSet, evaluate_posteriors
    kw_cs, p = CallSet(), np.zeros((40, len(config.LABELS)), np.float32)
    p[:, config.LABELS.index(config.OTHER)] = 1.0
    kw_cs.add(np.zeros((55, 96), np.float16), np.zeros(40, np.int16), [("gaz", 1.0, 1.3)],
              {"engine": "e", "channel": "wide", "service": "18"})
    res = evaluate_posteriors([p], [], kw_cs, CallSet(), {k: 0.5 for k in config.KEYWORDS}, 1)
    assert res["negative_hours"] == 0 and res["at_0.5_fa_h"] is None and res["at_1.0_fa_h"] is None


@needs_espeak
def test_a_stored_call_set_is_built_again_when_the_recipe_changes_its_sentences(tmp_path):
    """build_callsets reuses a stored set only while the plan still asks for the same sentence jobs (their
    fingerprint is stored with it); a changed plan builds it again instead of silently scoring the old set."""
    import json
    from dataclasses import replace
    from pathlib import Path
    from training.calltrain import build_callsets
    from training.recipes import load_recipe
    plan = replace(load_recipe(Path(__file__).resolve().parent.parent / "training/configs/calls_tiny.toml").calls,
                   eval_negative_hours=0.01)
    work, noise = tmp_path / "work", {"train": [], "eval": []}

    def build(p):
        sets, info = build_callsets(p, tmp_path / "cache", work, noise, only={"eval_neg"})
        return sets["eval_neg"], info["sets"]["eval_neg"]
    first, info1 = build(plan)
    stamp = (work / "calls_eval_neg.npz").stat().st_mtime_ns
    again, info2 = build(plan)                                    # same plan: loaded, not rebuilt
    assert (work / "calls_eval_neg.npz").stat().st_mtime_ns == stamp and info2["jobs"] == info1["jobs"]
    assert len(again.emb) == len(first.emb)
    more, info3 = build(replace(plan, eval_negative_hours=0.02))   # more sentences: built again
    assert info3["jobs"] != info1["jobs"] and info3["sentences"] > info1["sentences"]
    assert json.loads((work / "calls_info.json").read_text())["sets"]["eval_neg"]["jobs"] == info3["jobs"]


def test_a_head_trained_with_norm_dropout_is_the_plain_head_once_trained():
    from spotter.model import KeywordHead
    from training.calltrain import training_head
    torch.manual_seed(0)
    head = training_head(0.5)
    plain = KeywordHead()
    plain.load_state_dict(head.state_dict())                 # the same weights: saved and exported as the plain head
    x = torch.randn(4, config.HEAD_FRAMES, config.EMBED_DIM)
    head.eval(), plain.eval()
    assert torch.equal(head(x), plain(x))
    head.train(), plain.train()
    head.dropout.p = plain.dropout.p = 0.0                   # only the norm dropout differs between them now
    assert torch.allclose(plain(x), plain(x))
    assert not torch.allclose(head(x), plain(x))             # in training, dimensions are dropped


def test_head_training_options_train_a_plain_head_that_separates_two_classes():
    """norm_gain, mixup, logit_norm and the consistency term change only training: the head they give is the
    plain KeywordHead, and it still learns two separable classes of embedding windows."""
    from spotter.model import KeywordHead
    from training.calltrain import training_head
    from training.train import train_head
    g = torch.Generator().manual_seed(0)
    n, kw, other = 256, 0, config.LABELS.index(config.OTHER)
    x = torch.randn(n, config.HEAD_FRAMES, config.EMBED_DIM, generator=g)
    y = torch.where(torch.arange(n) % 2 == 0, kw, other)
    x[y == kw, :, :8] += 2.0                                 # the keyword windows differ in 8 dimensions
    pairs = x + 0.3 * torch.randn(x.shape, generator=g)      # another channel's rendering of each window
    for opts, head in (({"mixup": 0.4}, training_head(0.5)), ({"logit_norm": 0.04}, training_head(0.5)),
                       ({}, training_head(0.5, norm_gain=0.3)),
                       ({"pairs": pairs, "consistency": 1.0}, training_head(0.5))):
        torch.manual_seed(0)
        trained, _ = train_head(head, (x, y), (x, y), epochs=8, batch=64, progress=False, **opts)
        plain = KeywordHead()
        plain.load_state_dict(trained.state_dict())
        plain.eval()
        with torch.no_grad():
            pred = plain(x).argmax(1)
        assert (pred == y).float().mean() > 0.9, opts


def test_weight_averaging_returns_the_mean_of_the_steps_weights_with_their_batchnorm_statistics():
    """With average_from, the head returned holds the mean of its weights after each step from that epoch on (here
    every step of the last two epochs of four), BatchNorm statistics recomputed on the training windows; it is a
    plain KeywordHead that still separates two classes, and its posteriors are the same however they are batched."""
    from spotter.model import KeywordHead
    from training.calltrain import training_head
    from training.train import train_head
    g = torch.Generator().manual_seed(0)
    n, kw, other = 256, 0, config.LABELS.index(config.OTHER)
    x = torch.randn(n, config.HEAD_FRAMES, config.EMBED_DIM, generator=g)
    y = torch.where(torch.arange(n) % 2 == 0, kw, other)
    x[y == kw, :, :8] += 2.0
    torch.manual_seed(0)
    head, hist = train_head(training_head(0.5), (x, y), (x, y), epochs=4, batch=64, patience=10, progress=False,
                            average_from=3)
    assert hist[-1]["averaged_steps"] == 2 * n // 64
    plain = KeywordHead()
    plain.load_state_dict(head.state_dict())
    plain.eval()
    bn = plain.convs[1]
    assert torch.isfinite(bn.running_mean).all() and bn.running_var.min() > 0
    with torch.no_grad():
        post = plain(x).softmax(1)
        assert (post.argmax(1) == y).float().mean() > 0.9
        assert torch.allclose(torch.cat([plain(x[i:i + 7]) for i in range(0, n, 7)]).softmax(1), post, atol=1e-5)
    torch.manual_seed(0)
    last, _ = train_head(training_head(0.5), (x, y), (x, y), epochs=4, batch=64, patience=10, progress=False)
    assert not torch.allclose(last.out.weight, head.out.weight)   # not the best epoch's weights


def test_the_consistency_term_makes_a_window_and_its_other_rendering_agree():
    """Trained with the consistency term, the head's posteriors on a window and on its other rendering (here: the
    same window with a drawn offset in 16 dimensions that carry no class) are closer than without it."""
    from training.calltrain import training_head
    from training.train import js_divergence, train_head
    g = torch.Generator().manual_seed(0)
    n, kw, other = 512, 0, config.LABELS.index(config.OTHER)
    x = torch.randn(n, config.HEAD_FRAMES, config.EMBED_DIM, generator=g)
    y = torch.where(torch.arange(n) % 2 == 0, kw, other)
    x[y == kw, :, :8] += 1.0
    pairs = x.clone()
    pairs[:, :, 40:56] += 3.0 * torch.randn(n, 1, 16, generator=g)
    gaps = []
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        head, _ = train_head(training_head(0.5), (x, y), (x, y), epochs=6, batch=64, progress=False, pairs=pairs,
                             consistency=weight)
        with torch.no_grad():
            gaps.append(float(js_divergence(head(x), head(pairs))))
    assert gaps[1] < 0.5 * gaps[0], gaps


def test_each_call_is_paired_with_its_other_channel_copy():
    """The consistency term pairs a window with the same step of its call's other channel copy: embed_calls stores
    a call's copies one after the other (the same labels and notes); a call without a copy is its own pair."""
    from training.calltrain import CallSet, sibling_calls
    from training.train import js_divergence
    cs = CallSet()
    lab = lambda *v: np.array(v, np.int16)
    for labels, notes in ((lab(0, 1, 1), [["gaz", 0.1, 0.4]]), (lab(0, 1, 1), [["gaz", 0.1, 0.4]]),
                          (lab(12, 12), []), (lab(12, 12), []), (lab(12, 13, 13), [])):
        cs.add(np.zeros((len(labels) + 15, 96), np.float16), labels, notes, {})
    assert list(sibling_calls(cs)) == [1, 0, 3, 2, 4]
    a = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert float(js_divergence(a, a)) == pytest.approx(0.0, abs=1e-7)
    far = float(js_divergence(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])))
    assert far == pytest.approx(np.log(2), rel=1e-4)          # disjoint posteriors: the divergence's maximum


def test_calibration_keeps_the_best_recall_among_windows_fast_enough():
    from training.calibrate import choose_smoothing
    tried = [{"recall": 0.652, "latency_p50_s": 0.16}, {"recall": 0.648, "latency_p50_s": 0.20},
             {"recall": 0.667, "latency_p50_s": 0.27}, {"recall": 0.70, "latency_p50_s": 0.40}]
    assert choose_smoothing(tried, 0.20) == 0                 # 3 and 5 steps find more but come too late
    assert choose_smoothing(tried, 0.0) == 3                  # no latency limit: the best recall
    late = [{"recall": 0.5, "latency_p50_s": 0.30}, {"recall": 0.6, "latency_p50_s": 0.25},
            {"recall": 0.9, "latency_p50_s": None}]
    assert choose_smoothing(late, 0.20) == 1                  # none fast enough: the fastest with any hit
    assert choose_smoothing([{"recall": 0.5, "latency_p50_s": 0.1}, {"recall": 0.5, "latency_p50_s": 0.2}], 0.2) == 0
    # a longer window must find more than one point of recall beyond the shortest (calibrate.SMOOTHING_RECALL_MARGIN)
    near = [{"recall": 0.680, "latency_p50_s": 0.094}, {"recall": 0.687, "latency_p50_s": 0.148},
            {"recall": 0.678, "latency_p50_s": 0.209}]
    assert choose_smoothing(near, 0.20) == 0
    assert choose_smoothing(near, 0.20, margin=0.0) == 1
    more = [{"recall": 0.712, "latency_p50_s": 0.085}, {"recall": 0.749, "latency_p50_s": 0.149}]
    assert choose_smoothing(more, 0.20) == 1


def test_engine_balance_repeats_the_smaller_engines_calls_up_to_a_cap():
    from training.calltrain import CallSet, balance_engines
    cs = CallSet()
    for engine, steps, n in (("espeak", 100, 4), ("kokoro", 20, 1), ("mbrola", 150, 1), ("real", 10, 1)):
        for _ in range(n):
            cs.add(np.zeros((steps + 15, 96), np.float16), np.zeros(steps, np.int64), [], {"engine": engine})
    out = balance_engines(cs, cap=12)
    count = lambda e: sum(m["engine"] == e for m in out.meta)
    assert count("espeak") == 4                               # the largest engine (400 steps) as it is
    assert count("kokoro") == 12                              # 400 / 20 = 20 times, capped at 12
    assert count("mbrola") == 3                               # 400 / 150 rounded
    assert count("real") == 1                                 # recordings are never repeated
    assert all(any(e is f for f in cs.emb) for e in out.emb)  # repeated, not copied


def test_near_miss_sentences_are_told_from_caller_clauses():
    """near_miss_of names the near-miss word of a sentence made from a near-miss frame, and nothing for caller
    clauses, even those holding a near-miss word."""
    from training.sentences import near_miss_of
    rng = random.Random(3)
    near = [negative_sentence(rng, "test", near_miss_share=1.0).text for _ in range(50)]
    clauses = [negative_sentence(rng, "test", near_miss_share=0.0).text for _ in range(50)]
    assert all(near_miss_of(t) for t in near)
    assert not any(near_miss_of(t) for t in clauses)
    assert near_miss_of("Il y a cambrioleur ici.") == "cambrioleur" and near_miss_of("ça sent le brûlé") is None


@needs_espeak
def test_call_sentences_replay_where_each_sentence_of_a_stored_call_lies(tmp_path):
    """call_sentences replays how embed_set assembled a set: as many calls as were stored (a training call's
    channel copies sharing its sentences), and every stored keyword span inside the replayed sentence that says
    that keyword."""
    from dataclasses import replace
    from pathlib import Path
    from training.calltrain import build_callsets, call_sentences, plan_jobs, plan_voices
    from training.recipes import load_recipe
    plan = replace(load_recipe(Path(__file__).resolve().parent.parent / "training/configs/calls_tiny.toml").calls,
                   cache_dir=tmp_path / "cache")
    sets, _ = build_callsets(plan, plan.cache_dir, tmp_path / "work", {"train": [], "eval": []}, only={"eval_kw"})
    voices, splits = plan_voices(plan)
    jobs = plan_jobs(plan, voices, splits)["eval_kw"]
    utts = C.synthesize_utterances(jobs, plan.cache_dir)
    assert len(C.uncached(jobs, plan.cache_dir)) == len(jobs) - len(utts)      # only failed sentences are missing
    assert len(C.uncached(jobs, tmp_path / "empty")) == len(jobs)
    replayed = call_sentences(plan, "eval_kw", utts)
    stored = sets["eval_kw"]
    assert len(replayed) == len(stored.emb) and sum(len(n) for n in stored.notes) > 0
    for sentences, notes, labels in zip(replayed, stored.notes, stored.labels):
        assert sentences[-1][1] <= len(labels) * C.STEP_S + 1.0
        for kw, a, b in notes:
            holder = [text for s0, s1, text in sentences if s0 <= a < b <= s1]
            assert len(holder) == 1 and keyword_spans(holder[0], kw), (kw, a, b, sentences)
    train_plan = replace(plan, train_copies=2)              # a training call's channel copies share its sentences
    train, _ = build_callsets(train_plan, plan.cache_dir, tmp_path / "work2", {"train": [], "eval": []}, only={"train"})
    utts = C.synthesize_utterances(plan_jobs(train_plan, voices, splits)["train"], plan.cache_dir)
    replayed = call_sentences(train_plan, "train", utts)
    assert len(replayed) == len(train["train"].emb) and replayed[0] == replayed[1]
    for sentences, notes in zip(replayed, train["train"].notes):
        for kw, a, b in notes:
            assert sum(1 for s0, s1, text in sentences if s0 <= a < b <= s1 and keyword_spans(text, kw)) == 1


def test_a_stored_call_set_saved_onto_a_link_leaves_the_linked_set_as_it_was(tmp_path):
    """tools/head_context.py --sets-from links another run's sets; building one of them again with other settings
    must give this run its own file, not write through the link into the other run's set."""
    from training.calltrain import CallSet

    def one_call(value):
        cs = CallSet()
        cs.add(np.full((25, 96), value, np.float16), np.zeros(10, np.int16), [["gaz", 0.1, 0.5]], {"engine": "e"})
        return cs
    other_run, this_run = tmp_path / "calls_train_warp.npz", tmp_path / "work" / "calls_train_warp.npz"
    one_call(1.0).save(other_run)
    this_run.parent.mkdir()
    this_run.symlink_to(other_run)
    one_call(2.0).save(this_run)
    assert not this_run.is_symlink()
    assert float(CallSet.load(other_run).emb[0][0, 0]) == 1.0
    back = CallSet.load(this_run)
    assert float(back.emb[0][0, 0]) == 2.0 and back.notes == [[("gaz", 0.1, 0.5)]] and back.meta == [{"engine": "e"}]
    assert not list(this_run.parent.glob("*.part"))


def test_max_pooling_trains_each_occurrence_on_its_best_window_only():
    """occurrence_ids gives the consecutive keyword steps of one call one id (other windows -1); pooled_windows
    keeps every non-keyword window and, of each occurrence, the window where the head gives its keyword the highest
    posterior; a head trained with max_pool still separates the classes."""
    from training.calltrain import CallSet, occurrence_ids, training_head
    from training.train import pooled_windows, train_head
    cs = CallSet()
    gaz, vol, other = config.LABELS.index("gaz"), config.LABELS.index("vol"), config.LABELS.index(config.OTHER)
    cs.add(np.zeros((6 + 15, 96), np.float16), np.array([other, gaz, gaz, other, vol, vol], np.int16), [], {})
    cs.add(np.zeros((3 + 15, 96), np.float16), np.array([gaz, gaz, other], np.int16), [], {})
    chosen = [(1, 1), (0, 0), (0, 2), (0, 1), (0, 4), (0, 5), (1, 0), (0, 3), (1, 2)]
    ids = occurrence_ids(cs, chosen)
    assert list(ids) == [2, -1, 0, 0, 1, 1, 2, -1, -1]
    g = torch.Generator().manual_seed(0)
    n = 240
    x = torch.randn(n, config.HEAD_FRAMES, config.EMBED_DIM, generator=g)
    y = torch.full((n,), other)
    y[:120] = gaz                                            # 40 occurrences of 3 windows each
    groups = torch.full((n,), -1)
    groups[:120] = torch.arange(120) // 3
    x[:120, :, :8] += 2.0
    x[torch.arange(0, 120, 3), :, :8] += 2.0                 # each occurrence's first window is the clearest
    torch.manual_seed(0)
    head, _ = train_head(training_head(0.5), (x, y), (x, y), epochs=6, batch=64, progress=False,
                         groups=(groups.numpy(), groups.numpy()), max_pool=2)
    keep = pooled_windows(head, x, y, groups)
    assert len(keep) == 120 + 40 and set(keep[keep < 120].tolist()) == set(range(0, 120, 3))
    with torch.no_grad():
        assert (head(x).argmax(1) == y).float().mean() > 0.9


def test_the_folds_run_at_the_threshold_rule_that_ships():
    """A leave-one-engine-out fold is scored at the recipe's rule (the shipped recipe: one common threshold for
    every keyword), not at its validation thresholds, an operating point that never ships; without a common
    threshold the validation thresholds are the rule."""
    from pathlib import Path
    from training.calltrain import recipe_thresholds
    from training.recipes import load_recipe
    recipe = load_recipe(Path(__file__).resolve().parent.parent / "training/configs/calls.toml")
    assert recipe.calibrate.common_threshold == 0.99
    val = {k: 0.8 + 0.01 * i for i, k in enumerate(config.KEYWORDS)}
    thr, cal = recipe_thresholds(val, {"smoothing_steps": 2}, recipe.calibrate)
    assert thr == {k: 0.99 for k in config.KEYWORDS}
    assert cal == {"smoothing_steps": 2, "validation_thresholds": val, "common_threshold": 0.99}
    recipe.calibrate.common_threshold = 0.0
    assert recipe_thresholds(val, {"smoothing_steps": 2}, recipe.calibrate) == (val, {"smoothing_steps": 2})


def test_the_ripple_gain_scales_the_log_mels_fine_structure_and_keeps_its_envelope():
    """A 140 Hz pulse train's harmonics ripple across the low bands of the log-mel, white noise's do not (on average
    over frames); the ripple gain multiplies exactly that fine structure (0: gone, 2: doubled) and leaves the envelope;
    in the drawn warp, ripple 0 keeps the draws of the recipes before it and a drawn gain changes the embeddings."""
    from spotter.features import log_mel
    from spotter.model import KeywordHead, KeywordModel
    rng = np.random.default_rng(0)
    n = 16000 * 2
    pulses = np.zeros(n, np.float32)
    pulses[::16000 // 140] = 1.0
    noise = rng.normal(0, 0.1, n).astype(np.float32)
    P = torch.from_numpy(C.ripple_projector())
    assert torch.allclose(P @ P, P, atol=1e-5) and torch.allclose(P, P.T)
    fine = lambda m: float((m.mean(dim=0) @ P).pow(2).sum())
    voiced, hiss = log_mel(torch.from_numpy(pulses + 0.001 * noise)), log_mel(torch.from_numpy(noise))
    assert fine(voiced) > 5 * fine(hiss)
    smooth = C.WarpedMel(None, 1.0, ripple=0.0).change(voiced)
    rough = C.WarpedMel(None, 1.0, ripple=2.0).change(voiced)
    assert float((smooth @ P).abs().max()) < 1e-3
    assert torch.allclose(smooth, voiced - voiced @ P, atol=1e-4)
    assert torch.allclose(rough @ P, 2 * (voiced @ P), atol=1e-3)
    assert torch.allclose(rough - rough @ P, voiced - voiced @ P, atol=1e-3)
    torch.manual_seed(0)
    model = KeywordModel(head=KeywordHead()).eval()
    x = pulses + 0.001 * noise
    plain = C.WarpedEmbeddings(tempo=0.15)(model, x, np.random.default_rng(3))
    assert np.array_equal(C.WarpedEmbeddings(tempo=0.15, ripple=0.0)(model, x, np.random.default_rng(3)), plain)
    rippled = C.WarpedEmbeddings(tempo=0.15, ripple=2.5)(model, x, np.random.default_rng(3))
    assert rippled.shape == plain.shape and not np.array_equal(rippled, plain)
    smoothed = C.SmoothedEmbeddings()(model, x)
    assert np.array_equal(smoothed, C.stream_embeddings(C.WarpedMel(model, 1.0, ripple=0.0), x))
    assert smoothed.shape == C.stream_embeddings(model, x).shape
    assert not np.array_equal(smoothed, C.stream_embeddings(model, x))


def test_the_dense_term_labels_each_position_by_the_window_ending_where_its_field_ends():
    """dense_labels: position i of window (c, j) gets the label of step j - 15 + i + DENSE_REACH (-1 before the call's
    first step and where the field reaches past the window); a head trained with the dense term sets per-position
    logits in training, and once trained it is the plain KeywordHead (no training-only layer) and still separates
    the classes."""
    from spotter.model import KeywordHead
    from training.calltrain import DENSE_REACH, CallSet, dense_labels, training_head
    from training.train import train_head
    cs = CallSet()
    steps = 30
    y = (np.arange(steps) % 14).astype(np.int16)
    cs.add(np.zeros((steps + 15, 96), np.float16), y, [], {})
    d = dense_labels(cs, [(0, 20), (0, 3)])
    w = config.HEAD_FRAMES
    assert d.shape == (2, w)
    for i in range(w):
        s = 20 - (w - 1) + i + DENSE_REACH
        assert d[0, i] == (y[s] if i < w - DENSE_REACH else -1)
    assert d[0, w - DENSE_REACH - 1] == y[20]                # the last labelled position: the window's own label
    assert (d[1, :15 - DENSE_REACH - 3] == -1).all() and d[1, 15 - DENSE_REACH - 3] == y[0]
    g = torch.Generator().manual_seed(0)
    n, kw, other = 256, 0, config.LABELS.index(config.OTHER)
    x = torch.randn(n, w, config.EMBED_DIM, generator=g)
    yy = torch.where(torch.arange(n) % 2 == 0, kw, other)
    x[yy == kw, :, :8] += 2.0
    dense = yy[:, None].repeat(1, w).clone()
    dense[:, w - DENSE_REACH:] = -1
    head = training_head(0.5, dense=True)
    head.train()
    head(x[:4])
    assert head.last_dense.shape == (4, len(config.LABELS), w)
    torch.manual_seed(0)
    trained, hist = train_head(head, (x, yy), (x, yy), epochs=6, batch=64, progress=False, dense=dense,
                               dense_weight=0.5)
    assert all(np.isfinite(h["train_loss"]) for h in hist)
    from training.calltrain import plain_head
    plain = plain_head(trained)
    assert type(plain) is KeywordHead
    KeywordHead().load_state_dict(plain.state_dict())        # saved and exported as the plain head
    trained.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), trained(x))
        assert (plain(x).argmax(1) == yy).float().mean() > 0.9


def _contiguous_in_clip(phones, seconds):
    assert phones and all(a < b for _, a, b in phones)
    assert all(abs(b0 - a1) < 1e-6 for (_, _, b0), (_, a1, _) in zip(phones, phones[1:]))
    assert phones[0][1] >= 0.0 and phones[-1][2] <= seconds + 0.001          # times rounded to the ms


@needs_espeak
def test_each_engine_gives_the_phones_it_said_with_their_times():
    """say_full's phone timeline, from the synthesiser itself: contiguous, inside the clip, in one inventory
    (espeak-ng's IPA). espeak-ng's PHONEME events and MBROLA's .pho (mapped by phones.MBROLA_IPA) give the same phone
    sequence for the same text (one French front end), and the keyword's own phones lie inside its span; Kokoro's
    predicted durations too, where Kokoro is installed. The audio is say()'s."""
    from training import phones as P
    from training.accent import database
    from training.voices import kokoro_installed
    text = "Allô, il y a un incendie dans la cuisine, venez vite."
    s = type(keyword_sentence("incendie", random.Random(0)))(text, "incendie", keyword_spans(text, "incendie"))
    voices = [Voice("espeak", "fr+m3")] + ([mbrola_voices()[0]] if database("fr1").is_file() else []) \
        + ([Voice("kokoro", "jf_alpha")] if kokoro_installed() else [])
    said = {}
    for v in voices:
        job = C.SayJob(s, v, speed=1.1, pitch=60, tract=1.05)
        audio, spans, phones = C.say_full(job)
        assert np.array_equal(audio, C.say(job)[0])
        _contiguous_in_clip(phones, len(audio) / 16000)
        inside = P.phones_in(phones, *spans[0])
        assert " ɛ̃ s ɑ̃ d i " in " " + " ".join(inside) + " ", (v.key, inside)      # "incendie": [ɛ̃sɑ̃di]
        said[v.engine] = [n for n, _, _ in phones if n != P.PAUSE]
        assert set(said[v.engine]) <= set(P.MBROLA_IPA.values()), v.key      # one inventory
    assert said["espeak"][:12] == ["a", "l", "o", "i", "l", "i", "a", "œ̃", "n", "ɛ̃", "s", "ɑ̃"]
    if "mbrola" in said:
        assert said["mbrola"] == said["espeak"]


def test_a_phone_timeline_follows_its_clip():
    """phones.timeline merges pauses and drops empty phones; shifted scales, trims and clips it with the clip."""
    from training import phones as P
    t = P.timeline(["_", "_", "a", "b", "b"], [0.0, 0.1, 0.2, 0.5, 0.5], 0.9)
    assert t == (("_", 0.0, 0.2), ("a", 0.2, 0.5), ("b", 0.5, 0.9))
    assert P.shifted(t, 0.5, 0.15, 0.3) == (("a", 0.0, 0.1), ("b", 0.1, 0.3))
    assert P.mbrola_phone("A~") == "ɑ̃" and P.mbrola_phone("_:") == P.PAUSE and P.phone_name("ə-") == "ə"


@needs_espeak
def test_a_sentence_cached_without_its_phones_gains_them_with_the_same_audio(tmp_path):
    """A cache record written before phone timelines were kept loads with no phones; synthesize_utterances(...,
    phones=True) renders that job again: the same audio, and the record now carries the timeline."""
    import json
    from spotter.audio import load_audio
    job = C.SayJob(keyword_sentence("gaz", random.Random(1)), Voice("espeak", "fr+f2"))
    first, = C.synthesize_utterances([job], tmp_path, workers=1)
    audio = load_audio(first.path)
    index = tmp_path / "utterances.jsonl"
    rec = json.loads(index.read_text())
    assert rec["phones"] and first.phones
    del rec["phones"]
    index.write_text(json.dumps(rec) + "\n")
    old, = C.synthesize_utterances([job], tmp_path, workers=1)
    assert old.phones == ()
    again, = C.synthesize_utterances([job], tmp_path, workers=1, phones=True)
    assert again.phones == first.phones and np.array_equal(load_audio(again.path), audio)


def test_each_embedding_row_gets_the_phone_said_at_its_centre_and_a_head_can_learn_them():
    """row_phones: row r of a call's embeddings ends at (r - 14) x 80 ms and sees 0.775 s of audio; its target is the
    phone said at that audio's centre (pause between phones' timelines, -1 before the call starts). phone_labels
    reads a window's rows from the call's "phone_rows"; a head trained with the phone term (train.phone_aux) sets
    per-position logits over the inventory and is the plain KeywordHead once trained."""
    from spotter.model import KeywordHead
    from training import phones as P
    from training.calltrain import CallSet, phone_labels, plain_head, training_head
    from training.train import train_head
    ph = (("a", 0.1, 0.2), (P.PAUSE, 0.2, 0.5), ("s", 0.5, 0.6))
    rows = P.row_phones(ph, 30, 15, 0.08)
    centre = (np.arange(30) - 14) * 0.08 - P.EMBEDDING_SPAN_S / 2
    for r, c in enumerate(centre):
        want = -1 if c < 0 else next((P.INVENTORY.index(n) for n, a, b in ph if a <= c < b),
                                     P.INVENTORY.index(P.PAUSE))
        assert rows[r] == want, (r, c)
    assert {P.INVENTORY[i] for i in rows if i >= 0} == {"a", "s", P.PAUSE}
    cs = CallSet()
    cs.add(np.zeros((30, 96), np.float16), np.zeros(15, np.int16), [], {"phone_rows": rows.tolist()})
    cs.add(np.zeros((30, 96), np.float16), np.zeros(15, np.int16), [], {})
    labels = phone_labels(cs, [(0, 10), (1, 3)])
    assert labels[0].tolist() == rows[10:26].tolist() and (labels[1] == -1).all()
    g = torch.Generator().manual_seed(0)
    n, w = 256, config.HEAD_FRAMES
    x = torch.randn(n, w, config.EMBED_DIM, generator=g)
    phone = torch.randint(0, 3, (n, w), generator=g)
    x[..., :3] += 3.0 * torch.nn.functional.one_hot(phone, 3)        # each row's phone shows in 3 dimensions
    y = torch.where(phone[:, -1] == 0, 0, config.LABELS.index(config.OTHER))
    head = training_head(dense=len(P.INVENTORY))            # no norm dropout: it would hide the 3 dimensions
    torch.manual_seed(0)
    trained, hist = train_head(head, (x, y), (x, y), epochs=20, batch=64, progress=False, dense=phone,
                               dense_weight=1.0)
    assert all(np.isfinite(h["train_loss"]) for h in hist)
    trained.train()
    with torch.no_grad():
        trained(x)
        assert trained.last_dense.shape == (n, len(P.INVENTORY), w)
        assert (trained.last_dense.argmax(1) == phone).float().mean() > 0.9
    assert type(plain_head(trained)) is KeywordHead

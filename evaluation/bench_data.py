"""Benchmark material: synthetic emergency calls with keywords at known times, long keyword-free streams, and the
real non-keyword speech of ../shared/data/speech. Everything is seeded; synthesized clips are cached on disk.

Data flow:
  plan (texts, held-out voices, speed/pitch; seeded) --synth.synthesize_set--> cached clips (trimmed, -20 dBFS)
  --streams.compose--> clean 16 kHz stream + keyword annotations --apply_condition--> telephone / noisy copies

A call is one caller's speech: 20-60 s of sentences by one held-out voice, holding 0-3 keywords. A keyword sentence
is synthesized in up to three parts (the words before the keyword, the keyword with its determiner or alone, the
words after) joined with short pauses, so each keyword's start and end are known (up to the clips' 30 ms trimming
margin). The keyword is thus spoken as its own utterance, as in the training clips: detection is easier than
inside fluent speech.

True service of a call = the majority service among its keywords, ties going to the service of the first keyword.
By construction the first keyword belongs to the call's service and at most one later keyword belongs to another
service ("mixed" calls), so the true service is always the first keyword's. Every 6th call has no keyword.

Negative streams hold no keyword: caller sentences (addresses, floors, codes, descriptions, "venez vite"...),
near-miss words alone or in a short frame, and everyday words, by the same held-out voices, plus pure background
noise segments; each stream then goes through one of the channel conditions.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from spotter import config
from spotter.audio import load_audio
from spotter.errors import SpotterError

from training.augment import NoiseBank, active_rms, colored_noise, find_noise_files, mix_at_snr, telephone_channel
from .streams import GAP_NOISE, Annotation, compose
from training.synth import SynthItem, clip_relpath, synthesize_set
from training.texts import (CALLER_SENTENCES, CALLER_WORDS, CARRIER_PHRASES, KEYWORD_NP, NEAR_MISSES, keyword_in)
from training.voices import Voice, available_voices, split_voices

log = logging.getLogger("evaluation.bench")

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO.parent / "shared" / "data"          # ../shared/data: real noise and non-keyword speech (optional)
DEFAULT_RECIPE = REPO / "training" / "configs" / "default.toml"

# --- sizes and conditions -------------------------------------------------------------------------------
KEYWORD_COUNTS = (1, 2, 0, 3, 2, 1)    # keywords per call, cycled over the calls (every 6th call: none)
PART_GAP_S = (0.05, 0.2)               # pause between the parts of a sentence (compose's gap)
SENTENCE_PAUSE_S = (0.3, 1.2)          # extra pause after each sentence
TAIL_S = 1.0                           # silence (noise floor) closing a stream, so its last keyword is decided
CALL_SPEEDS = (0.9, 1.0, 1.1)          # rate multipliers of a caller
CALL_PITCHES = (40, 45, 50, 55, 60)
CHARS_PER_S = 18.0                     # rough speaking rate of the TTS voices (text characters per second) ...
CLIP_OVERHEAD_S = 0.1                  # ... plus the trimming margins of a clip: for planning lengths only
PLAN_MARGIN = 1.25                     # negative streams: clips planned beyond their target length
NEGATIVE_MIX = (("caller", 0.55), ("near_miss", 0.3), ("word", 0.15))
NOISE_SEGMENT_P = 0.08                 # share of negative-stream segments that are pure background noise
NOISE_SEGMENT_S = (2.0, 6.0)
NOISE_SEGMENT_DB = -10.0               # level of those segments relative to the speech (-20 dBFS RMS)
SPEECH_RMS = 10 ** (-20 / 20)          # synth.TARGET_RMS_DBFS: level of the synthesized clips
NOISE_PIECE_S = 5.0                    # background noise is assembled from pieces of this length ...
NOISE_FADE_S = 0.02                    # ... cross-faded over this long
TELEPHONE_CODEC = "gsm"
REAL_SPEECH_GAP_S = (0.5, 1.0)
ENGINE_COST = {"espeak": 0, "mbrola": 0, "kokoro": 1}   # order of preference when voices are few (quick)


@dataclass(frozen=True)
class Condition:
    """A channel condition: optional background noise at snr_db (before the channel), optional telephone channel."""
    name: str
    telephone: bool
    snr_db: float | None = None


CONDITIONS = {c.name: c for c in (
    Condition("clean", False),
    Condition("tel", True),
    Condition("tel+noise20", True, 20.0),
    Condition("tel+noise10", True, 10.0),
    Condition("tel+noise5", True, 5.0),
)}


@dataclass(frozen=True)
class BenchSize:
    """How much material a benchmark run uses."""
    calls: int
    call_s: tuple[float, float]
    conditions: tuple[str, ...]
    negative_s: float                  # total keyword-free synthetic speech
    negative_stream_s: float           # ... cut into streams of this length
    real_speech_s: float | None        # real non-keyword speech used (None: all of it)
    engine_caps: dict = field(default_factory=dict)   # engine -> most clips synthesized with it (slow engines)
    max_voices: int | None = None


FULL = BenchSize(calls=40, call_s=(20.0, 60.0), conditions=tuple(CONDITIONS), negative_s=9000.0,
                 negative_stream_s=300.0, real_speech_s=None, engine_caps={"kokoro": 30})
QUICK = BenchSize(calls=3, call_s=(15.0, 22.0), conditions=("clean", "tel+noise10"), negative_s=120.0,
                  negative_stream_s=120.0, real_speech_s=30.0, engine_caps={"kokoro": 0}, max_voices=2)

# --- texts (benchmark variety on top of training/texts.py; none holds a keyword, checked at import) ------
GREETINGS = ("Allô ?", "Allô, oui, bonjour.", "Oui, allô, bonsoir.", "Allô, vous m'entendez ?", "Bonjour madame.",
             "Allô, c'est bien les secours ?", "Oui, bonjour monsieur.")
STREETS = ("rue Victor Hugo", "rue de la Paix", "avenue Jean Jaurès", "boulevard Gambetta", "chemin des Vignes",
           "impasse des Lilas", "place du Marché", "allée des Tilleuls", "rue Pasteur", "rue des Écoles",
           "avenue du Général de Gaulle", "quai de la Loire", "rue du Moulin", "route de Paris", "rue Émile Zola")
CITIES = ("Lyon", "Toulouse", "Nantes", "Lille", "Rennes", "Grenoble", "Dijon", "Montpellier", "Bordeaux",
          "Strasbourg", "Villeurbanne", "Saint-Étienne", "Reims", "Le Havre", "Angers")
ORDINALS = ("premier", "deuxième", "troisième", "quatrième", "cinquième", "sixième", "septième", "huitième")
NAMES = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
         "Lefebvre", "Garcia", "Roux", "Fournier", "Girard")
PEOPLE = (("mon voisin", "m"), ("ma voisine", "f"), ("mon père", "m"), ("ma mère", "f"), ("mon mari", "m"),
          ("ma femme", "f"), ("mon fils", "m"), ("ma fille", "f"), ("le monsieur", "m"), ("la dame", "f"),
          ("un jeune homme", "m"), ("une vieille dame", "f"), ("mon collègue", "m"), ("ma grand-mère", "f"))
STATES = (("très pâle", "très pâle"), ("inconscient", "inconsciente"), ("allongé par terre", "allongée par terre"),
          ("très agité", "très agitée"), ("tout rouge", "toute rouge"), ("assis dans l'entrée", "assise dans l'entrée"),
          ("blessé au bras", "blessée au bras"), ("conscient", "consciente"), ("tout seul", "toute seule"),
          ("couché sur le canapé", "couchée sur le canapé"), ("en sueur", "en sueur"))
URGENCY = ("Venez vite !", "Dépêchez-vous, s'il vous plaît.", "Faites vite, je vous en supplie.",
           "Il faut envoyer quelqu'un tout de suite.", "Vous arrivez dans combien de temps ?",
           "Je ne sais pas quoi faire.", "S'il vous plaît, venez vite.", "C'est vraiment urgent.",
           "Envoyez quelqu'un, vite !", "Je vous en prie, dépêchez-vous.")
ANSWERS = ("Oui.", "Non.", "D'accord.", "Je ne sais pas.", "Attendez, je regarde.", "Oui, il respire.",
           "Non, elle ne parle pas.", "Je reste avec lui.", "Oui, je vous entends.", "Oui, c'est ça.",
           "Non, personne d'autre.", "Je crois, oui.", "Attendez, je vous passe mon mari.", "Je suis dans la rue.",
           "Oui, la porte est ouverte.", "Non, je ne vois rien.")
TEMPLATES = (
    "J'habite au {n} {street}, à {city}.", "C'est au {n} {street}.", "L'adresse, c'est {n} {street}, à {city}.",
    "Nous sommes au {n} {street}, près de la mairie.", "C'est au {ord} étage, porte de {side}.",
    "On est au {ord} étage, bâtiment {letter}.", "L'appartement est au {ord}, au fond du couloir.",
    "Le code de la porte, c'est {d1} {d2} {letter} {d3}.", "L'interphone est au nom de {name}.",
    "Mon numéro, c'est le 06 {p1} {p2} {p3} {p4}.", "{Person} a {age} ans.", "{Person} est {state}.",
    "{Person} ne bouge plus.", "Ça a commencé il y a {mins} minutes.", "Je suis avec {person}.",
    "Je vous appelle de chez {person}.", "Il y a un grand portail {colour} devant la maison.",
    "C'est la maison {colour}, juste après le rond-point.", "Je suis devant l'entrée, au {n} {street}.",
)
SIDES = ("droite", "gauche")
COLOURS = ("vert", "blanc", "bleu", "gris", "rouge", "noir")
NEAR_MISS_FRAMES = ("{W}.", "{W}, c'est ça.", "Il a dit {w}.", "C'est {w}, je crois.", "Oui, {w}.", "{W} ?")

# Keyword sentence pieces: (words before the keyword slot, words after); {np} slots take KEYWORD_NP, {kw} the bare word.
KEYWORD_FRAMES = (
    ("Il y a {np}", "dans l'immeuble."), ("Je vous appelle pour {np}", "venez vite."), ("On a {np}", "ici."),
    ("Venez vite, il y a {np}", "chez ma voisine."), ("C'est pour {np}", "au {n} {street}."),
    ("Je crois que c'est {np}", "je ne sais pas quoi faire."), ("Bonjour, je signale {np}", "au {ord} étage."),
    ("Il y a eu {np}", "dans le magasin en face."), ("Allô ? Oui, c'est pour {np}", ""),
    ("{kw}", "venez vite !"), ("{kw}", "je répète, au {n} {street}."), ("Il a dit {kw}", "je crois."),
    ("C'est urgent, {kw}", "bâtiment {letter}."), ("Écoutez, {np}", "on est au fond de la cour."),
    ("Vite, {np}", "on est devant l'école !"), ("Je pense qu'il y a {np}", ""), ("{Kw} !", ""),
)


def _fill(template: str, rng: np.random.Generator) -> str:
    """Fill a template's slots with random addresses, people, numbers..."""
    person, gender = PEOPLE[rng.integers(len(PEOPLE))]
    state = STATES[rng.integers(len(STATES))][0 if gender == "m" else 1]
    digits = rng.integers(0, 10, 3)
    pairs = rng.integers(10, 100, 4)
    values = {
        "n": str(int(rng.integers(1, 120))), "street": STREETS[rng.integers(len(STREETS))],
        "city": CITIES[rng.integers(len(CITIES))], "ord": ORDINALS[rng.integers(len(ORDINALS))],
        "side": SIDES[rng.integers(2)], "letter": "ABCDEF"[rng.integers(6)], "name": NAMES[rng.integers(len(NAMES))],
        "d1": str(digits[0]), "d2": str(digits[1]), "d3": str(digits[2]),
        "p1": str(pairs[0]), "p2": str(pairs[1]), "p3": str(pairs[2]), "p4": str(pairs[3]),
        "person": person, "Person": person[0].upper() + person[1:], "state": state,
        "age": str(int(rng.integers(2, 95))), "mins": str(int(rng.integers(2, 40))),
        "colour": COLOURS[rng.integers(len(COLOURS))],
    }
    return template.format(**values)


def caller_sentence(rng: np.random.Generator) -> str:
    """A keyword-free caller sentence: training/texts.py's, or a template filled with addresses, people..."""
    kind = rng.random()
    if kind < 0.3:
        return CALLER_SENTENCES[rng.integers(len(CALLER_SENTENCES))]
    if kind < 0.45:
        return URGENCY[rng.integers(len(URGENCY))]
    if kind < 0.6:
        return ANSWERS[rng.integers(len(ANSWERS))]
    return _fill(TEMPLATES[rng.integers(len(TEMPLATES))], rng)


def near_miss_text(rng: np.random.Generator) -> str:
    """A near-miss word or phrase (texts.NEAR_MISSES), alone or in a short frame."""
    w = NEAR_MISSES[rng.integers(len(NEAR_MISSES))]
    frame = NEAR_MISS_FRAMES[rng.integers(len(NEAR_MISS_FRAMES))]
    return frame.format(w=w, W=w[0].upper() + w[1:])


def everyday_word(rng: np.random.Generator) -> str:
    """An everyday caller word or short phrase (texts.CALLER_WORDS)."""
    return CALLER_WORDS[rng.integers(len(CALLER_WORDS))]


def negative_text(rng: np.random.Generator) -> tuple[str, str]:
    """(kind, text) of one keyword-free segment, drawn by NEGATIVE_MIX."""
    r, acc = rng.random(), 0.0
    for kind, p in NEGATIVE_MIX:
        acc += p
        if r < acc:
            break
    text = {"caller": caller_sentence, "near_miss": near_miss_text, "word": everyday_word}[kind](rng)
    return kind, text


def keyword_parts(keyword: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(before, keyword text, after) of a keyword sentence; before/after may be ''."""
    before, after = KEYWORD_FRAMES[rng.integers(len(KEYWORD_FRAMES))]
    slot = next(s for s in ("{np}", "{kw}", "{Kw}") if s in before)
    spoken = {"{np}": KEYWORD_NP[keyword], "{kw}": keyword, "{Kw}": keyword[0].upper() + keyword[1:]}[slot]
    if slot == "{Kw}":
        spoken += " !"
    head = before.replace(slot, "").strip().rstrip(",").strip()
    tail = _fill(after, rng) if after else ""
    has_words = lambda t: any(c.isalpha() for c in t)
    return head if has_words(head) else "", spoken, tail if has_words(tail) else ""


def _carrier_is_single_slot(template: str) -> bool:
    return template.count("{np}") + template.count("{kw}") == 1


def _check_texts() -> None:
    """No benchmark filler text may contain a keyword (or a keyword homophone)."""
    fixed = GREETINGS + URGENCY + ANSWERS + CALLER_SENTENCES + CALLER_WORDS + NEAR_MISSES
    bad = [t for t in fixed if keyword_in(t)]
    rng = np.random.default_rng(0)
    for template in TEMPLATES + tuple(a for _, a in KEYWORD_FRAMES if a) + tuple(
            f.replace("{w}", "x").replace("{W}", "x") for f in NEAR_MISS_FRAMES):
        for _ in range(20):
            text = _fill(template, rng)
            if keyword_in(text):
                bad.append(text)
    for before, _ in KEYWORD_FRAMES:
        if keyword_in(before.replace("{np}", "").replace("{kw}", "").replace("{Kw}", "")):
            bad.append(before)
    if bad:
        raise SpotterError(f"evaluation/bench_data.py: benchmark filler texts contain keywords: {bad[:3]}")


def _carrier_frame(template: str) -> tuple[str, str]:
    """A single-slot carrier phrase of training/texts.py as (words up to the slot, words after it)."""
    end = template.index("}") + 1
    after = template[end:].strip().lstrip(",.;!? ").strip()
    return template[:end], after if any(c.isalpha() for c in after) else ""


KEYWORD_FRAMES = KEYWORD_FRAMES + tuple(
    _carrier_frame(t) for t in CARRIER_PHRASES if _carrier_is_single_slot(t) and not t[:t.index("{")].endswith("'"))
_check_texts()


# --- voices ---------------------------------------------------------------------------------------------
def bench_voices(model, size: BenchSize = FULL) -> tuple[list[Voice], str]:
    """Held-out voices: the model's meta["synthesis"]["voices"]["test"] when present, else the test split of
    split_voices with the default recipe's seed and fractions. Returns the voices and where they came from."""
    installed = {v.key: v for v in available_voices(warn=False)}
    keys = ((model.meta.get("synthesis") or {}).get("voices") or {}).get("test") or []
    voices = [installed[k] for k in keys if k in installed]
    if voices:
        source = f"model meta: {len(voices)} of its {len(keys)} held-out test voices are installed"
    else:
        from training.recipes import load_recipe
        recipe = load_recipe(DEFAULT_RECIPE)
        splits = split_voices(list(installed.values()), recipe.synth.val_fraction, recipe.synth.test_fraction,
                              recipe.seed)
        voices = [v for v in installed.values() if splits.get(v.key) == "test"]
        source = (f"test split of split_voices(seed={recipe.seed}) over the installed engines "
                  f"(the model records no held-out voices)")
    voices = [v for v in voices if size.engine_caps.get(v.engine, 1) > 0]
    voices.sort(key=lambda v: (ENGINE_COST.get(v.engine, 1), v.key) if size.max_voices else v.key)
    if size.max_voices:
        # one voice per engine first, then the rest
        firsts = list({v.engine: v for v in reversed(voices)}.values())[::-1]
        voices = (firsts + [v for v in voices if v not in firsts])[:size.max_voices]
    if not voices:
        raise SpotterError("benchmark: no held-out voice available (is espeak-ng installed?)")
    return sorted(voices, key=lambda v: v.key), source


class VoiceBudget:
    """Hands out voices while keeping slow engines within their clip caps."""

    def __init__(self, voices: list[Voice], caps: dict):
        self.voices = voices
        self.left = {e: caps[e] for e in caps}

    def fits(self, voice: Voice, n_clips: int) -> bool:
        return self.left.get(voice.engine, math.inf) >= n_clips

    def take(self, voice: Voice, n_clips: int) -> None:
        if voice.engine in self.left:
            self.left[voice.engine] -= n_clips

    def choose(self, preferred: int, n_clips: int) -> Voice:
        """The voice at index preferred (cyclic) or the next one whose engine can still afford n_clips."""
        n = len(self.voices)
        for i in range(n):
            v = self.voices[(preferred + i) % n]
            if self.fits(v, n_clips):
                self.take(v, n_clips)
                return v
        raise SpotterError("benchmark: no voice left within the engine clip caps")


# --- plans ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One synthesized utterance of a stream, and the pause that follows it."""
    text: str
    keyword: str | None = None         # the keyword it says (None: keyword-free speech)
    pause_s: float = 0.0               # extra pause after it (sentence end)


@dataclass
class CallPlan:
    index: int
    voice: Voice
    speed: float
    pitch: int
    parts: list[Part]
    mixed: bool                        # one keyword of another service than the call's


@dataclass(frozen=True)
class Segment:
    """One segment of a negative stream: an utterance (caller, near_miss or word) or background noise."""
    kind: str
    part: Part | None = None
    voice: Voice | None = None
    speed: float = 1.0
    pitch: int = 50
    noise_s: float = 0.0

    @property
    def item(self) -> SynthItem:
        return _item(self.part, self.voice, self.speed, self.pitch)


@dataclass
class NegativePlan:
    index: int
    condition: str
    segments: list[Segment]


def true_service(keywords: list[str]) -> str | None:
    """Majority service of the keywords in speaking order; a tie goes to the first keyword's service."""
    if not keywords:
        return None
    services = [config.KEYWORD_SERVICE[k] for k in keywords]
    counts = {s: services.count(s) for s in services}
    best = max(counts.values())
    return next(s for s in services if counts[s] == best)


def _estimate_s(texts: list[str], speed: float) -> float:
    """Rough length of a sentence said in parts (texts), with the pauses render_call puts around them."""
    gap, pause = float(np.mean(PART_GAP_S)), float(np.mean(SENTENCE_PAUSE_S))
    return sum(len(t) / CHARS_PER_S / speed + CLIP_OVERHEAD_S + gap for t in texts if t) + pause + gap


def _pick_keyword(service: str, used: dict, rng: np.random.Generator) -> str:
    """The least used keyword of a service so far (random among ties): balanced keyword counts."""
    pool = [k for k in config.KEYWORDS if config.KEYWORD_SERVICE[k] == service]
    low = min(used[k] for k in pool)
    choice = [k for k in pool if used[k] == low]
    kw = choice[rng.integers(len(choice))]
    used[kw] += 1
    return kw


def plan_calls(size: BenchSize, budget: VoiceBudget, rng: np.random.Generator) -> list[CallPlan]:
    """Seeded call plans: keyword count cycles through KEYWORD_COUNTS, service through 15/17/18, every other call
    with >= 2 keywords has one keyword of another service (never the first)."""
    services = list(config.SERVICES)
    used = {k: 0 for k in config.KEYWORDS}
    plans, n_kw_calls, n_multi = [], 0, 0
    for i in range(size.calls):
        n_kw = KEYWORD_COUNTS[i % len(KEYWORD_COUNTS)]
        keywords, mixed = [], False
        if n_kw:
            service = services[n_kw_calls % len(services)]
            n_kw_calls += 1
            keywords = [_pick_keyword(service, used, rng) for _ in range(n_kw)]
            if n_kw >= 2:
                mixed = n_multi % 2 == 0
                n_multi += 1
                if mixed:
                    other = services[(services.index(service) + 1 + int(rng.integers(2))) % len(services)]
                    used[keywords[-1]] -= 1
                    keywords[-1] = _pick_keyword(other, used, rng)
        speed = float(CALL_SPEEDS[rng.integers(len(CALL_SPEEDS))])
        pitch = int(CALL_PITCHES[rng.integers(len(CALL_PITCHES))])
        target = float(rng.uniform(*size.call_s))
        # sentences: a greeting, fillers, and the keyword sentences (in speaking order) at random places after it
        kw_sentences = [keyword_parts(k, rng) for k in keywords]
        est = 0.5 + TAIL_S + _estimate_s([GREETINGS[0]], speed) + sum(_estimate_s(p, speed) for p in kw_sentences)
        fillers = []
        while est < target:
            fillers.append(caller_sentence(rng))
            est += _estimate_s(fillers[-1:], speed)
        slots = sorted(int(s) for s in rng.integers(0, len(fillers) + 1, size=len(keywords)))
        sentences: list[list[Part]] = [[Part(GREETINGS[rng.integers(len(GREETINGS))])]]
        k = 0
        for j in range(len(fillers) + 1):
            while k < len(keywords) and slots[k] == j:
                head, spoken, tail = kw_sentences[k]
                sentences.append(([Part(head)] if head else []) + [Part(spoken, keywords[k])] +
                                 ([Part(tail)] if tail else []))
                k += 1
            if j < len(fillers):
                sentences.append([Part(fillers[j])])
        parts = []
        for sentence in sentences:
            last = sentence[-1]
            parts += sentence[:-1] + [Part(last.text, last.keyword, float(rng.uniform(*SENTENCE_PAUSE_S)))]
        voice = budget.choose(i, len(parts))
        plans.append(CallPlan(i, voice, speed, pitch, parts, mixed))
    return plans


def plan_negatives(size: BenchSize, voices: list[Voice], budget: VoiceBudget,
                   rng: np.random.Generator) -> list[NegativePlan]:
    """Keyword-free streams of size.negative_stream_s (planned PLAN_MARGIN longer, cut when rendered); the
    condition cycles through size.conditions; each segment has its own voice, speed and pitch."""
    n_streams = max(1, math.ceil(size.negative_s / size.negative_stream_s - 1e-9))
    plans = []
    for i in range(n_streams):
        segments, est = [], 0.0
        while est < PLAN_MARGIN * size.negative_stream_s:
            if rng.random() < NOISE_SEGMENT_P:
                segments.append(Segment("noise", noise_s=float(rng.uniform(*NOISE_SEGMENT_S))))
                est += segments[-1].noise_s + float(np.mean(PART_GAP_S))
            else:
                kind, text = negative_text(rng)
                voice = budget.choose(int(rng.integers(len(voices))), 1)
                speed = float(CALL_SPEEDS[rng.integers(len(CALL_SPEEDS))])
                pitch = int(CALL_PITCHES[rng.integers(len(CALL_PITCHES))])
                segments.append(Segment(kind, Part(text, None, float(rng.uniform(*SENTENCE_PAUSE_S))), voice, speed, pitch))
                est += _estimate_s([text], speed)
        plans.append(NegativePlan(i, size.conditions[i % len(size.conditions)], segments))
    return plans


# --- synthesis ------------------------------------------------------------------------------------------
def _item(part: Part, voice: Voice, speed: float, pitch: int) -> SynthItem:
    return SynthItem(part.keyword or config.OTHER, part.text, voice, speed, pitch, split="bench")


def synthesize_plans(calls: list[CallPlan], negatives: list[NegativePlan], cache_dir: Path,
                     progress: bool = True) -> dict:
    """Synthesize (or find cached) every clip of the plans; returns SynthItem -> float32 clip (absent if failed)."""
    items = [_item(p, c.voice, c.speed, c.pitch) for c in calls for p in c.parts]
    items += [s.item for n in negatives for s in n.segments if s.kind != "noise"]
    unique = list(dict.fromkeys(items))
    good = {r["path"] for r in synthesize_set(unique, cache_dir, progress=progress)}
    clips = {}
    for item in unique:
        rel = clip_relpath(item)
        if rel in good:
            clips[item], _ = sf.read(cache_dir / rel, dtype="float32")
    return clips


# --- noise and channel ----------------------------------------------------------------------------------
class NoiseSource:
    """Background noise: pieces of real recordings (../shared/data/noise) or, without them, coloured noise."""

    def __init__(self, noise_dir: Path | None = None):
        files = find_noise_files(noise_dir if noise_dir is not None else DATA_DIR / "noise")
        self.bank = NoiseBank(files)
        self.description = (f"{len(files)} recordings under {noise_dir or DATA_DIR / 'noise'}" if files else
                            "generated coloured noise (no recordings found under ../shared/data/noise)")

    def noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n samples of unit-RMS background noise assembled from NOISE_PIECE_S pieces, cross-faded."""
        piece = int(NOISE_PIECE_S * config.SAMPLE_RATE)
        fade = int(NOISE_FADE_S * config.SAMPLE_RATE)
        out = np.zeros(n + piece, np.float32)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        for start in range(0, n, piece - fade):
            seg = self.bank.segment(piece, rng) if len(self.bank) else None
            if seg is None:
                seg = colored_noise(piece, float(rng.uniform(0.0, 2.0)), rng)
            seg = seg / max(float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))), 1e-9)
            seg[:fade] *= ramp
            seg[-fade:] *= ramp[::-1]
            out[start:start + piece] += seg
        return out[:n]


def apply_condition(audio: np.ndarray, condition: Condition, noise: NoiseSource,
                    rng: np.random.Generator) -> np.ndarray:
    """Background noise at the condition's SNR (relative to the active speech level), then the telephone channel."""
    x = np.asarray(audio, np.float32)
    if condition.snr_db is not None:
        x = mix_at_snr(x, noise.noise(x.size, rng), condition.snr_db, signal_rms=active_rms(audio))
    if condition.telephone:
        x = telephone_channel(x, TELEPHONE_CODEC)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


# --- rendering ------------------------------------------------------------------------------------------
def _pause(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, GAP_NOISE, int(seconds * config.SAMPLE_RATE)).astype(np.float32)


@dataclass
class Call:
    index: int
    voice: str
    audio: np.ndarray                  # clean 16 kHz
    notes: list[Annotation]
    service: str | None
    mixed: bool

    @property
    def duration_s(self) -> float:
        return self.audio.size / config.SAMPLE_RATE


def render_call(plan: CallPlan, clips: dict, max_s: float, rng: np.random.Generator) -> Call:
    """Join a call's clips (pauses after sentences) with streams.compose; while the call is longer than max_s,
    its last keyword-free sentence (greeting aside) is dropped."""
    sentences, current = [], []
    for part in plan.parts:
        clip = clips.get(_item(part, plan.voice, plan.speed, plan.pitch))
        if clip is not None:
            current.append((clip, part.keyword))
        if part.pause_s:
            current.append((_pause(part.pause_s, rng), None))
            sentences.append(current)
            current = []
    gap = float(np.mean(PART_GAP_S))
    length = lambda: sum(a.size / config.SAMPLE_RATE + gap for s in sentences for a, _ in s) + 0.5 + TAIL_S
    while length() > max_s:
        free = [i for i, s in enumerate(sentences) if i > 0 and not any(k for _, k in s)]
        if not free:
            break
        sentences.pop(free[-1])
    segments = [seg for s in sentences for seg in s] + [(_pause(TAIL_S, rng), None)]
    audio, notes = compose(segments, PART_GAP_S, rng)
    return Call(plan.index, plan.voice.key, audio, notes, true_service([n.keyword for n in notes]), plan.mixed)


def render_negative(plan: NegativePlan, clips: dict, noise: NoiseSource, target_s: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A keyword-free clean stream of at least target_s (cut at a segment boundary once reached) and its make-up."""
    segments, total, counts = [], 0.0, {"caller": 0, "near_miss": 0, "word": 0, "noise": 0, "clips": set()}
    for seg in plan.segments:
        if total >= target_s:
            break
        if seg.kind == "noise":
            audio = noise.noise(int(seg.noise_s * config.SAMPLE_RATE), rng) * SPEECH_RMS * 10 ** (NOISE_SEGMENT_DB / 20)
            segments.append((audio.astype(np.float32), None))
        else:
            clip = clips.get(seg.item)
            if clip is None:
                continue
            segments += [(clip, None), (_pause(seg.part.pause_s, rng), None)]
            counts["clips"].add(seg.item)
        counts[seg.kind] += 1
        total = sum(a.size for a, _ in segments) / config.SAMPLE_RATE + np.mean(PART_GAP_S) * len(segments)
    audio, notes = compose(segments, PART_GAP_S, rng)
    assert not notes
    return audio, counts


def real_speech(speech_dir: Path | None, max_s: float | None, rng: np.random.Generator) -> tuple[np.ndarray, dict] | None:
    """All real non-keyword speech files (sorted; up to max_s) joined with pauses; None when there are none."""
    root = speech_dir if speech_dir is not None else DATA_DIR / "speech"
    files = find_noise_files(root)
    if not files:
        return None
    segments, by_folder, total = [], {}, 0.0
    for f in files:
        if max_s is not None and total >= max_s:
            break
        try:
            audio = load_audio(f)
        except SpotterError as exc:
            log.warning("benchmark: skipped %s", exc)
            continue
        segments.append((audio, None))
        seconds = audio.size / config.SAMPLE_RATE
        total += seconds
        folder = f.parent.name
        by_folder[folder] = by_folder.get(folder, 0.0) + seconds
    audio, _ = compose(segments, REAL_SPEECH_GAP_S, rng)
    return audio, {"root": str(root), "files": len(segments), "speech_minutes": round(total / 60, 2),
                   "stream_minutes": round(audio.size / config.SAMPLE_RATE / 60, 2),
                   "minutes_by_folder": {k: round(v / 60, 2) for k, v in sorted(by_folder.items())}}


# --- everything -----------------------------------------------------------------------------------------
@dataclass
class BenchData:
    calls: list[Call]
    negatives: list[tuple[np.ndarray, str]]          # (clean stream, condition name)
    real: tuple[np.ndarray, dict] | None
    noise: NoiseSource
    info: dict


def build_bench_data(model, size: BenchSize, seed: int, cache_dir: Path, data_dir: Path | None = None,
                     progress: bool = True) -> BenchData:
    """Plan, synthesize (cached) and render every stream of the benchmark; deterministic for a seed."""
    voices, source = bench_voices(model, size)
    budget = VoiceBudget(voices, size.engine_caps)
    rng = np.random.default_rng([seed, 1])
    calls_plan = plan_calls(size, budget, rng)
    neg_plan = plan_negatives(size, voices, budget, np.random.default_rng([seed, 2]))
    clips = synthesize_plans(calls_plan, neg_plan, Path(cache_dir) / "clips", progress=progress)
    noise = NoiseSource(data_dir / "noise" if data_dir else None)
    calls = [render_call(p, clips, size.call_s[1], np.random.default_rng([seed, 3, p.index])) for p in calls_plan]
    negatives, makeup, used = [], {"caller": 0, "near_miss": 0, "word": 0, "noise": 0}, set()
    for p in neg_plan:
        audio, counts = render_negative(p, clips, noise, size.negative_stream_s, np.random.default_rng([seed, 4, p.index]))
        negatives.append((audio, p.condition))
        used |= counts.pop("clips")
        for k, v in counts.items():
            makeup[k] += v
    real = real_speech(data_dir / "speech" if data_dir else None, size.real_speech_s, np.random.default_rng([seed, 5]))
    neg_s = sum(a.size for a, _ in negatives) / config.SAMPLE_RATE
    kw_counts = {k: sum(1 for c in calls for n in c.notes if n.keyword == k) for k in config.KEYWORDS}
    info = {
        "voices": [v.key for v in voices], "voice_source": source,
        "voices_used_by_calls": sorted({c.voice for c in calls}),
        "calls": len(calls), "call_minutes": round(sum(c.duration_s for c in calls) / 60, 2),
        "call_seconds": {"min": round(min(c.duration_s for c in calls), 1), "max": round(max(c.duration_s for c in calls), 1)},
        "keyword_occurrences": sum(kw_counts.values()), "keyword_occurrences_per_keyword": kw_counts,
        "no_keyword_calls": sum(1 for c in calls if c.service is None),
        "mixed_service_calls": sum(1 for c in calls if c.mixed),
        "conditions": {n: {"telephone_codec": TELEPHONE_CODEC if CONDITIONS[n].telephone else None,
                           "snr_db": CONDITIONS[n].snr_db} for n in size.conditions},
        "noise": noise.description,
        "negative": {"streams": len(negatives), "hours": round(neg_s / 3600, 3), "segments": makeup,
                     "unique_clips": len(used),
                     "unique_speech_minutes": round(sum(clips[i].size for i in used) / config.SAMPLE_RATE / 60, 1),
                     "conditions": {n: round(sum(a.size for a, c in negatives if c == n) / config.SAMPLE_RATE / 3600, 3)
                                    for n in size.conditions}},
        "real_speech": real[1] if real else None,
        "clips_synthesized": len(clips),
    }
    return BenchData(calls, negatives, real, noise, info)


def conditioned(audio: np.ndarray, condition: str, noise: NoiseSource, seed: int, *key: int) -> np.ndarray:
    """A stream under a condition; the noise drawn depends only on (seed, key, condition), not on call order."""
    idx = list(CONDITIONS).index(condition)
    return apply_condition(audio, CONDITIONS[condition], noise, np.random.default_rng([seed, 6, *key, idx]))

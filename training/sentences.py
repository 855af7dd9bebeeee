"""Caller sentences said in one piece, with the keyword's time span taken from the synthesiser itself.

A caller does not say "incendie" alone: he says "allô, il y a un incendie au troisième, venez vite". This
module makes such sentences (keyword at the start, in the middle or at the end, or no keyword at all) and
synthesises each one whole, so the keyword is co-articulated with its neighbours the way speech really runs.
The keyword's span comes from the engine:

  espeak, mbrola  libespeak-ng WORD events (training/espeak_lib.py): start of the keyword's word and of the next
                  word; the end is pulled back over any pause (energy) before the next word.
  kokoro          the model's own predicted phoneme durations (its second ONNX output): the keyword's phonemes
                  are located in the token sequence and their frames summed.

Sentence frames are split in two disjoint halves (train / test) so the evaluation also hears sentences the model
never trained on. Everything is deterministic given a seed.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from spotter.config import SAMPLE_RATE
from spotter.errors import SpotterError
from training.texts import CALLER_SENTENCES, KEYWORD_NP, NEAR_MISSES, keyword_in

# --- the keyword inside a phrase ---------------------------------------------------------------------
# Natural phrases around each keyword: "{np}" is replaced by the keyword's determiner phrase (texts.KEYWORD_NP).
KEYWORD_PHRASES: dict[str, tuple[str, ...]] = {
    "malaise": ("{np}", "un gros malaise", "un malaise cardiaque", "fait un malaise", "a fait un malaise",
                "des malaises"),
    "hémorragie": ("{np}", "une grosse hémorragie", "une hémorragie interne", "fait une hémorragie",
                   "une hémorragie à la tête"),
    "brûlure": ("{np}", "une brûlure au bras", "une grave brûlure", "des brûlures", "une brûlure à la main"),
    "intoxication": ("{np}", "une intoxication au monoxyde", "une intoxication alimentaire",
                     "une intoxication aux médicaments", "une grave intoxication"),
    "violences": ("{np}", "des violences conjugales", "des violences sur un enfant", "des violences",
                  "de la violence"),
    "agression": ("{np}", "une agression au couteau", "une agression dans la rue", "une agression",
                  "une grosse agression"),
    "vol": ("{np}", "un vol de voiture", "un vol à l'arraché", "un vol de sac", "un vol avec violence"),
    "cambriolage": ("{np}", "un cambriolage en cours", "un cambriolage chez moi", "un cambriolage",
                    "un cambriolage chez le voisin"),
    "incendie": ("{np}", "un début d'incendie", "un incendie de voiture", "un gros incendie",
                 "un incendie dans la cuisine"),
    "gaz": ("{np}", "une fuite de gaz", "une odeur de gaz", "une grosse fuite de gaz", "une bouteille de gaz"),
    "effondrement": ("{np}", "un effondrement de toiture", "un effondrement du plafond", "un effondrement",
                     "un gros effondrement"),
    "électrocution": ("{np}", "une électrocution", "une électrocution dans la salle de bain",
                      "une électrocution sur le chantier", "une grave électrocution"),
}

# Frames: where the keyword phrase {k} sits in the sentence. Start / middle / end positions.
FRAMES: tuple[str, ...] = (
    # keyword phrase at the start
    "{K}, venez vite !", "{K} au troisième étage, dépêchez-vous.", "{K}, au 12 rue Victor Hugo.",
    "{K} chez ma voisine, elle ne répond plus.", "{K}, je répète, {k}.", "{K}, il faut envoyer quelqu'un.",
    "{K} dans l'immeuble d'en face.", "{K} au fond de la cour, bâtiment B.", "{K}, c'est très grave.",
    "{K} sur le parking du supermarché.", "{K}, on est devant l'école.", "{K} ici, s'il vous plaît, vite.",
    "{K} à la maison, mon mari est là.", "{K} dans le garage.", "{K}, je crois, je ne suis pas sûr.",
    "{K} chez mes parents, route de Lyon.",
    # keyword phrase in the middle
    "Allô, il y a {k} dans l'immeuble, venez vite.", "Oui bonjour, c'est pour {k} au deuxième étage.",
    "Je vous appelle parce qu'il y a {k} chez mon voisin du dessus.", "Allô les secours, on a {k} ici, dépêchez-vous.",
    "Écoutez, c'est {k}, on est au rez-de-chaussée.", "Bonjour madame, je signale {k} rue de la République.",
    "Il y a eu {k} dans le magasin en face, il faut venir.", "Je pense que c'est {k}, il ne bouge plus.",
    "Vite, {k}, on est devant la pharmacie !", "Ma mère a {k}, elle a quatre-vingts ans.",
    "Monsieur, il y a {k} au bout de la rue, c'est affreux.", "On a {k} sur le chantier, venez tout de suite.",
    "Je crois qu'il y a {k} chez les voisins, j'entends des cris.", "C'est pour {k}, au 8 avenue Foch.",
    "Attendez, il y a {k} dans la cuisine, je fais quoi ?", "Bonsoir, on a eu {k} cette nuit au premier.",
    "Oui, {k}, au troisième, porte de gauche.", "Allô ? Oui, c'est bien {k}, envoyez quelqu'un.",
    "Alors voilà, il y a {k} et mon fils est tout seul.", "Mon voisin m'a dit qu'il y avait {k} en bas.",
    "Je suis dans la rue, il y a {k} juste à côté de moi.", "Nous avons {k} à l'usine, quai de la Gare.",
    # keyword phrase at the end
    "Allô, venez vite, il y a {k}.", "Oui bonjour, je vous appelle pour {k}.", "Je crois que c'est {k}.",
    "Au secours, il y a {k} !", "Madame, s'il vous plaît, on a {k}.", "C'est au troisième étage, c'est {k}.",
    "Je ne sais pas quoi faire, il y a {k}.", "Envoyez quelqu'un, c'est {k}.", "Mon mari pense que c'est {k}.",
    "Vite, vite, {k} !", "Il faut venir, il y a eu {k}.", "Bonsoir, je signale {k}.",
    "Dans l'immeuble d'en face, il y a {k}.", "On est au fond de la cour et il y a {k}.",
    "Je suis devant chez moi, on a {k}.", "Oui, je confirme, {k}.",
)

# Keyword-free clauses: joined 1-3 at a time into hours of running caller speech.
CLAUSES: tuple[str, ...] = CALLER_SENTENCES + (
    "Allô, oui, bonjour", "je vous appelle de la part de ma voisine", "elle a quatre-vingt-deux ans",
    "on habite au cinquième sans ascenseur", "le code d'entrée c'est quatre cinq huit deux",
    "il faut sonner chez Martin", "mon numéro c'est le zéro six douze trente-quatre",
    "je suis dans la voiture", "il est tombé dans l'escalier", "elle ne répond plus au téléphone",
    "on est au bord de la route nationale", "il y a beaucoup de monde dans la rue",
    "il a très mal au ventre depuis hier", "elle a de la fièvre et elle tousse",
    "j'ai entendu un grand bruit", "la porte est ouverte", "mon fils a trois ans", "c'est une petite maison",
    "c'est juste après le rond-point", "il y a une voiture garée devant", "je reste avec lui",
    "elle respire difficilement", "il est tout blanc", "il a perdu connaissance quelques secondes",
    "on est sur le quai de la gare", "il pleut beaucoup ici", "je ne vois pas bien", "il fait très chaud",
    "ma femme est enceinte de huit mois", "il a du diabète", "il prend des médicaments pour le cœur",
    "je suis son fils", "je suis infirmière", "le voisin est descendu", "on a coupé l'électricité",
    "la fenêtre est cassée", "je suis sortie sur le balcon", "les enfants dorment", "il est seul chez lui",
    "c'est à côté de la boulangerie", "on attend dans le hall", "je vais ouvrir le portail",
    "il y a un chien dans la cour", "il crie depuis une heure", "il est très agité", "elle pleure",
    "c'est la troisième fois cette semaine", "il a bu beaucoup d'alcool", "il s'est coupé avec un couteau",
    "il s'est cogné la tête", "elle est tombée de son lit", "il a glissé sur le trottoir",
    "on revient du marché", "je travaille de nuit", "il ne se souvient de rien", "il parle bizarrement",
    "il a le bras tout gonflé", "il a vomi deux fois", "elle a mal à la tête", "il a chaud et froid",
    "je vous entends mal", "pouvez-vous répéter", "je reste en ligne", "d'accord, merci beaucoup",
    "oui, c'est ça", "non, pas du tout", "je crois que oui", "attendez une seconde",
    "il y a un homme qui court", "ils sont partis en scooter", "ils étaient deux ou trois",
    "il portait une veste noire", "ils sont partis vers la place", "j'ai tout vu depuis ma fenêtre",
    "on a entendu un bruit de verre", "il y a de la fumée noire", "ça sent le brûlé", "il y a des flammes",
    "le mur est fissuré", "le plafond est tombé", "il y a de l'eau partout", "les câbles pendent du poteau",
    "il a touché la prise", "la chaudière fait un bruit bizarre", "on a ouvert les fenêtres",
    "ma tête tourne", "j'ai des nausées", "toute la famille a mal à la tête",
)

# Near-miss words and phrases inside a sentence (negatives that sound like keywords).
NEAR_MISS_FRAMES: tuple[str, ...] = (
    "Il y a {n} ici.", "Je crois que c'est {n}.", "Allô, c'est pour {n}, je ne sais pas.",
    "Oui, {n}, au troisième étage.", "{N}, c'est ce qu'il a dit.", "On parlait de {n} avec le voisin.",
    "Il a dit {n}, je pense.", "Attendez, {n}, oui.",
)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(frame: str, phrase: str) -> str:
    text = frame.replace("{K}", _cap(phrase)).replace("{k}", phrase)
    text = text.replace("de un ", "d'un ").replace("de une ", "d'une ").replace("que il", "qu'il")
    text = re.sub(r"\bde des\b", "de", text)
    text = re.sub(r"\bde le\b", "du", text)
    return text


def frame_split(frames: tuple[str, ...], split: str, test_share: float = 0.3, seed: int = 11) -> list[str]:
    """A fixed, disjoint share of the frames for 'test'; the rest for 'train' (and 'val')."""
    order = list(frames)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(test_share * len(order)))
    return order[:n_test] if split == "test" else order[n_test:]


@dataclass(frozen=True)
class Sentence:
    """A sentence to say; keyword (None for a negative) and the character span of the keyword word in text."""
    text: str
    keyword: str | None = None
    spans: tuple[tuple[int, int], ...] = ()     # character spans of every occurrence of the keyword


def _set():
    """The active keyword set when it brings its own sentences (spotter/keywordsets/*.toml), else None: French."""
    from spotter import config
    return config.KEYWORD_SET if config.KEYWORD_SET.frames else None


def keyword_sentence(keyword: str, rng: random.Random, split: str = "train") -> Sentence:
    """A caller sentence containing the keyword once, with its character span."""
    ks = _set()
    if ks is not None:
        text = _fill(rng.choice(frame_split(ks.frames, split)), ks.forms[keyword][0])
    else:
        frame = rng.choice(frame_split(FRAMES, split))
        phrase = rng.choice(KEYWORD_PHRASES[keyword]).replace("{np}", KEYWORD_NP[keyword])
        text = _fill(frame, phrase)
    spans = keyword_spans(text, keyword)
    if not spans:
        raise SpotterError(f"keyword {keyword!r} not found in generated sentence {text!r}")
    return Sentence(text, keyword, spans)


def keyword_spans(text: str, keyword: str) -> tuple[tuple[int, int], ...]:
    """Character spans of every spoken form of keyword in text (singular or plural, any case)."""
    from spotter import config
    forms = config.KEYWORD_SET.forms[keyword]
    return tuple((m.start(), m.end()) for m in re.finditer(r"[\wàâäçéèêëîïôöùûüÿœæ]+", text)
                 if m.group(0).lower() in forms)


def negative_sentence(rng: random.Random, split: str = "train", near_miss_share: float = 0.25) -> Sentence:
    """Keyword-free running speech: 1-3 caller clauses, or a near-miss word inside a sentence."""
    ks = _set()
    if ks is not None:
        return _set_negative(ks, rng, split, near_miss_share)
    if rng.random() < near_miss_share:
        frame = rng.choice(frame_split(NEAR_MISS_FRAMES, split, 0.25))
        word = rng.choice(NEAR_MISSES)
        text = frame.replace("{N}", _cap(word)).replace("{n}", word)
    else:
        pool = frame_split(CLAUSES, split, 0.3, seed=12)
        parts = [rng.choice(pool).rstrip(".!? ") for _ in range(rng.choice((1, 1, 2, 2, 3)))]
        parts = parts[:1] + [p if p.startswith(("Allô", "Paris", "Lyon")) else p[:1].lower() + p[1:]
                             for p in parts[1:]]
        text = _cap(", ".join(parts)) + rng.choice((".", ".", "!", "?"))
    if keyword_in(text) is not None:           # never let a keyword (or homophone) into a negative
        return negative_sentence(rng, split, near_miss_share)
    return Sentence(text)


def near_miss_of(text: str) -> str | None:
    """The near-miss word of a sentence negative_sentence made from a near-miss frame, or None for caller clauses
    (which may still hold a near-miss word, e.g. "ça sent le brûlé": they are running speech, not near-miss
    sentences)."""
    ks = _set()
    frames, words = (ks.near_miss_frames, ks.near_misses) if ks is not None else (NEAR_MISS_FRAMES, NEAR_MISSES)
    known = {w.lower() for w in words}
    for frame in frames:
        pattern = re.escape(frame).replace(re.escape("{N}"), "(.+)").replace(re.escape("{n}"), "(.+)")
        m = re.fullmatch(pattern, text)
        if m and m.group(1).lower() in known:
            return m.group(1).lower()
    return None


def _set_negative(ks, rng: random.Random, split: str, near_miss_share: float) -> Sentence:
    """negative_sentence from a keyword set's own clauses, near-miss words and near-miss frames."""
    if ks.near_misses and ks.near_miss_frames and rng.random() < near_miss_share:
        frame = rng.choice(frame_split(ks.near_miss_frames, split, 0.25))
        word = rng.choice(ks.near_misses)
        text = frame.replace("{N}", _cap(word)).replace("{n}", word)
    else:
        pool = frame_split(ks.clauses, split, 0.3, seed=12)
        parts = [rng.choice(pool) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
        text = " ".join(parts)
    if any(keyword_spans(text, k) for k in ks.keywords):     # never let a keyword into a negative
        return _set_negative(ks, rng, split, near_miss_share)
    return Sentence(text)


# --- synthesis with spans -----------------------------------------------------------------------------
ENERGY_FRAME = SAMPLE_RATE // 100


def refine_span(audio: np.ndarray, start_s: float, end_s: float, floor_db: float = 30.0) -> tuple[float, float]:
    """Pull a word span in over silence at either edge: 10 ms frames more than floor_db below the span's
    loudest frame are pause, not word (a word event's successor may start after a comma's pause)."""
    a, b = int(start_s * SAMPLE_RATE), min(len(audio), int(end_s * SAMPLE_RATE))
    seg = audio[a:b]
    n = len(seg) // ENERGY_FRAME
    if n < 2:
        return start_s, end_s
    e = 10 * np.log10(np.mean(seg[:n * ENERGY_FRAME].reshape(n, ENERGY_FRAME).astype(np.float64) ** 2, 1) + 1e-12)
    on = np.flatnonzero(e > e.max() - floor_db)
    return (a + on[0] * ENERGY_FRAME) / SAMPLE_RATE, (a + (on[-1] + 1) * ENERGY_FRAME) / SAMPLE_RATE


def espeak_span(words, char_start: int, duration_s: float) -> tuple[float, float]:
    """(start, end) in seconds of the word at char_start from libespeak-ng word events."""
    starts = sorted((w.start_s, w.char_start) for w in words if w.char_len > 0)
    for i, (t, c) in enumerate(starts):
        if c == char_start:
            nxt = next((t2 for t2, _ in starts[i + 1:] if t2 > t), duration_s)
            return t, nxt
    raise SpotterError(f"no word event at character {char_start}")


def kokoro_span(tokens_per_word: list[tuple[int, int]], durations: np.ndarray, word_index: int,
                seconds_per_frame: float) -> tuple[float, float]:
    """(start, end) of word word_index from Kokoro's per-token durations (token 0 is the start pad)."""
    t0, t1 = tokens_per_word[word_index]
    cum = np.concatenate([[0], np.cumsum(durations)])
    # +1: the start pad token precedes the text tokens
    return float(cum[t0 + 1] * seconds_per_frame), float(cum[t1 + 1] * seconds_per_frame)


def parse_pho(text: str) -> list[tuple[str, float]]:
    """(phoneme, duration in seconds) of every line of an MBROLA .pho file (comments and blanks skipped)."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and not line.startswith(";"):
            try:
                out.append((f[0], float(f[1]) / 1000.0))
            except ValueError:
                continue
    return out


def pho_span(sentence_pho: list[tuple[str, float]], word_pho: list[str], rel_pos: float) -> tuple[float, float]:
    """(start, end) in seconds of the phoneme sequence word_pho inside the sentence's .pho.

    Pauses ('_') are ignored when matching; of several occurrences, the one whose position in the sentence is
    nearest to rel_pos (the word's relative character position) wins. If the exact sequence is not found (a
    liaison or plural changed the final phoneme), it is matched without its last phoneme."""
    phones = [(i, p) for i, (p, _) in enumerate(sentence_pho) if p != "_"]
    starts = np.concatenate([[0.0], np.cumsum([d for _, d in sentence_pho])])
    for target in (word_pho, word_pho[:-1]):
        n = len(target)
        if n == 0:
            break
        hits = [k for k in range(len(phones) - n + 1) if [p for _, p in phones[k:k + n]] == target]
        if hits:
            k = min(hits, key=lambda k: abs(k / max(1, len(phones)) - rel_pos))
            first, last = phones[k][0], phones[k + len(word_pho) - 1 if k + len(word_pho) - 1 < len(phones)
                                                else k + n - 1][0]
            return float(starts[first]), float(starts[last + 1])
    raise SpotterError(f"keyword phonemes {' '.join(word_pho)} not found in the sentence's .pho")
